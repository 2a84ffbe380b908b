"""``brainsynth phantoms``: write the embedded phantom cohort (BIDS), no data or download needed."""

from __future__ import annotations

from pathlib import Path

import typer

from brainsynth.cli.options import COUNT, NON_NEGATIVE, OVERWRITE, number


def phantoms(
    out: Path = typer.Option(..., "--out", help="BIDS folder to write (created if missing)"),
    n: int = typer.Option(8, "-n", help="number of subjects", callback=COUNT),
    spacing: float = typer.Option(
        2.0, help="voxel size in mm (0.5 to 8)", callback=number(low=0.5, high=8.0)
    ),
    seed: int = typer.Option(
        0, help="random seed: the same seed writes identical files", callback=NON_NEGATIVE
    ),
    surfaces: bool = typer.Option(
        False, "--surfaces", help="also write warped fsaverage5 pial/white meshes (GIfTI)"
    ),
    progress: bool = typer.Option(True, "--progress/--quiet", help="show a progress bar"),
    overwrite: bool = OVERWRITE,
) -> None:
    """Make a phantom cohort from nilearn's MNI152 2009 template and fsaverage5 surfaces.

    Each subject: a random smooth diffeomorphic warp, age-driven ventricle enlargement and cortical
    atrophy, sex-driven brain size, contrast jitter, bias field, Rician noise. Labels use FreeSurfer
    numbers; participants.tsv holds age, sex and the volumes measured on the labels.
    """
    from brainsynth.data.phantoms import make_cohort

    path = make_cohort(
        out,
        n=n,
        spacing=spacing,
        seed=seed,
        surfaces=surfaces,
        progress=progress,
        overwrite=overwrite,
    )
    typer.echo(f"{n} phantom subject(s) in {path} (participants.tsv, derivatives/phantom)")


def register(app: typer.Typer) -> None:
    app.command()(phantoms)
