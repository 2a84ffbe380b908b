"""EMA math: ema = d * ema + (1 - d) * p after each step past ``start``; a copy before."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from brainsynth.training.ema import EMA, unwrap


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))


def test_one_update_is_the_convex_combination():
    m = _model()
    ema = EMA(m, decay=0.9, start=0)
    before = [p.clone() for p in ema.model.parameters()]
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p))
    ema.update(m, step=1)
    for e, b, p in zip(ema.model.parameters(), before, m.parameters(), strict=True):
        torch.testing.assert_close(e, 0.9 * b + 0.1 * p, rtol=0, atol=1e-6)  # lerp rounding


def test_k_updates_with_a_constant_model_converge_geometrically():
    m = _model()
    ema = EMA(m, decay=0.5)
    start = ema.model[0].weight.clone()
    with torch.no_grad():
        m[0].weight.add_(1.0)
    for k in range(1, 4):
        ema.update(m, step=k)
        expected = m[0].weight - 0.5**k * (m[0].weight - start)  # bias towards init: d^k
        torch.testing.assert_close(ema.model[0].weight, expected, rtol=0, atol=1e-6)


def test_warm_up_copies_until_start():
    m = _model()
    ema = EMA(m, decay=0.99, start=3)
    assert [ema.decay_at(s) for s in (1, 3, 4)] == [0.0, 0.0, 0.99]
    with torch.no_grad():
        m[0].weight.add_(1.0)
    ema.update(m, step=3)
    assert torch.equal(ema.model[0].weight, m[0].weight)
    w3 = m[0].weight.clone()
    with torch.no_grad():
        m[0].weight.add_(1.0)
    ema.update(m, step=4)
    torch.testing.assert_close(ema.model[0].weight, 0.99 * w3 + 0.01 * m[0].weight)


def test_buffers_are_copied_and_the_copy_is_frozen():
    m = _model()
    m.train()
    m(torch.randn(8, 2))  # updates BatchNorm running stats
    ema = EMA(nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)), decay=0.9)
    ema.update(m, step=1)
    assert torch.equal(ema.model[1].running_mean, m[1].running_mean)
    assert not ema.model.training and not any(p.requires_grad for p in ema.model.parameters())


def test_state_dict_round_trip_and_unwrap():
    m = _model()
    a, b = EMA(m, 0.9), EMA(nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)), 0.9)
    b.load_state_dict(a.state_dict())
    for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y)

    class Wrapper(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner

    assert unwrap(Wrapper(m)) is m


def test_bad_decay():
    with pytest.raises(ValueError, match="decay"):
        EMA(_model(), decay=1.5)
