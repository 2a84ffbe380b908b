"""CLI of method ``ldm``: ``brainsynth train ldm`` and ``brainsynth sample ldm``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from brainsynth.cli.options import (
    CONFIG,
    DEVICE,
    OVERWRITE,
    SET,
    check_run_dir,
    existing,
    resolve_ckpt,
    resolve_device,
)
from brainsynth.cli.sample import AGE, BRAIN, ETA, GUIDANCE, SEED, SEX, STEPS, VENTRICLES, N


def train_ldm(
    stage: str = typer.Option(..., "--stage", help="ae | diffusion"),
    data: Path = typer.Option(..., "--data", help="cache folder written by `brainsynth prepare`"),
    out: Path = typer.Option(..., "--out", help="run folder (checkpoints, log.jsonl, config.yaml)"),
    ae: Path = typer.Option(None, "--ae", help="autoencoder run folder (stage diffusion)"),
    config: Path = CONFIG,
    overrides: list[str] = SET,
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out exactly"),
    device: str = DEVICE,
) -> None:
    """Train the autoencoder (--stage ae) or the latent diffusion model (--stage diffusion)."""
    from brainsynth.config import dump_yaml
    from brainsynth.errors import InputError
    from brainsynth.io import write_text_atomic
    from brainsynth.methods import ldm

    if stage not in ("ae", "diffusion"):
        raise InputError(None, f"--stage must be ae or diffusion, got {stage!r}")
    cfg = ldm.load_ldm_config(config, [*overrides, f"train_{stage}.device={device}"])
    existing(data / "cache.json", "cache (run `brainsynth prepare` first)")
    if stage == "diffusion":
        if ae is None:
            raise InputError(None, "--stage diffusion needs --ae AE_RUN_FOLDER")
        existing(ae, "autoencoder run")
    check_run_dir(out, resume)
    write_text_atomic(out / "config.yaml", dump_yaml(cfg))
    dev = resolve_device(device)
    if stage == "ae":
        ldm.train_autoencoder(cfg, data, out, resume, dev)
    else:
        ldm.train_diffusion(cfg, data, ae, out, resume, dev)
    typer.echo(f"done: {out}")


def sample_ldm(
    ckpt: Path = typer.Option(
        ..., "--ckpt", help="diffusion run folder (or a checkpoint in it) or model name"
    ),
    out: Path = typer.Option(
        ..., "--out", help="folder for NIfTI samples, samples.tsv, montage.png"
    ),
    n: int = N,
    age: float = AGE,
    sex: str = SEX,
    ventricles: float = VENTRICLES,
    brain: float = BRAIN,
    steps: int = STEPS,
    guidance: float = GUIDANCE,
    eta: float = ETA,
    seed: int = SEED,
    device: str = DEVICE,
    overwrite: bool = OVERWRITE,
) -> None:
    """Generate T1w volumes with the given traits; missing ones are drawn from the training set."""
    from brainsynth.cli.sample import covariate_request, progress_bar
    from brainsynth.methods.ldm.sample import sample_ldm as run

    cov = covariate_request(age, sex, ventricles, brain)
    with progress_bar(f"sample {n} volumes") as progress:
        paths = run(
            resolve_ckpt(ckpt, "checkpoint"),
            cov,
            n,
            out,
            steps=steps,
            guidance=guidance,
            eta=eta,
            seed=seed,
            device=resolve_device(device),
            progress=progress,
            overwrite=overwrite,
        )
    typer.echo(f"{len(paths)} volumes in {out} (montage.png, samples.tsv)")


Stage = Literal["ae", "diffusion"]


def register(app: typer.Typer) -> None:
    from brainsynth.cli.sample import sample_app
    from brainsynth.cli.train import train_app

    train_app.command("ldm")(train_ldm)
    sample_app.command("ldm")(sample_ldm)
