"""A scan brought to the prior: read and checked, placed (``geometry``), intensities normalised the
way the cache was, the measurement y on the grid G, and the forward operator of the task.

Tasks (one prior serves all):
    superres  y = A x: thick slices (``SliceAcquisition`` built from the scan's own geometry)
    bias      y = A (b x): thick slices (or none, on an isotropic scan) of a biased image; the
              bias field b is estimated jointly during sampling
    inpaint   y = A (m x): voxels under ``--mask`` (a lesion, a missing slab) are unmeasured
    refine    y = x + noise of std ``trust``: another method's output (SynthSR's) refined
Intensities: the brain's ``cache_low``/``cache_high`` percentiles map to 0/1 (the cache's rule),
and the result is mapped back by the same two numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from brainsynth.data.preprocess import reorient_ras, resample_to_grid, robust_range
from brainsynth.errors import InputError
from brainsynth.inverse.bias import BiasField
from brainsynth.inverse.operators import Compose, Identity, Mask, Operator
from brainsynth.inverse.resample import GridResample
from brainsynth.inverse.scan import ScanOperator
from brainsynth.inverse.slices import SliceAcquisition
from brainsynth.io import Volume, read_volume
from brainsynth.methods.restore import geometry as geo_mod
from brainsynth.methods.restore.baselines import upsample
from brainsynth.methods.restore.prior import PriorInfo
from brainsynth.registration.affine import register_affine

TASKS = ("superres", "bias", "inpaint", "refine")
#: a skull-stripped scan has at least this fraction of exactly-zero voxels
MIN_BACKGROUND = 0.05


@dataclass(frozen=True)
class ScanOptions:
    """How a scan is read into the prior (see the CLI's help for each)."""

    task: str = "superres"
    align: str = "header"  # header | centre | affine
    slice_thickness: float | None = None  # mm; None: the sidecar's SliceThickness, else spacing
    profile: str = "box"
    noise: float = 0.02  # measurement noise std (normalised units)
    trust: float = 0.1  # refine: how far the input may be from the truth
    bias_order: int = 3

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise InputError(None, f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.align not in ("header", "centre", "affine"):
            raise InputError(
                None, f"unknown alignment {self.align!r}; use header, centre or affine"
            )
        if self.profile not in ("box", "triangle", "gaussian"):
            raise InputError(None, f"unknown slice profile {self.profile!r}")


@dataclass
class PreparedScan:
    path: Path
    scan: Volume  # RAS, original intensities
    prior_affine: np.ndarray  # the prior's grid (info.padded_shape) on the scan's world
    geometry: geo_mod.Geometry  # its prior grid is prior_affine unless aligned by registration
    y: torch.Tensor  # (1, 1, *G) normalised
    op: ScanOperator
    brain: np.ndarray  # (P) bool, the brain on the prior's grid
    missing: np.ndarray | None  # (P) bool, inpaint: unmeasured voxels
    low: float
    high: float
    thickness: float  # mm along the slice axis (spacing when isotropic)

    def to_scan_units(self, x01: np.ndarray) -> np.ndarray:
        """Normalised values on the prior's grid (or its crop) -> the input's intensities, inside
        the scan's brain dilated by one voxel; 0 (background) outside."""
        region = ndimage.binary_dilation(self.brain)[tuple(slice(0, n) for n in x01.shape)]
        out = np.clip(x01, 0, None) * (self.high - self.low) + self.low
        return np.where(region, out, 0.0).astype(np.float32)

    def baseline(self, order: int = 3) -> np.ndarray:
        """y interpolated onto P along the slice axis (normalised units); after a registration,
        onto the scan-aligned grid and then (linearly) onto P."""
        up = upsample(self.y[0, 0].numpy(), self.geometry, order)
        g = self.geometry
        if np.allclose(g.prior_affine, self.prior_affine, atol=1e-6):
            return up
        vol = resample_to_grid(Volume(up, g.prior_affine), self.prior_affine, self.brain.shape)
        return vol.data


def measured(brain: np.ndarray, axis: int | None) -> np.ndarray:
    """The voxels of y that are measurements: the scan's brain and the background away from it.
    The rim just outside the brain mask (one voxel in-plane, one slice across) is left out: a
    skull stripping decides there whether a partly-brain voxel is kept or zeroed, so a zero there
    says little about the brain."""
    struct = np.zeros((3, 3, 3), bool)
    struct[1, 1, :] = struct[1, :, 1] = struct[:, 1, 1] = True  # 6-neighbourhood
    rim = ndimage.binary_dilation(brain, struct) & ~brain
    return ~rim


def sidecar_thickness(path: Path) -> float | None:
    """``SliceThickness`` (mm) from the BIDS sidecar next to a NIfTI file, if there is one."""
    name = path.name
    for suffix in (".nii.gz", ".nii", ".mgz"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    side = path.with_name(name + ".json")
    if not side.is_file():
        return None
    try:
        value = json.loads(side.read_text()).get("SliceThickness")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise InputError(side, f"unreadable JSON sidecar ({e})") from e
    if value is None:
        return None
    if not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
        raise InputError(side, f"SliceThickness must be a positive number, got {value!r}")
    return float(value)


def _brain_mask(scan: Volume, path: Path, brain_mask: Path | None) -> np.ndarray:
    if brain_mask is not None:
        m = _same_grid(read_volume(brain_mask), scan, brain_mask, path)
        if not (m.data > 0).any():
            raise InputError(brain_mask, "the brain mask is empty")
        return m.data > 0
    zero = float((scan.data == 0).mean())
    if zero < MIN_BACKGROUND:
        raise InputError(
            path,
            f"not skull-stripped (only {100 * zero:.1f} % of voxels are 0): the prior knows brains "
            "only; strip it first or pass --brain-mask",
        )
    return scan.data != 0


def _same_grid(other: Volume, scan: Volume, other_path: Path, path: Path) -> Volume:
    if not other.same_grid(scan):
        raise InputError(
            other_path,
            f"not on the grid of {path.name} (shape {list(other.shape)} vs {list(scan.shape)} or "
            "a different affine): resample it onto the scan first",
        )
    return other


def prepare_scan(
    path: Path,
    info: PriorInfo,
    opts: ScanOptions,
    *,
    mask: Path | None = None,
    brain_mask: Path | None = None,
    template: Volume | None = None,
) -> PreparedScan:
    """Read ``path`` (and the masks, on its grid) and build y and the operator on the prior.
    ``template``: the prior's mean image on its grid, needed by ``align="affine"``."""
    path = Path(path)
    raw = read_volume(path)
    brain_raw = _brain_mask(raw, path, brain_mask)
    lesion_raw = None
    if opts.task == "inpaint":
        if mask is None:
            raise InputError(None, "--task inpaint needs --mask (the voxels to fill in)")
        lesion_raw = _same_grid(read_volume(mask), raw, mask, path).data > 0
        if not lesion_raw.any():
            raise InputError(mask, "the mask is empty: nothing to inpaint")
    scan = reorient_ras(raw)
    brain_vol = reorient_ras(raw.with_data(brain_raw.astype(np.float32)))
    low, high = robust_range(raw.data, brain_raw, info.cache_low, info.cache_high)
    norm = (scan.data - low) / (high - low)
    norm = np.where(brain_vol.data > 0, norm.clip(0, None if opts.task == "bias" else 1), 0.0)
    norm_vol = scan.with_data(norm.astype(np.float32))
    p_shape = info.padded_shape
    try:
        if opts.align == "affine":
            p_aff, geo = _registered(norm_vol, info, template)
        else:
            centre = (
                geo_mod.fov_centre(scan)
                if opts.align == "header"
                else geo_mod.mask_centre(brain_vol)
            )
            # the image part of the grid (info.shape; the padding is at the end) goes there
            pad = (np.asarray(p_shape, float) - np.asarray(info.shape, float)) / 2
            centre = centre + geo_mod.axes(scan) @ (info.spacing * pad)
            geo = geo_mod.place(scan, info.spacing, p_shape, centre)
            p_aff = geo.prior_affine
    except ValueError as e:
        raise InputError(path, f"{e} (field of view {scan.spacing * scan.shape} mm)") from e
    if opts.task == "superres" and geo.axis is None:
        raise InputError(
            path,
            f"voxel size {np.round(scan.spacing, 2).tolist()} mm is near-isotropic: no thick slices "
            "to undo (use --task refine or bias)",
        )
    y = geo_mod.to_grid(norm_vol, geo.grid_affine, geo.grid_shape)
    brain_p = geo_mod.to_grid(brain_vol, p_aff, p_shape).data > 0.5
    brain_g = geo_mod.to_grid(brain_vol, geo.grid_affine, geo.grid_shape).data > 0.5
    if not brain_p.any():
        raise InputError(path, "the brain does not overlap the prior's grid (check --align)")
    missing = None
    if lesion_raw is not None:
        les = reorient_ras(raw.with_data(lesion_raw.astype(np.float32)))
        missing = geo_mod.to_grid(les, p_aff, p_shape).data > 0.01
        covered = float((missing & brain_p).sum()) / float(brain_p.sum())
        if covered > 0.95:
            raise InputError(
                mask,
                f"the mask covers {100 * covered:.0f} % of the brain: nothing left to restore from",
            )
    thickness = opts.slice_thickness or sidecar_thickness(path) or geo.slice_spacing
    acq = _acquisition(geo, p_aff, p_shape, opts, thickness, missing)
    bias = None
    if opts.task == "bias":
        region = torch.from_numpy(brain_p.astype(np.float64))
        bias = BiasField(3, p_shape, opts.bias_order, region=region, sigma=acq.sigma)
    op = ScanOperator(
        acq,
        bias,
        scale=info.scale,
        offset=info.offset,
        fit_mask=torch.from_numpy(brain_g.astype(np.float32))[None, None],
        y_mask=torch.from_numpy(measured(brain_g, geo.axis).astype(np.float32))[None, None],
        support=torch.from_numpy(ndimage.binary_dilation(brain_p, iterations=2).astype(np.float64)),
    )
    yt = torch.from_numpy(np.ascontiguousarray(y.data, dtype=np.float32))[None, None]
    return PreparedScan(
        path, scan, p_aff, geo, yt, op, brain_p, missing, low, high, float(thickness)
    )


def _registered(
    norm: Volume, info: PriorInfo, template: Volume | None
) -> tuple[np.ndarray, geo_mod.Geometry]:
    """Affine alignment: the prior's template registered to the (normalised) scan puts the prior's
    grid on the scan at M A; the measurement geometry is placed on a scan-aligned grid R at the
    prior's spacing that covers it (the operator resamples P -> R, then acquires R -> G)."""
    if template is None:
        raise InputError(
            None, "--align affine needs the prior's template.nii.gz (see train restore)"
        )
    m = register_affine(template, norm)
    p_aff = m @ template.affine
    shape = np.asarray(info.padded_shape, float)
    corners = np.array(np.meshgrid(*[[0.0, n - 1] for n in shape], indexing="ij")).reshape(3, -1)
    world = p_aff[:3, :3] @ corners + p_aff[:3, 3:4]
    centre = world.mean(1)
    extent = np.abs(geo_mod.axes(norm).T @ (world - centre[:, None])).max(1) * 2
    r_shape = tuple(int(np.ceil(e / info.spacing)) + 2 for e in extent)
    return p_aff, geo_mod.place(norm, info.spacing, (r_shape[0], r_shape[1], r_shape[2]), centre)


def _acquisition(
    geo: geo_mod.Geometry,
    p_aff: np.ndarray,
    p_shape: tuple[int, int, int],
    opts: ScanOptions,
    thickness: float,
    missing: np.ndarray | None,
) -> Operator:
    sigma = opts.trust if opts.task == "refine" else opts.noise
    ops: list[Operator] = []
    if missing is not None:
        ops.append(Mask(3, torch.from_numpy(~missing).float()[None, None], sigma=sigma))
    if not np.allclose(p_aff, geo.prior_affine, atol=1e-6):
        ops.append(GridResample(p_aff, p_shape, geo.prior_affine, geo.prior_shape, sigma=sigma))
    if geo.axis is not None:
        ops.append(
            SliceAcquisition.from_affines(
                geo.prior_affine,
                geo.prior_shape,
                geo.grid_affine,
                geo.grid_shape,
                profile=opts.profile,  # type: ignore[arg-type]
                thickness=thickness,
                sigma=sigma,
            )
        )
    if not ops:
        return Identity(3, sigma=sigma)
    return ops[0] if len(ops) == 1 else Compose(*ops, sigma=sigma)
