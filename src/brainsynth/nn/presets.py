"""Named network sizes, in one place. Values are MONAI constructor arguments.

UNet parameters (1 channel in and out, no conditioning; cross-attention adds some):
``tiny`` ~45 k in 2D, ~112 k in 3D, for tests (milliseconds at 8^3-32^3); ``cpu`` ~0.69 M in 2D,
~1.8 M in 3D, for the 4 mm CPU config; ``small`` ~1.8 M in 2D, ~4.7 M in 3D; ``base`` ~22 M in 2D,
~58 M in 3D, for a GPU. The exact counts are pinned in ``tests/nn/test_nets.py``.

Each UNet preset with L levels needs spatial sizes divisible by 2^(L-1); each autoencoder preset
with L levels downsamples by 2^(L-1): ``cpu`` by 2, ``tiny``/``small``/``base`` by 4.

The ``cpu`` pair is sized for two AVX2 cores, fp32, a 4 mm brain (48 x 56 x 48; latents 8 x 24 x 28 x
24), measured there: autoencoder ~0.5 s per step (batch 1), UNet ~1.4 s per step (batch 8). The
autoencoder downsamples once with 8 latent channels (8 numbers for 8 voxels): trained from scratch
for 240 s it reached an in-brain MAE of 0.077 on IXI, where 4x-downsampling ones (8/16/32 and
16/32/64 channels, 8 latent channels) reached 0.12-0.13 in 200 s and were still a blurred blob
after 1200 steps. MONAI's decoder upsamples before its convolution, so each level's first
convolution runs the coarser level's width at the finer grid: narrow levels keep that cheap.
"""

from __future__ import annotations

from typing import Any, Literal

from torch import nn

Preset = Literal["tiny", "cpu", "small", "base"]

UNET_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "channels": (8, 16),
        "attention_levels": (False, True),
        "num_res_blocks": 1,
        "norm_num_groups": 4,
        "num_head_channels": 8,
    },
    "cpu": {
        "channels": (16, 32, 64),
        "attention_levels": (False, False, True),
        "num_res_blocks": 1,
        "norm_num_groups": 8,
        "num_head_channels": 32,
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

AUTOENCODER_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "channels": (8, 16, 16),
        "attention_levels": (False, False, False),
        "num_res_blocks": 1,
        "norm_num_groups": 4,
        "with_encoder_nonlocal_attn": False,
        "with_decoder_nonlocal_attn": False,
    },
    "cpu": {  # the 4 mm CPU config: one downsampling, narrow levels, no attention
        "channels": (8, 16),
        "attention_levels": (False, False),
        "num_res_blocks": 1,
        "norm_num_groups": 8,
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


def resolve_preset(table: dict[str, dict[str, Any]], name: str, **overrides: Any) -> dict[str, Any]:
    """A fresh dict: the preset ``name`` of ``table`` updated with ``overrides``."""
    if name not in table:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(table)}")
    return {**table[name], **overrides}


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
