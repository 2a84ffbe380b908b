"""``brainsynth sample METHOD ...``: one subcommand per method.

A method with its own options (``ldm --age --sex``) adds a command in its cli module
(``sample_app.command("ldm")(...)``); :func:`progress_bar` gives the sampler callback, the
covariate options and :func:`covariate_request` are shared by the conditioned methods.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import typer

from brainsynth.cli.options import COUNT, NON_NEGATIVE, OVERWRITE, UNIT, resolve_ckpt

sample_app = typer.Typer(help="Generate volumes from a trained method.", no_args_is_help=True)

CKPT = typer.Option(
    ..., "--ckpt", help="run folder (its latest checkpoint), a step_* folder or a model name"
)
OUT = typer.Option(..., "--out", help="output folder")
N = typer.Option(4, "-n", help="number of samples", callback=COUNT)
SEED = typer.Option(0, "--seed", help="seed of the initial noise", callback=NON_NEGATIVE)
STEPS = typer.Option(
    None, "--steps", help="sampling steps (default: the run's config)", callback=COUNT
)
ETA = typer.Option(None, "--eta", help="DDIM eta in [0, 1] (0: deterministic)", callback=UNIT)
DEVICE = typer.Option("auto", "--device", help="auto | cpu | cuda")
# The covariates of a conditioned method (``ldm``, a conditioned ``deform``) and its guidance.
AGE = typer.Option(None, "--age", help="years")
SEX = typer.Option(None, "--sex", help="M or F")
VENTRICLES = typer.Option(None, "--ventricles", help="ventricular volume, mm^3")
BRAIN = typer.Option(None, "--brain", help="brain volume, mm^3")
GUIDANCE = typer.Option(
    None,
    "--guidance",
    help="classifier-free guidance scale (0: unconditional, 1: none)",
    callback=NON_NEGATIVE,
)


def covariate_request(
    age: float | None, sex: str | None, ventricles: float | None, brain: float | None
) -> dict[str, float | None]:
    """The ``--age --sex --ventricles --brain`` values by covariate name (sex coded F=0, M=1;
    None where not given)."""
    from brainsynth.data.covariates import sex_code

    return {
        "age": age,
        "sex": None if sex is None else sex_code(sex),
        "ventricle_volume": ventricles,
        "brain_volume": brain,
    }


@contextmanager
def progress_bar(desc: str = "sample"):
    """A tqdm bar driven by the samplers' ``progress(step, total)`` callback."""
    from tqdm import tqdm

    bar = None

    def progress(step: int, total: int) -> None:
        nonlocal bar
        if bar is None or bar.total != total:
            if bar is not None:
                bar.close()
            bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)
        bar.update(step - bar.n)

    try:
        yield progress
    finally:
        if bar is not None:
            bar.close()


@sample_app.command("toy")
def sample_toy(
    ckpt: Path = CKPT,
    out: Path = OUT,
    n: int = N,
    steps: int = STEPS,
    eta: float = ETA,
    sampler: str = typer.Option(None, "--sampler", help="ddim | ddpm (default: the run's config)"),
    seed: int = SEED,
    device: str = DEVICE,
    overwrite: bool = OVERWRITE,
) -> None:
    """Sample the toy model: samples.npy, montage.png (and NIfTI for 3D), config.yaml."""
    from brainsynth.errors import InputError
    from brainsynth.methods import toy
    from brainsynth.training.distributed import pick_device

    if sampler not in (None, "ddim", "ddpm"):
        raise InputError(None, f"--sampler must be ddim or ddpm, got {sampler!r}")
    with progress_bar() as progress:
        paths = toy.sample(
            resolve_ckpt(ckpt, "checkpoint"),
            out,
            n=n,
            steps=steps,
            eta=eta,
            sampler=sampler,  # type: ignore[arg-type]
            seed=seed,
            device=pick_device(device),
            progress=progress,
            overwrite=overwrite,
        )
    typer.echo(f"{len(paths)} files in {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(sample_app, name="sample")
