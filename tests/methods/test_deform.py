"""Method deform on the tiny synthetic cache: template, both training stages, sampling, the
register command, and bad input."""

from __future__ import annotations

import csv
import math
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


@pytest.mark.parametrize("name", ["deform_tiny", "deform_cpu", "deform_gpu"])
def test_configs_load_and_fit_the_ixi_grid(name):
    """Every config's networks run on the IXI grid's shape at its resolution (96 x 112 x 96 at
    2 mm, pooled by data.downsample) scaled down to one coarse cell: every side a multiple of
    what the networks need."""
    cfg = load_config(deform.DeformConfig, REPO / "configs" / f"{name}.yaml")
    shape = [s // cfg.data.downsample for s in (96, 112, 96)]
    reg = deform.build_register(cfg)
    need = math.lcm(
        reg.score_net.spatial_multiple,
        2 ** (len(cfg.model.deform_channels) - 1),
        cfg.model.integration_downsample,
    )
    assert all(s % need == 0 for s in shape), (shape, need)
    fields = deform.build_fields_model(cfg)
    pooled = [s // cfg.fields.downsample for s in shape]
    assert all(s * cfg.fields.downsample == n for s, n in zip(pooled, shape))  # no remainder
    assert fields.spatial_multiple >= 1


class _Shift:
    """A registration stub: a constant velocity (a translation, exact under integration)."""

    def __init__(self, t):
        self.t = torch.tensor(t, dtype=torch.float64).reshape(1, 3, 1, 1, 1)

    def velocity(self, moving, fixed):
        return self.t.expand(1, 3, *fixed.shape[2:]).clone()

    def displacement(self, v):
        from brainsynth.registration.svf import integrate

        return integrate(v)


def test_carry_vertices_moves_template_points_by_the_inverse_map():
    from brainsynth.methods.deform.correspond import carry_vertices

    aff = np.diag([4.0, 4.0, 4.0, 1.0])
    aff[:3, 3] = [-20, -30, -10]
    img = torch.zeros(1, 1, 12, 14, 12, dtype=torch.float64)
    q = np.array([[0.0, 0.0, 0.0], [4.0, -8.0, 6.0]])  # world mm, inside the grid
    # the subject at x looks like the template at x + (1, -2, 0.5) voxels, so template point q is
    # at q - (4, -8, 2) mm in the subject
    out = carry_vertices(_Shift([1.0, -2.0, 0.5]), img, img, q, aff)
    np.testing.assert_allclose(out, q - [4.0, -8.0, 2.0], atol=1e-9)
    m = np.eye(4)
    m[:3, 3] = [1.0, 2.0, 3.0]  # the aligned space -> the subject's native space
    np.testing.assert_allclose(carry_vertices(_Shift([1.0, -2.0, 0.5]), img, img, q, aff, m),
                               q - [4.0, -8.0, 2.0] + [1.0, 2.0, 3.0], atol=1e-9)  # fmt: skip


def test_a_run_without_its_template_is_refused(deform_run, tmp_path):
    import shutil

    from brainsynth.errors import InputError

    bare = tmp_path / "bare"
    shutil.copytree(deform_run / "register", bare / "register")
    shutil.copytree(deform_run / "fields", bare / "fields")
    with pytest.raises(InputError, match="no template"):
        deform.sample(bare, tmp_path / "o", n=1)


def test_subjects_brought_back_through_the_inverse_map_match_the_template():
    from brainsynth.methods.deform.refine import to_template_space

    g = torch.Generator().manual_seed(0)
    template = torch.rand(1, 1, 12, 14, 12, generator=g, dtype=torch.float64)
    # subject(p) = template(p + (1, -2, 0)): what a translation velocity (1, -2, 0) registers
    subject = torch.roll(template, shifts=(-1, 2, 0), dims=(2, 3, 4))
    labels = (template * 5).floor().long()
    sub_labels = torch.roll(labels, shifts=(-1, 2, 0), dims=(2, 3, 4))
    img, lab = to_template_space(_Shift([1.0, -2.0, 0.0]), template, subject, sub_labels, batch=1)
    inner = (slice(None), slice(None), slice(2, -2), slice(3, -3), slice(None))
    torch.testing.assert_close(img[inner], template[inner], atol=1e-9, rtol=0)
    assert torch.equal(lab[inner], labels[inner])
    # velocities computed beforehand (the fields stage has them) give the same result
    v = _Shift([1.0, -2.0, 0.0]).velocity(template, subject)
    img2, lab2 = to_template_space(
        _Shift([1.0, -2.0, 0.0]), template, subject, sub_labels, batch=1, velocities=v
    )
    assert torch.equal(img2, img) and torch.equal(lab2, lab)
    # a zero velocity leaves the subject as it is
    same, _ = to_template_space(_Shift([0.0, 0.0, 0.0]), template, subject, batch=1)
    torch.testing.assert_close(same, subject, atol=1e-12, rtol=0)


def test_fields_stage_writes_the_sharp_template_and_sampling_uses_it(deform_run):
    from brainsynth.methods.deform.refine import load_sharp_template

    sharp = load_sharp_template(deform_run)
    assert sharp is not None
    t1, dseg = sharp
    assert dseg is not None and t1.shape == dseg.shape == (8, 10, 8)
    affine_t1, _ = deform.load_template(deform_run)
    np.testing.assert_array_equal(t1.affine, affine_t1.affine)
