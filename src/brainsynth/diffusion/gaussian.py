"""Gaussian diffusion (DDPM, Ho et al. 2020) with eps, x0 or v prediction.

Notation. T = ``num_timesteps``; the integer index t runs over 0 .. T-1 and stands for the paper's
step t + 1 (DDPM counts 1..T). Index -1 is the clean data (abar = 1); it is never fed to a network
but samplers step to it last.
    beta_t     variance added at step t;  alpha_t = 1 - beta_t           (DDPM eq. 2)
    abar_t     prod_{i <= t} alpha_i,  abar_{-1} = 1                      (DDPM sec. 2)
    x_t        sqrt(abar_t) x0 + sqrt(1 - abar_t) eps,  eps ~ N(0, I)     (DDPM eq. 4)
    v          sqrt(abar_t) eps - sqrt(1 - abar_t) x0                     (Salimans & Ho 2022, sec. 4)
    x0         = sqrt(abar_t) x_t - sqrt(1 - abar_t) v                    (ibid., the inverse)
    eps        = sqrt(1 - abar_t) x_t + sqrt(abar_t) v                    (ibid.)
    q(x_s | x_t, x0) for s < t: mean c0 x0 + ct x_t, variance var        (DDPM eq. 6-7, with the
               one-step beta_t replaced by 1 - abar_t / abar_s so that any s < t works: respacing)
All tables are float64 on the CPU; coefficients are gathered there and cast to the input's dtype
(float32 at least) and device on use.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from brainsynth.diffusion.schedules import Schedule, make_betas

Prediction = Literal["eps", "x0", "v"]


def gather(table: Tensor, t: Tensor | int, like: Tensor, offset: int = 0) -> Tensor:
    """``table[t + offset]`` shaped ``(B, 1, ..., 1)`` to broadcast against ``like``, in ``like``'s
    device and floating dtype (float32 at least). Raises on out-of-range indices instead of letting
    negative indices wrap around."""
    idx = torch.as_tensor(t).detach().long().cpu().reshape(-1) + offset
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= table.shape[0]):
        raise ValueError(
            f"timestep out of range: got {int(idx.min()) - offset}..{int(idx.max()) - offset}, "
            f"valid {-offset}..{table.shape[0] - 1 - offset}"
        )
    dtype = like.dtype if like.dtype in (torch.float32, torch.float64) else torch.float32
    out = table[idx].to(dtype).to(like.device)
    return out.reshape(-1, *([1] * (like.ndim - 1)))


class GaussianProcess:
    """DDPM forward process. ``prediction`` says what the network outputs."""

    def __init__(
        self,
        num_timesteps: int = 1000,
        schedule: Schedule = "linear",
        prediction: Prediction = "eps",
        beta_start: float | None = None,
        beta_end: float | None = None,
    ):
        if prediction not in ("eps", "x0", "v"):
            raise ValueError(f"unknown prediction {prediction!r}; use eps, x0 or v")
        self.num_timesteps = int(num_timesteps)
        self.schedule = schedule
        self.prediction: Prediction = prediction
        self.betas = make_betas(schedule, self.num_timesteps, beta_start, beta_end)
        self.alphas = 1.0 - self.betas
        self.alpha_bar = torch.cumprod(self.alphas, dim=0)
        # abar with abar_{-1} = 1 prepended: index t + 1 of this table is abar_t for t >= -1.
        self._abar_padded = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar])

    @property
    def alphas_cumprod(self) -> Tensor:
        """Alias of ``alpha_bar`` (the name used by DDPM code bases)."""
        return self.alpha_bar

    def __repr__(self) -> str:
        return (
            f"GaussianProcess(num_timesteps={self.num_timesteps}, schedule={self.schedule!r}, "
            f"prediction={self.prediction!r})"
        )

    # ---- tables ---------------------------------------------------------------------------

    def abar(self, t: Tensor | int) -> Tensor:
        """abar_t as a float64 CPU tensor shaped like ``t``; ``t = -1`` gives 1 (clean data)."""
        tt = torch.as_tensor(t).detach().long().cpu()
        if tt.numel() and (int(tt.min()) < -1 or int(tt.max()) >= self.num_timesteps):
            raise ValueError(f"timestep out of range -1..{self.num_timesteps - 1}")
        return self._abar_padded[tt + 1]

    def snr(self, t: Tensor | int) -> Tensor:
        """Signal-to-noise ratio abar_t / (1 - abar_t) (Kingma et al. 2021), float64 CPU."""
        a = self.abar(t)
        return a / (1 - a)

    # ---- NoiseProcess ---------------------------------------------------------------------

    def sample_t(
        self,
        batch: int,
        *,
        generator: torch.Generator | None = None,
        device: str | torch.device = "cpu",
    ) -> Tensor:
        """``(batch,)`` int64 timesteps uniform on 0..T-1 (DDPM Algorithm 1), drawn on the
        generator's device so a seed gives the same draws wherever the data lives."""
        gen_device = generator.device if generator is not None else "cpu"
        t = torch.randint(0, self.num_timesteps, (batch,), generator=generator, device=gen_device)
        return t.to(device)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor, y: Tensor | None = None) -> Tensor:
        """x_t ~ q(x_t | x0) given the noise (``y`` is ignored)."""
        a = gather(self.alpha_bar, t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise  # DDPM eq. 4

    def target(self, x0: Tensor, t: Tensor, noise: Tensor, y: Tensor | None = None) -> Tensor:
        """What the network is trained to output at (x0, t, noise)."""
        if self.prediction == "eps":
            return noise  # DDPM eq. 14 (L_simple)
        if self.prediction == "x0":
            return x0
        a = gather(self.alpha_bar, t, x0)
        return a.sqrt() * noise - (1 - a).sqrt() * x0  # v: Salimans & Ho 2022, sec. 4

    def loss_weight(self, t: Tensor, like: Tensor, min_snr_gamma: float | None = None) -> Tensor:
        """Per-row weight of the MSE to :meth:`target`, shaped ``(B, 1, ..., 1)`` like ``like``.

        ``None``: 1 (DDPM's L_simple). Otherwise Min-SNR-gamma (Hang et al. 2023, eq. 10-12): every
        objective is reweighted so that its loss equals ``min(SNR, gamma)`` times the x0 MSE,
            eps: min(SNR, gamma) / SNR,   x0: min(SNR, gamma),   v: min(SNR, gamma) / (SNR + 1),
        since ||eps^ - eps||^2 = SNR ||x0^ - x0||^2 and ||v^ - v||^2 = (SNR + 1) ||x0^ - x0||^2.
        It stops the low-noise steps, whose targets are nearly trivial, from dominating the
        gradient, and so converges several times faster at the same final quality (ibid., fig. 1).
        """
        if min_snr_gamma is None:
            return torch.ones((like.shape[0], *([1] * (like.ndim - 1))), device=like.device)
        if min_snr_gamma <= 0:
            raise ValueError(f"min_snr_gamma must be > 0, got {min_snr_gamma}")
        snr = self.snr(torch.arange(self.num_timesteps))
        clipped = snr.clamp(max=min_snr_gamma)
        table = {"eps": clipped / snr, "x0": clipped, "v": clipped / (snr + 1)}[self.prediction]
        return gather(table, t, like)

    def predict_x0(
        self, x_t: Tensor, t: Tensor, model_out: Tensor, y: Tensor | None = None
    ) -> Tensor:
        """x0 implied by the network output at (x_t, t)."""
        if self.prediction == "x0":
            return model_out
        a = gather(self.alpha_bar, t, x_t)
        if self.prediction == "eps":
            return (x_t - (1 - a).sqrt() * model_out) / a.sqrt()  # DDPM eq. 4 solved for x0
        return a.sqrt() * x_t - (1 - a).sqrt() * model_out  # Salimans & Ho 2022, sec. 4

    def predict_eps(
        self, x_t: Tensor, t: Tensor, model_out: Tensor, y: Tensor | None = None
    ) -> Tensor:
        """eps implied by the network output at (x_t, t)."""
        if self.prediction == "eps":
            return model_out
        a = gather(self.alpha_bar, t, x_t)
        if self.prediction == "x0":
            return (x_t - a.sqrt() * model_out) / (1 - a).sqrt()  # DDPM eq. 4 solved for eps
        return (1 - a).sqrt() * x_t + a.sqrt() * model_out  # Salimans & Ho 2022, sec. 4

    def eps_from_x0(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """eps consistent with x_t and a given x0 (DDPM eq. 4 solved for eps)."""
        a = gather(self.alpha_bar, t, x_t)
        return (x_t - a.sqrt() * x0) / (1 - a).sqrt()

    # ---- reverse-time helpers -------------------------------------------------------------

    def posterior(
        self, x0: Tensor, x_t: Tensor, t: Tensor, s: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(x_s | x_t, x0) for -1 <= s < t (default s = t - 1).

        DDPM eq. 6-7 with beta -> 1 - abar_t / abar_s; s = -1 gives mean x0 and variance 0.
        The variance is returned shaped ``(B, 1, ..., 1)``."""
        t = torch.as_tensor(t)
        s = t - 1 if s is None else torch.as_tensor(s)
        if bool((s.cpu() >= t.cpu()).any()):
            raise ValueError("posterior needs s < t")
        a_t = gather(self._abar_padded, t, x_t, 1)
        a_s = gather(self._abar_padded, s, x_t, 1)
        beta = 1 - a_t / a_s  # the respaced one-step beta
        c0 = a_s.sqrt() * beta / (1 - a_t)  # DDPM eq. 7, coefficient of x0
        ct = (1 - beta).sqrt() * (1 - a_s) / (1 - a_t)  # DDPM eq. 7, coefficient of x_t
        var = beta * (1 - a_s) / (1 - a_t)  # DDPM eq. 7, beta tilde
        return c0 * x0 + ct * x_t, var
