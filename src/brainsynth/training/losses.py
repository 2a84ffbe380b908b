"""Loss functions in the trainer's shape: ``loss_fn(model, batch, generator) -> scalar``.

All randomness (timesteps, noise, condition dropout) comes from ``generator``, the trainer's CPU
generator, and is moved to the data's device afterwards: the draws are then the same on CPU and
GPU, and resuming restores them exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brainsynth.diffusion.base import Cond, NoiseProcess

LossFn = Callable[[nn.Module, dict, torch.Generator], Tensor]
CondFn = Callable[[dict], "Cond | None"]


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like ``x``, drawn on the generator's device then moved."""
    dev = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=dev, dtype=torch.float32).to(x)


def diffusion_loss(
    process: NoiseProcess,
    *,
    key: str = "image",
    y_key: str | None = None,
    cond_fn: CondFn | None = None,
    kind: Literal["mse", "l1"] = "mse",
) -> LossFn:
    """Denoising loss of any :class:`NoiseProcess`: ``|| model(x_t, t, cond) - target ||``.

    ``batch[key]``: x0 (B, C, *S); ``batch[y_key]``: the bridge end point y (B, C, *S), if any;
    ``cond_fn(batch)``: the conditioning of the batch (None: unconditional). The loss is a mean
    over all elements, so gradient accumulation of k micro-batches of b equals one batch of k*b.
    """
    dist = F.mse_loss if kind == "mse" else F.l1_loss

    def loss_fn(model: nn.Module, batch: dict, generator: torch.Generator) -> Tensor:
        x0 = batch[key]
        y = batch[y_key] if y_key is not None else None
        t = process.sample_t(x0.shape[0], generator=generator, device="cpu").to(x0.device)
        noise = randn_like(x0, generator)
        x_t = process.q_sample(x0, t, noise, y)
        out = model(x_t, t, cond_fn(batch) if cond_fn is not None else None)
        return dist(out.float(), process.target(x0, t, noise, y).float())

    return loss_fn
