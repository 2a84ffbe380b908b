"""DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) on any subsequence of the timesteps.

Each step draws x_s ~ q(x_s | x_t, x0^) with x0^ from the network, i.e. DDPM's reverse step with
sigma_t^2 = beta~_t (DDPM sec. 3.2, eq. 6-7); with fewer ``steps`` than timesteps the one-step beta
becomes 1 - abar_t / abar_s (respacing, Nichol & Dhariwal 2021 sec. 4). The last step goes to the
clean index -1 and returns x0^ itself (no noise).
"""

from __future__ import annotations

import torch
from torch import Tensor

from brainsynth.diffusion.base import Cond, Denoiser, Progress
from brainsynth.diffusion.gaussian import GaussianProcess
from brainsynth.sampling.schedule import Spacing, full_t, randn_like, timesteps


@torch.no_grad()
def ddpm_sample(
    denoiser: Denoiser,
    process: GaussianProcess,
    x_T: Tensor,
    *,
    steps: int,
    cond: Cond | None = None,
    y: Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
    clip_x0: tuple[float, float] | None = None,
    spacing: Spacing = "uniform",
) -> Tensor:
    """Sample x0 from noise ``x_T`` (B, C, *S) at timestep T-1 in ``steps`` network calls.

    ``y`` is ignored (one signature for all samplers); ``clip_x0=(lo, hi)`` clamps each x0^;
    ``spacing``: which ``steps + 1`` indices of T-1..-1 are visited (uniform or quadratic)."""
    ts = timesteps(process.num_timesteps - 1, -1, steps, spacing)
    x = x_T
    for i, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
        tt = full_t(t, x)
        x0 = process.predict_x0(x, tt, denoiser(x, tt, cond))
        if clip_x0 is not None:
            x0 = x0.clamp(*clip_x0)
        mean, var = process.posterior(x0, x, tt, full_t(s, x))
        x = mean + var.sqrt() * randn_like(x, generator) if s >= 0 else mean
        if progress is not None:
            progress(i + 1, len(ts) - 1)
    return x
