"""Losses of the two latent-diffusion stages, as ``loss_fn(model, batch, generator)``: the
autoencoder's here, the conditioned denoising loss in ``methods.conditioning``."""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from monai.networks.nets import AutoencoderKL, PatchDiscriminator
from torch import nn
from torch.func import functional_call

from brainsynth.methods.conditioning import diffusion_loss, make_cond
from brainsynth.nn.autoencoder import kl_divergence


class AEWithDiscriminator(nn.Module):
    """Autoencoder + optional patch discriminator, trained by one optimiser: the discriminator's
    parameters receive gradients only from its own hinge loss (the generator term is evaluated with
    detached discriminator weights)."""

    def __init__(self, ae: AutoencoderKL, disc: PatchDiscriminator | None):
        super().__init__()
        self.ae, self.disc = ae, disc
        self.step: int = 0  # set by the loss (adversarial warm-up)


def ae_loss(
    kl_weight: float,
    adv_weight: float,
    adv_start: int,
    sample_posterior: bool = True,
    perceptual_weight: float = 0.0,
    perceptual: nn.Module | None = None,
):
    """``perceptual``: a frozen distance ``(recon, x) -> scalar`` (training.perceptual), held by
    the loss rather than the model, so that it stays out of the optimiser, EMA and checkpoints."""

    def loss_fn(model: nn.Module, batch: dict, generator: torch.Generator) -> torch.Tensor:
        m = cast(AEWithDiscriminator, getattr(model, "module", model))  # DDP or plain
        x = batch["image"]
        z_mu, z_sigma = m.ae.encode(x)
        z = z_mu
        if sample_posterior:
            z = z_mu + z_sigma * torch.randn(z_mu.shape, generator=generator).to(z_mu)
        recon = m.ae.decode(z)
        loss = F.l1_loss(recon.float(), x.float()) + kl_weight * kl_divergence(
            z_mu.float(), z_sigma.float()
        )
        if perceptual_weight > 0 and perceptual is not None:
            perceptual.to(x.device)
            loss = loss + perceptual_weight * perceptual(recon, x)
        m.step += 1
        if m.disc is None or adv_weight <= 0 or m.step < adv_start:
            return loss
        frozen = {k: v.detach() for k, v in m.disc.named_parameters()}
        fake_logits = functional_call(m.disc, frozen, (recon,))[-1]
        loss = loss + adv_weight * (-fake_logits.float().mean())  # generator hinge term
        real = m.disc(x)[-1].float()
        fake = m.disc(recon.detach())[-1].float()
        d_loss = 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())
        return loss + d_loss

    return loss_fn


__all__ = ["AEWithDiscriminator", "ae_loss", "diffusion_loss", "make_cond"]
