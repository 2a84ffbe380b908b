"""Damaged checkpoints at the command line: each row damages a copy of one tiny toy run, then runs a
command on it; it must end in one clean line (exit 2) naming the file and the problem, or go on
from an intact earlier checkpoint with a warning (exit 0).

The run is trained once per module (steps 2 and 4 kept); rows that need a single checkpoint delete
step 2 first. Warnings are collected and appended to the command's output, as a user sees them on
stderr.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.bad_inputs.cli import assert_clean_error, run_cli

TINY = [
    "--set", "train.steps=4",
    "--set", "train.batch_size=2",
    "--set", "train.log_every=2",
    "--set", "train.ckpt_every=2",
    "--set", "data.size=8",
    "--set", "diffusion.num_timesteps=10",
    "--device", "cpu",
]  # fmt: skip
STEP2, STEP4 = "checkpoints/step_0000002", "checkpoints/step_0000004"


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("toy") / "run"
    code, text = run_cli("train", "toy", "--out", str(run), *TINY)
    assert code == 0, text
    assert (run / STEP2 / "meta.json").exists() and (run / STEP4 / "meta.json").exists()
    return run


def _truncate(f: Path) -> None:
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _flip_last_byte(f: Path) -> None:
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))


def _only_step4(run: Path) -> None:
    shutil.rmtree(run / STEP2)


def _all(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        for s in steps:
            s(run)

    return damage


def _sample(run: Path, out: Path) -> list[str]:
    return ["sample", "toy", "--ckpt", str(run), "--out", str(out), "-n", "1", "--steps", "2"]


def _resume(run: Path, out: Path) -> list[str]:
    return ["train", "toy", "--out", str(run), "--resume", *TINY]


# (id, damage the run copy, argv given (run, a fresh output folder), exit code, words)
Row = tuple[str, Callable[[Path], None], Callable[[Path, Path], list[str]], int, tuple[str, ...]]
ROWS: list[Row] = [
    (
        "sample-truncated-ema-only-checkpoint",
        _all(_only_step4, lambda r: _truncate(r / STEP4 / "ema.safetensors")),
        _sample, 2, ("ema.safetensors", "truncated or damaged", "no intact checkpoint"),
    ),
    (
        "sample-truncated-ema-falls-back",
        lambda r: _truncate(r / STEP4 / "ema.safetensors"),
        _sample, 0, ("warning", "ema.safetensors", "falling back", "step_0000002"),
    ),
    (
        "sample-named-step-flipped-byte",
        lambda r: _flip_last_byte(r / STEP4 / "ema.safetensors"),
        lambda r, o: _sample(r / STEP4, o), 2, ("step_0000004", "ema.safetensors", "checksum"),
    ),
    (
        "sample-named-step-without-weights",
        lambda r: (r / STEP4 / "ema.safetensors").unlink(),
        lambda r, o: _sample(r / STEP4, o), 2, ("ema.safetensors", "missing"),
    ),
    (
        "sample-meta-not-json",
        _all(_only_step4, lambda r: (r / STEP4 / "meta.json").write_text("{not json")),
        _sample, 2, ("meta.json", "damaged checkpoint metadata"),
    ),
    (
        "resume-truncated-latest-model-falls-back",
        lambda r: _truncate(r / STEP4 / "model.safetensors"),
        _resume, 0, ("warning", "model.safetensors", "falling back", "step_0000002"),
    ),
    (
        "resume-garbage-state",
        _all(_only_step4, lambda r: (r / STEP4 / "state.pt").write_bytes(b"garbage " * 64)),
        _resume, 2, ("state.pt", "truncated or damaged"),
    ),
    (
        "resume-meta-not-json",
        _all(_only_step4, lambda r: (r / STEP4 / "meta.json").write_bytes(b"\x00\xff" * 10)),
        _resume, 2, ("meta.json", "damaged"),
    ),
]  # fmt: skip


def _run_with_warnings(*argv: str) -> tuple[int, str]:
    """``run_cli`` with the warnings it raised appended as the user would see them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, text = run_cli(*argv)
    return code, text + "".join(f"\nwarning: {w.message}" for w in caught)


@pytest.mark.parametrize(
    ("damage", "argv", "code", "words"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS]
)
def test_damaged_checkpoint(tmp_path, toy_run, damage, argv, code, words):
    run = shutil.copytree(toy_run, tmp_path / "run")
    damage(run)
    out = tmp_path / "samples"  # never created beforehand: sampling may refuse a non-empty --out
    got, text = _run_with_warnings(*argv(run, out))
    assert_clean_error(got, text, code, words)
    assert text.count("\nwarning: ") <= 1, text  # one damaged folder, one warning
    if code == 0 and argv is _resume:  # training went on from step 2 and rewrote step 4 whole
        assert "step_0000004" in {p.name for p in (run / "checkpoints").iterdir()}
        got, text = _run_with_warnings(*_sample(run, tmp_path / "after"))
        assert got == 0 and "falling back" not in text, text
