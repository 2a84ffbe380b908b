"""The cortex method's network and bridge, built from its config, and loading them back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from brainsynth.config import config_from_meta as _config_from_meta
from brainsynth.diffusion.bridge import BrownianBridgeProcess
from brainsynth.errors import InputError
from brainsynth.methods.cortex.config import CortexConfig
from brainsynth.methods.cortex.data import N_CHANNELS
from brainsynth.nn.unet import build_unet
from brainsynth.training.checkpoint import load_model_for_inference

NAME = "cortex"


def build_model(cfg: CortexConfig) -> nn.Module:
    """The bridge's UNet: x_t (1 channel) with the 5 shape channels concatenated, out 1."""
    m = cfg.model
    over: dict[str, Any] = {"channels": m.channels, "attention_levels": m.attention_levels}
    over = {k: v for k, v in over.items() if v is not None}
    return build_unet(m.preset, 3, 1, 1, concat_channels=N_CHANNELS, **over)


def build_process(cfg: CortexConfig) -> BrownianBridgeProcess:
    b = cfg.bridge
    return BrownianBridgeProcess(b.num_timesteps, b.m_schedule, b.s, b.objective)


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
