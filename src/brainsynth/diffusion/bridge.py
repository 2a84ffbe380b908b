"""Brownian bridge diffusion (BBDM, Li et al., CVPR 2023) between x0 (data) and y (condition).

Notation (index t = 0 .. T, T = num_timesteps; t = 0 is x0 itself, t = T is y itself):
    m_t        t / T (linear) or sin(pi t / 2T) ("sin")                (BBDM sec. 3.1)
    delta_t    2 s (m_t - m_t^2): zero at both ends, s/2 at m_t = 1/2  (BBDM eq. 4 with scale s)
    x_t        (1 - m_t) x0 + m_t y + sqrt(delta_t) eps                 (BBDM eq. 3)
    objectives "grad": x_t - x0 = m_t (y - x0) + sqrt(delta_t) eps     (BBDM eq. 11)
               "noise": eps;  "ysubx": y - x0
    q(x_s | x_t, x0, y), s < t, with a = (1 - m_t) / (1 - m_s) and mu_t the marginal mean:
               mean mu_s + a delta_s / delta_t (x_t - mu_t),  variance delta_s (delta_t - a^2 delta_s) / delta_t
               (Gaussian conditioning of the bridge's Markov transition; BBDM eq. 8-9 for s = t - 1)
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

Objective = Literal["grad", "noise", "ysubx"]


class BrownianBridgeProcess:
    def __init__(
        self,
        num_timesteps: int = 1000,
        m_schedule: Literal["linear", "sin"] = "linear",
        s: float = 1.0,
        objective: Objective = "grad",
    ):
        if objective not in ("grad", "noise", "ysubx"):
            raise ValueError(f"unknown objective {objective!r}; use grad, noise or ysubx")
        self.num_timesteps = num_timesteps
        self.objective = objective
        self.s = s
        u = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
        self.m = u if m_schedule == "linear" else torch.sin(u * math.pi / 2)
        self.delta = 2 * s * (self.m - self.m**2)
        self.m[-1], self.delta[0], self.delta[-1] = 1.0, 0.0, 0.0  # exact ends

    def _coef(self, values: Tensor, t: Tensor, like: Tensor) -> Tensor:
        return values[t.long().cpu()].to(like).reshape(-1, *([1] * (like.ndim - 1)))

    def sample_t(self, batch: int, *, generator=None, device="cpu") -> Tensor:
        """Training timesteps 1..T (t = 0 is the data itself)."""
        return torch.randint(1, self.num_timesteps + 1, (batch,), generator=generator).to(device)

    def mean(self, x0: Tensor, y: Tensor, t: Tensor) -> Tensor:
        m = self._coef(self.m, t, x0)
        return (1 - m) * x0 + m * y

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor, y: Tensor | None = None) -> Tensor:
        if y is None:
            raise ValueError("the Brownian bridge needs its end point y")
        return self.mean(x0, y, t) + self._coef(self.delta, t, x0).sqrt() * noise  # BBDM eq. 3

    def target(self, x0: Tensor, t: Tensor, noise: Tensor, y: Tensor | None = None) -> Tensor:
        if self.objective == "noise":
            return noise
        if self.objective == "ysubx":
            return y - x0
        m, d = self._coef(self.m, t, x0), self._coef(self.delta, t, x0)
        return m * (y - x0) + d.sqrt() * noise  # BBDM eq. 11

    def predict_x0(
        self, x_t: Tensor, t: Tensor, model_out: Tensor, y: Tensor | None = None
    ) -> Tensor:
        if self.objective == "grad":
            return x_t - model_out
        if self.objective == "ysubx":
            return y - model_out
        m, d = self._coef(self.m, t, x_t), self._coef(self.delta, t, x_t)
        return (x_t - m * y - d.sqrt() * model_out) / (1 - m).clamp_min(1e-6)

    def posterior(
        self, x0: Tensor, y: Tensor, x_t: Tensor, t: Tensor, s: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(x_s | x_t, x0, y) for s < t."""
        m_t, m_s = self._coef(self.m, t, x_t), self._coef(self.m, s, x_t)
        d_t, d_s = self._coef(self.delta, t, x_t), self._coef(self.delta, s, x_t)
        a = (1 - m_t) / (1 - m_s)
        gain = torch.where(d_t > 0, a * d_s / d_t.clamp_min(1e-30), torch.zeros_like(d_t))
        mean = self.mean(x0, y, s) + gain * (x_t - self.mean(x0, y, t))
        var = torch.where(d_t > 0, d_s * (d_t - a**2 * d_s) / d_t.clamp_min(1e-30), d_s)
        return mean, var.clamp_min(0.0)
