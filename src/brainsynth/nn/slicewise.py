"""A 2D denoiser used as a 3D one: the volume cut into slices along one or more axes, each slice
denoised by the same 2D network, the estimates of the axes averaged.

A 2D prior trains on many more samples per second than a 3D one (every slice of every volume is
an example) and sees whole slices at full resolution; used through several orientations it acts
on a volume the way two-perspective priors do (DiffusionMBIR, Chung et al. CVPR 2023; TPDM, Lee
et al. ICCV 2023): each orientation's slices are denoised with the full context of their plane,
and the average is one estimate of x0 for the volume. Inputs of the 2D network's own rank pass
straight through (training on slices).

The volume must be a cube (every slice the same square size), as the slices were in training.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn


class SliceWise(nn.Module):
    """``net(x (N, C, S, S), t (N,)) -> (N, C', S, S)`` applied to (B, C, S, S, S) volumes.

    ``axes``: the spatial axes (0, 1, 2 of the volume's (D, H, W)) to slice along; the result is
    the mean of their estimates. ``chunk``: slices per network call (bounds memory)."""

    def __init__(self, net: nn.Module, axes: Sequence[int] = (0, 1, 2), chunk: int = 64):
        super().__init__()
        self.net = net
        self.axes = tuple(axes)
        self.chunk = chunk

    @property
    def axes(self) -> tuple[int, ...]:
        return self._axes

    @axes.setter
    def axes(self, axes: Sequence[int]) -> None:
        axes = tuple(int(a) for a in axes)
        if not axes or any(a not in (0, 1, 2) for a in axes) or len(set(axes)) != len(axes):
            raise ValueError(f"axes must be distinct values among 0, 1, 2, got {list(axes)}")
        self._axes = axes

    @contextmanager
    def along(self, axes: Sequence[int]) -> Iterator[SliceWise]:
        """Slice along ``axes`` inside the ``with`` block, then as before."""
        before = self.axes
        self.axes = axes
        try:
            yield self
        finally:
            self.axes = before

    def forward(self, x_t: Tensor, t: Tensor, cond=None) -> Tensor:
        if x_t.ndim == 4:  # slices: the 2D network itself
            return self.net(x_t, t, cond)
        if x_t.ndim != 5:
            raise ValueError(f"x_t must be (B, C, S, S) or (B, C, S, S, S), got {tuple(x_t.shape)}")
        if cond is not None:
            raise ValueError("a slice-wise prior takes no conditioning")
        b, c, *size = x_t.shape
        if len(set(size)) != 1:
            raise ValueError(f"a slice-wise prior needs a cubic volume, got {tuple(size)}")
        s = size[0]
        t = torch.as_tensor(t, device=x_t.device).reshape(-1).expand(b)
        total = None
        for axis in self.axes:
            # (B, C, S, S, S) -> (B, S_axis, C, S, S) -> (B * S, C, S, S)
            moved = x_t.movedim(2 + axis, 1).reshape(b * s, c, s, s)
            tt = t.repeat_interleave(s)
            out = torch.cat(
                [
                    self.net(moved[i : i + self.chunk], tt[i : i + self.chunk])
                    for i in range(0, b * s, self.chunk)
                ]
            )
            vol = out.reshape(b, s, out.shape[1], s, s).movedim(1, 2 + axis)
            total = vol if total is None else total + vol
        assert total is not None
        return total / len(self.axes)
