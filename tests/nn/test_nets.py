"""Network wrappers: shapes in 2D/3D, conditioning paths, null token, presets, autoencoder."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import AutoencoderKL

from brainsynth.diffusion.base import Cond
from brainsynth.nn.autoencoder import (
    build_autoencoder,
    decode,
    downsample_factor,
    encode,
    kl_divergence,
    sample_latent,
)
from brainsynth.nn.presets import AUTOENCODER_PRESETS, UNET_PRESETS, count_parameters
from brainsynth.nn.unet import UNetDenoiser, build_unet


def _x(b, c, dims, side=16):
    return torch.randn((b, c) + (side,) * dims)


def _unzero(m: torch.nn.Module) -> torch.nn.Module:
    """MONAI zero-initialises the attention output projections (so a fresh network ignores its
    context); give every all-zero tensor random values so conditioning effects are visible."""
    with torch.no_grad():
        for p in m.parameters():
            if not p.any():
                p.normal_(0.0, 0.2)
    return m


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize(
    "concat,context", [(0, None), (2, None), (0, 4), (2, 4)], ids=["none", "concat", "ctx", "both"]
)
def test_unet_shapes(dims, concat, context):
    m = build_unet("tiny", dims, 1, 3, concat_channels=concat, context_dim=context)
    assert isinstance(m, UNetDenoiser)
    x = _x(2, 1, dims)
    cond = Cond(
        _x(2, concat, dims) if concat else None,
        torch.randn(2, context) if context else None,
    )
    out = m(x, torch.tensor([3, 700]), cond)
    assert out.shape == (2, 3) + (16,) * dims
    assert torch.isfinite(out).all()


def test_unet_3d_at_32_and_8():
    m = build_unet("tiny", 3, 1, 1, context_dim=2)
    for side in (8, 32):
        x = _x(1, 1, 3, side)
        assert m(x, torch.tensor([10]), Cond(None, torch.randn(1, 2))).shape == x.shape


def test_null_token_used_for_none_and_nan_rows():
    m = _unzero(build_unet("tiny", 2, 1, 1, context_dim=3)).eval()
    with torch.no_grad():
        m.null_context.fill_(0.5)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([5, 5])
    none = m(x, t, Cond(None, None))
    no_cond = m(x, t)
    nan_rows = m(x, t, Cond(None, torch.full((2, 3), float("nan"))))
    explicit = m(x, t, Cond(None, torch.full((2, 3), 0.5)))
    other = m(x, t, Cond(None, torch.full((2, 3), -2.0)))
    torch.testing.assert_close(none, no_cond)
    torch.testing.assert_close(none, nan_rows)
    torch.testing.assert_close(none, explicit)
    assert not torch.allclose(none, other)  # the context does reach the network


def test_nan_rows_mix_per_sample():
    """One dropped row in a batch: that row matches the unconditional pass, the other does not."""
    m = _unzero(build_unet("tiny", 2, 1, 1, context_dim=2)).eval()
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([40, 40])
    ctx = torch.tensor([[1.0, 2.0], [float("nan"), float("nan")]])
    mixed = m(x, t, Cond(None, ctx))
    cond = m(x, t, Cond(None, torch.tensor([[1.0, 2.0], [1.0, 2.0]])))
    uncond = m(x, t, None)
    torch.testing.assert_close(mixed[0], cond[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mixed[1], uncond[1], rtol=1e-5, atol=1e-5)


def test_null_token_is_learned():
    m = _unzero(build_unet("tiny", 2, 1, 1, context_dim=3))
    m(torch.randn(2, 1, 8, 8), torch.tensor([1, 2]), None).square().mean().backward()
    assert m.null_context.grad is not None and m.null_context.grad.abs().sum() > 0


def _embed_only(m: torch.nn.Module) -> torch.nn.Module:
    """Cut the cross-attention path (its output projections to zero): the context then reaches the
    network only through the timestep embedding."""
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "attn2.out_proj" in name:
                p.zero_()
    return m


def test_embedded_context_reaches_the_network_without_cross_attention():
    m = _embed_only(_unzero(build_unet("tiny", 2, 1, 1, context_dim=3, embed_context=True))).eval()
    plain = _embed_only(_unzero(build_unet("tiny", 2, 1, 1, context_dim=3))).eval()
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([5, 5])
    a, b = Cond(None, torch.full((2, 3), 1.0)), Cond(None, torch.full((2, 3), -1.0))
    assert not torch.allclose(m(x, t, a), m(x, t, b))
    torch.testing.assert_close(plain(x, t, a), plain(x, t, b))  # the cut really cuts
    # a dropped (all-NaN) row goes through the null token on both paths
    nan = Cond(None, torch.full((2, 3), float("nan")))
    torch.testing.assert_close(m(x, t, nan), m(x, t, None))
    m.train()
    m(x, t, a).square().mean().backward()
    grads = [p.grad for n, p in m.named_parameters() if "class_embedding" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_embed_context_needs_a_context():
    with pytest.raises(ValueError, match="embed_context needs a context"):
        build_unet("tiny", 2, 1, 1, embed_context=True)


def test_partial_nan_context_rejected():
    m = build_unet("tiny", 2, 1, 1, context_dim=2)
    with pytest.raises(ValueError, match="all NaN"):
        m(torch.randn(1, 1, 8, 8), torch.tensor([1]), Cond(None, torch.tensor([[1.0, torch.nan]])))


def test_bad_inputs_raise_clear_errors():
    m = build_unet("tiny", 2, 1, 1, concat_channels=1)
    x = torch.randn(1, 1, 8, 8)
    with pytest.raises(ValueError, match="concat"):
        m(x, torch.tensor([1]), None)
    with pytest.raises(ValueError, match="divisible"):
        m(torch.randn(1, 1, 9, 8), torch.tensor([1]), Cond(torch.randn(1, 1, 9, 8)))
    with pytest.raises(ValueError, match="cross-attention"):
        m(x, torch.tensor([1]), Cond(torch.randn(1, 1, 8, 8), torch.randn(1, 2)))
    with pytest.raises(ValueError, match="unknown preset"):
        build_unet("huge", 2, 1, 1)


def test_flash_attention_enabled():
    m = build_unet("tiny", 3, 1, 1, context_dim=2)
    flags = [mod.use_flash_attention for mod in m.modules() if hasattr(mod, "use_flash_attention")]
    assert flags and all(flags)


def test_grad_checkpointing_same_gradients():
    a = _unzero(build_unet("tiny", 2, 1, 1, context_dim=2))
    b = build_unet("tiny", 2, 1, 1, context_dim=2, grad_checkpointing=True)
    b.load_state_dict(a.state_dict())
    x, t, c = torch.randn(2, 1, 8, 8), torch.tensor([3, 9]), Cond(None, torch.randn(2, 2))
    a(x, t, c).square().mean().backward()
    b(x, t, c).square().mean().backward()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad)


# Parameter counts of each preset (in = out = 1 channel, no conditioning): the ranges the
# presets promise in nn/presets.py. Pinned exactly so a MONAI change that alters them shows up.
UNET_COUNTS = {
    ("tiny", 2): 44_969,
    ("tiny", 3): 112_073,
    ("cpu", 2): 686_769,
    ("cpu", 3): 1_802_481,
    ("small", 2): 1_805_121,
    ("small", 3): 4_736_961,
    ("base", 2): 22_078_017,
    ("base", 3): 57_838_401,
}
AE_COUNTS = {
    ("tiny", 2): 29_584,
    ("tiny", 3): 86_896,
    ("cpu", 2): 15_536,
    ("cpu", 3): 45_200,
    ("small", 2): 453_064,
    ("small", 3): 1_345_864,
    ("base", 2): 3_129_960,
    ("base", 3): 9_339_240,
}


@pytest.mark.parametrize("preset", sorted(UNET_PRESETS))
@pytest.mark.parametrize("dims", [2, 3])
def test_unet_preset_sizes(preset, dims):
    n = count_parameters(build_unet(preset, dims, 1, 1))
    lo, hi = {"tiny": (5e3, 1.5e5), "cpu": (5e5, 2e6), "small": (1e6, 8e6), "base": (2e7, 1.2e8)}[
        preset
    ]
    assert lo < n < hi
    assert n == UNET_COUNTS[(preset, dims)]


@pytest.mark.parametrize("preset", sorted(AUTOENCODER_PRESETS))
@pytest.mark.parametrize("dims", [2, 3])
def test_autoencoder_preset_sizes(preset, dims):
    assert count_parameters(build_autoencoder(preset, dims)) == AE_COUNTS[(preset, dims)]


def test_context_adds_null_token_parameter():
    plain = count_parameters(build_unet("tiny", 2, 1, 1))
    m = build_unet("tiny", 2, 1, 1, context_dim=5)
    assert m.null_context.shape == (1, 1, 5)
    assert count_parameters(m) > plain + 5  # cross-attention weights + the null token


@pytest.mark.parametrize("dims", [2, 3])
def test_autoencoder_round_shapes_and_kl(dims):
    ae = build_autoencoder("tiny", dims, 1, latent_channels=3)
    assert isinstance(ae, AutoencoderKL)
    f = downsample_factor("tiny")
    assert f == 4
    x = _x(2, 1, dims)
    mu, sigma = encode(ae, x)
    assert mu.shape == sigma.shape == (2, 3) + (16 // f,) * dims
    assert (sigma > 0).all()
    z = sample_latent(mu, sigma, torch.Generator().manual_seed(0))
    z2 = sample_latent(mu, sigma, torch.Generator().manual_seed(0))
    torch.testing.assert_close(z, z2)  # the generator, not the global RNG, decides
    assert decode(ae, z).shape == x.shape
    kl = kl_divergence(mu, sigma)
    assert kl.ndim == 0 and torch.isfinite(kl) and kl >= 0
    kl.backward()
    assert any(p.grad is not None for p in ae.parameters())


def test_kl_divergence_closed_form():
    """KL(N(mu, s^2) || N(0, 1)) = 0.5 (mu^2 + s^2 - log s^2 - 1) per element."""
    assert kl_divergence(torch.zeros(2, 3), torch.ones(2, 3)) == 0
    mu = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    sigma = torch.tensor([[2.0, 0.5]], dtype=torch.float64)
    expected = 0.5 * (
        (0.25 + 4 - torch.log(torch.tensor(4.0)) - 1)
        + (1 + 0.25 - torch.log(torch.tensor(0.25)) - 1)
    )
    torch.testing.assert_close(kl_divergence(mu, sigma), expected.double())
