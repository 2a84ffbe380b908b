"""``brainsynth train METHOD ...``: one subcommand per method.

Methods with their own options (``ldm --stage``) add a command in their cli module
(``train_app.command("ldm")(...)``); a method that needs only the common options is one call to
:func:`add_train_command`. Multi-GPU / multi-process::

    torchrun --nproc_per_node 2 -m brainsynth.cli.main train toy --out RUN
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

train_app = typer.Typer(help="Train a method's networks.", no_args_is_help=True)

OUT = typer.Option(..., "--out", help="run folder (checkpoints/, log.jsonl, config.yaml)")
CONFIG = typer.Option(None, "--config", help="YAML config (values; see configs/)")
DATA = typer.Option(None, "--data", help="training data (a cache from `brainsynth prepare`)")
SET = typer.Option([], "--set", help="override a config value, e.g. --set train.steps=100")
RESUME = typer.Option(False, "--resume", help="continue the run in --out exactly")
DEVICE = typer.Option(None, "--device", help="auto | cpu | cuda (default: the config's)")


def run_train(
    method: str,
    *,
    out: Path,
    config: Path | None = None,
    data: Path | None = None,
    overrides: list[str] | None = None,
    resume: bool = False,
    device: str | None = None,
) -> Path:
    """Load ``method``'s config (YAML + ``--set``), join torchrun's process group if any, and call
    ``method.train(cfg, data, out, device, resume)``."""
    from brainsynth.cli.options import check_run_dir
    from brainsynth.config import load_config
    from brainsynth.methods import get_method
    from brainsynth.training.distributed import cleanup_distributed, init_distributed, pick_device

    m = get_method(method)
    sets = list(overrides or [])
    if device is not None:
        sets.append(f"train.device={device}")
    cfg = load_config(m.Config, config, sets)
    check_run_dir(out, resume)
    train_cfg = getattr(cfg, "train", None)
    dev = pick_device(device or str(getattr(train_cfg, "device", "auto")))
    init_distributed(dev)
    try:
        return m.train(cfg, data, out, dev, resume)
    finally:
        cleanup_distributed()


def add_train_command(method: str, help: str | None = None) -> None:
    """``brainsynth train METHOD`` with the common options only."""

    def command(
        out: Path = OUT,
        config: Path = CONFIG,
        data: Path = DATA,
        overrides: list[str] = SET,
        resume: bool = RESUME,
        device: str = DEVICE,
    ) -> None:
        run = run_train(
            method,
            out=out,
            config=config,
            data=data,
            overrides=overrides,
            resume=resume,
            device=device,
        )
        if os.environ.get("RANK", "0") == "0":
            typer.echo(f"done: {run}")

    command.__doc__ = help or f"Train method {method}."
    train_app.command(method)(command)


add_train_command(
    "toy", "Toy Gaussian diffusion of discs/balls (no data needed): a seconds-long smoke run."
)
add_train_command(
    "restore", "The restore method's unconditional diffusion prior on a cache's T1w images."
)


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
