"""Checkpoints: atomic folders, latest pointer, keep-last-K, metadata, inference loading."""

from __future__ import annotations

import json

import pytest
import torch

import brainsynth
import brainsynth.training.checkpoint as ck
from brainsynth.errors import InputError
from brainsynth.training.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    load_model_for_inference,
    resolve_checkpoint,
    save_checkpoint,
)


def _w(v: float) -> dict:
    return {"model": {"w": torch.full((2,), v)}, "ema": {"w": torch.full((2,), v + 0.5)}}


def test_layout_meta_and_inference_loading(tmp_path):
    path = save_checkpoint(tmp_path, 7, _w(1.0), {"step": 7}, {"train": {"lr": 0.1}})
    assert path == tmp_path / "checkpoints" / "step_0000007"
    assert sorted(p.name for p in path.iterdir()) == [
        "ema.safetensors",
        "meta.json",
        "model.safetensors",
        "state.pt",
    ]
    meta = json.loads((path / "meta.json").read_text())
    assert meta["step"] == 7 and meta["config"] == {"train": {"lr": 0.1}}
    assert meta["brainsynth_version"] == brainsynth.__version__
    assert meta["torch_version"] == torch.__version__
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_0000007"
    config, ema = load_model_for_inference(tmp_path)
    assert config == {"train": {"lr": 0.1}} and torch.equal(ema["w"], torch.full((2,), 1.5))
    # the run folder, checkpoints/ and the step folder all resolve to it
    for p in (tmp_path, tmp_path / "checkpoints", path):
        assert resolve_checkpoint(p) == path
    # state.pt loads with weights_only=True
    assert torch.load(path / "state.pt", weights_only=True) == {"step": 7}


def test_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 1, _w(1.0), {"s": 1}, {"a": 1})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck.torch, "save", boom)  # dies after the weights were written
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, 2, _w(2.0), {"s": 2}, {"a": 2})
    monkeypatch.undo()
    assert resolve_checkpoint(tmp_path).name == "step_0000001"
    loaded = load_checkpoint(tmp_path)
    assert torch.equal(loaded["model"]["w"], torch.ones(2)) and loaded["state"] == {"s": 1}
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")] == []


def test_hard_kill_leftovers_are_ignored_and_cleaned(tmp_path):
    """A kill -9 leaves a half-written hidden folder, or (between rename and pointer update) a
    ``latest`` naming an older folder: readers use complete folders only."""
    save_checkpoint(tmp_path, 1, _w(1.0), {}, {})
    root = tmp_path / "checkpoints"
    half = root / ".step_0000002.abc"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"\x00" * 10)
    assert resolve_checkpoint(tmp_path).name == "step_0000001"
    (root / "latest").write_text("step_0000009\n")  # names a folder that never completed
    assert resolve_checkpoint(tmp_path).name == "step_0000001"
    save_checkpoint(tmp_path, 3, _w(3.0), {}, {})
    assert not half.exists() and resolve_checkpoint(tmp_path).name == "step_0000003"


def test_keep_last_k_and_resave(tmp_path):
    for s in range(1, 5):
        save_checkpoint(tmp_path, s, _w(float(s)), {}, {}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000003", "step_0000004"]
    save_checkpoint(tmp_path, 4, _w(40.0), {}, {}, keep=2)  # same step again: replaced whole
    assert torch.equal(load_checkpoint(tmp_path)["model"]["w"], torch.full((2,), 40.0))


def test_tied_and_strided_tensors_are_saved(tmp_path):
    base = torch.arange(6.0).reshape(2, 3)
    weights = {"model": {"a": base, "tied": base, "t": base.t()}}
    save_checkpoint(tmp_path, 1, weights, {}, {})
    got = load_checkpoint(tmp_path, names=("model",), with_state=False)["model"]
    assert torch.equal(got["tied"], base) and torch.equal(got["t"], base.t())


def test_missing_checkpoint_errors_name_the_path(tmp_path):
    with pytest.raises(InputError, match="no checkpoint here"):
        resolve_checkpoint(tmp_path)
    with pytest.raises(InputError, match="not found"):
        resolve_checkpoint(tmp_path / "nope")
    save_checkpoint(tmp_path, 1, {"model": {"w": torch.ones(1)}}, {}, {})
    with pytest.raises(InputError, match="ema.safetensors"):
        load_model_for_inference(tmp_path)
