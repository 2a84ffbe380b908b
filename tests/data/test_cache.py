"""The cache: deterministic split, manifest, resumable prepare (library level), CacheDataset."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from brainsynth.data.cache import (
    CacheDataset,
    read_cache_info,
    read_cache_manifest,
    split_assignment,
)
from brainsynth.data.covariates import CovariateNormaliser
from brainsynth.data.datasets import Subject
from brainsynth.data.prepare import PrepareOptions, prepare_cache
from brainsynth.errors import InputError
from brainsynth.io import Volume, read_volume, write_volume

OPTS = PrepareOptions(spacing=2.0, shape=(16, 16, 16))


def _subject(root, sid, age=None, sex="F", labels=True, seed=0) -> Subject:
    """A 24^3 2 mm head: brain (WM 2, ventricles 4) inside a shell of head tissue (label 530)."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((24, 24, 24), np.uint16)
    lab[2:22, 2:22, 2:22] = 530
    lab[5:19, 4:20, 5:19] = 2
    lab[10:14, 10:14, 10:14] = 4
    t1 = np.select([lab == 2, lab == 4, lab == 530], [100.0, 30.0, 60.0], 2.0)
    aff = np.array([[0, 0, 2.0, -20], [-2.0, 0, 0, 25], [0, 2.0, 0, -22], [0, 0, 0, 1]])  # PSR
    t1_path = write_volume(
        Volume((t1 + rng.normal(0, 2, t1.shape)).astype(np.float32), aff), root / f"{sid}.nii.gz"
    )
    lab_path = write_volume(Volume(lab, aff), root / f"{sid}_dseg.nii.gz") if labels else None
    cov = {"age": age, "sex": {"F": 0.0, "M": 1.0}.get(sex)}
    return Subject(sid, t1_path, lab_path, {}, cov)


def test_split_is_deterministic_exact_and_stable():
    ids = [f"sub-{i:03d}" for i in range(50)]
    a = split_assignment(ids, (0.8, 0.1, 0.1), seed=0)
    assert a == split_assignment(list(reversed(ids)), (0.8, 0.1, 0.1), seed=0)
    assert [sum(v == s for v in a.values()) for s in ("train", "val", "test")] == [40, 5, 5]
    assert a != split_assignment(ids, (0.8, 0.1, 0.1), seed=1)
    b = split_assignment(ids + ["sub-new"], (0.8, 0.1, 0.1), seed=0)
    assert sum(a[i] != b[i] for i in ids) <= 2  # adding one subject barely moves the others
    assert set(split_assignment(ids[:3], (1.0, 0.0, 0.0)).values()) == {"train"}
    with pytest.raises(InputError, match="summing to 1"):
        split_assignment(ids, (0.8, 0.3, 0.1))


def test_prepare_writes_cache_and_dataset_reads_it(tmp_path):
    subs = [_subject(tmp_path / "src", f"s{i}", age=20.0 + 10 * i, seed=i) for i in range(4)]
    subs.append(_subject(tmp_path / "src", "s9", age=None, sex="n/a", labels=True, seed=9))
    out = tmp_path / "cache"
    res = prepare_cache(subs, out, OPTS, split=(0.6, 0.2, 0.2), progress=False)
    assert not res.failures and res.reused == 0 and len(res.records) == 5
    info = read_cache_info(out)
    assert info["shape"] == [16, 16, 16] and info["split"]["counts"] == {
        "train": 3,
        "val": 1,
        "test": 1,
    }
    rows = read_cache_manifest(out)
    assert [r["subject"] for r in rows] == ["s0", "s1", "s2", "s3", "s9"]
    # covariates: age/sex from the table, volumes measured on the label map (8 mm^3 voxels)
    assert rows[0]["age"] == 20.0 and rows[0]["sex"] == 0.0 and rows[4]["age"] is None
    assert rows[0]["ventricle_volume"] == 64 * 8.0 and rows[0]["brain_volume"] == 14 * 16 * 14 * 8.0
    assert "F" in (out / "manifest.tsv").read_text() and "n/a" in (out / "manifest.tsv").read_text()
    train = [r for r in rows if r["split"] == "train"]
    norm = CovariateNormaliser.from_dict(info["covariate_normaliser"])
    assert norm.mean["age"] == pytest.approx(
        np.mean([r["age"] for r in train if r["age"] is not None])
    )
    # the stored image: skull-stripped uint8 on a RAS grid, head tissue (530) removed
    img = read_volume(out / rows[0]["image"], dtype=None)
    lab = read_volume(out / rows[0]["labels"], dtype=None)
    assert img.data.dtype == np.uint8 and lab.data.dtype == np.uint16 and img.orientation == "RAS"
    assert img.data.max() == 255 and img.data[~np.isin(lab.data, [2, 4])].max() == 0
    rec = json.loads((out / "subjects" / "s0.json").read_text())
    assert (
        rec["record"]["original_orientation"] == "PSR"
        and rec["record"]["label_scheme"] == "freesurfer"
    )

    ds = CacheDataset(out, split=None)
    item = ds[4]
    assert item["image"].shape == (1, 16, 16, 16) and item["image"].dtype == torch.float32
    assert 0 <= item["image"].min() and item["image"].max() <= 1
    assert item["labels"].dtype == torch.int64 and item["labels"].shape == (1, 16, 16, 16)
    assert item["covariates"].shape == (4,) and torch.isfinite(item["covariates"]).all()
    assert item["covariates_missing"].tolist() == [True, True, False, False]
    assert np.isnan(item["covariates_raw"]["age"]) and item["subject"] == "s9"
    batch = next(iter(DataLoader(ds, batch_size=5)))  # missing covariates still collate
    assert batch["image"].shape == (5, 1, 16, 16, 16) and batch["covariates_raw"]["age"].shape == (
        5,
    )
    assert len(CacheDataset(out, "train", with_labels=False, preload=True)) == 3
    assert "labels" not in CacheDataset(out, "val", with_labels=False)[0]
    with pytest.raises(InputError, match="unknown split"):
        CacheDataset(out, split="training")


def test_rerun_skips_done_and_redoes_changed(tmp_path):
    subs = [_subject(tmp_path / "src", f"s{i}", age=30.0, seed=i) for i in range(3)]
    out = tmp_path / "cache"
    prepare_cache(subs, out, OPTS, progress=False)
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "subjects").iterdir()}
    res = prepare_cache(subs, out, OPTS, progress=False)
    assert res.reused == 3
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (out / "subjects").iterdir()}
    # a changed source file or changed parameters: that subject / every subject is redone
    os.utime(subs[1].t1, ns=(1, 1))
    assert prepare_cache(subs, out, OPTS, progress=False).reused == 2
    other = PrepareOptions(spacing=2.0, shape=(16, 16, 18))
    assert prepare_cache(subs, out, other, progress=False).reused == 0
    assert read_cache_info(out)["shape"] == [16, 16, 18]


def test_bad_subjects_reported_good_ones_kept(tmp_path):
    src = tmp_path / "src"
    good = [_subject(src, f"s{i}", age=30.0, seed=i) for i in range(2)]
    corrupt = _subject(src, "gz", seed=5)
    corrupt.t1.write_bytes(corrupt.t1.read_bytes()[:300])
    flat = _subject(src, "flat", seed=6)
    aff = read_volume(flat.t1).affine
    write_volume(Volume(np.zeros((24, 24, 24), np.float32), aff), flat.t1)
    mism = _subject(src, "grid", seed=7)
    lab = read_volume(mism.labels, dtype=None)
    write_volume(Volume(lab.data[:, :, :20], lab.affine), mism.labels)
    subs = [*good, corrupt, flat, mism]
    res = prepare_cache(subs, tmp_path / "cache", OPTS, progress=False)
    assert [r["subject"] for r in res.records] == ["s0", "s1"]
    assert set(res.failures) == {"gz", "flat", "grid"}
    assert "gz.nii.gz: corrupt or truncated gzip" in res.failures["gz"]
    assert "flat.nii.gz" in res.failures["flat"] and "flat intensities" in res.failures["flat"]
    assert "grid_dseg.nii.gz: label map grid (24, 24, 20) does not match" in res.failures["grid"]
    fails = (tmp_path / "cache" / "failures.tsv").read_text()
    assert fails.count("\n") == 4 and "gz\t" in fails
    assert [r["subject"] for r in read_cache_manifest(tmp_path / "cache")] == ["s0", "s1"]


def test_not_a_cache(tmp_path):
    with pytest.raises(InputError, match="not a brainsynth cache"):
        CacheDataset(tmp_path)


def test_compact_cache_without_labels_and_subjects_without_labels(tmp_path):
    subs = [
        _subject(tmp_path / "src", "s0", age=30.0),
        _subject(tmp_path / "src", "s1", labels=False),
    ]
    opts = PrepareOptions(spacing=2.0, shape=(16, 16, 16), keep_labels=False)
    res = prepare_cache(subs, tmp_path / "cache", opts, progress=False)
    assert res.warnings == {"s1": "no label map: whole head kept (not skull-stripped)"}
    rows = read_cache_manifest(tmp_path / "cache")
    assert [r["labels"] for r in rows] == [None, None]
    assert rows[0]["brain_volume"] == 14 * 16 * 14 * 8.0 and rows[1]["brain_volume"] is None
    assert not list((tmp_path / "cache" / "subjects").glob("*_dseg.nii.gz"))
    img = read_volume(tmp_path / "cache" / "subjects" / "s0_T1w.nii.gz", dtype=None).data
    assert (img > 0).sum() <= 14 * 16 * 14  # still skull-stripped by the (unstored) labels
    assert "labels" not in CacheDataset(tmp_path / "cache", split=None)[0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"spacing": -2.0}, r"--spacing must be a finite number > 0, got -2"),
        ({"spacing": float("nan")}, r"--spacing must be a finite number > 0, got nan"),
        ({"shape": (0, 16, 16)}, r"--shape must be three integers >= 1, got \(0, 16, 16\)"),
        ({"shape": (16, 16)}, r"--shape must be three integers"),
        ({"low": 99.5, "high": 0.5}, r"--percentiles .*0 <= LOW < HIGH <= 100, got 99.5 0.5"),
        ({"low": -1.0}, r"--percentiles .*got -1 99.5"),
        ({"high": float("inf")}, r"--percentiles .*got 0.5 inf"),
        ({"assume_spacing": 0.0}, r"--assume-spacing must be a finite number > 0, got 0"),
        ({"scheme": "aseg"}, r"unknown label scheme 'aseg'"),
    ],
)
def test_options_are_checked_when_made(kwargs, match):
    with pytest.raises(InputError, match=match):
        PrepareOptions(**kwargs)


def test_jobs_split_and_out_checked_before_any_subject_is_read(tmp_path):
    subs = [_subject(tmp_path / "src", "s0")]
    with pytest.raises(InputError, match=r"--jobs must be an integer >= 1, got 0"):
        prepare_cache(subs, tmp_path / "cache", OPTS, jobs=0, progress=False)
    with pytest.raises(InputError, match="summing to 1"):
        prepare_cache(subs, tmp_path / "cache", OPTS, split=(float("nan"), 0.5, 0.5))
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match=r"file: exists and is a file"):
        prepare_cache(subs, tmp_path / "file", OPTS, progress=False)
    assert not (tmp_path / "cache").exists()


def test_a_run_where_every_subject_fails_leaves_the_index(tmp_path):
    subs = [_subject(tmp_path / "src", f"s{i}", age=30.0, seed=i) for i in range(2)]
    out = tmp_path / "cache"
    prepare_cache(subs, out, OPTS, progress=False)
    index = {n: (out / n).read_bytes() for n in ("manifest.tsv", "cache.json")}
    for s in subs:
        s.t1.write_bytes(s.t1.read_bytes()[:300])
    res = prepare_cache(subs, out, PrepareOptions(spacing=3.0, shape=(16, 16, 16)), progress=False)
    assert not res.records and set(res.failures) == {"s0", "s1"} and not res.index_written
    assert {n: (out / n).read_bytes() for n in index} == index
    assert not (out / "failures.tsv").exists()  # the index, failures.tsv included, is the old one


def test_errors_name_the_file_at_fault(tmp_path):
    src = tmp_path / "src"
    zero = _subject(src, "zero", seed=1)  # all-zero labels: the label map's fault
    write_volume(
        Volume(np.zeros((24, 24, 24), np.uint16), read_volume(zero.t1).affine), zero.labels
    )
    head = _subject(src, "head", seed=2)  # head tissue only: no brain label
    lab = read_volume(head.labels, dtype=None)
    write_volume(lab.with_data(np.where(lab.data > 0, 530, 0).astype(np.uint16)), head.labels)
    const = _subject(src, "const", labels=False, seed=3)  # the T1w's fault
    write_volume(
        Volume(np.full((24, 24, 24), 7.0, np.float32), read_volume(const.t1).affine), const.t1
    )
    opts = PrepareOptions(spacing=2.0, shape=(16, 16, 16), scheme="freesurfer")
    res = prepare_cache([zero, head, const], tmp_path / "cache", opts, progress=False)
    assert res.failures["zero"] == f"{zero.labels}: the label map is all zero (no labelled voxel)"
    assert res.failures["head"].startswith(
        f"{head.labels}: no brain or CSF label of the freesurfer"
    )
    assert res.failures["const"] == f"{const.t1}: no head to find: every voxel of the image is 7"


def test_table_problems_fail_that_subject_only(tmp_path):
    subs = [_subject(tmp_path / "src", f"s{i}", age=30.0, seed=i) for i in range(2)]
    subs[1].problems.append("participants.tsv: s1, column 'age': 1e+09 is outside 0..120 years")
    res = prepare_cache(subs, tmp_path / "cache", OPTS, progress=False)
    assert [r["subject"] for r in res.records] == ["s0"]
    assert res.failures == {
        "s1": "participants.tsv: s1, column 'age': 1e+09 is outside 0..120 years"
    }


def _no_voxel_size(sub: Subject) -> None:
    """Rewrite a subject's files with pixdim 0 and no qform/sform (nibabel's writer would fix it)."""
    import gzip

    import nibabel as nib

    for path in (sub.t1, sub.labels):
        img = nib.load(str(path))
        hdr = img.header.copy()
        hdr["pixdim"][1:4] = 0
        hdr["qform_code"] = hdr["sform_code"] = 0
        hdr["vox_offset"] = 352
        data = np.asarray(img.dataobj, dtype=hdr.get_data_dtype())
        path.write_bytes(gzip.compress(hdr.binaryblock + b"\0" * 4 + data.tobytes(order="F")))


def test_assumed_spacing_is_recorded_and_decides_reuse(tmp_path):
    subs = [_subject(tmp_path / "src", f"s{i}", age=30.0, seed=i) for i in range(2)]
    _no_voxel_size(subs[1])
    out = tmp_path / "cache"
    res = prepare_cache(subs, out, OPTS, progress=False)
    assert set(res.failures) == {"s1"} and "voxel size unknown" in res.failures["s1"]
    opts = PrepareOptions(spacing=2.0, shape=(16, 16, 16), assume_spacing=2.0)
    res = prepare_cache(subs, out, opts, progress=False)  # s0 reused: the option is not for it
    assert not res.failures and res.reused == 1
    assert "assuming 2 mm isotropic" in res.warnings["s1"]
    assert json.loads((out / "subjects" / "s1.json").read_text())["assumed_spacing"] == 2.0
    assert prepare_cache(subs, out, opts, progress=False).reused == 2
    other = PrepareOptions(spacing=2.0, shape=(16, 16, 16), assume_spacing=1.0)
    assert prepare_cache(subs, out, other, progress=False).reused == 1  # s1 redone at 1 mm
