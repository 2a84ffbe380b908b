"""Interfaces shared by every noise process, network and sampler.

Shapes: ``x: (B, C, *spatial)`` with ``spatial`` of length 2 or 3; ``t: (B,)`` integer timesteps in
``[0, num_timesteps)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


@dataclass
class Cond:
    """Conditioning bundle. ``concat``: (B, Cc, *spatial) channels stacked onto ``x_t``;
    ``context``: (B, K) covariate vector for cross-attention. Either may be None.

    A dropped condition (condition dropout, the unconditional branch of guidance) is
    ``context=None`` for the whole batch, or an all-NaN row for one sample; a network with
    cross-attention then uses its learned null token (``nn.unet.UNetDenoiser``)."""

    concat: Tensor | None = None
    context: Tensor | None = None

    def to(self, device: torch.device | str) -> Cond:
        return Cond(
            None if self.concat is None else self.concat.to(device),
            None if self.context is None else self.context.to(device),
        )


class Denoiser(Protocol):
    """A network plus its parameterisation: ``(x_t, t, cond) -> prediction``."""

    def __call__(self, x_t: Tensor, t: Tensor, cond: Cond | None = None) -> Tensor: ...


class NoiseProcess(Protocol):
    """A forward process with no weights. ``y`` is the bridge's end point (ignored by Gaussian)."""

    num_timesteps: int

    def sample_t(
        self,
        batch: int,
        *,
        generator: torch.Generator | None = None,
        device: str | torch.device = "cpu",
    ) -> Tensor: ...

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor, y: Tensor | None = None) -> Tensor: ...

    def target(self, x0: Tensor, t: Tensor, noise: Tensor, y: Tensor | None = None) -> Tensor: ...

    def predict_x0(
        self, x_t: Tensor, t: Tensor, model_out: Tensor, y: Tensor | None = None
    ) -> Tensor: ...


class Progress(Protocol):
    """Sampler progress callback: called once per step with (step_index, total_steps)."""

    def __call__(self, step: int, total: int) -> None: ...
