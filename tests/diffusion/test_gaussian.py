"""Gaussian process: schedules, q_sample moments, parameterisation round trips, posterior.

Monte Carlo checks use float64 and n independent draws; tolerances are 5 standard errors
(mean: 5 sqrt(var / n); variance: 5 var sqrt(2 / n)), so a correct implementation fails with
probability < 1e-6 per check, and the seeds are fixed anyway.
"""

from __future__ import annotations

import math

import pytest
import torch

from brainsynth.diffusion.gaussian import GaussianProcess
from brainsynth.diffusion.schedules import cosine_alpha_bar, make_betas

SCHEDULES = ["linear", "scaled_linear", "cosine"]
F64 = torch.float64


def _check_moments(samples: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> None:
    """Per-element empirical mean/variance over dim 0 against the expected ones (5 SE)."""
    n = samples.shape[0]
    se_mean = (var / n).sqrt()
    se_var = var * math.sqrt(2.0 / n)
    assert ((samples.mean(0) - mean).abs() <= 5 * se_mean + 1e-12).all()
    assert ((samples.var(0) - var).abs() <= 5 * se_var + 1e-12).all()


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_alpha_bar_decreasing_in_unit_interval(schedule):
    p = GaussianProcess(1000, schedule)
    ab = p.alpha_bar
    assert ab.dtype == F64 and ab.shape == (1000,)
    assert (ab > 0).all() and (ab <= 1).all()
    assert (ab[1:] < ab[:-1]).all()
    assert ab[-1] < 0.01  # ends close to pure noise
    assert (p.betas > 0).all() and (p.betas < 1).all()
    torch.testing.assert_close(p.alphas_cumprod, torch.cumprod(1 - p.betas, 0))


def test_linear_schedules_endpoints():
    torch.testing.assert_close(
        make_betas("linear", 1000)[[0, -1]], torch.tensor([1e-4, 2e-2], dtype=F64)
    )
    b = make_betas("scaled_linear", 1000)
    torch.testing.assert_close(b[[0, -1]], torch.tensor([8.5e-4, 1.2e-2], dtype=F64))
    d = b.sqrt().diff()
    torch.testing.assert_close(d, torch.full_like(d, float(d[0])))  # linear in sqrt(beta)
    torch.testing.assert_close(
        make_betas("linear", 10, 1e-3, 5e-2)[[0, -1]], torch.tensor([1e-3, 5e-2], dtype=F64)
    )
    with pytest.raises(ValueError):
        make_betas("quadratic", 10)  # type: ignore[arg-type]


def test_cosine_closed_form():
    """abar at index i is the paper's abar(t = i + 1) = f(t)/f(0) wherever beta is not clipped."""
    T = 1000
    p = GaussianProcess(T, "cosine")
    expected = cosine_alpha_bar(torch.arange(1, T + 1), T)
    clipped = p.betas >= 0.999
    assert clipped.sum() <= 1 and (clipped.sum() == 0 or clipped[-1])  # only the very last step
    n_ok = T - int(clipped.sum())
    torch.testing.assert_close(p.alpha_bar[:n_ok], expected[:n_ok], rtol=1e-10, atol=1e-14)
    # The formula itself: f(t) = cos^2(((t/T + s)/(1 + s)) pi/2), s = 0.008.
    t = torch.tensor([0.0, 250.0, 500.0], dtype=F64)
    f = torch.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2
    torch.testing.assert_close(cosine_alpha_bar(t, T), f / f[0])


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_q_sample_moments(schedule):
    """For fixed x0 and many noise draws: mean sqrt(abar_t) x0, variance 1 - abar_t."""
    p = GaussianProcess(1000, schedule)
    g = torch.Generator().manual_seed(0)
    n = 40_000
    x0 = torch.tensor([[-1.0, 0.0, 0.7, 2.0]], dtype=F64)
    for t in (0, 100, 500, 999):
        tt = torch.full((n,), t)
        xt = p.q_sample(x0.expand(n, 4), tt, torch.randn(n, 4, generator=g, dtype=F64))
        a = p.alpha_bar[t]
        _check_moments(xt, a.sqrt() * x0[0], (1 - a).expand(4))


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_parameterisation_round_trip(prediction, schedule):
    p = GaussianProcess(1000, schedule, prediction)
    x0 = torch.randn(7, 2, 4, 4, dtype=F64)
    eps = torch.randn_like(x0)
    t = torch.tensor([0, 1, 10, 200, 500, 900, 998])
    xt = p.q_sample(x0, t, eps)
    target = p.target(x0, t, eps)
    torch.testing.assert_close(p.predict_x0(xt, t, target), x0, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(p.predict_eps(xt, t, target), eps, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(p.eps_from_x0(xt, t, x0), eps, rtol=1e-7, atol=1e-7)


def test_targets_by_definition():
    x0 = torch.randn(3, 1, 5, dtype=F64)
    eps = torch.randn_like(x0)
    t = torch.tensor([5, 300, 800])
    assert torch.equal(GaussianProcess(1000, prediction="eps").target(x0, t, eps), eps)
    assert torch.equal(GaussianProcess(1000, prediction="x0").target(x0, t, eps), x0)


def test_v_is_the_velocity_of_the_angle():
    """Salimans & Ho 2022 sec. 4: with abar = cos^2(phi), x_phi = cos(phi) x0 + sin(phi) eps and
    v = d x_phi / d phi. Checked by central finite differences, independently of our formula."""
    p = GaussianProcess(1000, "cosine", "v")
    x0 = torch.randn(4, 1, 6, dtype=F64)
    eps = torch.randn_like(x0)
    t = torch.tensor([50, 400, 700, 950])
    phi = torch.arccos(p.alpha_bar[t].sqrt()).reshape(-1, 1, 1)
    h = 1e-6

    def x_at(ph):
        return torch.cos(ph) * x0 + torch.sin(ph) * eps

    fd = (x_at(phi + h) - x_at(phi - h)) / (2 * h)
    torch.testing.assert_close(p.target(x0, t, eps), fd, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(p.q_sample(x0, t, eps), x_at(phi))


def test_posterior_one_step_is_ddpm_eq7():
    """s = t - 1: mean coefficients sqrt(abar_{t-1}) beta_t / (1 - abar_t) and
    sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t); variance beta~_t (DDPM eq. 7), written from
    the betas directly."""
    p = GaussianProcess(1000, "linear")
    b = p.betas
    ab = torch.cumprod(1 - b, 0)
    t = torch.tensor([1, 17, 500, 999])
    ab_prev = ab[t - 1]
    c0 = ab_prev.sqrt() * b[t] / (1 - ab[t])
    ct = (1 - b[t]).sqrt() * (1 - ab_prev) / (1 - ab[t])
    var = (1 - ab_prev) / (1 - ab[t]) * b[t]
    x0, xt = torch.randn(4, 1, 3, dtype=F64), torch.randn(4, 1, 3, dtype=F64)
    mean, v = p.posterior(x0, xt, t)
    torch.testing.assert_close(mean, c0.reshape(-1, 1, 1) * x0 + ct.reshape(-1, 1, 1) * xt)
    torch.testing.assert_close(v.reshape(-1), var)
    # t = 0 -> s = -1: the clean data, no noise.
    mean0, v0 = p.posterior(x0, xt, torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(mean0, x0)
    assert (v0 == 0).all()


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("t,s", [(600, 599), (600, 450), (999, 0), (300, -1), (50, 10)])
def test_posterior_marginalises_to_q(schedule, t, s):
    """x_t ~ q(x_t|x0), then x_s ~ q(x_s|x_t,x0)  =>  x_s ~ q(x_s|x0) = N(sqrt(abar_s) x0, 1 - abar_s)."""
    p = GaussianProcess(1000, schedule)
    g = torch.Generator().manual_seed(1)
    n = 40_000
    x0 = torch.tensor([[-0.4, 1.3]], dtype=F64).expand(n, 2)
    tt, ss = torch.full((n,), t), torch.full((n,), s)
    xt = p.q_sample(x0, tt, torch.randn(n, 2, generator=g, dtype=F64))
    mean, var = p.posterior(x0, xt, tt, ss)
    xs = mean + var.sqrt() * torch.randn(n, 2, generator=g, dtype=F64)
    a_s = p.abar(s)
    if s == -1:
        torch.testing.assert_close(xs, x0)
    else:
        _check_moments(xs, a_s.sqrt() * x0[0], (1 - a_s).expand(2))


def test_abar_index_minus_one_is_clean_and_range_checked():
    p = GaussianProcess(100)
    assert float(p.abar(-1)) == 1.0
    torch.testing.assert_close(p.abar(torch.tensor([0, 99])), p.alpha_bar[[0, 99]])
    x = torch.zeros(1, 1)
    for bad in (-1, 100):
        with pytest.raises(ValueError, match="out of range"):
            p.q_sample(x, torch.tensor([bad]), x)
    with pytest.raises(ValueError):
        p.abar(100)
    with pytest.raises(ValueError, match="s < t"):
        p.posterior(x, x, torch.tensor([5]), torch.tensor([5]))


def test_sample_t_range_and_generator():
    p = GaussianProcess(50)
    t1 = p.sample_t(2000, generator=torch.Generator().manual_seed(3))
    t2 = p.sample_t(2000, generator=torch.Generator().manual_seed(3))
    assert torch.equal(t1, t2) and t1.dtype == torch.long
    assert t1.min() == 0 and t1.max() == 49
    counts = torch.bincount(t1, minlength=50).double()  # uniform: 40 per bin expected
    chi2 = float(((counts - 40) ** 2 / 40).sum())
    assert chi2 < 100  # 49 dof: P(chi2 > 100) ~ 2e-5


def test_dtypes_follow_the_input():
    p = GaussianProcess(100, "cosine", "v")
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(2, 1, 4, dtype=dtype)
        t = torch.tensor([3, 90])
        assert p.q_sample(x, t, x).dtype == dtype
        assert p.predict_x0(x, t, x).dtype == dtype
        assert p.predict_eps(x, t, x).dtype == dtype


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("gamma", [0.5, 5.0])
def test_min_snr_weight_makes_every_objective_min_snr_times_x0_mse(prediction, gamma):
    """Hang et al. 2023: w ||out - target||^2 = min(SNR, gamma) ||x0^ - x0||^2 for any output."""
    p = GaussianProcess(1000, "scaled_linear", prediction, 0.0015, 0.0195)
    g = torch.Generator().manual_seed(3)
    t = torch.tensor([0, 10, 200, 600, 999])
    x0 = torch.randn(5, 2, 4, 4, generator=g, dtype=F64)
    noise = torch.randn(5, 2, 4, 4, generator=g, dtype=F64)
    out = torch.randn(5, 2, 4, 4, generator=g, dtype=F64)  # an arbitrary (wrong) network output
    x_t = p.q_sample(x0, t, noise)
    w = p.loss_weight(t, x0, gamma)
    lhs = (w * (out - p.target(x0, t, noise)) ** 2).sum(dim=(1, 2, 3))
    snr = p.snr(t).clamp(max=gamma)
    rhs = snr * ((p.predict_x0(x_t, t, out) - x0) ** 2).sum(dim=(1, 2, 3))
    torch.testing.assert_close(lhs, rhs, rtol=1e-9, atol=1e-12)
    assert w.shape == (5, 1, 1, 1)


def test_loss_weight_none_is_one_and_gamma_checked():
    p = GaussianProcess(100, "linear", "v")
    x = torch.zeros(3, 1, 2, 2)
    assert torch.equal(p.loss_weight(torch.tensor([0, 5, 99]), x), torch.ones(3, 1, 1, 1))
    with pytest.raises(ValueError, match="min_snr_gamma"):
        p.loss_weight(torch.tensor([0]), x, 0.0)
