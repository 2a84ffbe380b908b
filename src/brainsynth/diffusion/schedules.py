"""Noise schedules (float64, on the CPU): betas of the Gaussian process and m_t of the bridge.

Index convention of the Gaussian schedules: ``betas[i]`` is the beta of the paper's step
``t = i + 1`` (DDPM counts 1..T); the array has ``num_timesteps`` entries.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

Schedule = Literal["linear", "scaled_linear", "cosine"]
BridgeSchedule = Literal["linear", "sin"]

# (beta_start, beta_end) when none are given: DDPM's (Ho et al. 2020, sec. 4) and latent
# diffusion's (Rombach et al. 2022, the usual values for scaled_linear).
DEFAULT_BETA_RANGE: dict[str, tuple[float, float]] = {
    "linear": (1e-4, 2e-2),
    "scaled_linear": (8.5e-4, 1.2e-2),
}


def make_betas(
    schedule: Schedule,
    num_timesteps: int,
    beta_start: float | None = None,
    beta_end: float | None = None,
) -> torch.Tensor:
    """``(num_timesteps,)`` float64 betas. ``beta_start``/``beta_end`` are ignored by ``cosine``."""
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
    if schedule == "cosine":
        return cosine_betas(num_timesteps)
    if schedule not in DEFAULT_BETA_RANGE:
        raise ValueError(f"unknown schedule {schedule!r}; use linear, scaled_linear or cosine")
    lo, hi = DEFAULT_BETA_RANGE[schedule]
    lo = lo if beta_start is None else beta_start
    hi = hi if beta_end is None else beta_end
    if not 0.0 < lo <= hi < 1.0:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {lo}, {hi}")
    if schedule == "linear":  # DDPM sec. 4: betas linear from beta_start to beta_end
        return torch.linspace(lo, hi, num_timesteps, dtype=torch.float64)
    # scaled_linear: linear in sqrt(beta) (latent diffusion)
    return torch.linspace(lo**0.5, hi**0.5, num_timesteps, dtype=torch.float64) ** 2


def cosine_alpha_bar(t: torch.Tensor, num_timesteps: int, s: float = 0.008) -> torch.Tensor:
    """abar(t) = f(t) / f(0), f(t) = cos^2(((t/T + s) / (1 + s)) pi/2)  (Nichol & Dhariwal 2021,
    eq. 17), for the paper's continuous-valued t in [0, T]."""

    def f(u: torch.Tensor) -> torch.Tensor:
        return torch.cos((u / num_timesteps + s) / (1 + s) * math.pi / 2) ** 2

    return f(t.to(torch.float64)) / f(torch.zeros((), dtype=torch.float64))


def cosine_betas(num_timesteps: int, max_beta: float = 0.999) -> torch.Tensor:
    """beta_t = 1 - abar(t) / abar(t-1), clipped at 0.999 to avoid the singularity at t = T
    (Nichol & Dhariwal 2021, sec. 3.2). Only the last few betas are affected by the clip."""
    t = torch.arange(num_timesteps + 1, dtype=torch.float64)
    abar = cosine_alpha_bar(t, num_timesteps)
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


def bridge_m(num_timesteps: int, schedule: BridgeSchedule = "linear") -> torch.Tensor:
    """``(num_timesteps + 1,)`` float64 m_t for t = 0..T, exactly 0 at t = 0 and 1 at t = T.

    ``linear``: m_t = t / T (BBDM sec. 3.1). ``sin``: m_t = sin(pi t / 2T), which moves away from
    x0 faster and approaches y more slowly (an option, not BBDM's default)."""
    if num_timesteps < 2:
        raise ValueError(f"the bridge needs num_timesteps >= 2, got {num_timesteps}")
    u = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    if schedule == "linear":
        m = u
    elif schedule == "sin":
        m = torch.sin(u * math.pi / 2)
    else:
        raise ValueError(f"unknown bridge schedule {schedule!r}; use linear or sin")
    m[0], m[-1] = 0.0, 1.0  # exact ends, whatever the rounding of sin(pi/2)
    return m
