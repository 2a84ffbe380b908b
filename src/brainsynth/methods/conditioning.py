"""Covariate conditioning shared by the methods that take traits (``ldm``, ``deform``).

Training: the training subjects' covariates come from the cache manifest (natural units) and are
normalised by the cache's training-split ``CovariateNormaliser``; a missing value becomes the
training mean (the fraction of M for sex), as ``CacheDataset`` does, so a subject with an unknown
covariate is kept and conditioned on the average. The vector reaches the network as
``Cond.context`` (a cross-attention token, optionally also in the timestep embedding:
``nn.unet``), and ``diffusion_loss`` drops a row's context with probability ``cond_dropout`` (the
network's learned null token), so one network learns the conditional and the unconditional model
that classifier-free guidance mixes (Ho & Salimans 2022; ``sampling.guided``).

Sampling: requested covariates are checked (names, plausible values, a warning outside the training
range) and the ones not requested are drawn from training subjects close to the requested ones
(``fill_covariates``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from brainsynth.data.cache import read_cache_manifest
from brainsynth.data.covariates import (
    COVARIATES,
    CovariateNormaliser,
    check_names,
    format_value,
    implausible,
    parse_value,
)
from brainsynth.diffusion.base import Cond
from brainsynth.diffusion.gaussian import GaussianProcess
from brainsynth.errors import InputError
from brainsynth.training.losses import diffusion_loss as engine_diffusion_loss


def training_rows(cache: str | Path, ids: Sequence[str] | None = None) -> list[dict]:
    """The covariates (natural units, None when missing) of the cache's training subjects, in
    manifest order or in the order of ``ids`` (each must be a training subject)."""
    rows = read_cache_manifest(cache, "train")
    if ids is not None:
        by_id = {r["subject"]: r for r in rows}
        unknown = [s for s in ids if s not in by_id]
        if unknown:
            raise InputError(cache, f"subjects {unknown} are not in the cache's training split")
        rows = [by_id[s] for s in ids]
    return [{k: r[k] for k in COVARIATES} for r in rows]


def covariate_vectors(
    norm: CovariateNormaliser, covs: Sequence[dict], names: Sequence[str] = COVARIATES
) -> torch.Tensor:
    """(B, K) float32 normalised ``names`` of each of ``covs`` (natural units; missing -> mean)."""
    check_names(names)
    index = [COVARIATES.index(k) for k in names]
    return torch.from_numpy(np.stack([norm.transform(c)[index] for c in covs]))


def make_cond(cov: torch.Tensor, conditioning: str, spatial: tuple[int, ...]) -> Cond:
    """Covariates (B, K) -> Cond: context for cross-attention and/or constant concat channels."""
    context = cov if conditioning in ("crossattn", "both") else None
    concat = None
    if conditioning in ("concat", "both"):
        concat = (
            torch.nan_to_num(cov)
            .reshape(*cov.shape, *([1] * len(spatial)))
            .expand(*cov.shape, *spatial)
        )
    return Cond(concat, context)


def diffusion_loss(
    process: GaussianProcess,
    conditioning: str,
    cond_dropout: float,
    min_snr_gamma: float | None = None,
    key: str = "latent",
    weight: torch.Tensor | None = None,
):
    """The engine's denoising loss on ``batch[key]``, conditioned on ``batch["covariates"]``
    (make_cond), with condition dropout, optional Min-SNR-gamma weights and an optional fixed
    weight per element (``weight``, broadcast against the batch)."""

    def cond_fn(batch: dict) -> Cond:
        return make_cond(batch["covariates"], conditioning, batch[key].shape[2:])

    return engine_diffusion_loss(
        process,
        key=key,
        cond_fn=cond_fn,
        cond_dropout=cond_dropout,
        min_snr_gamma=min_snr_gamma,
        weight=weight,
    )


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


def table_value(name: str, value: float) -> str:
    """Sex as M/F like the inputs (a training-set fraction, used when a subject's sex is missing,
    stays a number); the rest as numbers."""
    if name == "sex" and value in (0.0, 1.0):
        return format_value(name, value)
    return f"{value:.6g}"
