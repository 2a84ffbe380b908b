"""Volumes: voxels with their affine, read from and written to NIfTI (.nii, .nii.gz) and MGZ."""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.freesurfer.mghformat import MGHError, MGHHeader
from nibabel.spatialimages import HeaderDataError, SpatialHeader

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


class AssumedSpacingWarning(UserWarning):
    """A file gave no voxel size and ``read_volume(..., assume_spacing=MM)`` used ``MM`` instead."""


_GZIP_MAGIC = b"\x1f\x8b"
_HEAD_BYTES = 1024  # more than any fixed header: NIfTI-1 348, NIfTI-2 540, MGH 284 bytes
_MAX_DEFLATE_RATIO = 1032  # deflate never expands one byte into more than ~1032
_IMAGE_CLASSES: dict[type, type] = {
    nib.Nifti1Header: nib.Nifti1Image,
    nib.Nifti2Header: nib.Nifti2Image,
    MGHHeader: nib.MGHImage,
}
# What nibabel raises for a file that is not what its header says. MemoryError is not among them:
# reading is bounded by the declared size, checked first, so it would say nothing about the file.
_NIBABEL_ERRORS = (ImageFileError, HeaderDataError, MGHError, OSError, ValueError, EOFError)


class _Stored(NamedTuple):
    """A file's header as stored (nibabel's silent fixes not applied) and the voxels it declares."""

    header: SpatialHeader
    shape: tuple[int, ...]
    dtype: np.dtype
    end: int  # byte where the declared voxels end: the file must be at least this long

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def declares(self) -> str:
        return f"the header declares shape {self.shape} of {self.dtype} ({_size(self.nbytes)})"


def _size(n: float) -> str:
    """``n`` bytes for people: 352 bytes, 65.5 kB, 4 TB."""
    if n < 1000:
        return f"{n:.0f} bytes"
    for unit in ("kB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000 or unit == "TB":
            break
    return f"{n:.3g} {unit}"


def _available_memory() -> int | None:
    """Bytes free for new allocations: Linux's MemAvailable, else the physical RAM, else None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _parse_header(path: Path, head: bytes) -> _Stored:
    """The header at the start of ``head`` (the file's first bytes, gunzipped), parsed with
    ``check=False``: nibabel's checks would silently turn a voxel size of 0 into 1 mm."""
    if not head:
        raise InputError(path, "empty file")
    header: SpatialHeader
    try:
        if _suffix(path) in (".mgz", ".mgh"):
            header = MGHHeader(binaryblock=head, check=False)
        else:
            kinds = (nib.Nifti1Header, nib.Nifti2Header)
            klass = next((k for k in kinds if k.may_contain_header(head)), None)
            if klass is None:
                raise InputError(path, "not a NIfTI file (no NIfTI-1 or NIfTI-2 header)")
            header = klass(binaryblock=head[: klass.sizeof_hdr], check=False)
        shape = tuple(int(d) for d in header.get_data_shape())
        dtype = np.dtype(header.get_data_dtype())
        start = max(int(header.get_data_offset()), getattr(header, "sizeof_hdr", 0))
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - nibabel raises many types for a bad header
        raise InputError(path, f"invalid header ({type(e).__name__}: {e})") from e
    if not shape or min(shape) < 1:
        raise InputError(path, f"the header declares shape {shape}: no voxels")
    return _Stored(header, shape, dtype, start + math.prod(shape) * dtype.itemsize)


def _check_declared(path: Path, stored: _Stored, gz: bool) -> None:
    """Refuse a declared size the file cannot hold or memory cannot take, before reading it (a
    corrupt header declaring 10000^3 voxels would otherwise end in a bare MemoryError)."""
    size = path.stat().st_size
    if not gz and size < stored.end:
        raise InputError(
            path, f"truncated: {stored.declares()} ending at byte {stored.end}, "
            f"but the file has {size} bytes",
        )  # fmt: skip
    if gz and stored.end > size * _MAX_DEFLATE_RATIO:
        raise InputError(
            path, f"{stored.declares()}, more than a gzip file of {_size(size)} can hold: "
            "the header is corrupt or the file truncated",
        )  # fmt: skip
    need = 2 * stored.end  # the file's content and the array read from it, at once
    available = _available_memory()
    if available is not None and need > available:
        raise InputError(
            path, f"{stored.declares()}; reading it needs about {_size(need)}, more than the "
            f"{_size(available)} of memory available (a corrupt header, or too large a volume)",
        )  # fmt: skip


def _gzip_problem(err: Exception) -> str:
    if isinstance(err, EOFError):
        return "the file ends before the end of the compressed stream"
    return str(err)  # e.g. "CRC check failed 0x5e1d != 0x9c2b", "invalid distance too far back"


def _read_file(path: Path) -> tuple[_Stored, bytes]:
    """The header and the whole content (gunzipped when the file is gzip, whatever its name).

    The declared size is checked against the file and the memory before the content is read. A
    gzip stream is read to its end, where gzip checks the CRC and length: nibabel stops after the
    voxels, so a stream corrupted in the middle would pass with its voxels garbled.
    """
    try:
        with open(path, "rb") as raw:
            gz = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            with gzip.GzipFile(fileobj=raw) if gz else contextlib.nullcontext(raw) as fh:
                stored = _parse_header(path, fh.read(_HEAD_BYTES))
                _check_declared(path, stored, gz)
                fh.seek(0)  # re-reads only the header: the data is decompressed once
                content = fh.read()
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:  # BadGzipFile is an OSError: first
        raise InputError(path, f"corrupt or truncated gzip data ({_gzip_problem(e)})") from e
    except OSError as e:
        raise InputError(path, f"cannot read the file ({e.strerror or e})") from e
    if len(content) < stored.end:
        where = "the decompressed data ends" if gz else "the file ends"
        raise InputError(
            path, f"truncated: {stored.declares()}, but {where} at byte {len(content)}"
        )
    return stored, content


def _voxel_size_problem(header: SpatialHeader) -> str | None:
    """Why a NIfTI header gives no voxel size, or None. Without an sform, both the qform and the
    bare fallback scale by pixdim[1:4]; nibabel would quietly read a 0 as 1 mm and a negative
    (an ANALYZE-era flip) as its absolute value."""
    if not isinstance(header, nib.Nifti1Header) or header["sform_code"] > 0:
        return None
    pixdim = np.asarray(header["pixdim"][1:4], dtype=np.float64)
    has_qform = header["qform_code"] > 0
    bad = ~np.isfinite(pixdim) | (pixdim == 0) | ((pixdim < 0) & (not has_qform))
    if not bad.any():
        return None
    shown = ", ".join(f"{v:g}" for v in pixdim)
    if has_qform:
        return f"voxel size unknown: pixdim is ({shown}) and there is no sform"
    return f"voxel size unknown: pixdim is ({shown}) and there is no qform/sform"


def _assumed_affine(header: SpatialHeader, spacing: float) -> np.ndarray:
    """The affine nibabel would build if the header said ``spacing`` mm voxels."""
    hdr = header.copy()
    zooms = hdr.get_zooms()
    hdr.set_zooms((spacing,) * 3 + tuple(zooms[3:]))
    return hdr.get_best_affine()


def _checked_affine(path: Path, affine: np.ndarray) -> np.ndarray:
    affine = np.asarray(affine, dtype=np.float64)
    if not np.isfinite(affine).all():
        raise InputError(path, "the affine (qform/sform) holds NaN or infinite values")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(path, "the affine (qform/sform) is singular: a voxel size or axis is 0")
    return affine


@contextlib.contextmanager
def _nibabel_quiet(quiet: bool) -> Iterator[None]:
    """Silence nibabel's header-fix messages (disabled, not handler-less: Python would then print
    them through its last-resort handler)."""
    logger = nib.imageglobals.logger
    was = logger.disabled
    logger.disabled = was or quiet
    try:
        yield
    finally:
        logger.disabled = was


def _load(
    path: Path, stored: _Stored, content: bytes, assume_spacing: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """(voxels as stored, scaled; affine) of a file whose size was checked."""
    problem = _voxel_size_problem(stored.header)
    if problem is not None and assume_spacing is None:
        raise InputError(path, f"{problem} (prepare takes --assume-spacing MM if you know it)")
    try:
        with _nibabel_quiet(problem is not None):  # it would log its own fix (0 read as 1 mm)
            img = _IMAGE_CLASSES[type(stored.header)].from_bytes(content)  # type: ignore[attr-defined]
        raw = np.asanyarray(img.dataobj)
    except _NIBABEL_ERRORS as e:
        raise InputError(path, f"cannot read as NIfTI/MGZ ({e})") from e
    affine = img.affine
    if problem is not None and assume_spacing is not None:
        affine = _assumed_affine(img.header, assume_spacing)
        msg = f"{path}: {problem}: assuming {assume_spacing:g} mm isotropic voxels"
        warnings.warn(msg, AssumedSpacingWarning, stacklevel=3)
    return raw, _checked_affine(path, affine)


def read_volume(
    path: str | Path,
    *,
    ndim: int | None = 3,
    dtype: type | None = np.float32,
    assume_spacing: float | None = None,
) -> Volume:
    """Read a NIfTI/MGZ file; errors name the file and the problem.

    ``ndim=3`` also accepts a 4D file whose last axis has length 1 (squeezed), and refuses an axis
    of length 1 (a slice or a point is not a 3D volume). NaN/inf voxels are an error: a silent NaN
    poisons every downstream mean. ``dtype=None`` keeps the on-disk dtype (use it for label maps).
    Gzip data is checked whole (CRC and length), and the size the header declares against the file
    and the memory first. A NIfTI file with no voxel size (pixdim 0 and no qform/sform) is an error
    unless ``assume_spacing`` (mm, isotropic) is given: then that is used, with an
    :class:`AssumedSpacingWarning`.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if _suffix(path) not in VOLUME_SUFFIXES:
        raise InputError(path, f"not a volume file (expected one of {', '.join(VOLUME_SUFFIXES)})")
    if assume_spacing is not None and not (math.isfinite(assume_spacing) and assume_spacing > 0):
        raise InputError(None, f"assume_spacing must be a finite number > 0, got {assume_spacing}")
    stored, content = _read_file(path)
    raw, affine = _load(path, stored, content, assume_spacing)
    del content  # the array is a copy: free the file's bytes before the dtype cast below
    if ndim == 3 and raw.ndim == 4 and raw.shape[3] == 1:
        raw = raw[..., 0]
    if ndim is not None and raw.ndim != ndim:
        raise InputError(path, f"expected a {ndim}D volume, got {raw.ndim}D with shape {raw.shape}")
    if ndim == 3 and min(raw.shape) < 2:
        raise InputError(
            path,
            f"degenerate shape {raw.shape}: a 3D volume needs at least 2 voxels along each axis",
        )
    data = raw if dtype is None else raw.astype(dtype, copy=False)
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        n = int((~np.isfinite(data)).sum())
        raise InputError(path, f"{n} voxels are NaN or infinite")
    return Volume(np.ascontiguousarray(data), affine)


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
