"""The ``brainsynth`` command: one entry point, each subcommand a thin call into the library."""

from __future__ import annotations

import importlib
import sys

import typer

from brainsynth import __version__
from brainsynth.errors import BrainsynthError

app = typer.Typer(
    name="brainsynth",
    help="Generate and restore 3D brain MRIs with diffusion models, grounded in anatomy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module defines ``register(app)``; a module that is not there yet is simply skipped.
_COMMAND_MODULES = (
    "prepare",
    "phantoms",
    "train",
    "sample",
    "ldm",
    "restore",
    "deform",
    "cortex",
    "evaluate",
    "demo",
    "bench",
    "models",
)


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"brainsynth.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"brainsynth.cli.{name}":
                continue
            raise
        mod.register(app)


@app.callback()
def _root() -> None:
    """brainsynth: diffusion models for 3D brain MRI synthesis and restoration."""


@app.command()
def version() -> None:
    """Print the package version."""
    typer.echo(__version__)


_register_all()


def main() -> None:
    try:
        app()
    except BrainsynthError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
