"""``brainsynth prepare``: good subjects all written, bad ones reported, re-runs skip done work."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from brainsynth.cli.main import app, main
from brainsynth.data.cache import CacheDataset, read_cache_info, read_cache_manifest
from brainsynth.io import Volume, write_volume

ARGS = ["--spacing", "2", "--shape", "16", "16", "16", "--no-progress"]


def _subject(root, sid, bad=None):
    """BIDS subject (T1w + derivatives/seg dseg), optionally broken in one way."""
    rng = np.random.default_rng(int(sid[-2:]))
    lab = np.zeros((24, 24, 24), np.uint8)
    lab[4:20, 4:20, 4:20] = 2
    lab[10:14, 10:14, 10:14] = 4
    t1 = (np.where(lab == 2, 100.0, 30.0) * (lab > 0) + rng.normal(0, 2, lab.shape)).astype(
        np.float32
    )
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    t1_path = root / sid / "anat" / f"{sid}_T1w.nii.gz"
    if bad == "4d":
        t1 = np.stack([t1, t1], axis=-1)
    if bad == "nan":
        t1[3, 3, 3] = np.nan
    write_volume(Volume(t1, aff), t1_path)
    lab_aff = aff.copy()
    if bad == "grid":
        lab_aff[0, 3] = 5.0
    write_volume(
        Volume(lab, lab_aff), root / "derivatives" / "seg" / sid / "anat" / f"{sid}_dseg.nii.gz"
    )
    if bad == "gzip":
        t1_path.write_bytes(t1_path.read_bytes()[:200])
    return f"{sid}\t{20 + int(sid[-2:])}\tF"


@pytest.fixture
def bids(tmp_path):
    src = tmp_path / "bids"
    rows = [_subject(src, f"sub-{i:02d}") for i in range(4)]
    for i, bad in enumerate(("gzip", "4d", "nan", "grid"), start=90):
        rows.append(_subject(src, f"sub-{i:02d}", bad=bad))
    (src / "participants.tsv").write_text("participant_id\tage\tsex\n" + "\n".join(rows) + "\n")
    return src


def test_prepare_reports_bad_keeps_good_and_resumes(bids, tmp_path):
    out = tmp_path / "cache"
    runner = CliRunner()
    res = runner.invoke(app, ["prepare", str(bids), "--out", str(out), *ARGS, "--jobs", "2"])
    assert res.exit_code == 1, res.output
    assert "4 subjects in" in res.output and "4 subject(s) failed" in res.output
    for sid, why in [
        ("sub-90", "sub-90_T1w.nii.gz: corrupt or truncated gzip"),
        ("sub-91", "sub-91_T1w.nii.gz: expected a 3D volume, got 4D"),
        ("sub-92", "sub-92_T1w.nii.gz: 1 voxels are NaN or infinite"),
        ("sub-93", "sub-93_dseg.nii.gz: label map grid (24, 24, 24) does not match"),
    ]:
        assert f"{sid}: " in res.output and why in res.output, (sid, res.output)
    rows = read_cache_manifest(out)
    assert [r["subject"] for r in rows] == [f"sub-{i:02d}" for i in range(4)]
    assert rows[0]["ventricle_volume"] == 64 * 8.0 and rows[1]["age"] == 21.0
    assert len(CacheDataset(out, split=None)) == 4
    # re-run: done subjects skipped (files untouched), bad ones retried and reported again
    stamp = (out / "subjects" / "sub-00.json").stat().st_mtime_ns
    res2 = runner.invoke(app, ["prepare", str(bids), "--out", str(out), *ARGS])
    assert res2.exit_code == 1 and "4 already done" in res2.output
    assert (out / "subjects" / "sub-00.json").stat().st_mtime_ns == stamp
    # fix the inputs: exit code 0, everything in the manifest
    for sid in ("sub-90", "sub-91", "sub-92", "sub-93"):
        shutil.rmtree(bids / sid)
        shutil.rmtree(bids / "derivatives" / "seg" / sid)
    res3 = runner.invoke(app, ["prepare", str(bids), "--out", str(out), *ARGS])
    assert res3.exit_code == 0, res3.output
    assert not (out / "failures.tsv").exists()


def test_prepare_input_errors_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        sys, "argv", ["brainsynth", "prepare", str(tmp_path / "nope"), "--out", str(tmp_path / "c")]
    )
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2 and "nope: not found" in capsys.readouterr().err
    (tmp_path / "a").mkdir()
    write_volume(Volume(np.ones((4, 4, 4), np.float32), np.eye(4)), tmp_path / "a" / "x.nii")
    argv = ["brainsynth", "prepare", str(tmp_path / "a"), "--out", str(tmp_path / "c")]
    monkeypatch.setattr(sys, "argv", [*argv, "--split", "0.5", "0.5", "0.5"])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2 and "summing to 1" in capsys.readouterr().err


@pytest.mark.slow
def test_prepare_real_ixi_subset(shared_data, tmp_path):
    src = tmp_path / "ixi"
    ids = sorted(p.name for p in (shared_data / "ixi").glob("sub-*"))[::20]  # 8 subjects
    for sid in ids:
        shutil.copytree(shared_data / "ixi" / sid, src / sid)
        shutil.copytree(
            shared_data / "ixi/derivatives/dlmuse" / sid, src / "derivatives/dlmuse" / sid
        )
    shutil.copy(shared_data / "ixi/participants.tsv", src / "participants.tsv")
    out = tmp_path / "cache"
    res = CliRunner().invoke(
        app, ["prepare", str(src), "--out", str(out), "--jobs", "2", "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    rows = read_cache_manifest(out)
    assert [r["subject"] for r in rows] == ids
    assert all(1e6 < r["brain_volume"] < 2e6 and r["ventricle_volume"] > 5e3 for r in rows)
    info = read_cache_info(out)
    assert info["shape"] == [96, 112, 96] and sum(info["split"]["counts"].values()) == 8
    item = CacheDataset(out, split=None)[0]
    assert item["image"].shape == (1, 96, 112, 96) and item["labels"].max() > 200
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert size < 8 * 400_000  # compact: well under 400 kB per subject


def test_prepare_no_labels_stores_no_label_maps(tmp_path):
    src = tmp_path / "bids"
    rows = [_subject(src, f"sub-{i:02d}") for i in range(2)]
    (src / "participants.tsv").write_text("participant_id\tage\tsex\n" + "\n".join(rows) + "\n")
    out = tmp_path / "cache"
    res = CliRunner().invoke(app, ["prepare", str(src), "--out", str(out), *ARGS, "--no-labels"])
    assert res.exit_code == 0, res.output
    assert not list((out / "subjects").glob("*_dseg.nii.gz"))
    rows = read_cache_manifest(out)
    assert all(r["ventricle_volume"] is not None for r in rows)  # labels still gave the volumes
