"""Brownian bridge: end points, variance, objectives, transition and posterior consistency.

Index convention under test: t = 0 is x0 itself, t = T is y itself (both with zero variance).
Monte Carlo tolerances are 5 standard errors (see test_gaussian.py).
"""

from __future__ import annotations

import math

import pytest
import torch

from brainsynth.diffusion.bridge import BrownianBridgeProcess

F64 = torch.float64


def _check_moments(samples: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> None:
    n = samples.shape[0]
    assert ((samples.mean(0) - mean).abs() <= 5 * (var / n).sqrt() + 1e-12).all()
    assert ((samples.var(0) - var).abs() <= 5 * var * math.sqrt(2.0 / n) + 1e-12).all()


def _pair(b=3, shape=(1, 8, 8)):
    x0 = torch.randn(b, *shape, dtype=F64)
    return x0, torch.randn_like(x0), torch.randn_like(x0)


@pytest.mark.parametrize("m_schedule", ["linear", "sin"])
def test_end_points_exact_with_zero_variance(m_schedule):
    T = 100
    p = BrownianBridgeProcess(T, m_schedule)
    x0, y, noise = _pair()
    assert torch.equal(p.q_sample(x0, torch.zeros(3, dtype=torch.long), noise, y), x0)
    assert torch.equal(p.q_sample(x0, torch.full((3,), T), noise, y), y)
    assert p.m[0] == 0 and p.m[T] == 1 and p.m.shape == (T + 1,)
    assert p.delta[0] == 0 and p.delta[T] == 0
    assert (p.delta[1:-1] > 0).all()
    assert (p.m.diff() > 0).all()


def test_linear_m_is_t_over_T():
    p = BrownianBridgeProcess(40)
    torch.testing.assert_close(p.m, torch.arange(41, dtype=F64) / 40)


@pytest.mark.parametrize("s", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("m_schedule", ["linear", "sin"])
def test_variance_is_2s_m_1_minus_m_and_peaks_at_half(s, m_schedule):
    p = BrownianBridgeProcess(1000, m_schedule, s=s)
    torch.testing.assert_close(p.delta, 2 * s * p.m * (1 - p.m))
    assert float(p.delta.max()) == pytest.approx(s / 2, rel=1e-5)
    assert float(p.m[p.delta.argmax()]) == pytest.approx(0.5, abs=2e-3)
    if m_schedule == "linear":
        assert int(p.delta.argmax()) == 500 and float(p.delta[500]) == pytest.approx(s / 2)


@pytest.mark.parametrize("t", [1, 25, 50, 99])
def test_q_sample_moments(t):
    p = BrownianBridgeProcess(100, s=0.7)
    g = torch.Generator().manual_seed(0)
    n = 40_000
    x0 = torch.tensor([[0.3, -1.0]], dtype=F64).expand(n, 2)
    y = torch.tensor([[-0.8, 2.0]], dtype=F64).expand(n, 2)
    xt = p.q_sample(x0, torch.full((n,), t), torch.randn(n, 2, generator=g, dtype=F64), y)
    m, d = p.m[t], p.delta[t]
    _check_moments(xt, (1 - m) * x0[0] + m * y[0], d.expand(2))


@pytest.mark.parametrize("objective", ["grad", "noise", "ysubx"])
@pytest.mark.parametrize("m_schedule", ["linear", "sin"])
def test_objective_round_trip(objective, m_schedule):
    p = BrownianBridgeProcess(200, m_schedule, objective=objective)
    x0, y, eps = _pair(5, (1, 5, 5))
    t = torch.tensor([1, 50, 100, 199, p.t_max])
    xt = p.q_sample(x0, t, eps, y)
    target = p.target(x0, t, eps, y)
    torch.testing.assert_close(p.predict_x0(xt, t, target, y), x0, rtol=1e-7, atol=1e-7)
    inner = t < p.num_timesteps  # eps is recoverable where delta_t > 0
    torch.testing.assert_close(
        p.predict_noise(xt, t, x0, y)[inner], eps[inner], rtol=1e-7, atol=1e-7
    )


def test_objectives_by_definition():
    x0, y, eps = _pair(2, (1, 3, 3))
    t = torch.tensor([20, 180])
    grad = BrownianBridgeProcess(200, objective="grad")
    torch.testing.assert_close(grad.target(x0, t, eps, y), grad.q_sample(x0, t, eps, y) - x0)
    m, d = grad.m[t].reshape(-1, 1, 1, 1), grad.delta[t].reshape(-1, 1, 1, 1)
    torch.testing.assert_close(grad.target(x0, t, eps, y), m * (y - x0) + d.sqrt() * eps)
    assert torch.equal(BrownianBridgeProcess(200, objective="noise").target(x0, t, eps, y), eps)
    assert torch.equal(BrownianBridgeProcess(200, objective="ysubx").target(x0, t, eps, y), y - x0)


def test_noise_objective_stops_short_of_T():
    p = BrownianBridgeProcess(50, objective="noise")
    assert p.t_max == 49
    assert BrownianBridgeProcess(50, objective="grad").t_max == 50
    x = torch.zeros(1, 1)
    with pytest.raises(ValueError, match="t = T"):
        p.predict_x0(x, torch.tensor([50]), x, x)
    t = p.sample_t(5000, generator=torch.Generator().manual_seed(0))
    assert t.min() == 1 and t.max() == 49


def test_sample_t_range_and_generator():
    p = BrownianBridgeProcess(30)
    t1 = p.sample_t(3000, generator=torch.Generator().manual_seed(2))
    t2 = p.sample_t(3000, generator=torch.Generator().manual_seed(2))
    assert torch.equal(t1, t2) and t1.min() == 1 and t1.max() == 30


def test_y_required():
    p = BrownianBridgeProcess(10)
    x = torch.zeros(1, 1)
    with pytest.raises(ValueError, match="end point"):
        p.q_sample(x, torch.tensor([3]), x)


@pytest.mark.parametrize("m_schedule", ["linear", "sin"])
def test_posterior_is_bbdm_eq_8_9(m_schedule):
    """One step, s = t - 1, written exactly as in BBDM:
    delta_{t|t-1} = delta_t - delta_{t-1} (1 - m_t)^2 / (1 - m_{t-1})^2,
    mu~ = delta_{t-1}/delta_t (1 - m_t)/(1 - m_{t-1}) x_t + (1 - m_{t-1}) delta_{t|t-1}/delta_t x0
          + (m_{t-1} - m_t (1 - m_t)/(1 - m_{t-1}) delta_{t-1}/delta_t) y,
    delta~ = delta_{t|t-1} delta_{t-1} / delta_t."""
    p = BrownianBridgeProcess(100, m_schedule, s=0.8)
    t = torch.arange(2, 100)  # delta_t > 0 and s = t - 1 >= 1
    m_t, m_p, d_t, d_p = p.m[t], p.m[t - 1], p.delta[t], p.delta[t - 1]
    d_tp = d_t - d_p * (1 - m_t) ** 2 / (1 - m_p) ** 2
    c = p.posterior_coefficients(t)
    torch.testing.assert_close(c.c_xt, d_p / d_t * (1 - m_t) / (1 - m_p))
    torch.testing.assert_close(c.c_x0, (1 - m_p) * d_tp / d_t)
    torch.testing.assert_close(c.c_y, m_p - m_t * (1 - m_t) / (1 - m_p) * d_p / d_t)
    torch.testing.assert_close(c.var, d_tp * d_p / d_t)
    # The mean's coefficients sum to one: a constant image stays that constant.
    torch.testing.assert_close(c.c_xt + c.c_x0 + c.c_y, torch.ones_like(c.var))


def test_posterior_at_the_ends():
    p = BrownianBridgeProcess(50)
    x0, y, xt = _pair(1, (1, 4))
    # From t = T (x_T = y): the posterior is the marginal q(x_s | x0, y).
    mean, var = p.posterior(x0, y, y, torch.tensor([50]), torch.tensor([20]))
    torch.testing.assert_close(mean, (1 - p.m[20]) * x0 + p.m[20] * y)
    torch.testing.assert_close(var.reshape(()), p.delta[20])
    # To s = 0: x0 itself, no noise.
    mean, var = p.posterior(x0, y, xt, torch.tensor([30]), torch.tensor([0]))
    torch.testing.assert_close(mean, x0)
    assert (var == 0).all()
    with pytest.raises(ValueError):
        p.posterior_coefficients(10, 10)


def test_skip_transition_keeps_the_marginals():
    """x_s ~ q(x_s|x0,y), then x_t = a x_s + (m_t - a m_s) y + sqrt(delta_{t|s}) z (BBDM eq. 5-6,
    any s < t) gives x_t ~ q(x_t|x0,y): the forward chain and the marginals agree."""
    p = BrownianBridgeProcess(100, "sin", s=1.5)
    g = torch.Generator().manual_seed(3)
    n = 40_000
    x0 = torch.full((n, 1), 0.5, dtype=F64)
    y = torch.full((n, 1), -1.5, dtype=F64)
    for s_, t_ in ((10, 11), (20, 70), (60, 100)):
        xs = p.q_sample(x0, torch.full((n,), s_), torch.randn(n, 1, generator=g, dtype=F64), y)
        a = (1 - p.m[t_]) / (1 - p.m[s_])
        d_ts = p.delta[t_] - a**2 * p.delta[s_]
        assert d_ts >= 0
        xt = (
            a * xs
            + (p.m[t_] - a * p.m[s_]) * y
            + d_ts.sqrt() * torch.randn(n, 1, generator=g, dtype=F64)
        )
        _check_moments(xt, (1 - p.m[t_]) * x0[0] + p.m[t_] * y[0], p.delta[t_].reshape(1))


@pytest.mark.parametrize("t,s", [(70, 69), (70, 40), (100, 60), (100, 99), (30, 0), (2, 1)])
def test_posterior_marginalises_to_q(t, s):
    """x_t ~ q(x_t|x0,y), then x_s ~ q(x_s|x_t,x0,y)  =>  x_s ~ q(x_s|x0,y)."""
    p = BrownianBridgeProcess(100, s=1.0)
    g = torch.Generator().manual_seed(0)
    n = 40_000
    x0 = torch.tensor([[0.3, 1.0]], dtype=F64).expand(n, 2)
    y = torch.tensor([[-0.8, 1.0]], dtype=F64).expand(n, 2)
    tt, ss = torch.full((n,), t), torch.full((n,), s)
    xt = p.q_sample(x0, tt, torch.randn(n, 2, generator=g, dtype=F64), y)
    mean, var = p.posterior(x0, y, xt, tt, ss)
    xs = mean + var.sqrt() * torch.randn(n, 2, generator=g, dtype=F64)
    if s == 0:
        torch.testing.assert_close(xs, x0)
        return
    m_s, d_s = p.m[s], p.delta[s]
    _check_moments(xs, (1 - m_s) * x0[0] + m_s * y[0], d_s.expand(2))
