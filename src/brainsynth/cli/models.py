"""``brainsynth export`` (a trained run as a model to ship) and ``brainsynth models`` (the models
there are, by name: usable wherever ``--ckpt`` or ``--prior`` takes a run folder)."""

from __future__ import annotations

from pathlib import Path

import typer


def export_cmd(
    run: Path = typer.Option(..., "--run", help="trained run folder (any method)"),
    name: str = typer.Option(..., "--name", help="model name: letters, digits, '.', '_', '-'"),
    out: Path = typer.Option(
        None, "--out", help="models folder (default: $BRAINSYNTH_MODELS, else models/ of the repo)"
    ),
    card: Path = typer.Option(None, "--card", help="model card (markdown), kept as README.md"),
    eval_file: Path = typer.Option(None, "--eval", help="evaluation results (JSON), eval.json"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a model of that name"),
) -> None:
    """Write OUT/NAME: the run's EMA weights in float16, its configs, training log, the files its
    sampler reads, model.json (sizes, step, grid) and the card; loadable by name or path."""
    from brainsynth.export import export_model
    from brainsynth.models import models_dir

    folder = export_model(
        run,
        name,
        models_dir() if out is None else out,
        card=card,
        eval_file=eval_file,
        overwrite=overwrite,
    )
    typer.echo(f"model {name}: {folder}")


def models_cmd(
    check: bool = typer.Option(
        False, "--check", help="also load each model and make one tiny sample on CPU"
    ),
) -> None:
    """The models in the models folder: name, method, size, training step, the card's first line.
    With --check, each model also samples one step (``model_check.smoke_sample``): one line per
    model, ok or FAILED and why; exit code 1 when any failed."""
    from brainsynth.models import list_models, models_dir

    found = list_models()
    if not found:
        typer.echo(f"no models in {models_dir()}")
        return
    rows = [("name", "method", "MB", "step", "description")]
    for m in found:
        step = "" if m.step is None else str(m.step)
        rows.append((m.name, m.method, f"{m.total_bytes / 1e6:.1f}", step, m.card))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        typer.echo("  ".join([*(c.ljust(w) for c, w in zip(r, widths)), r[4]]).rstrip())
    typer.echo(f"({len(found)} in {models_dir()})")
    if check and not all([_check(m.name, m.path) for m in found]):
        raise typer.Exit(1)


def _check(name: str, folder: Path) -> bool:
    """Print ``name ok|FAILED (why) seconds`` for one model's smoke sample; whether it passed."""
    import time

    from brainsynth.model_check import smoke_sample

    start = time.perf_counter()
    try:
        r = smoke_sample(folder)
    except Exception as e:  # a check reports every failure and goes on to the next model
        first = (str(e).strip().splitlines() or [""])[0]
        why = f"{type(e).__name__}: {first}"
    else:
        why = "" if r["finite"] else f"non-finite sample (NaN/inf), shape {r['shape']}"
    status = f"FAILED ({why})" if why else "ok"
    typer.echo(f"check {name}: {status}, {time.perf_counter() - start:.1f} s")
    return not why


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
    app.command("models")(models_cmd)
