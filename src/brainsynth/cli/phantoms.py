"""``brainsynth phantoms``: write the embedded phantom cohort (BIDS)."""

from __future__ import annotations

from pathlib import Path

import typer


def phantoms(
    out: Path = typer.Option(..., "--out", help="BIDS folder to write"),
    n: int = typer.Option(8, "-n", help="number of subjects"),
    spacing: float = typer.Option(2.0, help="voxel size in mm"),
    seed: int = typer.Option(0, help="random seed (same seed, same files)"),
    surfaces: bool = typer.Option(False, "--surfaces", help="also write warped fsaverage5 meshes"),
) -> None:
    """Make a phantom cohort from nilearn's MNI152 2009 template (no download, no ../shared)."""
    from brainsynth.data.phantoms import make_cohort

    typer.echo(f"phantom cohort in {make_cohort(out, n, spacing, seed, surfaces)}")


def register(app: typer.Typer) -> None:
    app.command()(phantoms)
