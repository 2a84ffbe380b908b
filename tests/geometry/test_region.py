"""Regions for regional atrophy: FreeSurfer annotations and label volumes as vertex masks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from brainsynth.errors import InputError
from brainsynth.geometry.region import (
    find_annot,
    mask_from_annot,
    mask_from_volume,
    region_masks,
)
from brainsynth.io import Surface

sys.path.insert(0, str(Path(__file__).parent))

from mesh_helpers import unit_sphere  # noqa: E402


def _sphere(radius: float, n: int = 200) -> Surface:
    u, f = unit_sphere(n)
    return Surface(u * radius, f, {})


def _write_annot(path, labels: np.ndarray, names: list[str]) -> None:
    import nibabel.freesurfer as fs

    ctab = np.array([[20 * i, 10, 30, 0, 0] for i in range(len(names))], dtype=np.int32)
    ctab[:, 4] = ctab[:, 0] + ctab[:, 1] * 2**8 + ctab[:, 2] * 2**16
    fs.write_annot(str(path), labels.astype(np.int32), ctab, names, fill_ctab=False)


def test_annotation_names_select_their_vertices_case_insensitively(tmp_path):
    pial = _sphere(10)
    labels = (pial.vertices[:, 2] > 0).astype(int)  # 1 = upper half
    (tmp_path / "label").mkdir()
    _write_annot(tmp_path / "label" / "lh.aparc.annot", labels, ["unknown", "precentral"])
    annot = find_annot(tmp_path / "surf", "lh")
    assert annot == tmp_path / "label" / "lh.aparc.annot"
    mask = mask_from_annot(annot, "PreCentral", pial.n_vertices)
    np.testing.assert_array_equal(mask, labels == 1)
    np.testing.assert_array_equal(mask_from_annot(annot, "0", pial.n_vertices), labels == 0)
    with pytest.raises(InputError, match="no region 'insula'; it has: unknown, precentral"):
        mask_from_annot(annot, "insula", pial.n_vertices)
    with pytest.raises(InputError, match="not this subject"):
        mask_from_annot(annot, "precentral", pial.n_vertices + 1)
    with pytest.raises(InputError, match="lh.aparc.annot in label/"):
        region_masks({("lh", "pial"): pial}, "precentral", surfaces_dir=tmp_path / "x" / "surf")


def test_a_label_volume_is_sampled_at_mid_thickness():
    # pial radius 10, white radius 6: mid-thickness at radius 8. The volume labels 3 the voxels
    # with x > 0 and radius in [7, 9], so only vertices with x > 0 are in, whatever the pial says.
    pial, white = _sphere(10), _sphere(6)
    aff = np.diag([0.5, 0.5, 0.5, 1.0])
    aff[:3, 3] = -15
    ijk = np.stack(np.meshgrid(*[np.arange(61)] * 3, indexing="ij"), -1)
    xyz = ijk * 0.5 - 15
    r = np.linalg.norm(xyz, axis=-1)
    data = np.where((xyz[..., 0] > 0) & (r > 7) & (r < 9), 3, 0)
    mask = mask_from_volume("v.nii.gz", data, aff, "3", pial, white)
    np.testing.assert_array_equal(mask, pial.vertices[:, 0] > 0.3)  # nearest voxel, x > 0
    assert not mask_from_volume("v.nii.gz", data, aff, "3", pial).any()  # pial itself: radius 10
    with pytest.raises(InputError, match="v.nii.gz: --region must be an integer label"):
        mask_from_volume("v.nii.gz", data, aff, "hippocampus", pial, white)
    far = Surface(pial.vertices + 1000, pial.faces, {})
    with pytest.raises(InputError, match="outside this label volume"):
        mask_from_volume("v.nii.gz", data, aff, "3", far)


def test_regional_atrophy_moves_the_region_only(tmp_path):
    from brainsynth.methods.cortex.atrophy import atrophied

    pial, white = _sphere(10), _sphere(7)
    surfaces = {("lh", "pial"): pial, ("lh", "white"): white,
                ("rh", "pial"): _sphere(10), ("rh", "white"): _sphere(7)}  # fmt: skip
    mask = pial.vertices[:, 2] > 0
    after, change = atrophied(surfaces, 1.0, {"lh": mask}, taper_rings=0)
    moved = np.linalg.norm(after["lh", "pial"].vertices, axis=1)
    np.testing.assert_allclose(moved[mask], 9.0)
    np.testing.assert_array_equal(after["lh", "pial"].vertices[~mask], pial.vertices[~mask])
    assert after["rh", "pial"] is surfaces["rh", "pial"]  # no mask for rh: untouched
    assert change == pytest.approx({"lh": -1.0})
