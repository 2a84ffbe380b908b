"""``brainsynth register``: one pair of scans through a trained DiffuseMorph.

The fixed scan defines the space: it is resampled (linear) onto the network's grid (the
template's spacing and shape) on its own RAS axes, centred on its foreground, and normalised as
the cache is (its 0.5/99.5 foreground percentiles -> 0/1). The moving scan (and its labels) is
brought onto that grid by an affine registration (``registration.affine``) unless
``--no-affine``. Every output lies on that grid, whose affine places it in the fixed scan's world
space: ``warped_T1w``, ``warped_dseg`` (nearest), ``velocity`` and ``displacement`` ((X, Y, Z, 3),
world mm, RAS; sampling convention: the warped image at p is the moving image at p + d(p)),
``jacobian`` (det J), one set per eta (suffix ``_eta-0.5``), plus ``fixed`` and ``moving_affine``
(the inputs on the grid) and ``register.tsv`` (folding, Dice where both label maps are given)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from brainsynth.data.preprocess import (
    bbox_centre,
    normalise_intensity,
    reorient_ras,
    resample_to_grid,
)
from brainsynth.errors import InputError
from brainsynth.io import Volume, read_volume, write_tsv_atomic, write_volume
from brainsynth.io.outdir import claim_output_dir
from brainsynth.methods.deform.networks import OFFSET, SCALE, load_network
from brainsynth.methods.deform.sample import displacement_mm
from brainsynth.methods.deform.template import load_template
from brainsynth.registration.affine import register_affine
from brainsynth.registration.svf import jacobian_determinant, warp

OWNED = ("*.nii.gz", "register.tsv")


def on_grid(scan: Volume, spacing: float, shape: tuple[int, ...]) -> tuple[np.ndarray, Volume]:
    """(affine, normalised scan on it): the grid of ``shape`` at ``spacing`` mm on the scan's RAS
    axes, centred on its non-zero voxels (the brain of a skull-stripped scan)."""
    ras = reorient_ras(scan)
    centre = ras.affine @ np.append(bbox_centre(ras.data > 0), 1.0)
    axes = ras.affine[:3, :3] / np.linalg.norm(ras.affine[:3, :3], axis=0)
    aff = np.eye(4)
    aff[:3, :3] = axes * spacing
    aff[:3, 3] = centre[:3] - aff[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    vol = resample_to_grid(ras, aff, shape, order=1)
    return aff, normalise_intensity(vol)


def check_pair(
    moving: Path, fixed: Path, labels: Path | None
) -> tuple[Volume, Volume, Volume | None]:
    """Read the pair (3D, finite: ``read_volume`` names the file and the problem) and the labels,
    which must lie on the moving scan's grid."""
    vols = [read_volume(p) for p in (moving, fixed)]  # a 2D/4D file: an error naming it
    lab = None
    if labels is not None:
        lab = read_volume(labels, dtype=None)
        if lab.shape[:3] != vols[0].shape[:3] or not np.allclose(
            lab.affine, vols[0].affine, atol=1e-3
        ):
            raise InputError(
                labels,
                f"label map on another grid than the moving scan {moving} (shape "
                f"{list(lab.shape[:3])} vs {list(vols[0].shape[:3])}, or a different affine)",
            )
    if not np.any(vols[0].data) or not np.any(vols[1].data):
        bad = moving if not np.any(vols[0].data) else fixed
        raise InputError(bad, "the scan is empty (all zeros)")
    return vols[0], vols[1], lab


def register(
    ckpt: str | Path,
    moving: Path,
    fixed: Path,
    out: Path,
    *,
    labels: Path | None = None,
    fixed_labels: Path | None = None,
    etas: tuple[float, ...] = (1.0,),
    affine: bool = True,
    device: torch.device | str = "cpu",
    overwrite: bool = False,
) -> list[Path]:
    for e in etas:
        if not 0.0 <= e <= 1.0:
            raise InputError(None, f"eta must be in [0, 1], got {e}")
    cfg, model, _ = load_network(ckpt, "register", device)
    template, _ = load_template(ckpt)
    mov, fix, lab = check_pair(moving, fixed, labels)
    out = claim_output_dir(out, OWNED, overwrite=overwrite)
    spacing = float(np.linalg.norm(template.affine[:3, 0]))
    aff, fix_g = on_grid(fix, spacing, template.shape)
    if affine:
        mov_n = normalise_intensity(reorient_ras(mov))
        m = register_affine(fix_g, mov_n)
    else:
        mov_n, m = normalise_intensity(reorient_ras(mov)), np.eye(4)
    moved = Volume(mov_n.data, np.linalg.inv(m) @ mov_n.affine)
    mov_g = resample_to_grid(moved, aff, template.shape)
    files = [
        write_volume(fix_g, out / "fixed.nii.gz"),
        write_volume(mov_g, out / "moving_affine.nii.gz"),
    ]
    lab_g = None
    if lab is not None:
        lab_ras = reorient_ras(Volume(lab.data, lab.affine))
        lab_g = resample_to_grid(
            Volume(lab_ras.data, np.linalg.inv(m) @ lab_ras.affine), aff, template.shape, 0
        )
    f = torch.from_numpy(fix_g.data)[None, None].float().to(device) * SCALE + OFFSET
    mv = torch.from_numpy(mov_g.data)[None, None].float().to(device) * SCALE + OFFSET
    rows = []
    fixed_lab = None
    if fixed_labels is not None:
        fl = read_volume(fixed_labels, dtype=None)
        fl_ras = reorient_ras(fl)
        fixed_lab = resample_to_grid(fl_ras, aff, template.shape, 0).data
    for eta in etas:
        sfx = "" if len(etas) == 1 else f"_eta-{eta:g}"
        with torch.no_grad():
            v, u = model(mv, f, eta)
        warped = ((warp(mv, u) - OFFSET) / SCALE).clamp(0, 1)
        det = jacobian_determinant(u)[0].cpu().numpy()
        u_np, v_np = u[0].cpu().double().numpy(), v[0].cpu().double().numpy()
        files += [
            write_volume(Volume(warped[0, 0].cpu().numpy(), aff), out / f"warped_T1w{sfx}.nii.gz"),
            write_volume(
                Volume(displacement_mm(v_np, aff).astype(np.float32), aff),
                out / f"velocity{sfx}.nii.gz",
            ),
            write_volume(
                Volume(displacement_mm(u_np, aff).astype(np.float32), aff),
                out / f"displacement{sfx}.nii.gz",
            ),
            write_volume(Volume(det.astype(np.float32), aff), out / f"jacobian{sfx}.nii.gz"),
        ]
        row = {"eta": f"{eta:g}", "folding_percent": f"{100 * float((det <= 0).mean()):.4f}"}
        if lab_g is not None:
            lt = torch.from_numpy(lab_g.data.astype(np.float32))[None, None].to(device)
            wl = warp(lt, u, mode="nearest")[0, 0].round().cpu().numpy().astype(np.int16)
            files.append(write_volume(Volume(wl, aff), out / f"warped_dseg{sfx}.nii.gz"))
            if fixed_lab is not None:
                from brainsynth.evaluation.overlap import structure_dice

                row["dice_mean"] = f"{structure_dice(wl, fixed_lab)['mean']:.4f}"
        rows.append(row)
    write_tsv_atomic(out / "register.tsv", rows)
    return files
