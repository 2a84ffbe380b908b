"""Cortical regions as per-vertex masks, for regional atrophy (``brainsynth atrophy --region``).

Two sources, the ones users have:
* a FreeSurfer annotation (``label/lh.aparc.annot``, per hemisphere, one label per vertex of the
  subject's own surfaces): the region is a structure name of its colour table ("precentral"), or
  its index in that table;
* a label volume in the surfaces' world space (a DLMUSE, SynthSeg or aparc+aseg map): the region is
  an integer label, and a pial vertex belongs to it when the voxel nearest to the midpoint of the
  vertex and its white counterpart (mid-thickness: inside the cortical ribbon, where a volumetric
  cortical parcel lives) carries that label. Without corresponded white vertices the pial vertex
  itself is sampled.

Errors name the file and list what it holds, so a typo shows the valid names at once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from brainsynth.errors import InputError
from brainsynth.io import Surface

ANNOT_NAMES = ("aparc.annot", "aparc.a2009s.annot", "aparc.DKTatlas.annot")


def find_annot(surfaces_dir: str | Path, hemi: str) -> Path | None:
    """``{hemi}.aparc.annot`` (or another FreeSurfer parcellation) in ``label/`` beside or above
    the surfaces folder, as FreeSurfer lays a subject out (``SUBJ/surf``, ``SUBJ/label``)."""
    d = Path(surfaces_dir)
    for base in (d, d / "label", d.parent / "label"):
        for name in ANNOT_NAMES:
            p = base / f"{hemi}.{name}"
            if p.is_file():
                return p
    return None


def mask_from_annot(path: str | Path, region: str, n_vertices: int) -> np.ndarray:
    """Boolean (n_vertices,) mask of ``region`` (a name of the annotation's colour table, case
    insensitive, or its index) in a FreeSurfer ``.annot`` file."""
    import nibabel.freesurfer as fs

    try:
        labels, _, names = fs.read_annot(str(path))
    except Exception as e:  # noqa: BLE001 - nibabel raises several kinds for a bad file
        raise InputError(path, f"not a readable FreeSurfer annotation ({e})") from e
    if labels.shape[0] != n_vertices:
        raise InputError(
            path, f"annotation has {labels.shape[0]} vertices, the surface {n_vertices}: "
            "not this subject's parcellation"
        )  # fmt: skip
    decoded = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    lower = [n.lower() for n in decoded]
    if region.lower() in lower:
        index = lower.index(region.lower())
    elif region.isdigit() and int(region) < len(decoded):
        index = int(region)
    else:
        raise InputError(path, f"no region {region!r}; it has: {', '.join(decoded)}")
    return labels == index


def mask_from_volume(
    volume_path: str | Path,
    data: np.ndarray,
    affine: np.ndarray,
    region: str,
    pial: Surface,
    white: Surface | None = None,
) -> np.ndarray:
    """Boolean mask of the pial vertices whose mid-thickness point (module docstring) falls on a
    voxel labelled ``region`` (an integer) in the label volume ``data`` with ``affine``."""
    try:
        label = int(region)
    except ValueError:
        raise InputError(
            volume_path, f"--region must be an integer label with a label volume, got {region!r}"
        ) from None
    if data.ndim != 3:
        raise InputError(volume_path, f"label volume must be 3D, got shape {data.shape}")
    points = pial.vertices
    if white is not None and white.n_vertices == pial.n_vertices:
        points = (pial.vertices + white.vertices) / 2
    to_voxel = np.linalg.inv(affine)
    ijk = np.rint(points @ to_voxel[:3, :3].T + to_voxel[:3, 3]).astype(np.int64)
    inside = ((ijk >= 0) & (ijk < np.asarray(data.shape))).all(1)
    if not inside.any():
        raise InputError(volume_path, "the surfaces lie outside this label volume (another space?)")
    mask = np.zeros(len(points), dtype=bool)
    i, j, k = ijk[inside].T
    mask[inside] = data[i, j, k] == label
    return mask


def region_masks(
    surfaces: dict[tuple[str, str], Surface],
    region: str,
    *,
    surfaces_dir: str | Path | None = None,
    region_map: str | Path | None = None,
) -> dict[str, np.ndarray]:
    """Per-hemisphere pial masks of ``region``: from ``region_map`` (a label volume, .nii/.nii.gz)
    or else the FreeSurfer annotations found next to ``surfaces_dir``. A region that no vertex of
    either hemisphere carries is an error."""
    masks: dict[str, np.ndarray] = {}
    labels = None
    if region_map is not None:
        from brainsynth.io import read_volume

        labels = (region_map, read_volume(region_map, dtype=None))
    for hemi in ("lh", "rh"):
        pial = surfaces.get((hemi, "pial"))
        if pial is None:
            continue
        if labels is not None:
            path, volume = labels
            masks[hemi] = mask_from_volume(
                path, np.asarray(volume.data), volume.affine, region, pial,
                surfaces.get((hemi, "white")),
            )  # fmt: skip
            continue
        annot = find_annot(surfaces_dir, hemi) if surfaces_dir is not None else None
        if annot is None:
            raise InputError(
                surfaces_dir, f"--region needs --region-map (a label volume) or FreeSurfer "
                f"annotations ({hemi}.aparc.annot in label/ beside the surfaces)"
            )  # fmt: skip
        masks[hemi] = mask_from_annot(annot, region, pial.n_vertices)
    if not any(m.any() for m in masks.values()):
        raise InputError(region_map or surfaces_dir, f"no pial vertex lies in region {region!r}")
    return masks
