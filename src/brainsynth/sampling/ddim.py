"""DDIM (Song et al. 2021) on any subsequence of the timesteps:

    x_s = sqrt(abar_s) x0^ + sqrt(1 - abar_s - sigma^2) eps^ + sigma z                 (DDIM eq. 12)
    sigma = eta sqrt((1 - abar_s) / (1 - abar_t)) sqrt(1 - abar_t / abar_s)            (DDIM eq. 16)

eta = 0 is deterministic (the same x_T always gives the same x0); eta = 1 is DDPM's ancestral step
with the posterior variance. The last step goes to the clean index -1 (abar = 1) and returns x0^.
"""

from __future__ import annotations

import torch
from torch import Tensor

from brainsynth.diffusion.base import Cond, Denoiser, Progress
from brainsynth.diffusion.gaussian import GaussianProcess
from brainsynth.sampling.schedule import Spacing, check_eta, full_t, randn_like, timesteps


@torch.no_grad()
def ddim_sample(
    denoiser: Denoiser,
    process: GaussianProcess,
    x_T: Tensor,
    *,
    steps: int,
    cond: Cond | None = None,
    y: Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
    eta: float = 0.0,
    clip_x0: tuple[float, float] | None = None,
    spacing: Spacing = "uniform",
) -> Tensor:
    """Sample x0 from noise ``x_T`` (B, C, *S) at timestep T-1 in ``steps`` network calls.

    ``y`` is ignored (one signature for all samplers). ``clip_x0=(lo, hi)`` clamps each x0^ and
    re-derives eps^ from the clamped x0^ so that the two stay consistent. ``spacing``: which
    ``steps + 1`` indices of T-1..-1 are visited (DDIM appendix D.2: uniform or quadratic)."""
    eta = check_eta(eta)
    ts = timesteps(process.num_timesteps - 1, -1, steps, spacing)
    x = x_T
    for i, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
        tt = full_t(t, x)
        out = denoiser(x, tt, cond)
        x0 = process.predict_x0(x, tt, out)
        if clip_x0 is None:
            eps = process.predict_eps(x, tt, out)
        else:
            x0 = x0.clamp(*clip_x0)
            eps = process.eps_from_x0(x, tt, x0)
        a_t, a_s = float(process.abar(t)), float(process.abar(s))
        sigma = eta * ((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)) ** 0.5  # DDIM eq. 16
        x = a_s**0.5 * x0 + max(1 - a_s - sigma**2, 0.0) ** 0.5 * eps  # DDIM eq. 12
        if sigma > 0:
            x = x + sigma * randn_like(x, generator)
        if progress is not None:
            progress(i + 1, len(ts) - 1)
    return x
