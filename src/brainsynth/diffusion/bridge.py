"""Brownian bridge diffusion (BBDM, Li et al., CVPR 2023) between x0 (data) and y (condition).

Notation. T = ``num_timesteps``; the integer index t runs over 0 .. T *inclusive*: t = 0 is x0
itself and t = T is y itself, both with zero variance. Training draws t in 1 .. ``t_max``; the
sampler starts at ``t_max`` from y and ends at 0.
    m_t        t / T ("linear", BBDM sec. 3.1) or sin(pi t / 2T) ("sin"); m_0 = 0, m_T = 1
    delta_t    2 s (m_t - m_t^2): 0 at both ends, s/2 at m_t = 1/2        (BBDM eq. 4, scale s)
    mu_t       (1 - m_t) x0 + m_t y
    x_t        mu_t + sqrt(delta_t) eps,  eps ~ N(0, I)                    (BBDM eq. 3)
    q(x_t | x_s, y), s < t, with a = (1 - m_t) / (1 - m_s):
               mean a x_s + (m_t - a m_s) y, variance delta_{t|s} = delta_t - a^2 delta_s
               (BBDM eq. 5-6 for s = t - 1; any s < t keeps the marginals above)
    q(x_s | x_t, x0, y), s < t: mean c_xt x_t + c_x0 x0 + c_y y, variance delta~ with
               c_xt = a delta_s / delta_t,  c_x0 = (1 - m_s) delta_{t|s} / delta_t,
               c_y = m_s - c_xt m_t,  delta~ = delta_{t|s} delta_s / delta_t  (BBDM eq. 7-9)
               At t = T (delta_T = 0, x_T = y) this is the marginal q(x_s | x0, y).
               BBDM's reverse-mean form c'_xt x_t + c'_yt y - c'_et grad (eq. 10-12) is the same
               with x0 = x_t - grad: c'_xt = c_xt + c_x0, c'_yt = c_y, c'_et = c_x0.
    objectives "grad":  m_t (y - x0) + sqrt(delta_t) eps = x_t - x0      (BBDM eq. 11-12)
               "noise": eps;   "ysubx": y - x0
The "noise" objective is undefined at t = T (x_T = y carries no noise) and badly conditioned
near it (x0 = (x_t - m_t y - sqrt(delta_t) eps) / (1 - m_t)): with it, ``t_max = T - 1`` and the
sampler starts from x_{T-1} := y, an approximation whose mean error is (1 - m_{T-1}) |y - x0|.
"grad" (BBDM's choice) and "ysubx" are well posed on all of 1..T.
Equation numbers refer to the CVPR 2023 paper; every formula above is also checked independently
(moments, Bayes consistency) in tests/diffusion/test_bridge.py.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

from brainsynth.diffusion.gaussian import gather
from brainsynth.diffusion.schedules import BridgeSchedule, bridge_m

Objective = Literal["grad", "noise", "ysubx"]


class BridgePosterior(NamedTuple):
    """Coefficients of q(x_s | x_t, x0, y) = N(c_xt x_t + c_x0 x0 + c_y y, var): float64 CPU."""

    c_xt: Tensor
    c_x0: Tensor
    c_y: Tensor
    var: Tensor


class BrownianBridgeProcess:
    """BBDM forward process; ``objective`` says what the network outputs."""

    def __init__(
        self,
        num_timesteps: int = 1000,
        m_schedule: BridgeSchedule = "linear",
        s: float = 1.0,
        objective: Objective = "grad",
    ):
        if objective not in ("grad", "noise", "ysubx"):
            raise ValueError(f"unknown objective {objective!r}; use grad, noise or ysubx")
        if s <= 0:
            raise ValueError(f"variance scale s must be > 0, got {s}")
        self.num_timesteps = int(num_timesteps)
        self.m_schedule = m_schedule
        self.objective: Objective = objective
        self.s = float(s)
        self.m = bridge_m(self.num_timesteps, m_schedule)
        self.delta = 2.0 * self.s * (self.m - self.m**2)  # BBDM eq. 4 with variance scale s
        self.delta[0], self.delta[-1] = 0.0, 0.0
        self.t_max = self.num_timesteps - 1 if objective == "noise" else self.num_timesteps

    def __repr__(self) -> str:
        return (
            f"BrownianBridgeProcess(num_timesteps={self.num_timesteps}, "
            f"m_schedule={self.m_schedule!r}, s={self.s}, objective={self.objective!r})"
        )

    # ---- NoiseProcess ---------------------------------------------------------------------

    def sample_t(
        self,
        batch: int,
        *,
        generator: torch.Generator | None = None,
        device: str | torch.device = "cpu",
    ) -> Tensor:
        """``(batch,)`` int64 timesteps uniform on 1..t_max (t = 0 is the data itself)."""
        gen_device = generator.device if generator is not None else "cpu"
        t = torch.randint(1, self.t_max + 1, (batch,), generator=generator, device=gen_device)
        return t.to(device)

    def mean(self, x0: Tensor, y: Tensor, t: Tensor) -> Tensor:
        """mu_t = (1 - m_t) x0 + m_t y."""
        m = gather(self.m, t, x0)
        return (1 - m) * x0 + m * y

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor, y: Tensor | None = None) -> Tensor:
        """x_t ~ q(x_t | x0, y) given the noise."""
        y = _need_y(y)
        return self.mean(x0, y, t) + gather(self.delta, t, x0).sqrt() * noise  # BBDM eq. 3

    def target(self, x0: Tensor, t: Tensor, noise: Tensor, y: Tensor | None = None) -> Tensor:
        """What the network is trained to output at (x0, y, t, noise)."""
        y = _need_y(y)
        if self.objective == "noise":
            return noise
        if self.objective == "ysubx":
            return y - x0
        m, d = gather(self.m, t, x0), gather(self.delta, t, x0)
        return m * (y - x0) + d.sqrt() * noise  # BBDM eq. 11-12: the "grad" objective

    def predict_x0(
        self, x_t: Tensor, t: Tensor, model_out: Tensor, y: Tensor | None = None
    ) -> Tensor:
        """x0 implied by the network output at (x_t, y, t)."""
        if self.objective == "grad":
            return x_t - model_out
        y = _need_y(y)
        if self.objective == "ysubx":
            return y - model_out
        if bool((torch.as_tensor(t).cpu() >= self.num_timesteps).any()):
            raise ValueError("the noise objective cannot give x0 at t = T (x_T = y has no noise)")
        m, d = gather(self.m, t, x_t), gather(self.delta, t, x_t)
        return (x_t - m * y - d.sqrt() * model_out) / (1 - m)  # BBDM eq. 3 solved for x0

    # ---- reverse-time helpers -------------------------------------------------------------

    def predict_noise(self, x_t: Tensor, t: Tensor, x0: Tensor, y: Tensor) -> Tensor:
        """eps = (x_t - mu_t) / sqrt(delta_t) for a given x0; 0 where delta_t = 0 (t = 0, T)."""
        d = gather(self.delta, t, x_t)
        safe = torch.where(d > 0, d, torch.ones_like(d)).sqrt()
        return torch.where(d > 0, (x_t - self.mean(x0, y, t)) / safe, torch.zeros_like(x_t))

    def posterior_coefficients(
        self, t: Tensor | int, s: Tensor | int | None = None
    ) -> BridgePosterior:
        """Coefficients of q(x_s | x_t, x0, y) for 0 <= s < t <= T (default s = t - 1), float64
        CPU tensors shaped like ``t`` (BBDM eq. 7-9, generalised to any s < t)."""
        tt = torch.as_tensor(t).detach().long().cpu()
        ss = tt - 1 if s is None else torch.as_tensor(s).detach().long().cpu()
        tt, ss = torch.broadcast_tensors(tt, ss)
        if bool((ss >= tt).any()) or bool((ss < 0).any()) or bool((tt > self.num_timesteps).any()):
            raise ValueError(f"posterior needs 0 <= s < t <= {self.num_timesteps}")
        m_t, m_s = self.m[tt], self.m[ss]
        d_t, d_s = self.delta[tt], self.delta[ss]
        a = (1 - m_t) / (1 - m_s)  # s < t <= T so m_s < 1
        # delta_t = 0 only at t = T, where x_t = y says nothing more about x_s: gain 0.
        c_xt = torch.where(d_t > 0, a * d_s / torch.where(d_t > 0, d_t, 1.0), 0.0)
        c_x0 = (1 - m_s) - c_xt * (1 - m_t)  # = (1 - m_s) delta_{t|s} / delta_t  (BBDM eq. 8)
        c_y = m_s - c_xt * m_t  # BBDM eq. 8
        var = (d_s * (1 - c_xt * a)).clamp_min(0.0)  # = delta_{t|s} delta_s / delta_t (BBDM eq. 9)
        return BridgePosterior(c_xt, c_x0, c_y, var)

    def posterior(
        self, x0: Tensor, y: Tensor, x_t: Tensor, t: Tensor, s: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(x_s | x_t, x0, y) (default s = t - 1); the variance is shaped
        ``(B, 1, ..., 1)``."""
        c = self.posterior_coefficients(t, s)
        idx = torch.arange(c.var.numel())

        def col(v: Tensor) -> Tensor:
            return gather(v.reshape(-1), idx, x_t)

        mean = col(c.c_xt) * x_t + col(c.c_x0) * x0 + col(c.c_y) * y
        return mean, col(c.var)


def _need_y(y: Tensor | None) -> Tensor:
    if y is None:
        raise ValueError("the Brownian bridge needs its end point y")
    return y
