"""Method deform on the tiny synthetic cache: template, both training stages, sampling, the
register command, and bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from brainsynth.cli.main import app
from brainsynth.config import load_config
from brainsynth.io import Volume, read_volume, write_volume
from brainsynth.methods import deform
from brainsynth.methods.deform.template import majority_vote, pool_labels

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "deform_tiny.yaml"
runner = CliRunner()


def _cfg(*sets: str) -> deform.DeformConfig:
    return load_config(deform.DeformConfig, TINY, list(sets))


def test_pool_labels_and_majority_vote():
    lab = np.zeros((4, 4, 2), np.int64)
    lab[:2, :2, :] = 5
    lab[0, 0, 0] = 7  # one of eight: the block stays 5
    lab[2:, 2:, :1] = 3  # four of eight against four zeros: the tie goes to 0
    out = pool_labels(lab, 2)
    assert out.shape == (2, 2, 1) and out[0, 0, 0] == 5 and out[1, 1, 0] == 0
    maps = np.stack([np.full((2, 2), v) for v in (1, 2, 2, 3)])
    maps[0, 0, 0] = 3
    assert majority_vote(maps).tolist() == [[2, 2], [2, 2]]


@pytest.fixture(scope="module")
def deform_run(restore_cache, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("deform") / "run"
    deform.train(_cfg(), restore_cache, run, "cpu", stage="register")
    deform.train(_cfg(), restore_cache, run, "cpu", stage="fields")
    return run


def test_training_writes_template_both_stages_and_resumes(deform_run, restore_cache, tmp_path):
    t1, dseg = deform.load_template(deform_run)
    assert dseg is not None and t1.shape == dseg.shape == (8, 10, 8)
    assert 0 < float(t1.data.max()) <= 1
    cfg, model, meta = deform.load_network(deform_run, "register")
    assert meta["stage"] == "register" and cfg == _cfg()
    _, fields, fmeta = deform.load_network(deform_run, "fields")
    assert fmeta["field_std"] > 0
    # eta = 0 is the identity; the full map is a diffeomorphism (no folding)
    x = torch.rand(1, 1, 8, 10, 8) * 2 - 1
    with torch.no_grad():
        v0, u0 = model(x, x.flip(2), 0.0)
        v1, u1 = model(x, x.flip(2), 1.0)
    assert torch.count_nonzero(u0) == 0 and torch.count_nonzero(v0) == 0
    from brainsynth.registration.svf import jacobian_determinant

    assert float(jacobian_determinant(u1).min()) > 0
    # an interrupted stage resumes exactly
    a = tmp_path / "a"
    deform.train(_cfg("train_register.steps=2"), restore_cache, a, "cpu", stage="register")
    deform.train(_cfg(), restore_cache, a, "cpu", resume=True, stage="register")
    from brainsynth.training.checkpoint import load_checkpoint

    ea = load_checkpoint(a / "register", names=("ema",), with_state=False)["ema"]
    eb = load_checkpoint(deform_run / "register", names=("ema",), with_state=False)["ema"]
    assert all(torch.equal(ea[k], eb[k]) for k in ea)


def test_cli_sample_writes_scans_labels_fields(deform_run, tmp_path):
    out = tmp_path / "s"
    r = runner.invoke(
        app, ["sample", "deform", "--ckpt", str(deform_run), "--out", str(out), "-n", "2"]
    )
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(out / "samples.tsv"), delimiter="\t"))
    assert len(rows) == 2 and all(int(x["folding_voxels"]) == 0 for x in rows)
    t1 = read_volume(out / "sample_000_T1w.nii.gz")
    seg = read_volume(out / "sample_000_dseg.nii.gz", dtype=None)
    field = read_volume(out / "sample_000_field.nii.gz", ndim=None)
    tmpl, tdseg = deform.load_template(deform_run)
    assert t1.shape == seg.shape == tmpl.shape and field.shape == (*tmpl.shape, 3)
    assert np.allclose(t1.affine, tmpl.affine)
    assert set(np.unique(seg.data)) <= set(np.unique(tdseg.data))  # nearest: template labels only
    assert (out / "montage.png").is_file()


def test_cli_register_writes_every_output_in_the_fixed_space(deform_run, restore_cache, tmp_path):
    subj = sorted((restore_cache / "subjects").glob("*_T1w.nii.gz"))
    mov, fix = subj[0], subj[1]
    lab = Path(str(mov).replace("_T1w", "_dseg"))
    out = tmp_path / "r"
    r = runner.invoke(
        app,
        ["register", "--ckpt", str(deform_run), "--moving", str(mov), "--fixed", str(fix),
         "--labels", str(lab), "--eta", "0,0.5,1", "--out", str(out)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(out / "register.tsv"), delimiter="\t"))
    assert [x["eta"] for x in rows] == ["0", "0.5", "1"]
    fixed_g = read_volume(out / "fixed.nii.gz")
    for name in ("warped_T1w", "warped_dseg", "displacement", "velocity", "jacobian"):
        v = read_volume(out / f"{name}_eta-1.nii.gz", ndim=None, dtype=None)
        assert np.allclose(v.affine, fixed_g.affine), name
    # eta 0: the affinely aligned moving scan itself, det J = 1
    w0 = read_volume(out / "warped_T1w_eta-0.nii.gz").data
    np.testing.assert_allclose(w0, read_volume(out / "moving_affine.nii.gz").data, atol=1e-5)
    np.testing.assert_allclose(read_volume(out / "jacobian_eta-0.nii.gz").data, 1.0, atol=1e-6)
    # the fixed scan's world: its grid's centre lies on the fixed scan's brain
    assert np.allclose(fixed_g.affine[:3, :3], np.diag([4.0, 4.0, 4.0]))


def test_register_bad_input(deform_run, restore_cache, tmp_path):
    subj = sorted((restore_cache / "subjects").glob("*_T1w.nii.gz"))
    flat = write_volume(Volume(np.ones((6, 6), np.float32), np.eye(4)), tmp_path / "flat.nii.gz")
    r = runner.invoke(
        app, ["register", "--ckpt", str(deform_run), "--moving", str(flat), "--fixed", str(subj[1]),
              "--out", str(tmp_path / "o1")],
    )  # fmt: skip
    assert r.exit_code != 0 and "flat.nii.gz" in str(r.exception) and "3D" in str(r.exception)
    other = write_volume(Volume(np.ones((5, 5, 5), np.int16), np.eye(4)), tmp_path / "lab.nii.gz")
    r = runner.invoke(
        app, ["register", "--ckpt", str(deform_run), "--moving", str(subj[0]), "--fixed", str(subj[1]),
              "--labels", str(other), "--out", str(tmp_path / "o2")],
    )  # fmt: skip
    msg = str(r.exception)
    assert r.exit_code != 0 and "lab.nii.gz" in msg and "another grid" in msg


def test_fields_stage_needs_the_registration(restore_cache, tmp_path):
    from brainsynth.errors import InputError

    with pytest.raises(InputError, match="stage fields needs"):
        deform.train(_cfg(), restore_cache, tmp_path / "x", "cpu", stage="fields")
    r = runner.invoke(
        app, ["sample", "deform", "--ckpt", str(tmp_path), "--out", str(tmp_path / "o")]
    )
    assert r.exit_code != 0
