"""The engine's denoising loss: condition dropout marks whole context rows NaN (the null token) and
keeps concat channels; Min-SNR weights are per row; draws come only from the generator."""

import pytest
import torch

from brainsynth.diffusion.base import Cond
from brainsynth.diffusion.bridge import BrownianBridgeProcess
from brainsynth.diffusion.gaussian import GaussianProcess
from brainsynth.training.losses import diffusion_loss

P = GaussianProcess(1000, "linear", "eps")


def _spy():
    seen = []

    def model(x_t, t, cond):
        seen.append(cond)
        return torch.zeros_like(x_t)

    return model, seen


def _batch(b=64):
    return {"image": torch.randn(b, 1, 4, 4), "cov": torch.randn(b, 3)}


def _cond(batch):
    return Cond(torch.ones(len(batch["cov"]), 2, 4, 4), batch["cov"])


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_condition_dropout_drops_whole_context_rows(p):
    model, seen = _spy()
    batch = _batch()
    diffusion_loss(P, cond_fn=_cond, cond_dropout=p)(model, batch, torch.Generator().manual_seed(0))
    ctx = seen[0].context
    dropped = torch.isnan(ctx).all(1)
    assert torch.equal(dropped, torch.isnan(ctx).any(1))  # all or nothing per row
    torch.testing.assert_close(ctx[~dropped], batch["cov"][~dropped])
    torch.testing.assert_close(seen[0].concat, torch.ones(64, 2, 4, 4))  # concat kept
    if p in (0.0, 1.0):
        assert bool(dropped.all()) == (p == 1.0) and bool(dropped.any()) == (p == 1.0)
    else:
        assert 5 < int(dropped.sum()) < 35  # ~19 of 64


def test_same_generator_same_loss_and_dropout():
    batch = _batch()
    losses = []
    for _ in range(2):
        model, seen = _spy()
        loss = diffusion_loss(P, cond_fn=_cond, cond_dropout=0.5)
        losses.append((loss(model, batch, torch.Generator().manual_seed(3)), seen[0].context))
    torch.testing.assert_close(losses[0][0], losses[1][0])
    torch.testing.assert_close(losses[0][1], losses[1][1], equal_nan=True)


def test_min_snr_weights_each_row():
    """A zero network: the loss is mean_b w(t_b) * mean(target_b^2)."""
    batch = _batch(8)
    model, _ = _spy()
    got = diffusion_loss(P, min_snr_gamma=5.0)(model, batch, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)  # the same draws as inside the loss
    t = P.sample_t(8, generator=g)
    noise = torch.randn(batch["image"].shape, generator=g)
    w = P.snr(t).clamp(max=5.0) / P.snr(t)
    tgt2 = (P.target(batch["image"], t, noise) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(got, (w.float() * tgt2).mean())


def test_min_snr_needs_a_weighted_process():
    with pytest.raises(ValueError, match="loss weights"):
        diffusion_loss(BrownianBridgeProcess(100), min_snr_gamma=5.0)


def test_element_weight_multiplies_each_error():
    """A zero network: the loss is mean(weight * target^2); a weight of ones changes nothing."""
    batch = _batch(8)
    model, _ = _spy()
    w = torch.rand(1, 1, 4, 4) * 3
    got = diffusion_loss(P, weight=w)(model, batch, torch.Generator().manual_seed(0))
    plain = diffusion_loss(P)(model, batch, torch.Generator().manual_seed(0))
    ones = diffusion_loss(P, weight=torch.ones(1, 1, 4, 4))
    torch.testing.assert_close(ones(model, batch, torch.Generator().manual_seed(0)), plain)
    g = torch.Generator().manual_seed(0)  # the same draws as inside the loss
    t = P.sample_t(8, generator=g)
    noise = torch.randn(batch["image"].shape, generator=g)
    torch.testing.assert_close(got, (w * P.target(batch["image"], t, noise) ** 2).mean())
