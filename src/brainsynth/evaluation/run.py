"""The evaluation run behind ``brainsynth evaluate``: read two sets of volumes, compute every metric,
write ``metrics.json`` (atomically), ``per_subject.tsv`` / ``per_pair.tsv`` and ``report.html``.

Two modes:

``evaluate_sets`` (real vs synthetic, unpaired)
    see :mod:`brainsynth.evaluation.sets`.
``evaluate_paired`` (restoration outputs vs ground truth)
    see :mod:`brainsynth.evaluation.paired`.

Inputs and their preprocessing (RAS, intensity mapping): :mod:`brainsynth.evaluation.inputs`;
options, ``data_range`` and the brain mask: :mod:`brainsynth.evaluation.options`. The names of
those modules used by callers are re-exported here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from brainsynth.evaluation import anatomy
from brainsynth.evaluation.inputs import VOLUME_SUFFIXES as VOLUME_SUFFIXES
from brainsynth.evaluation.inputs import Intensity as Intensity
from brainsynth.evaluation.inputs import Item as Item
from brainsynth.evaluation.inputs import _list_volumes as _list_volumes
from brainsynth.evaluation.inputs import list_inputs as list_inputs
from brainsynth.evaluation.inputs import load_image as load_image
from brainsynth.evaluation.options import EvalOptions as EvalOptions
from brainsynth.evaluation.paired import _pair_key as _pair_key
from brainsynth.evaluation.paired import evaluate_paired as evaluate_paired
from brainsynth.evaluation.paired import match_pairs as match_pairs
from brainsynth.evaluation.sets import HIST_BINS as HIST_BINS
from brainsynth.evaluation.sets import SetSummary as SetSummary
from brainsynth.evaluation.sets import evaluate_sets as evaluate_sets
from brainsynth.io import write_text_atomic, write_tsv_atomic
from brainsynth.io.outdir import claim_output_dir

# --- outputs -----------------------------------------------------------------------------------


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, Path):
        return str(obj)
    return obj


def metrics_json(metrics: dict) -> str:
    return json.dumps(_jsonable(metrics), indent=1)


def per_subject_rows(extras: dict) -> list[dict]:
    rows = []
    for name, s in extras["sets"].items():
        for i, item in enumerate(s.items):
            row = {"set": name, "id": item.id, "image": str(item.image)}
            row["mean_intensity_in_mask"] = s.mean_intensity[i]
            if s.gmm:
                row.update({f"gmm_{k}_mm3": s.gmm[i][k] for k in anatomy.VOLUME_KEYS})
            if s.labels and s.labels[i]:
                row.update({f"labels_{k}_mm3": s.labels[i][k] for k in anatomy.VOLUME_KEYS})
            rows.append(row)
    return rows


# what an evaluation writes, and so what --overwrite may replace
REPORT_FILES = ("metrics.json", "report.html", "per_pair.tsv", "per_subject.tsv", "figures")


def run_evaluation(
    real_path: str | Path,
    synthetic_path: str | Path,
    out_dir: str | Path,
    opts: EvalOptions | None = None,
    paired: bool = False,
    log: Callable[[str], None] | None = None,
    overwrite: bool = False,
) -> dict:
    """Read both inputs, evaluate, write metrics.json, per_subject.tsv/per_pair.tsv, figures/ and
    report.html into ``out_dir``, which must be empty unless ``overwrite`` (then an earlier
    report there is removed first). Returns the metrics."""
    from brainsynth.evaluation.report import write_report

    opts = opts or EvalOptions()
    out = claim_output_dir(out_dir, REPORT_FILES, overwrite=overwrite)
    real = list_inputs(real_path)
    synthetic = list_inputs(synthetic_path)
    if log:
        log(
            f"real: {len(real)} volumes from {real_path}; synthetic: {len(synthetic)} from {synthetic_path}"
        )
    if paired:
        metrics, extras = evaluate_paired(real, synthetic, opts, real_path, synthetic_path)
        write_tsv_atomic(out / "per_pair.tsv", extras["rows"])
    else:
        metrics, extras = evaluate_sets(real, synthetic, opts, real_path, synthetic_path)
        write_tsv_atomic(out / "per_subject.tsv", per_subject_rows(extras))
    write_text_atomic(out / "metrics.json", metrics_json(metrics))
    write_report(metrics, extras, out)
    return metrics
