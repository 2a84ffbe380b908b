"""The KL autoencoder of latent diffusion: MONAI's AutoencoderKL with named presets.

With ``len(channels)`` levels the latent grid is the input grid divided by 2^(levels-1).
"""

from __future__ import annotations

import torch
from monai.networks.nets import AutoencoderKL
from torch import Tensor

from brainsynth.nn.presets import AUTOENCODER_PRESETS, preset


def build_autoencoder(
    preset_name: str,
    spatial_dims: int,
    in_channels: int = 1,
    latent_channels: int = 3,
    grad_checkpointing: bool = False,
    **overrides,
) -> AutoencoderKL:
    cfg = preset(AUTOENCODER_PRESETS, preset_name, **overrides)
    return AutoencoderKL(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=in_channels,
        latent_channels=latent_channels,
        use_checkpoint=grad_checkpointing,
        **cfg,
    )


def downsample_factor(preset_name: str) -> int:
    return 2 ** (len(AUTOENCODER_PRESETS[preset_name]["channels"]) - 1)


def kl_divergence(z_mu: Tensor, z_sigma: Tensor) -> Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over latent elements, averaged over the batch."""
    var = z_sigma.pow(2)
    kl = 0.5 * (z_mu.pow(2) + var - torch.log(var.clamp_min(1e-12)) - 1.0)
    return kl.flatten(1).sum(1).mean()
