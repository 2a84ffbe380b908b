"""Volumes: voxels with their affine, read from and written to NIfTI (.nii, .nii.gz) and MGZ."""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from brainsynth.errors import InputError
from brainsynth.io.atomic import atomic_path

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".mgz", ".mgh")


@dataclass(frozen=True)
class Volume:
    """A 3D image: ``data`` (X, Y, Z) in voxel order and ``affine`` (4, 4) voxel -> world mm."""

    data: np.ndarray
    affine: np.ndarray

    def __post_init__(self) -> None:
        aff = np.asarray(self.affine, dtype=np.float64)
        if aff.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {aff.shape}")
        if abs(np.linalg.det(aff[:3, :3])) < 1e-12:
            raise ValueError("affine is singular")
        object.__setattr__(self, "affine", aff)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along each array axis (column norms of the affine's linear part)."""
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    @property
    def orientation(self) -> str:
        return "".join(nib.aff2axcodes(self.affine))

    def with_data(self, data: np.ndarray) -> Volume:
        """Same grid, new voxels (shape must match the spatial grid)."""
        if data.shape[:3] != self.data.shape[:3]:
            raise ValueError(f"shape {data.shape} does not match grid {self.data.shape[:3]}")
        return Volume(data, self.affine)

    def same_grid(self, other: Volume, atol: float = 1e-3) -> bool:
        return self.shape[:3] == other.shape[:3] and np.allclose(
            self.affine, other.affine, atol=atol
        )


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in VOLUME_SUFFIXES:
        if name.endswith(s):
            return s
    return path.suffix.lower()


def _diagnose(path: Path, err: Exception) -> str:
    """Say *why* nibabel failed: a broken gzip stream is the most common cause."""
    if path.name.lower().endswith(".gz") or _suffix(path) == ".mgz":
        try:
            with gzip.open(path, "rb") as fh:
                while fh.read(1 << 22):
                    pass
        except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as gz_err:
            return f"corrupt or truncated gzip data ({gz_err})"
    return f"cannot read as NIfTI/MGZ ({err})"


def read_volume(
    path: str | Path, *, ndim: int | None = 3, dtype: type | None = np.float32
) -> Volume:
    """Read a NIfTI/MGZ file; errors name the file and the problem.

    ``ndim=3`` also accepts a 4D file whose last axis has length 1 (squeezed). NaN/inf voxels are an
    error: a silent NaN poisons every downstream mean. ``dtype=None`` keeps the on-disk dtype
    (use it for label maps).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if _suffix(path) not in VOLUME_SUFFIXES:
        raise InputError(path, f"not a volume file (expected one of {', '.join(VOLUME_SUFFIXES)})")
    try:
        img = nib.load(str(path))
        if not isinstance(img, nib.spatialimages.SpatialImage):
            raise InputError(path, f"not a volume image ({type(img).__name__})")
        raw = np.asanyarray(img.dataobj)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise InputError(path, f"corrupt or truncated gzip data ({e})") from e
    except (nib.filebasedimages.ImageFileError, OSError, ValueError) as e:
        raise InputError(path, _diagnose(path, e)) from e
    if ndim == 3 and raw.ndim == 4 and raw.shape[3] == 1:
        raw = raw[..., 0]
    if ndim is not None and raw.ndim != ndim:
        raise InputError(path, f"expected a {ndim}D volume, got {raw.ndim}D with shape {raw.shape}")
    data = raw if dtype is None else raw.astype(dtype, copy=False)
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        n = int((~np.isfinite(data)).sum())
        raise InputError(path, f"{n} voxels are NaN or infinite")
    return Volume(np.ascontiguousarray(data), np.asarray(img.affine, dtype=np.float64))


_MGH_DTYPES = (np.uint8, np.int16, np.int32, np.float32)


def _storable(data: np.ndarray, suffix: str, path: Path) -> np.ndarray:
    """Cast to a dtype the format stores (NIfTI rejects int64 by default; MGH has 4 dtypes)."""
    if data.dtype == bool:
        return data.astype(np.uint8)
    if data.dtype == np.float64 or (suffix in (".mgz", ".mgh") and data.dtype.kind == "f"):
        return data.astype(np.float32)
    wide_int = data.dtype.kind in "iu" and data.dtype.itemsize == 8
    if wide_int or (suffix in (".mgz", ".mgh") and data.dtype.type not in _MGH_DTYPES):
        if data.dtype.kind in "iu":
            info = np.iinfo(np.int32)
            if data.size and (data.min() < info.min or data.max() > info.max):
                raise InputError(path, f"integer values {data.min()}..{data.max()} exceed int32")
            return data.astype(np.int32)
    return data


def write_volume(volume: Volume, path: str | Path, *, dtype: type | None = None) -> Path:
    """Write ``volume`` atomically; the format follows the suffix (.nii, .nii.gz, .mgz).

    Units are millimetres; NIfTI gets the affine as both qform and sform (code 1, scanner).
    """
    path = Path(path)
    suffix = _suffix(path)
    data = volume.data if dtype is None else volume.data.astype(dtype)
    data = _storable(np.asarray(data), suffix, path)
    if suffix in (".mgz", ".mgh"):
        img: nib.spatialimages.SpatialImage = nib.MGHImage(data, volume.affine)
    elif suffix in (".nii", ".nii.gz"):
        img = nib.Nifti1Image(data, volume.affine)
        img.set_qform(volume.affine, code=1)
        img.set_sform(volume.affine, code=1)
        img.header.set_xyzt_units("mm", "sec")
    else:
        raise InputError(path, f"unknown volume format (use one of {', '.join(VOLUME_SUFFIXES)})")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path
