"""The embedded phantom cohort: valid BIDS, diffeomorphic and invertible warps, age-driven
ventricles, determinism, surfaces that stay in the brain. Everything at 4 mm."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy import ndimage
from scipy.stats import spearmanr

from brainsynth.data.datasets import load_subjects
from brainsynth.data.labels import brain_mask, label_volumes
from brainsynth.data.phantom_field import Deformation, invert_points, source_flow
from brainsynth.data.phantom_surfaces import fit_affine, signed_distance, vertex_normals
from brainsynth.data.phantom_template import load_template
from brainsynth.data.phantoms import (
    PhantomOptions,
    make_cohort,
    make_subject,
    subject_surfaces,
)
from brainsynth.errors import InputError
from brainsynth.io import read_surface, read_volume
from brainsynth.registration.fields import (
    identity_grid,
    jacobian_determinant,
    random_velocity,
    sample,
    scaling_and_squaring,
)

SPACING = 4.0
FS_LABELS = {0, 2, 3, 4, 7, 8, 10, 11, 12, 16, 24, 41, 42, 43, 46, 47, 49, 50, 51}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantoms") / "bids"
    return make_cohort(out, n=12, spacing=SPACING, seed=1, progress=False)


@pytest.fixture(scope="module")
def subject():
    return make_subject(3, seed=0, spacing=SPACING)  # an old subject with large ventricles


def _rows(cohort):
    with open(cohort / "participants.tsv", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_cohort_is_bids(cohort):
    desc = json.loads((cohort / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "raw" and desc["BIDSVersion"] and desc["Name"]
    deriv = json.loads((cohort / "derivatives/phantom/dataset_description.json").read_text())
    assert deriv["DatasetType"] == "derivative"
    rows = _rows(cohort)
    assert list(rows[0]) == ["participant_id", "age", "sex", "brain_mm3", "ventricles_mm3"]
    assert [r["participant_id"] for r in rows] == [f"sub-ph{i:03d}" for i in range(1, 13)]
    subjects = load_subjects(cohort)  # the project's own BIDS reader finds images and labels
    assert len(subjects) == 12 and all(s.labels is not None for s in subjects)
    for s in subjects[:3]:
        t1, lab = read_volume(s.t1), read_volume(s.labels, dtype=None)
        assert t1.data.ndim == 3 and t1.orientation == "RAS" and t1.same_grid(lab)
        assert np.allclose(t1.spacing, SPACING)
        assert set(np.unique(lab.data).tolist()) <= FS_LABELS
        assert {2, 3, 4, 24, 41, 42, 43} <= set(np.unique(lab.data).tolist())
        assert t1.data[lab.data == 2].mean() > t1.data[np.isin(lab.data, (3, 42))].mean()
        assert t1.data[np.isin(lab.data, (3, 42))].mean() > t1.data[lab.data == 4].mean()


def test_hemispheres_split_at_midline(cohort):
    lab = read_volume(
        cohort / "derivatives/phantom/sub-ph001/anat/sub-ph001_dseg.nii.gz", dtype=None
    )
    x = lab.affine[0, 0] * np.arange(lab.shape[0]) + lab.affine[0, 3]
    left = np.isin(lab.data, (2, 3, 4)).sum(axis=(1, 2))
    right = np.isin(lab.data, (41, 42, 43)).sum(axis=(1, 2))
    assert (x[left > 0]).mean() < -10 and (x[right > 0]).mean() > 10


def test_volumes_are_measured_on_the_labels(cohort):
    for row in _rows(cohort):
        sid = row["participant_id"]
        lab = read_volume(cohort / f"derivatives/phantom/{sid}/anat/{sid}_dseg.nii.gz", dtype=None)
        vol = label_volumes(lab.data, lab.affine, "freesurfer")
        assert float(row["brain_mm3"]) == pytest.approx(vol["brain_volume"], abs=1)
        assert float(row["ventricles_mm3"]) == pytest.approx(vol["ventricle_volume"], abs=1)
        assert 0.9e6 < vol["brain_volume"] < 1.9e6  # adult brains (IXI: 1.0-1.7 L)
        assert 4e3 < vol["ventricle_volume"] < 1.2e5


def test_age_drives_ventricles(cohort):
    rows = _rows(cohort)
    ages = [float(r["age"]) for r in rows]
    vents = [float(r["ventricles_mm3"]) for r in rows]
    assert spearmanr(ages, vents).statistic > 0.5
    sexes = {r["sex"] for r in rows}
    assert sexes <= {"F", "M"} and all(20 <= a <= 85 for a in ages)


def test_deterministic_and_independent_of_cohort_size(cohort, tmp_path):
    again = make_cohort(tmp_path / "a", n=1, spacing=SPACING, seed=1, progress=False)
    for rel in (
        "sub-ph001/anat/sub-ph001_T1w.nii.gz",
        "derivatives/phantom/sub-ph001/anat/sub-ph001_dseg.nii.gz",
    ):
        assert (again / rel).read_bytes() == (cohort / rel).read_bytes()
    coarse, fine = make_subject(1, seed=1, spacing=8.0), make_subject(1, seed=1, spacing=SPACING)
    pts = np.random.default_rng(0).uniform(-60, 60, (50, 3))
    assert coarse.traits == fine.traits  # the spacing changes the grid, not the anatomy
    np.testing.assert_array_equal(
        coarse.deformation.to_template(pts), fine.deformation.to_template(pts)
    )
    other = make_subject(1, seed=2, spacing=SPACING)
    assert not np.array_equal(
        other.t1.data, read_volume(cohort / "sub-ph001/anat/sub-ph001_T1w.nii.gz").data
    )


@pytest.mark.parametrize(
    "options", [PhantomOptions(), PhantomOptions(ventricle_growth=2.5, warp_mm=8)]
)
def test_deformation_is_diffeomorphic(options):
    tmpl = load_template(SPACING)
    for index in (3, 4):  # both old, large ventricles
        d = make_subject(index, seed=0, spacing=SPACING, options=options).deformation
        u = d.voxel_map(tmpl.shape, tmpl.affine) - identity_grid(tmpl.shape)
        assert jacobian_determinant(u).min() > 0  # no folding anywhere on the output grid
        assert jacobian_determinant(d.disp).min() > 0  # nor on the control grid


def test_inverse_is_consistent(subject):
    tmpl = load_template(SPACING)
    u = subject.deformation.voxel_map(tmpl.shape, tmpl.affine) - identity_grid(tmpl.shape)
    grid = identity_grid(tmpl.shape).reshape(3, -1).T
    q, residual = invert_points(u, grid)  # the dense inverse, by the same fixed-point iteration
    assert residual < 1e-3
    w = (q - grid).T.reshape(u.shape)
    g = identity_grid(tmpl.shape)
    roi = ndimage.binary_dilation(subject.labels.data > 0, iterations=2)
    fwd_inv = np.linalg.norm(w + sample(u, g + w), axis=0)[roi]  # phi(phi^-1(x)) - x
    inv_fwd = np.linalg.norm(u + sample(w, g + u), axis=0)[roi]  # phi^-1(phi(x)) - x
    assert fwd_inv.max() < 0.5 and inv_fwd.max() < 0.5  # voxels
    pts = (tmpl.affine[:3, :3] @ np.argwhere(roi)[::9].T).T + tmpl.affine[:3, 3]
    d = subject.deformation
    assert np.abs(d.to_subject(d.to_template(pts)) - pts).max() < 0.05  # mm
    assert np.abs(d.to_template(d.to_subject(pts)) - pts).max() < 0.05


def test_surfaces_lie_in_the_brain(subject):
    surfs = subject_surfaces(subject)
    lab = subject.labels
    brain = ndimage.binary_dilation(brain_mask(lab.data, "freesurfer"), iterations=1)
    inv = np.linalg.inv(lab.affine)
    for hemi in ("L", "R"):
        pial, white = surfs[hemi, "pial"], surfs[hemi, "white"]
        assert pial.n_vertices == white.n_vertices == 10242
        ijk = np.rint(pial.vertices @ inv[:3, :3].T + inv[:3, 3]).astype(int)
        assert brain[tuple(ijk.T)].mean() > 0.95
        side = np.sign(pial.vertices[:, 0].mean())
        assert side == (-1 if hemi == "L" else 1)
        thickness = (
            (pial.vertices - white.vertices) * vertex_normals(white.vertices, white.faces)
        ).sum(1)
        assert (thickness > 0).mean() > 0.95  # white inside pial
        assert 1.0 < np.median(thickness) < 4.0  # mm, after the subject's scaling and atrophy


def test_cli_writes_cohort_with_surfaces(tmp_path):
    from typer.testing import CliRunner

    from brainsynth.cli.main import app

    out = tmp_path / "p"
    args = ["phantoms", "--out", str(out), "-n", "1", "--spacing", "4", "--surfaces", "--quiet"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    anat = out / "derivatives/phantom/sub-ph001/anat"
    for hemi in "LR":
        for kind in ("pial", "white"):
            s = read_surface(anat / f"sub-ph001_hemi-{hemi}_{kind}.surf.gii")
            assert s.n_vertices == 10242
    subjects = load_subjects(out)
    assert set(subjects[0].surfaces) == {"lh_pial", "lh_white", "rh_pial", "rh_white"}
    assert len(_rows(out)) == 1


def test_rewriting_a_cohort_replaces_it(tmp_path):
    out = make_cohort(tmp_path / "c", n=2, spacing=SPACING, seed=0, surfaces=True, progress=False)
    with pytest.raises(InputError, match="--overwrite"):  # two cohorts never mix by accident
        make_cohort(out, n=1, spacing=SPACING, seed=5, progress=False)
    make_cohort(out, n=1, spacing=SPACING, seed=5, progress=False, overwrite=True)
    assert sorted(p.name for p in out.glob("sub-*")) == ["sub-ph001"]
    assert not list(out.glob("derivatives/phantom/sub-ph001/anat/*.surf.gii"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a phantom cohort"):
        make_cohort(other, n=1, spacing=SPACING, progress=False, overwrite=True)
    assert (other / "notes.txt").read_text() == "mine"


def test_source_flow_has_prescribed_divergence():
    src = np.zeros((24, 26, 22))
    src[8:16, 10:16, 8:14] = 1.0
    v = source_flow(src, halo_sigma=3.0)
    div = sum(np.gradient(v[i])[i] for i in range(3))
    assert div[10:14, 12:14, 10:12].mean() == pytest.approx(-1.0, abs=0.1)
    assert abs(div.sum()) < 0.05 * src.sum()  # the halo compensates: no net growth


def test_fit_affine_recovers_a_known_affine():
    shape, mm = (40, 40, 40), 2.0
    aff = np.diag([mm, mm, mm, 1.0])
    aff[:3, 3] = -39.0
    world = np.moveaxis(identity_grid(shape), 0, -1) * mm - 39.0
    sdf = signed_distance(np.linalg.norm(world, axis=-1) < 25.0, mm)
    rng = np.random.default_rng(0)
    dirs = rng.standard_normal((2000, 3))
    sphere = 25.0 * dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    true = np.diag([1.1, 0.95, 1.0, 1.0])
    true[:3, 3] = [2.0, -1.0, 1.5]
    pts = (sphere - true[:3, 3]) @ np.linalg.inv(true[:3, :3]).T  # true maps pts onto the sphere
    m = fit_affine([pts], [sdf], aff)
    moved = pts @ m[:3, :3].T + m[:3, 3]
    assert np.abs(np.linalg.norm(moved, axis=1) - 25.0).mean() < 0.3


def test_fixed_point_inverse_of_a_strong_field():
    rng = np.random.default_rng(0)
    v = random_velocity((24, 24, 24), sigma=3.0, max_disp=6.0, rng=rng)
    disp = scaling_and_squaring(v)  # strong but diffeomorphic: |grad disp| reaches ~1
    assert jacobian_determinant(disp).min() > 0
    d = Deformation(np.eye(4), disp.astype(np.float32), np.eye(4))
    pts = rng.uniform(6, 18, (500, 3))
    assert np.abs(d.to_template(d.to_subject(pts)) - pts).max() < 1e-2
