"""Deform method on a cache's test split: atlas-to-subject registration and generated scans.

Registration (the template and its majority-vote labels registered to every test subject,
affinely aligned to the template first, on the run's grid): Dice of the major structures
(``evaluation.overlap``) of the warped template labels against the subject's own labels after
the affine alone, after our DiffuseMorph, after the same networks trained without the diffusion
term (``--ablation RUN``, a VoxelMorph-style network) and after SimpleITK's diffeomorphic demons
(``registration.classical``); % voxels with det J <= 0, std of log det J, seconds per pair.

Generation (``--samples N``): N scans with labels from the run (``methods.deform.sample``), their
folding, and the label volumes (brain, ventricles, GM, WM, hippocampus) against those of the real
test subjects in the same template space (KS and W1, ``evaluation.distribution.compare_scalars``);
the generated T1w and the aligned real test T1w are written to OUT/generated and OUT/real for
``brainsynth evaluate --real OUT/real --synthetic OUT/generated`` (FID/MMD/MS-SSIM: the ldm protocol).

    python benchmarks/deform_eval.py --run RUN --cache CACHE --out OUT [--ablation RUN2] \
        [--samples 16] [-n 16]

Prints the table and writes OUT/registration.tsv (per subject and method), OUT/summary.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch

from brainsynth.evaluation.deformation import jacobian_stats
from brainsynth.evaluation.distribution import compare_scalars
from brainsynth.evaluation.overlap import MAJOR_STRUCTURES, STRUCTURES, structure_dice
from brainsynth.io import Volume, read_volume, write_tsv_atomic, write_volume
from brainsynth.methods.deform import load_network, load_template, sample
from brainsynth.methods.deform.networks import OFFSET, SCALE
from brainsynth.methods.deform.template import align_split
from brainsynth.registration import fields
from brainsynth.registration.classical import register_demons
from brainsynth.registration.svf import jacobian_determinant, warp


def ours(model, template: torch.Tensor, tlab: torch.Tensor, image: np.ndarray):
    """(warped labels, det J, seconds) of a trained DiffuseMorph."""
    t0 = time.perf_counter()
    f = torch.from_numpy(image)[None, None].float() * SCALE + OFFSET
    with torch.no_grad():
        _, u = model(template, f)
        lab = warp(tlab, u, mode="nearest")[0, 0].round().numpy().astype(np.int64)
    secs = time.perf_counter() - t0
    return lab, jacobian_determinant(u)[0].numpy(), secs


def demons(template: np.ndarray, tlab: np.ndarray, image: np.ndarray):
    t0 = time.perf_counter()
    u = register_demons(image, template)
    secs = time.perf_counter() - t0
    lab = fields.warp(tlab.astype(np.float64), u.astype(np.float64), order=0).round()
    from brainsynth.evaluation.deformation import jacobian_determinant as jac_np

    return lab.astype(np.int64), jac_np(u), secs


def label_volumes(lab: np.ndarray, mm3: float) -> dict[str, float]:
    sets = MAJOR_STRUCTURES["dlmuse"]
    out = {"brain": float((lab > 0).sum() * mm3 / 1000)}
    for name in ("ventricles", "grey_matter", "white_matter", "hippocampus"):
        out[name] = float(np.isin(lab, list(sets[name])).sum() * mm3 / 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--cache", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--ablation", type=Path, help="a run trained with loss.diffusion=0")
    ap.add_argument("--split", default="test")
    ap.add_argument("-n", type=int, default=16, help="test subjects")
    ap.add_argument("--samples", type=int, default=16, help="generated scans (0: none)")
    ap.add_argument("--no-demons", action="store_true")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_grad_enabled(False)

    cfg, model, _ = load_network(args.run, "register")
    template, tdseg = load_template(args.run)
    if tdseg is None:
        raise SystemExit("the run's template has no label map: Dice needs one")
    models = {"diffusemorph": model}
    if args.ablation is not None:
        models["ablation"] = load_network(args.ablation, "register")[1]
    t_img = torch.from_numpy(template.data)[None, None].float() * SCALE + OFFSET
    t_lab = torch.from_numpy(tdseg.data.astype(np.float32))[None, None]

    t0 = time.perf_counter()
    test = align_split(args.cache, args.split, cfg.data.downsample, template)
    align_s = (time.perf_counter() - t0) / len(test.ids)
    if test.labels is None:
        raise SystemExit("the test subjects have no label maps")
    rows = []
    for k, sid in enumerate(test.ids[: args.n]):
        img = test.images[k, 0].numpy()
        truth = test.labels[k, 0].numpy()
        results = {"affine": (tdseg.data.astype(np.int64), np.ones_like(img), align_s)}
        for name, m in models.items():
            results[name] = ours(m, t_img, t_lab, img)
        if not args.no_demons:
            results["demons"] = demons(template.data, tdseg.data, img)
        brain = truth > 0
        for method, (lab, det, secs) in results.items():
            d = structure_dice(lab, truth, "dlmuse")
            st = jacobian_stats(det, brain)
            rows.append(
                {"subject": sid, "method": method, "seconds": round(secs, 3),
                 "folding_percent": st["folding_percent"], "std_log_det": st["std_log_det"],
                 **{s: d[s] for s in (*STRUCTURES, "mean")}}
            )  # fmt: skip
        print(
            sid,
            {m: round(r["mean"], 3) for m, r in ((r["method"], r) for r in rows[-len(results) :])},
        )
    write_tsv_atomic(args.out / "registration.tsv", rows)

    methods = list(dict.fromkeys(r["method"] for r in rows))
    summary: dict = {"subjects": min(args.n, len(test.ids)), "registration": {}}
    print(f"\n{'method':14s} {'mean Dice':>10s} " + " ".join(f"{s[:8]:>8s}" for s in STRUCTURES)
          + f" {'fold %':>8s} {'sd logJ':>8s} {'s/pair':>7s}")  # fmt: skip
    for m in methods:
        sel = [r for r in rows if r["method"] == m]
        agg = {s: float(np.nanmean([r[s] for r in sel])) for s in (*STRUCTURES, "mean")}
        agg["mean_sd"] = float(np.nanstd([r["mean"] for r in sel]))
        agg["folding_percent"] = float(np.mean([r["folding_percent"] for r in sel]))
        sd = [r["std_log_det"] for r in sel if r["std_log_det"] is not None]
        agg["std_log_det"] = float(np.mean(sd)) if sd else None
        agg["seconds"] = float(np.mean([r["seconds"] for r in sel]))
        summary["registration"][m] = agg
        print(f"{m:14s} {agg['mean']:10.3f} " + " ".join(f"{agg[s]:8.3f}" for s in STRUCTURES)
              + f" {agg['folding_percent']:8.4f} {agg['std_log_det'] or 0:8.3f} {agg['seconds']:7.2f}")  # fmt: skip

    if args.samples > 0:
        gen = args.out / "generated_raw"
        t0 = time.perf_counter()
        sample(args.run, gen, n=args.samples, overwrite=True)
        gen_s = (time.perf_counter() - t0) / args.samples
        mm3 = float(abs(np.linalg.det(template.affine[:3, :3])))
        (args.out / "generated").mkdir(exist_ok=True)
        (args.out / "real").mkdir(exist_ok=True)
        real_v = [label_volumes(test.labels[k, 0].numpy(), mm3) for k in range(len(test.ids))]
        gen_v, folds = [], []
        for p in sorted(gen.glob("sample_*_dseg.nii.gz")):
            gen_v.append(label_volumes(read_volume(p, dtype=None).data.astype(np.int64), mm3))
        for p in sorted(gen.glob("sample_*_T1w.nii.gz")):
            (args.out / "generated" / p.name).write_bytes(p.read_bytes())
        with open(gen / "samples.tsv") as fh:
            folds = [int(r["folding_voxels"]) for r in csv.DictReader(fh, delimiter="\t")]
        for k, sid in enumerate(test.ids):
            write_volume(Volume(test.images[k, 0].numpy(), template.affine),
                         args.out / "real" / f"{sid}_T1w.nii.gz")  # fmt: skip
        volumes = {
            name: compare_scalars([v[name] for v in real_v], [v[name] for v in gen_v])
            for name in real_v[0]
        }
        summary["generation"] = {
            "samples": args.samples, "seconds_per_sample": gen_s,
            "folding_voxels_total": int(sum(folds)), "label_volumes_ml": volumes,
        }  # fmt: skip
        print(f"\ngenerated: {args.samples} scans, {gen_s:.2f} s each, folding voxels {sum(folds)}")
        for name, c in volumes.items():
            print(f"  {name:13s} real {c['mean_real']:8.1f} +- {c['std_real']:6.1f} ml   generated "
                  f"{c['mean_synthetic']:8.1f} +- {c['std_synthetic'] or 0:6.1f} ml   "
                  f"KS {c['ks_statistic']:.2f} (p {c['ks_pvalue']:.3f})")  # fmt: skip
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))


if __name__ == "__main__":
    main()
