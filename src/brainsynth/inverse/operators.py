"""Forward operators for inverse problems with a diffusion prior (the restore method, DAPS).

Interface. DAPS (Zhang et al., CVPR 2025) needs only the likelihood p(y | x0) = N(y; A(x0),
sigma^2 I) and its gradient in x0, so an operator is anything with
    spatial_dims: int      2 or 3
    sigma: float           measurement noise std, in image intensity units (the likelihood's sigma)
    forward(x) -> y        x: (B, C, *S) on the prior's grid -> y, the measurement; differentiable
Linear ones (``linear = True``) also have ``adjoint(y) -> (B, C, *S)``, the exact transpose of
forward's linear map (<A x, y> = <x, A^T y>). An optional ``observed(mask_in=None)`` gives the
indicator of the measured voxels of y, (B or 1, 1, *S_y), or None when all are measured;
``log_likelihood`` and ``residual`` count only those. Every operator here is a ``torch.nn.Module``
without trainable parameters (its tensors are buffers, so ``.to(device)`` moves them), so
``op(x)`` is ``op.forward(x)``.

Notation
    x        image on the prior's (high-res) grid, (B, C, *S), len(S) = spatial_dims
    y        measurement, (B, C, *S_y): y = A(x) + sigma * eps, eps ~ N(0, I)
    A, A^T   forward operator and (linear ones) its adjoint
    w        indicator of the measured voxels of y (``observed``), 1 everywhere when None
    log p(y | x) = -sum_v w_v (y_v - A(x)_v)^2 / (2 sigma^2), constants dropped
The thick-slice acquisition is in ``inverse.slices``; the bias field in ``inverse.bias``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from brainsynth.inverse.bias import BiasField

__all__ = [
    "BiasField",
    "Compose",
    "Identity",
    "LinearOperator",
    "Mask",
    "Operator",
    "add_noise",
    "log_likelihood",
    "observed_mask",
    "residual",
]


@runtime_checkable
class Operator(Protocol):
    """A measurement model y = A(x) + sigma * eps; all DAPS needs."""

    spatial_dims: int
    sigma: float

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, *S) -> y, differentiable in x."""
        ...


@runtime_checkable
class LinearOperator(Operator, Protocol):
    """An operator whose forward is linear in x, with its exact transpose."""

    def adjoint(self, y: Tensor) -> Tensor:
        """y -> (B, C, *S), with <A x, y> = <x, A^T y>."""
        ...


# ---- likelihood and noise ---------------------------------------------------------------


def observed_mask(op: Operator) -> Tensor | None:
    """The operator's measured-voxel indicator in y's space, None when every voxel is measured
    (also for operators without ``observed``)."""
    fn = getattr(op, "observed", None)
    return None if fn is None else fn(None)


def residual(op: Operator, x: Tensor, y: Tensor) -> Tensor:
    """w * (y - A(x)): the residual on measured voxels, zero elsewhere; shape of A(x) and y
    broadcast together."""
    r = y - op.forward(x)
    w = observed_mask(op)
    return r if w is None else r * w.to(r.dtype)


def log_likelihood(op: Operator, x: Tensor, y: Tensor) -> Tensor:
    """log p(y | x) = -sum_v w_v (y_v - A(x)_v)^2 / (2 sigma^2), constants dropped: (B,).

    Only measured voxels count (``observed``), so what y holds in a masked region never matters.
    Differentiable in x (and in anything A depends on, e.g. bias coefficients)."""
    r = residual(op, x, y)
    return -(r**2).flatten(1).sum(1) / (2.0 * op.sigma**2)


def add_noise(y: Tensor, sigma: float, generator: torch.Generator | None = None) -> Tensor:
    """Simulated measurement y + sigma * eps, eps ~ N(0, I) drawn from ``generator`` (whose
    device must be y's)."""
    eps = torch.randn(y.shape, generator=generator, dtype=y.dtype, device=y.device)
    return y + sigma * eps


# ---- slice acquisition ------------------------------------------------------------------


class Mask(nn.Module):
    """Inpainting / missing data: y = m * x, with m (B or 1, 1, *S) in {0, 1} (or [0, 1]).

    The likelihood counts the voxels with m > 0 (``observed``), so y's content under a lesion or
    in a missing slab never matters. A soft m attenuates those voxels (y = m x there) and they
    count fully; for a binary m this is the usual inpainting model."""

    spatial_dims: int
    sigma: float
    linear: bool = True
    mask: Tensor  # buffer

    def __init__(self, spatial_dims: int, mask: Tensor, sigma: float = 0.05):
        super().__init__()
        if mask.dim() != spatial_dims + 2 or mask.shape[1] != 1:
            raise ValueError(f"mask must be (B or 1, 1, *S), got {tuple(mask.shape)}")
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        m = mask if mask.is_floating_point() else mask.float()
        if bool((m < 0).any()) or bool((m > 1).any()):
            raise ValueError("mask values must lie in [0, 1]")
        self.spatial_dims = int(spatial_dims)
        self.sigma = float(sigma)
        self.register_buffer("mask", m)

    def forward(self, x: Tensor) -> Tensor:
        """y = m * x: (B, C, *S) -> (B, C, *S)."""
        if x.dim() != self.spatial_dims + 2 or x.shape[2:] != self.mask.shape[2:]:
            raise ValueError(
                f"x must be (B, C, *{tuple(self.mask.shape[2:])}), got {tuple(x.shape)}"
            )
        return x * self.mask.to(x.dtype)

    def adjoint(self, y: Tensor) -> Tensor:
        """m * y: a real diagonal map is its own transpose."""
        return self.forward(y)

    def observed(self, mask_in: Tensor | None = None) -> Tensor | None:
        seen = (self.mask > 0).to(self.mask.dtype)
        return seen if mask_in is None else seen * mask_in.to(seen.dtype)


class Identity(nn.Module):
    """y = x with a trust level: sigma is how far y (e.g. another method's output, such as
    SynthSR's) may be from the truth; a large sigma trusts it weakly."""

    spatial_dims: int
    sigma: float
    linear: bool = True

    def __init__(self, spatial_dims: int, sigma: float = 0.1):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.spatial_dims = int(spatial_dims)
        self.sigma = float(sigma)

    def forward(self, x: Tensor) -> Tensor:
        """y = x: (B, C, *S) -> (B, C, *S)."""
        return x

    def adjoint(self, y: Tensor) -> Tensor:
        return y

    def observed(self, mask_in: Tensor | None = None) -> Tensor | None:
        return mask_in


class Compose(nn.Module):
    """Operators applied in the order given: Compose(a, b)(x) = b(a(x)), e.g.
    Compose(BiasField(...), SliceAcquisition(...)) is a biased thick-slice scan.

    sigma is the last (measurement) operator's unless given. The adjoint applies the adjoints in
    reverse order and needs every operator linear. ``observed`` carries the measured-voxel mask
    through the chain (a mask before a slice acquisition marks the slices it touches as missing).
    """

    spatial_dims: int
    sigma: float

    def __init__(self, *ops: Operator, sigma: float | None = None):
        super().__init__()
        if not ops:
            raise ValueError("Compose needs at least one operator")
        dims = {op.spatial_dims for op in ops}
        if len(dims) != 1:
            raise ValueError(f"operators disagree on spatial_dims: {sorted(dims)}")
        self.spatial_dims = dims.pop()
        self.sigma = float(ops[-1].sigma if sigma is None else sigma)
        if self.sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")
        self.ops: tuple[Operator, ...] = tuple(ops)
        for i, op in enumerate(ops):
            if isinstance(op, nn.Module):
                self.add_module(f"op{i}", op)  # so .to(device) and state_dict reach them

    @property
    def linear(self) -> bool:
        return all(bool(getattr(op, "linear", False)) for op in self.ops)

    def forward(self, x: Tensor) -> Tensor:
        for op in self.ops:
            x = op.forward(x)
        return x

    def adjoint(self, y: Tensor) -> Tensor:
        if not self.linear:
            raise TypeError("the adjoint needs every composed operator linear (with adjoint)")
        for op in reversed(self.ops):
            y = op.adjoint(y)  # type: ignore[attr-defined]
        return y

    def observed(self, mask_in: Tensor | None = None) -> Tensor | None:
        m = mask_in
        for op in self.ops:
            fn = getattr(op, "observed", None)
            if fn is None:
                if m is not None:
                    raise ValueError(f"cannot carry a mask through {type(op).__name__}")
                continue
            m = fn(m)
        return m
