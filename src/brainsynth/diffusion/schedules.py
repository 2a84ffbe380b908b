"""Noise schedules for the Gaussian process (betas, float64)."""

from __future__ import annotations

import math
from typing import Literal

import torch

Schedule = Literal["linear", "scaled_linear", "cosine"]


def make_betas(
    schedule: Schedule, num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 2e-2
) -> torch.Tensor:
    if schedule == "linear":  # DDPM (Ho et al. 2020), sec. 4
        return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
    if schedule == "scaled_linear":  # latent diffusion: linear in sqrt(beta)
        return (
            torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64) ** 2
        )
    if schedule == "cosine":  # Nichol & Dhariwal 2021, eq. 17; betas clipped at 0.999
        return cosine_betas(num_timesteps)
    raise ValueError(f"unknown schedule {schedule!r}; use linear, scaled_linear or cosine")


def cosine_alpha_bar(t: torch.Tensor, num_timesteps: int, s: float = 0.008) -> torch.Tensor:
    """abar(t) = f(t) / f(0), f(t) = cos^2(((t/T + s) / (1 + s)) * pi/2) (Nichol & Dhariwal eq. 17)."""

    def f(u):
        return torch.cos((u / num_timesteps + s) / (1 + s) * math.pi / 2) ** 2

    return f(t.to(torch.float64)) / f(torch.zeros((), dtype=torch.float64))


def cosine_betas(num_timesteps: int, max_beta: float = 0.999) -> torch.Tensor:
    t = torch.arange(num_timesteps + 1, dtype=torch.float64)
    abar = cosine_alpha_bar(t, num_timesteps)
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)
