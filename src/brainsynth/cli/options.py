"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path

import typer

CONFIG = typer.Option(None, "--config", help="YAML config (values; see configs/)")
SET = typer.Option([], "--set", help="override a config value, e.g. --set train_ae.steps=100")
DEVICE = typer.Option("auto", "--device", help="auto | cpu | cuda")


def resolve_device(name: str):
    from brainsynth.training.distributed import pick_device

    return pick_device(name)


def existing(path: Path, what: str) -> Path:
    if not path.exists():
        from brainsynth.errors import InputError

        raise InputError(path, f"{what} not found")
    return path
