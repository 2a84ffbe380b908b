"""The phantom cohort's template: nilearn's MNI152 2009 T1 and GM/WM maps, on any voxel size.

Everything comes from files inside the nilearn wheel (no download). The 1 mm template is skull
stripped; its brain mask is ``T1 > 0.2`` (nilearn's own definition). Regions that tissue maps alone
cannot separate are derived once, on a 2 mm analysis grid, and resampled:

* lateral ventricles: CSF-dominant voxels far (> 15 mm) from the brain's outer boundary whose
  connected components (cut at the midline) sit where the lateral ventricles are (centroid 8-30 mm
  off the midline, y -45..10, z 0..35 mm), grown back through adjacent CSF deeper than 6 mm; robust because the template is an
  average with a single, symmetric, large ventricular system;
* cerebrum: inside the fitted fsaverage5 pial surfaces (dilated 4 mm) or above z = 0; the rest of
  the brain is cerebellum and brainstem (brainstem: within 14 mm of the midline, in front of
  y = -42 mm);
* deep grey nuclei: grey matter inside the fitted white surfaces, within a central box.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from brainsynth.data import phantom_surfaces as ps
from brainsynth.data.phantom_field import _apply

ANALYSIS_MM = 2.0
BRAIN_THRESHOLD = 0.2  # nilearn.datasets.load_mni152_brain_mask's default
MNI_FILES = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"


@dataclass(frozen=True)
class Template:
    """Template maps on one grid (all (X, Y, Z) float32 in [0, 1]) and its voxel -> world affine.

    ``gm + wm + csf == brain``; ``icv`` adds a 3 mm CSF rim around the skull-stripped brain.
    ``ventricles``, ``cerebrum`` and ``deep`` are soft *regions* that gate tissue classes into labels.
    ``mu`` holds the template's CSF/GM/WM intensities.
    """

    affine: np.ndarray
    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray
    icv: np.ndarray
    ventricles: np.ndarray
    cerebrum: np.ndarray
    deep: np.ndarray
    mu: dict

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.t1.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> float:
        return float(np.sqrt((self.affine[:3, :3] ** 2).sum(0)).mean())


def nilearn_data_dir() -> Path | None:
    """nilearn's packaged data folder, found without importing nilearn (a 3 s import)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


@functools.lru_cache(maxsize=1)
def mni_1mm() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(t1, gm, wm, affine) at 1 mm: nilearn's packaged MNI152 2009 files, each scaled to [0, 1]
    as ``nilearn.datasets.load_mni152_{,gm_,wm_}template`` do (used when the files have moved)."""
    folder = nilearn_data_dir()
    paths = [folder / MNI_FILES.format(kind) for kind in ("t1", "gm", "wm")] if folder else []
    imgs: list[Any]
    if paths and all(p.exists() for p in paths):
        imgs = [nib.load(str(p)) for p in paths]
    else:
        from nilearn import datasets

        loaders = ("load_mni152_template", "load_mni152_gm_template", "load_mni152_wm_template")
        imgs = [getattr(datasets, f)(resolution=1) for f in loaders]
    arrays = [np.asarray(img.get_fdata(dtype=np.float32)) for img in imgs]
    arrays = [a / a.max() for a in arrays]
    return arrays[0], arrays[1], arrays[2], np.asarray(imgs[0].affine, dtype=np.float64)


def grid_for(
    spacing: float, shape1: tuple[int, ...], affine1: np.ndarray
) -> tuple[tuple[int, int, int], np.ndarray]:
    """Grid covering the 1 mm template's field of view with ``spacing`` mm voxels (same corner)."""
    nx, ny, nz = (int(np.ceil(s / spacing)) for s in shape1[:3])
    shape = (nx, ny, nz)
    scale = np.diag([spacing, spacing, spacing, 1.0])
    return shape, affine1 @ scale


def resample(
    data: np.ndarray, affine: np.ndarray, shape: tuple[int, ...], new_affine: np.ndarray
) -> np.ndarray:
    """Linear resampling onto another grid, Gaussian pre-filtered against aliasing when coarser."""
    src = np.sqrt((affine[:3, :3] ** 2).sum(0))
    dst = np.sqrt((new_affine[:3, :3] ** 2).sum(0))
    sigma = np.sqrt(np.maximum((dst / src) ** 2 - 1.0, 0.0)) * 0.5
    smooth = ndi.gaussian_filter(data, sigma) if np.any(sigma > 0) else data
    m = np.linalg.inv(affine) @ new_affine
    out = ndi.affine_transform(
        smooth, m[:3, :3], m[:3, 3], output_shape=tuple(shape), order=1, mode="constant"
    )
    return out.astype(np.float32)


def world_coords(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """World mm of every voxel centre: (3, X, Y, Z)."""
    idx = np.indices(shape, dtype=np.float64).reshape(3, -1).T
    return _apply(affine, idx).T.reshape(3, *shape)


def _ventricle_region(csf_cls: np.ndarray, brain: np.ndarray, affine: np.ndarray) -> np.ndarray:
    mm = float(np.sqrt((affine[:3, :3] ** 2).sum(0)).mean())
    depth = ndi.distance_transform_edt(brain) * mm
    x, y, z = world_coords(brain.shape, affine)
    # cut at the midline: on a 2 mm grid the septum pellucidum is blurred away
    seeds_all = csf_cls & (depth > 15.0) & (np.abs(x) >= 0.5 * mm)
    lab, n = ndi.label(seeds_all)
    seeds = np.zeros_like(brain)
    for k in range(1, n + 1):
        comp = lab == k
        if comp.sum() * mm**3 < 1000.0:
            continue
        cx, cy, cz = (float(c[comp].mean()) for c in (x, y, z))
        if 8 <= abs(cx) <= 30 and -45 <= cy <= 10 and 0 <= cz <= 35:
            seeds |= comp
    if not seeds.any():
        raise RuntimeError("no lateral ventricles found in the MNI152 template (nilearn changed?)")
    allowed = csf_cls & (depth > 6.0) & (np.abs(x) >= 0.5 * mm)
    grown = ndi.binary_propagation(seeds, mask=allowed | seeds)
    return ndi.binary_dilation(grown, iterations=1)


def _surface_regions(
    surfaces: dict, brain: np.ndarray, affine: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(cerebrum, deep-nuclei region) boolean masks on the analysis grid."""
    pial = np.zeros_like(brain)
    white = np.zeros_like(brain)
    for (_hemi, kind), (v, f) in surfaces.items():
        fill = ps.rasterize_filled(v, f, brain.shape, affine)
        if kind == "pial":
            pial |= fill
        else:
            white |= fill
    x, y, z = world_coords(brain.shape, affine)
    cerebrum = ndi.binary_dilation(pial, iterations=2) | (z > 0)
    box = (np.abs(x) < 33) & (y > -42) & (y < 30) & (z > -20) & (z < 28)
    deep = ndi.binary_erosion(white, iterations=1) & box
    return cerebrum & brain, deep & brain


@functools.lru_cache(maxsize=4)
def _base_maps(spacing: float) -> dict[str, np.ndarray]:
    """t1, brain (fraction), gm, wm (fractions, ``gm + wm <= brain``) and affine on a grid.

    Grids coarser than 2 mm are made from the 2 mm maps (cheaper than filtering the 1 mm ones).
    """
    t1, gm, wm, aff1 = mni_1mm()
    src, aff_src = {"t1": t1, "brain": (t1 > BRAIN_THRESHOLD).astype(np.float32)}, aff1
    src.update(gm=gm * src["brain"], wm=wm * src["brain"], t1=t1 * src["brain"])
    if spacing > ANALYSIS_MM:
        base = _base_maps(ANALYSIS_MM)
        src, aff_src = {k: base[k] for k in ("t1", "brain", "gm", "wm")}, base["affine"]
    shape, aff = grid_for(spacing, t1.shape, aff1)
    out = {k: np.clip(resample(v, aff_src, shape, aff), 0, None) for k, v in src.items()}
    out["brain"] = np.clip(out["brain"], 0, 1)
    total = out["gm"] + out["wm"]
    scale = np.where(total > out["brain"], out["brain"] / np.maximum(total, 1e-6), 1.0)
    out["gm"], out["wm"] = out["gm"] * scale, out["wm"] * scale
    out["affine"] = aff
    return out


@functools.lru_cache(maxsize=1)
def fitted_surfaces() -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """fsaverage5 pial/white meshes in MNI152 2009 world mm, fitted to the template (see the module
    doc of :mod:`brainsynth.data.phantom_surfaces`)."""
    t1, gm, wm, aff1 = mni_1mm()
    brain1 = (t1 > BRAIN_THRESHOLD).astype(np.float32)
    b2 = _base_maps(ANALYSIS_MM)
    sdf_w = ps.signed_distance(b2["wm"] > 0.5, ANALYSIS_MM)
    sdf_p = ps.signed_distance(b2["gm"] + b2["wm"] > 0.5, ANALYSIS_MM)
    raw = ps.load_fsaverage5()
    sub = slice(None, None, 3)
    pts = [np.concatenate([raw[h, k][0][sub] for h in ps.HEMIS]) for k in ps.KINDS]
    m = ps.fit_affine(pts, [sdf_p, sdf_w], b2["affine"])
    maps = {"pial": (gm + wm) * brain1, "white": wm * brain1}
    out = {}
    for (hemi, kind), (v, f) in raw.items():
        fitted = _apply(m, v)
        out[hemi, kind] = (ps.refine_along_normals(fitted, f, maps[kind], aff1), f)
    return out


@functools.lru_cache(maxsize=1)
def regions_2mm() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ventricles, cerebrum, deep, affine) float32 regions on the 2 mm analysis grid."""
    b2 = _base_maps(ANALYSIS_MM)
    brain, g2, w2, aff2 = b2["brain"] > 0.5, b2["gm"], b2["wm"], b2["affine"]
    c2 = np.clip(b2["brain"] - g2 - w2, 0.0, 1.0)
    vent = _ventricle_region((c2 > g2) & (c2 > w2) & brain, brain, aff2)
    cerebrum, deep = _surface_regions(fitted_surfaces(), brain, aff2)
    return vent.astype(np.float32), cerebrum.astype(np.float32), deep.astype(np.float32), aff2


@functools.lru_cache(maxsize=1)
def brain_stats() -> tuple[np.ndarray, float]:
    """(centroid in world mm, volume in mm^3) of the template brain as the labels count it: tissue
    plus ventricles, no outer CSF. From the 2 mm maps whatever the output spacing, so that a seed
    gives the same anatomy at every spacing."""
    b2 = _base_maps(ANALYSIS_MM)
    vent = regions_2mm()[0] > 0.5
    brain = b2["gm"] + b2["wm"] + np.clip(b2["brain"] - b2["gm"] - b2["wm"], 0, 1) * vent
    idx = np.argwhere(b2["brain"] > 0.5).mean(axis=0)
    centroid = _apply(b2["affine"], idx)
    return centroid, float(brain.sum() * ANALYSIS_MM**3)


def _tissue_means(t1: np.ndarray, gm: np.ndarray, wm: np.ndarray, brain: np.ndarray) -> dict:
    """Median template intensity of nearly pure WM and GM, and of the darkest CSF (5th percentile
    in CSF-dominant voxels: the template's CSF is blurred by averaging, real CSF is darker)."""
    csf = np.clip(brain - gm - wm, 0, 1)
    return {
        "wm": float(np.median(t1[wm > 0.9])),
        "gm": float(np.median(t1[(gm > 0.8) & (brain > 0.99)])),
        "csf": float(np.percentile(t1[(csf > 0.6) & (brain > 0.99)], 5)),
    }


@functools.lru_cache(maxsize=4)
def load_template(spacing: float = 2.0) -> Template:
    """The template on a ``spacing`` mm grid covering the 1 mm template's field of view."""
    if not 0.5 <= spacing <= 8.0:
        raise ValueError(f"spacing must be within 0.5-8 mm, got {spacing}")
    b = _base_maps(float(spacing))
    aff, brain, g, w = b["affine"], b["brain"], b["gm"], b["wm"]
    shape = brain.shape
    rim = ndi.binary_dilation(brain > 0.5, iterations=max(1, int(round(3.0 / spacing))))
    icv = np.maximum(ndi.gaussian_filter(rim.astype(np.float32), 0.5), brain)
    vent, cer, deep, aff2 = regions_2mm()
    regions = [np.clip(resample(r, aff2, shape, aff), 0, 1) for r in (vent, cer, deep)]
    b2 = _base_maps(ANALYSIS_MM)
    return Template(
        affine=aff,
        t1=b["t1"],
        gm=g,
        wm=w,
        csf=np.clip(brain - g - w, 0, 1).astype(np.float32),
        brain=brain,
        icv=icv.astype(np.float32),
        ventricles=regions[0],
        cerebrum=regions[1],
        deep=regions[2],
        mu=_tissue_means(b2["t1"], b2["gm"], b2["wm"], b2["brain"]),
    )
