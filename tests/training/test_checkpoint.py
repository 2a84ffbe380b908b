"""Checkpoints: atomic folders, latest pointer, keep-last-K, metadata, inference loading."""

from __future__ import annotations

import json
import os
import stat

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


# -- verification, fallback, deletion, modes ------------------------------------------------------
def _two_steps(tmp_path):
    """Steps 1 and 2 (latest) of a run; returns their folders."""
    return (
        save_checkpoint(tmp_path, 1, _w(1.0), {"s": 1}, {"a": 1}),
        save_checkpoint(tmp_path, 2, _w(2.0), {"s": 2}, {"a": 2}),
    )


def _truncate(f, keep: float = 0.5) -> None:
    data = f.read_bytes()
    f.write_bytes(data[: int(len(data) * keep)])


def _flip_last_byte(f) -> None:
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF  # inside the tensor data: safetensors itself would not notice
    f.write_bytes(bytes(data))


def test_meta_records_size_and_sha256(tmp_path):
    path = save_checkpoint(tmp_path, 1, _w(1.0), {}, {})
    files = json.loads((path / "meta.json").read_text())["files"]
    assert sorted(files) == ["ema.safetensors", "model.safetensors", "state.pt"]
    for name, entry in files.items():
        assert entry["size"] == (path / name).stat().st_size
        assert len(entry["sha256"]) == 64


@pytest.mark.parametrize("damage", [_truncate, _flip_last_byte], ids=["truncated", "flipped"])
def test_damaged_latest_falls_back_to_the_previous_step(tmp_path, damage):
    first, latest = _two_steps(tmp_path)
    damage(latest / "model.safetensors")
    with pytest.warns(UserWarning, match="model.safetensors.*falling back to .*step_0000001"):
        loaded = load_checkpoint(tmp_path)
    assert loaded["dir"] == first and loaded["state"] == {"s": 1}
    assert torch.equal(loaded["model"]["w"], torch.ones(2))
    assert torch.equal(loaded["ema"]["w"], torch.full((2,), 1.5))


def test_damaged_state_falls_back_on_resume_but_not_for_inference(tmp_path):
    first, latest = _two_steps(tmp_path)
    _flip_last_byte(latest / "state.pt")
    with pytest.warns(UserWarning, match="state.pt.*checksum"):
        assert load_checkpoint(tmp_path)["dir"] == first
    # sampling reads (and checks) only ema.safetensors: the intact latest EMA is used
    _, ema = load_model_for_inference(tmp_path)
    assert torch.equal(ema["w"], torch.full((2,), 2.5))


def test_checksums_are_computed_once_per_load_and_only_for_files_read(tmp_path, monkeypatch):
    _two_steps(tmp_path)
    calls = []
    real = ck._sha256
    monkeypatch.setattr(ck, "_sha256", lambda p: calls.append(p.name) or real(p))
    load_checkpoint(tmp_path)
    assert sorted(calls) == ["ema.safetensors", "model.safetensors", "state.pt"]
    calls.clear()
    load_model_for_inference(tmp_path)
    assert calls == ["ema.safetensors"]


def _garbage_state(d):
    (d / "state.pt").write_bytes(b"garbage " * 40)


def _bad_meta(d):
    (d / "meta.json").write_text("{not json")


def _no_meta(d):
    (d / "meta.json").unlink()


@pytest.mark.parametrize(
    "damage, word",
    [
        (lambda d: _truncate(d / "model.safetensors"), "model.safetensors"),
        (lambda d: _flip_last_byte(d / "ema.safetensors"), "ema.safetensors"),
        (lambda d: (d / "model.safetensors").unlink(), "model.safetensors"),
        (_garbage_state, "state.pt"),
        (_bad_meta, "meta.json"),
        (_no_meta, "meta.json"),
    ],
    ids=["truncated", "flipped", "missing", "garbage-state", "bad-meta", "no-meta"],
)
def test_explicitly_named_damaged_step_is_an_input_error(tmp_path, damage, word):
    _, latest = _two_steps(tmp_path)
    damage(latest)
    with pytest.raises(InputError, match=word) as e:
        load_checkpoint(latest)
    assert e.value.path is not None and e.value.path.endswith(word)


def test_garbage_with_the_right_size_is_caught_even_without_checksums(tmp_path):
    """Old-format metadata (sizes only): a same-size garbage file fails to load and the loader falls
    back instead of raising torch's or safetensors' own error."""
    first, latest = _two_steps(tmp_path)
    _sizes_only(latest)
    size = (latest / "state.pt").stat().st_size
    (latest / "state.pt").write_bytes(b"\x00" * size)
    with pytest.warns(UserWarning, match="state.pt: truncated or damaged training state"):
        assert load_checkpoint(tmp_path)["dir"] == first


def test_no_intact_checkpoint_is_an_input_error(tmp_path):
    first, latest = _two_steps(tmp_path)
    _truncate(first / "ema.safetensors")
    _flip_last_byte(latest / "ema.safetensors")
    with pytest.raises(InputError, match="no intact checkpoint") as e:
        load_model_for_inference(tmp_path)
    assert "step_0000001" in str(e.value) and "step_0000002" in str(e.value)
    with pytest.raises(InputError, match="no intact checkpoint"):
        load_checkpoint(tmp_path / "checkpoints")


def test_folder_with_meta_but_missing_weights_is_not_complete(tmp_path):
    first, latest = _two_steps(tmp_path)
    (latest / "model.safetensors").unlink()
    assert list_checkpoints(tmp_path) == [first]
    assert resolve_checkpoint(tmp_path) == first
    with pytest.warns(UserWarning, match="step_0000002.model.safetensors: missing"):
        assert load_checkpoint(tmp_path)["dir"] == first
    (first / "ema.safetensors").unlink()
    assert list_checkpoints(tmp_path) == []
    assert not ck.has_checkpoint(tmp_path) and not ck.has_checkpoint(latest)


def _visible_steps_are_complete(root) -> None:
    for d in root.glob("step_*"):
        files = json.loads((d / "meta.json").read_text())["files"]
        assert all((d / f).exists() for f in files), f"{d} is a partial folder"


def test_deleting_renames_out_of_view_first(tmp_path, monkeypatch):
    """A kill while pruning (or re-saving) leaves no visible half folder; the next save sweeps the
    hidden leftovers."""
    root = tmp_path / "checkpoints"
    real_rmtree = ck.shutil.rmtree

    def killed(path, *a, **k):  # deleting a checkpoint: one file goes, then the process "dies"
        weights = ck.Path(path) / "model.safetensors"
        if not weights.exists() or ck.Path(path).name.startswith(".step_"):
            return real_rmtree(path, *a, **k)  # the cleanup of the temporary folder
        weights.unlink()
        raise KeyboardInterrupt

    save_checkpoint(tmp_path, 1, _w(1.0), {}, {}, keep=1)
    monkeypatch.setattr(ck.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 2, _w(2.0), {}, {}, keep=1)  # prunes step 1
    _visible_steps_are_complete(root)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 2, _w(20.0), {}, {}, keep=1)  # re-save: the old step 2 goes
    _visible_steps_are_complete(root)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000002"]
    assert torch.equal(load_checkpoint(tmp_path)["model"]["w"], torch.full((2,), 20.0))
    monkeypatch.setattr(ck.shutil, "rmtree", real_rmtree)
    save_checkpoint(tmp_path, 3, _w(3.0), {}, {}, keep=1)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_0000003"]


def test_prune_removes_damaged_earlier_folders(tmp_path):
    first, latest = _two_steps(tmp_path)
    (first / "model.safetensors").unlink()  # e.g. left by an older version's prune
    save_checkpoint(tmp_path, 3, _w(3.0), {}, {}, keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "latest",
        "step_0000002",
        "step_0000003",
    ]


def test_modes_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "run", 1, _w(1.0), {}, {})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755
    for f in [*path.iterdir(), path.parent / "latest"]:
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


def _sizes_only(d) -> None:
    """Rewrite ``d``'s meta.json as the older code wrote it: ``files`` maps names to sizes."""
    meta = json.loads((d / "meta.json").read_text())
    meta["files"] = {name: entry["size"] for name, entry in meta["files"].items()}
    (d / "meta.json").write_text(json.dumps(meta))


def test_old_format_meta_with_sizes_only_still_loads(tmp_path):
    first, latest = _two_steps(tmp_path)
    for d in (first, latest):
        _sizes_only(d)
    loaded = load_checkpoint(tmp_path)
    assert loaded["dir"] == latest and torch.equal(loaded["model"]["w"], torch.full((2,), 2.0))
    assert list_checkpoints(tmp_path) == [first, latest]
    _truncate(latest / "ema.safetensors")  # sizes are still checked
    with pytest.warns(UserWarning, match="ema.safetensors"):
        assert load_model_for_inference(tmp_path)[1]["w"][0] == 1.5
