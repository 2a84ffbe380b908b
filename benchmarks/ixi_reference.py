"""Real-vs-real reference figures on IXI: the baseline every synthetic result should be read against.

The IXI subjects are split into two halves with a fixed seed and the halves are compared exactly as
``brainsynth evaluate`` compares real and synthetic sets (same code: ``evaluation.run.evaluate_sets``):
FID and MMD on the named feature extractor, MS-SSIM diversity within each half, intensity and
tissue-volume distribution distances. A synthetic set of the same size should be judged by how far it
lies from these numbers, not from zero.

    python benchmarks/ixi_reference.py [SOURCE] [--seed 0] [--n-pairs 100]
        [--features-weights resnet_50.pth] [--out DIR] [--device auto]

SOURCE: a prepared cache (``brainsynth prepare`` output: CACHE/manifest.tsv with an ``image`` column
of uint8 skull-stripped volumes) or the raw IXI BIDS folder (default: ../shared/data/ixi next to the
repository). Raw T1w are preprocessed here with ``data.preprocess.preprocess_subject`` (RAS, 2 mm,
skull-stripped with the DLMUSE label map > 0, cropped/padded to 96x112x96, 0.5/99.5 brain
percentiles -> [0, 1]), which is what ``brainsynth prepare`` does, into a temporary folder.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "ixi"


def _prepare_raw(source: Path, out: Path, progress: bool) -> Path:
    """Preprocess raw IXI T1w (skull-stripped by their label maps) into ``out``; returns a manifest."""
    from brainsynth.data.datasets import load_subjects
    from brainsynth.data.preprocess import preprocess_subject
    from brainsynth.io import Volume, read_volume, write_volume

    subjects = load_subjects(source)
    rows = ["subject\timage\tlabels"]
    it = subjects
    if progress:
        from tqdm import tqdm

        it = tqdm(subjects, desc="preprocess raw IXI", unit="vol")
    for s in it:
        if s.labels is None:
            continue
        t1 = read_volume(s.t1)
        lab = read_volume(s.labels, dtype=None)
        img, lab_p, _ = preprocess_subject(t1, lab, 2.0, (96, 112, 96))
        ip = write_volume(
            Volume(img.data.astype(np.float32), img.affine), out / f"{s.id}_T1w.nii.gz"
        )
        lp = write_volume(
            lab_p.with_data(lab_p.data.astype(np.uint16)), out / f"{s.id}_dseg.nii.gz"
        )
        rows.append(f"{s.id}\t{ip.name}\t{lp.name}")
    manifest = out / "manifest.tsv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def _ml(v: float | None) -> str:
    return "n/a" if v is None else f"{v / 1000:.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE)
    ap.add_argument(
        "--seed", type=int, default=0, help="seed of the split, pairs, GMM, permutations"
    )
    ap.add_argument("--n-pairs", type=int, default=100, help="MS-SSIM pairs per half")
    ap.add_argument("--permutations", type=int, default=500)
    ap.add_argument("--features-weights", type=Path, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=None, help="also write metrics.json here")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    from brainsynth.evaluation import anatomy, run
    from brainsynth.io import write_text_atomic
    from brainsynth.training.distributed import pick_device

    t0 = time.time()
    command = "python benchmarks/ixi_reference.py " + " ".join(
        shlex.quote(a) for a in (argv or sys.argv[1:])
    )
    source = args.source
    tmp = None
    if not (source / "manifest.tsv").exists() and source.suffix.lower() not in (".tsv", ".csv"):
        tmp = tempfile.TemporaryDirectory(prefix="ixi_ref_")
        source = _prepare_raw(source, Path(tmp.name), not args.no_progress)
        how = (
            f"raw BIDS {args.source} preprocessed here (preprocess_subject, labels > 0 skull strip)"
        )
    else:
        how = f"prepared cache {args.source}"
    t_prep = time.time() - t0

    items = run.list_inputs(source)
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(len(items))
    half = len(items) // 2
    a = [items[i] for i in sorted(perm[:half])]
    b = [items[i] for i in sorted(perm[half : 2 * half])]
    opts = run.EvalOptions(
        intensity="unit",
        features_weights=args.features_weights,
        n_pairs=args.n_pairs,
        n_permutations=args.permutations,
        seed=args.seed,
        device=str(pick_device(args.device)),
        progress=not args.no_progress,
        n_montage=0,
        command=command,
    )
    m, extras = run.evaluate_sets(a, b, opts, f"{args.source} half A", f"{args.source} half B")
    m["reference"] = {"source": how, "split_seed": args.seed, "n_half": half}

    # How well the label-free volumes track the label maps, over both halves.
    agreement = {}
    sets = extras["sets"]
    gmm = [*sets["real"].gmm, *sets["synthetic"].gmm]
    labs = [*sets["real"].labels, *sets["synthetic"].labels]
    if all(labs):
        for k in ("gm", "wm", "csf", "ventricles", "brain"):
            g = np.array([d[k] for d in gmm])
            ref = np.array([d[k] for d in labs])
            agreement[k] = {
                "pearson_r": float(np.corrcoef(g, ref)[0, 1]),
                "mean_ratio_gmm_over_labels": float(np.mean(g / ref)),
            }
        m["gmm_vs_labels"] = agreement
    elapsed = time.time() - t0
    m["timing_s"]["benchmark_total"] = round(elapsed, 1)
    m["timing_s"]["preprocess_raw"] = round(t_prep, 1)

    p = print
    p(f"command: {command}")
    p(f"data: {how}; {len(items)} subjects, halves of {half} (split seed {args.seed})")
    p(f"brainsynth {m['brainsynth_version']}; intensity {m['preprocessing']['intensity']}, "
      f"data range {m['preprocessing']['data_range']}; mask: {m['preprocessing']['mask']}")  # fmt: skip
    f, k = m["fid"], m["mmd"]
    p(f"features: {f['features']} (dim {f['dim']}; input: {m['features']['input']})")
    p(f"FID (half A vs half B): {f['fid']:.5g}  [{f['caveat']}]")
    p(
        f"MMD^2 Gaussian RBF, unbiased, bandwidth {k['bandwidth']:.4g} (median heuristic): "
        f"{k['mmd2_rbf_unbiased']:.4g}  (permutation p = {k['permutation_pvalue']:.3g}, "
        f"{k['n_permutations']} permutations)"
    )
    p(
        f"MMD^2 linear kernel, unbiased (MONAI's estimator; means only): {k['mmd2_linear_unbiased']:.4g}"
    )
    d = m["diversity_ms_ssim"]
    pr = d["params"]
    p(
        f"MS-SSIM diversity (whole volume, kernel {pr['kernel_size']}, sigma {pr['sigma']}, "
        f"{pr['levels']} levels): half A {d['real']['mean']:.4f} ± {d['real']['std']:.4f}, "
        f"half B {d['synthetic']['mean']:.4f} ± {d['synthetic']['std']:.4f} "
        f"({d['real']['n_pairs']} random pairs each, seed {d['seed']})"
    )
    p(
        f"intensity W1 (pooled histograms in brain mask): {m['intensity']['wasserstein1_pooled_histogram']:.4g}"
    )
    for est, block in m["anatomy"].items():
        p(f"volumes [{est}] (ml): mean ± sd half A | half B | KS (p) | W1")
        for key in anatomy.VOLUME_KEYS:
            c = block["volumes"][key]
            p(
                f"  {key:11s} {_ml(c['mean_real'])} ± {_ml(c['std_real'])} | "
                f"{_ml(c['mean_synthetic'])} ± {_ml(c['std_synthetic'])} | "
                f"{c['ks_statistic']:.3f} ({c['ks_pvalue']:.2g}) | {_ml(c['wasserstein1'])}"
            )
    if agreement:
        p("GMM vs label volumes over all subjects: " + ", ".join(
            f"{k} r={v['pearson_r']:.2f} ratio={v['mean_ratio_gmm_over_labels']:.2f}"
            for k, v in agreement.items()
        ))  # fmt: skip
    p(f"runtime: {elapsed:.0f} s total ({m['timing_s']})")
    if args.out:
        write_text_atomic(args.out / "metrics.json", run.metrics_json(m))
        p(f"wrote {args.out / 'metrics.json'}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
