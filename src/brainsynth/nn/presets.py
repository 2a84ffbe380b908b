"""Named network sizes. ``tiny`` is for tests (milliseconds at 16^3), ``small`` for CPU training
(a few million parameters), ``base`` for a GPU at 2 mm."""

from __future__ import annotations

from typing import Literal

Preset = Literal["tiny", "small", "base"]

UNET_PRESETS: dict[str, dict] = {
    "tiny": {
        "channels": (8, 16),
        "attention_levels": (False, True),
        "num_res_blocks": 1,
        "norm_num_groups": 4,
        "num_head_channels": 8,
    },
    "small": {
        "channels": (32, 64, 96),
        "attention_levels": (False, False, True),
        "num_res_blocks": 1,
        "norm_num_groups": 16,
        "num_head_channels": 32,
    },
    "base": {
        "channels": (64, 128, 192, 256),
        "attention_levels": (False, False, True, True),
        "num_res_blocks": 2,
        "norm_num_groups": 32,
        "num_head_channels": 32,
    },
}

AUTOENCODER_PRESETS: dict[str, dict] = {
    "tiny": {
        "channels": (8, 16, 16),
        "attention_levels": (False, False, False),
        "num_res_blocks": 1,
        "norm_num_groups": 4,
        "with_encoder_nonlocal_attn": False,
        "with_decoder_nonlocal_attn": False,
    },
    "small": {
        "channels": (32, 64, 64),
        "attention_levels": (False, False, False),
        "num_res_blocks": 1,
        "norm_num_groups": 16,
        "with_encoder_nonlocal_attn": False,
        "with_decoder_nonlocal_attn": False,
    },
    "base": {
        "channels": (64, 128, 128),
        "attention_levels": (False, False, False),
        "num_res_blocks": 2,
        "norm_num_groups": 32,
        "with_encoder_nonlocal_attn": False,
        "with_decoder_nonlocal_attn": False,
    },
}


def preset(table: dict[str, dict], name: str, **overrides) -> dict:
    if name not in table:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(table)}")
    return {**table[name], **overrides}


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())
