"""Classifier-free guidance (Ho & Salimans 2022, eq. 6 rewritten with w = scale - 1):

    out = uncond + scale (cond - uncond)

in the model's own prediction space (eps, x0, v, or a bridge objective: all are affine in the
score, so the combination is the same as guiding eps). scale = 1 is the conditional model, 0 the
unconditional one. The unconditional branch drops ``cond.context`` (the network then uses its
learned null token) and keeps ``cond.concat``: concatenated images are not guided.
"""

from __future__ import annotations

import torch
from torch import Tensor

from brainsynth.diffusion.base import Cond, Denoiser


class Guided:
    """A :class:`Denoiser` applying classifier-free guidance to ``denoiser``.

    ``batched=True`` runs both branches in one call of batch 2B, marking the unconditional rows
    with an all-NaN context (the convention of :class:`brainsynth.nn.unet.UNetDenoiser`);
    ``batched=False`` makes two calls and passes ``context=None`` to the unconditional one, for
    denoisers that do not follow the NaN-row convention."""

    def __init__(self, denoiser: Denoiser, scale: float, *, batched: bool = True):
        self.denoiser = denoiser
        self.scale = float(scale)
        self.batched = batched

    def __repr__(self) -> str:
        return f"Guided(scale={self.scale}, batched={self.batched})"

    def __call__(self, x_t: Tensor, t: Tensor, cond: Cond | None = None) -> Tensor:
        if cond is None or cond.context is None or self.scale == 1.0:
            return self.denoiser(x_t, t, cond)
        uncond = Cond(cond.concat, None)
        if self.scale == 0.0:
            return self.denoiser(x_t, t, uncond)
        if self.batched:
            t = torch.as_tensor(t, device=x_t.device).reshape(-1).expand(x_t.shape[0])
            both = self.denoiser(torch.cat([x_t, x_t]), torch.cat([t, t]), _stack(cond))
            c, u = both.chunk(2)
        else:
            c, u = self.denoiser(x_t, t, cond), self.denoiser(x_t, t, uncond)
        return u + self.scale * (c - u)


def guided(denoiser: Denoiser, scale: float, *, batched: bool = True) -> Denoiser:
    """Wrap ``denoiser`` with classifier-free guidance of strength ``scale`` (see :class:`Guided`)."""
    return Guided(denoiser, scale, batched=batched)


def _stack(cond: Cond) -> Cond:
    """The conditional rows then the same rows with the context dropped (all-NaN)."""
    assert cond.context is not None
    concat = None if cond.concat is None else torch.cat([cond.concat, cond.concat])
    null = torch.full_like(cond.context, float("nan"))
    return Cond(concat, torch.cat([cond.context, null]))
