"""The models folder: trained models shipped with the repository, found by name.

Each model is a folder ``MODELS/NAME/`` written by ``brainsynth export`` (``export.py``):
a run folder that the samplers load like any other, with ``model.json`` (method, step, sizes) and
an optional ``README.md`` (the model card). ``MODELS`` is ``$BRAINSYNTH_MODELS`` when set, else
``models/`` at the repository root (beside ``src/``; the package is installed editable), so that a
name such as ``--ckpt restore-4mm`` works from any working directory.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import brainsynth

ENV = "BRAINSYNTH_MODELS"
INFO = "model.json"
CARD = "README.md"
# a bare name: usable wherever a path is, and never mistaken for one
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def models_dir() -> Path:
    """``$BRAINSYNTH_MODELS``, else ``models/`` beside ``src/`` of this checkout."""
    env = os.environ.get(ENV)
    return Path(env) if env else Path(brainsynth.__file__).resolve().parents[2] / "models"


@dataclass(frozen=True)
class Model:
    """One model folder and what its ``model.json`` and card say (``method`` is "?" when
    ``model.json`` cannot be read; ``card`` then says why)."""

    name: str
    path: Path
    method: str
    step: int | None
    total_bytes: int
    card: str


def card_lines(folder: Path, n: int) -> list[str]:
    """The first ``n`` non-empty lines of the model card in ``folder`` (none when it is missing or
    unreadable: the card is optional)."""
    try:
        lines = (folder / CARD).read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    return [x.rstrip() for x in lines if x.strip()][:n]


def _card_line(folder: Path) -> str:
    first = card_lines(folder, 1)
    return first[0].strip().lstrip("#").strip() if first else ""


def _read(folder: Path) -> Model:
    try:
        info = json.loads((folder / INFO).read_text())
        if not isinstance(info, dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return Model(folder.name, folder, "?", None, 0, f"({INFO} unreadable: {e})")
    return Model(
        name=folder.name,
        path=folder,
        method=str(info.get("method", "?")),
        step=info.get("step"),
        total_bytes=int(info.get("total_bytes", 0)),
        card=_card_line(folder),
    )


def list_models(root: str | Path | None = None) -> list[Model]:
    """The models in ``root`` (default :func:`models_dir`): its visible folders with a
    ``model.json``, by name. A missing folder has none."""
    root = models_dir() if root is None else Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if NAME_RE.match(p.name) and (p / INFO).is_file()]
    return [_read(p) for p in sorted(found, key=lambda p: p.name)]


def find_model(name: str, root: str | Path | None = None) -> Path | None:
    """The folder of model ``name``, or None when ``name`` is not a bare name or no such model."""
    if not NAME_RE.match(name):
        return None
    folder = (models_dir() if root is None else Path(root)) / name
    return folder if (folder / INFO).is_file() else None
