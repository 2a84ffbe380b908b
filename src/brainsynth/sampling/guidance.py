"""Classifier-free guidance (Ho & Salimans 2022): out = uncond + scale (cond - uncond), in the
model's own prediction space. The unconditional branch drops ``cond.context`` (the network then
uses its learned null token) and keeps ``cond.concat``."""

from __future__ import annotations

import torch
from torch import Tensor

from brainsynth.diffusion.base import Cond, Denoiser


def guided(denoiser: Denoiser, scale: float) -> Denoiser:
    def run(x_t: Tensor, t: Tensor, cond: Cond | None = None) -> Tensor:
        if cond is None or cond.context is None or scale == 1.0:
            return denoiser(x_t, t, cond)
        uncond = Cond(cond.concat, None)
        if scale == 0.0:
            return denoiser(x_t, t, uncond)
        both = denoiser(
            torch.cat([x_t, x_t]),
            torch.cat([t, t]),
            _stack(cond, uncond),
        )
        c, u = both.chunk(2)
        return u + scale * (c - u)

    return run


def _stack(cond: Cond, uncond: Cond) -> Cond:
    """Batch the conditional and unconditional passes; a NaN row marks 'use the null token'."""
    concat = None if cond.concat is None else torch.cat([cond.concat, cond.concat])
    null = torch.full_like(cond.context, float("nan"))
    return Cond(concat, torch.cat([cond.context, null]))
