"""Every shipped ldm config loads and fits the IXI cache grid (96 x 112 x 96 at 2 mm); the CPU
config's networks run on a 4 mm volume and give the latent grid its comment promises."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from brainsynth.config import to_dict
from brainsynth.diffusion.base import Cond
from brainsynth.errors import InputError
from brainsynth.methods.ldm.data import padded_shape
from brainsynth.methods.ldm.train import (
    _multiple,
    build_ae,
    build_denoiser,
    config_from_meta,
    latent_shape,
    load_ldm_config,
)
from brainsynth.nn.autoencoder import downsample_factor

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("ldm_*.yaml"))
IXI_SHAPE = (96, 112, 96)


def test_configs_found():
    assert {p.name for p in CONFIGS} >= {"ldm_tiny.yaml", "ldm_cpu.yaml", "ldm_gpu.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_latent_grid_fits_the_unet(path):
    cfg = load_ldm_config(path)
    shape = tuple(s // cfg.data.downsample for s in IXI_SHAPE)
    c, *lat = latent_shape(cfg, shape)
    assert c == cfg.ae.latent_channels
    f = downsample_factor(cfg.ae.preset)
    assert [s * f for s in lat] == list(padded_shape(shape, _multiple(cfg)))
    # the UNet halves the latent grid (levels - 1) times: every level must stay whole
    assert all(s % (_multiple(cfg) // f) == 0 for s in lat)


def test_cpu_config_networks_run_at_4mm():
    torch.manual_seed(0)
    cfg = load_ldm_config(CONFIGS[0].parent / "ldm_cpu.yaml")
    assert latent_shape(cfg, (48, 56, 48)) == (8, 24, 28, 24)
    ae = build_ae(cfg).eval()
    x = torch.rand(1, 1, 48, 56, 48)
    with torch.no_grad():
        mu, sigma = ae.encode(x)
        assert mu.shape == sigma.shape == (1, 8, 24, 28, 24)
        assert ae.decode(mu).shape == x.shape
        net = build_denoiser(cfg).eval()
        cond = Cond(context=torch.tensor([[0.1, 1.0, -0.5, 0.3]]))
        out = net(mu, torch.tensor([500]), cond)
    assert out.shape == mu.shape and torch.isfinite(out).all()


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["diffusion.conditioning=concat", "diffusion.embed=true"], "embed needs conditioning"),
    ],
)
def test_inconsistent_options_are_config_errors(overrides, message):
    with pytest.raises(InputError, match=message):
        load_ldm_config(overrides=overrides)


def test_checkpoint_config_with_a_removed_option_loads_with_a_warning():
    meta = to_dict(load_ldm_config())
    meta["ae"] = {**meta["ae"], "wavelet_skip": False}  # an option an older version had
    meta["run_name"] = "x"  # other run keys are not config
    with pytest.warns(UserWarning, match=r"\['ae.wavelet_skip'\]"):
        cfg = config_from_meta(meta)
    assert to_dict(cfg) == to_dict(load_ldm_config())
