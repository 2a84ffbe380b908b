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
    cond_dropout: float = 0.0,
    min_snr_gamma: float | None = None,
    weight: Tensor | None = None,
) -> LossFn:
    """Denoising loss of any :class:`NoiseProcess`: ``|| model(x_t, t, cond) - target ||``.

    ``batch[key]``: x0 (B, C, *S); ``batch[y_key]``: the bridge end point y (B, C, *S), if any;
    ``cond_fn(batch)``: the conditioning of the batch (None: unconditional). ``cond_dropout``: the
    probability that a row's context is dropped (set to NaN: the network's null token), for
    classifier-free guidance; concat channels are kept, as guidance keeps them.
    ``weight``: a fixed weight per element, broadcast against x0 (e.g. (1, 1, *S): where to denoise
    most carefully); it changes which errors the network spends its capacity on, not the
    minimiser of each element's error (the conditional mean of the target).
    ``min_snr_gamma``: Min-SNR-gamma weights per row (``GaussianProcess.loss_weight``). The loss is
    a mean over all elements, so gradient accumulation of k micro-batches of b equals one batch of
    k*b.
    """
    dist = F.mse_loss if kind == "mse" else F.l1_loss
    if min_snr_gamma is not None and not hasattr(process, "loss_weight"):
        raise ValueError(f"min_snr_gamma needs a process with loss weights, not {process!r}")

    def loss_fn(model: nn.Module, batch: dict, generator: torch.Generator) -> Tensor:
        x0 = batch[key]
        y = batch[y_key] if y_key is not None else None
        t = process.sample_t(x0.shape[0], generator=generator, device="cpu").to(x0.device)
        noise = randn_like(x0, generator)
        x_t = process.q_sample(x0, t, noise, y)
        cond = cond_fn(batch) if cond_fn is not None else None
        if cond_dropout > 0 and cond is not None and cond.context is not None:
            drop = (torch.rand(x0.shape[0], generator=generator) < cond_dropout).to(x0.device)
            context = cond.context.masked_fill(drop[:, None], float("nan"))
            cond = Cond(cond.concat, context)
        out = model(x_t, t, cond)
        err = dist(out.float(), process.target(x0, t, noise, y).float(), reduction="none")
        if min_snr_gamma is not None:
            err = process.loss_weight(t, err, min_snr_gamma) * err  # type: ignore[attr-defined]
        if weight is not None:
            err = weight.to(err.device) * err
        return err.mean()

    return loss_fn
