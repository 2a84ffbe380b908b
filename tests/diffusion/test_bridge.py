"""Brownian bridge: end points, variance, objectives, posterior consistency."""

from __future__ import annotations

import pytest
import torch

from brainsynth.diffusion.bridge import BrownianBridgeProcess


def test_end_points_exact_with_zero_variance():
    p = BrownianBridgeProcess(100)
    x0 = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    y = torch.randn_like(x0)
    noise = torch.randn_like(x0)
    assert torch.equal(p.q_sample(x0, torch.zeros(3, dtype=torch.long), noise, y), x0)
    torch.testing.assert_close(p.q_sample(x0, torch.full((3,), 100), noise, y), y)
    assert p.delta[0] == 0 and p.delta[-1] == 0


@pytest.mark.parametrize("s", [1.0, 0.5])
def test_variance_peaks_at_half(s):
    p = BrownianBridgeProcess(1000, s=s)
    assert p.delta.argmax() == 500
    assert float(p.delta.max()) == pytest.approx(s / 2)


@pytest.mark.parametrize("objective", ["grad", "noise", "ysubx"])
def test_objective_round_trip(objective):
    p = BrownianBridgeProcess(200, objective=objective)
    x0 = torch.randn(4, 1, 5, 5, dtype=torch.float64)
    y, eps = torch.randn_like(x0), torch.randn_like(x0)
    t = torch.tensor([1, 50, 100, 199])
    xt = p.q_sample(x0, t, eps, y)
    torch.testing.assert_close(
        p.predict_x0(xt, t, p.target(x0, t, eps, y), y), x0, rtol=1e-6, atol=1e-6
    )


def test_grad_objective_is_xt_minus_x0():
    p = BrownianBridgeProcess(200, objective="grad")
    x0, y, eps = (torch.randn(2, 1, 3, 3, dtype=torch.float64) for _ in range(3))
    t = torch.tensor([20, 180])
    torch.testing.assert_close(p.target(x0, t, eps, y), p.q_sample(x0, t, eps, y) - x0)


def test_posterior_marginalises_to_q():
    p = BrownianBridgeProcess(100)
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x0 = torch.full((n, 1), 0.3, dtype=torch.float64)
    y = torch.full((n, 1), -0.8, dtype=torch.float64)
    for t_, s_ in ((70, 40), (100, 60), (30, 0)):
        t, s = torch.full((n,), t_), torch.full((n,), s_)
        xt = p.q_sample(x0, t, torch.randn(n, 1, generator=g, dtype=torch.float64), y)
        mean, var = p.posterior(x0, y, xt, t, s)
        xs = mean + var.sqrt() * torch.randn(n, 1, generator=g, dtype=torch.float64)
        m_s, d_s = float(p.m[s_]), float(p.delta[s_])
        assert abs(float(xs.mean()) - ((1 - m_s) * 0.3 + m_s * -0.8)) < 0.01
        assert abs(float(xs.var()) - d_s) < 0.01
