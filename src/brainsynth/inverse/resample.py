"""Resampling between two grids related by any affine map: the operator that carries the prior's
grid onto a scan's grid when an affine registration (not the header) put them together.

    y(v) = sum_u w(T v, u) x(u),   T = A_in^-1 A_out (output voxel -> input voxel),
w the trilinear weights (``torch.nn.functional.grid_sample``, align_corners=True: voxel centres
at the corners of [-1, 1]); output voxels whose point falls outside the input grid read 0.
Linear, so the adjoint is the vector-Jacobian product of forward (computed by autograd, exact).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GridResample(nn.Module):
    """x on the grid (``in_affine``, ``in_shape``) -> y on (``out_affine``, ``out_shape``), 3D.

    Affines are (4, 4) voxel -> world; ``sigma`` is the measurement noise (when this is the last
    operator of a chain)."""

    linear = True
    grid: Tensor  # buffer

    def __init__(
        self,
        in_affine: np.ndarray,
        in_shape: Sequence[int],
        out_affine: np.ndarray,
        out_shape: Sequence[int],
        sigma: float = 0.05,
    ):
        super().__init__()
        self.spatial_dims = 3
        self.sigma = float(sigma)
        self.in_shape = tuple(int(n) for n in in_shape)
        self.out_shape = tuple(int(n) for n in out_shape)
        t = np.linalg.solve(np.asarray(in_affine, float), np.asarray(out_affine, float))
        idx = np.stack(
            np.meshgrid(*[np.arange(n, dtype=np.float64) for n in self.out_shape], indexing="ij"),
            -1,
        )
        pts = idx @ t[:3, :3].T + t[:3, 3]  # input voxel coordinates, (*out, 3)
        size = np.maximum(np.asarray(self.in_shape, float) - 1, 1)
        norm = 2 * pts / size - 1
        # grid_sample reads (x, y, z) = (last, middle, first) input dims
        self.register_buffer("grid", torch.from_numpy(norm[..., ::-1].copy()).float()[None])

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, *in_shape) -> (B, C, *out_shape)."""
        if tuple(x.shape[2:]) != self.in_shape:
            raise ValueError(f"expected (B, C, *{self.in_shape}), got {tuple(x.shape)}")
        g = self.grid.to(x.dtype).expand(x.shape[0], *self.grid.shape[1:])
        return F.grid_sample(x, g, mode="bilinear", padding_mode="zeros", align_corners=True)

    def adjoint(self, y: Tensor) -> Tensor:
        """(B, C, *out_shape) -> (B, C, *in_shape): the exact transpose (autograd's VJP)."""
        x = torch.zeros(
            (*y.shape[:2], *self.in_shape), dtype=y.dtype, device=y.device, requires_grad=True
        )
        with torch.enable_grad():
            (g,) = torch.autograd.grad(self.forward(x), x, grad_outputs=y)
        return g

    def observed(self, mask_in: Tensor | None = None) -> Tensor | None:
        """An output voxel is measured when every input voxel it reads is."""
        if mask_in is None:
            return None
        missing = (mask_in <= 0).to(self.grid.dtype)
        return (self.forward(missing) <= 1e-6).to(torch.float32)
