"""T1w volumes whose cortex follows given surfaces: shape channels on a grid placed in the
surfaces' world space, then ``generate`` by the run's ``model.kind``: the bridge's skip-step
sampler from y = S_c to x0 (``bridge``), DDIM from x_T ~ N(0, I) (``ddpm``) or one forward pass
(``regression``: the same volume for every seed), the selected shape channels concatenated.

The grid: the run's training grid (shape, spacing), RAS, placed so that the centre of the pial
surfaces' bounding box lands where it lay on average in training (``grid.cortex_centre``): the
output is in the surfaces' world space, with no resampling.

Written: ``<name>_T1w.nii.gz`` per sample ([0, 1]), ``<name>_Sc.nii.gz`` (the fused cortex SDF
the sample came from), ``montage.png``, ``samples.tsv``, ``config.yaml``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from brainsynth.config import dump_yaml, to_dict
from brainsynth.diffusion.base import Cond
from brainsynth.errors import InputError
from brainsynth.geometry.extract import find_surfaces, is_closed
from brainsynth.io import Surface, Volume, read_surface, write_text_atomic, write_volume
from brainsynth.io.atomic import write_tsv_atomic
from brainsynth.io.outdir import claim_output_dir
from brainsynth.methods.cortex.config import CortexConfig
from brainsynth.methods.cortex.data import (
    OFFSET,
    SCALE,
    channels_from_surfaces,
    pad_channels,
    select_channels,
)
from brainsynth.methods.cortex.networks import (
    build_bridge,
    build_gaussian,
    load_model,
    regression_input,
)
from brainsynth.methods.ldm.data import crop_to
from brainsynth.sampling import batch_progress, bridge_sample, ddim_sample
from brainsynth.sampling.schedule import randn_like
from brainsynth.viz import montage

OWNED = ("*_T1w.nii.gz", "*_Sc.nii.gz", "montage.png", "samples.tsv", "config.yaml")
Surfaces = dict[tuple[str, str], Surface]


def read_surfaces(folder: str | Path) -> Surfaces:
    """The four surfaces (lh/rh x pial/white) of a folder (``geometry.extract.find_surfaces``);
    an open mesh (the signed distance needs closed ones) is an InputError naming its file."""
    out = {}
    for key, p in find_surfaces(folder).items():
        surf = read_surface(p)
        watertight, _ = is_closed(surf.faces)
        if not watertight:
            raise InputError(
                p, "open mesh: some edges bound one face only (a closed surface is needed)"
            )
        out[key] = surf
    return out


def grid_affine(surfaces: Surfaces, grid: dict) -> np.ndarray:
    """RAS affine of the run's grid with the pial surfaces' bounding-box centre at
    ``grid["cortex_centre"]`` (voxels)."""
    pial = [s.vertices for (_, kind), s in surfaces.items() if kind == "pial"]
    if not pial:
        raise InputError(None, "no pial surface given")
    v = np.concatenate(pial)
    centre = (v.min(0) + v.max(0)) / 2
    sp = float(grid["spacing"])
    extent, room = v.max(0) - v.min(0), sp * np.asarray(grid["shape"], dtype=np.float64)
    if (extent > room).any():
        raise InputError(
            None,
            f"the pial surfaces span {np.round(extent, 1).tolist()} mm, more than the model's grid "
            f"({np.round(room, 1).tolist()} mm): surfaces in other units than mm, or not a brain?",
        )
    aff = np.diag([sp, sp, sp, 1.0])
    aff[:3, 3] = centre - sp * np.asarray(grid["cortex_centre"], dtype=np.float64)
    return aff


def placed(surfaces: str | Path | Surfaces, grid: dict) -> tuple[Surfaces, np.ndarray]:
    """(surfaces, the grid's affine) for a folder or ``{(hemi, kind): Surface}``; errors name
    the folder."""
    if not isinstance(surfaces, (str, Path)):
        return surfaces, grid_affine(surfaces, grid)
    surf = read_surfaces(surfaces)
    try:
        return surf, grid_affine(surf, grid)
    except InputError as e:
        raise e.at(surfaces) from e


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    cfg: CortexConfig,
    channels: torch.Tensor,
    *,
    steps: int | None = None,
    eta: float | None = None,
    generator: torch.Generator | None = None,
    progress=None,
) -> torch.Tensor:
    """x0 (B, 1, *P) in [0, 1] from padded shape channels (B, 5, *P) (model units), by
    ``cfg.model.kind`` (module docstring); ``steps``/``eta`` default to ``cfg.sample``'s and are
    ignored by the regression."""
    cond = Cond(concat=select_channels(channels, cfg))
    steps = cfg.sample.steps if steps is None else steps
    eta = cfg.sample.eta if eta is None else eta
    kind = cfg.model.kind
    if kind == "bridge":
        y = channels[:, :1]
        x0 = bridge_sample(
            model, build_bridge(cfg), y, steps=steps, cond=cond, y=y, generator=generator,
            progress=progress, eta=eta, spacing=cfg.sample.spacing, clip_x0=(-1, 1),
        )  # fmt: skip
    elif kind == "ddpm":
        x_T = randn_like(channels[:, :1], generator)
        x0 = ddim_sample(
            model, build_gaussian(cfg), x_T, steps=steps, cond=cond, generator=generator,
            progress=progress, eta=eta, spacing=cfg.sample.spacing, clip_x0=(-1, 1),
        )  # fmt: skip
    else:
        x, t = regression_input(channels)
        x0 = model(x, t, cond).float().clamp(-1, 1)
        if progress is not None:
            progress(1, 1)
    return ((x0 - OFFSET) / SCALE).clamp(0, 1)


def sample(
    ckpt: str | Path,
    surfaces: str | Path | Surfaces,
    out: str | Path,
    *,
    n: int = 1,
    steps: int | None = None,
    eta: float | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    name: str = "sample",
    progress=None,
    overwrite: bool = False,
) -> list[Path]:
    """``n`` T1w volumes (different noise) whose cortex follows ``surfaces`` (a folder or
    ``{(hemi, kind): Surface}``), in the surfaces' world space (module docstring)."""
    if n < 1:
        raise InputError(None, f"the number of volumes must be at least 1, got {n}")
    cfg, model, meta = load_model(ckpt, device)
    grid = meta.get("grid")
    if not isinstance(grid, dict):
        raise InputError(ckpt, "not a cortex run: its config has no grid")
    surf, aff = placed(surfaces, grid)
    out = claim_output_dir(out, OWNED, overwrite=overwrite)
    shape = tuple(int(s) for s in grid["shape"])
    padded = tuple(int(s) for s in grid["padded"])
    ch = channels_from_surfaces(surf, shape, aff, cfg.data.clip_mm)
    x = pad_channels(torch.from_numpy(ch), padded)[None].to(device)
    g = torch.Generator().manual_seed(seed)
    paths: list[Path] = []
    rows: list[dict] = []
    names: list[str] = []
    shown: list[np.ndarray] = []
    for k in range(n):
        img = generate(model, cfg, x, steps=steps, eta=eta, generator=g,
                       progress=batch_progress(progress, k, n))  # fmt: skip
        vol = crop_to(img, shape)[0, 0].cpu().numpy()
        paths.append(write_volume(Volume(vol, aff), out / f"{name}_{k:03d}_T1w.nii.gz"))
        names.append(f"{name}_{k:03d}")
        rows.append({"sample": names[-1], "seed": seed, "index": k})
        shown.append(vol)
    write_volume(Volume(ch[0], aff), out / f"{name}_Sc.nii.gz")
    montage([(ch[0] + 1) / 2, *shown[:5]], out / "montage.png",
            ["S_c (input)", *names[:5]], 1.0)  # fmt: skip
    write_tsv_atomic(out / "samples.tsv", rows)
    used = {"ckpt": str(ckpt), "n": n, "seed": seed, "steps": steps, "eta": eta}
    write_text_atomic(out / "config.yaml", dump_yaml({**used, **to_dict(cfg)}))
    return paths
