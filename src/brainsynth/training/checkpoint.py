"""Checkpoints: a folder per step, written whole or not at all.

    RUN/checkpoints/step_0000500/model.safetensors   raw weights
    RUN/checkpoints/step_0000500/ema.safetensors     EMA weights (what sampling uses)
    RUN/checkpoints/step_0000500/state.pt            optimiser, scheduler, RNG states, data position
    RUN/checkpoints/step_0000500/meta.json           step, resolved config, versions
    RUN/checkpoints/latest                           name of the newest complete folder

The folder is written under a hidden temporary name, flushed to disk, then renamed; ``latest`` is
replaced atomically after the rename, so a crash at any point leaves the previous checkpoint intact
and loadable. Should ``latest`` ever name a missing folder, readers fall back to the newest complete
``step_*`` folder. ``state.pt`` holds only tensors and plain Python values, so it loads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from brainsynth import __version__
from brainsynth.errors import InputError
from brainsynth.io import write_text_atomic

FORMAT = 1
_STEP_RE = re.compile(r"^step_(\d+)$")


def _cpu_copies(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # own storage per tensor: safetensors refuses shared or strided views (tied weights)
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory
    finally:
        os.close(fd)


def step_dir_name(step: int) -> str:
    return f"step_{step:07d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete step folders of a run (or of its ``checkpoints/`` folder), oldest first."""
    root = _root(Path(run_dir))
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_dir() and (p / "meta.json").exists():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def _root(path: Path) -> Path:
    return path / "checkpoints" if (path / "checkpoints").is_dir() else path


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    weights: dict[str, dict[str, torch.Tensor]],
    state: dict,
    config: dict,
    keep: int = 2,
    extra_meta: dict | None = None,
) -> Path:
    """Write ``RUN/checkpoints/step_<step>/`` atomically and point ``latest`` at it.

    ``weights``: {"model": state_dict, "ema": state_dict, ...}, one safetensors file each;
    ``state``: what resuming needs (``torch.save``); ``config``: the resolved config (JSON-able).
    Keeps the newest ``keep`` step folders.
    """
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = step_dir_name(step)
    final = root / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        files = {}
        for key, sd in weights.items():
            path = tmp / f"{key}.safetensors"
            save_file(_cpu_copies(sd), str(path), metadata={"step": str(step), "format": "pt"})
            files[path.name] = path.stat().st_size
        torch.save(state, tmp / "state.pt")
        files["state.pt"] = (tmp / "state.pt").stat().st_size
        meta = {
            "format": FORMAT,
            "step": step,
            "config": config,
            "brainsynth_version": __version__,
            "torch_version": torch.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": files,
            **(extra_meta or {}),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        for f in tmp.iterdir():
            _fsync(f)
        _fsync(tmp)
        if final.exists():  # re-saving a step (e.g. a resumed run that was already finished)
            old = root / f".old.{name}.{os.getpid()}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
        _fsync(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_text_atomic(root / "latest", name + "\n")
    _prune(root, keep, final)
    return final


def _prune(root: Path, keep: int, current: Path) -> None:
    steps = list_checkpoints(root)
    for old in steps[: max(len(steps) - max(keep, 1), 0)]:
        if old != current:
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".step_*"):  # temporary folders left by a crash
        shutil.rmtree(stale, ignore_errors=True)


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder, its ``checkpoints/`` folder, or a step folder -> the step folder."""
    p = Path(path)
    if (p / "meta.json").exists():
        return p
    if not p.exists():
        raise InputError(p, "not found")
    for root in (p, p / "checkpoints"):
        latest = root / "latest"
        if latest.exists():
            target = root / latest.read_text().strip()
            if (target / "meta.json").exists():
                return target
        found = list_checkpoints(root)
        if found:
            return found[-1]
    raise InputError(
        p, "no checkpoint here (expected a run folder, checkpoints/ or a step_* folder)"
    )


def has_checkpoint(path: str | Path) -> bool:
    try:
        resolve_checkpoint(path)
    except InputError:
        return False
    return True


def read_meta(path: str | Path) -> dict:
    d = resolve_checkpoint(path)
    try:
        return json.loads((d / "meta.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(d / "meta.json", f"unreadable checkpoint metadata ({e})") from e


def load_checkpoint(
    path: str | Path,
    names: tuple[str, ...] = ("model", "ema"),
    with_state: bool = True,
    map_location: str | torch.device = "cpu",
) -> dict:
    """``{"meta": dict, "dir": Path, "<name>": state_dict, ..., "state": dict | None}``."""
    d = resolve_checkpoint(path)
    out: dict = {"meta": read_meta(d), "dir": d}
    for n in names:
        f = d / f"{n}.safetensors"
        if not f.exists():
            raise InputError(
                f, f"missing from checkpoint (has {sorted(x.name for x in d.iterdir())})"
            )
        out[n] = load_file(str(f), device=str(map_location))
    out["state"] = None
    if with_state:
        try:
            out["state"] = torch.load(d / "state.pt", map_location=map_location, weights_only=True)
        except (OSError, RuntimeError) as e:
            raise InputError(d / "state.pt", f"cannot load training state ({e})") from e
    return out


def load_model_for_inference(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(resolved config dict, EMA weights) of a run's latest checkpoint (or of a step folder)."""
    ck = load_checkpoint(path, names=("ema",), with_state=False)
    return ck["meta"]["config"], ck["ema"]
