"""``brainsynth prepare``: preprocess a dataset once into a cache (a thin call into the library)."""

from __future__ import annotations

from pathlib import Path

import typer

from brainsynth.cli.options import COUNT, POSITIVE, UNIT, number


def _folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def prepare(
    src: Path = typer.Argument(..., help="BIDS folder, CSV/TSV manifest, or folder of NIfTI files"),
    out: Path = typer.Option(..., "--out", "-o", help="cache folder to write (created if needed)"),
    spacing: float = typer.Option(
        2.0, callback=POSITIVE, help="target voxel size in mm (isotropic)"
    ),
    shape: tuple[int, int, int] = typer.Option(
        (96, 112, 96), callback=COUNT, help="target grid X Y Z (RAS)"
    ),
    jobs: int = typer.Option(1, "--jobs", "-j", callback=COUNT, help="parallel worker processes"),
    split: tuple[float, float, float] = typer.Option(
        (0.8, 0.1, 0.1), callback=UNIT, help="train val test fractions"
    ),
    seed: int = typer.Option(0, help="seed of the train/val/test split"),
    percentiles: tuple[float, float] = typer.Option(
        (0.5, 99.5),
        callback=number(low=0, high=100),
        help="brain intensity percentiles mapped to 0 and 1",
    ),
    scheme: str = typer.Option("auto", help="label numbering: auto, freesurfer or dlmuse"),
    labels: bool = typer.Option(
        True, help="store label maps (--no-labels: smaller cache; labels still skull-strip)"
    ),
    assume_spacing: float | None = typer.Option(
        None,
        "--assume-spacing",
        metavar="MM",
        callback=POSITIVE,
        help="voxel size (mm, isotropic) for files that give none (pixdim 0, no qform/sform); "
        "without it such files fail",
    ),
    progress: bool = typer.Option(True, help="show a progress bar"),
) -> None:
    """Preprocess once (RAS, resample, skull-strip, crop/pad, [0, 1] as uint8) into a cache.

    Writes one image (+ label map + record) per subject, manifest.tsv with covariates and the train/val/test split, and cache.json.

    Re-running skips subjects already done. Subjects that fail are listed at the end (and in failures.tsv); the exit code is then 1. A run where every subject fails leaves an existing index (manifest.tsv, cache.json) as it was.
    """
    from brainsynth.data.prepare import PrepareOptions, prepare_cache

    opts = PrepareOptions(  # checks the values (exit 2) before anything is read
        spacing,
        shape,
        percentiles[0],
        percentiles[1],
        None if scheme == "auto" else scheme,
        keep_labels=labels,
        assume_spacing=assume_spacing,
    )
    result = prepare_cache(src, out, opts, jobs=jobs, split=split, seed=seed, progress=progress)
    for note in result.notes:
        typer.secho(f"warning: {note}", fg=typer.colors.YELLOW, err=True)
    if result.index_written:
        n_new = len(result.records) - result.reused
        typer.echo(
            f"{len(result.records)} subjects in {out / 'manifest.tsv'} ({n_new} prepared, "
            f"{result.reused} already done); cache size {_folder_mb(out):.1f} MB"
        )
    else:
        kept = "left as it was" if (out / "manifest.tsv").exists() else "not written"
        typer.secho(
            f"no subject prepared: the index of {out} {kept}", fg=typer.colors.RED, err=True
        )
    for sid, why in result.warnings.items():
        typer.secho(f"  warning {sid}: {why}", fg=typer.colors.YELLOW, err=True)
    if result.failures:
        typer.secho(f"{len(result.failures)} subject(s) failed:", fg=typer.colors.RED, err=True)
        for sid, why in result.failures.items():
            typer.echo(f"  {sid}: {why}", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(prepare)
