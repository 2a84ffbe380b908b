"""The ``eval.json`` shipped with a model (``brainsynth export --eval``): the headline figures of the
method's benchmark outputs, in one small JSON, with the commands that produced them.

    python benchmarks/model_evals.py restore --tsv DIR/x3.tsv [DIR/x3_bias.tsv ...] --out EVAL
    python benchmarks/model_evals.py cortex --summary DIR/summary.json --out EVAL
    python benchmarks/model_evals.py deform --summary DIR/summary.json --metrics DIR/eval/metrics.json
        [--conditioning DIR/summary_ventricle_volume.json ...] --out EVAL
    python benchmarks/model_evals.py ldm --metrics DIR/metrics.json
        [--conditioning DIR/summary_ventricle_volume.json ...] --out EVAL

restore: per setting and method, the median MAE / PSNR / SSIM / seconds / network evaluations of
``restore_eval.py``'s per-scan rows (and the scan count). cortex: ``cortex_eval.py``'s medians and
quartiles of each run. deform: ``deform_eval.py``'s mean Dice, folding and log-Jacobian spread per
registration method, and the generation's evaluation suite figures. ldm / deform: the evaluation
suite's FID, MMD and diversity (``brainsynth evaluate``) and the conditioning sweeps' slopes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from brainsynth.io import read_tsv

RESTORE_COLS = ("mae", "psnr", "ssim", "seconds", "nfe")
SUITE = {  # evaluation suite figure -> its path in metrics.json
    "fid": ("fid", "fid"),
    "mmd2_rbf_unbiased": ("mmd", "mmd2_rbf_unbiased"),
    "mmd_permutation_pvalue": ("mmd", "permutation_pvalue"),
    "ms_ssim_within_synthetic": ("diversity_ms_ssim", "synthetic", "mean"),
    "ms_ssim_within_real": ("diversity_ms_ssim", "real", "mean"),
    "n_real": ("fid", "n_real"),
    "n_synthetic": ("fid", "n_synthetic"),
}
SWEEP_KEYS = ("covariate", "levels", "n_per_level", "guidance", "slope", "r", "per_level_mean_ml")
SWEEP_KEYS += ("real_slope", "real_r", "calibrated_slope", "calibrated_ml", "ceiling_slope")


def _load(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def _dig(body: dict, keys: tuple[str, ...]):
    for k in keys:
        if not isinstance(body, dict) or k not in body:
            return None
        body = body[k]
    return body


def restore_figures(tsvs: list[str]) -> dict:
    """{setting: {method: {column: median, "scans": n}}} of restore_eval.py's rows."""
    rows = [r for t in tsvs for r in read_tsv(t)]
    out: dict = {}
    for r in rows:
        out.setdefault(r["setting"], {}).setdefault(r["method"], []).append(r)
    for methods in out.values():
        for method, rs in methods.items():
            fig: dict = {"scans": len(rs)}
            for c in RESTORE_COLS:
                vals = [float(r[c]) for r in rs if r.get(c) not in (None, "")]
                if vals:
                    fig[f"median_{c}"] = round(float(np.median(vals)), 4)
            methods[method] = fig
    return out


def cortex_figures(summary: dict) -> dict:
    """Medians (quartiles) per run of cortex_eval.py, and its runs' steps."""
    runs = {k: {"step": v.get("step"), "kind": v.get("kind")} for k, v in summary["runs"].items()}
    return {"runs": runs, "settings": summary.get("settings"), "medians": summary["medians"]}


def suite_figures(metrics: dict) -> dict:
    return {k: _dig(metrics, path) for k, path in SUITE.items()}


def sweep_figures(paths: list[str]) -> list[dict]:
    return [{k: v for k, v in _load(p).items() if k in SWEEP_KEYS} for p in paths]


def deform_figures(summary: dict) -> dict:
    keys = ("mean", "mean_sd", "folding_percent", "std_log_det", "seconds")
    reg = {m: {k: v.get(k) for k in keys} for m, v in summary["registration"].items()}
    gen = summary.get("generation", {})
    return {
        "subjects": summary.get("subjects"),
        "registration_dice": reg,
        "generation": {k: gen.get(k) for k in ("samples", "seconds_per_sample")},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("method", choices=("restore", "cortex", "deform", "ldm"))
    p.add_argument("--tsv", nargs="+", default=[], help="restore_eval.py per-scan tables")
    p.add_argument("--summary", help="cortex_eval.py / deform_eval.py summary.json")
    p.add_argument("--metrics", help="the evaluation suite's metrics.json")
    p.add_argument("--conditioning", nargs="+", default=[], help="conditioning summaries")
    p.add_argument("--command", action="append", default=[], help="command(s) to record")
    p.add_argument("--machine", default="2 AVX2 cores (AMD EPYC), fp32, torch 2.13.0+cpu")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    body: dict = {"method": a.method, "machine": a.machine, "commands": a.command}
    if a.method == "restore":
        body["test_split"] = restore_figures(a.tsv)
    if a.method == "cortex":
        body["test_split"] = cortex_figures(_load(a.summary))
    if a.method == "deform":
        body["test_split"] = deform_figures(_load(a.summary))
    if a.metrics:
        body["evaluation_suite"] = suite_figures(_load(a.metrics))
    if a.conditioning:
        body["conditioning"] = sweep_figures(a.conditioning)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(body, indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
