"""``brainsynth export``: a trained run as a model to ship, ``MODELS/NAME/`` (see ``models.py``).

The model is a run folder that every loader accepts as it accepts the run: each trainer run in it
keeps only its EMA weights, cast to float16 (integer buffers as they are), in
``checkpoints/step_N/{ema.safetensors, meta.json}`` + ``checkpoints/latest`` (``meta.json``
lists just those files, with their sizes and sha256; method, stage and config kept), with its
``config.yaml`` and ``log.jsonl``. Per method:

- cortex, restore, toy: the run itself (restore also ``template.nii.gz``, for ``--align affine``).
- deform: ``register/`` and ``fields/`` (the stages trained), ``template/*.nii.gz`` (the affine
  and sharp templates) and ``config_*.yaml``; not the training data (``template/aligned_train.pt``,
  ``fields/velocities.pt``).
- ldm: the diffusion run, its autoencoder run as ``ae/`` (with ``latent_stats.json``) and its
  latent mean ``latent_norm.safetensors``; its config names them relative to the model folder
  (``checkpoint.path_in_run``) instead of by the absolute paths of training, so the model moves.
  An autoencoder run exported alone keeps its autoencoder weights only (no discriminator).

Beside them: ``model.json`` (name, method, step, grid, parameters, every file's size, the total,
date, version), ``README.md`` (the card, ``--card``) and ``eval.json`` (``--eval``). The model is
written into a hidden folder beside the target and renamed into place; an existing model is
replaced only with ``overwrite``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from brainsynth import __version__
from brainsynth.errors import InputError
from brainsynth.models import CARD, INFO, NAME_RE
from brainsynth.training.checkpoint import (
    checkpoint_method,
    has_checkpoint,
    load_checkpoint,
    make_hidden_dir,
    path_in_run,
    read_meta,
    replace_dir,
    save_checkpoint,
)

RUN_FILES = ("config.yaml", "log.jsonl")  # carried from every trainer run
AE_FILES = (*RUN_FILES, "latent_stats.json", "recon_metrics.json")
EVAL = "eval.json"
LATENT_NORM = "latent_norm.safetensors"


@dataclass
class Part:
    """A trainer run of the model: ``src`` goes to ``folder`` (relative to the model; "" is the
    model folder itself) with the files of ``src`` matching ``carry``; ``config`` replaces keys of
    its config; only weights whose name starts with ``prefix`` are kept."""

    folder: str
    src: Path
    carry: tuple[str, ...] = RUN_FILES
    config: dict = field(default_factory=dict)
    prefix: str = ""


@dataclass
class Plan:
    """The model of a run: its trainer runs, the one that generates (deform: ``fields``) first,
    and other files to carry (path in the model -> source file)."""

    method: str
    parts: list[Part]
    files: dict[str, Path]


def _files(root: Path, patterns: tuple[str, ...]) -> list[Path]:
    return sorted({p for pattern in patterns for p in root.glob(pattern) if p.is_file()})


def _plan_deform(run: Path) -> Plan:
    stages = [s for s in ("fields", "register") if has_checkpoint(run / s)]
    if not stages:
        raise InputError(run, "a deform run without a trained stage (register/, fields/)")
    files = {
        str(p.relative_to(run)): p for p in _files(run, ("config_*.yaml", "template/*.nii.gz"))
    }
    return Plan("deform", [Part(s, run / s) for s in stages], files)


def _plan_ldm(run: Path) -> Plan:
    ck = load_checkpoint(run, names=(), with_state=False)
    config = ck["meta"]["config"]
    # the autoencoder's discriminator only trains it: sampling loads the ``ae.`` weights
    if config.get("stage") == "ae":
        return Plan("ldm", [Part("", run, AE_FILES, prefix="ae.")], {})
    ae = Part("ae", path_in_run(ck["dir"], config["ae_dir"]), AE_FILES, prefix="ae.")
    top = Part("", run, config={"ae_dir": "ae"})
    files = {}
    if config.get("latent_norm") is not None:
        files[LATENT_NORM] = path_in_run(ck["dir"], config["latent_norm"])
        top.config["latent_norm"] = LATENT_NORM
    return Plan("ldm", [top, ae], files)


def plan(run: str | Path) -> Plan:
    """What the model of ``run`` holds (module notes); an InputError if ``run`` is not a run."""
    run = Path(run)
    if not run.is_dir():
        raise InputError(run, "run folder not found")
    if not has_checkpoint(run) and (run / "register").is_dir():
        return _plan_deform(run)
    method = checkpoint_method(read_meta(run)) or "?"
    if method == "deform":
        raise InputError(run, "a deform stage folder: export the run folder above it")
    if method == "ldm":
        return _plan_ldm(run)
    if method == "restore":  # the fixed image of ``restore --align affine``
        from brainsynth.methods.restore.prior import TEMPLATE

        if (run / TEMPLATE).is_file():
            return Plan(method, [Part("", run)], {TEMPLATE: run / TEMPLATE})
    return Plan(method, [Part("", run)], {})


def half(weights: dict[str, torch.Tensor], where: Path) -> dict[str, torch.Tensor]:
    """Floating tensors as float16 (integers as they are); an InputError naming a tensor whose
    finite values overflow float16."""
    out = {}
    for k, v in weights.items():
        h = v.to(torch.float16) if v.is_floating_point() else v
        if v.is_floating_point() and not torch.equal(torch.isfinite(h), torch.isfinite(v)):
            raise InputError(where, f"tensor {k} has values beyond float16's range (65504)")
        out[k] = h
    return out


def _export_part(part: Part, dst: Path) -> dict:
    """Write ``part`` into ``dst`` (module notes); its step and parameter count."""
    from brainsynth.config import dump_yaml

    ck = load_checkpoint(part.src, names=("ema",), with_state=False)
    meta = ck["meta"]
    weights = half({k: v for k, v in ck["ema"].items() if k.startswith(part.prefix)}, ck["dir"])
    config = {**meta["config"], **part.config}
    kept = {k: v for k, v in meta.items() if k not in ("files", "step", "config")}
    kept["exported"] = {"dtype": "float16", "brainsynth_version": __version__}
    save_checkpoint(dst, meta["step"], {"ema": weights}, None, config, keep=1, extra_meta=kept)
    for f in _files(part.src, part.carry):
        shutil.copyfile(f, dst / f.name)
    if part.config and (dst / "config.yaml").exists():  # the same config as meta.json's
        (dst / "config.yaml").write_text(dump_yaml(config))
    return {"step": meta["step"], "parameters": sum(v.numel() for v in weights.values())}


def _grid(method: str, config: dict, model: Path) -> dict | None:
    """The image grid the model works on ({"shape", "spacing"} in mm), where its config says."""
    try:
        if method == "cortex":
            return {"shape": config["grid"]["shape"], "spacing": config["grid"]["spacing"]}
        if method == "restore":
            return {"shape": config["prior"]["shape"], "spacing": config["prior"]["spacing"]}
        if method == "ldm" and config.get("stage") == "diffusion":
            ds = int(config["data"]["downsample"])
            shape = [int(s) // ds for s in config["cache_shape"]]
            return {"shape": shape, "spacing": float(config["cache_spacing"]) * ds}
        if method == "deform":
            from brainsynth.methods.deform import load_template

            t1 = load_template(model)[0]
            return {"shape": list(t1.shape), "spacing": float(t1.spacing[0])}
    except (KeyError, TypeError, ValueError, InputError):
        return None
    return None


def _info(name: str, plan: Plan, parts: dict[str, dict], model: Path) -> dict:
    main = next(iter(parts.values()))
    config = read_meta(model / plan.parts[0].folder)["config"]
    files = {
        str(p.relative_to(model)): p.stat().st_size
        for p in sorted(model.rglob("*"))
        if p.is_file() and p.name != INFO
    }
    return {
        "name": name,
        "method": plan.method,
        "step": main["step"],
        "parts": parts if len(parts) > 1 else None,
        "grid": _grid(plan.method, config, model),
        "parameters": sum(p["parameters"] for p in parts.values()),
        "dtype": "float16",
        "files": files,
        "total_bytes": sum(files.values()),
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "brainsynth_version": __version__,
    }


def export_model(
    run: str | Path,
    name: str,
    out: str | Path,
    *,
    card: str | Path | None = None,
    eval_file: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``out/name`` from ``run`` (module notes) and return it."""
    if not NAME_RE.match(name):
        raise InputError(None, f"model name {name!r}: letters, digits, '.', '_', '-' only")
    out = Path(out)
    final = out / name
    if final.exists() and not overwrite:
        raise InputError(final, "exists: pass --overwrite to replace it, or choose another --name")
    for extra in (card, eval_file):
        if extra is not None and not Path(extra).is_file():
            raise InputError(extra, "not found")
    what = plan(run)
    out.mkdir(parents=True, exist_ok=True)
    tmp = make_hidden_dir(out, name)
    try:
        parts = {p.folder or "model": _export_part(p, tmp / p.folder) for p in what.parts}
        copies = {**what.files, CARD: card, EVAL: eval_file}
        for rel, src in copies.items():
            if src is not None:
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, tmp / rel)
        info = _info(name, what, parts, tmp)
        (tmp / INFO).write_text(json.dumps(info, indent=1) + "\n")
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
