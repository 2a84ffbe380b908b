"""``brainsynth degrade`` and ``brainsynth restore`` end to end on the tiny prior: every task writes
its NIfTI outputs (the prior's grid and the input's world space), the std map, a montage and
restore.tsv; bad inputs are clear errors naming the file, and a batch still restores its good
scans."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from tests.bad_inputs.cli import assert_clean_error, run_cli

from brainsynth.io import Volume, read_volume, write_volume


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(open(path), delimiter="\t"))


FAST = ("--levels", "2", "--samples", "2", "--device", "cpu")


@pytest.fixture(scope="module")
def degraded(restore_cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("deg") / "thick"
    code, text = run_cli(
        "degrade", "--input", restore_cache, "--split", "train", "--out", out,
        "--slice-spacing", "8", "--gap", "2", "--bias", "0.1", "--noise", "0.01",
    )  # fmt: skip
    assert code == 0, text
    return out


def test_degrade_writes_scans_with_sidecars(degraded):
    rows = _rows(degraded / "degrade.tsv")
    assert [r["status"] for r in rows] == ["ok", "ok"]
    scan = read_volume(degraded / f"{rows[0]['scan']}.nii.gz")
    assert np.allclose(sorted(scan.spacing), [2, 2, 8])
    side = json.loads((degraded / f"{rows[0]['scan']}.json").read_text())
    assert side["SliceThickness"] == 6.0 and side["SpacingBetweenSlices"] == 8.0
    assert (degraded / "fields" / f"{rows[0]['scan']}_bias.nii.gz").exists()


@pytest.mark.parametrize("task", ["superres", "bias"])
def test_restore_thick_slices(tiny_prior, degraded, tmp_path, task):
    out = tmp_path / "r"
    code, text = run_cli(
        "restore", "--prior", tiny_prior, "--input", degraded, "--task", task, "--out", out, *FAST
    )
    assert code == 0, text
    rows = _rows(out / "restore.tsv")
    assert len(rows) == 2 and all(r["status"] == "ok" and r["nfe"] == "2" for r in rows)
    stem = Path(rows[0]["scan"]).name.removesuffix(".nii.gz")
    prior = read_volume(out / f"{stem}_restored_prior.nii.gz")
    assert prior.shape == (8, 10, 8) and np.allclose(prior.spacing, 4.0)
    world = read_volume(out / f"{stem}_restored.nii.gz")
    scan = read_volume(degraded / f"{stem}.nii.gz")
    assert np.allclose(world.spacing, 4.0)  # the input's field of view, isotropic
    assert np.allclose(world.affine[:3, :3] @ (np.array(world.shape) - 1) / 2 + world.affine[:3, 3],
                       scan.affine[:3, :3] @ (np.array(scan.shape) - 1) / 2 + scan.affine[:3, 3])  # fmt: skip
    std = read_volume(out / f"{stem}_std_prior.nii.gz")
    assert std.data.min() >= 0 and std.data.max() > 0  # two samples differ
    assert (out / f"{stem}_montage.png").stat().st_size > 1000
    assert (out / f"{stem}_bias_prior.nii.gz").exists() == (task == "bias")


def _iso_scan(restore_cache, tmp_path) -> tuple[Path, Path]:
    """An isotropic 2 mm cache image as a scan, and a lesion mask on its grid."""
    img = next((restore_cache / "subjects").glob("*_T1w.nii.gz"))
    vol = read_volume(img)
    scan = write_volume(vol.with_data(vol.data / 255), tmp_path / "iso.nii.gz")
    m = np.zeros(vol.shape, np.uint8)
    m[6:10, 8:12, 6:10] = 1
    return scan, write_volume(vol.with_data(m), tmp_path / "iso_mask.nii.gz")


@pytest.mark.parametrize("task", ["inpaint", "refine"])
def test_restore_isotropic_tasks(tiny_prior, restore_cache, tmp_path, task):
    scan, mask = _iso_scan(restore_cache, tmp_path)
    extra = ("--mask", mask) if task == "inpaint" else ("--trust", "0.2")
    out = tmp_path / "r"
    code, text = run_cli(
        "restore",
        "--prior",
        tiny_prior,
        "--input",
        scan,
        "--task",
        task,
        "--out",
        out,
        *extra,
        *FAST,
    )
    assert code == 0, text
    assert _rows(out / "restore.tsv")[0]["status"] == "ok"
    assert read_volume(out / "iso_restored.nii.gz").shape == (8, 10, 8)  # 32 x 40 x 32 mm at 4 mm


def _bad_inputs(root: Path, scan: Path, mask: Path) -> dict[str, tuple[list, int, tuple]]:
    vol = read_volume(scan)
    four_d = root / "four_d.nii.gz"
    write_volume(Volume(np.stack([vol.data] * 2, -1), vol.affine), four_d)
    nan = vol.data.copy()
    nan[3, 3, 3] = np.nan
    nan_path = root / "nan.nii"
    import nibabel as nib

    nib.save(nib.Nifti1Image(nan, vol.affine), nan_path)
    other = write_volume(
        Volume(np.ones((5, 5, 5), np.uint8), np.eye(4)), root / "other_mask.nii.gz"
    )
    whole = write_volume(vol.with_data((vol.data > 0).astype(np.uint8)), root / "whole.nii.gz")
    flat = write_volume(Volume(np.ones((8, 8, 8), np.float32), np.eye(4)), root / "head.nii.gz")
    return {
        "4d": (["--input", four_d, "--task", "superres"], 1, ("four_d.nii.gz", "3D")),
        "nan": (["--input", nan_path, "--task", "refine"], 1, ("nan.nii", "NaN")),
        "mask-grid": (["--input", scan, "--task", "inpaint", "--mask", other], 1, ("other_mask", "grid")),
        "mask-brain": (["--input", scan, "--task", "inpaint", "--mask", whole], 1, ("whole.nii.gz", "covers")),
        "no-mask": (["--input", scan, "--task", "inpaint"], 1, ("--mask",)),
        "isotropic": (["--input", scan, "--task", "superres"], 1, ("iso.nii.gz", "isotropic")),
        "skull": (["--input", flat, "--task", "refine"], 1, ("head.nii.gz", "skull-stripped")),
        "task": (["--input", scan, "--task", "deblur"], 2, ("deblur", "superres")),
    }  # fmt: skip


def test_bad_inputs_are_clear_errors(tiny_prior, restore_cache, tmp_path):
    scan, mask = _iso_scan(restore_cache, tmp_path)
    for name, (argv, expected, words) in _bad_inputs(tmp_path, scan, mask).items():
        code, text = run_cli(
            "restore", "--prior", tiny_prior, "--out", tmp_path / name, *argv, *FAST
        )
        assert_clean_error(code, text, expected, words)


def test_a_checkpoint_of_another_method_is_refused(restore_cache, tmp_path):
    from brainsynth.config import load_config
    from brainsynth.methods import toy

    cfg = load_config(toy.ToyConfig, None, ["train.steps=1", "data.size=8", "train.batch_size=2"])
    toy.train(cfg, None, tmp_path / "toy", "cpu")
    scan, _ = _iso_scan(restore_cache, tmp_path)
    code, text = run_cli(
        "restore",
        "--prior",
        tmp_path / "toy",
        "--input",
        scan,
        "--task",
        "refine",
        "--out",
        tmp_path / "o",
    )
    assert_clean_error(code, text, 2, ("toy", "restore"))


def test_a_batch_restores_the_good_scans_and_lists_the_bad(tiny_prior, degraded, tmp_path):
    batch = tmp_path / "batch"
    batch.mkdir()
    good = sorted(degraded.glob("*.nii.gz"))[0]
    (batch / good.name).write_bytes(good.read_bytes())
    (batch / "broken.nii.gz").write_bytes(good.read_bytes()[:200])
    out = tmp_path / "r"
    code, text = run_cli("restore", "--prior", tiny_prior, "--input", batch, "--task", "superres",
                         "--out", out, *FAST)  # fmt: skip
    assert code == 1 and "broken.nii.gz" in text
    rows = {Path(r["scan"]).name: r for r in _rows(out / "restore.tsv")}
    assert rows[good.name]["status"] == "ok" and rows["broken.nii.gz"]["status"] == "error"
    assert (out / good.name.replace(".nii.gz", "_restored.nii.gz")).exists()


def test_affine_alignment_registers_the_template_and_resamples(tiny_prior, degraded, tmp_path):
    assert (tiny_prior / "template.nii.gz").exists()  # written by train restore
    scan = sorted(degraded.glob("*.nii.gz"))[0]
    out = tmp_path / "r"
    code, text = run_cli("restore", "--prior", tiny_prior, "--input", scan, "--task", "superres",
                         "--align", "affine", "--out", out, *FAST)  # fmt: skip
    assert code == 0, text
    prior = read_volume(out / scan.name.replace(".nii.gz", "_restored_prior.nii.gz"))
    assert prior.shape == (8, 10, 8) and np.isfinite(prior.data).all()
