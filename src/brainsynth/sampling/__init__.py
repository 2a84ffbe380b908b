"""Samplers: plain functions with one signature

    sampler(denoiser, process, x_T, *, steps, cond=None, y=None, generator=None, progress=None, **kw)

returning x0. ``x_T`` is pure noise for the Gaussian process and the end point y for the bridge.
"""

from brainsynth.sampling.bridge import bridge_sample
from brainsynth.sampling.ddim import ddim_sample
from brainsynth.sampling.ddpm import ddpm_sample
from brainsynth.sampling.guidance import guided

SAMPLERS = {"ddpm": ddpm_sample, "ddim": ddim_sample, "bridge": bridge_sample}

__all__ = ["SAMPLERS", "bridge_sample", "ddim_sample", "ddpm_sample", "guided"]
