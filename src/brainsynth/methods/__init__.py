"""Methods: thin compositions of data, network, noise process and the shared trainer.

The registry maps a method name to the module that implements it; modules are imported only when
asked for (importing one pulls torch and MONAI). A method module provides::

    Config                                   frozen dataclass: the method's whole config
    train(cfg, data, out, device, resume)    -> Path: the run folder
    sample(ckpt, out, *, n, ...)             -> list[Path]: the files written

plus whatever the method needs beyond that (``ldm`` has two training stages). Its CLI lives in
``brainsynth.cli``: a subcommand of ``brainsynth train`` and of ``brainsynth sample``.

Adding a method: write ``methods/<name>.py`` and add one line to ``METHODS``.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import torch

from brainsynth.errors import InputError

METHODS: dict[str, str] = {
    "toy": "brainsynth.methods.toy",
    "ldm": "brainsynth.methods.ldm",
    "cortex": "brainsynth.methods.cortex",
    "deform": "brainsynth.methods.deform",
    "restore": "brainsynth.methods.restore",
}


class Method(Protocol):
    """What the registry expects of a method module (a structural type, for readers and mypy)."""

    Config: type

    def train(
        self, cfg: Any, data: Path | None, out: Path, device: torch.device, resume: bool
    ) -> Path: ...

    def sample(self, ckpt: Path, out: Path, *, n: int, **kwargs: Any) -> list[Path]: ...


def register_method(name: str, module: str) -> None:
    """Map ``name`` to an importable module path (for methods living outside this package)."""
    METHODS[name] = module


def available_methods() -> list[str]:
    """Registered methods whose module exists in this installation."""
    out = []
    for name, mod in METHODS.items():
        try:
            if importlib.util.find_spec(mod) is not None:
                out.append(name)
        except ModuleNotFoundError:
            continue
    return out


def get_method(name: str) -> ModuleType:
    """The module of method ``name``; an error lists the available ones."""
    if name not in METHODS:
        raise InputError(None, f"unknown method {name!r}; available: {available_methods()}")
    try:
        return importlib.import_module(METHODS[name])
    except ModuleNotFoundError as e:
        if e.name == METHODS[name]:
            raise InputError(
                None, f"method {name!r} is not implemented yet; available: {available_methods()}"
            ) from e
        raise
