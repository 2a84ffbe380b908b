"""Does a conditioned deform run follow its covariates? Generate scans at a sweep of requested
ventricle volumes (or ages), measure each on its own label map (the template's labels carried by
the sampled field: an exact count, not an image proxy), and print how the measured volumes follow
the requested ones.

    python benchmarks/deform_conditioning.py --run RUN --cache CACHE --out DIR
        [--covariate ventricle_volume --levels 10000,20000,30000,40000,50000] [-n 8]
        [--guidance 2.0]
    python benchmarks/deform_conditioning.py --run RUN --cache CACHE --out DIR --covariate age
        --levels 25,45,65,85

RUN: a deform run whose fields stage was trained with ``fields.conditioning`` including the
covariate. Covariates not requested are drawn from training subjects close to the requested one
(as ``brainsynth sample deform`` does). Samples go to DIR/<covariate>_<level>/ and are reused when
their samples.tsv exists, so an interrupted run resumes.

Also written: DIR/figure_<covariate>.png, the first sample of each level (coronal and axial
slices through the template's ventricles, the generated ventricle label outlined).

Printed: per level the mean +- sd of the measured ventricle and brain volumes; over all samples
the least-squares slope of measured against requested and Pearson's r. For ventricle volume a
slope of 1 is exact control. For age, the slope of ventricles on age (mm3 per year) is printed
beside the training split's own (label-map volumes from the cache manifest). The generated volumes
are in the template's (affinely normalised) space, the requested and real ones in each subject's
own space: head size adds spread to the real slope but no bias on average (the template is the
training subjects' affine mean).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import linregress

from brainsynth.data.cache import read_cache_manifest
from brainsynth.io import read_tsv

NAMES = {"ventricle_volume": "ventricles", "age": "age", "brain_volume": "brain"}


def read_samples(folder: Path) -> np.ndarray:
    """(ventricle_volume, brain_volume) measured on each sample's labels, mm3."""
    rows = read_tsv(folder / "samples.tsv")
    return np.array([(float(r["ventricle_volume"]), float(r["brain_volume"])) for r in rows])


def real_slope(cache: Path, covariate: str) -> tuple[float, float]:
    """Slope and r of label-map ventricle volume on ``covariate`` over the training split."""
    rows = read_cache_manifest(cache, "train")
    a = np.array([(r[covariate], r["ventricle_volume"]) for r in rows], dtype=float)
    a = a[np.isfinite(a).all(1)]
    fit = linregress(a[:, 0], a[:, 1])
    return float(fit.slope), float(fit.rvalue)


def figure(folders: list[Path], titles: list[str], dest: Path) -> None:
    """First sample of each folder: coronal and axial slices through the ventricles' centre,
    the ventricle label outlined in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from brainsynth.data.labels import ventricle_mask
    from brainsynth.io import read_volume
    from brainsynth.viz import save_figure

    imgs = [read_volume(f / "sample_000_T1w.nii.gz").data for f in folders]
    vents = [ventricle_mask(read_volume(f / "sample_000_dseg.nii.gz").data) for f in folders]
    centre = np.argwhere(vents[0]).mean(0).round().astype(int) if vents[0].any() else None
    c = centre if centre is not None else np.array(imgs[0].shape) // 2
    fig, axes = plt.subplots(2, len(folders), figsize=(2.2 * len(folders), 4.6), squeeze=False)
    for j, (img, vent, title) in enumerate(zip(imgs, vents, titles)):
        for i, (sl, ml) in enumerate(
            ((img[:, c[1], :], vent[:, c[1], :]), (img[:, :, c[2]], vent[:, :, c[2]]))
        ):
            ax = axes[i, j]
            ax.imshow(
                sl.T, cmap="gray", origin="lower", vmin=0, vmax=float(np.percentile(img, 99.5))
            )
            if ml.any():
                ax.contour(ml.T.astype(float), levels=[0.5], colors="r", linewidths=0.8)
            ax.set_axis_off()
        axes[0, j].set_title(title, fontsize=8)
    save_figure(fig, dest, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--covariate", default="ventricle_volume", choices=sorted(NAMES))
    p.add_argument("--levels", default="10000,20000,30000,40000,50000")
    p.add_argument("-n", type=int, default=8, help="samples per level")
    p.add_argument("--guidance", type=float, default=None, help="default: the run's")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from brainsynth.methods.deform import sample as generate

    levels = [float(v) for v in args.levels.split(",")]
    name = NAMES[args.covariate]
    table = []
    for level in levels:
        folder = args.out / f"{args.covariate}_{level:g}"
        if not (folder / "samples.tsv").is_file():
            generate(
                args.run,
                folder,
                n=args.n,
                covariates={args.covariate: level},
                guidance=args.guidance,
                seed=args.seed,
                overwrite=True,
            )
        for vent, brain in read_samples(folder):
            table.append((level, vent, brain))
    a = np.array(table)
    print(
        f"{'requested ' + name:>22} {'ventricles ml':>16} {'brain ml':>16}  (measured, n={args.n})"
    )
    for level in levels:
        m = a[a[:, 0] == level]
        print(
            f"{level:>22g} {m[:, 1].mean() / 1e3:>9.1f} +- {m[:, 1].std() / 1e3:<4.1f}"
            f" {m[:, 2].mean() / 1e3:>9.0f} +- {m[:, 2].std() / 1e3:<4.0f}"
        )
    fit = linregress(a[:, 0], a[:, 1])
    summary = {
        "covariate": args.covariate,
        "levels": levels,
        "n_per_level": args.n,
        "guidance": args.guidance,
        "slope": float(fit.slope),
        "r": float(fit.rvalue),
        "per_level_mean_ml": [float(a[a[:, 0] == v, 1].mean() / 1e3) for v in levels],
    }
    if args.covariate == "ventricle_volume":
        print(
            f"measured vs requested ventricles: slope {fit.slope:.2f} (1 = exact), r {fit.rvalue:.2f}"
        )
    else:
        real, r_real = real_slope(args.cache, args.covariate)
        summary.update(real_slope=real, real_r=r_real)
        print(
            f"ventricles on {args.covariate}: generated {fit.slope:.0f} mm3/unit (r {fit.rvalue:.2f}),"
            f" training split {real:.0f} mm3/unit (r {r_real:.2f}): ratio {fit.slope / real:.2f}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    folders = [args.out / f"{args.covariate}_{v:g}" for v in levels]
    means = summary["per_level_mean_ml"]
    asked = [f"{v / 1e3:g} ml" if args.covariate.endswith("volume") else f"{v:g}" for v in levels]
    titles = [f"{name} {a} -> ventricles {m:.1f} ml" for a, m in zip(asked, means)]
    figure(folders, titles, args.out / f"figure_{args.covariate}.png")
    (args.out / f"summary_{args.covariate}.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
