"""Cortex method on a cache's test split: each run generates every test subject's scan from that
subject's own surfaces, compared to the subject's real scan; optionally every run generates
pycortex S1 from its real surfaces.

    python benchmarks/cortex_eval.py --cache CACHE --out OUT \
        --runs bridge=/work/runs/cortex_cpu ddpm=RUN2 regression=RUN3 fused=RUN4 \
        [-n 16] [--steps 10] [--seed 0] [--margin 6] [--device auto] \
        [--s1 ../shared/data/pycortex_s1/sub-S1] [--atrophy 0.5 1]

Atrophy recovery (``--atrophy MM ...``): each run generates the subject's scan from its surfaces
and from the same surfaces with the pial moved inward by MM (``methods.cortex.atrophy``), from the
same noise; the proxy surfaces of both give a mean thickness per hemisphere (pial vertices'
distance to the white surface), and their difference is compared with the input surfaces'
measured thickness change (``atrophy.tsv``; the paper reports ~0.14 mm mean error at 1 mm).
Only the runs named by ``--atrophy-runs`` (default: the first) are measured: each mm costs a
generation and a proxy extraction per subject. The "before" scan is generated once per subject and
run from the subject's surfaces rasterised exactly as the "after" ones are (float32, not the run's
float16 cache), from the same noise. ``--atrophy-oracle`` adds rows ``oracle_pv`` that calibrate the
proxy itself: an ideal partial-volume rendering of the surfaces (each voxel CSF 0.25 / GM 0.55 /
WM 1.0 by the fractions of its voxel inside the white and pial surfaces, linear in their SDFs),
before and after, measured the same way: what the proxy can see of MM at this voxel size.

Resumable: rows already in ``OUT/subjects.tsv`` / ``OUT/atrophy.tsv`` are kept and not recomputed
(their scans are read back from ``OUT/volumes`` for the montages), so runs can be added as their
training finishes; the summary covers every row.

Runs: any cortex runs (``model.kind`` bridge / ddpm / regression, ``data.channels`` all / fused:
configs/cortex_cpu*.yaml are the paper's method, its two baselines and the ablation). Subjects:
the first ``-n`` test-split subjects of the cache with surfaces in the FIRST run's
``shapes/<id>/`` (written by its training, extracted from the subject's label map).

Grid: the subject's own cache grid average-pooled by the run's ``data.downsample`` (the grid the
run trained on), so generated and real voxels correspond; the shape channels are the run's cached
ones for the subject (``RUN/shapes/<id>.npz``), else rasterised there from the first run's
surfaces. (``brainsynth sample cortex`` instead places the grid by the pial bounding box: the
same spacing and shape, a shifted origin.) One scan per subject and run, seed ``--seed``,
``--steps`` network evaluations (default: the run's ``sample.steps``; the regression takes one).

Image metrics (``evaluation.image``, data range 1, images in [0, 1]): MAE, PSNR and SSIM (Gaussian
window 7 voxels under 64 voxels a side, else 11; sigma 1.5) inside the brain mask (the subject's
label map > 0, average-pooled, >= 0.5).

Surface metric: ASSD and HD95 (``evaluation.surface.surface_distances``, exact, area-weighted)
between the input surfaces and surfaces extracted from the generated scan by a PROXY
segmentation, since a generated T1w has no labels: a 3-class Gaussian mixture of the intensities
(``evaluation.anatomy.fit_tissue_gmm``: CSF < GM < WM) within ``--margin`` mm outside the input
pial surfaces, each voxel given to the hemisphere whose pial surface is nearer (signed distance);
per hemisphere, white = WM voxels, pial = GM + WM voxels, each turned into a closed surface by the
same pipeline that made the input surfaces from label maps (``geometry.extract.mask_surface``:
topology repair (holes such as the ventricles filled), marching cubes, smoothing). The same proxy
on the REAL scan gives the floor (row ``real``): what the proxy itself costs on real data; a method
is only as good as its distance above that floor. The margin bounds what the region alone gives
away: a scan that is WM/GM everywhere gets a pial ASSD near ``--margin``.
Measured once on a real IXI scan (sub-IXI012, its DLMUSE surfaces, pooled to 4 mm): floor ASSD
~3 mm (white and pial), HD95 ~11-13 mm, mostly input pial vertices deep in sulci that 4 mm voxels
do not resolve (the GM + WM mask fills the sulci); ~2 mm ASSD at 2 mm.

Cost: the surface distances dominate (exact, against input meshes of ~110 k vertices per
hemisphere on IXI: ~20 s per scan on 2 busy cores at 4 mm, so ~30 min for 16 subjects x 4 runs +
the real floor), then generation (``--steps`` network calls per scan).

Written: ``OUT/subjects.tsv`` (one row per subject and run, and the ``real`` floor rows),
``OUT/summary.json`` (medians, quartiles, settings), ``OUT/volumes/`` (generated and real scans,
NIfTI on the pooled grid), ``OUT/montages/<id>.png``; with ``--s1``: ``OUT/s1/<name>/`` (the run's
``brainsynth sample cortex`` output in S1's world space) and ``OUT/s1/montage.png`` (the real S1
T1w resampled to the first run's grid, not skull-stripped, beside each run's scan). Prints the
table of medians.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from brainsynth.cli.options import resolve_device
from brainsynth.data.cache import IMAGE_SCALE, read_cache_info, read_cache_manifest
from brainsynth.data.preprocess import resample_to_grid
from brainsynth.errors import InputError
from brainsynth.evaluation.anatomy import fit_tissue_gmm
from brainsynth.evaluation.image import grid_ssim_kernel, mae, psnr, ssim
from brainsynth.evaluation.surface import surface_distances
from brainsynth.geometry.atrophy import thickness
from brainsynth.geometry.extract import mask_surface
from brainsynth.geometry.sdf import signed_distance, union_signed_distance
from brainsynth.io import Surface, Volume, read_volume, write_tsv_atomic, write_volume
from brainsynth.io.atomic import write_text_atomic
from brainsynth.methods.cortex.atrophy import atrophied
from brainsynth.methods.cortex.config import CortexConfig
from brainsynth.methods.cortex.data import (
    SHAPES,
    channels_from_surfaces,
    load_shapes,
    pad_channels,
    pooled_affine,
)
from brainsynth.methods.cortex.networks import load_model
from brainsynth.methods.cortex.sample import generate, read_surfaces, sample
from brainsynth.methods.ldm.data import crop_to
from brainsynth.training.checkpoint import read_meta
from brainsynth.viz import montage

SURFACES = [(h, k) for h in ("lh", "rh") for k in ("white", "pial")]
IMAGE_KEYS = ("mae", "psnr", "ssim")
ORACLE = "oracle_pv"  # the ideal partial-volume rendering of the atrophy rows
SURFACE_KEYS = ("assd_white", "assd_pial", "hd95_white", "hd95_pial")


# --- the subject on a run's grid ----------------------------------------------------------------


def pool(a: np.ndarray, d: int) -> np.ndarray:
    """(X, Y, Z) average-pooled by ``d`` (the training data's pooling, ``data.Pairs``)."""
    t = torch.from_numpy(np.asarray(a, dtype=np.float32))[None, None]
    return (F.avg_pool3d(t, d) if d > 1 else t)[0, 0].numpy()


class Subject:
    """A test subject's real scan, brain mask and input surfaces, on the grids of the runs."""

    def __init__(self, cache: Path, row: dict, surfaces_dir: Path):
        self.sid = row["subject"]
        img = read_volume(cache / row["image"], dtype=None)
        self.image = img.data.astype(np.float32) / IMAGE_SCALE
        self.affine = img.affine
        self.brain = read_volume(cache / row["labels"], dtype=None).data > 0
        self.surfaces = read_surfaces(surfaces_dir)
        self._grids: dict[int, dict] = {}

    def grid(self, d: int, margin: float) -> dict:
        """The real scan, mask, affine and proxy regions on the grid pooled by ``d`` (cached)."""
        if d not in self._grids:
            aff = pooled_affine(self.affine, d)
            real = pool(self.image, d)
            sp = {
                h: signed_distance(self.surfaces[h, "pial"], real.shape, aff) for h in ("lh", "rh")
            }
            near_lh = sp["lh"] <= sp["rh"]
            regions = {
                "lh": (sp["lh"] < margin) & near_lh,
                "rh": (sp["rh"] < margin) & ~near_lh,
            }
            brain = pool(self.brain, d) >= 0.5
            self._grids[d] = {"affine": aff, "real": real, "brain": brain, "regions": regions}
        return self._grids[d]


def run_channels(run: Path, cfg: CortexConfig, subj: Subject, shape, aff) -> np.ndarray:
    """(5, *shape): the run's cached channels of the subject if on this grid, else rasterised."""
    try:
        ch, cached_aff = load_shapes(run, subj.sid)
        if ch.shape[1:] == tuple(shape) and np.allclose(cached_aff, aff, atol=1e-4):
            return ch
    except InputError:
        pass
    return channels_from_surfaces(subj.surfaces, tuple(shape), aff, cfg.data.clip_mm)


# --- metrics ------------------------------------------------------------------------------------


def image_metrics(real: np.ndarray, x: np.ndarray, brain: np.ndarray) -> dict:
    k = grid_ssim_kernel(real.shape)
    return {
        "mae": mae(real, x, brain),
        "psnr": psnr(real, x, 1.0, brain),
        "ssim": ssim(real, x, 1.0, brain, kernel_size=k),
    }


def proxy_surfaces(
    image: np.ndarray, regions: dict[str, np.ndarray], aff: np.ndarray, seed: int
) -> tuple[dict[tuple[str, str], Surface], dict[str, str]]:
    """White and pial surfaces per hemisphere of ``image`` by the proxy segmentation (module
    docstring), and the reasons for any that could not be made."""
    region = regions["lh"] | regions["rh"]
    values = image[region].astype(np.float64)
    gmm, order = fit_tissue_gmm(values, seed)
    rank = np.empty(3, dtype=np.int64)
    rank[order] = np.arange(3)  # component -> 0 CSF, 1 GM, 2 WM
    cls = np.full(image.shape, -1, dtype=np.int64)
    cls[region] = rank[gmm.predict(values[:, None])]
    out: dict[tuple[str, str], Surface] = {}
    failed: dict[str, str] = {}
    for h, reg in regions.items():
        for kind, mask in (("white", cls == 2), ("pial", cls >= 1)):
            try:
                out[h, kind] = mask_surface(mask & reg, aff)[0]
            except (InputError, ValueError, RuntimeError) as e:
                failed[f"{h}.{kind}"] = str(e)
    return out, failed


def surface_metrics(
    extracted: dict[tuple[str, str], Surface],
    given: dict[tuple[str, str], Surface],
    samples_per_mm2: float,
) -> dict:
    """ASSD/HD95 (mm) per surface and their lh/rh means per kind (NaN where one is missing)."""
    row: dict[str, float] = {}
    for h, kind in SURFACES:
        if (h, kind) in extracted:
            d = surface_distances(extracted[h, kind], given[h, kind], samples_per_mm2)
            row[f"assd_{h}_{kind}"], row[f"hd95_{h}_{kind}"] = d["assd"], d["hd95"]
        else:
            row[f"assd_{h}_{kind}"] = row[f"hd95_{h}_{kind}"] = float("nan")
    for kind in ("white", "pial"):
        for m in ("assd", "hd95"):
            row[f"{m}_{kind}"] = float(np.mean([row[f"{m}_{h}_{kind}"] for h in ("lh", "rh")]))
    return row


def proxy_row(image, grid, given, args) -> dict:
    try:
        extracted, failed = proxy_surfaces(image, grid["regions"], grid["affine"], args.seed)
    except ValueError as e:  # e.g. too few voxels for the mixture
        extracted, failed = {}, {"all": str(e)}
    row = surface_metrics(extracted, given, args.samples_per_mm2)
    row["proxy_failures"] = "; ".join(f"{k}: {v}" for k, v in failed.items()) or None
    return row


# --- summary ------------------------------------------------------------------------------------


def summarise(rows: list[dict], names: list[str]) -> dict:
    out = {}
    for name in [*names, "real"]:
        mine = [r for r in rows if r["run"] == name]
        block = {}
        for key in (*IMAGE_KEYS, *SURFACE_KEYS, "seconds"):
            v = np.array([r.get(key) for r in mine if r.get(key) is not None], dtype=np.float64)
            v = v[np.isfinite(v)]
            if len(v):
                q1, med, q3 = np.percentile(v, [25, 50, 75])
                block[key] = {"median": float(med), "q1": float(q1), "q3": float(q3), "n": len(v)}
        out[name] = block
    return out


def print_table(summary: dict) -> None:
    cols = ("mae", "psnr", "ssim", "assd_white", "assd_pial", "hd95_white", "hd95_pial")
    print(f"{'run (medians)':<16}" + "".join(f"{c:>12}" for c in cols))
    for name, block in summary.items():
        cells = [f"{block[c]['median']:12.4f}" if c in block else f"{'-':>12}" for c in cols]
        print(f"{name:<16}" + "".join(cells))


# --- pycortex S1 --------------------------------------------------------------------------------


def s1_montage(s1: Path, runs: dict, out: Path, args, device) -> Path:
    """Each run's scan of S1's real surfaces (``sample``, S1's world space) beside S1's T1w."""
    t1 = sorted((s1 / "anat").glob("*_T1w.nii*")) if (s1 / "anat").is_dir() else []
    t1 = t1 or sorted(s1.glob("*_T1w.nii*"))
    if not t1:
        raise InputError(s1, "no *_T1w.nii(.gz) in the S1 folder or its anat/")
    vols, titles = [], []
    ref: Volume | None = None
    for name, run in runs.items():
        path = sample(run, s1, out / name, n=1, steps=args.steps, seed=args.seed,
                      device=device, overwrite=True)[0]  # fmt: skip
        vol = read_volume(path)
        if ref is None:
            real = read_volume(t1[0])
            ref = resample_to_grid(real, vol.affine, vol.shape)
            vols.append(ref.data / max(float(np.percentile(real.data, 99.5)), 1e-6))
            titles.append("S1 real T1w (resampled, not skull-stripped)")
        else:
            vol = resample_to_grid(vol, ref.affine, ref.shape)
        vols.append(vol.data)
        titles.append(f"{name} (from S1's surfaces)")
    return montage(vols, out / "montage.png", titles, 1.0)


# --- atrophy recovery ---------------------------------------------------------------------------


def proxy_thickness(image: np.ndarray, grid: dict, seed: int) -> dict[str, float]:
    """Mean cortical thickness per hemisphere of a scan by the proxy segmentation: the mean distance
    of the proxy pial surface's vertices to the proxy white surface (``geometry.atrophy``)."""
    surf, _ = proxy_surfaces(image, grid["regions"], grid["affine"], seed)
    out = {}
    for h in ("lh", "rh"):
        if (h, "pial") in surf and (h, "white") in surf:
            out[h] = float(np.mean(thickness(surf[h, "pial"], surf[h, "white"], False)))
    return out


def surfaces_scan(surfaces, name, cfg, model, meta, grid, shape, args, device) -> np.ndarray:
    """The scan of ``surfaces`` on the subject's grid: the run's generation from the seed, or for
    ``name == ORACLE`` the ideal partial-volume rendering (module docstring)."""
    if name == ORACLE:
        h = float(np.sqrt((grid["affine"][:3, :3] ** 2).sum(0)).mean())
        frac = []
        for kind in ("white", "pial"):
            meshes = [surfaces.get((hemi, kind)) for hemi in ("lh", "rh")]
            sdf = union_signed_distance(meshes, tuple(shape), grid["affine"])
            frac.append(np.clip(0.5 - sdf / h, 0.0, 1.0))
        wm, inside = frac[0], np.maximum(frac[1], frac[0])
        return (0.25 * (1 - inside) + 0.55 * (inside - wm) + 1.0 * wm).astype(np.float32)
    padded = tuple(int(s) for s in meta["grid"]["padded"])
    ch = channels_from_surfaces(surfaces, tuple(shape), grid["affine"], cfg.data.clip_mm)
    x = pad_channels(torch.from_numpy(ch), padded)[None].to(device)
    g = torch.Generator().manual_seed(args.seed)
    vol = crop_to(generate(model, cfg, x, steps=args.steps, generator=g), shape)
    return vol[0, 0].float().cpu().numpy()


def atrophy_rows(
    subj, name, cfg, model, meta, grid, shape, mm, thinned, before: dict[str, float], args, device
) -> list[dict]:
    """The scan of the surfaces thinned by ``mm`` (``thinned``: ``atrophied``'s surfaces and
    measured change, computed once per subject and mm for every run) from the same noise as the
    "before" scan (whose proxy thickness is ``before``) on the subject's grid: the thickness
    change of the proxy surfaces against that of the input surfaces."""
    after, requested = thinned
    vol = surfaces_scan(after, name, cfg, model, meta, grid, shape, args, device)
    thick = [before, proxy_thickness(vol, grid, args.seed)]
    rows = []
    for h in ("lh", "rh"):
        if h in thick[0] and h in thick[1] and h in requested:
            got = thick[1][h] - thick[0][h]
            rows.append({"subject": subj.sid, "run": name, "mm": mm, "hemi": h,
                         "input_change": requested[h], "recovered_change": got,
                         "error": got - requested[h]})  # fmt: skip
    return rows


# --- main ---------------------------------------------------------------------------------------


def read_rows(path: Path) -> list[dict]:
    """A TSV this script wrote, numbers parsed back (empty cells: None), or [] if absent."""
    import csv

    if not path.is_file():
        return []

    def cell(v: str):
        if v == "":
            return None
        for kind in (int, float):
            try:
                return kind(v)
            except ValueError:
                pass
        return v

    with open(path, newline="") as fh:
        return [{k: cell(v) for k, v in r.items()} for r in csv.DictReader(fh, delimiter="\t")]


def parse_runs(items: list[str]) -> dict[str, Path]:
    runs = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--runs takes NAME=RUN, got {item!r}")
        if name in ("real", ORACLE) or name in runs:
            raise SystemExit(f"run name {name!r} is reserved or repeated")
        runs[name] = Path(path)
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", nargs="+", required=True, help="NAME=RUN ... (first: its surfaces)")
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("-n", type=int, default=16, help="test subjects (at most)")
    ap.add_argument("--steps", type=int, default=None, help="network evaluations (run's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--margin", type=float, default=6.0, help="proxy region: mm outside the pial")
    ap.add_argument("--samples-per-mm2", type=float, default=1.0, help="ASSD quadrature density")
    ap.add_argument("--s1", type=Path, default=None, help="pycortex S1 folder (anat/, surf/)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--atrophy", type=float, nargs="*", default=[],
                    help="also measure atrophy recovery for these mm (e.g. 0.5 1)")  # fmt: skip
    ap.add_argument("--atrophy-oracle", action="store_true",
                    help="also measure an ideal partial-volume rendering (calibrates the proxy)")  # fmt: skip
    ap.add_argument("--atrophy-runs", nargs="*", default=None,
                    help="runs whose atrophy recovery is measured (default: the first)")  # fmt: skip
    args = ap.parse_args()

    runs = parse_runs(args.runs)
    atrophy_runs = set(args.atrophy_runs or [next(iter(runs))])
    if unknown := atrophy_runs - set(runs):
        raise SystemExit(f"--atrophy-runs names no run: {sorted(unknown)}")
    device = resolve_device(args.device)
    models = {name: load_model(run, device) for name, run in runs.items()}
    first = next(iter(runs.values()))
    shape0 = tuple(int(s) for s in read_cache_info(args.cache)["shape"])
    rows_in = [
        r
        for r in read_cache_manifest(args.cache, "test")
        if r.get("labels") and (first / SHAPES / r["subject"]).is_dir()
    ][: args.n]
    if not rows_in:
        raise SystemExit(f"no test subject of {args.cache} has surfaces in {first / SHAPES}")
    for sub in ("volumes", "montages"):
        (args.out / sub).mkdir(parents=True, exist_ok=True)

    rows = read_rows(args.out / "subjects.tsv")  # resumed: kept, not recomputed
    atrophy = read_rows(args.out / "atrophy.tsv")
    done = {(rw["subject"], rw["run"], rw["downsample"]) for rw in rows}
    for i, r in enumerate(rows_in):
        subj = Subject(args.cache, r, first / SHAPES / r["subject"])
        floors: set[int] = set()  # downsamples whose real floor is shown
        shown, titles = [], []
        thinned: dict[float, tuple] = {}  # mm -> atrophied(surfaces, mm), shared by the runs
        for name, (cfg, model, meta) in models.items():
            d = cfg.data.downsample
            grid = subj.grid(d, args.margin)
            shape = tuple(s // d for s in shape0)
            if [int(s) for s in meta["grid"]["shape"]] != list(shape):
                raise SystemExit(f"{runs[name]} trained on {meta['grid']['shape']}, not {shape}")
            if d not in floors:  # the proxy on the real scan: the floor
                floors.add(d)
                if (subj.sid, "real", d) not in done:
                    t0 = time.perf_counter()
                    rows.append({"subject": subj.sid, "run": "real", "downsample": d,
                                 **{k: None for k in IMAGE_KEYS},
                                 **proxy_row(grid["real"], grid, subj.surfaces, args),
                                 "seconds": None,
                                 "eval_seconds": time.perf_counter() - t0})  # fmt: skip
                    write_volume(Volume(grid["real"], grid["affine"]),
                                 args.out / "volumes" / f"{subj.sid}_real_d{d}_T1w.nii.gz")  # fmt: skip
                shown.append(grid["real"])
                titles.append(f"{subj.sid} real ({d}x pooled)")
            vol_path = args.out / "volumes" / f"{subj.sid}_{name}_T1w.nii.gz"
            if (subj.sid, name, d) in done and vol_path.is_file():
                row = next(rw for rw in rows if (rw["subject"], rw["run"]) == (subj.sid, name))
                vol = read_volume(vol_path).data
            else:
                ch = run_channels(runs[name], cfg, subj, shape, grid["affine"])
                padded = tuple(int(s) for s in meta["grid"]["padded"])
                x = pad_channels(torch.from_numpy(ch), padded)[None].to(device)
                t0 = time.perf_counter()
                g = torch.Generator().manual_seed(args.seed)
                img = generate(model, cfg, x, steps=args.steps, generator=g)
                vol = crop_to(img, shape)[0, 0].float().cpu().numpy()
                seconds = time.perf_counter() - t0
                t0 = time.perf_counter()
                row = {"subject": subj.sid, "run": name, "downsample": d,
                       **image_metrics(grid["real"], vol, grid["brain"]),
                       **proxy_row(vol, grid, subj.surfaces, args),
                       "seconds": seconds, "eval_seconds": None}  # fmt: skip
                row["eval_seconds"] = time.perf_counter() - t0
                rows.append(row)
                write_volume(Volume(vol, grid["affine"]), vol_path)
            shown.append(vol)
            titles.append(f"{name}: PSNR {row['psnr']:.1f} SSIM {row['ssim']:.3f}")
            measured = [name] if name in atrophy_runs else []
            if args.atrophy_oracle and name == next(iter(models)):
                measured.append(ORACLE)
            for who in measured:
                todo = [mm for mm in args.atrophy if not any(
                    (a["subject"], a["run"], a["mm"]) == (subj.sid, who, mm) for a in atrophy)]  # fmt: skip
                if not todo:
                    continue
                scan = surfaces_scan(subj.surfaces, who, cfg, model, meta, grid, shape, args,
                                     device)  # fmt: skip
                before = proxy_thickness(scan, grid, args.seed)
                for mm in todo:
                    if mm not in thinned:
                        thinned[mm] = atrophied(subj.surfaces, mm)
                    atrophy.extend(atrophy_rows(subj, who, cfg, model, meta, grid, shape, mm,
                                                thinned[mm], before, args, device))  # fmt: skip
                    write_tsv_atomic(args.out / "atrophy.tsv", atrophy)
        montage(shown, args.out / "montages" / f"{subj.sid}.png", titles, 1.0)
        print(f"[{i + 1}/{len(rows_in)}] {subj.sid}: "
              + ", ".join(f"{rw['run']} ASSD pial {rw['assd_pial']:.2f}" for rw in rows
                          if rw["subject"] == subj.sid))  # fmt: skip
        write_tsv_atomic(args.out / "subjects.tsv", rows)

    summary = {
        "runs": {
            name: {
                "path": str(runs[name]),
                "kind": cfg.model.kind,
                "channels": cfg.data.channels,
                "downsample": cfg.data.downsample,
                "step": read_meta(runs[name]).get("step"),
                "network_evaluations": 1
                if cfg.model.kind == "regression"
                else (args.steps if args.steps is not None else cfg.sample.steps),
            }
            for name, (cfg, _, _) in models.items()
        },
        "cache": str(args.cache),
        "subjects": [r["subject"] for r in rows_in],
        "atrophy_runs": sorted(atrophy_runs),
        "settings": {
            "seed": args.seed,
            "data_range": 1.0,
            "mask": "label map > 0, average-pooled, >= 0.5",
            "ssim": "Gaussian window 7 (side < 64) else 11, sigma 1.5, valid centres in the mask",
            "proxy": f"3-class GMM within {args.margin} mm outside the input pial, per hemisphere "
            "(nearer pial); white = WM, pial = GM + WM; geometry.extract.mask_surface",
            "surface_distances": f"exact, area-weighted, {args.samples_per_mm2}/mm^2",
        },
        "medians": summarise(rows, list(runs)),
    }
    if atrophy:
        summary["atrophy"] = {
            f"{name} {mm} mm": {
                "mean_error_mm": float(np.mean([a["error"] for a in sel])),
                "mean_abs_error_mm": float(np.mean([abs(a["error"]) for a in sel])),
                "mean_input_change_mm": float(np.mean([a["input_change"] for a in sel])),
                "mean_recovered_change_mm": float(np.mean([a["recovered_change"] for a in sel])),
                "n": len(sel),
            }
            for name in [*runs, ORACLE]
            for mm in args.atrophy
            if (sel := [a for a in atrophy if a["run"] == name and a["mm"] == mm])
        }
        for key, a in summary["atrophy"].items():
            print(f"atrophy {key}: input {a['mean_input_change_mm']:+.3f} mm, recovered "
                  f"{a['mean_recovered_change_mm']:+.3f} mm, mean |error| "
                  f"{a['mean_abs_error_mm']:.3f} mm (n {a['n']})")  # fmt: skip
    if args.s1 is not None:
        summary["s1_montage"] = str(s1_montage(args.s1, runs, args.out / "s1", args, device))
    write_text_atomic(args.out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print_table(summary["medians"])
    print(f"rows: {args.out / 'subjects.tsv'}; summary: {args.out / 'summary.json'}")


if __name__ == "__main__":
    main()
