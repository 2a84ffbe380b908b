"""Where a scan meets the prior: the prior's grid placed on the scan, the scan brought onto that
grid in-plane (its slices kept where they were acquired), and the acquisition between them.

Notation
    scan      the input, reoriented to RAS (an exact permutation/flip of its voxels); its axes
              u_1..u_3 (unit columns of its affine) may be oblique to the world
    P         the prior's grid: the scan's axes at the prior's spacing h, ``info.padded_shape``
              voxels, centred on the scan's field of view ("header": the scan is assumed to hold
              the brain where a prepared cache image does, as the ``degrade`` outputs do) or on
              the bounding box of its brain mask ("centre"). Being on the scan's own axes, every
              scan axis is parallel to a prior axis, so the acquisition is axis-aligned by
              construction (the training images were made the same way: RAS, the subject's own
              axes, a box centred on the brain)
    a         the slice axis: the scan axis with the largest voxel size, if it exceeds the
              smallest by ``ANISOTROPY`` (else the scan is treated as isotropic)
    G         the measurement grid: P in-plane, the scan's own slice centres along a (those
              whose centre lies on P). The scan is resampled onto G in-plane only (linear, after
              a Gaussian anti-alias when its in-plane voxels are finer than h); along a the
              sample points are the acquired slice centres, so no value is interpolated
              between slices
    A         ``SliceAcquisition`` from P to G along a (profile of FWHM = the slice thickness,
              from the BIDS sidecar's ``SliceThickness`` or the slice spacing)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from brainsynth.data.preprocess import resample_to_grid
from brainsynth.io import Volume

#: a scan whose largest voxel side exceeds its smallest by this factor has thick slices
ANISOTROPY = 1.3


def axes(vol: Volume) -> np.ndarray:
    """(3, 3) unit columns: the directions of the voxel axes in world space."""
    lin = vol.affine[:3, :3]
    return lin / np.linalg.norm(lin, axis=0)


def slice_axis(vol: Volume) -> int | None:
    """The thick-slice axis of a scan (largest voxel side), or None for a near-isotropic one."""
    sp = vol.spacing
    a = int(np.argmax(sp))
    return a if sp[a] > ANISOTROPY * float(sp.min()) else None


def prior_affine(vol: Volume, spacing: float, shape: tuple[int, ...], centre: np.ndarray):
    """(4, 4) affine of a grid on ``vol``'s axes at ``spacing`` mm whose ``shape`` box is centred
    on the world point ``centre``."""
    lin = axes(vol) * float(spacing)
    aff = np.eye(4)
    aff[:3, :3] = lin
    aff[:3, 3] = np.asarray(centre, float) - lin @ ((np.asarray(shape, float) - 1) / 2)
    return aff


def fov_centre(vol: Volume) -> np.ndarray:
    """World coordinates of the centre of the scan's field of view."""
    return vol.affine[:3, :3] @ ((np.asarray(vol.shape[:3], float) - 1) / 2) + vol.affine[:3, 3]


def mask_centre(mask: Volume) -> np.ndarray:
    """World coordinates of the centre of the mask's bounding box."""
    idx = np.argwhere(mask.data > 0)
    mid = (idx.min(0) + idx.max(0)) / 2.0
    return mask.affine[:3, :3] @ mid + mask.affine[:3, 3]


@dataclass
class Geometry:
    """The prior's grid on a scan and the measurement grid between them (see module notes)."""

    prior_affine: np.ndarray  # (4, 4), grid ``prior_shape``
    prior_shape: tuple[int, int, int]  # the network's (padded) grid
    grid_affine: np.ndarray  # G
    grid_shape: tuple[int, int, int]
    axis: int | None  # slice axis a, None for an isotropic scan (G = P)
    slice_spacing: float  # mm along a (the prior's spacing when isotropic)


def place(scan: Volume, spacing: float, shape: tuple[int, int, int], centre: np.ndarray):
    """The :class:`Geometry` of a RAS ``scan`` for a prior of ``spacing`` mm on ``shape``."""
    p_aff = prior_affine(scan, spacing, shape, centre)
    a = slice_axis(scan)
    if a is None:
        return Geometry(p_aff, shape, p_aff, shape, None, float(spacing))
    rel = np.linalg.solve(p_aff, scan.affine)  # scan voxel -> prior voxel (diagonal + shift)
    step, start = float(rel[a, a]), float(rel[a, 3])
    n = shape[a]
    j = np.arange(scan.shape[a])
    pos = start + step * j
    keep = j[(pos >= -0.5) & (pos <= n - 0.5)]
    if keep.size == 0:
        raise ValueError("no slice of the scan lies on the prior's grid")
    t = np.eye(4)
    t[a, a] = step
    t[a, 3] = start + step * int(keep[0])
    g_shape = list(shape)
    g_shape[a] = int(keep.size)
    return Geometry(
        p_aff, shape, p_aff @ t, (g_shape[0], g_shape[1], g_shape[2]), a, float(scan.spacing[a])
    )


def box_weights(n: int, positions: np.ndarray, width: float) -> np.ndarray:
    """(len(positions), n): the fraction of a box of ``width`` voxels centred on each position
    covered by each voxel [i - 1/2, i + 1/2] (zero beyond the grid: the background)."""
    i = np.arange(n, dtype=np.float64)[None, :]
    p = np.asarray(positions, np.float64)[:, None]
    overlap = np.minimum(i + 0.5, p + width / 2) - np.maximum(i - 0.5, p - width / 2)
    return np.clip(overlap, 0.0, None) / width


def to_grid(scan: Volume, affine: np.ndarray, shape: tuple[int, ...], order: int = 1) -> Volume:
    """``scan`` on the grid (``affine``, ``shape``). Along every axis where the grid is coarser,
    each grid voxel is the mean of the scan over its footprint (a box as wide as the grid voxel:
    what the prior's average-pooled training images are), so a grid axis-aligned with the scan
    reads exactly the pooled scan; the rest is linear interpolation. A grid oblique to the scan
    gets a Gaussian anti-alias (sigma = (ratio - 1) / 2 scan voxels, as ``prepare``) instead.
    ``order`` 0 samples the nearest voxel (labels, masks)."""
    if order == 0:
        return resample_to_grid(scan, affine, tuple(shape), order=0)
    rel = np.linalg.solve(scan.affine, np.asarray(affine, float))  # grid voxel -> scan voxel
    data = scan.data.astype(np.float32, copy=False)
    if np.abs(rel[:3, :3] - np.diag(np.diag(rel[:3, :3]))).max() > 1e-6:
        ratio = np.linalg.norm(affine[:3, :3], axis=0) / scan.spacing
        if np.any(ratio > 1.01):
            sig = np.where(ratio > 1.01, (ratio - 1) / 2, 0.0)
            data = ndimage.gaussian_filter(data, sig, mode="nearest")
        return resample_to_grid(scan.with_data(data), affine, tuple(shape), order=order)
    inter = np.eye(4)
    for a in range(3):
        step = float(rel[a, a])
        if step > 1.01:
            m = box_weights(data.shape[a], rel[a, 3] + step * np.arange(shape[a]), step)
            data = np.moveaxis(np.tensordot(m, np.moveaxis(data, a, 0), axes=1), 0, a)
            inter[a, a], inter[a, 3] = step, rel[a, 3]
    out = Volume(np.ascontiguousarray(data, dtype=np.float32), scan.affine @ inter)
    return resample_to_grid(out, affine, tuple(shape), order=order)
