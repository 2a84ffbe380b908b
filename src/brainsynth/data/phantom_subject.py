"""One phantom subject: traits -> deformation -> T1w image and FreeSurfer-numbered label map.

Generative model, all in the template's world space:
* traits: age ~ U(age_range), sex ~ {F, M}; brain size from sex (young-adult brain volume
  1.25 L for F, 1.42 L for M, as in the IXI set) with 7% individual spread;
* deformation ``T = psi o L`` from subject to template world: ``L`` scales the brain to that size
  (plus a small random shear); ``psi = exp(v)`` with ``v = v_random + v_ventricles``: Gaussian-filtered
  noise (peak ``warp_mm``) and a radial flow out of the ventricles with divergence -1 inside them
  and a compensating halo around them (:func:`source_flow`), scaled by a log-volume growth that
  rises with age (``ventricle_growth`` at 85 y): the ventricles enlarge ~``e^growth``-fold and
  push and compress the periventricular tissue;
* cortical atrophy: a fraction of the grey matter next to CSF (pial side) turns into CSF with age,
  in the tissue maps *and* in the image (its intensity moves from GM to CSF);
* image: per-tissue contrast jitter (a random monotone remapping through the CSF/GM/WM levels),
  a smooth multiplicative bias field, Rician noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from brainsynth.data.phantom_field import Deformation, _apply, sample_points, source_flow
from brainsynth.data.phantom_template import (
    Template,
    brain_stats,
    grid_for,
    mni_1mm,
    regions_2mm,
    resample,
)
from brainsynth.registration.fields import random_velocity, scaling_and_squaring

# Grid of the velocity fields: fixed, so a seed gives the same anatomy at any output spacing.
CONTROL_MM = 4.0
BRAIN_MM3 = {"F": 1.25e6, "M": 1.42e6}
# FreeSurfer labels (FreeSurferColorLUT) written by the phantoms: name -> (left, right)
LABELS = {
    "cerebral_white_matter": (2, 41),
    "cerebral_cortex": (3, 42),
    "lateral_ventricle": (4, 43),
    "cerebellum_white_matter": (7, 46),
    "cerebellum_cortex": (8, 47),
    "thalamus": (10, 49),
    "caudate": (11, 50),
    "putamen": (12, 51),
    "brain_stem": (16, 16),
    "csf": (24, 24),
}


@dataclass(frozen=True)
class PhantomOptions:
    """Knobs of the generative model (defaults give IXI-like volumes and realistic variation)."""

    age_range: tuple[float, float] = (20.0, 85.0)
    warp_mm: float = 4.0  # peak displacement of the random velocity field
    warp_sigma_mm: float = 12.0  # its smoothness (Gaussian sigma)
    ventricle_growth: float = 1.6  # nominal log ventricular volume gain at 85 y
    atrophy: float = 0.35  # fraction of the pial-side grey matter lost at the oldest age
    bias: float = 0.2  # peak amplitude of the log bias field
    noise: tuple[float, float] = (0.01, 0.04)  # Rician sigma range, fraction of WM intensity
    contrast: float = 0.06  # sd of the relative jitter of each tissue's intensity


@dataclass(frozen=True)
class Traits:
    age: float
    sex: str
    brain_mm3: float  # brain volume the subject would have as a young adult (before atrophy)
    ventricle_growth: float  # log-volume ventricular enlargement, age-driven plus individual
    atrophy: float  # fraction of pial-side GM turned into CSF


def sample_traits(rng: np.random.Generator, opts: PhantomOptions) -> Traits:
    lo, hi = opts.age_range
    age = float(rng.uniform(lo, hi))
    sex = "M" if rng.random() < 0.5 else "F"
    r = float(np.clip((age - 20.0) / 65.0, 0.0, 1.2))  # 0 at 20 y, 1 at 85 y
    size = BRAIN_MM3[sex] * float(np.exp(0.07 * rng.standard_normal()))
    vent = opts.ventricle_growth * r**1.5 * float(np.exp(0.3 * rng.standard_normal()))
    vent += 0.25 + 0.3 * float(rng.standard_normal())  # young adults vary too
    atrophy = opts.atrophy * r**1.2 * float(np.exp(0.2 * rng.standard_normal()))
    return Traits(round(age, 1), sex, size, vent, float(np.clip(atrophy, 0.0, 0.95)))


def _control_grid() -> tuple[tuple[int, int, int], np.ndarray]:
    t1, _, _, aff1 = mni_1mm()
    return grid_for(CONTROL_MM, t1.shape, aff1)


def _linear(rng: np.random.Generator, scale: float) -> np.ndarray:
    """Subject -> template world affine: undo the subject's size (isotropic ``scale``, small shear)
    about the template brain's centroid."""
    e = 0.02 * rng.standard_normal((3, 3))
    shape_matrix = scale * (np.eye(3) + 0.5 * (e + e.T))
    c, _ = brain_stats()
    m = np.eye(4)
    m[:3, :3] = np.linalg.inv(shape_matrix)
    m[:3, 3] = c - m[:3, :3] @ c
    return m


def _ventricle_velocity(shape: tuple[int, ...], aff: np.ndarray) -> np.ndarray:
    """Flow (3, *shape) whose divergence is -1 in the ventricles and compensated by a positive halo
    (~15 mm) around them: ``exp(a v)`` enlarges the ventricles ~``e^a``-fold, pushing and compressing
    the periventricular tissue, with a bounded Jacobian (a uniform expansion, not a blow-up)."""
    vent2, _, _, aff2 = regions_2mm()
    region = np.clip(resample(vent2, aff2, shape, aff), 0.0, 1.0)
    return source_flow(region, halo_sigma=15.0 / CONTROL_MM)


def subject_deformation(
    rng: np.random.Generator, traits: Traits, opts: PhantomOptions
) -> Deformation:
    """Subject -> template map; it does not depend on the output grid (2 mm maps, 4 mm fields)."""
    shape, aff = _control_grid()
    linear = _linear(rng, (traits.brain_mm3 / brain_stats()[1]) ** (1.0 / 3.0))
    v = random_velocity(shape, opts.warp_sigma_mm / CONTROL_MM, opts.warp_mm / CONTROL_MM, rng)
    v = v + _ventricle_velocity(shape, aff) * traits.ventricle_growth
    return Deformation(linear=linear, disp=scaling_and_squaring(v), grid_affine=aff)


def gm_loss(tmpl: Template, atrophy: float) -> np.ndarray:
    """Fraction of the grey matter lost to atrophy, in [0, atrophy]: full where the GM borders CSF
    (sulci, the outer surface; within ~2 mm), so the cortex thins from the pial side."""
    rim = np.clip(tmpl.icv - tmpl.brain, 0, 1)
    exposure = ndi.gaussian_filter(tmpl.csf * (1.0 - tmpl.ventricles) + rim, 2.0 / tmpl.spacing)
    return (atrophy * np.clip(exposure / 0.25, 0.0, 1.0)).astype(np.float32)


def subject_maps(tmpl: Template, atrophy: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Template-space class fractions (ext CSF, ventricles, GM, WM) and T1 after cortical atrophy:
    the lost GM (:func:`gm_loss`) becomes CSF in both the maps and the image, widening the sulci."""
    rim = np.clip(tmpl.icv - tmpl.brain, 0, 1)
    sulcal = tmpl.csf * (1.0 - tmpl.ventricles)
    lost = tmpl.gm * gm_loss(tmpl, atrophy)
    maps = {
        "ext": sulcal + rim + lost,
        "vent": tmpl.csf * tmpl.ventricles,
        "gm": tmpl.gm - lost,
        "wm": tmpl.wm,
    }
    mu = tmpl.mu
    t1 = tmpl.t1 + rim * mu["csf"] - lost * (mu["gm"] - mu["csf"])
    return maps, t1.astype(np.float32)


def thin_pial(
    pial: np.ndarray, white: np.ndarray, loss: np.ndarray, affine: np.ndarray
) -> np.ndarray:
    """Move each pial vertex towards its white vertex (fsaverage meshes correspond vertex by vertex)
    by the mean GM loss along the segment between them: the surface follows the thinned cortex."""
    inv = np.linalg.inv(affine)
    ts = np.linspace(0.0, 1.0, 6)
    pts = pial[None] + ts[:, None, None] * (white - pial)[None]  # (6, N, 3)
    frac = sample_points(loss[None], _apply(inv, pts.reshape(-1, 3)))[:, 0]
    f = frac.reshape(len(ts), -1).mean(axis=0)
    return pial + f[:, None] * (white - pial)


def warp(volume: np.ndarray, coords: np.ndarray, order: int = 1) -> np.ndarray:
    """``out(x) = volume(coords(x))`` with ``coords: (3, X, Y, Z)`` template voxel coordinates."""
    return ndi.map_coordinates(volume, coords, order=order, mode="constant", cval=0.0).astype(
        np.float32
    )


def _deep_labels(x: np.ndarray, y: np.ndarray, left: np.ndarray) -> np.ndarray:
    """Approximate nucleus from template position: thalamus behind y = -5 mm and within 20 mm of the
    midline, putamen (with pallidum) lateral of 20 mm, caudate otherwise."""
    thal = (y < -5) & (np.abs(x) < 20)
    put = ~thal & (np.abs(x) >= 20)
    name = np.where(thal, 0, np.where(put, 2, 1))
    table = np.array([LABELS["thalamus"], LABELS["caudate"], LABELS["putamen"]])
    return np.where(left, table[name, 0], table[name, 1])


def label_map(
    warped: dict[str, np.ndarray], regions: dict[str, np.ndarray], xw: np.ndarray, yw: np.ndarray
) -> np.ndarray:
    """FreeSurfer labels from warped class fractions; hemispheres split at the template's x = 0.

    ``xw``, ``yw``: template world x, y (mm) of each output voxel.
    """
    fg = [warped[k] for k in ("ext", "vent", "gm", "wm")]
    cls = np.argmax(np.stack([1.0 - sum(fg), *fg]), axis=0)  # 0 bg, 1 ext, 2 vent, 3 gm, 4 wm
    left = xw < 0
    side = np.where(left, 0, 1)

    def lr(name: str) -> np.ndarray:
        return np.asarray(LABELS[name])[side]

    cerebrum, deep = regions["cerebrum"] > 0.5, regions["deep"] > 0.5
    stem = ~cerebrum & (np.abs(xw) < 14) & (yw > -42)
    gm = np.where(
        cerebrum,
        np.where(deep, _deep_labels(xw, yw, left), lr("cerebral_cortex")),
        np.where(stem, 16, lr("cerebellum_cortex")),
    )
    wm = np.where(
        cerebrum, lr("cerebral_white_matter"), np.where(stem, 16, lr("cerebellum_white_matter"))
    )
    out = np.select(
        [cls == 1, cls == 2, cls == 3, cls == 4], [24, lr("lateral_ventricle"), gm, wm], default=0
    )
    return out.astype(np.int16)


def contrast_curve(rng: np.random.Generator, mu: dict, sd: float) -> tuple[np.ndarray, np.ndarray]:
    """Monotone piecewise-linear intensity remapping through jittered CSF < GM < WM levels."""
    xk = np.array([0.0, mu["csf"], mu["gm"], mu["wm"], max(1.0, mu["wm"] + 0.1)])
    yk = xk * np.concatenate([[1.0], 1.0 + sd * rng.standard_normal(3)])[[0, 1, 2, 3, 3]]
    for i in range(1, len(yk)):  # keep the tissue order: a contrast change, not an inversion
        yk[i] = max(yk[i], yk[i - 1] + 0.05 * (xk[i] - xk[i - 1]))
    return xk, yk


def bias_field(rng: np.random.Generator, shape: tuple[int, ...], amplitude: float) -> np.ndarray:
    """Smooth multiplicative field ``exp(b)``, ``|b| <= amplitude``: cubic upsampling of a 4x5x4 grid
    (the same coarse draw at any voxel size)."""
    coarse = rng.uniform(-1.0, 1.0, (4, 5, 4))
    coords = [np.linspace(0, n - 1, s) for n, s in zip(coarse.shape, shape)]
    pts = np.stack(np.meshgrid(*coords, indexing="ij"))
    b = ndi.map_coordinates(coarse, pts, order=3, mode="nearest")
    b *= amplitude / max(float(np.abs(b).max()), 1e-12)
    return np.exp(b).astype(np.float32)


def rician(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise: Rician, Rayleigh in the background."""
    re = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    im = sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return np.sqrt(re * re + im * im)
