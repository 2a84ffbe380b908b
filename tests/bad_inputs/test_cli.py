"""Bad command-line values and output folders: each row a command, its exit code, and the words its
message must hold (issue 13: numeric values, config values, --out policy, bench failures).

Usage errors (a bad number) exit 2 while the command line is parsed, so rows that only check a value
point at paths that need not exist. Rows that need a trained run share one tiny toy run.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from tests.bad_inputs.cli import assert_clean_error, run_cli

from brainsynth.io import Volume, write_volume

TINY = [
    "--set", "train.steps=2",
    "--set", "train.batch_size=2",
    "--set", "train.log_every=1",
    "--set", "train.ckpt_every=2",
    "--set", "data.size=8",
    "--set", "diffusion.num_timesteps=10",
    "--device", "cpu",
]  # fmt: skip


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("toy") / "run"
    code, text = run_cli("train", "toy", "--out", str(run), *TINY)
    assert code == 0, text
    return run


def _set_of_volumes(folder: Path, n: int = 2) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        x = np.zeros((20, 20, 20), np.float32)
        x[4:16, 4:16, 4:16] = rng.uniform(0.2, 1.0, (12, 12, 12))
        write_volume(Volume(x, np.eye(4)), folder / f"sub-{i:02d}_T1w.nii.gz")
    return folder


def _file(tmp: Path) -> Path:
    (tmp / "afile").write_text("not a folder")
    return tmp / "afile"


def _non_empty(tmp: Path) -> Path:
    (tmp / "full").mkdir()
    (tmp / "full" / "sample_009_T1w.nii.gz").write_text("an earlier run")
    return tmp / "full"


SAMPLE_LDM = ["sample", "ldm", "--ckpt", "NO_RUN", "--out", "NO_OUT"]
EVAL = ["evaluate", "--real", "A", "--synthetic", "B", "--out", "NO_OUT"]

# (id, argv, exit code, words): values rejected while parsing, before any file is looked at
VALUE_ROWS = [
    ("guidance-nan", [*SAMPLE_LDM, "--guidance", "nan"], 2, ("--guidance", "finite")),
    ("guidance-inf", [*SAMPLE_LDM, "--guidance", "inf"], 2, ("--guidance", "finite")),
    ("guidance-negative", [*SAMPLE_LDM, "--guidance", "-1"], 2, ("--guidance", ">= 0")),
    ("steps-0", [*SAMPLE_LDM, "--steps", "0"], 2, ("--steps", ">= 1")),
    ("steps-negative", [*SAMPLE_LDM, "--steps", "-3"], 2, ("--steps", ">= 1")),
    ("steps-fraction", [*SAMPLE_LDM, "--steps", "2.5"], 2, ("--steps", "integer")),
    ("eta-negative", [*SAMPLE_LDM, "--eta", "-1"], 2, ("--eta", ">= 0")),
    ("eta-nan", [*SAMPLE_LDM, "--eta", "nan"], 2, ("--eta", "finite")),
    ("eta-above-1", [*SAMPLE_LDM, "--eta", "1.5"], 2, ("--eta", "<= 1")),
    ("n-0", [*SAMPLE_LDM, "-n", "0"], 2, ("-n", ">= 1")),
    ("seed-negative", [*SAMPLE_LDM, "--seed", "-1"], 2, ("--seed", ">= 0")),
    ("toy-steps-0", ["sample", "toy", "--ckpt", "R", "--out", "O", "--steps", "0"], 2, ("--steps",)),
    ("toy-eta-2", ["sample", "toy", "--ckpt", "R", "--out", "O", "--eta", "2"], 2, ("--eta",)),
    ("eval-pairs-0", [*EVAL, "--n-pairs", "0"], 2, ("--n-pairs", ">= 1")),
    ("eval-threshold-nan", [*EVAL, "--mask-threshold", "nan"], 2, ("--mask-threshold",)),
    ("eval-range-0", [*EVAL, "--data-range", "0"], 2, ("--data-range", "> 0")),
    ("eval-permutations", [*EVAL, "--permutations", "-1"], 2, ("--permutations",)),
    ("phantoms-spacing-nan", ["phantoms", "--out", "O", "--spacing", "nan"], 2, ("--spacing",)),
    ("phantoms-n-0", ["phantoms", "--out", "O", "-n", "0"], 2, ("-n",)),
    ("demo-steps-0", ["demo", "--out", "O", "--steps", "0"], 2, ("--steps",)),
    ("bench-preset", ["bench", "--presets", "nope"], 2, ("--presets", "unknown", "tiny")),
    ("bench-sizes", ["bench", "--sizes", "8,x"], 2, ("--sizes", "integers")),
    ("bench-dims", ["bench", "--spatial-dims", "4"], 2, ("--spatial-dims", "<= 3")),
    ("bench-budget", ["bench", "--budget", "nan"], 2, ("--budget", "finite")),
    # config values: checked when the config is loaded, before data or checkpoints
    ("set-lr-nan", ["train", "toy", "--out", "O", "--set", "train.lr=nan"], 2, ("train.lr", "finite")),
    ("set-lr-inf", ["train", "toy", "--out", "O", "--set", "train.lr=inf"], 2, ("train.lr", "finite")),
    ("set-lr-negative", ["train", "toy", "--out", "O", "--set", "train.lr=-1"], 2, ("train.lr", ">= 0")),
    (
        "ldm-batch-size-section",
        ["train", "ldm", "--stage", "ae", "--data", "D", "--out", "O", "--set", "train_ae.batch_size=0"],
        2,
        ("train_ae.batch_size", "> 0"),
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "code", "words"), [r[1:] for r in VALUE_ROWS], ids=[r[0] for r in VALUE_ROWS]
)
def test_bad_value_is_a_usage_error(tmp_path, monkeypatch, argv, code, words):
    monkeypatch.chdir(tmp_path)  # relative dummy paths: nothing may be written next to the tests
    got, text = run_cli(*argv)
    assert_clean_error(got, text, code, words)
    assert not (tmp_path / "O").exists() and not (tmp_path / "NO_OUT").exists()


def _toy(run: Path) -> list[str]:
    return ["sample", "toy", "--ckpt", str(run), "-n", "1", "--steps", "2"]


# (id, make the bad output place in tmp -> path, argv given (run, out, tmp), exit code, words)
OutRow = tuple[
    str, Callable[[Path], Path], Callable[[Path, Path, Path], list[str]], int, tuple[str, ...]
]
OUT_ROWS: list[OutRow] = [
    ("train-out-file", _file, lambda r, o, t: ["train", "toy", "--out", str(o), *TINY], 2, ("afile", "is a file")),
    ("sample-out-file", _file, lambda r, o, t: [*_toy(r), "--out", str(o)], 2, ("afile", "is a file")),
    (
        "evaluate-out-file",
        _file,
        lambda r, o, t: ["evaluate", "--real", str(_set_of_volumes(t / "a")), "--synthetic", str(t / "a"), "--out", str(o), "--no-features"],
        2,
        ("afile", "is a file"),
    ),
    ("phantoms-out-file", _file, lambda r, o, t: ["phantoms", "--out", str(o), "-n", "1"], 2, ("afile", "is a file")),
    ("out-under-a-file", lambda t: _file(t) / "sub", lambda r, o, t: [*_toy(r), "--out", str(o)], 2, ("afile", "file")),
    ("out-unwritable", lambda t: Path("/proc/brainsynth_out"), lambda r, o, t: ["train", "toy", "--out", str(o), *TINY], 2, ("/proc/brainsynth_out", "cannot create")),
    ("sample-non-empty", _non_empty, lambda r, o, t: [*_toy(r), "--out", str(o)], 2, ("not empty", "--overwrite")),
    (
        "sample-ldm-non-empty",  # refused before the checkpoint is read (a toy run here)
        _non_empty,
        lambda r, o, t: ["sample", "ldm", "--ckpt", str(r), "--out", str(o)],
        2,
        ("not empty", "sample_009_T1w.nii.gz"),
    ),
    (
        "evaluate-non-empty",
        _non_empty,
        lambda r, o, t: ["evaluate", "--real", str(_set_of_volumes(t / "a")), "--synthetic", str(t / "a"), "--out", str(o), "--no-features"],
        2,
        ("not empty", "--overwrite"),
    ),
    ("phantoms-non-empty", _non_empty, lambda r, o, t: ["phantoms", "--out", str(o), "-n", "1"], 2, ("not empty",)),
    ("demo-non-empty", _non_empty, lambda r, o, t: ["demo", "--out", str(o)], 2, ("not empty", "--overwrite")),
    ("train-existing-run", lambda t: t / "run", lambda r, o, t: ["train", "toy", "--out", str(_copy(r, o)), *TINY], 2, ("already holds checkpoints", "--resume")),
]  # fmt: skip


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


@pytest.mark.parametrize(
    ("make", "argv", "code", "words"), [r[1:] for r in OUT_ROWS], ids=[r[0] for r in OUT_ROWS]
)
def test_bad_output_place_is_refused_before_work(tmp_path, toy_run, make, argv, code, words):
    out = make(tmp_path)
    before = sorted(p.name for p in out.iterdir()) if out.is_dir() else None
    got, text = run_cli(*argv(toy_run, out, tmp_path))
    assert_clean_error(got, text, code, words)
    if before is not None:  # nothing added to or removed from a refused folder
        assert sorted(p.name for p in out.iterdir()) == before


def test_overwrite_replaces_only_the_commands_own_outputs(tmp_path, toy_run):
    out = tmp_path / "s"
    assert run_cli(*_toy(toy_run), "--out", str(out))[0] == 0
    (out / "notes.txt").write_text("mine")
    code, text = run_cli(*_toy(toy_run), "--out", str(out), "--overwrite")
    assert_clean_error(code, text, 2, ("notes.txt", "not this command's outputs"))
    assert (out / "notes.txt").exists()
    (out / "notes.txt").unlink()
    code, text = run_cli(*_toy(toy_run), "--out", str(out), "--overwrite", "--seed", "3")
    assert code == 0, text
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "montage.png", "samples.npy"]
    assert "seed: 3" in (out / "config.yaml").read_text()


def test_paired_evaluation_of_a_set_against_itself_reports_infinite_psnr(tmp_path):
    a = _set_of_volumes(tmp_path / "a", 3)
    code, text = run_cli(
        "evaluate",
        "--real",
        a,
        "--synthetic",
        a,
        "--out",
        tmp_path / "e",
        "--paired",
        "--no-progress",
    )
    assert code == 0, text
    assert "mask_psnr: inf for all 3 pairs" in text and "mask_ssim: 1" in text
    assert '"n_infinite": 3' in (tmp_path / "e" / "metrics.json").read_text()


def test_bench_exits_1_when_configurations_fail():
    # a 3x3 grid cannot be halved by the UNet: the configuration fails, the table still prints
    code, text = run_cli(
        "bench",
        "--presets",
        "tiny",
        "--sizes",
        "3,8",
        "--spatial-dims",
        "2",
        "--steps",
        "1",
        "--budget",
        "1",
        "--device",
        "cpu",
    )
    assert_clean_error(code, text, 1, ("1 of 2 configuration(s) failed", "cpu tiny 3"))
    assert "| cpu | tiny | 0.04 | 8x8 |" in text  # the good one was still measured


def test_a_checkpoint_of_another_method_is_refused(tmp_path, toy_run):
    code, text = run_cli("sample", "ldm", "--ckpt", toy_run, "--out", tmp_path / "s")
    assert_clean_error(code, text, 2, ("checkpoint of method 'toy', not 'ldm'",))
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


def test_an_implausible_requested_covariate_is_refused(tmp_path):
    from brainsynth.errors import InputError
    from brainsynth.methods.ldm.sample import fill_covariates

    with pytest.raises(InputError, match="requested age: 1e\\+09 is outside the plausible range"):
        fill_covariates({"age": 1e9}, [], None, 1, np.random.default_rng(0))  # type: ignore[arg-type]
