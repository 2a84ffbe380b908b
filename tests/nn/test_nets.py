"""Network wrappers: shapes in 2D/3D, conditioning paths, null token, presets."""

from __future__ import annotations

import pytest
import torch

from brainsynth.diffusion.base import Cond
from brainsynth.nn.autoencoder import build_autoencoder, downsample_factor, kl_divergence
from brainsynth.nn.presets import count_parameters
from brainsynth.nn.unet import build_unet


@pytest.mark.parametrize("dims", [2, 3])
def test_unet_shapes_with_concat_and_context(dims):
    m = build_unet("tiny", dims, 1, 1, concat_channels=2, context_dim=4)
    shape = (2, 1) + (16,) * dims
    x = torch.randn(shape)
    cond = Cond(torch.randn((2, 2) + (16,) * dims), torch.randn(2, 4))
    assert m(x, torch.tensor([3, 700]), cond).shape == shape


def test_null_token_used_for_none_and_nan_rows():
    m = build_unet("tiny", 2, 1, 1, context_dim=3).eval()
    with torch.no_grad():
        m.null_context.fill_(0.5)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([5, 5])
    none = m(x, t, Cond(None, None))
    nan_rows = m(x, t, Cond(None, torch.full((2, 3), float("nan"))))
    explicit = m(x, t, Cond(None, torch.full((2, 3), 0.5)))
    torch.testing.assert_close(none, nan_rows)
    torch.testing.assert_close(none, explicit)


def test_presets_sizes():
    assert count_parameters(build_unet("tiny", 3, 1, 1)) < 300_000
    assert 1_000_000 < count_parameters(build_unet("small", 3, 1, 1, context_dim=4)) < 10_000_000


@pytest.mark.parametrize("dims", [2, 3])
def test_autoencoder_round_shapes_and_kl(dims):
    ae = build_autoencoder("tiny", dims, 1, latent_channels=3)
    f = downsample_factor("tiny")
    x = torch.randn((1, 1) + (16,) * dims)
    mu, sigma = ae.encode(x)
    assert mu.shape == (1, 3) + (16 // f,) * dims
    assert ae.decode(ae.sampling(mu, sigma)).shape == x.shape
    assert kl_divergence(torch.zeros(2, 3), torch.ones(2, 3)) == 0
    assert kl_divergence(mu, sigma) >= 0
