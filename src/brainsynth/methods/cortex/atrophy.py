"""Cortical atrophy as a pair of scans: the given surfaces and the same surfaces with every pial
vertex moved inward by ``mm`` (``geometry.atrophy``), both rasterised on one grid (the original
surfaces' grid) and generated from the same noise (any ``model.kind``: the regression has none),
so the two scans differ by the atrophy alone. With a region (``geometry.region``: a FreeSurfer
annotation name or a label of a volume), only its vertices move, tapered over ``taper_rings`` rings
at its border.

Written: ``before_T1w.nii.gz``, ``after_T1w.nii.gz``, ``difference.nii.gz`` (after - before),
``surfaces/`` (the atrophied pial + the unchanged white surfaces, GIfTI), ``atrophy.json``
(requested mm, the mean thickness change of the surfaces), ``montage.png``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from brainsynth.errors import InputError
from brainsynth.geometry.atrophy import atrophy_with_thickness, thickness
from brainsynth.geometry.extract import write_surfaces
from brainsynth.geometry.region import region_masks
from brainsynth.io import Volume, write_text_atomic, write_volume
from brainsynth.io.outdir import claim_output_dir
from brainsynth.methods.cortex.data import channels_from_surfaces, pad_channels
from brainsynth.methods.cortex.networks import load_model
from brainsynth.methods.cortex.sample import Surfaces, generate, placed
from brainsynth.methods.ldm.data import crop_to
from brainsynth.viz import montage

OWNED = ("before_T1w.nii.gz", "after_T1w.nii.gz", "difference.nii.gz", "surfaces",
         "atrophy.json", "montage.png")  # fmt: skip


def atrophied(
    surfaces: Surfaces,
    mm: float,
    masks: dict[str, np.ndarray] | None = None,
    taper_rings: int = 0,
) -> tuple[Surfaces, dict[str, float]]:
    """The surfaces with each hemisphere's pial moved inward by ``mm`` (inside ``masks[hemi]``
    when given: a hemisphere without a mask does not move), and the mean thickness change per
    hemisphere over the vertices meant to move (mm, measured on the meshes)."""
    out = dict(surfaces)
    change = {}
    for hemi in ("lh", "rh"):
        pial, white = surfaces.get((hemi, "pial")), surfaces.get((hemi, "white"))
        if pial is None or white is None:
            continue
        mask = None if masks is None else masks.get(hemi, np.zeros(pial.n_vertices, dtype=bool))
        if mask is not None and not mask.any():
            continue
        new, before = atrophy_with_thickness(pial, white, mm, mask, taper_rings=taper_rings)
        out[hemi, "pial"] = new
        delta = thickness(new, white) - before
        change[hemi] = float(np.mean(delta if mask is None else delta[mask]))
    return out, change


def atrophy_pair(
    ckpt: str | Path,
    surfaces: str | Path | Surfaces,
    out: str | Path,
    mm: float,
    *,
    steps: int | None = None,
    seed: int = 0,
    region: str | None = None,
    region_map: str | Path | None = None,
    taper_rings: int = 2,
    device: torch.device | str = "cpu",
    overwrite: bool = False,
) -> list[Path]:
    """Before/after scans of an atrophy of ``mm``, everywhere or in ``region`` (module
    docstring)."""
    if not mm > 0:
        raise InputError(None, f"--mm must be > 0, got {mm}")
    cfg, model, meta = load_model(ckpt, device)
    grid = meta.get("grid")
    if not isinstance(grid, dict):
        raise InputError(ckpt, "not a cortex run: its config has no grid")
    surf, aff = placed(surfaces, grid)
    masks = None
    if region is not None:
        folder = surfaces if isinstance(surfaces, (str, Path)) else None
        masks = region_masks(surf, region, surfaces_dir=folder, region_map=region_map)
    out = claim_output_dir(out, OWNED, overwrite=overwrite)
    after, change = atrophied(surf, mm, masks, taper_rings)
    shape = tuple(int(s) for s in grid["shape"])
    padded = tuple(int(s) for s in grid["padded"])
    vols = []
    for s in (surf, after):
        ch = channels_from_surfaces(s, shape, aff, cfg.data.clip_mm)
        x = pad_channels(torch.from_numpy(ch), padded)[None].to(device)
        img = generate(model, cfg, x, steps=steps, generator=torch.Generator().manual_seed(seed))
        vols.append(crop_to(img, shape)[0, 0].cpu().numpy())
    files = [
        write_volume(Volume(vols[0], aff), out / "before_T1w.nii.gz"),
        write_volume(Volume(vols[1], aff), out / "after_T1w.nii.gz"),
        write_volume(Volume(vols[1] - vols[0], aff), out / "difference.nii.gz"),
    ]
    files += list(write_surfaces(after, out / "surfaces").values())
    body = {"requested_mm": mm, "mean_thickness_change_mm": change, "seed": seed,
            "ckpt": str(ckpt), "region": region, "taper_rings": taper_rings if region else 0,
            "region_vertices": {h: int(m.sum()) for h, m in (masks or {}).items()}}  # fmt: skip
    write_text_atomic(out / "atrophy.json", json.dumps(body, indent=2) + "\n")
    files.append(out / "atrophy.json")
    diff = np.abs(vols[1] - vols[0])
    files.append(
        montage(
            [vols[0], vols[1], diff / max(float(diff.max()), 1e-6)],
            out / "montage.png",
            ["before", f"after (-{mm} mm)", "|difference| (scaled)"],
            1.0,
        )  # fmt: skip
    )
    return files
