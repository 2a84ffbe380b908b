"""``brainsynth train METHOD ...``: one subcommand per method (each method's cli module adds it)."""

from __future__ import annotations

import typer

train_app = typer.Typer(help="Train a method's networks.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
