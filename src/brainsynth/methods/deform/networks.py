"""The deform method's networks and processes, built from its config, and loading them back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from brainsynth.config import config_from_meta as _config_from_meta
from brainsynth.diffusion.gaussian import GaussianProcess
from brainsynth.errors import InputError
from brainsynth.methods.deform.config import DeformConfig
from brainsynth.nn.unet import build_unet
from brainsynth.registration.diffusemorph import DiffuseMorph
from brainsynth.training.checkpoint import load_model_for_inference

NAME = "deform"
# Model units of the images: the cache's [0, 1] (background 0) -> [-1, 1].
SCALE, OFFSET = 2.0, -1.0


def _overrides(m: Any) -> dict[str, Any]:
    fields = {"channels": m.channels, "attention_levels": m.attention_levels}
    return {k: v for k, v in fields.items() if v is not None}


def build_register(cfg: DeformConfig) -> DiffuseMorph:
    """DiffuseMorph in 3D: the diffusion network sees (x_t | moving, fixed)."""
    score = build_unet(cfg.model.preset, 3, 1, 1, concat_channels=2, **_overrides(cfg.model))
    return DiffuseMorph(
        score, 3, cfg.model.deform_channels, cfg.model.integration_steps,
        cfg.model.integration_downsample,
    )  # fmt: skip


def register_process(cfg: DeformConfig) -> GaussianProcess:
    d = cfg.diffusion
    return GaussianProcess(d.num_timesteps, d.schedule, "eps", d.beta_start, d.beta_end)


def build_fields_model(cfg: DeformConfig) -> nn.Module:
    """The fields UNet; conditioned, its context is the ``fields.conditioning`` covariates
    (cross-attention, and the timestep embedding with ``fields.embed``) with a null token."""
    k = len(cfg.fields.conditioning)
    return build_unet(
        cfg.fields.preset, 3, 3, 3, context_dim=k or None,
        embed_context=k > 0 and cfg.fields.embed, **_overrides(cfg.fields),
    )  # fmt: skip


def fields_process(cfg: DeformConfig) -> GaussianProcess:
    f = cfg.fields
    return GaussianProcess(f.num_timesteps, f.schedule, f.prediction)


def fields_multiple(cfg: DeformConfig) -> int:
    return build_fields_model(cfg).spatial_multiple  # type: ignore[return-value]


def config_from_meta(meta: dict) -> DeformConfig:
    return _config_from_meta(DeformConfig, meta)


def load_network(ckpt: str | Path, stage: str, device: torch.device | str = "cpu"):
    """(config, EMA network in eval mode, run meta) of a deform run's ``stage`` ("register" or
    "fields"): ``ckpt`` is the run folder, the stage folder or one of its step folders."""
    p = Path(ckpt)
    folder = p / stage if (p / stage).is_dir() else p
    meta, weights = load_model_for_inference(folder, method=NAME)
    if meta.get("stage") != stage:
        raise InputError(ckpt, f"not a deform {stage} checkpoint (stage {meta.get('stage')!r})")
    cfg = config_from_meta(meta)
    model = build_register(cfg) if stage == "register" else build_fields_model(cfg)
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise InputError(ckpt, f"weights do not fit the network of its config ({first})") from e
    model.requires_grad_(False)
    return cfg, model.to(device).eval(), meta
