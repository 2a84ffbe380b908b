"""DAPS and the VP -> VE denoiser adapter, checked against a Gaussian prior where everything is
analytic: the VE denoiser D(x, sigma) = m + s^2 / (s^2 + sigma^2) (x - m), the PF-ODE solution
x0 = m + s (x - m) / sqrt(s^2 + sigma^2), and for y = A x0 + n, n ~ N(0, sigma_y^2 I), the
posterior N(mu, C) with C = (A^T A / sigma_y^2 + I / s^2)^-1, mu = C (A^T y / sigma_y^2 + m / s^2).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from brainsynth.diffusion.gaussian import GaussianProcess
from brainsynth.inverse.daps import (
    DAPSConfig,
    count_nfe,
    daps_sample,
    edm_sigmas,
    ode_x0,
    posterior_samples,
    step_sizes,
)
from brainsynth.inverse.denoiser import VPDenoiser


@pytest.fixture(autouse=True)
def _one_thread():
    """The toy tensors are tiny ((2000, 16)): intra-op threads only add synchronisation, which on
    a loaded 2-core machine made the Monte Carlo tests ~25x slower. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- a Gaussian toy problem: x0 (B, 1, 4, 4) ~ N(m, s^2 I), y = A vec(x0) + n ------------------

D_SIDE, K_MEAS = 4, 8
D = D_SIDE * D_SIDE
S_PRIOR, SIGMA_Y = 1.0, 0.5


def _problem(seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    m = 0.5 * torch.randn(D, generator=g, dtype=torch.float64)
    a = torch.randn(K_MEAS, D, generator=g, dtype=torch.float64) / math.sqrt(D)
    x_true = m + S_PRIOR * torch.randn(D, generator=g, dtype=torch.float64)
    y = a @ x_true + SIGMA_Y * torch.randn(K_MEAS, generator=g, dtype=torch.float64)
    prec = a.T @ a / SIGMA_Y**2 + torch.eye(D, dtype=torch.float64) / S_PRIOR**2
    cov = torch.linalg.inv(prec)
    mu = cov @ (a.T @ y / SIGMA_Y**2 + m / S_PRIOR**2)
    return {"m": m, "A": a, "y": y, "mu": mu, "cov": cov}


class MatrixOp:
    """y = A vec(x): (B, 1, 4, 4) -> (B, K)."""

    spatial_dims = 2

    def __init__(self, a: Tensor, sigma: float = SIGMA_Y):
        self.a = a
        self.sigma = sigma

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1) @ self.a.T


def gaussian_denoiser(m: Tensor, s: float = S_PRIOR):
    """The exact VE denoiser E[x0 | x0 + sigma eps = x] of N(m, s^2 I) (m broadcasts over x)."""

    def d(x: Tensor, sigma: float | Tensor) -> Tensor:
        sig = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        mm = m.reshape(1, *x.shape[1:]).to(x.dtype) if m.numel() > 1 else m.to(x.dtype)
        return mm + s**2 / (s**2 + sig**2) * (x - mm)

    return d


def _posterior_stats(config: DAPSConfig, batch: int, seed: int) -> tuple[Tensor, Tensor, dict]:
    p = _problem()
    y = p["y"].expand(batch, K_MEAS)
    x_init = torch.zeros(batch, 1, D_SIDE, D_SIDE, dtype=torch.float64)
    res = daps_sample(
        gaussian_denoiser(p["m"]),
        MatrixOp(p["A"]),
        y,
        config=config,
        x_init=x_init,
        generator=torch.Generator().manual_seed(seed),
    )
    x = res.x0.reshape(batch, D)
    return x.mean(0), x.var(0), p


# Modest settings (40 levels x 1 Tweedie step, 50 Langevin steps; ~2.5 s each): sigma_max = 10 is
# 10 prior stds; the Langevin step size 5e-2 decays to 5e-4 = 0.05 sigma_min^2 so that ULA's
# discretisation bias at the last levels (relative variance error ~ eta / (2 r^2)) stays small.
TOY = DAPSConfig(
    annealing_steps=40,
    sigma_max=10.0,
    sigma_min=0.1,
    ode_steps=1,
    langevin_steps=50,
    step_size=5e-2,
    step_decay=0.01,
    tau=None,  # the operator's own sigma: the exact Bayesian posterior is the target
)
BATCH = 2000


def test_gaussian_posterior_bounded_prior_std():
    """With r_i the exact std of p(x0 | x_t) for this prior (prior_scale="bounded"), DAPS with
    exact conditional sampling reproduces the posterior exactly (a closed-form recursion through
    the 40 levels gives errors ~1e-15), so what is left is Monte Carlo and Langevin error.

    Monte Carlo with 2000 chains: the mean of one voxel has std 0.022 posterior stds, the relative
    variance error std sqrt(2/2000) = 0.032; the max over 16 voxels is ~2.5x that. Measured over
    nine seeds: max mean error <= 0.07 posterior stds, max relative variance error <= 0.11, its
    average over voxels 0.02-0.045 (ULA with 50 steps inflates it slightly). Tolerances: mean within
    0.12 posterior stds (and 0.1 s) per voxel; variance within 20 % per voxel, 8 % on average
    (the posterior variances range over 0.09-1 s^2, so these do test the likelihood weight)."""
    cfg = DAPSConfig(**{**TOY.__dict__, "prior_scale": "bounded", "data_std": S_PRIOR})
    mean, var, p = _posterior_stats(cfg, BATCH, seed=1)
    post_std = p["cov"].diag().sqrt()
    assert float(((mean - p["mu"]).abs() / post_std).max()) < 0.12
    assert float((mean - p["mu"]).abs().max()) < 0.1 * S_PRIOR
    rel = var / p["cov"].diag() - 1
    assert float(rel.abs().max()) < 0.20
    assert abs(float(rel.mean())) < 0.08
    # the prior alone would be far off: the data shrink the variance to 0.09-0.5 in places
    assert float(p["cov"].diag().min()) < 0.5 * S_PRIOR**2


def test_gaussian_posterior_paper_prior_std():
    """The paper's r_i = sigma_i over-disperses p(x0 | x_t) at high noise; with 40 levels the
    closed-form recursion of exact DAPS gives a mean error of 0.05 s and variances up to 8.5 %
    high (the bias falls as 1/N: 2 % at 200 levels). Measured over nine seeds with 2000 chains:
    max mean error <= 0.09 posterior stds, variance error <= 18 % per voxel, 9-11 % on average.
    Tolerances: mean within 0.12 posterior stds (and 0.1 s); variance within 25 % per voxel,
    16 % on average."""
    mean, var, p = _posterior_stats(TOY, BATCH, seed=2)
    post_std = p["cov"].diag().sqrt()
    assert float(((mean - p["mu"]).abs() / post_std).max()) < 0.12
    assert float((mean - p["mu"]).abs().max()) < 0.1 * S_PRIOR
    rel = var / p["cov"].diag() - 1
    assert float(rel.abs().max()) < 0.25
    assert abs(float(rel.mean())) < 0.16


# ---- schedules, counts, defaults -----------------------------------------------------------------


def test_edm_schedule():
    s = edm_sigmas(200, 100.0, 0.1, 7.0)
    assert s.shape == (200,) and s.dtype == torch.float64
    assert float(s[0]) == pytest.approx(100.0, rel=1e-12)
    assert float(s[-1]) == pytest.approx(0.1, rel=1e-12)
    assert bool((s[1:] < s[:-1]).all())
    i = 57  # Karras et al. 2022, eq. 5
    expected = (100.0 ** (1 / 7) + i / 199 * (0.1 ** (1 / 7) - 100.0 ** (1 / 7))) ** 7
    assert float(s[i]) == pytest.approx(expected, rel=1e-12)
    assert edm_sigmas(1, 5.0, 0.1).tolist() == [5.0]


def test_step_size_decays_linearly():
    cfg = DAPSConfig(annealing_steps=11, step_size=1e-4, step_decay=0.01)
    eta = step_sizes(cfg)
    assert float(eta[0]) == pytest.approx(1e-4)
    assert float(eta[-1]) == pytest.approx(1e-6)
    assert torch.allclose(
        eta[1:] - eta[:-1], torch.full((10,), -(1e-4 - 1e-6) / 10, dtype=eta.dtype)
    )


def test_defaults_are_the_papers():
    cfg = DAPSConfig()
    assert (cfg.annealing_steps, cfg.sigma_max, cfg.sigma_min, cfg.rho) == (200, 100.0, 0.1, 7.0)
    assert (cfg.ode_steps, cfg.langevin_steps, cfg.step_size, cfg.step_decay) == (
        5,
        100,
        1e-4,
        0.01,
    )
    assert cfg.tau == 0.01 and cfg.prior_scale == "sigma"
    assert count_nfe(cfg) == 1000
    lat = DAPSConfig.latent()
    assert (lat.annealing_steps, lat.ode_steps) == (50, 2) and count_nfe(lat) == 100
    assert DAPSConfig.latent(langevin_steps=7).langevin_steps == 7
    with pytest.raises(ValueError):
        DAPSConfig(sigma_min=2.0, sigma_max=1.0)


class CountingDenoiser:
    def __init__(self, m: Tensor):
        self.d = gaussian_denoiser(m)
        self.calls = 0

    def __call__(self, x: Tensor, sigma: float) -> Tensor:
        self.calls += 1
        return self.d(x, sigma)


def _small_run(
    cfg: DAPSConfig, seed: int = 0, op: object | None = None, **kw
) -> tuple[Tensor, int, CountingDenoiser]:
    p = _problem()
    den = CountingDenoiser(p["m"])
    res = daps_sample(
        den,
        op if op is not None else MatrixOp(p["A"].float()),  # type: ignore[arg-type]
        p["y"].float().expand(3, K_MEAS),
        config=cfg,
        shape=(3, 1, D_SIDE, D_SIDE),
        generator=torch.Generator().manual_seed(seed),
        **kw,
    )
    return res.x0, res.nfe, den


SMALL = DAPSConfig(annealing_steps=7, ode_steps=3, langevin_steps=2, sigma_max=5.0)


def test_nfe_is_levels_times_ode_steps():
    x0, nfe, den = _small_run(SMALL)
    assert nfe == den.calls == count_nfe(SMALL) == 21
    assert x0.shape == (3, 1, D_SIDE, D_SIDE) and x0.dtype == torch.float32


def test_update_hook_and_progress_once_per_level():
    p = _problem()

    class BiasOp(MatrixOp):
        def __init__(self) -> None:
            super().__init__(p["A"].float())
            self.seen: list[tuple[tuple[int, ...], bool]] = []

        def update(self, x0: Tensor, y: Tensor) -> None:
            self.seen.append((tuple(x0.shape), x0.requires_grad))

    op = BiasOp()
    steps: list[tuple[int, int]] = []
    _small_run(SMALL, op=op, progress=lambda i, n: steps.append((i, n)))
    assert op.seen == [((3, 1, D_SIDE, D_SIDE), False)] * SMALL.annealing_steps
    assert steps == [(i + 1, SMALL.annealing_steps) for i in range(SMALL.annealing_steps)]


def test_same_seed_same_output():
    a, _, _ = _small_run(SMALL, seed=5)
    b, _, _ = _small_run(SMALL, seed=5)
    c, _, _ = _small_run(SMALL, seed=6)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_posterior_samples_mean_and_std():
    p = _problem()
    op, den = MatrixOp(p["A"].float()), gaussian_denoiser(p["m"])
    y = p["y"].float().expand(2, K_MEAS)
    shape = (2, 1, D_SIDE, D_SIDE)
    mean, std = posterior_samples(
        den,
        op,
        y,
        config=SMALL,
        n_samples=3,
        shape=shape,
        generator=torch.Generator().manual_seed(3),
    )
    g = torch.Generator().manual_seed(3)  # the same draws, run by hand
    runs = torch.stack(
        [daps_sample(den, op, y, config=SMALL, shape=shape, generator=g).x0 for _ in range(3)]
    )
    assert mean.shape == std.shape == shape
    torch.testing.assert_close(mean, runs.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(std, runs.std(0), rtol=1e-4, atol=1e-6)
    _, std1 = posterior_samples(
        den, op, y, config=SMALL, n_samples=1, shape=shape, generator=torch.Generator()
    )
    assert bool((std1 == 0).all())


def test_tau_overrides_the_operator_sigma_and_bad_inputs():
    p = _problem()
    op0 = MatrixOp(p["A"].float(), sigma=0.0)
    _small_run(SMALL, op=op0)  # tau = 0.01 is used; the operator's sigma is never read
    with pytest.raises(ValueError, match="likelihood std"):
        _small_run(DAPSConfig(**{**SMALL.__dict__, "tau": None}), op=op0)
    with pytest.raises(ValueError, match="x_init or shape"):
        daps_sample(gaussian_denoiser(p["m"]), op0, p["y"], config=SMALL)
    with pytest.raises(FloatingPointError, match="diverged"):
        _small_run(DAPSConfig(**{**SMALL.__dict__, "step_size": 10.0, "langevin_steps": 30}))


def test_ode_one_step_is_tweedie_and_many_steps_solve_the_flow():
    m = torch.tensor(0.3, dtype=torch.float64)
    den = gaussian_denoiser(m)
    x = torch.linspace(-20, 20, 9, dtype=torch.float64).reshape(1, 1, 9)
    sigma = 8.0
    one = ode_x0(den, x, sigma, DAPSConfig(ode_steps=1))
    torch.testing.assert_close(one, den(x, sigma))
    # the PF-ODE of N(m, s^2) maps x at sigma to m + s (x - m) / sqrt(s^2 + sigma^2); Euler is
    # first order, so doubling the steps halves the error (ode_sigma_min = 1e-3 adds ~1e-6)
    exact = m + S_PRIOR * (x - m) / math.sqrt(S_PRIOR**2 + sigma**2)
    errs = [
        float(
            (ode_x0(den, x, sigma, DAPSConfig(ode_steps=k, ode_sigma_min=1e-3)) - exact).abs().max()
        )
        for k in (10, 20, 40)
    ]
    orders = [math.log2(errs[0] / errs[1]), math.log2(errs[1] / errs[2])]
    assert all(0.9 < o < 1.1 for o in orders), orders
    assert errs[2] < 0.05 * float((exact - m).abs().max())


# ---- the VP -> VE adapter ------------------------------------------------------------------------


class ExactVPModel:
    """The exact prediction of ``process`` for x0 ~ N(mean, s^2 I) at (x_t, t), t continuous:
    abar(t) = 1 / (1 + sigma(t)^2) with log sigma_t interpolated linearly between integer t (the
    adapter's own continuous time), so integer t give the process's abar exactly."""

    def __init__(self, process: GaussianProcess, mean: float, s: float):
        self.process, self.mean, self.s = process, mean, s
        abar = process.alpha_bar
        self.log_sig = ((1 - abar) / abar).sqrt().log()
        self.ts: list[Tensor] = []

    def __call__(self, x_t: Tensor, t: Tensor, cond: object = None) -> Tensor:
        self.ts.append(t.detach().clone())
        tt = t.to(torch.float64).cpu()
        lo = tt.floor().long().clamp(0, len(self.log_sig) - 2)
        frac = tt - lo
        log_s = self.log_sig[lo] * (1 - frac) + self.log_sig[lo + 1] * frac
        a = (1 / (1 + (2 * log_s).exp())).to(x_t.dtype).reshape(-1, *([1] * (x_t.ndim - 1)))
        s2, m = self.s**2, self.mean
        x0 = m + s2 * a.sqrt() / (a * s2 + 1 - a) * (x_t - a.sqrt() * m)  # E[x0 | x_t]
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        return {"x0": x0, "eps": eps, "v": a.sqrt() * eps - (1 - a).sqrt() * x0}[
            self.process.prediction
        ]


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_vp_denoiser_matches_the_ve_denoiser(prediction, schedule):
    process = GaussianProcess(1000, schedule, prediction)  # type: ignore[arg-type]
    mean, s = 0.4, 0.7
    model = ExactVPModel(process, mean, s)
    vd = VPDenoiser(model, process)
    assert 0 < vd.sigma_min < 0.05 and vd.sigma_max > 100
    exact = gaussian_denoiser(torch.tensor(mean, dtype=torch.float64), s)
    g = torch.Generator().manual_seed(0)
    x0 = mean + s * torch.randn(4, 1, 6, 6, generator=g, dtype=torch.float64)
    for sigma in [0.03, 0.2, 1.0, 3.7, 25.0, 90.0]:
        x = x0 + sigma * torch.randn(x0.shape, generator=g, dtype=torch.float64)
        with torch.no_grad():
            got = vd(x, sigma)
        torch.testing.assert_close(got, exact(x, sigma), rtol=1e-6, atol=1e-6 * (1 + sigma))
        t = model.ts[-1]
        assert t.dtype == torch.float64 and t.shape == (4,)
    # a (B,) sigma works per sample; t(sigma_k) is exactly the integer k
    sig = torch.tensor([vd.sigmas[10], vd.sigmas[500], 2.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close(vd(x, sig), exact(x, sig))
    assert model.ts[-1][:2].tolist() == pytest.approx([10.0, 500.0], abs=1e-9)


def test_vp_denoiser_nearest_and_clamp():
    process = GaussianProcess(1000, "linear", "eps")
    model = ExactVPModel(process, 0.0, 1.0)
    near = VPDenoiser(model, process, time="nearest")
    exact = gaussian_denoiser(torch.tensor(0.0, dtype=torch.float64), 1.0)
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64) * 3
    sk = float(near.sigmas[321])
    torch.testing.assert_close(near(x, sk), exact(x, sk))  # exact on the trained levels
    assert model.ts[-1].dtype == torch.long and model.ts[-1].tolist() == [321, 321]
    # between levels the snap costs at most half a timestep: a small relative error
    s_mid = float((near.sigmas[321] * near.sigmas[322]).sqrt())
    torch.testing.assert_close(near(x, s_mid), exact(x, s_mid), rtol=1e-2, atol=1e-2)
    cont = VPDenoiser(model, process)
    torch.testing.assert_close(cont(x, 1e4), cont(x, cont.sigma_max))
    torch.testing.assert_close(cont(x, 1e-6), cont(x, cont.sigma_min))
    with pytest.raises(ValueError):
        VPDenoiser(model, process, time="bad")  # type: ignore[arg-type]


def test_vp_denoiser_with_the_monai_unet_and_daps_end_to_end():
    """MONAI's timestep embedding takes fractional t; a tiny untrained UNet runs through DAPS."""
    from brainsynth.nn.unet import UNetDenoiser

    net = UNetDenoiser(2, 1, 1, preset="tiny").eval()
    process = GaussianProcess(1000, "linear", "v")
    vd = VPDenoiser(net, process)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        a, b, c = vd(x, float(vd.sigmas[100])), vd(x, float(vd.sigmas[101])), vd(x, 0.0)
        mid = vd(x, float((vd.sigmas[100] * vd.sigmas[101]).sqrt()))
    assert a.shape == x.shape and bool(torch.isfinite(mid).all()) and bool(torch.isfinite(c).all())
    assert not torch.equal(mid, a) and not torch.equal(mid, b)

    class Mask:
        spatial_dims, sigma = 2, 0.05

        def forward(self, x: Tensor) -> Tensor:
            return x[..., ::2]

    cfg = DAPSConfig(annealing_steps=3, ode_steps=2, langevin_steps=3)
    res = daps_sample(
        vd, Mask(), x[..., ::2], config=cfg, shape=(2, 1, 8, 8), generator=torch.Generator()
    )
    assert res.nfe == 6 and res.x0.shape == (2, 1, 8, 8) and res.seconds > 0
    assert bool(torch.isfinite(res.x0).all())


def test_unmeasured_voxels_of_y_never_matter():
    """An operator's ``observed`` mask: whatever y holds where it is 0 leaves the samples unchanged
    (the Langevin likelihood counts measured voxels only)."""
    p = _problem()

    class Masked(MatrixOp):
        def observed(self, mask_in=None):
            w = torch.ones(1, K_MEAS)
            w[:, :3] = 0
            return w

    y = p["y"].float().expand(3, K_MEAS).clone()
    outs = []
    for junk in (0.0, 1e3):
        y[:, :3] = junk
        res = daps_sample(
            CountingDenoiser(p["m"]), Masked(p["A"].float()), y, config=SMALL,  # type: ignore[arg-type]
            shape=(3, 1, D_SIDE, D_SIDE), generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        outs.append(res.x0)
    assert torch.equal(outs[0], outs[1])
