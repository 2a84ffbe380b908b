"""Sampling from a trained latent diffusion run: covariates in natural units -> NIfTI + montage
(requests checked and completed by ``methods.conditioning.fill_covariates``)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch

from brainsynth.data.covariates import COVARIATES, CovariateNormaliser
from brainsynth.data.prepare import reference_affine
from brainsynth.errors import InputError
from brainsynth.io import Volume, write_text_atomic, write_volume
from brainsynth.io.outdir import claim_output_dir
from brainsynth.methods.conditioning import (
    covariate_vectors,
    fill_covariates,
    make_cond,
    table_value,
)
from brainsynth.methods.ldm.data import LatentNorm, crop_to
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
        vec = covariate_vectors(norm, chunk).to(device)
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


def _write_table(path: Path, paths: list[Path], covs: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t")
    w.writerow(["file", *COVARIATES])
    for p, c in zip(paths, covs, strict=True):
        w.writerow([p.name, *(table_value(k, c[k]) for k in COVARIATES)])
    write_text_atomic(path, buf.getvalue())
