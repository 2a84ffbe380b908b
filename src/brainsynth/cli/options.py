"""Options shared by several commands, and the one place numeric command-line values are checked.

Every number a command takes goes through :func:`number`: finite, of the right sign or range, an
integer where a count is meant. A bad value is a usage error (exit 2) naming the option and the
value, raised while the command line is parsed, before any work starts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

CONFIG = typer.Option(None, "--config", help="YAML config (values; see configs/)")
SET = typer.Option([], "--set", help="override a config value, e.g. --set train_ae.steps=100")
DEVICE = typer.Option("auto", "--device", help="auto | cpu | cuda")
OVERWRITE = typer.Option(
    False, "--overwrite", help="replace this command's earlier outputs in a non-empty --out"
)


def resolve_device(name: str):
    from brainsynth.training.distributed import pick_device

    return pick_device(name)


def existing(path: Path, what: str) -> Path:
    if not path.exists():
        from brainsynth.errors import InputError

        raise InputError(path, f"{what} not found")
    return path


def resolve_ckpt(value: Path, what: str) -> Path:
    """A ``--ckpt``/``--prior`` value: the path when it exists, else the model of that name
    (``brainsynth models``); neither is an InputError naming the path and the models there are."""
    from brainsynth.errors import InputError
    from brainsynth.models import find_model, list_models, models_dir

    if value.exists():
        return value
    model = find_model(str(value))
    if model is not None:
        return model
    names = ", ".join(m.name for m in list_models())
    there = f"models in {models_dir()}: {names}" if names else f"no models in {models_dir()}"
    raise InputError(value, f"{what} not found, neither a path nor a model name ({there})")


def check_run_dir(out: Path, resume: bool) -> Path:
    """A training ``--out``, checked before any data is read: a writable folder (created), and one
    that holds no checkpoints unless the run is resumed."""
    from brainsynth.io.outdir import check_output_dir
    from brainsynth.training.checkpoint import refuse_existing_run

    check_output_dir(out)
    if not resume:
        refuse_existing_run(out)
    return out


def check_number(
    name: str,
    value: float | None,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> str | None:
    """Why ``value`` is not a finite number in [low, high] (``(low, high]`` when ``low_open``),
    or None when it is (or is None: an option left at its default)."""
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name} must be a finite number, got {value}"
    if low is not None and (value <= low if low_open else value < low):
        return f"{name} must be {'>' if low_open else '>='} {low:g}, got {value:g}"
    if high is not None and value > high:
        return f"{name} must be <= {high:g}, got {value:g}"
    return None


def number(
    *, low: float | None = None, high: float | None = None, low_open: bool = False
) -> Callable[..., Any]:
    """A typer ``callback=`` that rejects non-finite or out-of-range values with a usage error.

    Integers are already integers by the option's type (typer refuses ``--steps 2.5``); this adds
    the range, and finiteness for floats (``--guidance nan`` would write an all-NaN volume)."""

    def check(param: typer.CallbackParam, value: Any) -> Any:
        name = max(param.opts, key=len) if param.opts else str(param.name)
        values = value if isinstance(value, (tuple, list)) else (value,)
        for v in values:
            problem = check_number(name, v, low=low, high=high, low_open=low_open)
            if problem is not None:
                raise typer.BadParameter(problem.removeprefix(f"{name} "))
        return value

    return check


# The usual ranges, named once.
COUNT = number(low=1)  # -n, steps, pairs: a positive integer
NON_NEGATIVE = number(low=0)
POSITIVE = number(low=0, low_open=True)
FINITE = number()
UNIT = number(low=0, high=1)  # fractions, DDIM eta
