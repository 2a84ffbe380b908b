"""Restoring scans with the prior: DAPS posterior samples of each prepared scan (``scan.py``),
their mean and voxel-wise std, written as NIfTI in the prior's space and in the input's world
space, with a before/after montage; a batch reports its bad scans and finishes the good ones."""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from brainsynth.data.datasets import _is_volume, volume_stem
from brainsynth.data.preprocess import resample_to_grid
from brainsynth.errors import BrainsynthError, InputError
from brainsynth.inverse.daps import DAPSConfig, daps_sample
from brainsynth.inverse.denoiser import VPDenoiser
from brainsynth.io import Volume, write_tsv_atomic, write_volume
from brainsynth.io.outdir import claim_output_dir
from brainsynth.methods.ldm.data import crop_to
from brainsynth.methods.restore import geometry as geo_mod
from brainsynth.methods.restore.config import with_sampling
from brainsynth.methods.restore.prior import PriorInfo, load_prior, load_template
from brainsynth.methods.restore.scan import PreparedScan, ScanOptions, prepare_scan
from brainsynth.nn.slicewise import SliceWise
from brainsynth.viz import montage

OWNED = (
    "*_restored*.nii.gz",
    "*_std*.nii.gz",
    "*_bias_prior.nii.gz",
    "*_montage.png",
    "restore.tsv",
)


@dataclass
class Restored:
    """Posterior mean and std on the prior's grid (normalised units, ``info.shape``), the bias
    field estimate (or None), network evaluations per sample, seconds."""

    mean: np.ndarray
    std: np.ndarray
    bias: np.ndarray | None
    nfe: int
    seconds: float


def along_axes(model: torch.nn.Module, slice_axes: str, axis: int | None):
    """A slice-wise prior's axes for one scan (``RestoreRun.slice_axes``) for a ``with`` block; a
    3D prior, an isotropic scan or "all": unchanged."""
    if not isinstance(model, SliceWise) or axis is None or slice_axes == "all":
        return nullcontext(model)
    if slice_axes != "across":
        raise InputError(None, f"unknown slice_axes {slice_axes!r}; use all or across")
    return model.along([a for a in range(3) if a != axis])


def posterior(
    model: torch.nn.Module,
    process,
    info: PriorInfo,
    prep: PreparedScan,
    daps: DAPSConfig,
    *,
    samples: int = 4,
    init: str = "baseline",
    slice_axes: str = "all",
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress=None,
) -> Restored:
    """``samples`` DAPS runs of one scan in one batch. ``init``: "baseline" starts from the cubic
    B-spline interpolation of y (+ sigma_max noise: with a small sigma_max, a restoration that
    refines the baseline), "zeros" from the paper's x_T = sigma_max eps."""
    if init not in ("baseline", "zeros"):
        raise InputError(None, f"unknown init {init!r}; use baseline or zeros")
    device = torch.device(device)
    start = time.perf_counter()
    shape = (samples, 1, *info.padded_shape)
    x_init = None
    if init == "baseline":
        base = torch.from_numpy(prep.baseline(3))[None, None]
        x_init = info.to_model(base.clamp(0, 1)).expand(shape).contiguous().to(device)
    g = torch.Generator(device=device).manual_seed(seed)
    op = prep.op.to(device)
    if op.bias is not None:
        op.bias.coefficients = torch.zeros(1, op.bias.num_coefficients, dtype=torch.float64)
    with along_axes(model, slice_axes, prep.geometry.axis):
        res = daps_sample(
            VPDenoiser(model, process),
            op,
            prep.y.to(device),
            config=daps,
            x_init=x_init,
            shape=shape,
            generator=g,
            progress=progress,
        )
    x = info.from_model(crop_to(res.x0, info.shape)).double().cpu()
    bias = None
    if op.bias is not None:
        bias = crop_to(op.field().mean(0, keepdim=True), info.shape)[0, 0].cpu().numpy()
    mean = x.mean(0)[0].numpy().astype(np.float32)
    std = (x.std(0)[0] if samples > 1 else torch.zeros_like(x[0, 0])).numpy().astype(np.float32)
    same_grid = np.allclose(prep.prior_affine, prep.geometry.prior_affine, atol=1e-6)
    if prep.missing is not None and prep.geometry.axis is None and op.bias is None and same_grid:
        # Inpainting an isotropic scan: every voxel outside the mask is measured directly, so the
        # result keeps them (the measurement, not a re-synthesis of it) and the posterior fills
        # the mask; the std map then shows the uncertainty of the filled voxels only.
        keep = ~prep.missing[tuple(slice(0, n) for n in info.shape)]
        y = crop_to(prep.y, info.shape)[0, 0].numpy()
        mean = np.where(keep, y, mean).astype(np.float32)
        std = np.where(keep, 0.0, std).astype(np.float32)
    return Restored(mean, std, bias, res.nfe, time.perf_counter() - start)


def world_grid(scan: Volume, spacing: float) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The input's field of view on its own axes at ``spacing`` mm (same centre)."""
    fov = scan.spacing * np.asarray(scan.shape[:3])
    shape = tuple(int(max(1, round(f / spacing))) for f in fov)
    aff = geo_mod.prior_affine(scan, spacing, shape, geo_mod.fov_centre(scan))
    return aff, (shape[0], shape[1], shape[2])


def write_outputs(out: Path, stem: str, prep: PreparedScan, r: Restored, info: PriorInfo) -> None:
    aff = prep.prior_affine
    mean_s = prep.to_scan_units(np.clip(r.mean, 0, None))
    std_s = (r.std * (prep.high - prep.low)).astype(np.float32)
    write_volume(Volume(mean_s, aff), out / f"{stem}_restored_prior.nii.gz")
    write_volume(Volume(std_s, aff), out / f"{stem}_std_prior.nii.gz")
    w_aff, w_shape = world_grid(prep.scan, info.spacing)
    for arr, name in ((mean_s, "restored"), (std_s, "std")):
        vol = resample_to_grid(Volume(arr, aff), w_aff, w_shape, order=1)
        write_volume(vol, out / f"{stem}_{name}.nii.gz")
    if r.bias is not None:
        write_volume(Volume(r.bias.astype(np.float32), aff), out / f"{stem}_bias_prior.nii.gz")
    before = crop_to(torch.from_numpy(prep.baseline(1))[None, None], info.shape)[0, 0].numpy()
    vmax = 1.2 if r.bias is not None else 1.0
    montage(
        [before, r.mean, r.std / max(float(r.std.max()), 1e-6)],
        out / f"{stem}_montage.png",
        [f"{stem}: input (linear)", "restored (posterior mean)", "posterior std (scaled)"],
        vmax,
    )


def list_inputs(path: Path) -> list[Path]:
    """A NIfTI file, a folder of them, or a BIDS folder (``sub-*/[ses-*/]anat/*_T1w.nii*``)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "input not found")
    if path.is_file():
        return [path]
    bids = sorted(path.glob("sub-*/anat/*_T1w.nii*")) + sorted(
        path.glob("sub-*/ses-*/anat/*_T1w.nii*")
    )
    found = bids or sorted(p for p in path.iterdir() if p.is_file() and _is_volume(p))
    found = [p for p in found if not p.name.endswith(("_mask.nii.gz", "_mask.nii"))]
    if not found:
        raise InputError(path, "no NIfTI/MGZ scans found (a file, a folder of them, or BIDS)")
    return found


def mask_for(mask: Path | None, scan: Path) -> Path | None:
    """The scan's mask: the file itself, or ``STEM_mask.nii.gz`` in a folder (degrade's layout)."""
    if mask is None or not mask.is_dir():
        return mask
    return mask / f"{volume_stem(scan)}_mask.nii.gz"


def restore(
    ckpt: Path,
    inputs: Path,
    out: Path,
    opts: ScanOptions,
    *,
    mask: Path | None = None,
    brain_mask: Path | None = None,
    samples: int | None = None,
    daps_overrides: dict | None = None,
    config: Path | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    overwrite: bool = False,
    progress=None,
) -> list[dict]:
    """Restore every scan of ``inputs`` into ``out`` (empty unless ``overwrite``); returns one
    row per scan (also in restore.tsv): status ok/error, seconds, NFE per sample, message."""
    scans = list_inputs(inputs)
    if mask is not None and mask.is_file() and len(scans) > 1:
        raise InputError(mask, "one mask file for several scans: give a folder of STEM_mask.nii.gz")
    out = claim_output_dir(out, OWNED, overwrite=overwrite)
    cfg, model, process, info = load_prior(ckpt, device)
    cfg = with_sampling(cfg, config)  # posterior-sampling settings from a YAML, over the run's own
    template = load_template(ckpt) if opts.align == "affine" else None
    daps = replace(cfg.daps, **(daps_overrides or {}))
    if opts.task == "refine" and not (daps_overrides or {}).get("tau"):
        daps = replace(daps, tau=None)  # the trust level is the likelihood's std
    n_samples = samples or cfg.restore.samples
    rows = []
    for k, path in enumerate(scans):
        stem = volume_stem(path)
        row: dict[str, object] = {
            "scan": str(path), "task": opts.task, "status": "ok", "seconds": "", "nfe": "",
        }  # fmt: skip
        row.update({"samples": n_samples, "message": ""})
        t0 = time.perf_counter()
        try:
            prep = prepare_scan(
                path,
                info,
                opts,
                mask=mask_for(mask, path),
                brain_mask=brain_mask,
                template=template,
            )
            run_progress = None
            if progress is not None:
                run_progress = lambda i, n, k=k: progress(k * n + i, len(scans) * n)  # noqa: E731
            r = posterior(
                model, process, info, prep, daps, samples=n_samples, init=cfg.restore.init,
                slice_axes=cfg.restore.slice_axes,
                seed=seed + k, device=device, progress=run_progress,
            )  # fmt: skip
            write_outputs(out, stem, prep, r, info)
            row.update(nfe=r.nfe, seconds=f"{time.perf_counter() - t0:.1f}")
        except (BrainsynthError, ValueError, FloatingPointError) as e:
            row.update(status="error", message=str(e))
        rows.append(row)
    write_tsv_atomic(out / "restore.tsv", rows)
    return rows
