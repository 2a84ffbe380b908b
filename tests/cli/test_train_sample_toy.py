"""CLI smoke test: ``brainsynth train toy`` then ``brainsynth sample toy`` (tiny, 2D and 3D)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from brainsynth.cli.main import app
from brainsynth.config import load_config
from brainsynth.errors import InputError
from brainsynth.methods import available_methods, get_method, toy
from brainsynth.methods.toy import ToyConfig

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "--set", "train.steps=4",
    "--set", "train.batch_size=4",
    "--set", "train.log_every=2",
    "--set", "train.ckpt_every=2",
    "--set", "data.size=8",
    "--set", "diffusion.num_timesteps=20",
    "--device", "cpu",
]  # fmt: skip


def _ok(result) -> None:
    if result.exit_code != 0:
        raise AssertionError(f"{result.output}\n{result.exception!r}") from result.exception


def test_train_resume_and_sample_2d(tmp_path):
    runner = CliRunner()
    run, out = tmp_path / "run", tmp_path / "samples"
    _ok(runner.invoke(app, ["train", "toy", "--out", str(run), *TINY]))
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["steps"] == 4 and saved["data"]["size"] == 8
    meta = json.loads((run / "checkpoints" / "step_0000004" / "meta.json").read_text())
    assert meta["method"] == "toy" and meta["config"]["train"]["steps"] == 4

    # a second plain run into the same folder is refused; --resume continues it
    again = runner.invoke(app, ["train", "toy", "--out", str(run), *TINY])
    assert isinstance(again.exception, InputError)
    _ok(
        runner.invoke(
            app, ["train", "toy", "--out", str(run), *TINY, "--set", "train.steps=6", "--resume"]
        )
    )
    assert json.loads((run / "log.jsonl").read_text().splitlines()[-1])["step"] == 6

    _ok(
        runner.invoke(
            app,
            [
                "sample",
                "toy",
                "--ckpt",
                str(run),
                "-n",
                "3",
                "--out",
                str(out),
                "--steps",
                "3",
                "--device",
                "cpu",
            ],
        )
    )
    x = np.load(out / "samples.npy")
    assert x.shape == (3, 1, 8, 8) and np.isfinite(x).all() and np.abs(x).max() <= 1
    assert (out / "montage.png").stat().st_size > 0
    used = yaml.safe_load((out / "config.yaml").read_text())
    assert used["sample"]["steps"] == 3 and used["n"] == 3
    # DDIM with eta 0 and a fixed seed is deterministic
    _ok(
        runner.invoke(
            app,
            [
                "sample",
                "toy",
                "--ckpt",
                str(run),
                "-n",
                "3",
                "--out",
                str(tmp_path / "again"),
                "--steps",
                "3",
                "--device",
                "cpu",
            ],
        )
    )
    assert np.array_equal(np.load(tmp_path / "again" / "samples.npy"), x)
    # progress counts the steps of all batches: 3 samples in batches of 2, 3 steps each
    calls = []
    toy.sample(
        run, tmp_path / "b", n=3, steps=3, batch_size=2, progress=lambda i, t: calls.append((i, t))
    )
    assert calls == [(i, 6) for i in range(1, 7)]


def test_train_and_sample_3d_writes_nifti(tmp_path):
    runner = CliRunner()
    run = tmp_path / "run3d"
    _ok(
        runner.invoke(
            app,
            [
                "train",
                "toy",
                "--out",
                str(run),
                *TINY,
                "--set",
                "data.spatial_dims=3",
                "--set",
                "train.steps=2",
            ],
        )
    )
    _ok(
        runner.invoke(
            app,
            [
                "sample",
                "toy",
                "--ckpt",
                str(run),
                "-n",
                "2",
                "--out",
                str(tmp_path / "s"),
                "--steps",
                "2",
                "--sampler",
                "ddpm",
            ],
        )
    )
    assert sorted(p.name for p in (tmp_path / "s").glob("*.nii.gz")) == [
        "sample_000.nii.gz",
        "sample_001.nii.gz",
    ]
    assert np.load(tmp_path / "s" / "samples.npy").shape == (2, 1, 8, 8, 8)


def test_bad_override_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(
        app, ["train", "toy", "--out", str(tmp_path), "--set", "train.stepz=3"]
    )
    assert isinstance(result.exception, InputError) and "train.steps" in str(result.exception)


def test_registry_and_shipped_config():
    assert "toy" in available_methods()
    assert get_method("toy").Config is ToyConfig
    with pytest.raises(InputError, match="unknown method 'nope'"):
        get_method("nope")
    assert load_config(ToyConfig, REPO / "configs" / "toy.yaml").train.steps == 300
