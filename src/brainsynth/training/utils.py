"""Small pieces of the training loop: moving batches to a device, the LR schedule, bf16 support of
the CPU, activation checkpointing, checkpointable RNG states and config differences."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import torch
from torch import nn

from brainsynth.config import TrainConfig
from brainsynth.diffusion.base import Cond

# stream names for derive_seed(seed, rank, STREAM)
_NOISE, _GLOBAL, _WORKERS, _EPOCH = 1, 2, 3, 4


def to_device(obj: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move the tensors of a (nested) batch to ``device``; other values pass through."""
    if torch.is_tensor(obj):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, Cond):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device, non_blocking) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device, non_blocking) for v in obj)
    return obj


def cpu_has_bf16() -> bool:
    """Whether oneDNN has native bf16 kernels on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """LR multiplier for optimiser step ``step`` (0-based): linear warm-up over ``lr_warmup``
    steps, then constant or a cosine decay to 0 at ``steps``."""
    if cfg.lr_warmup > 0 and step < cfg.lr_warmup:
        return (step + 1) / cfg.lr_warmup
    if cfg.lr_schedule == "cosine":
        span = max(cfg.steps - cfg.lr_warmup, 1)
        progress = min(max(step - cfg.lr_warmup, 0) / span, 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def enable_grad_checkpointing(model: nn.Module) -> int:
    """Switch on activation checkpointing in every submodule that offers it (a boolean attribute
    ``grad_checkpointing`` or a ``set_grad_checkpointing(bool)`` method); returns how many."""
    n = 0
    for m in model.modules():
        setter = getattr(m, "set_grad_checkpointing", None)
        if callable(setter):
            setter(True)
            n += 1
        elif isinstance(getattr(m, "grad_checkpointing", None), bool):
            setattr(m, "grad_checkpointing", True)  # noqa: B010 - typed as a module attribute
            n += 1
    return n


# -- RNG state as tensors and plain values (loadable with torch.load(weights_only=True)) -----------


def _rng_state(generator: torch.Generator) -> dict:
    _, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    version, py_state, gauss_next = random.getstate()
    return {
        "generator": generator.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(gauss),
        },
        "python": {
            "version": int(version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }


def _set_rng_state(state: dict, generator: torch.Generator) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            "MT19937",
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        a, b = list(a), list(b)
    return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]
