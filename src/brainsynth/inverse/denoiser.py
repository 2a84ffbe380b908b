"""The engine's VP (DDPM) network as a VE denoiser ``D(x, sigma) -> x0``, the form DAPS needs.

Notation (VP: DDPM, Ho et al. 2020; VE: Karras et al. 2022, "EDM", sec. 2):
    VP    x_t  = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps                 (DDPM eq. 4)
    VE    x    = x0 + sigma eps                                          (EDM eq. 1-2, s(t) = 1)
    map   sigma_t = sqrt((1 - abar_t) / abar_t),  x_t = sqrt(abar_t) x   (EDM eq. 4 / table 1, "VP")
          equivalently abar = 1 / (1 + sigma^2): dividing the VP point by sqrt(abar_t) gives a VE
          point with the same x0 and noise level sigma_t, so one network serves both views.
    D     D(x, sigma) = E[x0 | x] (Tweedie), from the network output o at (x_vp, t):
          eps: x0 = x - sigma o;   x0: x0 = o;   v: x0 = sqrt(abar) x_vp - sqrt(1 - abar) o
          (DDPM eq. 4 and Salimans & Ho 2022 sec. 4 with x_vp = sqrt(abar) x).

The continuous timestep t(sigma) is found by interpolating log sigma_t linearly between the
integer timesteps (sigma_t is increasing in t); abar is then 1 / (1 + sigma^2) exactly, so the
network sees precisely the noise level of its input. MONAI's ``DiffusionModelUNet`` embeds
timesteps with ``timesteps.float() * freqs`` (sinusoidal, smooth in t), so fractional t are
accepted and fall between the embeddings the network was trained on. ``time="nearest"`` snaps to
the nearest trained timestep instead (for networks that need integer t); the input is then
treated as being at that timestep's sigma_t, an error of at most half a timestep.
"""

from __future__ import annotations

from typing import Literal, Protocol

import torch
from torch import Tensor

from brainsynth.diffusion.base import Cond, Denoiser
from brainsynth.diffusion.gaussian import GaussianProcess

TimeMode = Literal["continuous", "nearest"]


class VEDenoiser(Protocol):
    """``D(x, sigma) -> x0_hat``: x: (B, C, *S) at VE noise level sigma (a float, or (B,))."""

    sigma_min: float
    sigma_max: float

    def __call__(self, x: Tensor, sigma: float | Tensor) -> Tensor: ...


class VPDenoiser:
    """Wraps a VP network ``model(x_t, t, cond) -> prediction`` of ``process`` (eps, x0 or v) as a
    VE denoiser. ``sigma`` is clamped to ``[sigma_min, sigma_max]``, the noise levels of the
    process's first and last timesteps: the network knows nothing outside them.

    Gradients flow through it if the caller wants them; DAPS calls it under ``torch.no_grad``."""

    def __init__(
        self,
        model: Denoiser,
        process: GaussianProcess,
        cond: Cond | None = None,
        *,
        time: TimeMode = "continuous",
    ):
        if time not in ("continuous", "nearest"):
            raise ValueError(f"unknown time mode {time!r}; use continuous or nearest")
        self.model = model
        self.process = process
        self.cond = cond
        self.time: TimeMode = time
        abar = process.alpha_bar  # float64, CPU
        # float64 so that the tiny 1 - abar of the first timesteps keeps its precision
        self.sigmas = ((1 - abar) / abar).sqrt()
        if not bool((self.sigmas[1:] > self.sigmas[:-1]).all()):
            raise ValueError("the process's sigma_t must increase strictly with t")
        self._log_sigmas = self.sigmas.log()
        self.sigma_min = float(self.sigmas[0])
        self.sigma_max = float(self.sigmas[-1])

    def __repr__(self) -> str:
        return (
            f"VPDenoiser(process={self.process!r}, time={self.time!r}, "
            f"sigma=[{self.sigma_min:.4g}, {self.sigma_max:.4g}])"
        )

    def timestep(self, sigma: Tensor) -> Tensor:
        """Continuous timestep t(sigma) in [0, T-1], float64 like ``sigma`` (clamped first)."""
        log_s = sigma.to(torch.float64).cpu().clamp(self.sigma_min, self.sigma_max).log()
        table = self._log_sigmas
        hi = torch.searchsorted(table, log_s).clamp(1, table.numel() - 1)
        lo = hi - 1
        frac = (log_s - table[lo]) / (table[hi] - table[lo])
        return lo.to(torch.float64) + frac.clamp(0.0, 1.0)

    def __call__(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """x0_hat: (B, C, *S) for x: (B, C, *S) at VE level ``sigma`` (float or (B,))."""
        batch = x.shape[0]
        s = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1).cpu()
        s = s.expand(batch) if s.numel() == 1 else s
        if s.numel() != batch:
            raise ValueError(f"sigma must be a scalar or ({batch},), got {tuple(s.shape)}")
        t = self.timestep(s)
        shape = (batch, *([1] * (x.ndim - 1)))
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        if self.time == "nearest":
            ti = t.round().long()
            x_vp = self.process.alpha_bar[ti].sqrt().to(dtype).to(x.device).reshape(shape) * x
            out = self.model(x_vp, ti.to(x.device), self.cond)
            return self.process.predict_x0(x_vp, ti.to(x.device), out)
        # abar from sigma itself (not interpolated): the VP point then carries exactly the
        # input's noise, whatever the interpolation of t does to the embedding.
        s = s.clamp(self.sigma_min, self.sigma_max)
        abar = (1.0 / (1.0 + s**2)).to(dtype).to(x.device).reshape(shape)
        x_vp = abar.sqrt() * x
        out = self.model(x_vp, t.to(dtype).to(x.device), self.cond)
        pred = self.process.prediction
        if pred == "x0":
            return out
        if pred == "eps":
            # (x_vp - sqrt(1 - abar) eps) / sqrt(abar) = x - sigma eps; the clamped sigma matches
            # the abar used to build x_vp
            return x - s.to(dtype).to(x.device).reshape(shape) * out
        return abar.sqrt() * x_vp - (1 - abar).sqrt() * out  # Salimans & Ho 2022, sec. 4
