"""Bad input data for ``prepare`` and ``evaluate``: each row makes one bad input next to good ones,
runs the command, and checks the exit code and the words the message must hold.

``prepare`` is a batch: a bad subject (sub-90, beside the good sub-00 and sub-01) exits 1, names
the subject and its file, and every good subject is still in the manifest. A bad option or
``--out`` exits 2 before any work, and an existing good cache's index stays byte for byte.
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from tests.bad_inputs.cli import assert_clean_error, run_cli

from brainsynth.data.cache import read_cache_manifest
from brainsynth.io import Volume, write_volume

ARGS = ["--spacing", "2", "--shape", "16", "16", "16", "--no-progress"]
GOOD = ("sub-00", "sub-01")
BAD = "sub-90"
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def _head(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(T1w, FreeSurfer labels) of a 24^3 head: WM 2 with ventricles 4."""
    lab = np.zeros((24, 24, 24), np.uint8)
    lab[4:20, 4:20, 4:20] = 2
    lab[10:14, 10:14, 10:14] = 4
    noise = np.random.default_rng(seed).normal(0, 2, lab.shape)
    t1 = (np.where(lab == 2, 100.0, 30.0) * (lab > 0) + noise).astype(np.float32)
    return t1, lab


def _paths(src: Path, sid: str) -> tuple[Path, Path]:
    t1 = src / sid / "anat" / f"{sid}_T1w.nii.gz"
    return t1, src / "derivatives" / "seg" / sid / "anat" / f"{sid}_dseg.nii.gz"


def _bids(tmp: Path, table: str | None = None) -> Path:
    """A BIDS folder with the good subjects and sub-90 (also good until a row breaks it)."""
    src = tmp / "bids"
    for i, sid in enumerate((*GOOD, BAD)):
        t1, lab = _head(i)
        t1_path, lab_path = _paths(src, sid)
        write_volume(Volume(t1, AFFINE), t1_path)
        write_volume(Volume(lab, AFFINE), lab_path)
    rows = "".join(f"{sid}\t{30 + i}\tF\n" for i, sid in enumerate((*GOOD, BAD)))
    (src / "participants.tsv").write_text(table or "participant_id\tage\tsex\n" + rows)
    return src


def _gzip_stored(data: bytes) -> bytes:
    """gzip with stored (uncompressed) deflate blocks: flipped bytes then garble the voxels but
    leave the stream decodable, so only the CRC at its end can tell."""
    return gzip.compress(data, compresslevel=0)


def _flip_middle(raw: bytes, n: int = 200) -> bytes:
    b = bytearray(raw)
    mid = len(b) // 2
    b[mid : mid + n] = bytes(x ^ 0xFF for x in b[mid : mid + n])
    return bytes(b)


def _raw_nifti(data: np.ndarray, **fields) -> bytes:
    """NIfTI-1 bytes with header fields set as given: nibabel's writer would fix them."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(data.shape)
    hdr.set_data_dtype(data.dtype)
    hdr["vox_offset"] = 352
    for key, value in fields.items():
        hdr[key] = value
    return hdr.binaryblock + b"\0" * 4 + data.tobytes(order="F")


# --- one way to break sub-90 each: (tmp) -> source folder ------------------------------------


def _crc(tmp: Path) -> Path:
    src = _bids(tmp)
    t1, _ = _paths(src, BAD)
    t1.write_bytes(_flip_middle(_gzip_stored(gzip.decompress(t1.read_bytes()))))
    return src


def _truncated(tmp: Path) -> Path:
    src = _bids(tmp)
    t1, _ = _paths(src, BAD)
    t1.write_bytes(t1.read_bytes()[: t1.stat().st_size // 2])
    return src


def _rewrite_t1(tmp: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    src = _bids(tmp)
    write_volume(Volume(data, affine), _paths(src, BAD)[0])
    return src


def _four_d(tmp: Path) -> Path:
    t1, _ = _head(9)
    return _rewrite_t1(tmp, np.stack([t1, t1], axis=-1))


def _nan(tmp: Path) -> Path:
    t1, _ = _head(9)
    t1[3, 4, 5] = np.nan
    return _rewrite_t1(tmp, t1)


def _one_voxel(tmp: Path) -> Path:
    return _rewrite_t1(tmp, np.ones((1, 1, 1), np.float32))


def _label_affine(tmp: Path) -> Path:
    src = _bids(tmp)
    moved = AFFINE.copy()
    moved[0, 3] = 5.0
    write_volume(Volume(_head(9)[1], moved), _paths(src, BAD)[1])
    return src


def _huge_header(tmp: Path) -> Path:
    src = _bids(tmp)
    data = np.ones((8, 8, 8), np.float32)
    raw = bytearray(_raw_nifti(data, pixdim=[1, 2, 2, 2, 1, 1, 1, 1]))
    hdr = nib.Nifti1Header(bytes(raw[:348]))
    hdr.set_data_shape((10000, 10000, 10000))
    raw[:348] = hdr.binaryblock
    _paths(src, BAD)[0].write_bytes(gzip.compress(bytes(raw)))
    return src


def _zero_labels(tmp: Path) -> Path:
    src = _bids(tmp)
    write_volume(Volume(np.zeros((24, 24, 24), np.uint8), AFFINE), _paths(src, BAD)[1])
    return src


def _no_voxel_size(tmp: Path) -> Path:
    """sub-90's T1w and labels with pixdim 0 and no qform/sform."""
    src = _bids(tmp)
    t1, lab = _head(9)
    unknown = {"pixdim": [1, 0, 0, 0, 1, 1, 1, 1], "qform_code": 0, "sform_code": 0}
    t1_path, lab_path = _paths(src, BAD)
    t1_path.write_bytes(gzip.compress(_raw_nifti(t1, **unknown)))
    lab_path.write_bytes(gzip.compress(_raw_nifti(lab, **unknown)))
    return src


def _table(text: str) -> Callable[[Path], Path]:
    return lambda tmp: _bids(tmp, "participant_id\t" + text)


AGE_1E9 = _table("age\tsex\nsub-00\t30\tF\nsub-01\t31\tM\nsub-90\t1e9\tF\n")
AGE_NAN = _table("age\tsex\nsub-00\t30\tF\nsub-01\tnan\tM\nsub-90\tn/a\t\n")
NO_SEX = _table("age\nsub-00\t30\nsub-01\t31\nsub-90\t32\n")


def _prepare(src: Path, tmp: Path, *extra: str) -> list[str]:
    return ["prepare", str(src), "--out", str(tmp / "cache"), *ARGS, *extra]


# (id, make the source, extra arguments, exit code, words of the message)
PrepareRow = tuple[str, Callable[[Path], Path], tuple[str, ...], int, tuple[str, ...]]
PREPARE_ROWS: list[PrepareRow] = [
    ("crc-corrupt-gzip", _crc, (), 1, (BAD, "sub-90_T1w.nii.gz", "corrupt", "CRC check failed")),
    ("truncated-gzip", _truncated, (), 1, (BAD, "sub-90_T1w.nii.gz", "truncated gzip")),
    ("wrong-dimensionality", _four_d, (), 1, (BAD, "sub-90_T1w.nii.gz", "expected a 3D volume, got 4D")),
    ("nan-voxels", _nan, (), 1, (BAD, "sub-90_T1w.nii.gz", "1 voxels are NaN")),
    ("label-affine-mismatch", _label_affine, (), 1, (BAD, "sub-90_dseg.nii.gz", "does not match the T1w grid")),
    ("header-10000-cubed", _huge_header, (), 1, (BAD, "sub-90_T1w.nii.gz", "(10000, 10000, 10000)", "corrupt")),
    ("one-voxel", _one_voxel, (), 1, (BAD, "sub-90_T1w.nii.gz", "degenerate shape (1, 1, 1)")),
    ("all-zero-labels", _zero_labels, ("--scheme", "freesurfer"), 1, (BAD, "sub-90_dseg.nii.gz", "all zero")),
    ("pixdim-0", _no_voxel_size, (), 1, (BAD, "sub-90_T1w.nii.gz", "voxel size unknown", "--assume-spacing")),
    ("pixdim-0-assumed", _no_voxel_size, ("--assume-spacing", "2"), 0, (BAD, "assuming 2 mm", "sub-90_dseg.nii.gz")),
    ("age-1e9", AGE_1E9, (), 1, (BAD, "participants.tsv", "'age'", "1e+09", "0..120 years")),
    ("age-nan", AGE_NAN, (), 0, ("participants.tsv", "read as missing", "age 2 (n/a 1, nan 1)", "sex 1 (empty 1)")),
    ("no-sex-column", NO_SEX, (), 0, ("participants.tsv", "no sex column")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("make", "extra", "code", "words"),
    [r[1:] for r in PREPARE_ROWS],
    ids=[r[0] for r in PREPARE_ROWS],
)
def test_prepare_bad_subject_fails_alone(tmp_path, make, extra, code, words):
    got, text = run_cli(*_prepare(make(tmp_path), tmp_path, *extra))
    assert_clean_error(got, text, code, words)
    done = [r["subject"] for r in read_cache_manifest(tmp_path / "cache")]
    assert done == [*GOOD, BAD] if code == 0 else done == list(GOOD)  # every good one written
    if code == 1:
        assert f"\n  {BAD}: " in text and "1 subject(s) failed" in text


@pytest.fixture(scope="module")
def good_cache(tmp_path_factory) -> tuple[Path, Path]:
    """(source, a cache prepared from it) shared by the rows below; each copies the cache."""
    tmp = tmp_path_factory.mktemp("good")
    src = _bids(tmp)
    code, text = run_cli(*_prepare(src, tmp))
    assert code == 0, text
    return src, tmp / "cache"


def _file(tmp: Path) -> Path:
    (tmp / "afile").write_text("not a folder")
    return tmp / "afile"


def _read_only(tmp: Path) -> Path:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("root writes to read-only folders (out-unwritable covers root)")
    (tmp / "ro").mkdir()
    (tmp / "ro").chmod(0o555)
    return tmp / "ro" / "cache"


# (id, extra arguments, --out given tmp (None: into the good cache), exit code, words)
OptionRow = tuple[str, tuple[str, ...], Callable[[Path], Path] | None, int, tuple[str, ...]]
OPTION_ROWS: list[OptionRow] = [
    ("spacing-negative", ("--spacing", "-2"), None, 2, ("--spacing", "> 0", "-2")),
    ("spacing-nan", ("--spacing", "nan"), None, 2, ("--spacing", "finite")),
    ("shape-0", ("--shape", "0", "16", "16"), None, 2, ("--shape", ">= 1", "0")),
    ("percentiles-reversed", ("--percentiles", "99.5", "0.5"), None, 2, ("--percentiles", "LOW < HIGH", "99.5 0.5")),
    ("percentiles-above-100", ("--percentiles", "1", "150"), None, 2, ("--percentiles", "<= 100", "150")),
    ("jobs-0", ("--jobs", "0"), None, 2, ("--jobs", ">= 1")),
    ("split-nan", ("--split", "nan", "0.5", "0.5"), None, 2, ("--split", "finite")),
    ("split-sum", ("--split", "0.5", "0.5", "0.5"), None, 2, ("split", "summing to 1")),
    ("assume-spacing-0", ("--assume-spacing", "0"), None, 2, ("--assume-spacing", "> 0")),
    ("out-a-file", (), _file, 2, ("afile", "is a file")),
    ("out-under-a-file", (), lambda t: _file(t) / "cache", 2, ("afile", "is a file")),
    ("out-unwritable", (), lambda t: Path("/proc/brainsynth_prepare"), 2, ("/proc/brainsynth_prepare",)),
    ("out-read-only-folder", (), _read_only, 2, ("ro/cache", "not writable")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "make_out", "code", "words"),
    [r[1:] for r in OPTION_ROWS],
    ids=[r[0] for r in OPTION_ROWS],
)
def test_bad_option_or_out_refused_before_work(tmp_path, good_cache, extra, make_out, code, words):
    src, cache = good_cache
    out = tmp_path / "cache"
    shutil.copytree(cache, out)
    index = {name: (out / name).read_bytes() for name in ("manifest.tsv", "cache.json")}
    stamps = sorted((p.name, p.stat().st_mtime_ns) for p in (out / "subjects").iterdir())
    target = out if make_out is None else make_out(tmp_path)
    got, text = run_cli("prepare", str(src), "--out", str(target), *ARGS, *extra)
    assert_clean_error(got, text, code, words)
    assert {name: (out / name).read_bytes() for name in index} == index  # byte for byte
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (out / "subjects").iterdir()) == stamps


def test_a_run_where_every_subject_fails_keeps_the_index(tmp_path, good_cache):
    src, cache = good_cache
    out = tmp_path / "cache"
    shutil.copytree(cache, out)
    index = {name: (out / name).read_bytes() for name in ("manifest.tsv", "cache.json")}
    broken = tmp_path / "broken"
    shutil.copytree(src, broken)
    for t1 in broken.glob("sub-*/anat/*_T1w.nii.gz"):
        t1.write_bytes(t1.read_bytes()[:300])
    code, text = run_cli("prepare", str(broken), "--out", str(out), *ARGS, "--spacing", "3")
    assert_clean_error(code, text, 1, ("3 subject(s) failed", "index", "left as it was"))
    assert {name: (out / name).read_bytes() for name in index} == index


def _volumes(folder: Path, corrupt: str | None = None) -> Path:
    """Three [0, 1] volumes as gzip with stored blocks; ``corrupt`` gets 200 bytes flipped."""
    rng = np.random.default_rng(0)
    for i in range(3):
        x = np.zeros((20, 20, 20), np.float32)
        x[4:16, 4:16, 4:16] = rng.uniform(0.2, 1.0, (12, 12, 12))
        raw = _gzip_stored(nib.Nifti1Image(x, np.eye(4)).to_bytes())
        name = f"s{i}.nii.gz"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(_flip_middle(raw) if name == corrupt else raw)
    return folder


@pytest.mark.parametrize("intensity", ["unit", "robust"])
def test_evaluate_refuses_a_crc_corrupt_volume(tmp_path, intensity):
    real = _volumes(tmp_path / "real")
    synthetic = _volumes(tmp_path / "synthetic", corrupt="s1.nii.gz")
    code, text = run_cli(
        "evaluate", "--real", str(real), "--synthetic", str(synthetic), "--out",
        str(tmp_path / "e"), "--intensity", intensity, "--no-features", "--no-progress",
    )  # fmt: skip
    assert_clean_error(code, text, 2, ("synthetic/s1.nii.gz", "corrupt", "CRC check failed"))
