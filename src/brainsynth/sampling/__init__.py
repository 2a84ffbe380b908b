"""Samplers: plain functions with one signature

    sampler(denoiser, process, x_T, *, steps, cond=None, y=None, generator=None, progress=None, **kw)

returning x0. ``x_T`` is the start: pure noise at index T-1 for the Gaussian process (``y`` is
ignored), the end point y at t = T for the bridge (``y`` defaults to ``x_T``). Extra keywords:
``eta`` (ddim, bridge), ``boot_noise`` (bridge) and ``clip_x0=(lo, hi)`` (all).
``progress(step, total)`` is called after each of the ``steps`` network calls
(:func:`batch_progress` turns it into steps over all batches of a job). All randomness comes from
``generator``; the samplers run under ``torch.no_grad``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from brainsynth.diffusion.base import Progress
from brainsynth.sampling.bridge import bridge_sample
from brainsynth.sampling.ddim import ddim_sample
from brainsynth.sampling.ddpm import ddpm_sample
from brainsynth.sampling.guidance import Guided, guided

SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": ddpm_sample,
    "ddim": ddim_sample,
    "bridge": bridge_sample,
}


def batch_progress(progress: Progress | None, batch: int, n_batches: int) -> Progress | None:
    """The sampler's ``progress(i, steps)`` for batch ``batch`` (0-based) of ``n_batches``, as
    steps done over all batches: ``progress(batch * steps + i, n_batches * steps)``."""
    if progress is None:
        return None
    return lambda i, total: progress(batch * total + i, n_batches * total)


__all__ = [
    "SAMPLERS",
    "Guided",
    "batch_progress",
    "bridge_sample",
    "ddim_sample",
    "ddpm_sample",
    "guided",
]
