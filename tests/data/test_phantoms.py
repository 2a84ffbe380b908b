"""The embedded phantom cohort: valid BIDS, diffeomorphic warps, age-driven ventricles, surfaces."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from brainsynth.data.datasets import load_subjects
from brainsynth.data.phantoms import (
    Deformation,
    draw_params,
    load_template,
    make_cohort,
    make_subject,
)
from brainsynth.io import read_surface, read_volume
from brainsynth.registration.fields import identity_grid, jacobian_determinant, sample


@pytest.fixture(scope="module")
def tpl4():
    return load_template(spacing=4.0, surfaces=True)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_cohort(
        tmp_path_factory.mktemp("ph") / "bids", n=12, spacing=4.0, seed=3, progress=False
    )


def test_cohort_is_bids_with_labels(cohort):
    subs = load_subjects(cohort)
    assert len(subs) == 12
    for s in subs[:3]:
        t1 = read_volume(s.t1)
        lab = read_volume(s.labels, dtype=None)
        assert t1.same_grid(lab) and t1.orientation == "RAS"
        assert set(np.unique(lab.data)) <= {0, 2, 3, 4, 24, 41, 42, 43}
        assert {"age", "sex", "brain_volume", "ventricle_volume"} <= set(s.covariates)
        assert 0.9e6 < s.covariates["brain_volume"] < 2.0e6


def test_age_drives_ventricles(cohort):
    subs = load_subjects(cohort)
    ages = [s.covariates["age"] for s in subs]
    vents = [s.covariates["ventricle_volume"] for s in subs]
    assert spearmanr(ages, vents).statistic > 0.5


def test_deterministic(tmp_path):
    a = make_cohort(tmp_path / "a", n=1, spacing=4.0, seed=7, progress=False)
    b = make_cohort(tmp_path / "b", n=1, spacing=4.0, seed=7, progress=False)
    f = "sub-ph000/anat/sub-ph000_T1w.nii.gz"
    np.testing.assert_array_equal(read_volume(a / f).data, read_volume(b / f).data)


def test_warp_is_diffeomorphic_and_inverse_consistent(tpl4):
    rng = np.random.default_rng(0)
    p = draw_params(rng)
    d = Deformation(tpl4, p, rng)
    phi = d.sampling_map()
    det = jacobian_determinant(phi - identity_grid(phi.shape[1:]))
    assert det.min() > 0  # no folding anywhere
    pts = phi[:, 5:-5:3, 5:-5:3, 5:-5:3].reshape(3, -1)  # phi(x) for interior x
    x = identity_grid(phi.shape[1:])[:, 5:-5:3, 5:-5:3, 5:-5:3].reshape(3, -1)
    err = np.linalg.norm(d.inverse_points(pts) - x, axis=0)
    assert np.percentile(err, 99) < 0.5  # voxels
    assert sample(phi, d.inverse_points(pts[:, :10])).shape == (3, 10)


def test_surfaces_follow_the_warp(tpl4, tmp_path):
    rng = np.random.default_rng(1)
    t1, lab, surfs, _ = make_subject(tpl4, draw_params(rng), rng)
    from scipy import ndimage

    brain = ndimage.binary_dilation(lab.data > 0, iterations=1)
    for name in ("lh_pial", "rh_pial"):
        v = surfs[name].vertices
        ijk = np.round((np.c_[v, np.ones(len(v))] @ np.linalg.inv(lab.affine).T)[:, :3]).astype(int)
        ijk = np.clip(ijk, 0, np.array(lab.shape) - 1)
        assert brain[ijk[:, 0], ijk[:, 1], ijk[:, 2]].mean() > 0.95
    # white lies inside pial: its vertices are closer to the brain centre on average
    c = surfs["lh_pial"].vertices.mean(0)
    r_p = np.linalg.norm(surfs["lh_pial"].vertices - c, axis=1).mean()
    r_w = np.linalg.norm(surfs["lh_white"].vertices - c, axis=1).mean()
    assert r_w < r_p


def test_cli_writes_surfaces(tmp_path):
    from typer.testing import CliRunner

    from brainsynth.cli.main import app

    res = CliRunner().invoke(
        app, ["phantoms", "--out", str(tmp_path / "p"), "-n", "1", "--spacing", "4", "--surfaces"]
    )
    assert res.exit_code == 0, res.output
    s = read_surface(
        tmp_path / "p/derivatives/phantom/sub-ph000/anat/sub-ph000_hemi-L_pial.surf.gii"
    )
    assert s.n_vertices == 10242
