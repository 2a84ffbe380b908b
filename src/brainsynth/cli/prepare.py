"""``brainsynth prepare``: preprocess a dataset into a cache."""

from __future__ import annotations

from pathlib import Path

import typer


def prepare(
    src: Path = typer.Argument(..., help="BIDS folder, CSV/TSV manifest or folder of NIfTI files"),
    out: Path = typer.Option(..., "--out", help="cache folder to write"),
    spacing: float = typer.Option(2.0, help="target voxel size in mm"),
    shape: tuple[int, int, int] = typer.Option((96, 112, 96), help="target grid X Y Z"),
    jobs: int = typer.Option(1, "--jobs", "-j", help="parallel worker processes"),
    split: tuple[float, float, float] = typer.Option((0.8, 0.1, 0.1), help="train val test"),
    seed: int = typer.Option(0, help="seed of the train/val/test split"),
) -> None:
    """Preprocess once (RAS, resample, skull-strip, crop/pad, [0,1]); re-running skips done subjects."""
    from brainsynth.data.prepare import PrepareOptions, prepare_cache

    good, failures = prepare_cache(src, out, PrepareOptions(spacing, shape), jobs, split, seed)
    typer.echo(f"{len(good)} subjects in {out / 'manifest.tsv'}")
    if failures:
        typer.secho(f"{len(failures)} subject(s) failed:", fg=typer.colors.RED, err=True)
        for sid, why in failures.items():
            typer.echo(f"  {sid}: {why}", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(prepare)
