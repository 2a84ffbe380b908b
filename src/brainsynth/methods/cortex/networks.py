"""The cortex method's network and noise process, built from its config, and loading them back.

One UNet for every ``model.kind``: x_t (1 channel) with the shape channels the config selects
(``data.select_channels``: 5, or 1 for ``data.channels: fused``) concatenated, 1 out. The process:
the Brownian bridge (``bridge``), the Gaussian DDPM process (``ddpm``), none (``regression``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from brainsynth.config import config_from_meta as _config_from_meta
from brainsynth.diffusion.bridge import BrownianBridgeProcess
from brainsynth.diffusion.gaussian import GaussianProcess
from brainsynth.errors import InputError
from brainsynth.methods.cortex.config import CortexConfig
from brainsynth.methods.cortex.data import concat_channels
from brainsynth.nn.unet import build_unet
from brainsynth.training.checkpoint import load_model_for_inference

NAME = "cortex"


def build_model(cfg: CortexConfig) -> nn.Module:
    """The UNet: x_t (1 channel) with the selected shape channels concatenated, out 1."""
    m = cfg.model
    over: dict[str, Any] = {"channels": m.channels, "attention_levels": m.attention_levels}
    over = {k: v for k, v in over.items() if v is not None}
    return build_unet(m.preset, 3, 1, 1, concat_channels=concat_channels(cfg), **over)


def build_bridge(cfg: CortexConfig) -> BrownianBridgeProcess:
    """The Brownian bridge of ``model.kind: bridge``."""
    b = cfg.bridge
    return BrownianBridgeProcess(b.num_timesteps, b.m_schedule, b.s, b.objective)


def build_gaussian(cfg: CortexConfig) -> GaussianProcess:
    """The Gaussian process of ``model.kind: ddpm``."""
    d = cfg.ddpm
    return GaussianProcess(d.num_timesteps, d.schedule, d.prediction)


def regression_input(shape: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x (B, 1, *S) zeros, t (B,) zeros) of the regression: a constant in the x_t slot and a
    fixed timestep, so the output is a function of the concatenated shape channels alone."""
    b = shape.shape[0]
    x = torch.zeros((b, 1, *shape.shape[2:]), dtype=shape.dtype, device=shape.device)
    return x, torch.zeros(b, dtype=torch.long, device=shape.device)


def spatial_multiple(cfg: CortexConfig) -> int:
    return build_model(cfg).spatial_multiple  # type: ignore[return-value]


def config_from_meta(meta: dict) -> CortexConfig:
    return _config_from_meta(CortexConfig, meta)


def load_model(
    ckpt: str | Path, device: torch.device | str = "cpu"
) -> tuple[CortexConfig, nn.Module, dict]:
    """(config, EMA network in eval mode, run meta) of a cortex run or one of its checkpoints."""
    meta, weights = load_model_for_inference(ckpt, method=NAME)
    cfg = config_from_meta(meta)
    model = build_model(cfg)
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise InputError(ckpt, f"weights do not fit the network of its config ({first})") from e
    model.requires_grad_(False)
    return cfg, model.to(device).eval(), meta
