"""Which model each method of the demo uses: the shipped one, or a phantom run trained on the spot.

The planned model names are :data:`MODEL_NAMES`, one place to change them. A model is *shipped*
when ``MODELS/NAME/model.json`` exists (``brainsynth.models``); it is then checked before any work
starts (its ``model.json`` readable and of the right method, its checkpoints complete), so that a
damaged model is one clear error naming it instead of a traceback after minutes of training. A
method without its model falls back to a tiny phantom run (``demo.train``), and says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from brainsynth.errors import InputError
from brainsynth.models import INFO, card_lines, find_model, models_dir

# method -> the name of its shipped model in MODELS (``brainsynth export --name``)
MODEL_NAMES: dict[str, str] = {
    "ldm": "ldm-4mm",
    "cortex": "cortex-4mm",
    "deform": "deform-4mm",
    "restore": "restore-4mm",
}
METHODS: tuple[str, ...] = tuple(MODEL_NAMES)
CARD_LINES = 6  # lines of a model card shown in the report


@dataclass
class Source:
    """Where one method's model comes from. ``path`` is the model folder (shipped) or the phantom
    run (a fallback, set once trained); ``info`` is the model's ``model.json``; ``card`` the first
    lines of its model card; ``steps`` the training steps of a fallback."""

    method: str
    name: str
    shipped: bool
    path: Path | None = None
    info: dict = field(default_factory=dict)
    card: list[str] = field(default_factory=list)
    steps: int | None = None

    def summary(self) -> str:
        """One line for the console and the report: which model, or that it fell back and why."""
        if self.shipped:
            facts = ", ".join(model_facts(self.info))
            return f"model {self.name} from {self.path} ({facts})"
        steps = "a" if self.steps is None else f"a {self.steps}-step"
        return (
            f"model {self.name} not found in {models_dir()}: trained {steps} phantom model "
            "instead; it shows the pipeline, not the quality"
        )


def model_facts(info: dict) -> list[str]:
    """model.json's method, step, size and grid as short "key value" strings."""
    out = [f"method {info.get('method', '?')}", f"step {info.get('step', '?')}"]
    size = info.get("total_bytes")
    if isinstance(size, (int, float)):
        out.append(f"{size / 1e6:.1f} MB")
    grid = info.get("grid")
    if isinstance(grid, dict) and "spacing" in grid:
        out.append(f"{grid['spacing']} mm grid {grid.get('shape')}")
    return out


def _model_info(name: str, folder: Path) -> dict:
    try:
        info = json.loads((folder / INFO).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(folder / INFO, f"model {name}: unreadable {INFO} ({e})") from e
    if not isinstance(info, dict):
        raise InputError(folder / INFO, f"model {name}: {INFO} is not a JSON object")
    return info


def _runs(method: str, folder: Path) -> list[Path]:
    """The trainer runs a model of ``method`` must hold to be used (``export.plan``'s parts that
    the demo's samplers load): deform's fields stage; ldm's diffusion run and its autoencoder."""
    from brainsynth.training.checkpoint import path_in_run, read_meta, resolve_checkpoint

    if method == "deform":
        return [folder / "fields"]
    if method != "ldm":
        return [folder]
    config = read_meta(folder).get("config", {})
    if config.get("stage") == "ae":
        raise InputError(folder, "an autoencoder alone: the demo samples from the diffusion model")
    return [folder, path_in_run(resolve_checkpoint(folder), config.get("ae_dir", "ae"))]


def check_model(method: str, name: str, folder: Path) -> Source:
    """The shipped model ``name`` in ``folder`` as a Source, or one InputError naming the model
    and what is wrong (unreadable model.json, another method, a missing or damaged checkpoint)."""
    from brainsynth.training.checkpoint import read_meta

    info = _model_info(name, folder)
    if info.get("method") != method:
        raise InputError(
            folder, f"model {name} is of method {info.get('method')!r}, the demo needs {method!r}"
        )
    try:
        for run in _runs(method, folder):
            read_meta(run)  # a complete checkpoint: files present, sizes as listed
    except InputError as e:
        raise InputError(
            folder,
            f"model {name} is not usable ({e}); export it again (brainsynth export --overwrite) or "
            "remove the folder to let the demo train a phantom model instead",
        ) from e
    return Source(method, name, True, folder, info, card_lines(folder, CARD_LINES))


def find_sources(names: dict[str, str] | None = None) -> dict[str, Source]:
    """Each method's Source: its shipped model (checked) when MODELS has it, else a fallback."""
    names = MODEL_NAMES if names is None else names
    out = {}
    for method, name in names.items():
        folder = find_model(name)
        out[method] = (
            Source(method, name, False) if folder is None else check_model(method, name, folder)
        )
    return out
