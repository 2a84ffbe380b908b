"""New anatomies: velocity fields sampled from the fields model, integrated, and applied to the
template's T1w (linear) and label map (nearest): the sharp template (``refine.py``) when the run
has one, else the affine template. Each sample comes with its labels.

Written per sample: ``sample_###_T1w.nii.gz`` (cache units, [0, 1]), ``sample_###_dseg.nii.gz``
(the template's labels), ``sample_###_field.nii.gz`` (the displacement, (X, Y, Z, 3) in world mm,
RAS, sampling convention: the sample at world point p is the template at p + d(p)); plus
``montage.png``, ``samples.tsv`` (the covariates of a conditioned run, folding voxels, min det J,
brain and ventricle volumes measured on the labels) and ``config.yaml``.

A run whose fields model is conditioned (``fields.conditioning``) takes covariates as ldm does
(``methods.conditioning``): the requested ones are checked, those not requested are drawn from
training subjects close to the requested ones, and DDIM runs with classifier-free guidance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from brainsynth.config import dump_yaml, to_dict
from brainsynth.data.covariates import CovariateNormaliser, check_names, is_missing
from brainsynth.data.labels import brain_mask, ventricle_mask, voxel_volume
from brainsynth.errors import InputError
from brainsynth.io import Volume, write_text_atomic, write_tsv_atomic, write_volume
from brainsynth.io.outdir import claim_output_dir
from brainsynth.methods.conditioning import (
    covariate_vectors,
    fill_covariates,
    make_cond,
    table_value,
)
from brainsynth.methods.deform.config import DeformConfig
from brainsynth.methods.deform.networks import fields_process, load_network
from brainsynth.methods.deform.refine import load_sharp_template
from brainsynth.methods.deform.template import load_template
from brainsynth.methods.ldm.data import crop_to, padded_shape
from brainsynth.registration.svf import integrate, jacobian_determinant, warp
from brainsynth.sampling import batch_progress, ddim_sample, guided
from brainsynth.viz import montage

OWNED = ("sample_*.nii.gz", "montage.png", "samples.tsv", "config.yaml")
MEASURED = ("brain_volume", "ventricle_volume")  # samples.tsv columns measured on the labels


def _column(name: str) -> str:
    """The samples.tsv column of a conditioned covariate: its name, ``<name>_cond`` for a volume
    (``<name>`` is the volume measured on the sample's labels)."""
    return f"{name}_cond" if name in MEASURED else name


def upsample_fields(v: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Pooled fields (B, 3, *s) (end-padded) back to the image grid ``shape`` (trilinear; the
    values are already in the image grid's voxels; half-voxel centres match average pooling)."""
    return F.interpolate(v, size=tuple(shape), mode="trilinear", align_corners=False)


def displacement_mm(u: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """(3, *S) voxel displacement -> (*S, 3) world mm (the grid's linear part applied)."""
    return np.einsum("ij,j...->...i", np.asarray(affine)[:3, :3], u)


def requested_covariates(
    ckpt: str | Path,
    cfg: DeformConfig,
    meta: dict,
    given: dict[str, float | None],
    guidance: float | None,
    n: int,
    seed: int,
) -> tuple[list[dict], torch.Tensor] | None:
    """The covariates of each of ``n`` samples (natural units; the ``given`` ones, the rest drawn)
    and their (n, K) normalised vectors; None for an unconditional run, which refuses covariates
    and ``guidance``."""
    check_names(given)
    names = cfg.fields.conditioning
    if not names:
        asked = [*given, *(["guidance"] if guidance is not None else [])]
        if asked:
            raise InputError(
                ckpt, f"this deform run's fields model is unconditional: it takes no {asked} (train "
                "its fields stage with e.g. --set fields.conditioning=[age,sex])",
            )  # fmt: skip
        return None
    other = [k for k in given if k not in names]
    if other:
        raise InputError(ckpt, f"this deform run is conditioned on {list(names)}, not on {other}")
    norm = CovariateNormaliser.from_dict(meta["covariate_normaliser"])
    rng = np.random.default_rng(seed)
    covs = fill_covariates(given, meta["training_covariates"], norm, n, rng)
    return covs, covariate_vectors(norm, covs, names)


def sample(
    ckpt: str | Path,
    out: str | Path,
    *,
    n: int = 4,
    covariates: dict[str, float | None] | None = None,
    guidance: float | None = None,
    steps: int | None = None,
    eta: float | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    batch_size: int = 4,
    progress=None,
    overwrite: bool = False,
) -> list[Path]:
    """``n`` generated scans with their labels from a deform run (see the module notes);
    ``covariates`` (natural units, sex F=0 M=1) and ``guidance`` only for a conditioned run."""
    if n < 1:
        raise InputError(None, f"the number of volumes must be at least 1, got {n}")
    cfg, model, meta = load_network(ckpt, "fields", device)
    given = {k: v for k, v in (covariates or {}).items() if not is_missing(v)}
    request = requested_covariates(ckpt, cfg, meta, given, guidance, n, seed)
    guidance = cfg.sample.guidance if guidance is None else guidance
    denoiser = model if request is None else guided(model, guidance)
    # the sharp template (refine.py) when the run has one, else the affine template
    template, labels = load_sharp_template(ckpt) or load_template(ckpt)
    out = claim_output_dir(out, OWNED, overwrite=overwrite)
    process = fields_process(cfg)
    steps = cfg.sample.steps if steps is None else steps
    eta = cfg.sample.eta if eta is None else eta
    std, full = float(meta["field_std"]), tuple(int(s) for s in meta["field_shape"])
    pooled = tuple(s // cfg.fields.downsample for s in full)
    tmpl = torch.from_numpy(template.data)[None, None].float().to(device)
    lab = None if labels is None else torch.from_numpy(labels.data.astype(np.float32))
    g = torch.Generator().manual_seed(seed)
    paths: list[Path] = []
    rows, shown = [], []
    n_batches = -(-n // batch_size)
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        x_T = torch.randn((b, 3, *padded_shape(pooled, model.spatial_multiple)), generator=g).to(
            device
        )
        cond = None
        if request is not None:
            cond = make_cond(request[1][start : start + b].to(device), "crossattn", x_T.shape[2:])
        z = ddim_sample(
            denoiser, process, x_T, steps=steps, cond=cond, eta=eta, generator=g,
            progress=batch_progress(progress, start // batch_size, n_batches),
        )  # fmt: skip
        if not torch.isfinite(z).all():
            raise InputError(ckpt, "the fields model gave non-finite velocity fields (NaN/inf)")
        v = upsample_fields(crop_to(z, pooled) * std, full)
        u = integrate(v)
        imgs = warp(tmpl.expand(b, -1, -1, -1, -1), u).clamp(0, 1).cpu()
        dets = jacobian_determinant(u).cpu().numpy()
        segs: np.ndarray | None = None
        if lab is not None:
            warped = warp(lab[None, None].expand(b, -1, -1, -1, -1).to(device), u, mode="nearest")
            segs = warped.round().cpu().numpy().astype(np.int16)
        for j in range(b):
            k = start + j
            aff = template.affine
            paths.append(
                write_volume(Volume(imgs[j, 0].numpy(), aff), out / f"sample_{k:03d}_T1w.nii.gz")
            )
            field = displacement_mm(u[j].cpu().double().numpy(), aff).astype(np.float32)
            write_volume(Volume(field, aff), out / f"sample_{k:03d}_field.nii.gz")
            row: dict[str, str | int] = {"sample": f"sample_{k:03d}"}
            if request is not None:
                row |= {
                    _column(c): table_value(c, request[0][k][c]) for c in cfg.fields.conditioning
                }
            row |= {
                "folding_voxels": int((dets[j] <= 0).sum()),
                "min_det_j": f"{float(dets[j].min()):.4f}",
            }
            if segs is not None:
                write_volume(Volume(segs[j, 0], aff), out / f"sample_{k:03d}_dseg.nii.gz")
                mm3 = voxel_volume(aff)
                row["brain_volume"] = f"{brain_mask(segs[j, 0]).sum() * mm3:.0f}"
                row["ventricle_volume"] = f"{ventricle_mask(segs[j, 0]).sum() * mm3:.0f}"
            rows.append(row)
            shown.append(imgs[j, 0].numpy())
    montage(
        [template.data, *shown[:7]],
        out / "montage.png",
        ["template", *[str(r["sample"]) for r in rows[:7]]],
        1.0,
    )
    write_tsv_atomic(out / "samples.tsv", rows)
    used = {"ckpt": str(ckpt), "n": n, "seed": seed, "steps": steps, "eta": eta}
    if request is not None:
        used |= {"guidance": guidance, "covariates": given}
    write_text_atomic(out / "config.yaml", dump_yaml({**used, **to_dict(cfg)}))
    return paths
