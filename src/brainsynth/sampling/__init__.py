"""Samplers: plain functions with one signature

    sampler(denoiser, process, x_T, *, steps, cond=None, y=None, generator=None, progress=None, **kw)

returning x0. ``x_T`` is the start: pure noise at index T-1 for the Gaussian process (``y`` is
ignored), the end point y at t = T for the bridge (``y`` defaults to ``x_T``). Extra keywords:
``eta`` (ddim, bridge), ``boot_noise`` (bridge) and ``clip_x0=(lo, hi)`` (all).
``progress(step, total)`` is called after each of the ``steps`` network calls. All randomness
comes from ``generator``; the samplers run under ``torch.no_grad``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from brainsynth.sampling.bridge import bridge_sample
from brainsynth.sampling.ddim import ddim_sample
from brainsynth.sampling.ddpm import ddpm_sample
from brainsynth.sampling.guidance import Guided, guided

SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": ddpm_sample,
    "ddim": ddim_sample,
    "bridge": bridge_sample,
}

__all__ = ["SAMPLERS", "Guided", "bridge_sample", "ddim_sample", "ddpm_sample", "guided"]
