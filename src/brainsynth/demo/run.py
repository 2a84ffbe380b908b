"""The demo from start to end (``brainsynth demo`` only parses its options into :class:`DemoOptions`).

1. models: each method's shipped model is found and checked (``sources``) before anything is
   written; if any is missing, a phantom cohort and its cache are made for the fallbacks;
2-5. per method (ldm, cortex, deform, restore): its model, or a tiny phantom run trained now
   (``train``), then what it shows (``steps``);
6. the evaluation suite: on the ldm samples against the phantoms when ldm fell back, else the
   shipped model's own ``eval.json`` (the phantoms are no fair reference for a model of real
   scans);
7. ``OUT/report.html`` (``report``).

Every folder it writes in OUT is in :data:`OWNED` (what ``--overwrite`` replaces).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from brainsynth.demo.report import Section, write_report
from brainsynth.demo.sources import Source, find_sources
from brainsynth.demo.steps import (
    LDM_DRAWN,
    Shown,
    cortex_atrophy,
    deform_samples,
    evaluate_phantom_ldm,
    ldm_samples,
    restore_thick_slices,
    shipped_eval,
)

OWNED = (
    "phantoms", "cache", "train", "ldm", "cortex", "deform", "restore",
    "real_at_training_resolution", "eval", "report.html",
    "ae", "samples*",  # an earlier demo's layout (ae/, ldm/, samples*/), replaced all the same
)  # fmt: skip
N_STEPS = 7

Log = Callable[[str], None]


@dataclass(frozen=True)
class DemoOptions:
    """``out``: the output folder; ``n``: phantom subjects; ``ldm_config``: a YAML over the demo's
    tiny ldm values; ``ae_steps``/``steps``: the fallback ldm's autoencoder and diffusion
    training steps; ``fallback_steps``: each fallback cortex, deform (per stage) and restore
    run's steps."""

    out: Path
    n: int = 12
    ldm_config: Path | None = None
    ae_steps: int = 60
    steps: int = 300
    fallback_steps: int = 100
    device: str = "auto"
    overwrite: bool = False


@dataclass
class _Phantoms:
    bids: Path
    cache: Path


# method -> (its section of the report, what the console says it does)
SHOWN = {
    "ldm": ("ldm: latent diffusion", "samples at ages 30 and 75, ventricles of 15 and 40 ml"),
    "cortex": ("cortex: a T1w from surfaces", "a scan from fsaverage5 surfaces, and 1 mm atrophy"),
    "deform": ("deform: template deformations", "new anatomies with their label maps"),
    "restore": ("restore: thick slices", "a thick-slice scan restored, beside cubic B-splines"),
}


def _step(k: int, what: str, log: Log) -> Callable[[], None]:
    """Announce step ``k``; the returned function reports its time."""
    log(f"{k}/{N_STEPS} {what}")
    t0 = time.perf_counter()
    return lambda: log(f"    ({time.perf_counter() - t0:.0f} s)")


def _phantoms(opts: DemoOptions, sources: dict[str, Source], log: Log) -> _Phantoms | None:
    """Step 1: which models are shipped; the phantom cohort and cache if any is not."""
    from brainsynth.demo.train import phantom_cache
    from brainsynth.models import models_dir

    done = _step(1, f"models in {models_dir()}", log)
    for s in sources.values():
        state = f"shipped ({s.path})" if s.shipped else "not found: a phantom model stands in"
        log(f"    {s.method}: {s.name} {state}")
    missing = [s.method for s in sources.values() if not s.shipped]
    result = None
    if missing:
        log(f"    phantom cohort ({opts.n} subjects) and its cache for {', '.join(missing)}")
        result = _Phantoms(*phantom_cache(opts.out, opts.n))
    done()
    return result


def _train(method: str, opts: DemoOptions, ph: _Phantoms, device) -> Path:
    """The fallback run of ``method`` (``demo.train``) in ``OUT/train``."""
    from brainsynth.demo import train

    runs, steps = opts.out / "train", opts.fallback_steps
    if method == "ldm":
        return train.train_ldm(ph.cache, runs, opts.ldm_config, opts.ae_steps, opts.steps, device)
    if method == "cortex":
        return train.train_cortex(ph.bids, ph.cache, runs / "cortex", steps, device)
    if method == "deform":
        return train.train_deform(ph.cache, runs / "deform", steps, device)
    return train.train_restore(ph.cache, runs / "restore", steps, device)


def _model(source: Source, opts: DemoOptions, ph: _Phantoms | None, device, log: Log) -> Path:
    """The shipped model's folder, or the fallback's run, trained now (and said so)."""
    if not source.shipped:
        assert ph is not None  # made whenever a method falls back
        steps = opts.steps if source.method == "ldm" else opts.fallback_steps
        log(f"    training a {steps}-step phantom {source.method} model")
        source.path, source.steps = _train(source.method, opts, ph, device), steps
    assert source.path is not None
    log(f"    {source.summary()}")
    return source.path


def _show(source: Source, model: Path, out: Path, device) -> Shown:
    """Steps 2-5: what ``source.method`` makes with ``model``; a phantom ldm also makes the
    samples the evaluation compares with the phantoms."""
    method = source.method
    if method == "ldm":
        return ldm_samples(model, out / "ldm", device, drawn=0 if source.shipped else LDM_DRAWN)
    if method == "cortex":
        return cortex_atrophy(model, out / "cortex", device)
    if method == "deform":
        return deform_samples(model, out / "deform", device)
    return restore_thick_slices(model, out / "restore", device)


def _evaluation(ldm: Source, ph: _Phantoms | None, out: Path, log: Log) -> Shown:
    """Step 6: the evaluation suite on the phantom ldm's samples, or the shipped ldm's figures."""
    from brainsynth.training.checkpoint import read_meta

    assert ldm.path is not None
    if ldm.shipped:
        done = _step(6, f"evaluation: the figures shipped with {ldm.name} (eval.json)", log)
        shown = shipped_eval(ldm.path)
    else:
        assert ph is not None
        done = _step(6, "evaluation suite: the ldm samples against the phantom cohort", log)
        factor = int(read_meta(ldm.path)["config"]["data"]["downsample"])
        shown = evaluate_phantom_ldm(ph.cache, out / "ldm" / "samples", out, factor)
    done()
    return shown


def run_demo(opts: DemoOptions, log: Log = print) -> Path:
    """Run the demo into ``opts.out`` (module notes); the report's path."""
    from brainsynth.io.outdir import claim_output_dir
    from brainsynth.training.distributed import pick_device

    sources = find_sources()  # a damaged model is an error before anything is written
    claim_output_dir(opts.out, OWNED, overwrite=opts.overwrite)
    device = pick_device(opts.device)
    ph = _phantoms(opts, sources, log)
    sections = []
    for k, (method, (title, what)) in enumerate(SHOWN.items(), start=2):
        done = _step(k, f"{method}: {what}", log)
        model = _model(sources[method], opts, ph, device, log)
        sections.append(
            Section(title, sources[method], _show(sources[method], model, opts.out, device))
        )
        done()
    shown = _evaluation(sources["ldm"], ph, opts.out, log)
    sections.append(Section("evaluation suite (ldm)", None, shown))
    _step(7, "report", log)
    path = write_report(opts.out, sections)
    log(f"done: open {path}")
    return path
