"""Gaussian diffusion (DDPM, Ho et al. 2020) with eps, x0 or v prediction.

Notation (index t = 0 .. T-1, T = num_timesteps):
    beta_t      noise added at step t;  alpha_t = 1 - beta_t
    abar_t      prod_{i <= t} alpha_i   (abar_{-1} = 1: the clean data)
    x_t         sqrt(abar_t) x0 + sqrt(1 - abar_t) eps            (DDPM eq. 4)
    v           sqrt(abar_t) eps - sqrt(1 - abar_t) x0            (Salimans & Ho 2022, sec. 4)
    q(x_s | x_t, x0), s < t: mean c0 x0 + ct x_t, variance var    (DDPM eq. 6-7, respaced)
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from brainsynth.diffusion.schedules import Schedule, make_betas

Prediction = Literal["eps", "x0", "v"]


def _bcast(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """values[t] shaped (B, 1, 1, ...) in like's dtype/device."""
    out = values.to(like.device)[t.to(like.device).long()]
    return out.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


class GaussianProcess:
    def __init__(
        self,
        num_timesteps: int = 1000,
        schedule: Schedule = "linear",
        prediction: Prediction = "eps",
        beta_start: float = 1e-4,
        beta_end: float = 2e-2,
    ):
        if prediction not in ("eps", "x0", "v"):
            raise ValueError(f"unknown prediction {prediction!r}; use eps, x0 or v")
        self.num_timesteps = num_timesteps
        self.schedule = schedule
        self.prediction = prediction
        self.betas = make_betas(schedule, num_timesteps, beta_start, beta_end)
        self.alpha_bar = torch.cumprod(1.0 - self.betas, dim=0)

    def abar(self, t: Tensor) -> Tensor:
        """abar_t with abar_{-1} = 1 (t may be -1: the clean end)."""
        padded = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar])
        return padded[t.long().cpu() + 1]

    def sample_t(self, batch: int, *, generator=None, device="cpu") -> Tensor:
        t = torch.randint(0, self.num_timesteps, (batch,), generator=generator)
        return t.to(device)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor, y: Tensor | None = None) -> Tensor:
        a = _bcast(self.alpha_bar, t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise  # DDPM eq. 4

    def target(self, x0: Tensor, t: Tensor, noise: Tensor, y: Tensor | None = None) -> Tensor:
        if self.prediction == "eps":
            return noise
        if self.prediction == "x0":
            return x0
        a = _bcast(self.alpha_bar, t, x0)
        return a.sqrt() * noise - (1 - a).sqrt() * x0  # v (Salimans & Ho 2022)

    def predict_x0(
        self, x_t: Tensor, t: Tensor, model_out: Tensor, y: Tensor | None = None
    ) -> Tensor:
        a = _bcast(self.alpha_bar, t, x_t)
        if self.prediction == "eps":
            return (x_t - (1 - a).sqrt() * model_out) / a.sqrt()
        if self.prediction == "x0":
            return model_out
        return a.sqrt() * x_t - (1 - a).sqrt() * model_out

    def predict_eps(self, x_t: Tensor, t: Tensor, model_out: Tensor) -> Tensor:
        a = _bcast(self.alpha_bar, t, x_t)
        if self.prediction == "eps":
            return model_out
        if self.prediction == "x0":
            return (x_t - a.sqrt() * model_out) / (1 - a).sqrt()
        return (1 - a).sqrt() * x_t + a.sqrt() * model_out

    def posterior(self, x0: Tensor, x_t: Tensor, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(x_s | x_t, x0) for s < t (DDPM eq. 6-7 with beta = 1 - abar_t/abar_s)."""
        a_t = self.abar(t).to(x_t).reshape(-1, *([1] * (x_t.ndim - 1)))
        a_s = self.abar(s).to(x_t).reshape(-1, *([1] * (x_t.ndim - 1)))
        beta = 1 - a_t / a_s
        c0 = a_s.sqrt() * beta / (1 - a_t)
        ct = (1 - beta).sqrt() * (1 - a_s) / (1 - a_t)
        var = beta * (1 - a_s) / (1 - a_t)
        return c0 * x0 + ct * x_t, var
