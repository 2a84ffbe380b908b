"""DDPM ancestral sampling (Ho et al. 2020, Algorithm 2), on any subsequence of timesteps:
x_s ~ q(x_s | x_t, x0^) with the respaced beta = 1 - abar_t / abar_s."""

from __future__ import annotations

import torch
from torch import Tensor

from brainsynth.diffusion.base import Cond, Denoiser, Progress
from brainsynth.diffusion.gaussian import GaussianProcess
from brainsynth.sampling.schedule import _noise, timesteps


@torch.no_grad()
def ddpm_sample(
    denoiser: Denoiser,
    process: GaussianProcess,
    x_T: Tensor,
    *,
    steps: int | None = None,
    cond: Cond | None = None,
    y: Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
    clip_x0: tuple[float, float] | None = None,
) -> Tensor:
    ts = timesteps(process.num_timesteps - 1, -1, steps or process.num_timesteps)
    x = x_T
    for i, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        x0 = process.predict_x0(x, tt, denoiser(x, tt, cond))
        if clip_x0 is not None:
            x0 = x0.clamp(*clip_x0)
        mean, var = process.posterior(x0, x, tt, torch.full_like(tt, s))
        x = mean + var.sqrt() * _noise(x, generator) if s >= 0 else mean
        if progress is not None:
            progress(i + 1, len(ts) - 1)
    return x
