"""The KL autoencoder of latent diffusion: MONAI's AutoencoderKL with named presets, and the few
helpers around it (encode, reparameterised sample with an explicit generator, decode, KL).

With ``len(channels)`` levels the latent grid is the input grid divided by 2^(levels - 1); the
input's spatial sizes must be divisible by that factor.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets import AutoencoderKL
from torch import Tensor

from brainsynth.nn.presets import AUTOENCODER_PRESETS, resolve_preset


def build_autoencoder(
    preset: str,
    spatial_dims: int,
    in_channels: int = 1,
    latent_channels: int = 3,
    *,
    grad_checkpointing: bool = False,
    **overrides: Any,
) -> AutoencoderKL:
    """MONAI ``AutoencoderKL`` of size ``preset`` with ``out_channels = in_channels``.

    ``ae.encode(x) -> (mu, sigma)`` (sigma = exp(logvar / 2), logvar clamped to [-30, 20] by
    MONAI), ``ae.decode(z)``; see also :func:`sample_latent` and :func:`kl_divergence`."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    cfg = resolve_preset(AUTOENCODER_PRESETS, preset, **overrides)
    return AutoencoderKL(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=in_channels,
        latent_channels=latent_channels,
        use_checkpoint=grad_checkpointing,
        **cfg,
    )


def downsample_factor(preset: str, **overrides: Any) -> int:
    """Input grid / latent grid of the autoencoder preset (per spatial axis)."""
    return 2 ** (len(resolve_preset(AUTOENCODER_PRESETS, preset, **overrides)["channels"]) - 1)


def encode(ae: AutoencoderKL, x: Tensor) -> tuple[Tensor, Tensor]:
    """x (B, C, *S) -> (mu, sigma), each (B, latent_channels, *S / factor)."""
    return ae.encode(x)


def sample_latent(mu: Tensor, sigma: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """z = mu + sigma * eps, eps ~ N(0, I) drawn from ``generator`` (on its device, then moved).
    MONAI's own ``ae.sampling`` uses the global RNG."""
    dev = generator.device if generator is not None else mu.device
    eps = torch.randn(mu.shape, generator=generator, device=dev, dtype=mu.dtype).to(mu.device)
    return mu + sigma * eps


def decode(ae: AutoencoderKL, z: Tensor) -> Tensor:
    """z (B, latent_channels, *S') -> x (B, C, *S' * factor)."""
    return ae.decode(z)


def kl_divergence(z_mu: Tensor, z_sigma: Tensor) -> Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) summed over latent elements, averaged over the batch
    (Kingma & Welling 2014, appendix B)."""
    if z_mu.dtype in (torch.float16, torch.bfloat16):  # the sum needs more than 16 bits
        z_mu, z_sigma = z_mu.float(), z_sigma.float()
    var = z_sigma.pow(2)
    kl = 0.5 * (z_mu.pow(2) + var - torch.log(var.clamp_min(1e-30)) - 1.0)
    return kl.flatten(1).sum(1).mean()
