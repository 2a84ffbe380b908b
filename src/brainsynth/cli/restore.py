"""CLI of method ``restore``: ``brainsynth sample restore`` (unconditional samples of a prior).

``brainsynth train restore`` is the common train command (``cli.train``). The restoration
commands (``brainsynth restore``, ``brainsynth degrade``) are added to :func:`register` here.
"""

from __future__ import annotations

from pathlib import Path

import typer

from brainsynth.cli.options import DEVICE, OVERWRITE, existing, resolve_device
from brainsynth.cli.sample import ETA, SEED, STEPS, N


def sample_restore(
    ckpt: Path = typer.Option(..., "--ckpt", help="prior run folder (or a step_* folder in it)"),
    out: Path = typer.Option(..., "--out", help="folder for the NIfTI samples and montage.png"),
    n: int = N,
    steps: int = STEPS,
    eta: float = ETA,
    seed: int = SEED,
    device: str = DEVICE,
    overwrite: bool = OVERWRITE,
) -> None:
    """Unconditional DDIM samples of a restore prior, to check it by eye."""
    from brainsynth.cli.sample import progress_bar
    from brainsynth.methods.restore.sample import sample

    with progress_bar(f"sample {n} volumes") as progress:
        paths = sample(
            existing(ckpt, "checkpoint"),
            out,
            n=n,
            steps=steps,
            eta=eta,
            seed=seed,
            device=resolve_device(device),
            progress=progress,
            overwrite=overwrite,
        )
    typer.echo(f"{len(paths)} volumes in {out} (montage.png)")


def register(app: typer.Typer) -> None:
    from brainsynth.cli.sample import sample_app

    sample_app.command("restore")(sample_restore)
