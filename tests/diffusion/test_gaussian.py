"""Gaussian process: schedules, q_sample moments, parameterisation round trips, posterior."""

from __future__ import annotations

import pytest
import torch

from brainsynth.diffusion.gaussian import GaussianProcess
from brainsynth.diffusion.schedules import cosine_alpha_bar


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "cosine"])
def test_alpha_bar_decreasing_in_unit_interval(schedule):
    p = GaussianProcess(
        1000,
        schedule,
        beta_start=1e-4 if schedule == "linear" else 8.5e-4,
        beta_end=0.012 if schedule == "scaled_linear" else 0.02,
    )
    ab = p.alpha_bar
    assert (ab > 0).all() and (ab <= 1).all()
    assert (ab[1:] < ab[:-1]).all()
    assert ab[-1] < 0.05  # ends close to pure noise


def test_cosine_closed_form():
    p = GaussianProcess(1000, "cosine")
    t = torch.arange(1000)
    expected = cosine_alpha_bar(t + 1, 1000)
    torch.testing.assert_close(p.alpha_bar[:900], expected[:900], rtol=1e-9, atol=1e-12)


def test_q_sample_moments():
    p = GaussianProcess(1000, "linear")
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x0 = torch.full((n, 1), 0.7, dtype=torch.float64)
    for t in (0, 250, 999):
        tt = torch.full((n,), t)
        xt = p.q_sample(x0, tt, torch.randn(n, 1, generator=g, dtype=torch.float64))
        a = p.alpha_bar[t]
        se = (1 - a).sqrt() / n**0.5
        assert abs(xt.mean() - a.sqrt() * 0.7) < 5 * se
        assert abs(xt.var() - (1 - a)) < 5 * (1 - a) * (2 / n) ** 0.5


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_parameterisation_round_trip(prediction):
    p = GaussianProcess(1000, "cosine", prediction)
    x0 = torch.randn(6, 2, 4, 4, dtype=torch.float64)
    eps = torch.randn_like(x0)
    t = torch.tensor([0, 10, 200, 500, 900, 999])
    xt = p.q_sample(x0, t, eps)
    target = p.target(x0, t, eps)
    torch.testing.assert_close(p.predict_x0(xt, t, target), x0, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(p.predict_eps(xt, t, target), eps, rtol=1e-6, atol=1e-6)


def test_posterior_marginalises_to_q():
    """Sampling x_t ~ q(x_t|x0) then x_s ~ q(x_s|x_t,x0) gives x_s ~ q(x_s|x0)."""
    p = GaussianProcess(1000, "linear")
    g = torch.Generator().manual_seed(1)
    n = 200_000
    x0 = torch.full((n, 1), -0.4, dtype=torch.float64)
    t, s = torch.full((n,), 600), torch.full((n,), 450)
    xt = p.q_sample(x0, t, torch.randn(n, 1, generator=g, dtype=torch.float64))
    mean, var = p.posterior(x0, xt, t, s)
    xs = mean + var.sqrt() * torch.randn(n, 1, generator=g, dtype=torch.float64)
    a_s = p.alpha_bar[450]
    assert abs(xs.mean() - a_s.sqrt() * -0.4) < 0.01
    assert abs(xs.var() - (1 - a_s)) < 0.01


def test_sample_t_range_and_generator():
    p = GaussianProcess(50)
    t1 = p.sample_t(1000, generator=torch.Generator().manual_seed(3))
    t2 = p.sample_t(1000, generator=torch.Generator().manual_seed(3))
    assert torch.equal(t1, t2) and t1.min() == 0 and t1.max() == 49
