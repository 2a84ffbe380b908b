"""Decoupled Annealing Posterior Sampling (DAPS; Zhang, Chu, Berner, Meng, Anandkumar, Song,
"Improving Diffusion Inverse Problem Solving with Decoupled Noise Annealing", CVPR 2025).

Notation (VE noise levels, x_t = x0 + sigma_t eps, as in the paper and EDM):
    sigma_i     annealing levels, i = 0 .. N-1 from sigma_max down to sigma_min, on the EDM
                polynomial schedule (Karras et al. 2022, eq. 5):
                sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho
    D(x, s)     denoiser E[x0 | x_t = x] at level s (see ``inverse.denoiser``)
    x0_hat      x0_hat(x_t): the probability-flow ODE dx/ds = (x - D(x, s)) / s (EDM eq. 3 with
                s(t) = 1, sigma(t) = t) solved from sigma_i to 0 by Euler steps; one step is
                Tweedie's estimate D(x_t, sigma_i)
    r_i         std of the paper's Gaussian approximation p(x0 | x_t) ~= N(x0_hat(x_t), r_i^2 I)
                (DAPS sec. 3.3, eq. 7-8); r_i = sigma_i by default
    beta_y      likelihood std: p(y | x0) = N(y; A(x0), beta_y^2 I); the paper's pixel configs fix
                it as a hyperparameter ``tau`` = 0.01 (a tempered likelihood) rather than the true
                measurement noise; ``tau=None`` uses the operator's own ``sigma``
    eta_i       Langevin step size, decaying linearly over the levels from ``step_size`` to
                ``step_decay * step_size``
Per level (DAPS Algorithm 1):
    1. x0_hat = ODE(x_t, sigma_i -> 0)
    2. x0 ~ p(x0 | x_t, y) ∝ N(x0; x0_hat, r_i^2 I) p(y | x0) by Langevin dynamics (DAPS eq. 9):
       x0 <- x0 + eta_i grad_x0 [log p(y | x0) - |x0 - x0_hat|^2 / (2 r_i^2)] + sqrt(2 eta_i) z
    3. x_t <- x0 + sigma_{i+1} eps  (decoupled: the next x_t depends on x_t only through x0);
       at the last level x0 itself is returned (sigma = 0).
Network evaluations: N * ode_steps (the pixel defaults: 200 * 5 = 1000); Langevin needs only the
operator's gradient, never the network's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal, Protocol

import torch
from torch import Tensor

from brainsynth.diffusion.base import Progress
from brainsynth.inverse.operators import residual
from brainsynth.sampling.schedule import randn_like

PriorScale = Literal["sigma", "bounded"]

#: ``x0_hat(x, sigma) -> x0``: x: (B, C, *S) at VE level sigma; e.g. ``VPDenoiser``.
VEDenoiserFn = Callable[[Tensor, float], Tensor]


class LikelihoodOperator(Protocol):
    """What DAPS needs of a forward operator (``inverse.operators.Operator`` satisfies it).

    ``forward``: (B, C, *S) -> measurement, differentiable. ``sigma``: measurement noise std.
    An optional ``update(x0, y)`` method is called once per annealing level (see daps_sample)."""

    sigma: float

    def forward(self, x: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class DAPSConfig:
    """DAPS settings; the defaults are the paper's pixel-space ones (DAPS-1K: 200 levels x 5 ODE
    steps = 1000 network evaluations). ``DAPSConfig.latent()`` gives the latent-space ones.

    annealing_steps  N, the levels of the annealing schedule
    sigma_max/min    first and last level (VE sigma)
    rho              EDM polynomial schedule exponent (Karras et al. 2022, eq. 5)
    ode_steps        Euler steps (= network evaluations) of the PF-ODE per level; 1 = Tweedie
    ode_sigma_min    the last nonzero level of each inner ODE schedule (which runs from sigma_i to
                     ode_sigma_min on the same rho schedule, then one step to 0); our choice,
                     about the smallest noise level of a 1000-step DDPM (0.01)
    langevin_steps   Langevin iterations per level
    step_size        Langevin step size eta at the first level (the paper's "lr")
    step_decay       eta decays linearly over the levels to step_decay * step_size
    tau              beta_y, the likelihood std used in Langevin (the paper's tau: 0.01 for its
                     pixel tasks, whatever the true noise); None: the operator's ``sigma``, which
                     makes DAPS target the exact Bayesian posterior
    prior_scale      r_i: "sigma" (r_i = sigma_i, the paper's choice) or "bounded"
                     (r_i = sigma_i data_std / sqrt(sigma_i^2 + data_std^2), the exact posterior
                     std of x0 given x_t for data of std ``data_std``: it stops the prior term from
                     vanishing at high noise)
    data_std         std of the data, used only by prior_scale="bounded"
    """

    annealing_steps: int = 200
    sigma_max: float = 100.0
    sigma_min: float = 0.1
    rho: float = 7.0
    ode_steps: int = 5
    ode_sigma_min: float = 0.01
    langevin_steps: int = 100
    step_size: float = 1e-4
    step_decay: float = 0.01
    tau: float | None = 0.01
    prior_scale: PriorScale = "sigma"
    data_std: float = 1.0

    def __post_init__(self) -> None:
        if self.annealing_steps < 1 or self.ode_steps < 1 or self.langevin_steps < 0:
            raise ValueError("need annealing_steps >= 1, ode_steps >= 1, langevin_steps >= 0")
        if not 0 < self.sigma_min <= self.sigma_max:
            raise ValueError(
                f"need 0 < sigma_min <= sigma_max, got {self.sigma_min}, {self.sigma_max}"
            )
        if self.rho <= 0 or self.ode_sigma_min <= 0:
            raise ValueError("rho and ode_sigma_min must be > 0")
        if self.step_size <= 0 or self.step_decay <= 0:
            raise ValueError("step_size and step_decay must be > 0")
        if self.tau is not None and self.tau <= 0:
            raise ValueError(f"tau must be > 0 or None, got {self.tau}")
        if self.prior_scale not in ("sigma", "bounded"):
            raise ValueError(f"unknown prior_scale {self.prior_scale!r}; use sigma or bounded")
        if self.data_std <= 0:
            raise ValueError(f"data_std must be > 0, got {self.data_std}")

    @classmethod
    def latent(cls, **overrides: object) -> DAPSConfig:
        """The paper's latent-space budget: 50 levels x 2 ODE steps (100 network evaluations);
        the other fields keep the pixel defaults unless overridden."""
        return replace(cls(annealing_steps=50, ode_steps=2), **overrides)  # type: ignore[arg-type]


@dataclass
class DAPSResult:
    """x0: (B, C, *S) the sample; nfe: network evaluations made; seconds: wall time."""

    x0: Tensor
    nfe: int
    seconds: float


def edm_sigmas(n: int, sigma_max: float, sigma_min: float, rho: float = 7.0) -> Tensor:
    """``(n,)`` float64 levels from sigma_max to sigma_min, both included (Karras et al. 2022,
    eq. 5); ``n = 1`` gives ``[sigma_max]``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n == 1:
        return torch.tensor([float(sigma_max)], dtype=torch.float64)
    u = torch.arange(n, dtype=torch.float64) / (n - 1)
    hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (hi + u * (lo - hi)) ** rho


def count_nfe(config: DAPSConfig) -> int:
    """Network evaluations of one :func:`daps_sample` run: annealing_steps * ode_steps."""
    return config.annealing_steps * config.ode_steps


def step_sizes(config: DAPSConfig) -> Tensor:
    """``(N,)`` float64 Langevin step size of each level: linear from step_size to
    step_decay * step_size (reached exactly at the last level)."""
    n = config.annealing_steps
    u = torch.arange(n, dtype=torch.float64) / max(n - 1, 1)
    return config.step_size * (1 + u * (config.step_decay - 1))


def prior_std(sigma: float, config: DAPSConfig) -> float:
    """r_i of the Gaussian approximation p(x0 | x_t) ~= N(x0_hat, r_i^2 I) at level sigma."""
    if config.prior_scale == "sigma":
        return float(sigma)
    s = config.data_std
    return float(sigma) * s / math.sqrt(float(sigma) ** 2 + s**2)


@torch.no_grad()
def ode_x0(x0_hat: VEDenoiserFn, x: Tensor, sigma: float, config: DAPSConfig) -> Tensor:
    """x0_hat(x_t): Euler steps of the PF-ODE from ``sigma`` to 0, ``config.ode_steps`` denoiser
    calls. x: (B, C, *S)."""
    k = config.ode_steps
    levels = edm_sigmas(k, sigma, min(config.ode_sigma_min, sigma), config.rho).tolist() + [0.0]
    for s, s_next in zip(levels[:-1], levels[1:]):
        d = x0_hat(x, s)
        # Euler on dx/ds = (x - D) / s; the final step to s = 0 lands exactly on D
        x = d if s_next == 0.0 else x + (s_next - s) * (x - d) / s
    return x


def _langevin(
    op: LikelihoodOperator,
    y: Tensor,
    x0_hat: Tensor,
    *,
    r: float,
    beta_y: float,
    eta: float,
    steps: int,
    generator: torch.Generator | None,
) -> Tensor:
    """``steps`` unadjusted Langevin steps on x0 targeting N(x0; x0_hat, r^2) p(y | x0), started
    at x0_hat (DAPS eq. 9). The graph is built only through the operator, w.r.t. x0."""
    x = x0_hat.detach().clone()
    noise_scale = math.sqrt(2 * eta)
    for _ in range(steps):
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            # summed over the batch: each sample's gradient is its own (operators act per sample);
            # only measured voxels count (the operator's ``observed``, if it has one)
            loglik = -residual(op, xg, y).pow(2).sum() / (2 * beta_y**2)  # type: ignore[arg-type]
            (grad,) = torch.autograd.grad(loglik, xg)
        with torch.no_grad():
            x = x + eta * (grad - (x - x0_hat) / r**2) + noise_scale * randn_like(x, generator)
    return x


def daps_sample(
    x0_hat: VEDenoiserFn,
    op: LikelihoodOperator,
    y: Tensor,
    *,
    config: DAPSConfig,
    x_init: Tensor | None = None,
    shape: tuple[int, ...] | None = None,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
) -> DAPSResult:
    """One DAPS run: a sample x0 (B, C, *S) of p(x0 | y) under the prior of ``x0_hat``.

    x0_hat: the VE denoiser ``D(x, sigma)`` (e.g. ``VPDenoiser``). op: ``forward`` + ``sigma``,
    plus optionally ``update(x0, y)``, called once per level with the detached ODE estimate
    x0_hat (the prior's guess, before the likelihood pulls it towards the operator's current
    parameters) so that an operator with unknown parameters (a bias field) can re-fit them:
    coordinate descent between image and operator. y: the measurement, as ``op.forward`` makes it.
    x_init: (B, C, *S) a guess of x0; the start is x_init + sigma_max eps (zeros if None, the
    paper's x_T ~ N(0, sigma_max^2 I)). shape: (B, C, *S) when there is no x_init.
    progress(level, N) is called after each level. All noise comes from ``generator``."""
    start = time.perf_counter()
    if x_init is None:
        if shape is None:
            raise ValueError("give x_init or shape: y need not have the shape of x0")
        x_init = torch.zeros(shape, device=y.device, dtype=torch.float32)
    x_init = x_init.detach()
    beta_y = float(op.sigma if config.tau is None else config.tau)
    if not beta_y > 0:
        raise ValueError(f"the likelihood std must be > 0, got {beta_y} (tau or op.sigma)")
    update = getattr(op, "update", None)
    sigmas = edm_sigmas(config.annealing_steps, config.sigma_max, config.sigma_min, config.rho)
    etas = step_sizes(config)
    n = config.annealing_steps
    nfe = 0

    def counted(x: Tensor, s: float) -> Tensor:
        nonlocal nfe
        nfe += 1
        return x0_hat(x, s)

    x_t = x_init + float(sigmas[0]) * randn_like(x_init, generator)
    x0 = x_init
    for i in range(n):
        sigma = float(sigmas[i])
        x0_prior = ode_x0(counted, x_t, sigma, config).detach()
        if callable(update):
            update(x0_prior, y)
        x0 = _langevin(
            op,
            y,
            x0_prior,
            r=prior_std(sigma, config),
            beta_y=beta_y,
            eta=float(etas[i]),
            steps=config.langevin_steps,
            generator=generator,
        )
        if not bool(torch.isfinite(x0).all()):
            raise FloatingPointError(
                f"DAPS diverged at level {i} (sigma={sigma:.4g}, eta={float(etas[i]):.3g}): "
                "lower step_size or raise tau"
            )
        if i + 1 < n:
            x_t = x0 + float(sigmas[i + 1]) * randn_like(x0, generator)  # DAPS Algorithm 1, step 3
        if progress is not None:
            progress(i + 1, n)
    return DAPSResult(x0=x0.detach(), nfe=nfe, seconds=time.perf_counter() - start)


def posterior_samples(
    x0_hat: VEDenoiserFn,
    op: LikelihoodOperator,
    y: Tensor,
    *,
    config: DAPSConfig,
    n_samples: int,
    x_init: Tensor | None = None,
    shape: tuple[int, ...] | None = None,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
) -> tuple[Tensor, Tensor]:
    """Voxel-wise posterior mean and std, each (B, C, *S), over ``n_samples`` independent DAPS
    runs (successive draws of one generator). The std is the unbiased sample std (zeros for one
    sample); accumulated in float64 so that many runs do not lose precision.
    progress(step, n_samples * N) counts levels over all runs."""
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    total = 0.0
    mean: Tensor | None = None
    m2: Tensor | None = None
    for k in range(n_samples):
        run_progress = None
        if progress is not None:
            run_progress = lambda i, tot, k=k: progress(k * tot + i, n_samples * tot)  # noqa: E731
        x = daps_sample(
            x0_hat,
            op,
            y,
            config=config,
            x_init=x_init,
            shape=shape,
            generator=generator,
            progress=run_progress,
        ).x0.to(torch.float64)
        # Welford's update: stable where the mean is large against the spread (MRI intensities)
        total += 1
        if mean is None or m2 is None:
            mean, m2 = x.clone(), torch.zeros_like(x)
        else:
            delta = x - mean
            mean = mean + delta / total
            m2 = m2 + delta * (x - mean)
    assert mean is not None and m2 is not None
    std = (m2 / (total - 1)).sqrt() if n_samples > 1 else torch.zeros_like(m2)
    dtype = x_init.dtype if x_init is not None else torch.float32
    return mean.to(dtype), std.to(dtype)
