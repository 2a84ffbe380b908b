"""Helpers shared by the samplers: which timesteps they visit, and their noise draws."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

Spacing = Literal["uniform", "quadratic"]


def timesteps(first: int, last: int, steps: int, spacing: Spacing = "uniform") -> list[int]:
    """``steps + 1`` distinct integers from ``first`` down to ``last`` (both included);
    ``steps`` is capped at ``first - last`` (every timestep).

    ``uniform``: evenly spaced. ``quadratic``: t - last proportional to u^2 for u evenly spaced,
    i.e. denser near ``last`` (the data end), as DDIM's "quadratic" sub-sequence (Song et al.
    2021, appendix D.2); rounding collisions near ``last`` are pushed up one step at a time."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if first <= last:
        raise ValueError(f"need first > last, got {first}, {last}")
    steps = min(int(steps), first - last)
    u = np.linspace(1.0, 0.0, steps + 1)
    if spacing == "uniform":
        ts = np.round(last + (first - last) * u).astype(int)
    elif spacing == "quadratic":
        ts = np.round(last + (first - last) * u**2).astype(int)
        for k in range(steps - 1, -1, -1):  # strictly decreasing, ends kept
            ts[k] = max(ts[k], ts[k + 1] + 1)
    else:
        raise ValueError(f"unknown spacing {spacing!r}; use uniform or quadratic")
    return [int(t) for t in ts]


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like ``x``, drawn on the generator's device (CPU without one)
    and moved to ``x``: one seed gives the same samples on CPU and GPU."""
    dev = generator.device if generator is not None else torch.device("cpu")
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    return torch.randn(x.shape, generator=generator, device=dev, dtype=dtype).to(x)


def full_t(t: int, x: Tensor) -> Tensor:
    """``(B,)`` int64 tensor of ``t`` on ``x``'s device."""
    return torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)


def check_eta(eta: float) -> float:
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    return float(eta)
