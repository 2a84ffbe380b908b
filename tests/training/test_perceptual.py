"""Perceptual loss on local MedicalNet-layout weights: a distance (0 on equal inputs, growing with
the error), gradients to the reconstruction only, clear errors without weights."""

from __future__ import annotations

import pytest
import torch

from brainsynth.errors import InputError
from brainsynth.evaluation import features as ft
from brainsynth.training.perceptual import PerceptualLoss3D


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    net = ft.build_resnet("resnet10")
    ft._randomise(net, seed=2)
    path = tmp_path_factory.mktemp("w") / "resnet_10.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    return path


def _brain(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(2, 1, 24, 24, 24)
    x[:, :, 4:20, 4:20, 4:20] = 0.3 + 0.7 * torch.rand(2, 1, 16, 16, 16, generator=g)
    return x


def test_distance_zero_on_equal_and_grows_with_the_error(weights):
    loss = PerceptualLoss3D(weights)
    x = _brain()
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)) * (x > 0)
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-8)
    small, large = float(loss(x + 0.02 * noise, x)), float(loss(x + 0.2 * noise, x))
    assert 0 < small < large
    # both volumes use the target's normalisation: a global intensity error is seen
    assert float(loss(1.5 * x, x)) > 0


def test_gradients_reach_the_reconstruction_only(weights):
    loss = PerceptualLoss3D(weights).train()
    assert not loss.net.training  # BatchNorm stays in eval mode
    x = _brain()
    recon = (x + 0.1 * torch.rand(x.shape)).requires_grad_(True)
    loss(recon, x).backward()
    assert recon.grad is not None and recon.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss.net.parameters())


def test_ae_loss_adds_the_weighted_perceptual_term(weights):
    from brainsynth.methods.ldm.losses import AEWithDiscriminator, ae_loss
    from brainsynth.nn.autoencoder import build_autoencoder

    torch.manual_seed(0)
    per = PerceptualLoss3D(weights)
    m = AEWithDiscriminator(build_autoencoder("tiny", 3, 1, 2), None).eval()
    x = _brain()[:1]
    g = torch.Generator()
    base = ae_loss(1e-6, 0.0, 0, False)(m, {"image": x}, g)
    with_p = ae_loss(1e-6, 0.0, 0, False, 0.5, per)(m, {"image": x}, g)
    assert not any(k.startswith("perceptual") for k in m.state_dict())  # not checkpointed
    with torch.no_grad():
        recon = m.ae.decode(m.ae.encode(x)[0])
    torch.testing.assert_close(with_p - base, 0.5 * per(recon, x), rtol=1e-4, atol=1e-6)


def test_missing_weights_are_clear_errors(tmp_path):
    from brainsynth.methods.ldm import load_ldm_config

    with pytest.raises(InputError, match="not found"):
        PerceptualLoss3D(tmp_path / "none.pth")
    with pytest.raises(Exception, match="perceptual_weights"):
        load_ldm_config(None, ["ae.perceptual_weight=0.1"])
