"""A given template instead of the training set's mean (``data.template``): nilearn's MNI152 2009
("mni152", with FreeSurfer-numbered tissue labels made the way the phantom cohort makes its own)
or any skull-stripped T1w NIfTI (its label map beside it, ``*_dseg.nii.gz`` for ``*_T1w.nii.gz``,
used when present).

Placement follows the cache's own convention (brain-centred grids): the template is translated so
that the bounding-box centre of its brain (voxels > 0) lands on the centre of the run's pooled
cache grid, then resampled there (linear; labels nearest). Intensities are mapped like the
cache's: the brain's 0.5 / 99.5 percentiles to 0 / 1, clipped. Every training subject is then
registered affinely to it (``template.align_split``), as to the built template.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from brainsynth.data.preprocess import bbox_centre, resample_to_grid, robust_range
from brainsynth.errors import InputError
from brainsynth.io import Volume, read_volume

MNI152 = "mni152"


def _placed(vol: Volume, grid_affine: np.ndarray, shape: tuple[int, ...], order: int,
            brain_centre_world: np.ndarray) -> np.ndarray:  # fmt: skip
    """``vol`` resampled on the grid after the translation that puts ``brain_centre_world`` at
    the grid's centre."""
    grid_centre = grid_affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0) + grid_affine[:3, 3]
    shift = np.eye(4)
    shift[:3, 3] = grid_centre - brain_centre_world
    return resample_to_grid(Volume(vol.data, shift @ vol.affine), grid_affine, shape, order).data


def _mni152(spacing: float) -> tuple[Volume, Volume]:
    """MNI152 2009 T1 and its label map (FreeSurfer numbering: cerebral cortex and WM, deep
    nuclei, lateral ventricles, cerebellum, brainstem, CSF) at ``spacing`` mm, from the nilearn
    wheel's files (``data.phantom_template``)."""
    from brainsynth.data.phantom_subject import label_map, subject_maps
    from brainsynth.data.phantom_template import load_template, world_coords

    tmpl = load_template(spacing)
    maps, t1 = subject_maps(tmpl, 0.0)
    xyz = world_coords(tmpl.shape, tmpl.affine)
    regions = {"cerebrum": tmpl.cerebrum, "deep": tmpl.deep}
    labels = label_map(maps, regions, xyz[0], xyz[1])
    t1 = np.where(tmpl.brain > 0.5, t1, 0.0).astype(np.float32)
    return Volume(t1, tmpl.affine), Volume(labels, tmpl.affine)


def _from_file(path: Path) -> tuple[Volume, Volume | None]:
    t1 = read_volume(path)
    if t1.data.ndim != 3:
        raise InputError(path, f"a template must be a 3D volume, got shape {t1.data.shape}")
    name = path.name
    labels = None
    for suffix in ("_T1w.nii.gz", "_T1w.nii"):
        if name.endswith(suffix):
            dseg = path.with_name(name[: -len(suffix)] + "_dseg" + suffix[len("_T1w") :])
            if dseg.is_file():
                labels = read_volume(dseg, dtype=None)
                if labels.data.shape != t1.data.shape or not np.allclose(
                    labels.affine, t1.affine, atol=1e-3
                ):
                    raise InputError(dseg, f"label map on another grid than {path.name}")
    return t1, labels


def given_template(
    spec: str, grid_affine: np.ndarray, shape: tuple[int, int, int]
) -> tuple[Volume, Volume | None]:
    """(template in [0, 1], its labels or None) of ``spec`` ("mni152" or a NIfTI path) on the
    grid ``(grid_affine, shape)`` (module docstring)."""
    spacing = float(np.sqrt((grid_affine[:3, :3] ** 2).sum(0)).mean())
    labels: Volume | None
    if spec == MNI152:
        t1, labels = _mni152(min(max(spacing, 0.5), 8.0))
        where: str | Path = MNI152
    else:
        where = Path(spec)
        if not where.is_file():
            raise InputError(where, "template not found (data.template: built, mni152 or a path)")
        t1, labels = _from_file(where)
    brain = np.asarray(t1.data) > 0
    if not brain.any():
        raise InputError(where, "the template is empty (no voxel > 0)")
    centre = t1.affine[:3, :3] @ bbox_centre(brain) + t1.affine[:3, 3]
    lo, hi = robust_range(np.asarray(t1.data, dtype=np.float64), brain.astype(np.uint8))
    scaled = Volume(np.clip((t1.data - lo) / (hi - lo), 0, 1).astype(np.float32), t1.affine)
    scaled = scaled.with_data(np.where(brain, scaled.data, 0).astype(np.float32))
    image = Volume(_placed(scaled, grid_affine, shape, 1, centre).astype(np.float32), grid_affine)
    dseg = None
    if labels is not None:
        lab = _placed(labels, grid_affine, shape, 0, centre)
        dseg = Volume(np.rint(lab).astype(np.int16), grid_affine)
    return image, dseg
