"""``brainsynth demo``: every method on embedded inputs, on a CPU, in minutes (``brainsynth.demo``):
the shipped models where the repository has them, tiny phantom models where it does not."""

from __future__ import annotations

from pathlib import Path

import typer

from brainsynth.cli.options import COUNT, DEVICE, OVERWRITE, existing


def demo(
    out: Path = typer.Option(
        Path("demo_out"), "--out", help="folder for everything the demo writes"
    ),
    n: int = typer.Option(12, "-n", help="phantom subjects (for the fallbacks)", callback=COUNT),
    config: Path = typer.Option(
        None, "--config", help="ldm config; its values override the demo's own tiny ones"
    ),
    ae_steps: int = typer.Option(
        60, "--ae-steps", help="fallback ldm: autoencoder training steps", callback=COUNT
    ),
    steps: int = typer.Option(
        300, "--steps", help="fallback ldm: latent diffusion training steps", callback=COUNT
    ),
    fallback_steps: int = typer.Option(
        100,
        "--fallback-steps",
        help="fallback cortex, deform (each stage) and restore: training steps",
        callback=COUNT,
    ),
    device: str = DEVICE,
    overwrite: bool = OVERWRITE,
) -> None:
    """ldm samples, a cortex scan from surfaces and its atrophy, deform samples with labels, a
    thick-slice restoration, the evaluation suite, in OUT/report.html. Each method uses its
    shipped model (`brainsynth models`), else a tiny model trained on phantoms, and says which."""
    from brainsynth.demo import DemoOptions, run_demo

    # a BrainsynthError (a damaged model, a non-empty --out) reaches main(): one line naming the
    # file or model, exit code 2, as for every other command
    opts = DemoOptions(out, n, config, ae_steps, steps, fallback_steps, device, overwrite)
    if config is not None:
        existing(config, "ldm config")
    run_demo(opts, log=typer.echo)


def register(app: typer.Typer) -> None:
    app.command()(demo)
