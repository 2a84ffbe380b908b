"""Stationary velocity fields and dense displacement fields in torch (2D and 3D, batched,
differentiable): warping, composition, scaling and squaring, inversion, Jacobian determinants,
moving points through a map and a smoothness regulariser. The torch counterpart of
:mod:`brainsynth.registration.fields` (numpy, used for phantoms), for learning-based registration
(DiffuseMorph with a velocity field).

Conventions (the same as ``fields.py``):

- A displacement or velocity field ``u`` is a float tensor ``(B, N, *S)``, channels first, with
  ``N = 2`` (``S = (X, Y)``) or ``N = 3`` (``S = (X, Y, Z)``), in VOXEL units; component ``i``
  displaces along array axis ``i`` (the axis of ``S`` at position ``i``).
- ``u`` defines the *sampling* map ``phi_u(x) = x + u(x)``: the warped image is ``I(phi_u(x))``,
  the values of ``I`` read at ``x + u(x)``.
- Images and label maps are ``(B, C, *S)``.

Sampling is linear interpolation on the voxel grid (``grid_sample`` with ``align_corners=True``,
through :class:`monai.networks.blocks.Warp`); outside the grid a field is extended by its border
values (``padding="border"``, like ``mode="nearest"`` in ``fields.sample``). Linear interpolation
reproduces a linear (affine) field exactly, which the tests use.

Reference for scaling and squaring: V. Arsigny, O. Commowick, X. Pennec, N. Ayache, "A
Log-Euclidean framework for statistics on diffeomorphisms", MICCAI 2006.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import DVF2DDF, Warp
from torch import Tensor

__all__ = [
    "compose",
    "folding_fraction",
    "identity_grid",
    "integrate",
    "invert",
    "jacobian_determinant",
    "points_through",
    "scale_velocity",
    "smoothness",
    "warp",
]

_MODES = ("bilinear", "nearest")
_PADDINGS = ("border", "zeros", "reflection")


def _check_field(u: Tensor, name: str = "u") -> int:
    """Validate a batched field ``(B, N, *S)``; return ``N``."""
    if u.ndim not in (4, 5) or u.shape[1] != u.ndim - 2:
        raise ValueError(
            f"{name} of shape {tuple(u.shape)}: expected (B, N, *S) with N = 2 or 3 spatial dims"
        )
    if not u.is_floating_point():
        raise TypeError(f"{name} must be a float tensor, got {u.dtype}")
    return u.shape[1]


def _spacing(spacing: float | Sequence[float], nd: int) -> list[float]:
    sp = [float(spacing)] * nd if isinstance(spacing, (int, float)) else [float(s) for s in spacing]
    if len(sp) != nd or any(s <= 0 for s in sp):
        raise ValueError(f"spacing must be > 0 and have {nd} entries, got {spacing}")
    return sp


def _warp_layer(mode: str, padding: str) -> Warp:
    """A fresh MONAI ``Warp``.

    Fresh on purpose: ``Warp`` caches its reference grid keyed on the batch and spatial shape only,
    so a shared instance would reuse a grid of another device. Its constructor warns ("Using
    PyTorch native grid_sample") on every build when MONAI's C++ extension is absent; silenced.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if padding not in _PADDINGS:
        raise ValueError(f"padding must be one of {_PADDINGS}, got {padding!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Warp(mode=mode, padding_mode=padding)


def identity_grid(
    shape: Sequence[int],
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Voxel coordinates ``(N, *shape)``: ``grid[i][x] = x_i`` (``dtype`` defaults to torch's
    default float type)."""
    dtype = dtype if dtype is not None else torch.get_default_dtype()
    axes = [torch.arange(int(s), device=device, dtype=dtype) for s in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


def warp(image: Tensor, u: Tensor, mode: str = "bilinear", padding: str = "border") -> Tensor:
    """The warped image ``I(x + u(x))``, ``(B, C, *S)``.

    ``image``: ``(B, C, *S)``; ``u``: ``(B, N, *S)`` (same ``B`` and ``S``). ``mode``:
    ``"bilinear"`` (trilinear in 3D; differentiable in ``image`` and ``u``) or ``"nearest"`` for
    label maps (values copied exactly; gradients w.r.t. ``u`` are zero). ``padding``: value read
    outside the grid, ``"border"`` (nearest border voxel), ``"zeros"`` or ``"reflection"``.
    An integer ``image`` is sampled in ``u``'s dtype; with ``"nearest"`` the result is cast back
    to the integer dtype.
    """
    nd = _check_field(u)
    if image.ndim != nd + 2 or image.shape[0] != u.shape[0] or image.shape[2:] != u.shape[2:]:
        raise ValueError(
            f"image {tuple(image.shape)} and field {tuple(u.shape)}: expected (B, C, *S) and "
            "(B, N, *S) with the same B and S"
        )
    layer = _warp_layer(mode, padding)
    if not image.is_floating_point():
        out = layer(image.to(u.dtype), u)
        return out.round().to(image.dtype) if mode == "nearest" else out
    return layer(image, u.to(image.dtype))


def compose(u: Tensor, w: Tensor, padding: str = "border") -> Tensor:
    """Displacement of the map ``phi_u o phi_w`` (first ``phi_w``, then ``phi_u``):

        compose(u, w)(x) = w(x) + u(x + w(x)),

    so that ``phi_u(phi_w(x)) = x + compose(u, w)(x)``. As sampling maps, warping an image by
    ``compose(u, w)`` equals warping it by ``u`` and then warping the result by ``w``:
    ``warp(warp(I, u), w) ~= warp(I, compose(u, w))`` (up to interpolation). ``u`` is linearly
    interpolated at ``x + w(x)`` (border padding by default).
    """
    _check_field(u)
    _check_field(w, "w")
    return w + warp(u, w, mode="bilinear", padding=padding)


def integrate(v: Tensor, steps: int = 7, padding: str = "border") -> Tensor:
    """Displacement of ``exp(v)``, the time-1 flow of the stationary velocity field ``v``, by
    scaling and squaring (Arsigny et al. 2006):

        u_0 = v / 2^steps,   u_{k+1} = compose(u_k, u_k) = u_k + u_k(x + u_k(x)),   u = u_steps,

    i.e. ``exp(v) = exp(v / 2^steps)^(2^steps)`` with ``exp(v / 2^steps) ~= id + v / 2^steps``.
    When ``max |v| / 2^steps`` is well below a voxel every factor is invertible and so is the
    result. ``steps = 0`` returns ``v`` (the first-order approximation ``exp(v) ~= id + v``).

    Implemented with :class:`monai.networks.blocks.DVF2DDF`, whose update
    ``ddf + Warp()(ddf, ddf)`` is exactly ``compose(ddf, ddf)`` above (checked in the tests); it is
    given ``padding`` explicitly because its default is zero padding, whereas ``fields.py`` extends
    fields by their border values.
    """
    _check_field(v, "v")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if steps == 0:
        return v
    if padding not in _PADDINGS:
        raise ValueError(f"padding must be one of {_PADDINGS}, got {padding!r}")
    with warnings.catch_warnings():  # see _warp_layer
        warnings.simplefilter("ignore")
        layer = DVF2DDF(num_steps=steps, mode="bilinear", padding_mode=padding)
    out: Tensor = layer(v)
    return out


def invert(u: Tensor, iterations: int = 30, padding: str = "border") -> Tensor:
    """Displacement ``w`` of the inverse map, ``phi_u(phi_w(x)) = x``, by the fixed-point iteration

        w_0 = -u,   w <- -u(x + w(x))

    (``phi_u(phi_w(x)) = x + w(x) + u(x + w(x)) = x`` iff ``w(x) = -u(x + w(x))``). It converges
    where ``phi_u`` is a contraction perturbation of the identity (``|grad u| < 1``), true for
    smooth fields of a few voxels. Near the border the inverse reads ``u`` outside the grid and is
    only as good as the padding.

    For a stationary velocity field prefer the exact inverse ``integrate(-v)``:
    ``exp(v)^(-1) = exp(-v)``, with no iteration and the same accuracy as the forward map.
    """
    _check_field(u)
    w = -u
    for _ in range(iterations):
        w = -warp(u, w, mode="bilinear", padding=padding)
    return w


def scale_velocity(v: Tensor, eta: float | Tensor) -> Tensor:
    """``eta * v``. ``exp(eta v)``, ``eta`` in [0, 1], is the geodesic (one-parameter subgroup)
    from the identity (``eta = 0``: ``integrate`` gives exactly 0) to the full map ``exp(v)``
    (``eta = 1``). ``eta`` is a number, a 0-dim tensor or a ``(B,)`` tensor (one per sample)."""
    _check_field(v, "v")
    if isinstance(eta, Tensor) and eta.ndim == 1:
        if eta.shape[0] != v.shape[0]:
            raise ValueError(f"eta of shape {tuple(eta.shape)} for a batch of {v.shape[0]}")
        eta = eta.to(v).reshape(-1, *([1] * (v.ndim - 1)))
    return eta * v


def _grad(u: Tensor, spacing: list[float]) -> list[list[Tensor]]:
    """``g[i][j] = d u_i / d x_j``, ``(B, *S)`` each; central differences inside, one-sided
    first-order differences at the border (as ``numpy.gradient``)."""
    nd = u.shape[1]
    dims = tuple(range(1, nd + 1))
    return [list(torch.gradient(u[:, i], spacing=spacing, dim=dims)) for i in range(nd)]


def jacobian_determinant(u: Tensor, spacing: float | Sequence[float] = 1.0) -> Tensor:
    """``det(I + grad u)`` per voxel, ``(B, *S)``; the local volume change of ``phi_u``.

    Central differences (``torch.gradient``; second order inside, first order one-sided at the
    border), the same numbers as :func:`brainsynth.evaluation.deformation.jacobian_determinant`.
    ``spacing``: voxel size per axis in the unit of ``u`` (1 for a field in voxels).
    """
    nd = _check_field(u)
    g = _grad(u, _spacing(spacing, nd))
    j = [[g[i][k] + (1.0 if i == k else 0.0) for k in range(nd)] for i in range(nd)]
    if nd == 2:
        return j[0][0] * j[1][1] - j[0][1] * j[1][0]
    return (
        j[0][0] * (j[1][1] * j[2][2] - j[1][2] * j[2][1])
        - j[0][1] * (j[1][0] * j[2][2] - j[1][2] * j[2][0])
        + j[0][2] * (j[1][0] * j[2][1] - j[1][1] * j[2][0])
    )


def folding_fraction(u: Tensor, mask: Tensor | None = None) -> Tensor:
    """Fraction of voxels with ``det J <= 0`` (folding), ``(B,)``; within ``mask`` if given
    (``(B, *S)``, ``(B, 1, *S)`` or ``(*S)``, nonzero = inside). Not differentiable."""
    det = jacobian_determinant(u)
    fold = (det <= 0).to(u.dtype)
    if mask is None:
        return fold.flatten(1).mean(1)
    m = mask.to(torch.bool)
    if m.ndim == det.ndim + 1:
        m = m[:, 0]
    m = m.expand_as(det).to(u.dtype)
    return (fold * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1.0)


def points_through(u: Tensor, points: Tensor, padding: str = "border") -> Tensor:
    """``phi_u(p) = p + u(p)`` for voxel coordinates ``points`` ``(P, N)``, ``u`` linearly
    interpolated at ``p``; returns ``(P, N)``.

    ``u``: a single field, ``(N, *S)`` or ``(1, N, *S)``. With the sampling convention, a point
    ``p`` of the grid on which ``u`` is defined (the fixed image's grid, where ``I(phi_u(x))`` is
    read) goes to ``phi_u(p)`` in the moving image's grid: e.g. vertices of a surface drawn on the
    fixed grid land on the corresponding place of the moving image. Moving points the other way
    needs the inverse field (``integrate(-v)`` for an SVF).
    """
    if u.ndim == points.shape[-1] + 1:
        u = u.unsqueeze(0)
    nd = _check_field(u)
    if u.shape[0] != 1 or points.ndim != 2 or points.shape[1] != nd:
        raise ValueError(
            f"field {tuple(u.shape)} and points {tuple(points.shape)}: expected one field "
            "(N, *S) or (1, N, *S) and points (P, N)"
        )
    if padding not in _PADDINGS:
        raise ValueError(f"padding must be one of {_PADDINGS}, got {padding!r}")
    p = points.to(u.dtype)
    sizes = u.shape[2:]
    # grid_sample: normalised coordinates in [-1, 1] (align_corners=True), last axis first.
    norm = torch.stack([p[:, i] * 2.0 / max(sizes[i] - 1, 1) - 1.0 for i in range(nd)], dim=-1)
    grid = norm.flip(-1).reshape(1, -1, *([1] * (nd - 1)), nd)
    disp = F.grid_sample(u, grid, mode="bilinear", padding_mode=padding, align_corners=True)
    return p + disp.reshape(nd, -1).T


def smoothness(u: Tensor, spacing: float | Sequence[float] = 1.0) -> Tensor:
    """Diffusion regulariser ``||grad u||^2`` with forward differences, a scalar; the same
    normalisation as VoxelMorph's ``Grad("l2")`` (Balakrishnan et al. 2019):

        (1 / N) * sum_j mean_{b, i, x} ((u_i(x + e_j) - u_i(x)) / h_j)^2,

    the mean over ``j`` of the mean over batch, components and the ``S_j - 1`` differences along
    axis ``j``. (``monai.losses.DiffusionLoss`` is not used: it takes central differences on the
    interior only and another normalisation, so its value differs on a non-linear field.)
    """
    nd = _check_field(u)
    sp = _spacing(spacing, nd)
    terms = [(torch.diff(u, dim=2 + j) / sp[j]).pow(2).mean() for j in range(nd)]
    return torch.stack(terms).mean()
