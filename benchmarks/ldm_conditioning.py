"""Does ldm conditioning work? Generate volumes at a sweep of requested ventricle volumes (or ages),
measure each with the evaluation suite's label-free GMM estimate, and print the correlation between
requested and measured ventricle (and brain) volume.

    python benchmarks/ldm_conditioning.py RUN --out DIR [--levels 8000,15000,25000,35000,45000]
        [-n 8] [--real CACHE]
    python benchmarks/ldm_conditioning.py RUN --out DIR --covariate age --levels 25,45,65,85

RUN is a diffusion run folder of ``brainsynth train ldm``. Other covariates are drawn from the
training set given the requested one (as ``brainsynth sample ldm`` does). Samples go to
DIR/vent_<level>/ (DIR/age_<level>/) and are reused when they exist, so an interrupted run resumes.
With ``--covariate age`` the correlations are between requested age and measured volumes (in IXI,
ventricles grow with age: Spearman ~0.5).

``--real CACHE`` first measures the same proxy on the cache's val+test subjects at the run's
resolution and correlates it with their label-map volumes: the ceiling of what the measurement can
show (the proxy is coarse at 4 mm). It also adds a second measurement that finds blurred ventricles
too: the "dark volume" in the ventricle prior (voxels where more than 5 % of the cache's training
label maps have ventricle, at the run's resolution): sum over the region of clip((w - I) / w, 0, 1)
x voxel volume, w the 90th intensity percentile in the brain (a linear CSF fraction; grey matter
in the region counts in part, so it is a relative measure, judged by its correlation). A line fitted
on the real subjects maps it to label-map ventricle volume; the benchmark prints each level's
calibrated volume and the slope of calibrated against requested volume (1 would be exact); the
same slope on the run's autoencoder reconstructions of the real subjects is the ceiling for samples
decoded by that autoencoder (its blur lightens the ventricles). With
``--covariate age`` that slope (mm3 per year) is printed next to the training set's own.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import pearsonr, spearmanr

from brainsynth.data.cache import CacheDataset, read_cache_manifest
from brainsynth.evaluation.anatomy import tissue_volumes_gmm
from brainsynth.io import read_volume
from brainsynth.methods.ldm.data import ventricle_fraction


def proxy(image: np.ndarray, spacing: tuple[float, float, float]) -> dict:
    return tissue_volumes_gmm(image, float(np.prod(spacing)), spacing=spacing)


def _pool(a: np.ndarray, factor: int) -> np.ndarray:
    t = torch.as_tensor(a, dtype=torch.float32)[None, None]
    return F.avg_pool3d(t, factor)[0, 0].numpy() if factor > 1 else t[0, 0].numpy()


def ventricle_prior(cache: Path, downsample: int) -> np.ndarray:
    """Where more than 5 % of the training label maps have ventricle (run resolution)."""
    return ventricle_fraction(cache, downsample)[0, 0].numpy() > 0.05


def dark_volume(image: np.ndarray, prior: np.ndarray | None, voxel_mm3: float) -> float:
    """The dark volume inside ``prior`` (see the module docstring); NaN without a prior."""
    if prior is None:
        return float("nan")
    brain = image > 0.05
    w = float(np.percentile(image[brain], 90)) if brain.any() else 1.0
    return float((np.clip((w - image) / w, 0, 1) * prior).sum() * voxel_mm3)


def measure_samples(folder: Path, covariate: str, prior: np.ndarray | None = None) -> np.ndarray:
    """(requested covariate, measured ventricles, requested brain, measured brain, dark volume)
    per sample."""
    with open(folder / "samples.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    out = []
    for r in rows:
        vol = read_volume(folder / r["file"])
        spacing = tuple(float(s) for s in vol.spacing)
        v = proxy(vol.data, spacing)
        dark = dark_volume(vol.data, prior, float(np.prod(spacing)))
        out.append(
            (float(r[covariate]), v["ventricles"], float(r["brain_volume"]), v["brain"], dark)
        )
    return np.array(out)


@torch.no_grad()
def measure_real(
    cache: Path, downsample: int, prior: np.ndarray | None = None, ae_dir: Path | None = None
) -> np.ndarray:
    """(true ventricles, proxy ventricles, true brain, proxy brain, dark volume, dark volume of
    the reconstruction by the autoencoder in ``ae_dir``, NaN without one) of val+test subjects.
    The last is what samples decoded by that autoencoder could show at best."""
    from brainsynth.methods.ldm import load_autoencoder
    from brainsynth.methods.ldm.data import crop_to, pad_to, padded_shape
    from brainsynth.nn.autoencoder import downsample_factor

    ae = cfg = None
    if ae_dir is not None:
        ae, cfg, _ = load_autoencoder(ae_dir, "cpu")
    rows = []
    for split in ("val", "test"):
        ds = CacheDataset(cache, split, with_labels=False)
        spacing = tuple(float(s) * downsample for s in np.broadcast_to(ds.info["spacing"], 3))
        voxel = float(np.prod(spacing))
        for i in range(len(ds)):
            item = ds[i]
            img = _pool(item["image"][0].numpy(), downsample)
            v = proxy(img, spacing)
            raw = item["covariates_raw"]
            rec_dark = float("nan")
            if ae is not None:
                x = torch.from_numpy(img)[None, None]
                x = pad_to(x, padded_shape(img.shape, downsample_factor(cfg.ae.preset)))
                rec = crop_to(ae.decode(ae.encode(x)[0]), img.shape).clamp(0, 1)
                rec_dark = dark_volume(rec[0, 0].contiguous().numpy(), prior, voxel)
            dark = dark_volume(img, prior, voxel)
            rows.append(
                (
                    raw["ventricle_volume"],
                    v["ventricles"],
                    raw["brain_volume"],
                    v["brain"],
                    dark,
                    rec_dark,
                )
            )
    return np.array(rows)


def real_age_ventricles(cache: Path) -> np.ndarray:
    """(age, label-map ventricles) of the cache's training subjects that have both."""
    rows = read_cache_manifest(cache, "train")
    a = np.array([(r["age"], r["ventricle_volume"]) for r in rows], dtype=float)  # None -> NaN
    return a[np.isfinite(a).all(1)]


def print_r(a: np.ndarray, what: str) -> None:
    """Correlation of column 0 (requested or true) with column 4 (dark volume)."""
    print(
        f"{what}: Pearson r={pearsonr(a[:, 0], a[:, 4]).statistic:.3f} "
        f"Spearman={spearmanr(a[:, 0], a[:, 4]).statistic:.3f} (n={len(a)})"
    )


def calibration(real: np.ndarray) -> np.ndarray:
    """Least-squares line from dark volume (column 4) to the label-map ventricles (column 0) of
    real subjects: ``np.polyval(coef, dark)`` reads a dark volume in label-map mm3."""
    return np.polyfit(real[:, 4], real[:, 0], 1)


def calibrated_slope(x: np.ndarray, dark: np.ndarray, coef: np.ndarray) -> float:
    """Slope of the calibrated ventricle estimate ``polyval(coef, dark)`` against ``x``."""
    return float(np.polyfit(x, np.polyval(coef, dark), 1)[0])


def correlations(a: np.ndarray, what: str, covariate: str = "ventricle_volume") -> None:
    a = a[:, :4]  # the GMM proxy's columns
    ok = np.isfinite(a).all(1)
    a = a[ok]
    for name, i in (("ventricles", 0), ("brain", 2)):
        x, y = a[:, i], a[:, i + 1]
        if np.ptp(y) == 0:
            print(f"{what} {name}: the measurement is constant ({y[0]:.0f} mm3); no correlation")
            continue
        against = "" if i == 2 or covariate == "ventricle_volume" else f" vs requested {covariate}"
        ratio = "" if against else f" measured/true median ratio {np.median(y / x):.2f}"
        print(
            f"{what} {name}{against}: Pearson r={pearsonr(x, y).statistic:.3f} "
            f"Spearman={spearmanr(x, y).statistic:.3f}{ratio} (n={len(a)})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--covariate", choices=("ventricle_volume", "age"), default="ventricle_volume")
    ap.add_argument("--levels", default="8000,15000,25000,35000,45000")
    ap.add_argument("-n", type=int, default=8, help="samples per level")
    ap.add_argument("--real", type=Path, help="cache: calibrate the proxy on real subjects")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--guidance", type=float)
    args = ap.parse_args()

    from brainsynth.methods.ldm import config_from_meta
    from brainsynth.methods.ldm.sample import sample_ldm
    from brainsynth.training.checkpoint import load_checkpoint, path_in_run

    prior = coef = None
    if args.real is not None:
        ck = load_checkpoint(args.run, names=(), with_state=False)
        run_meta = ck["meta"]["config"]
        ds = config_from_meta(run_meta).data.downsample
        prior = ventricle_prior(args.real, ds)
        real = measure_real(args.real, ds, prior, path_in_run(ck["dir"], run_meta["ae_dir"]))
        correlations(real, "real")
        print_r(real, "real ventricles vs dark volume in the prior")
        coef = calibration(real)
        print(
            f"autoencoder reconstructions of the same subjects: Pearson r="
            f"{pearsonr(real[:, 0], real[:, 5]).statistic:.3f}; calibrated ventricles change by "
            f"{calibrated_slope(real[:, 0], real[:, 5], coef):.3g} mm3 per true mm3 (real images: "
            f"{calibrated_slope(real[:, 0], real[:, 4], coef):.3g}; the most samples decoded by "
            "this autoencoder can show)"
        )

    allrows = []
    prefix, unit = ("vent", "mm3") if args.covariate == "ventricle_volume" else ("age", "years")
    for k, level in enumerate(float(s) for s in args.levels.split(",")):
        folder = args.out / f"{prefix}_{level:.0f}"
        if not (folder / "samples.tsv").exists():
            sample_ldm(
                args.run,
                {args.covariate: level},
                args.n,
                folder,
                steps=args.steps,
                guidance=args.guidance,
                seed=1000 + k,
                device="cuda" if torch.cuda.is_available() else "cpu",
            )
        m = measure_samples(folder, args.covariate, prior)
        allrows.append(m)
        extra = ""
        if coef is not None:
            cal = np.polyval(coef, m[:, 4])
            extra = (
                f"; dark volume in the prior {m[:, 4].mean():.0f} +- {m[:, 4].std():.0f}"
                f" (calibrated to label-map ventricles: {cal.mean():.0f} +- {cal.std():.0f})"
            )
        print(
            f"requested {args.covariate} {level:.0f} {unit}: measured ventricles "
            f"{m[:, 1].mean():.0f} +- {m[:, 1].std():.0f} mm3 (n={len(m)}){extra}"
        )
    synth = np.concatenate(allrows)
    correlations(synth, "synthetic", args.covariate)
    if coef is not None:
        print_r(synth, f"synthetic requested {args.covariate} vs dark volume")
        slope = calibrated_slope(synth[:, 0], synth[:, 4], coef)
        print(
            f"synthetic: calibrated ventricles change by {slope:.3g} mm3 per requested "
            f"{unit.rstrip('s')}"
        )
        if args.covariate == "age":
            train = real_age_ventricles(args.real)
            slope = np.polyfit(train[:, 0], train[:, 1], 1)[0]
            print(
                f"real (train split, label maps, n={len(train)}): ventricles change by "
                f"{slope:.3g} mm3 per year"
            )
    print("measured with: evaluation.anatomy.tissue_volumes_gmm (label-free ventricle proxy)")


if __name__ == "__main__":
    main()
