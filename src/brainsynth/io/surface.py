"""Surfaces: triangle meshes in world mm, read from and written to GIfTI and FreeSurfer binary files.

FreeSurfer binary surfaces (lh.pial, rh.white, ...) store vertices in "tkregister" space; when the
file carries volume geometry, its ``cras`` is added so that ``Surface.vertices`` are scanner/world
coordinates like GIfTI's, and subtracted again on write.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.freesurfer import io as fsio

from brainsynth.errors import InputError
from brainsynth.io.atomic import atomic_path

GIFTI_SUFFIXES = (".gii", ".gii.gz")


@dataclass(frozen=True)
class Surface:
    """Triangle mesh: ``vertices`` (N, 3) float world mm, ``faces`` (M, 3) int vertex indices."""

    vertices: np.ndarray
    faces: np.ndarray
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        v = np.asarray(self.vertices, dtype=np.float64)
        f = np.asarray(self.faces)
        validate_mesh(v, f)
        object.__setattr__(self, "vertices", v)
        object.__setattr__(self, "faces", f.astype(np.int64))

    @property
    def n_vertices(self) -> int:
        return int(self.vertices.shape[0])

    def transformed(self, matrix: np.ndarray) -> Surface:
        """Apply a 4x4 affine to the vertices."""
        v = self.vertices @ matrix[:3, :3].T + matrix[:3, 3]
        return Surface(v, self.faces, dict(self.meta))


def validate_mesh(vertices: np.ndarray, faces: np.ndarray, path: str | Path | None = None) -> None:
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise InputError(path, f"vertices must be (N, 3), got {vertices.shape}")
    if vertices.shape[0] == 0:
        raise InputError(path, "empty mesh: no vertices")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise InputError(path, f"faces must be triangles (M, 3), got shape {faces.shape}")
    if faces.shape[0] == 0:
        raise InputError(path, "empty mesh: no faces")
    if not np.isfinite(vertices).all():
        raise InputError(path, "vertices contain NaN or infinite coordinates")
    if faces.min() < 0 or faces.max() >= vertices.shape[0]:
        raise InputError(
            path,
            f"face indices out of range [0, {vertices.shape[0]}): {faces.min()}..{faces.max()}",
        )


_GIFTI_SURF = re.compile(r"hemi-(?P<hemi>[LR])_(?:.*_)?(?P<kind>pial|white)\.surf\.gii$")
_FS_SURF = re.compile(r"^(?P<hemi>lh|rh)\.(?P<kind>pial|white)$")


def surface_key(name: str) -> tuple[str, str] | None:
    """``(hemi, kind)`` ("lh"/"rh", "pial"/"white") of a surface file name, BIDS GIfTI
    (``*hemi-L_pial.surf.gii``, also with entities between) or FreeSurfer (``lh.pial``); None for
    any other name."""
    m = _GIFTI_SURF.search(name) or _FS_SURF.match(name)
    if m is None:
        return None
    return {"L": "lh", "R": "rh"}.get(m["hemi"], m["hemi"]), m["kind"]


def _is_gifti(path: Path) -> bool:
    return path.name.lower().endswith(GIFTI_SUFFIXES)


def _read_gifti(path: Path) -> Surface:
    if path.name.lower().endswith(".gz"):
        with gzip.open(path, "rb") as fh:
            img: nib.filebasedimages.FileBasedImage = nib.gifti.GiftiImage.from_bytes(fh.read())
    else:
        img = nib.load(str(path))
    if not isinstance(img, nib.gifti.GiftiImage):
        raise InputError(path, f"not a GIfTI image ({type(img).__name__})")
    pts = [d for d in img.darrays if d.intent == nib.nifti1.intent_codes["NIFTI_INTENT_POINTSET"]]
    tri = [d for d in img.darrays if d.intent == nib.nifti1.intent_codes["NIFTI_INTENT_TRIANGLE"]]
    if not pts:
        raise InputError(path, "GIfTI file has no POINTSET array (not a surface?)")
    if not tri:
        raise InputError(path, "GIfTI file has no TRIANGLE array (a point cloud, not a mesh)")
    v = np.asarray(pts[0].data, dtype=np.float64)
    f = np.asarray(tri[0].data)
    validate_mesh(v, f, path)
    return Surface(v, f, {"format": "gifti"})


def _read_freesurfer(path: Path) -> Surface:
    try:
        v, f, info = fsio.read_geometry(str(path), read_metadata=True)
    except ValueError as e:
        raise InputError(path, f"cannot read as FreeSurfer surface ({e})") from e
    v = np.asarray(v, dtype=np.float64)
    f = np.asarray(f)
    validate_mesh(v, f, path)
    cras = np.asarray(info.get("cras", np.zeros(3)), dtype=np.float64) if info else np.zeros(3)
    return Surface(v + cras, f, {"format": "freesurfer", "volume_info": info})


def read_surface(path: str | Path) -> Surface:
    """Read a GIfTI (.gii, .surf.gii, .gii.gz) or FreeSurfer binary surface (lh.pial, ...)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    try:
        return _read_gifti(path) if _is_gifti(path) else _read_freesurfer(path)
    except InputError:
        raise
    except (OSError, EOFError, ValueError, Exception) as e:  # nibabel raises many types
        raise InputError(path, f"cannot read surface ({type(e).__name__}: {e})") from e


def write_surface(surface: Surface, path: str | Path) -> Path:
    """Write atomically: GIfTI for .gii names, FreeSurfer binary otherwise."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if _is_gifti(path):
            if path.name.lower().endswith(".gz"):
                raise InputError(path, "write plain .gii (gzip GIfTI writing is not supported)")
            img = nib.gifti.GiftiImage()
            img.add_gifti_data_array(
                nib.gifti.GiftiDataArray(
                    surface.vertices.astype(np.float32), intent="NIFTI_INTENT_POINTSET"
                )
            )
            img.add_gifti_data_array(
                nib.gifti.GiftiDataArray(
                    surface.faces.astype(np.int32), intent="NIFTI_INTENT_TRIANGLE"
                )
            )
            nib.save(img, str(tmp))
        else:
            info = surface.meta.get("volume_info") or {}
            cras = np.asarray(info.get("cras", np.zeros(3)), dtype=np.float64) if info else 0.0
            kwargs = {"volume_info": info} if info else {}
            fsio.write_geometry(
                str(tmp), (surface.vertices - cras).astype(np.float32), surface.faces, **kwargs
            )
    return path
