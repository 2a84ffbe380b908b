"""The thick-slice acquisition operator (see ``inverse.operators`` for the interface).

Slice acquisition (along one axis, the UniRes model of Brudfors et al. 2019: alignment, slice
profile, sampling), in hi-res voxel units along that axis:
    n        voxels along the axis; voxel i is centred at i and covers [i - 1/2, i + 1/2]
    h        slice profile, integral 1, FWHM = ``thickness``: box (width = thickness),
             triangle (base 2 thickness), gaussian (std = thickness / (2 sqrt(2 ln 2)))
    H        the profile's CDF; k_d = H(d + 1/2) - H(d - 1/2), the profile integrated over voxel d
             (a box of 3 voxels is [1, 1, 1] / 3; a non-integer width has fractional end weights)
    p_j      slice centre j = offset + j * spacing (spacing > thickness leaves a gap)
    M        (n_slices, n), the 1D acquisition; A applies M along the axis, A^T applies M^T.
             "integrate" (default): M[j, i] = H(i + 1/2 - p_j) - H(i - 1/2 - p_j), the profile
             centred on the slice integrated over each voxel (k shifted to p_j);
             "interpolate": M = L K, blur K with k then linear interpolation L at the p_j.
             Both agree at integer p_j. Rows are renormalised to sum 1 at the grid's edges
             (``boundary="renormalise"``, default) or zero-padded (``"zero"``). Gaussian
             profiles are truncated at +-4 std (renormalised), so M is banded.
Alignment is a translation along the slice axis only (``offset``, which ``from_affines`` reads
from the scan's affine); a scan oblique to, or reoriented relative to, the prior's grid is
refused with a ValueError rather than modelled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from brainsynth.inverse.operators import Compose, Identity, Operator

__all__ = ["SliceAcquisition", "acquisition_from_affines", "acquisition_matrix", "profile_kernel"]

Profile = Literal["box", "triangle", "gaussian"]
Boundary = Literal["renormalise", "zero"]
Sampling = Literal["integrate", "interpolate"]
FWHM_PER_STD = 2.0 * math.sqrt(2.0 * math.log(2.0))
GAUSS_TRUNCATE = 4.0  # Gaussian kernels stop at 4 std (the tail holds < 1e-4 of the mass)


def _profile_cdf(u: np.ndarray, thickness: float, profile: Profile) -> np.ndarray:
    """H(u) = integral of the unit-mass profile with FWHM ``thickness`` from -inf to u."""
    t = thickness
    if profile == "box":
        return np.clip(u / t + 0.5, 0.0, 1.0)
    if profile == "triangle":
        # Base half-width t gives FWHM t; H is piecewise quadratic.
        a = np.clip(u, -t, t)
        return np.where(a < 0, (a + t) ** 2 / (2 * t * t), 1.0 - (t - a) ** 2 / (2 * t * t))
    if profile == "gaussian":
        from scipy.special import erf

        # Truncated at +-4 std and renormalised, so the matrix is banded: a voxel far from a
        # slice has exactly no weight (``observed`` relies on it) instead of an erf tail.
        std = t / FWHM_PER_STD
        r = GAUSS_TRUNCATE * std
        lo, hi = (0.5 * (1.0 + erf(v / (std * math.sqrt(2.0)))) for v in (-r, r))
        return (0.5 * (1.0 + erf(np.clip(u, -r, r) / (std * math.sqrt(2.0)))) - lo) / (hi - lo)
    raise ValueError(f"unknown profile {profile!r}; use box, triangle or gaussian")


def _half_support(thickness: float, profile: Profile) -> float:
    if profile == "box":
        return thickness / 2
    if profile == "triangle":
        return thickness
    return GAUSS_TRUNCATE * thickness / FWHM_PER_STD


def _check_profile(thickness: float, profile: Profile) -> None:
    if not thickness > 0:
        raise ValueError(f"thickness must be > 0, got {thickness}")
    if profile not in ("box", "triangle", "gaussian"):
        raise ValueError(f"unknown profile {profile!r}; use box, triangle or gaussian")


def profile_kernel(thickness: float, profile: Profile = "box") -> Tensor:
    """Discrete slice profile k_d, d = -R..R (index R is the centre): (2R + 1,), float64, sum 1.

    Each weight integrates the profile over one voxel, so a box of 3 is [1, 1, 1] / 3 and a box
    of 4 is [1, 2, 2, 2, 1] / 8 (fractional end weights)."""
    _check_profile(thickness, profile)
    radius = int(math.ceil(_half_support(thickness, profile) + 0.5))
    d = np.arange(-radius, radius + 1, dtype=np.float64)
    k = _profile_cdf(d + 0.5, thickness, profile) - _profile_cdf(d - 0.5, thickness, profile)
    while k.size > 1 and k[0] == 0.0 and k[-1] == 0.0:  # the radius above may overshoot by one
        k = k[1:-1]
    return torch.from_numpy(k / k.sum())  # k.sum() is 1 up to round-off


def acquisition_matrix(
    n_in: int,
    positions: Sequence[float] | Tensor,
    thickness: float,
    profile: Profile = "box",
    boundary: Boundary = "renormalise",
    sampling: Sampling = "integrate",
) -> Tensor:
    """The 1D acquisition M, (n_slices, n_in) float64, for slice centres ``positions`` (hi-res
    voxel units, within [-1/2, n_in - 1/2]).

    sampling: "integrate" (default) centres the profile on each slice and integrates it over
    every voxel, M[j, i] = H(i + 1/2 - p_j) - H(i - 1/2 - p_j): the exact acquisition of the
    piecewise-constant image, so a 2-voxel box centred between two voxels is their mean.
    "interpolate" blurs with the kernel k (centred on voxels), then interpolates linearly at
    p_j: M = L K. Both agree at integer p_j; at half-integer ones (an even thickness-to-voxel
    ratio on a grid-aligned scan) interpolation adds a 1-voxel tent of blur.
    boundary: "renormalise" divides each row by the weight that falls inside the grid (the
    outside is taken to look like what the profile still covers, so constants stay constant to
    the edge); "zero" drops it (zero padding: rows near the edges sum to < 1)."""
    _check_profile(thickness, profile)
    if boundary not in ("renormalise", "zero"):
        raise ValueError(f"unknown boundary {boundary!r}; use renormalise or zero")
    if sampling not in ("integrate", "interpolate"):
        raise ValueError(f"unknown sampling {sampling!r}; use integrate or interpolate")
    p = torch.as_tensor(positions, dtype=torch.float64).reshape(-1)
    if p.numel() == 0:
        raise ValueError("no slice positions")
    if bool((p < -0.5 - 1e-9).any()) or bool((p > n_in - 0.5 + 1e-9).any()):
        raise ValueError(
            f"slice centres {p.min().item():.3f}..{p.max().item():.3f} fall outside the hi-res "
            f"grid [-0.5, {n_in - 0.5}] along the slice axis; crop the scan to the prior's field "
            "of view"
        )
    if sampling == "integrate":
        rel = np.arange(n_in, dtype=np.float64)[None, :] - p.numpy()[:, None]  # i - p_j
        hi = _profile_cdf(rel + 0.5, thickness, profile)
        lo = _profile_cdf(rel - 0.5, thickness, profile)
        m = torch.from_numpy(hi - lo)
        return m / m.sum(1, keepdim=True) if boundary == "renormalise" else m
    k = profile_kernel(thickness, profile)
    radius = (k.numel() - 1) // 2
    i = torch.arange(n_in)
    d = i[None, :] - i[:, None]  # K[i, m] = k_{m - i} (k is symmetric)
    blur = torch.where(d.abs() <= radius, k[(d + radius).clamp(0, 2 * radius)], 0.0)
    if boundary == "renormalise":
        blur = blur / blur.sum(1, keepdim=True)
    # Centres beyond the outermost voxel centres (within half a voxel of the grid's edge) take
    # that voxel's blurred value.
    q = p.clamp(0.0, n_in - 1.0)
    lo_i = q.floor().long().clamp(max=max(n_in - 2, 0))
    frac = q - lo_i
    interp = torch.zeros(p.numel(), n_in, dtype=torch.float64)
    rows = torch.arange(p.numel())
    interp[rows, lo_i] += 1.0 - frac
    if n_in > 1:
        interp[rows, lo_i + 1] += frac
    return interp @ blur


def _apply_along(x: Tensor, matrix: Tensor, dim: int) -> Tensor:
    """Contract x's ``dim`` with the matrix's columns; the result's ``dim`` is its rows."""
    out = torch.tensordot(x, matrix.to(dtype=x.dtype, device=x.device), dims=([dim], [1]))
    return torch.movedim(out, -1, dim)


class SliceAcquisition(nn.Module):
    """Thick-slice acquisition along one spatial axis: y = A x applies M (see the legend) along
    ``axis``; the other axes pass through.

    Args:
        spatial_dims: 2 or 3.
        axis: slice direction, a spatial axis 0..spatial_dims - 1 (tensor dim 2 + axis).
        n_in: hi-res voxels along ``axis``.
        thickness: slice profile FWHM (hi-res voxels, or mm when ``voxel_size`` is given).
        spacing: distance between slice centres (same unit); ``thickness`` when None.
        offset: first slice centre, in hi-res voxels; when None, -1/2 + spacing / 2, so the
            first slab starts at the grid's edge.
        profile: "box", "triangle" or "gaussian" (FWHM = thickness for each).
        n_slices: number of slices; when None, every centre within the grid (p_j <= n_in - 1/2).
        voxel_size: hi-res voxel size along ``axis`` in mm; then thickness and spacing are mm.
        boundary: "renormalise" (default) or "zero"; see ``acquisition_matrix``.
        sampling: "integrate" (default) or "interpolate"; see ``acquisition_matrix``.
        sigma: measurement noise std, intensity units.
    """

    spatial_dims: int
    sigma: float
    linear: bool = True
    positions: Tensor  # buffers, declared for the type checker
    matrix: Tensor

    def __init__(
        self,
        spatial_dims: int,
        axis: int,
        n_in: int,
        thickness: float,
        spacing: float | None = None,
        offset: float | None = None,
        profile: Profile = "box",
        n_slices: int | None = None,
        voxel_size: float | None = None,
        boundary: Boundary = "renormalise",
        sampling: Sampling = "integrate",
        sigma: float = 0.05,
    ):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if not 0 <= axis < spatial_dims:
            raise ValueError(f"axis must be in 0..{spatial_dims - 1}, got {axis}")
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        scale = 1.0 if voxel_size is None else float(voxel_size)
        if scale <= 0:
            raise ValueError(f"voxel_size must be > 0, got {voxel_size}")
        self.spatial_dims = int(spatial_dims)
        self.axis = int(axis)
        self.n_in = int(n_in)
        self.thickness = float(thickness) / scale
        self.spacing = self.thickness if spacing is None else float(spacing) / scale
        if not self.spacing > 0:
            raise ValueError(f"spacing must be > 0, got {spacing}")
        self.offset = -0.5 + self.spacing / 2 if offset is None else float(offset)
        self.profile: Profile = profile
        self.boundary: Boundary = boundary
        self.sampling: Sampling = sampling
        self.sigma = float(sigma)
        if n_slices is None:
            n_slices = int(math.floor((self.n_in - 0.5 - self.offset) / self.spacing + 1e-9)) + 1
        if n_slices < 1:
            raise ValueError(f"no slice centre lies in the grid (offset {self.offset}, n {n_in})")
        self.n_slices = int(n_slices)
        positions = self.offset + self.spacing * torch.arange(self.n_slices, dtype=torch.float64)
        self.register_buffer("positions", positions)
        self.register_buffer(
            "matrix",
            acquisition_matrix(self.n_in, positions, self.thickness, profile, boundary, sampling),
        )

    def extra_repr(self) -> str:
        return (
            f"axis={self.axis}, n_in={self.n_in}, n_slices={self.n_slices}, "
            f"thickness={self.thickness:g}, spacing={self.spacing:g}, offset={self.offset:g}, "
            f"profile={self.profile!r}, sigma={self.sigma:g}"
        )

    def out_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """Spatial shape of y for an x of spatial shape ``shape``."""
        out = [int(n) for n in shape]
        out[self.axis] = self.n_slices
        return tuple(out)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, *S) -> y: (B, C, *S with S[axis] = n_slices)."""
        self._check(x, self.n_in, "x")
        return _apply_along(x, self.matrix, 2 + self.axis)

    def adjoint(self, y: Tensor) -> Tensor:
        """y: (B, C, *S_y) -> (B, C, *S): M^T along the axis."""
        self._check(y, self.n_slices, "y")
        return _apply_along(y, self.matrix.t(), 2 + self.axis)

    def observed(self, mask_in: Tensor | None = None) -> Tensor | None:
        """A slice is measured when none of the hi-res voxels it touches is unobserved."""
        if mask_in is None:
            return None
        missing = (mask_in <= 0).to(self.matrix.dtype)
        touched = _apply_along(missing, (self.matrix > 0).to(missing.dtype), 2 + self.axis)
        return (touched == 0).to(mask_in.dtype if mask_in.is_floating_point() else torch.float32)

    def _check(self, t: Tensor, n: int, name: str) -> None:
        if t.dim() != self.spatial_dims + 2 or t.shape[2 + self.axis] != n:
            raise ValueError(
                f"{name} must be (B, C, *S) with {n} voxels on spatial axis {self.axis}, "
                f"got {tuple(t.shape)}"
            )

    @classmethod
    def from_affines(
        cls,
        hr_affine: np.ndarray | Tensor,
        hr_shape: Sequence[int],
        lr_affine: np.ndarray | Tensor,
        lr_shape: Sequence[int],
        profile: Profile = "box",
        thickness: float | None = None,
        boundary: Boundary = "renormalise",
        sampling: Sampling = "integrate",
        sigma: float = 0.05,
        atol: float = 1e-3,
    ) -> SliceAcquisition:
        """The acquisition of a thick-slice scan (``lr_affine``, ``lr_shape``) from the prior's
        grid (``hr_affine``, ``hr_shape``), when they differ along exactly one axis.

        The affines are (d + 1, d + 1) voxel -> world (mm). Axis, spacing, offset and the number
        of slices come from the scan's voxel grid expressed in hi-res voxels; ``thickness`` (mm,
        e.g. from the DICOM header, which NIfTI does not store) defaults to the slice spacing.
        The in-plane grids must coincide; use ``acquisition_from_affines`` when they do not.
        Raises ValueError when the scan is oblique to, or reoriented relative to, the grid."""
        axes = _grid_relation(hr_affine, hr_shape, lr_affine, lr_shape, atol)
        differ = [a for a in axes if not a.same]
        if len(differ) != 1:
            raise ValueError(
                f"the scan differs from the prior's grid along {len(differ)} axes "
                f"({[a.axis for a in differ]}), not exactly one; resample it in-plane first or "
                "use acquisition_from_affines"
            )
        a = differ[0]
        return cls._for_axis(a, len(axes), profile, thickness, boundary, sampling, sigma)

    @classmethod
    def _for_axis(
        cls,
        a: _AxisRelation,
        spatial_dims: int,
        profile: Profile,
        thickness: float | None,
        boundary: Boundary,
        sampling: Sampling,
        sigma: float,
    ) -> SliceAcquisition:
        t = a.spacing if thickness is None else float(thickness) / a.hr_voxel_mm
        return cls(
            spatial_dims,
            a.axis,
            a.n_hr,
            thickness=t,
            spacing=a.spacing,
            offset=a.offset,
            profile=profile,
            n_slices=a.n_lr,
            boundary=boundary,
            sampling=sampling,
            sigma=sigma,
        )


@dataclass
class _AxisRelation:
    """How one axis of a scan's grid sits on the prior's grid, in hi-res voxels."""

    axis: int
    spacing: float  # scan voxel size / hi-res voxel size
    offset: float  # scan voxel 0's centre, in hi-res voxel coordinates
    n_hr: int
    n_lr: int
    hr_voxel_mm: float
    same: bool  # the grids coincide along this axis


def _grid_relation(
    hr_affine: np.ndarray | Tensor,
    hr_shape: Sequence[int],
    lr_affine: np.ndarray | Tensor,
    lr_shape: Sequence[int],
    atol: float,
) -> list[_AxisRelation]:
    hr = np.asarray(hr_affine, dtype=np.float64)
    lr = np.asarray(lr_affine, dtype=np.float64)
    d = hr.shape[0] - 1
    if hr.shape != (d + 1, d + 1) or lr.shape != hr.shape or d not in (2, 3):
        raise ValueError(f"affines must both be 3x3 (2D) or 4x4 (3D), got {hr.shape}, {lr.shape}")
    if len(hr_shape) != d or len(lr_shape) != d:
        raise ValueError(f"shapes must have {d} entries, got {hr_shape}, {lr_shape}")
    # Scan voxel index -> hi-res voxel index; axis-aligned and same orientation means diagonal
    # positive linear part (scan voxel sizes in hi-res voxels) plus a translation.
    rel = np.linalg.solve(hr, lr)
    lin, shift = rel[:d, :d], rel[:d, d]
    norms = np.linalg.norm(lin, axis=0)
    unit = lin / norms
    off_diag = np.abs(unit - np.diag(np.diag(unit))).max()
    if off_diag > atol:
        dominant = np.abs(unit).max(axis=0)
        if np.all(np.abs(dominant - 1.0) <= atol):
            raise ValueError(
                "the scan's axes are permuted relative to the prior's grid; reorient it to the "
                "prior's orientation (e.g. RAS) first"
            )
        angle = math.degrees(math.acos(min(1.0, float(np.abs(np.diag(unit)).min()))))
        raise ValueError(
            f"the scan is oblique to the prior's grid (up to {angle:.1f} degrees); only "
            "axis-aligned acquisitions are supported: resample the prior's grid to the scan's "
            "orientation"
        )
    if np.any(np.diag(unit) < 0):
        raise ValueError(
            "the scan's axes are flipped relative to the prior's grid; reorient it to the "
            "prior's orientation (e.g. RAS) first"
        )
    hr_mm = np.linalg.norm(hr[:d, :d], axis=0)
    out = []
    for a in range(d):
        spacing, offset = float(lin[a, a]), float(shift[a])
        n_hr, n_lr = int(hr_shape[a]), int(lr_shape[a])
        same = abs(spacing - 1.0) <= atol and abs(offset) <= atol and n_hr == n_lr
        out.append(_AxisRelation(a, spacing, offset, n_hr, n_lr, float(hr_mm[a]), same))
    return out


def acquisition_from_affines(
    hr_affine: np.ndarray | Tensor,
    hr_shape: Sequence[int],
    lr_affine: np.ndarray | Tensor,
    lr_shape: Sequence[int],
    profile: Profile = "box",
    thickness: float | None = None,
    boundary: Boundary = "renormalise",
    sampling: Sampling = "integrate",
    sigma: float = 0.05,
    atol: float = 1e-3,
) -> Operator:
    """The prior's grid -> an axis-aligned scan's grid, one ``SliceAcquisition`` per axis where
    they differ (composed; they commute), ``Identity`` where none does.

    ``thickness`` (mm) applies to the axis with the largest spacing (the slice direction); every
    other differing axis gets a profile as wide as its spacing (in-plane voxels as boxes).
    Same errors as ``SliceAcquisition.from_affines``."""
    axes = _grid_relation(hr_affine, hr_shape, lr_affine, lr_shape, atol)
    differ = [a for a in axes if not a.same]
    if not differ:
        return Identity(len(axes), sigma=sigma)
    slice_axis = max(differ, key=lambda a: a.spacing).axis
    ops = [
        SliceAcquisition._for_axis(
            a,
            len(axes),
            profile,
            thickness if a.axis == slice_axis else None,
            boundary,
            sampling,
            sigma,
        )
        for a in differ
    ]
    return ops[0] if len(ops) == 1 else Compose(*ops, sigma=sigma)


# ---- voxel-wise operators ---------------------------------------------------------------
