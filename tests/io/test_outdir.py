"""The output-folder policy (io.outdir): files, unwritable places, non-empty sets, --overwrite."""

from __future__ import annotations

import os

import pytest

from brainsynth.errors import InputError
from brainsynth.io.outdir import check_output_dir, claim_output_dir


def test_check_creates_nested_folders_and_refuses_files(tmp_path):
    assert check_output_dir(tmp_path / "a" / "b").is_dir()
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        check_output_dir(tmp_path / "f")
    with pytest.raises(InputError, match="is a file"):
        check_output_dir(tmp_path / "f" / "below")
    with pytest.raises(InputError, match="cannot create"):
        check_output_dir("/proc/brainsynth_test_out")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_check_refuses_a_read_only_parent(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    with pytest.raises(InputError, match="not writable"):
        check_output_dir(ro / "out")


def test_claim_refuses_non_empty_and_overwrite_removes_only_owned(tmp_path):
    out = tmp_path / "s"
    assert claim_output_dir(out, ["sample_*"]).is_dir()  # new: created
    assert claim_output_dir(out, ["sample_*"]) == out  # empty: fine
    for name in ("sample_000.nii.gz", "sample_001.nii.gz"):
        (out / name).write_text("old")
    (out / "sample_dir").mkdir()
    (out / "sample_dir" / "x").write_text("old")
    with pytest.raises(InputError, match="not empty .*sample_000.nii.gz.*--overwrite"):
        claim_output_dir(out, ["sample_*"])
    assert len(list(out.iterdir())) == 3  # a refusal removes nothing
    claim_output_dir(out, ["sample_*"], overwrite=True)
    assert list(out.iterdir()) == []
    (out / "sample_000.nii.gz").write_text("old")
    (out / "mine.txt").write_text("keep")
    with pytest.raises(InputError, match="mine.txt.*not this command's outputs"):
        claim_output_dir(out, ["sample_*"], overwrite=True)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
