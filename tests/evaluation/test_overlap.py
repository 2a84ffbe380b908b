"""Dice of major structures: analytic cases, the structure tables, a real DLMUSE map (IXI)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from brainsynth.evaluation import overlap as ov


def test_dice_identical_disjoint_empty():
    a = np.zeros((6, 6, 6), bool)
    a[1:3, 1:3, 1:3] = True
    b = np.zeros_like(a)
    b[4:6, 4:6, 4:6] = True
    assert ov.dice(a, a) == 1.0
    assert ov.dice(a, b) == 0.0
    assert np.isnan(ov.dice(np.zeros_like(a), np.zeros_like(a)))
    assert ov.dice(a, np.zeros_like(a)) == 0.0


def test_dice_offset_cubes_analytic():
    # two n^3 cubes offset by one voxel along one axis: overlap (n-1) n^2, Dice = (n-1)/n
    n = 5
    a = np.zeros((10, 10, 10), bool)
    b = np.zeros_like(a)
    a[2 : 2 + n, 2 : 2 + n, 2 : 2 + n] = True
    b[3 : 3 + n, 2 : 2 + n, 2 : 2 + n] = True
    assert ov.dice(a, b) == pytest.approx((n - 1) / n)


def test_dice_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(2, 2\).*\(3, 3\)"):
        ov.dice(np.ones((2, 2), bool), np.ones((3, 3), bool))


def _dlmuse_phantom() -> np.ndarray:
    """A label map with one block per DLMUSE structure (two leaves each), so detection says
    dlmuse: the cortex and WM blocks are the largest."""
    lab = np.zeros((40, 20, 20), np.int16)
    lab[0:10] = 100  # cortex
    lab[10:20] = 81  # WM
    for i, v in enumerate((51, 47, 59, 36, 57, 38)):  # ventricle, hippo, thalamus, ...
        lab[20 + 3 * i : 23 + 3 * i, :10] = v
    return lab


def test_structure_dice_identical_and_disjoint():
    a = _dlmuse_phantom()
    d = ov.structure_dice(a, a)
    assert set(d) == {*ov.STRUCTURES, "mean"}
    assert all(v == 1.0 for v in d.values())
    # b: every non-WM/cortex structure moved to the other half of its slab -> Dice 0
    b = a.copy()
    b[20:, :10], b[20:, 10:] = a[20:, 10:], a[20:, :10]
    d = ov.structure_dice(a, b, scheme="dlmuse")
    assert d["grey_matter"] == 1.0 and d["white_matter"] == 1.0
    for s in ("ventricles", "hippocampus", "thalamus", "caudate", "putamen", "cerebellum"):
        assert d[s] == 0.0
    assert d["mean"] == pytest.approx(2 / 8)


def test_structure_dice_mean_skips_absent_structures():
    a = np.zeros((10, 10, 10), np.int16)
    a[:5] = 3  # FreeSurfer cortex
    a[5:] = 2  # FreeSurfer WM
    b = a.copy()
    b[4] = 2
    d = ov.structure_dice(a, b)  # detected: freesurfer
    assert np.isnan(d["hippocampus"])
    assert d["grey_matter"] == pytest.approx(2 * 400 / 900)
    assert d["white_matter"] == pytest.approx(2 * 500 / 1100)
    assert d["mean"] == pytest.approx((d["grey_matter"] + d["white_matter"]) / 2)


def test_structure_dice_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 4, 4\).*\(4, 4, 5\)"):
        ov.structure_dice(np.zeros((4, 4, 4), int), np.zeros((4, 4, 5), int), scheme="dlmuse")


@pytest.mark.parametrize("scheme", ["dlmuse", "freesurfer"])
def test_structure_sets_non_empty_and_disjoint(scheme):
    sets = ov.MAJOR_STRUCTURES[scheme]
    assert tuple(sets) == ov.STRUCTURES
    assert all(len(v) > 0 for v in sets.values())
    for (n1, s1), (n2, s2) in itertools.combinations(sets.items(), 2):
        assert not s1 & s2, f"{n1} and {n2} share labels {sorted(s1 & s2)}"


def test_dlmuse_tables():
    skipped = {110, 111, 126, 127, 130, 131, 158, 159, 188, 189}  # unused DLMUSE numbers
    assert ov.DLMUSE_CORTEX == frozenset(range(100, 208)) - skipped
    assert ov.DLMUSE_CEREBRAL_WM == frozenset(range(81, 96))
    assert ov.MAJOR_STRUCTURES["freesurfer"]["ventricles"] == frozenset({4, 5, 14, 15, 43, 44})


@pytest.mark.shared
def test_ixi_dlmuse_structures_present_with_plausible_volumes(shared_data):
    import pandas as pd

    from brainsynth.data import labels as lab
    from brainsynth.io import read_volume

    dl = shared_data / "ixi" / "derivatives" / "dlmuse"
    table = pd.read_csv(dl / "volumes.tsv", sep="\t", index_col=0)
    sid = str(table.index[0])
    vol = read_volume(dl / sid / "anat" / f"{sid}_dseg.nii.gz", dtype=None)
    assert lab.detect_scheme(vol.data) == "dlmuse"
    vv = lab.voxel_volume(vol.affine)
    ml = {
        name: float(lab.in_labels(vol.data, values).sum()) * vv / 1000.0
        for name, values in ov.MAJOR_STRUCTURES["dlmuse"].items()
    }
    for side in (47, 48):  # each hippocampus
        assert 2.0 < (vol.data == side).sum() * vv / 1000.0 < 6.0
    assert 5.0 < ml["ventricles"] < 100.0
    assert 300.0 < ml["grey_matter"] < 900.0
    assert 250.0 < ml["white_matter"] < 800.0
    assert 80.0 < ml["cerebellum"] < 250.0
    for s in ("thalamus", "caudate", "putamen"):
        assert 3.0 < ml[s] < 30.0, (s, ml[s])
    # the tables agree with DLMUSE's own ROI volumes (mm^3)
    row = table.loc[sid]
    assert ml["ventricles"] * 1000 == pytest.approx(row["509"])
    assert ml["cerebellum"] * 1000 == pytest.approx(row["502"])
    lobar_gm = sum(row[c] for c in ("404", "406", "407", "409", "411"))
    assert ml["grey_matter"] * 1000 == pytest.approx(lobar_gm)
    d = ov.structure_dice(vol.data, vol.data)
    assert all(d[s] == 1.0 for s in ov.STRUCTURES)
