"""Preprocessing as small pure steps on ``Volume``s, plus the record needed to map outputs back.

Every step returns a new Volume whose affine keeps the world (scanner mm) position of the anatomy:
a voxel's world coordinate before and after a step is the same point in the head.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import nibabel as nib
import numpy as np
from scipy import ndimage

from brainsynth.io import Volume


def reorient_ras(vol: Volume) -> Volume:
    """Permute/flip axes so that array axes point Right, Anterior, Superior (no interpolation)."""
    current = nib.orientations.io_orientation(vol.affine)
    target = nib.orientations.axcodes2ornt(("R", "A", "S"))
    xform = nib.orientations.ornt_transform(current, target)
    data = nib.orientations.apply_orientation(vol.data, xform)
    inv = nib.orientations.inv_ornt_aff(xform, vol.data.shape[:3])
    return Volume(np.ascontiguousarray(data), vol.affine @ inv)


def _grid_affine(affine: np.ndarray, old_shape, new_spacing, new_shape) -> np.ndarray:
    """Affine of a grid with ``new_spacing`` along the same axes whose FOV centre is unchanged."""
    old_spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    directions = affine[:3, :3] / old_spacing
    centre_vox = (np.asarray(old_shape[:3]) - 1) / 2.0
    centre_world = affine[:3, :3] @ centre_vox + affine[:3, 3]
    new = np.eye(4)
    new[:3, :3] = directions * np.asarray(new_spacing)
    new[:3, 3] = centre_world - new[:3, :3] @ ((np.asarray(new_shape) - 1) / 2.0)
    return new


def resample_to_grid(
    vol: Volume, affine: np.ndarray, shape: tuple[int, int, int], order: int = 1, cval: float = 0.0
) -> Volume:
    """Resample ``vol`` onto the grid (``affine``, ``shape``) through world coordinates."""
    vox = np.linalg.inv(vol.affine) @ affine  # target voxel -> source voxel
    data = ndimage.affine_transform(
        vol.data.astype(np.float32) if order > 0 else vol.data,
        vox[:3, :3],
        offset=vox[:3, 3],
        output_shape=tuple(shape),
        order=order,
        mode="constant",
        cval=cval,
        prefilter=order > 1,
    )
    return Volume(data, affine)


def resample(vol: Volume, spacing: float | tuple[float, float, float], order: int = 1) -> Volume:
    """Resample to ``spacing`` mm keeping the axes and the FOV centre (order 0 for label maps)."""
    sp = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,))
    if np.allclose(vol.spacing, sp, atol=1e-4):
        return vol
    extent = np.asarray(vol.shape[:3]) * vol.spacing
    shape = tuple(int(s) for s in np.maximum(np.round(extent / sp), 1).astype(int))
    return resample_to_grid(vol, _grid_affine(vol.affine, vol.shape, sp, shape), shape, order)


def mask_from_labels(labels: Volume, exclude: tuple[int, ...] = (0,)) -> Volume:
    """Brain mask: every labelled voxel not in ``exclude``."""
    mask = ~np.isin(labels.data, exclude)
    return labels.with_data(mask.astype(np.uint8))


def apply_mask(vol: Volume, mask: Volume) -> Volume:
    if not vol.same_grid(mask):
        raise ValueError("mask and image are not on the same grid")
    return vol.with_data(np.where(mask.data > 0, vol.data, 0).astype(vol.data.dtype))


def bbox_centre(mask: np.ndarray) -> np.ndarray:
    """Centre (voxel, float) of the bounding box of the non-zero voxels (grid centre if empty)."""
    idx = np.argwhere(mask > 0)
    if idx.size == 0:
        return (np.asarray(mask.shape[:3]) - 1) / 2.0
    return (idx.min(axis=0) + idx.max(axis=0)) / 2.0


def crop_pad(
    vol: Volume, shape: tuple[int, int, int], centre: np.ndarray | None = None, cval: float = 0.0
) -> Volume:
    """Crop/pad to ``shape`` around ``centre`` (voxel coords; grid centre by default), no resampling.

    The affine is translated so that every kept voxel stays at its world position.
    """
    shape = tuple(int(s) for s in shape)
    centre = (np.asarray(vol.shape[:3]) - 1) / 2.0 if centre is None else np.asarray(centre)
    start = np.round(centre - (np.asarray(shape) - 1) / 2.0).astype(int)
    out = np.full(shape + vol.data.shape[3:], cval, dtype=vol.data.dtype)
    src_lo = np.maximum(start, 0)
    src_hi = np.minimum(start + np.asarray(shape), vol.shape[:3])
    if np.all(src_hi > src_lo):
        dst_lo = src_lo - start
        dst_hi = dst_lo + (src_hi - src_lo)
        out[tuple(slice(a, b) for a, b in zip(dst_lo, dst_hi))] = vol.data[
            tuple(slice(a, b) for a, b in zip(src_lo, src_hi))
        ]
    shift = np.eye(4)
    shift[:3, 3] = start
    return Volume(out, vol.affine @ shift)


def normalise_intensity(
    vol: Volume, mask: Volume | None = None, low: float = 0.5, high: float = 99.5
) -> Volume:
    """Map the ``low``/``high`` percentiles of the (masked, non-zero) intensities to 0/1, clip."""
    data = vol.data.astype(np.float32)
    sel = data[mask.data > 0] if mask is not None else data[data > 0]
    if sel.size == 0:
        raise ValueError("no voxels to normalise (empty mask)")
    lo, hi = np.percentile(sel, [low, high])
    if hi <= lo:
        raise ValueError(f"degenerate intensity range [{lo}, {hi}]")
    out = np.clip((data - lo) / (hi - lo), 0.0, 1.0)
    if mask is not None:
        out = np.where(mask.data > 0, out, 0.0)
    return vol.with_data(out.astype(np.float32))


@dataclass
class PreprocessRecord:
    """What ``preprocess_subject`` did: enough to map a processed-grid output back (JSON-able)."""

    original_affine: list
    original_shape: list
    processed_affine: list
    processed_shape: list
    intensity_range: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessRecord:
        return cls(**d)


def to_original(vol: Volume, record: PreprocessRecord, order: int = 1) -> Volume:
    """Resample an output on the processed grid back onto the subject's original grid."""
    return resample_to_grid(
        vol, np.asarray(record.original_affine), tuple(record.original_shape), order=order
    )


def preprocess_subject(
    t1: Volume,
    labels: Volume | None = None,
    mask: Volume | None = None,
    spacing: float = 2.0,
    shape: tuple[int, int, int] = (96, 112, 96),
) -> tuple[Volume, Volume | None, PreprocessRecord]:
    """RAS -> resample -> mask -> crop/pad around the brain -> normalise to [0, 1].

    The brain mask comes from ``mask``, else from ``labels`` (> 0); without either the whole head
    is kept. Returns (image, labels or None, record).
    """
    for name, other in (("labels", labels), ("mask", mask)):
        if other is not None and not t1.same_grid(other):
            raise ValueError(f"{name} grid {other.shape} does not match the image grid {t1.shape}")
    img = resample(reorient_ras(t1), spacing, order=1)
    lab = resample(reorient_ras(labels), spacing, order=0) if labels is not None else None
    if mask is not None:
        brain = resample(reorient_ras(mask), spacing, order=0)
        brain = brain.with_data((brain.data > 0).astype(np.uint8))
    else:
        brain = mask_from_labels(lab) if lab is not None else None
    if brain is not None:
        img = apply_mask(img, brain)
    centre = bbox_centre(brain.data if brain is not None else img.data > 0)
    img = crop_pad(img, shape, centre)
    lab = crop_pad(lab, shape, centre) if lab is not None else None
    brain_c = crop_pad(brain, shape, centre) if brain is not None else None
    img = normalise_intensity(img, brain_c)
    record = PreprocessRecord(
        original_affine=t1.affine.tolist(),
        original_shape=list(t1.shape[:3]),
        processed_affine=img.affine.tolist(),
        processed_shape=list(img.shape[:3]),
    )
    return img, lab, record
