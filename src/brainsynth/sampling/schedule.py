"""Which timesteps a sampler visits."""

from __future__ import annotations

import numpy as np


def timesteps(first: int, last: int, steps: int) -> list[int]:
    """``steps + 1`` distinct integers from ``first`` down to ``last`` (both included), evenly spaced."""
    if steps < 1:
        raise ValueError("steps must be >= 1")
    steps = min(steps, first - last)
    ts = np.round(np.linspace(first, last, steps + 1)).astype(int)
    return [int(t) for t in ts]


def _noise(x: torch.Tensor, generator) -> torch.Tensor:  # noqa: F821
    import torch

    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)
