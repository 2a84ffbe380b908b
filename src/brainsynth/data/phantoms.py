"""The embedded default: a phantom cohort made from nilearn's MNI152 2009 template and fsaverage5.

Needs nothing outside the package and its dependencies (nilearn ships these files). Each subject is
the template warped by a smooth diffeomorphism built from three parts, in sampling order:

1. a global scale about the brain centre (sex: M larger; age: slow shrinkage),
2. a radial field around the ventricles that enlarges them with age,
3. a random stationary velocity field integrated by scaling and squaring (individual shape),

then per-tissue contrast jitter, a smooth multiplicative bias field and Rician noise. Labels use
FreeSurfer numbers; covariates in participants.tsv are measured on the produced label maps.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from brainsynth.data.labels import label_volumes
from brainsynth.data.preprocess import resample
from brainsynth.io import Surface, Volume, write_surface, write_text_atomic, write_volume
from brainsynth.registration.fields import (
    identity_grid,
    invert_displacement,
    random_velocity,
    sample,
    scaling_and_squaring,
)

WM, GM, VENT, CSF = (2, 41), (3, 42), (4, 43), 24  # FreeSurfer (left, right)


@dataclass
class Template:
    t1: Volume  # [0, 1]
    gm: np.ndarray
    wm: np.ndarray
    brain: np.ndarray  # bool
    ventricles: np.ndarray  # bool
    surfaces: dict[str, Surface]


def _nilearn():
    os.environ.setdefault("NILEARN_DATA", str(Path(tempfile.gettempdir()) / "nilearn_data"))
    import nilearn.datasets as ds

    return ds


def _ventricles(t1: np.ndarray, brain: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Dark voxels deep in a central box of the brain: the lateral and third ventricles."""
    world = np.moveaxis(identity_grid(t1.shape), 0, -1) @ affine[:3, :3].T + affine[:3, 3]
    x, y, z = world[..., 0], world[..., 1], world[..., 2]
    box = (np.abs(x) < 28) & (y > -50) & (y < 35) & (z > -10) & (z < 35)
    depth = max(1, int(round(8.0 / abs(affine[0, 0]))))
    dark = (t1 < 0.4) & box & ndimage.binary_erosion(brain, iterations=depth)
    lab, n = ndimage.label(dark)
    sizes = ndimage.sum(dark, lab, range(1, n + 1))
    return np.isin(lab, 1 + np.flatnonzero(sizes * abs(np.linalg.det(affine[:3, :3])) >= 80))


def load_template(spacing: float = 2.0, surfaces: bool = False) -> Template:
    """MNI152 2009 template + GM/WM maps on a grid of ``spacing`` mm (and fsaverage5 meshes)."""
    ds = _nilearn()
    res = 1 if spacing < 2 else 2
    imgs = [
        f(resolution=res)
        for f in (ds.load_mni152_template, ds.load_mni152_gm_template, ds.load_mni152_wm_template)
    ]
    affine = imgs[0].affine
    vols = [Volume(np.asarray(im.get_fdata(), np.float32), affine) for im in imgs]
    vols = [resample(v, spacing, order=1) for v in vols]
    t1, gm, wm = (np.clip(v.data, 0, None) for v in vols)
    t1 = t1 / np.percentile(t1[t1 > 0], 99.5)
    brain = ndimage.binary_fill_holes((gm + wm) > 0.3) | (t1 > 0.15)
    brain = ndimage.binary_opening(brain, iterations=1)
    vent = _ventricles(t1, brain, vols[0].affine)
    meshes = {}
    if surfaces:
        fs = ds.load_fsaverage("fsaverage5")
        for kind, key in (("pial", "pial"), ("white", "white_matter")):
            for hemi, part in (("lh", "left"), ("rh", "right")):
                mesh = fs[key].parts[part]
                meshes[f"{hemi}_{kind}"] = Surface(
                    np.asarray(mesh.coordinates), np.asarray(mesh.faces)
                )
    return Template(Volume(t1.astype(np.float32), vols[0].affine), gm, wm, brain, vent, meshes)


@dataclass(frozen=True)
class SubjectParams:
    age: float
    sex: str
    scale: float
    ventricle_k: float


def draw_params(rng: np.random.Generator) -> SubjectParams:
    age = float(rng.uniform(20, 85))
    sex = "M" if rng.random() < 0.5 else "F"
    # MNI152 space is ~10% larger (linear) than an average adult brain: 0.9 brings volumes to ~1.4 L
    scale = (
        0.9 * (1.03 if sex == "M" else 0.97) * (1 - 0.0008 * max(age - 30, 0)) * rng.normal(1, 0.01)
    )
    k = float(np.clip(0.007 * (age - 20) + rng.normal(0, 0.02), 0.0, 0.45))
    return SubjectParams(age, sex, float(scale), k)


class Deformation:
    """phi(x) = R(V(S(x))): scale S, ventricle field V, random field R (all in voxels)."""

    def __init__(self, tpl: Template, p: SubjectParams, rng: np.random.Generator):
        spacing = float(tpl.t1.spacing[0])
        self.shape = tpl.t1.shape
        self.c_brain = np.array(ndimage.center_of_mass(tpl.brain))
        self.c_vent = np.array(ndimage.center_of_mass(tpl.ventricles))
        self.sigma = 40.0 / spacing  # wide: the ventricles sit in the expanding core (r << sigma)
        self.scale, self.k = p.scale, p.ventricle_k
        vel = random_velocity(self.shape, sigma=10.0 / spacing, max_disp=4.0 / spacing, rng=rng)
        self.u_random = scaling_and_squaring(vel)

    def _u_vent(self, y: np.ndarray) -> np.ndarray:
        d = y - self.c_vent.reshape((3,) + (1,) * (y.ndim - 1))
        r2 = (d**2).sum(0, keepdims=True)
        return -self.k * d * np.exp(-r2 / (2 * self.sigma**2))

    def _scale(self, x: np.ndarray, inverse: bool = False) -> np.ndarray:
        c = self.c_brain.reshape((3,) + (1,) * (x.ndim - 1))
        return c + (x - c) * (self.scale if inverse else 1.0 / self.scale)

    def sampling_map(self) -> np.ndarray:
        """phi on the voxel grid, (3, X, Y, Z)."""
        y = self._scale(identity_grid(self.shape))
        z = y + self._u_vent(y)
        return z + sample(self.u_random, z)

    def inverse_points(self, w: np.ndarray) -> np.ndarray:
        """phi^{-1} for template voxel points (3, N)."""
        z = invert_displacement(self.u_random, w)
        y = z.copy()
        for _ in range(50):  # y + u_vent(y) = z; |grad u_vent| <= k < 1
            y = z - self._u_vent(y)
        return self._scale(y, inverse=True)


def _labels(gm, wm, brain, vent, world_x) -> np.ndarray:
    left = world_x < 0
    lab = np.zeros(gm.shape, np.uint8)
    lab[brain] = CSF
    tissue = brain & ((gm > 0.3) | (wm > 0.3))
    is_wm = tissue & (wm >= gm)
    is_gm = tissue & (gm > wm)
    lab[is_wm] = np.where(left[is_wm], WM[0], WM[1])
    lab[is_gm] = np.where(left[is_gm], GM[0], GM[1])
    lab[vent] = np.where(left[vent], VENT[0], VENT[1])
    return lab


def make_subject(tpl: Template, p: SubjectParams, rng: np.random.Generator):
    """(T1 Volume, label Volume, surfaces in world mm, Deformation) for one subject."""
    deform = Deformation(tpl, p, rng)
    phi = deform.sampling_map()

    def warp(a, order=1):
        return ndimage.map_coordinates(a.astype(np.float32), phi, order=order, mode="constant")

    t1, gm, wm = warp(tpl.t1.data), warp(tpl.gm), warp(tpl.wm)
    brain, vent = warp(tpl.brain) > 0.5, warp(tpl.ventricles) > 0.5
    aff = tpl.t1.affine
    world_x = (aff[0, :3] @ identity_grid(t1.shape).reshape(3, -1)).reshape(t1.shape) + aff[0, 3]
    lab = _labels(gm, wm, brain, vent, world_x)
    gain = {WM: rng.normal(1, 0.04), GM: rng.normal(1, 0.05), VENT: rng.normal(1, 0.08)}
    for labs, g in gain.items():
        t1 = np.where(np.isin(lab, labs), t1 * g, t1)
    bias = np.exp(ndimage.gaussian_filter(rng.standard_normal(t1.shape), 12) * 8.0)
    bias /= np.exp(np.log(bias[brain]).mean())
    t1 = t1 * bias
    noise = 0.02
    t1 = np.sqrt((t1 + rng.normal(0, noise, t1.shape)) ** 2 + rng.normal(0, noise, t1.shape) ** 2)
    t1 = np.where(brain, t1, 0.0)  # skull-stripped, like the template
    surfaces = {}
    for name, s in tpl.surfaces.items():
        w = (np.c_[s.vertices, np.ones(len(s.vertices))] @ np.linalg.inv(aff).T)[:, :3].T
        x = deform.inverse_points(w)
        surfaces[name] = Surface((aff[:3, :3] @ x).T + aff[:3, 3], s.faces)
    return Volume(t1.astype(np.float32), aff), Volume(lab, aff), surfaces, deform


def make_cohort(
    out_dir: str | Path,
    n: int = 8,
    spacing: float = 2.0,
    seed: int = 0,
    surfaces: bool = False,
    progress: bool = True,
) -> Path:
    """Write a BIDS phantom cohort (T1w, FreeSurfer-numbered dseg, optional surfaces)."""
    out = Path(out_dir)
    tpl = load_template(spacing, surfaces)
    rows = ["participant_id\tage\tsex\tbrain_mm3\tventricles_mm3"]
    for i in tqdm(range(n), desc="phantoms", unit="subj", disable=not progress):
        rng = np.random.default_rng([seed, i])
        p = draw_params(rng)
        t1, lab, surfs, _ = make_subject(tpl, p, rng)
        sid = f"sub-ph{i:03d}"
        write_volume(t1, out / sid / "anat" / f"{sid}_T1w.nii.gz")
        deriv = out / "derivatives" / "phantom" / sid / "anat"
        write_volume(lab, deriv / f"{sid}_dseg.nii.gz")
        for name, s in surfs.items():
            hemi, kind = name.split("_")
            write_surface(s, deriv / f"{sid}_hemi-{'L' if hemi == 'lh' else 'R'}_{kind}.surf.gii")
        v = label_volumes(lab.data, lab.affine, "freesurfer")
        rows.append(
            f"{sid}\t{p.age:.1f}\t{p.sex}\t{v['brain_volume']:.0f}\t{v['ventricle_volume']:.0f}"
        )
    write_text_atomic(out / "participants.tsv", "\n".join(rows) + "\n")
    desc = {
        "Name": "brainsynth phantom cohort (MNI152 2009 template, random diffeomorphic warps)",
        "BIDSVersion": "1.8.0",
        "DatasetType": "raw",
        "GeneratedBy": [{"Name": "brainsynth phantoms", "Seed": seed, "Spacing": spacing}],
    }
    write_text_atomic(out / "dataset_description.json", json.dumps(desc, indent=1))
    return out
