"""Simulated degraded inputs from clean scans (``brainsynth degrade``), so anyone can rerun the
restoration evaluation: a multiplicative bias field, a lesion (a dark ellipsoid whose mask is
written), thick slices with a gap along one axis, and noise, in that order, on the clean scan's
own grid (finer than the prior's, so the simulation is not the restoration's own operator).

A thick-slice output is a NIfTI on its own grid (slice axis voxel = the slice spacing), placed so
that the slices are centred on the clean scan's field of view, with a BIDS sidecar giving
``SliceThickness`` (NIfTI has no field for it) and ``SpacingBetweenSlices``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from brainsynth.data.preprocess import reorient_ras
from brainsynth.errors import InputError
from brainsynth.inverse.bias import BiasField
from brainsynth.inverse.slices import SliceAcquisition
from brainsynth.io import Volume


@dataclass(frozen=True)
class Degradation:
    """slice_spacing: mm between slice centres (None: no thick slices); gap: mm between
    slices (thickness = spacing - gap); axis: RAS axis of the slices (0 sagittal, 1 coronal,
    2 axial); profile: slice profile; bias: std of the log field over the brain (0.2: about
    +-20 %); lesion_radius: mm, 0 for none; noise: Gaussian std as a fraction of the brain's
    99.5th percentile, added inside the brain."""

    slice_spacing: float | None = None
    gap: float = 0.0
    axis: int = 2
    profile: str = "box"
    bias: float = 0.0
    bias_order: int = 3
    lesion_radius: float = 0.0
    noise: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.axis not in (0, 1, 2):
            raise InputError(None, f"axis must be 0, 1 or 2, got {self.axis}")
        if self.slice_spacing is not None and not self.slice_spacing > self.gap >= 0:
            raise InputError(
                None, f"need slice spacing > gap >= 0, got {self.slice_spacing} and {self.gap}"
            )
        if self.profile not in ("box", "triangle", "gaussian"):
            raise InputError(None, f"unknown slice profile {self.profile!r}")
        for name in ("bias", "lesion_radius", "noise"):
            if not getattr(self, name) >= 0:
                raise InputError(None, f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def thickness(self) -> float | None:
        return None if self.slice_spacing is None else self.slice_spacing - self.gap


@dataclass
class Degraded:
    image: Volume  # the degraded scan (its own grid when thick-sliced)
    sidecar: dict  # BIDS sidecar fields + the degradation record
    mask: Volume | None  # lesion mask on the degraded scan's grid
    bias: Volume | None  # the true multiplicative field on the clean grid


def random_bias(brain: np.ndarray, strength: float, order: int, rng: np.random.Generator):
    """exp of a random Legendre field of total degree <= order whose log has zero mean and std
    ``strength`` over ``brain``."""
    region = torch.from_numpy(brain.astype(np.float64))
    field = BiasField(3, brain.shape, order, region=region)
    c = torch.from_numpy(rng.standard_normal(field.num_coefficients))[None]
    log = field.log_field(c)[0].numpy()
    std = float(log[brain].std())
    return np.exp(log * (strength / std if std > 0 else 0.0))


def lesion(brain: np.ndarray, radius_vox: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random ellipsoid (radii ``radius_vox`` x [0.8, 1.2]) centred on a voxel at least its
    largest radius inside the brain."""
    depth = ndimage.distance_transform_edt(brain)
    candidates = np.argwhere(depth >= float(radius_vox.max()))
    if candidates.size == 0:
        candidates = np.argwhere(depth >= depth.max() * 0.8)
    c = candidates[rng.integers(len(candidates))]
    r = radius_vox * rng.uniform(0.8, 1.2, 3)
    grid = np.ogrid[tuple(slice(0, n) for n in brain.shape)]
    d2 = sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grid, c, r))
    return (d2 <= 1.0) & brain


def thick_slices(vol: Volume, d: Degradation) -> tuple[SliceAcquisition, np.ndarray]:
    """The acquisition of ``d`` on ``vol``'s grid, centred on its field of view, and the
    (4, 4) voxel -> voxel map of the thick-slice grid into ``vol``'s."""
    assert d.slice_spacing is not None and d.thickness is not None
    a = d.axis
    v = float(vol.spacing[a])
    n = vol.shape[a]
    step = d.slice_spacing / v
    n_slices = int(np.floor(n / step))
    if n_slices < 2:
        raise InputError(
            None, f"slice spacing {d.slice_spacing} mm leaves < 2 slices on {n * v} mm"
        )
    first = (n - 1) / 2 - (n_slices - 1) * step / 2
    acq = SliceAcquisition(
        3, a, n, thickness=d.thickness / v, spacing=step, offset=first,
        profile=d.profile, n_slices=n_slices,  # type: ignore[arg-type]
    )  # fmt: skip
    t = np.eye(4)
    t[a, a], t[a, 3] = step, first
    return acq, t


def degrade(vol: Volume, d: Degradation) -> Degraded:
    """Apply ``d`` to a clean, skull-stripped scan (background 0)."""
    vol = reorient_ras(vol)
    rng = np.random.default_rng(d.seed)
    x = vol.data.astype(np.float64)
    brain = x > 0
    if not brain.any():
        raise InputError(None, "the clean scan is all zero")
    field = None
    if d.bias > 0:
        field = random_bias(brain, d.bias, d.bias_order, rng)
        x = x * field
    les = None
    if d.lesion_radius > 0:
        les = lesion(brain, d.lesion_radius / vol.spacing, rng)
        x = np.where(les, 0.35 * np.median(vol.data[brain]), x)
    affine = vol.affine
    mask = les
    brain_out = brain.astype(np.float64)
    if d.slice_spacing is not None:
        acq, t = thick_slices(vol, d)

        def apply(a: np.ndarray) -> np.ndarray:
            return acq(torch.from_numpy(a)[None, None])[0, 0].numpy()

        x, brain_out = apply(x), apply(brain_out)
        mask = None if les is None else apply(les.astype(np.float64)) > 0
        affine = vol.affine @ t
        x = np.where(brain_out > 0.5, x, 0.0)  # keep a zero background (skull-stripped)
    if d.noise > 0:
        high = float(np.percentile(vol.data[brain], 99.5))
        noise = rng.standard_normal(x.shape) * d.noise * high
        x = np.where(brain_out > 0.5, np.clip(x + noise, 1e-3 * high, None), 0.0)
    sidecar: dict = {"Degradation": asdict(d)}
    if d.slice_spacing is not None:
        sidecar.update(SliceThickness=d.thickness, SpacingBetweenSlices=d.slice_spacing)
    return Degraded(
        Volume(x.astype(np.float32), affine),
        sidecar,
        None if mask is None else Volume(mask.astype(np.uint8), affine),
        None if field is None else Volume(field.astype(np.float32), vol.affine),
    )


def clean_inputs(path: Path, split: str | None = "test") -> list[tuple[str, Path, float]]:
    """(stem, file, intensity scale) of the clean scans in ``path``: a cache (its ``split``,
    uint8 images scaled back to [0, 1]), or whatever ``restore`` reads (a file, a folder, BIDS)."""
    from brainsynth.data.cache import IMAGE_SCALE, read_cache_manifest
    from brainsynth.data.datasets import volume_stem
    from brainsynth.methods.restore.restore import list_inputs

    path = Path(path)
    if (path / "cache.json").is_file():
        rows = read_cache_manifest(path, split)
        return [(r["subject"], path / r["image"], 1.0 / IMAGE_SCALE) for r in rows]
    return [(volume_stem(p), p, 1.0) for p in list_inputs(path)]


def degrade_batch(
    inputs: Path, out: Path, d: Degradation, split: str | None = "test", overwrite: bool = False
) -> list[dict]:
    """Degrade every clean scan of ``inputs`` into ``out``: STEM.nii.gz + STEM.json (BIDS
    sidecar), masks/STEM_mask.nii.gz (lesions), fields/STEM_bias.nii.gz (the true field). Each
    scan gets its own seed (d.seed + index). Returns one row per scan (also degrade.tsv)."""
    import json

    from brainsynth.errors import BrainsynthError
    from brainsynth.io import read_volume, write_text_atomic, write_volume
    from brainsynth.io.outdir import claim_output_dir

    items = clean_inputs(inputs, split)
    out = claim_output_dir(out, OWNED, overwrite=overwrite)
    rows = []
    for k, (stem, path, scale) in enumerate(items):
        row = {"scan": stem, "source": str(path), "status": "ok", "message": ""}
        try:
            vol = read_volume(path)
            res = degrade(vol.with_data(vol.data * scale), replace(d, seed=d.seed + k))
            write_volume(res.image, out / f"{stem}.nii.gz")
            write_text_atomic(out / f"{stem}.json", json.dumps(res.sidecar, indent=1) + "\n")
            if res.mask is not None:
                write_volume(res.mask, out / "masks" / f"{stem}_mask.nii.gz")
            if res.bias is not None:
                write_volume(res.bias, out / "fields" / f"{stem}_bias.nii.gz")
        except (BrainsynthError, ValueError) as e:
            row.update(status="error", message=str(e))
        rows.append(row)
    lines = ["scan\tsource\tstatus\tmessage"] + ["\t".join(r.values()) for r in rows]
    write_text_atomic(out / "degrade.tsv", "\n".join(lines) + "\n")
    return rows


OWNED = ("*.nii.gz", "*.json", "masks", "fields", "degrade.tsv")
