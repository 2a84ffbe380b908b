"""Checkpoints: a folder per step, written whole or not at all.

    RUN/checkpoints/step_0000500/model.safetensors   raw weights
    RUN/checkpoints/step_0000500/ema.safetensors     EMA weights (what sampling uses)
    RUN/checkpoints/step_0000500/state.pt            optimiser, RNG states, data position
    RUN/checkpoints/step_0000500/meta.json           step, resolved config, versions
    RUN/checkpoints/latest                           name of the newest complete folder

The folder is written under a temporary name and renamed; ``latest`` is replaced atomically after
the rename, so a crash at any point leaves the previous checkpoint intact and loadable.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from brainsynth import __version__
from brainsynth.errors import InputError
from brainsynth.io import write_text_atomic


def _contiguous(state: dict) -> dict:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    weights: dict[str, dict],
    state: dict,
    config: dict,
    keep: int = 2,
) -> Path:
    """``weights``: {"model": state_dict, "ema": state_dict, ...}; ``state``: anything torch.save takes."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:07d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".step_{step:07d}.", dir=root))
    try:
        for name, sd in weights.items():
            save_file(_contiguous(sd), str(tmp / f"{name}.safetensors"))
        torch.save(state, tmp / "state.pt")
        meta = {
            "step": step,
            "config": config,
            "brainsynth": __version__,
            "torch": torch.__version__,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_text_atomic(root / "latest", final.name)
    _prune(root, keep)
    return final


def _prune(root: Path, keep: int) -> None:
    steps = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in steps[: max(len(steps) - keep, 0)]:
        shutil.rmtree(old, ignore_errors=True)


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder, its checkpoints/ folder, or a step folder -> the step folder."""
    p = Path(path)
    for cand in (p, p / "checkpoints"):
        if (cand / "latest").exists():
            return cand / (cand / "latest").read_text().strip()
    if (p / "meta.json").exists():
        return p
    raise InputError(p, "no checkpoint here (expected a run folder, checkpoints/ or step_* folder)")


def load_checkpoint(path: str | Path, names=("model", "ema"), with_state: bool = True) -> dict:
    """{"meta": dict, "<name>": state_dict, ..., "state": dict | None}."""
    d = resolve_checkpoint(path)
    out: dict = {"meta": json.loads((d / "meta.json").read_text()), "dir": d}
    for n in names:
        f = d / f"{n}.safetensors"
        if f.exists():
            out[n] = load_file(str(f))
    out["state"] = torch.load(d / "state.pt", weights_only=False) if with_state else None
    return out


def load_model_for_inference(path: str | Path) -> tuple[dict, dict]:
    """(resolved config dict, EMA weights) of a run's latest checkpoint."""
    ck = load_checkpoint(path, names=("ema",), with_state=False)
    return ck["meta"]["config"], ck["ema"]
