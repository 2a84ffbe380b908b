"""Skip-step sampling of the Brownian bridge (BBDM sec. 3.3), from y at t = T down to x0 at t = 0.

With x0^ predicted and eps^ = (x_t - mu_t(x0^)) / sqrt(delta_t):
    x_s = mu_s(x0^) + sqrt(delta_s - sigma^2) eps^ + sigma z,   sigma^2 = eta^2 var_post(s | t)
eta = 1 gives exactly the posterior q(x_s | x_t, x0^, y); eta = 0 is deterministic.
"""

from __future__ import annotations

import torch
from torch import Tensor

from brainsynth.diffusion.base import Cond, Denoiser, Progress
from brainsynth.diffusion.bridge import BrownianBridgeProcess
from brainsynth.sampling.schedule import _noise, timesteps


@torch.no_grad()
def bridge_sample(
    denoiser: Denoiser,
    process: BrownianBridgeProcess,
    x_T: Tensor,
    *,
    steps: int,
    cond: Cond | None = None,
    y: Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
    eta: float = 1.0,
    clip_x0: tuple[float, float] | None = None,
) -> Tensor:
    y = x_T if y is None else y
    ts = timesteps(process.num_timesteps, 0, steps)
    x = x_T
    for i, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        ss = torch.full_like(tt, s)
        x0 = process.predict_x0(x, tt, denoiser(x, tt, cond), y)
        if clip_x0 is not None:
            x0 = x0.clamp(*clip_x0)
        if s == 0:
            x = x0
        else:
            d_t = float(process.delta[t])
            d_s = float(process.delta[s])
            _, var = process.posterior(x0, y, x, tt, ss)
            sigma2 = eta**2 * float(var.flatten()[0])
            eps = (x - process.mean(x0, y, tt)) / d_t**0.5 if d_t > 0 else torch.zeros_like(x)
            x = process.mean(x0, y, ss) + max(d_s - sigma2, 0.0) ** 0.5 * eps
            if sigma2 > 0:
                x = x + sigma2**0.5 * _noise(x, generator)
        if progress is not None:
            progress(i + 1, len(ts) - 1)
    return x
