"""Sampling from a trained latent diffusion run: covariates in natural units -> NIfTI + montage."""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path

import numpy as np
import torch

from brainsynth.data.covariates import (
    COVARIATES,
    CovariateNormaliser,
    check_names,
    format_value,
    implausible,
    parse_value,
)
from brainsynth.data.prepare import reference_affine
from brainsynth.errors import InputError
from brainsynth.io import Volume, write_text_atomic, write_volume
from brainsynth.io.outdir import claim_output_dir
from brainsynth.methods.ldm.data import LatentNorm, crop_to
from brainsynth.methods.ldm.losses import make_cond
from brainsynth.methods.ldm.train import (
    build_denoiser,
    build_process,
    config_from_meta,
    latent_shape,
    load_autoencoder,
)
from brainsynth.nn.layout import set_memory_format
from brainsynth.sampling import batch_progress, ddim_sample, guided
from brainsynth.training.checkpoint import load_checkpoint, path_in_run
from brainsynth.viz import montage


def fill_covariates(
    given: dict[str, float | None],
    rows: list[dict],
    norm: CovariateNormaliser,
    n: int,
    rng: np.random.Generator,
) -> list[dict[str, float]]:
    """Complete missing covariates by sampling training subjects, weighted by how close they are to
    the given ones (Gaussian kernel, bandwidth 0.5 SD): a crude conditional p(missing | given)."""
    check_names(given)
    parsed = {k: parse_value(k, v) for k, v in given.items()}  # NaN, "n/a": missing
    known = {k: v for k, v in parsed.items() if v is not None}
    for k, v in known.items():  # the table's plausible ranges hold for requests too
        problem = implausible(k, v)
        if problem is not None:
            raise InputError(None, f"requested {k}: {problem}")
    _warn_outside(known, rows)
    out = []
    for _ in range(n):
        if len(known) == len(COVARIATES):
            out.append(dict(known))
            continue
        d2 = np.zeros(len(rows))
        for k, v in known.items():
            col = np.array([np.nan if r[k] is None else r[k] for r in rows], dtype=float)
            scale = 1.0 if k == "sex" else norm.std[k]
            d2 += np.nan_to_num((col - v) / scale, nan=3.0) ** 2
        w = np.exp(-d2 / (2 * 0.5**2))
        pick = (
            rows[int(rng.choice(len(rows), p=w / w.sum()))]
            if w.sum() > 0
            else rows[int(rng.integers(len(rows)))]
        )
        filled = {k: known.get(k, pick[k]) for k in COVARIATES}
        for k in COVARIATES:  # a training subject with a missing value: the training mean
            if filled[k] is None:
                filled[k] = norm.sex_fraction_male if k == "sex" else norm.mean[k]
        out.append(filled)
    return out


def _warn_outside(known: dict, rows: list[dict]) -> None:
    """A warning for each requested covariate outside the training subjects' range."""
    for k, v in known.items():
        col = [r[k] for r in rows if r.get(k) is not None]
        if k != "sex" and col and not min(col) <= v <= max(col):
            warnings.warn(
                f"requested {k} {v:g} is outside the training range [{min(col):g}, {max(col):g}]:"
                " the model extrapolates",
                stacklevel=3,
            )


def sample_ldm(
    ckpt: str | Path,
    covariates: dict[str, float | None],
    n: int,
    out: str | Path,
    *,
    steps: int | None = None,
    guidance: float | None = None,
    eta: float | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    batch_size: int = 4,
    progress=None,
    overwrite: bool = False,
) -> list[Path]:
    """``n`` volumes into ``out`` (``sample_###_T1w.nii.gz``, samples.tsv, montage.png), which must
    be empty unless ``overwrite`` (then the earlier samples there are removed first)."""
    if n < 1:
        raise InputError(None, f"the number of volumes must be at least 1, got {n}")
    out = claim_output_dir(out, OWNED, overwrite=overwrite)
    ck = load_checkpoint(ckpt, names=("ema",), with_state=False, method="ldm")
    meta = ck["meta"]["config"]
    if meta.get("stage") == "ae":
        raise InputError(ck["dir"], "an autoencoder run: sample from the diffusion stage's run")
    cfg = config_from_meta(meta)
    steps, guidance, eta = (
        steps if steps is not None else cfg.sample.steps,
        guidance if guidance is not None else cfg.sample.guidance,
        eta if eta is not None else cfg.sample.eta,
    )
    norm = CovariateNormaliser.from_dict(meta["covariate_normaliser"])
    rng = np.random.default_rng(seed)
    covs = fill_covariates(covariates, meta["training_covariates"], norm, n, rng)
    ae, _, _ = load_autoencoder(path_in_run(ck["dir"], meta["ae_dir"]), device)
    norm_file = meta.get("latent_norm")
    norm_z = LatentNorm.load(
        None if norm_file is None else path_in_run(ck["dir"], norm_file), meta["scale_factor"]
    )
    model = build_denoiser(cfg)
    model.load_state_dict(ck["ema"])
    set_memory_format(model.to(device).eval(), device, cfg.train_diffusion.memory_format)
    process = build_process(cfg)
    denoiser = guided(model, guidance) if cfg.diffusion.conditioning != "concat" else model
    ds = cfg.data.downsample
    shape = tuple(s // ds for s in meta["cache_shape"])
    affine = reference_affine(meta["cache_spacing"] * ds, shape)
    z_shape = latent_shape(cfg, shape)
    g = torch.Generator().manual_seed(seed)
    paths, vols = [], []
    n_batches = -(-n // batch_size)
    for start in range(0, n, batch_size):
        chunk = covs[start : start + batch_size]
        overall = batch_progress(progress, start // batch_size, n_batches)
        vec = torch.from_numpy(np.stack([norm.transform(c) for c in chunk])).to(device)
        z_T = torch.randn((len(chunk), *z_shape), generator=g).to(device)
        cond = make_cond(vec, cfg.diffusion.conditioning, z_shape[1:])
        z = ddim_sample(
            denoiser, process, z_T, steps=steps, cond=cond, eta=eta, generator=g, progress=overall
        )
        with torch.no_grad():
            dec = crop_to(ae.decode(norm_z.invert(z)), shape).clamp(0, 1).float().cpu()
        x = dec.contiguous().numpy()  # channels-last decoder output -> C order for NIfTI
        for j in range(len(chunk)):
            p = write_volume(Volume(x[j, 0], affine), out / f"sample_{start + j:03d}_T1w.nii.gz")
            paths.append(p)
            vols.append(x[j, 0])
    _write_table(out / "samples.tsv", paths, covs)
    montage(vols[:8], out / "montage.png", [_title(i, c) for i, c in enumerate(covs[:8])], vmax=1.0)
    return paths


def _title(i: int, c: dict) -> str:
    return (
        f"{i:03d}: {c['age']:.0f} y, {'M' if c['sex'] >= 0.5 else 'F'}, "
        f"vent {c['ventricle_volume'] / 1000:.0f} ml, brain {c['brain_volume'] / 1e6:.2f} l"
    )


OWNED = ("sample_*_T1w.nii.gz", "samples.tsv", "montage.png")  # what --overwrite may replace


def _table_value(name: str, value: float) -> str:
    """Sex as M/F like the inputs (a training-set fraction, used when a subject's sex is missing,
    stays a number); the rest as numbers."""
    if name == "sex" and value in (0.0, 1.0):
        return format_value(name, value)
    return f"{value:.6g}"


def _write_table(path: Path, paths: list[Path], covs: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t")
    w.writerow(["file", *COVARIATES])
    for p, c in zip(paths, covs, strict=True):
        w.writerow([p.name, *(_table_value(k, c[k]) for k in COVARIATES)])
    write_text_atomic(path, buf.getvalue())
