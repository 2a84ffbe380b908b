"""``brainsynth sample METHOD ...``: one subcommand per method (each method's cli module adds it)."""

from __future__ import annotations

import typer

sample_app = typer.Typer(help="Generate volumes from a trained method.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(sample_app, name="sample")
