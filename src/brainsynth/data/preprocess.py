"""Preprocessing as small pure steps on ``Volume``s, plus the record needed to map outputs back.

Every step returns a new Volume whose affine keeps the anatomy where it is in world (scanner mm)
space: the world coordinate of a structure is the same before and after each step, so outputs on the
processed grid overlay the original scan in a viewer once mapped back with ``to_original``.

``preprocess_subject`` composes them: RAS -> resample -> skull-strip -> crop/pad around the brain
-> robust [0, 1] intensities.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import NamedTuple

import nibabel as nib
import numpy as np
from scipy import ndimage

from brainsynth.data.labels import LabelScheme, detect_scheme, intracranial_mask
from brainsynth.io import Volume

Spacing = float | tuple[float, float, float]


def reorient_ras(vol: Volume) -> Volume:
    """Permute/flip array axes to point Right, Anterior, Superior (no interpolation, exact affine)."""
    current = nib.orientations.io_orientation(vol.affine)
    xform = nib.orientations.ornt_transform(current, nib.orientations.axcodes2ornt("RAS"))
    data = nib.orientations.apply_orientation(vol.data, xform)
    inv = nib.orientations.inv_ornt_aff(xform, vol.data.shape[:3])
    return Volume(np.ascontiguousarray(data), vol.affine @ inv)


def _centred_grid(affine: np.ndarray, old_shape, spacing: np.ndarray, new_shape) -> np.ndarray:
    """Affine with ``spacing`` along the same axes as ``affine`` whose FOV centre is unchanged."""
    old_spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    new = np.eye(4)
    new[:3, :3] = affine[:3, :3] / old_spacing * spacing
    centre_world = affine[:3, :3] @ ((np.asarray(old_shape[:3]) - 1) / 2.0) + affine[:3, 3]
    new[:3, 3] = centre_world - new[:3, :3] @ ((np.asarray(new_shape) - 1) / 2.0)
    return new


def resample_to_grid(
    vol: Volume,
    affine: np.ndarray,
    shape: tuple[int, ...],
    order: int = 1,
    cval: float = 0.0,
) -> Volume:
    """Sample ``vol`` on the grid (``affine``, ``shape``) through world coordinates.

    ``order`` 0 (nearest, keeps the dtype: label maps), 1 (linear) or 3 (cubic spline). A voxel
    covers half a voxel either side of its centre: target points within the source's outer voxels
    take their values; points beyond get ``cval``.
    """
    vox = np.linalg.inv(vol.affine) @ np.asarray(affine, dtype=np.float64)  # target -> source
    out_shape = tuple(int(s) for s in shape[:3])

    def sample(data: np.ndarray, order: int, mode: str, cval: float = 0.0) -> np.ndarray:
        return ndimage.affine_transform(
            data, vox[:3, :3], offset=vox[:3, 3], output_shape=out_shape, order=order,
            mode=mode, cval=cval, prefilter=order > 1,
        )  # fmt: skip

    if order == 0:
        return Volume(sample(vol.data, 0, "grid-constant", cval), np.asarray(affine, np.float64))
    out = sample(vol.data.astype(np.float32, copy=False), order, "nearest")
    inside = sample(np.ones(vol.shape[:3], np.uint8), 0, "grid-constant")
    out[inside == 0] = cval
    return Volume(out, np.asarray(affine, dtype=np.float64))


def resample(vol: Volume, spacing: Spacing, order: int = 1, antialias: bool = True) -> Volume:
    """Resample to ``spacing`` mm along the same axes, keeping the FOV centre in world space.

    Use ``order=0`` for label maps. When downsampling an image (``order > 0``) it is first smoothed
    with a Gaussian of sigma ``(factor - 1) / 2`` source voxels per axis, so that thin bright
    structures are averaged rather than aliased.
    """
    sp = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,))
    if np.any(sp <= 0):
        raise ValueError(f"spacing must be positive, got {spacing}")
    if np.allclose(vol.spacing, sp, rtol=0, atol=1e-4):
        return vol
    extent = np.asarray(vol.shape[:3]) * vol.spacing
    shape = tuple(int(s) for s in np.maximum(np.round(extent / sp), 1))
    src = vol
    sigma = np.maximum((sp / vol.spacing - 1.0) / 2.0, 0.0)
    if order > 0 and antialias and np.any(sigma > 0):
        smoothed = ndimage.gaussian_filter(vol.data.astype(np.float32), sigma, mode="nearest")
        src = Volume(smoothed, vol.affine)
    return resample_to_grid(src, _centred_grid(vol.affine, vol.shape, sp, shape), shape, order)


def mask_from_labels(labels: Volume, scheme: LabelScheme | None = None) -> Volume:
    """Intracranial (brain + CSF) mask as uint8 0/1 from a label map; head tissue labels excluded."""
    return labels.with_data(intracranial_mask(labels.data, scheme).astype(np.uint8))


def foreground_mask(vol: Volume) -> Volume:
    """Head foreground without labels: Otsu threshold, largest component, holes filled."""
    from skimage.filters import threshold_otsu

    data = vol.data.astype(np.float32, copy=False)
    fg = data > threshold_otsu(data) if np.ptp(data) > 0 else np.zeros(data.shape, bool)
    lab, n = ndimage.label(fg)
    if n > 1:
        sizes = np.bincount(lab.ravel())[1:]
        fg = lab == 1 + int(np.argmax(sizes))
    return vol.with_data(ndimage.binary_fill_holes(fg).astype(np.uint8))


def apply_mask(vol: Volume, mask: Volume) -> Volume:
    """Zero every voxel outside ``mask`` (same grid required)."""
    if not vol.same_grid(mask):
        raise ValueError(f"mask grid {mask.shape} does not match the image grid {vol.shape}")
    return vol.with_data(np.where(mask.data > 0, vol.data, 0).astype(vol.data.dtype))


def bbox_centre(mask: np.ndarray) -> np.ndarray:
    """Centre (float voxel coordinates) of the bounding box of non-zero voxels; grid centre if none."""
    idx = np.argwhere(np.asarray(mask) > 0)
    if idx.size == 0:
        return (np.asarray(mask.shape[:3]) - 1) / 2.0
    return (idx.min(axis=0) + idx.max(axis=0)) / 2.0


def crop_pad(
    vol: Volume,
    shape: tuple[int, int, int],
    center_mask: Volume | np.ndarray | None = None,
    *,
    centre: np.ndarray | tuple[float, float, float] | None = None,
    cval: float = 0.0,
) -> Volume:
    """Crop and/or pad to ``shape`` (no resampling) around a centre, affine translated to match.

    The centre is ``centre`` (voxel coordinates) if given, else the bounding-box centre of
    ``center_mask`` (e.g. the brain mask), else the grid centre. Every kept voxel stays at its
    world position; padding uses ``cval``.
    """
    size = tuple(int(s) for s in shape)
    if centre is None:
        m = center_mask.data if isinstance(center_mask, Volume) else center_mask
        centre = bbox_centre(m) if m is not None else (np.asarray(vol.shape[:3]) - 1) / 2.0
    start = np.floor(np.asarray(centre, float) - (np.asarray(size) - 1) / 2.0 + 0.5).astype(int)
    out = np.full(size + vol.data.shape[3:], cval, dtype=vol.data.dtype)
    lo = np.maximum(start, 0)
    hi = np.minimum(start + np.asarray(size), vol.shape[:3])
    if np.all(hi > lo):
        dst = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start))
        out[dst] = vol.data[tuple(slice(a, b) for a, b in zip(lo, hi))]
    shift = np.eye(4)
    shift[:3, 3] = start
    return Volume(out, vol.affine @ shift)


def robust_range(
    data: np.ndarray, mask: np.ndarray | None = None, low: float = 0.5, high: float = 99.5
) -> tuple[float, float]:
    """``low``/``high`` percentiles of the voxels in ``mask`` (of the non-zero voxels if None)."""
    if not 0 <= low < high <= 100:
        raise ValueError(f"need 0 <= low < high <= 100, got {low}, {high}")
    sel = data[mask > 0] if mask is not None else data[data != 0]
    if sel.size == 0:
        what = "the brain mask is empty" if mask is not None else "the image is all zero"
        raise ValueError(f"no voxels to normalise: {what}")
    lo, hi = (float(v) for v in np.percentile(sel, [low, high]))
    if not hi > lo:
        raise ValueError(f"flat intensities: the {low}/{high} percentiles are both {lo}")
    return lo, hi


def normalise_intensity(
    vol: Volume, mask: Volume | None = None, low: float = 0.5, high: float = 99.5
) -> Volume:
    """Map the ``low``/``high`` percentiles inside ``mask`` to 0/1 and clip to [0, 1] (float32).

    Voxels outside ``mask`` become 0. Without a mask the percentiles come from the non-zero voxels.
    """
    m = None if mask is None else mask.data
    lo, hi = robust_range(vol.data, m, low, high)
    out = np.clip((vol.data.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)
    if m is not None:
        out = np.where(m > 0, out, 0.0)
    return vol.with_data(out.astype(np.float32))


@dataclass
class PreprocessRecord:
    """What ``preprocess_subject`` did, enough to map processed-grid outputs back (JSON-able)."""

    original_affine: list
    original_shape: list
    processed_affine: list
    processed_shape: list
    original_orientation: str = ""
    spacing: list = field(default_factory=list)
    intensity_range: list = field(default_factory=list)  # source values mapped to 0 and 1
    percentiles: list = field(default_factory=list)
    mask_source: str = "none"  # "labels", "mask", or "foreground" (no skull stripping)
    label_scheme: str | None = None
    mask_voxels_cropped: int = 0  # brain-mask voxels outside the output grid (0: nothing lost)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def to_original(
    volume: Volume | np.ndarray, record: PreprocessRecord, order: int = 1, cval: float = 0.0
) -> Volume:
    """Resample an output on the processed grid onto the subject's original grid (world space).

    ``volume`` may be a bare array on the processed grid. The result has the original shape and
    affine, so it overlays the original scan. Use ``order=0`` for labels.
    """
    if not isinstance(volume, Volume):
        arr = np.asarray(volume)
        if arr.shape[:3] != tuple(record.processed_shape):
            raise ValueError(
                f"array shape {arr.shape} is not the processed grid {record.processed_shape}"
            )
        volume = Volume(arr, np.asarray(record.processed_affine))
    return resample_to_grid(
        volume, np.asarray(record.original_affine), tuple(record.original_shape), order, cval
    )


def denormalise_intensity(volume: Volume, record: PreprocessRecord) -> Volume:
    """Map [0, 1] intensities back to the source scale recorded by ``preprocess_subject``."""
    lo, hi = record.intensity_range
    return volume.with_data((volume.data.astype(np.float32) * (hi - lo) + lo).astype(np.float32))


class Preprocessed(NamedTuple):
    image: Volume
    labels: Volume | None
    record: PreprocessRecord


def _brain_mask(
    img: Volume,
    lab: Volume | None,
    mask: Volume | None,
    spacing: Spacing,
    scheme: LabelScheme | None,
) -> tuple[Volume, str, LabelScheme | None]:
    if mask is not None:
        m = resample(reorient_ras(mask), spacing, order=0)
        return m.with_data((m.data > 0).astype(np.uint8)), "mask", None
    if lab is not None:
        scheme = scheme or detect_scheme(lab.data)
        return mask_from_labels(lab, scheme), "labels", scheme
    fg = foreground_mask(img)
    if not fg.data.any():  # Otsu finds no head in a constant image
        raise ValueError(
            f"no head to find: every voxel of the image is {float(img.data.flat[0]):g}"
        )
    return fg, "foreground", None


def preprocess_subject(
    t1: Volume,
    labels: Volume | None = None,
    spacing: Spacing = 2.0,
    shape: tuple[int, int, int] = (96, 112, 96),
    *,
    mask: Volume | None = None,
    low: float = 0.5,
    high: float = 99.5,
    scheme: LabelScheme | None = None,
) -> Preprocessed:
    """RAS -> resample -> skull-strip -> crop/pad around the brain -> [0, 1]; returns (image, labels, record).

    The brain mask is ``mask`` if given, else the intracranial labels of ``labels``. Without either,
    nothing is stripped: a head foreground mask (Otsu) only centres the crop and sets percentiles.
    ``labels`` and ``mask`` must be on the T1's grid.
    """
    for name, other in (("labels", labels), ("mask", mask)):
        if other is not None and not t1.same_grid(other):
            raise ValueError(
                f"{name} grid {other.shape} does not match the image grid {t1.shape} "
                "(shape or affine differ)"
            )
    img = resample(reorient_ras(t1), spacing, order=1)
    lab = resample(reorient_ras(labels), spacing, order=0) if labels is not None else None
    brain, source, scheme = _brain_mask(img, lab, mask, spacing, scheme)
    if source != "foreground":
        img = apply_mask(img, brain)
    centre = bbox_centre(brain.data)
    img = crop_pad(img, shape, centre=centre)
    lab = crop_pad(lab, shape, centre=centre) if lab is not None else None
    brain_c = crop_pad(brain, shape, centre=centre)
    lo, hi = robust_range(img.data, brain_c.data, low, high)
    out = np.clip((img.data.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)
    if source != "foreground":
        out = np.where(brain_c.data > 0, out, 0.0).astype(np.float32)
    record = PreprocessRecord(
        original_affine=t1.affine.tolist(),
        original_shape=list(t1.shape[:3]),
        processed_affine=img.affine.tolist(),
        processed_shape=list(img.shape[:3]),
        original_orientation=t1.orientation,
        spacing=[float(s) for s in np.broadcast_to(spacing, (3,))],
        intensity_range=[lo, hi],
        percentiles=[low, high],
        mask_source=source,
        label_scheme=scheme,
        mask_voxels_cropped=int((brain.data > 0).sum() - (brain_c.data > 0).sum()),
    )
    return Preprocessed(img.with_data(out), lab, record)
