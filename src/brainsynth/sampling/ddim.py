"""DDIM (Song et al. 2021): x_s = sqrt(abar_s) x0^ + sqrt(1 - abar_s - sigma^2) eps^ + sigma z,
sigma = eta sqrt((1 - abar_s)/(1 - abar_t)) sqrt(1 - abar_t/abar_s)  (DDIM eq. 12 and 16).

eta = 0 is deterministic; eta = 1 matches DDPM's ancestral variance."""

from __future__ import annotations

import torch
from torch import Tensor

from brainsynth.diffusion.base import Cond, Denoiser, Progress
from brainsynth.diffusion.gaussian import GaussianProcess
from brainsynth.sampling.schedule import _noise, timesteps


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
) -> Tensor:
    ts = timesteps(process.num_timesteps - 1, -1, steps)
    x = x_T
    for i, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        out = denoiser(x, tt, cond)
        x0 = process.predict_x0(x, tt, out)
        if clip_x0 is not None:
            x0 = x0.clamp(*clip_x0)
        eps = (
            process.predict_eps(x, tt, out) if clip_x0 is None else _eps_from_x0(process, x, tt, x0)
        )
        a_t = float(process.abar(torch.tensor([t]))[0])
        a_s = float(process.abar(torch.tensor([s]))[0])
        sigma = eta * ((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)) ** 0.5
        x = a_s**0.5 * x0 + max(1 - a_s - sigma**2, 0.0) ** 0.5 * eps
        if sigma > 0:
            x = x + sigma * _noise(x, generator)
        if progress is not None:
            progress(i + 1, len(ts) - 1)
    return x


def _eps_from_x0(process: GaussianProcess, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
    a = process.abar(t).to(x_t).reshape(-1, *([1] * (x_t.ndim - 1)))
    return (x_t - a.sqrt() * x0) / (1 - a).sqrt()
