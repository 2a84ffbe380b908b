"""Restoration evaluation: degrade the cache's test scans, restore them with the prior (DAPS) and
with the baselines a user would otherwise run, and compare each to the clean scan inside the brain.

    python benchmarks/restore_eval.py --prior RUN --cache CACHE --out DIR
        [--settings x3,x5,x3_bias,inpaint] [-n 16] [--samples 4]
        [--config configs/restore_cpu.yaml] [--levels N --ode-steps K --sigma-max S --tau T
        --init baseline|zeros]
    python benchmarks/restore_eval.py --prior RUN --cache CACHE --out DIR --sweep [-n 4]

Settings (slices along the axial axis, simulated on the cache's own 2 mm grid, restored on the
prior's grid, h = the prior's spacing; noise 1 % of the brain's 99.5th percentile):
    x3        slice spacing 3 h, 2 mm gap (thickness 3 h - 2 mm)          baselines: trilinear, cubic
    x5        slice spacing 5 h, 2 mm gap                                  baselines: trilinear, cubic
    x3_bias   x3 of a biased scan (log-field std 0.2, Legendre order 3)   baselines: cubic, N4 after cubic
    inpaint   an isotropic scan with a dark ellipsoid lesion (radius 10 mm) and its mask
                                                                           baseline: biharmonic
Truth: the clean cache image average-pooled to the prior's grid. Metrics (evaluation suite, data
range 1): MAE, PSNR, SSIM inside the brain (truth > 0); inpaint also PSNR inside the lesion. In
x3_bias every output (and the truth) is first mapped by its brain's 0.5/99.5 percentiles to 0/1,
the cache's own normalisation, since a bias correction may change the global scale.
``--sweep``: network evaluations vs PSNR on x3 over DAPS budgets (levels x ODE steps, start).
Rows go to DIR/<setting>.tsv as they finish; a rerun skips the scans already there.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from brainsynth.data.cache import IMAGE_SCALE, read_cache_manifest
from brainsynth.data.preprocess import robust_range
from brainsynth.evaluation.image import grid_ssim_kernel, mae, psnr, ssim
from brainsynth.io import Volume, read_volume, write_volume
from brainsynth.methods.restore import baselines
from brainsynth.methods.restore.config import with_sampling
from brainsynth.methods.restore.degrade import Degradation, degrade
from brainsynth.methods.restore.prior import load_prior
from brainsynth.methods.restore.restore import posterior
from brainsynth.methods.restore.scan import ScanOptions, prepare_scan


def settings(h: float) -> dict[str, tuple[Degradation, str]]:
    return {
        "x3": (Degradation(slice_spacing=3 * h, gap=2.0, noise=0.01), "superres"),
        "x5": (Degradation(slice_spacing=5 * h, gap=2.0, noise=0.01), "superres"),
        "x3_bias": (Degradation(slice_spacing=3 * h, gap=2.0, bias=0.2, noise=0.01), "bias"),
        "inpaint": (Degradation(lesion_radius=10.0, noise=0.01), "inpaint"),
    }


SWEEP = [  # (levels, ode steps, sigma_max, sigma_min, init); NFE = levels x ode steps
    (10, 1, 1.0, 0.1, "baseline"),
    (20, 1, 1.0, 0.1, "baseline"),
    (20, 1, 3.0, 0.1, "baseline"),
    (20, 1, 3.0, 0.02, "baseline"),
    (50, 1, 3.0, 0.1, "baseline"),
    (50, 2, 10.0, 0.1, "baseline"),
    (50, 2, 100.0, 0.1, "zeros"),
    (200, 5, 100.0, 0.1, "zeros"),  # the DAPS paper's pixel default (1000 evaluations)
]


def renorm(x: np.ndarray, brain: np.ndarray) -> np.ndarray:
    lo, hi = robust_range(x, brain, 0.5, 99.5)
    return np.where(brain, (x - lo) / (hi - lo), 0.0).clip(0, 1)


def scores(truth: np.ndarray, x: np.ndarray, brain: np.ndarray, lesion: np.ndarray | None):
    k = grid_ssim_kernel(truth.shape)
    row = {
        "mae": mae(truth, x, brain),
        "psnr": psnr(truth, x, 1.0, brain),
        "ssim": ssim(truth, x, 1.0, brain, kernel_size=k),
    }
    if lesion is not None:
        row["psnr_lesion"] = psnr(truth, x, 1.0, lesion)
    return row


def run_scan(args, model, process, info, cfg, name, deg, task, sid, img_path, out, daps, init):
    vol = read_volume(img_path)
    clean = vol.with_data(vol.data / IMAGE_SCALE)
    d = degrade(clean, deg)
    scan_dir = out / name / "inputs"
    write_volume(d.image, scan_dir / f"{sid}.nii.gz")
    mask_path = None
    if d.mask is not None:
        mask_path = write_volume(d.mask, scan_dir / f"{sid}_mask.nii.gz")
    prep = prepare_scan(scan_dir / f"{sid}.nii.gz", info, ScanOptions(task=task), mask=mask_path)
    t = torch.from_numpy(clean.data)[None, None]
    f = info.downsample
    truth = F.avg_pool3d(t, f)[0, 0].numpy() if f > 1 else clean.data
    sl = tuple(slice(0, n) for n in info.shape)
    truth = truth[sl]
    brain = truth > 0
    lesion = None if prep.missing is None else (prep.missing[sl] & brain)
    outputs: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    if task == "inpaint":
        y = prep.to_scan_units(prep.y[0, 0].numpy())[sl]
        outputs["biharmonic"] = baselines.biharmonic(y, prep.missing[sl])
    else:
        outputs["trilinear"] = prep.to_scan_units(prep.baseline(1))[sl]
        outputs["cubic"] = prep.to_scan_units(prep.baseline(3))[sl]
        if task == "bias":
            outputs["n4_cubic"] = baselines.n4(outputs["cubic"], brain, info.spacing)
            del outputs["trilinear"]
    base_s = time.perf_counter() - t0
    r = posterior(
        model, process, info, prep, daps, samples=args.samples, init=init, seed=args.seed,
        slice_axes=args.slice_axes or cfg.restore.slice_axes,
    )  # fmt: skip
    outputs["daps"] = prep.to_scan_units(np.clip(r.mean, 0, None))
    if task == "bias":
        truth = renorm(truth, brain)
        outputs = {k: renorm(v, brain) for k, v in outputs.items()}
    rows = []
    for method, x in outputs.items():
        row = {"setting": name, "scan": sid, "method": method, **scores(truth, x, brain, lesion)}
        row["seconds"] = r.seconds if method == "daps" else base_s
        row["nfe"] = r.nfe if method == "daps" else 0
        if method == "daps":
            row["std_mean"] = float(r.std[brain].mean() * (prep.high - prep.low))
        rows.append(row)
    if args.save:
        for method, x in outputs.items():
            vol = Volume(x.astype(np.float32), prep.prior_affine)
            write_volume(vol, out / name / "outputs" / f"{sid}_{method}.nii.gz")
    return rows


def append(path: Path, rows: list[dict]) -> None:
    new = not path.exists()
    keys = ["setting", "scan", "method", "mae", "psnr", "ssim", "psnr_lesion", "seconds", "nfe"]
    keys.append("std_mean")
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, keys, delimiter="\t", extrasaction="ignore", restval="")
        if new:
            w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.5g}" if isinstance(v, float) else v) for k, v in r.items()})


def summary(path: Path) -> None:
    rows = list(csv.DictReader(open(path), delimiter="\t"))
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["method"], []).append(r)
    print(f"\n{path.stem}: median over {len({r['scan'] for r in rows})} scans")
    cols = ["mae", "psnr", "ssim", "psnr_lesion", "seconds", "nfe"]
    print("method".ljust(26) + "".join(c.rjust(12) for c in cols))
    for m, rs in by.items():
        vals = []
        for c in cols:
            v = [float(r[c]) for r in rs if r.get(c) not in (None, "")]
            vals.append(f"{np.median(v):.4g}" if v else "-")
        print(m.ljust(26) + "".join(v.rjust(12) for v in vals))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--prior", required=True, type=Path)
    ap.add_argument("--cache", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--settings", default="x3,x5,x3_bias,inpaint")
    ap.add_argument("-n", type=int, default=16)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--levels", type=int)
    ap.add_argument("--ode-steps", type=int)
    ap.add_argument("--sigma-max", type=float)
    ap.add_argument("--tau", type=float)
    ap.add_argument("--init", choices=["baseline", "zeros"])
    ap.add_argument("--slice-axes", choices=["all", "across"], help="a slice-wise prior's axes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", type=Path, help="take the daps and restore sections from this YAML")
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--sweep-configs", type=int, default=len(SWEEP), help="the first K of SWEEP")
    ap.add_argument("--save", action="store_true", help="also write the DAPS outputs")
    args = ap.parse_args()
    torch.set_grad_enabled(True)
    cfg, model, process, info = load_prior(args.prior)
    from dataclasses import replace

    cfg = with_sampling(cfg, args.config)

    over = {
        k: v
        for k, v in (
            ("annealing_steps", args.levels),
            ("ode_steps", args.ode_steps),
            ("sigma_max", args.sigma_max),
            ("tau", args.tau),
        )
        if v is not None
    }
    daps = replace(cfg.daps, **over)
    init = args.init or cfg.restore.init
    scans = read_cache_manifest(args.cache, args.split)[: args.n]
    args.out.mkdir(parents=True, exist_ok=True)
    table = settings(info.spacing)
    if args.sweep:
        runs = [
            (f"sweep_{lv}x{k}_max{smax:g}_min{smin:g}_{ini}", table["x3"],
             replace(daps, annealing_steps=lv, ode_steps=k, sigma_max=smax, sigma_min=smin), ini)
            for lv, k, smax, smin, ini in SWEEP[: args.sweep_configs]
        ]  # fmt: skip
    else:
        runs = [(n, table[n], daps, init) for n in args.settings.split(",")]
    for name, (deg, task), dcfg, ini in runs:
        path = args.out / f"{name}.tsv"
        done = (
            {r["scan"] for r in csv.DictReader(open(path), delimiter="\t")}
            if path.exists()
            else set()
        )
        for i, row in enumerate(scans):
            if row["subject"] in done:
                continue
            d = replace(deg, seed=args.seed + i)
            rows = run_scan(
                args, model, process, info, cfg, name, d, task, row["subject"],
                args.cache / row["image"], args.out, dcfg, ini,
            )  # fmt: skip
            append(path, rows)
            daps_row = [r for r in rows if r["method"] == "daps"][0]
            print(f"{name} {row['subject']}: " + ", ".join(f"{r['method']} {r['psnr']:.2f}" for r in rows)
                  + f" dB ({daps_row['seconds']:.0f} s)", flush=True)  # fmt: skip
        summary(path)


if __name__ == "__main__":
    main()
