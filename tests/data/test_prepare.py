"""brainsynth prepare: good subjects all written, bad ones reported, re-runs skip done work."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from brainsynth.cli.main import app
from brainsynth.data.cache import CacheDataset, read_cache_manifest
from brainsynth.io import Volume, write_volume


def _subject(root, sid, age, shape=(24, 24, 24), bad=None):
    rng = np.random.default_rng(abs(hash(sid)) % 1000)
    lab = np.zeros(shape, np.uint8)
    lab[4:20, 4:20, 4:20] = 2
    lab[10:14, 10:14, 10:14] = 4
    t1 = np.where(lab == 2, 100.0, 30.0) * (lab > 0) + rng.normal(0, 2, shape)
    anat = root / sid / "anat"
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    write_volume(Volume(t1.astype(np.float32), aff), anat / f"{sid}_T1w.nii.gz")
    lab_path = root / "derivatives" / "seg" / sid / "anat" / f"{sid}_dseg.nii.gz"
    lab_aff = aff.copy()
    if bad == "grid":
        lab_aff[0, 3] = 5.0
    write_volume(Volume(lab, lab_aff), lab_path)
    if bad == "gzip":
        p = anat / f"{sid}_T1w.nii.gz"
        p.write_bytes(p.read_bytes()[:200])
    return f"{sid}\t{age}\tF"


def test_prepare_reports_bad_and_keeps_good(tmp_path):
    src = tmp_path / "bids"
    rows = [_subject(src, f"sub-{i:02d}", 20 + 5 * i) for i in range(5)]
    rows.append(_subject(src, "sub-90", 50, bad="gzip"))
    rows.append(_subject(src, "sub-91", 50, bad="grid"))
    (src / "participants.tsv").write_text("participant_id\tage\tsex\n" + "\n".join(rows) + "\n")
    out = tmp_path / "cache"
    runner = CliRunner()
    args = ["prepare", str(src), "--out", str(out), "--spacing", "2", "--shape", "16", "16", "16"]
    res = runner.invoke(app, args)
    assert res.exit_code == 1, res.output
    assert "sub-90" in res.output and "gzip" in res.output
    assert "sub-91" in res.output and "does not match" in res.output
    rows = read_cache_manifest(out)
    assert [r["subject"] for r in rows] == [f"sub-{i:02d}" for i in range(5)]
    # ventricle volume computed from the label map (4^3 voxels of 8 mm^3)
    assert rows[0]["ventricle_volume"] == 64 * 8.0
    info = json.loads((out / "cache.json").read_text())
    assert info["shape"] == [16, 16, 16]
    ds = CacheDataset(out, split=None, with_labels=True)
    item = ds[0]
    assert (
        item["image"].shape == (1, 16, 16, 16)
        and 0 <= item["image"].min() <= item["image"].max() <= 1
    )
    assert item["covariates"].shape == (4,) and item["labels"].shape == (1, 16, 16, 16)
    # re-run: done subjects are skipped (their files untouched), bad ones retried and reported
    stamp = (out / "subjects" / "sub-00.json").stat().st_mtime_ns
    res2 = runner.invoke(app, args)
    assert res2.exit_code == 1
    assert (out / "subjects" / "sub-00.json").stat().st_mtime_ns == stamp


def test_prepare_real_ixi_subset(shared_data, tmp_path):
    import shutil

    src = tmp_path / "ixi"
    (src / "derivatives" / "dlmuse").mkdir(parents=True)
    ids = sorted(p.name for p in (shared_data / "ixi").glob("sub-*"))[:6]
    for sid in ids:
        shutil.copytree(shared_data / "ixi" / sid, src / sid)
        shutil.copytree(
            shared_data / "ixi/derivatives/dlmuse" / sid, src / "derivatives/dlmuse" / sid
        )
    shutil.copy(shared_data / "ixi/participants.tsv", src / "participants.tsv")
    out = tmp_path / "cache"
    res = CliRunner().invoke(app, ["prepare", str(src), "--out", str(out), "--jobs", "2"])
    assert res.exit_code == 0, res.output
    rows = read_cache_manifest(out)
    assert len(rows) == 6 and all(r["brain_volume"] > 1e6 for r in rows)
    ds = CacheDataset(out, split=None)
    assert ds[0]["image"].shape == (1, 96, 112, 96)
