"""CLI of method ``deform``: ``brainsynth train deform --stage register|fields``, ``brainsynth
sample deform`` (new scans with their labels) and ``brainsynth register`` (one pair)."""

from __future__ import annotations

from pathlib import Path

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


def train_deform(
    stage: str = typer.Option(..., "--stage", help="register | fields"),
    data: Path = typer.Option(..., "--data", help="cache folder written by `brainsynth prepare`"),
    out: Path = typer.Option(..., "--out", help="run folder (template/, register/, fields/)"),
    config: Path = CONFIG,
    overrides: list[str] = SET,
    resume: bool = typer.Option(False, "--resume", help="continue the stage in --out exactly"),
    device: str = DEVICE,
) -> None:
    """Register the template to every training subject (--stage register), then learn the
    distribution of the velocity fields (--stage fields, in the same --out)."""
    from brainsynth.config import dump_yaml, load_config
    from brainsynth.errors import InputError
    from brainsynth.io import write_text_atomic
    from brainsynth.methods import deform

    if stage not in deform.STAGES:
        raise InputError(None, f"--stage must be register or fields, got {stage!r}")
    sets = [*overrides, f"train_{stage}.device={device}"] if device else list(overrides)
    cfg = load_config(deform.DeformConfig, config, sets)
    existing(data / "cache.json", "cache (run `brainsynth prepare` first)")
    if stage == "register":
        check_run_dir(out / "register", resume)
    else:
        check_run_dir(out / "fields", resume)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / f"config_{stage}.yaml", dump_yaml(cfg))
    deform.train(cfg, data, out, resolve_device(device), resume, stage)
    typer.echo(f"done: {out}")


def sample_deform(
    ckpt: Path = typer.Option(
        ..., "--ckpt", help="deform run folder (both stages trained) or model name"
    ),
    out: Path = typer.Option(
        ..., "--out", help="folder for T1w, dseg, field, montage, samples.tsv"
    ),
    n: int = N,
    age: float = AGE,
    sex: str = SEX,
    ventricles: float = VENTRICLES,
    brain: float = BRAIN,
    guidance: float = GUIDANCE,
    steps: int = STEPS,
    eta: float = ETA,
    seed: int = SEED,
    device: str = DEVICE,
    overwrite: bool = OVERWRITE,
) -> None:
    """New scans with their label maps: sampled velocity fields applied to the template. A run
    whose fields model is conditioned (fields.conditioning) takes its covariates (those not
    given are drawn from the training set) and --guidance."""
    from brainsynth.cli.sample import covariate_request, progress_bar
    from brainsynth.methods.deform import sample

    cov = covariate_request(age, sex, ventricles, brain)
    with progress_bar(f"sample {n} fields") as progress:
        paths = sample(
            resolve_ckpt(ckpt, "deform run"), out, n=n, covariates=cov, guidance=guidance,
            steps=steps, eta=eta, seed=seed, device=resolve_device(device), progress=progress,
            overwrite=overwrite,
        )  # fmt: skip
    typer.echo(f"{len(paths)} scans with labels in {out} (montage.png, samples.tsv)")


def register_pair(
    ckpt: Path = typer.Option(
        ..., "--ckpt", help="deform run folder (stage register trained) or model name"
    ),
    moving: Path = typer.Option(..., "--moving", help="moving scan (skull-stripped NIfTI)"),
    fixed: Path = typer.Option(..., "--fixed", help="fixed scan: the output space"),
    out: Path = typer.Option(..., "--out", help="output folder"),
    labels: Path = typer.Option(None, "--labels", help="label map of the moving scan (warped)"),
    fixed_labels: Path = typer.Option(
        None, "--fixed-labels", help="label map of the fixed scan (Dice in register.tsv)"
    ),
    eta: str = typer.Option("1", "--eta", help="deformation levels in [0, 1], e.g. 0.25,0.5,1"),
    no_affine: bool = typer.Option(False, "--no-affine", help="the pair is already aligned"),
    device: str = DEVICE,
    overwrite: bool = OVERWRITE,
) -> None:
    """Register a moving scan to a fixed one; all outputs in the fixed scan's world space."""
    from brainsynth.errors import InputError
    from brainsynth.methods.deform.register import register

    try:
        etas = tuple(float(e) for e in eta.split(","))
    except ValueError as e:
        raise InputError(None, f"--eta must be numbers separated by commas, got {eta!r}") from e
    files = register(
        resolve_ckpt(ckpt, "deform run"), existing(moving, "moving scan"),
        existing(fixed, "fixed scan"), out, labels=labels, fixed_labels=fixed_labels,
        etas=etas, affine=not no_affine, device=resolve_device(device), overwrite=overwrite,
    )  # fmt: skip
    typer.echo(f"{len(files)} files in {out} (register.tsv)")


def register(app: typer.Typer) -> None:
    from brainsynth.cli.sample import sample_app
    from brainsynth.cli.train import train_app

    train_app.command("deform")(train_deform)
    sample_app.command("deform")(sample_deform)
    app.command("register")(register_pair)
