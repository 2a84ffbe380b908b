"""Paired mode of ``brainsynth evaluate --paired`` (restoration outputs vs ground truth).

Volumes are matched by subject id (exact, else after removing a trailing ``_T1w``/``_restored``/...
token); MAE/PSNR/SSIM/MS-SSIM/4-G-R-SSIM over the whole volume and inside the reference's mask.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from brainsynth.errors import InputError
from brainsynth.evaluation import anatomy, image
from brainsynth.evaluation.inputs import Item, _maybe_tqdm, load_image
from brainsynth.evaluation.options import EvalOptions, _data_range, _header, _preprocessing

_PAIR_TOKENS = ("T1w", "t1", "restored", "restore", "pred", "prediction", "recon", "output", "gt")


def _pair_key(sid: str) -> str:
    key = sid
    changed = True
    while changed:
        changed = False
        for tok in _PAIR_TOKENS:
            m = re.match(rf"^(.*?)[_\-.]{re.escape(tok)}$", key, flags=re.IGNORECASE)
            if m and m.group(1):
                key, changed = m.group(1), True
    return key


def match_pairs(
    real: Sequence[Item], synthetic: Sequence[Item]
) -> tuple[list[tuple[Item, Item]], list[str], list[str]]:
    """Pairs by exact id, then by id without trailing ``_T1w``/``_restored``/``_pred``/... tokens.
    Returns (pairs, unmatched real ids, unmatched synthetic ids)."""
    by_id = {i.id: i for i in real}
    pairs, rest = [], []
    for it in synthetic:
        (pairs.append((by_id.pop(it.id), it)) if it.id in by_id else rest.append(it))
    keyed: dict[str, Item] = {}
    for it in by_id.values():
        keyed.setdefault(_pair_key(it.id), it)
    unmatched_s = []
    for it in rest:
        ref = keyed.pop(_pair_key(it.id), None)
        (pairs.append((ref, it)) if ref is not None else unmatched_s.append(it.id))
    used = {id(p[0]) for p in pairs}
    unmatched_r = [i.id for i in real if id(i) not in used]
    return pairs, unmatched_r, unmatched_s


def _summ(values: list[float]) -> dict:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    n_inf = sum(1 for x in values if x is not None and math.isinf(x))
    return {
        "mean": float(v.mean()) if v.size else None,
        "std": float(v.std(ddof=1)) if v.size > 1 else None,
        "median": float(np.median(v)) if v.size else None,
        "n": int(v.size),
        **({"n_infinite": n_inf} if n_inf else {}),
    }


def _pair_metrics(
    ref_item: Item, test_item: Item, opts: EvalOptions, data_range: float
) -> tuple[dict, np.ndarray, np.ndarray]:
    """(per-pair row of metrics, reference array, test array) of one matched pair."""
    ref, ref_vol = load_image(ref_item, opts.intensity)
    test, test_vol = load_image(test_item, opts.intensity)
    if ref.shape != test.shape or not ref_vol.same_grid(test_vol):
        raise InputError(
            test_item.image,
            f"grid {test.shape} differs from its reference {ref_item.image} {ref.shape} "
            "(shape or affine): paired metrics need volumes on the same grid",
        )
    mask = anatomy.brain_mask_from_intensity(ref, opts.mask_threshold)
    m = image.paired_metrics(ref, test, data_range, mask if mask.any() else None)
    row = {"id": ref_item.id, "reference": str(ref_item.image), "test": str(test_item.image)}
    for region, vals in m.items():
        for k, v in vals.items():
            row[f"{region}_{k}"] = v
    return row, ref, test


def _paired_summary(
    out: dict, rows: list[dict], counts: dict, un_r: list[str], un_s: list[str]
) -> None:
    """Fill ``out`` (the header) with the inputs' counts, per-metric summaries and warnings."""
    out["inputs"].update({**counts, "unmatched_real": un_r, "unmatched_synthetic": un_s})
    keys = [k for k in rows[0] if k not in ("id", "reference", "test")]
    out["summary"] = {k: _summ([r[k] for r in rows]) for k in keys}
    out["warnings"] = (
        [f"{len(un_r)} real and {len(un_s)} synthetic volumes had no partner"]
        if un_r or un_s
        else []
    )


def evaluate_paired(
    real: Sequence[Item],
    synthetic: Sequence[Item],
    opts: EvalOptions | None = None,
    real_path: str | Path = "",
    synthetic_path: str | Path = "",
) -> tuple[dict, dict]:
    """Paired metrics (``synthetic`` = restored/predicted, ``real`` = ground truth)."""
    opts = opts or EvalOptions()
    t0 = time.time()
    pairs, un_r, un_s = match_pairs(real, synthetic)
    if not pairs:
        raise InputError(
            synthetic_path or None,
            f"no volume matched by name (real e.g. {[i.id for i in real[:3]]}, synthetic e.g. "
            f"{[i.id for i in synthetic[:3]]})",
        )
    data_range, why = _data_range([p[0] for p in pairs], opts)
    rows: list[dict] = []
    bar = _maybe_tqdm(len(pairs), "paired metrics", opts.progress)
    montage: list[np.ndarray] = []
    titles: list[str] = []
    settings = None
    for ref_item, test_item in pairs:
        row, ref, test = _pair_metrics(ref_item, test_item, opts, data_range)
        settings = settings or image.paired_settings(ref.shape, data_range)
        rows.append(row)
        if len(montage) < 2 * opts.n_montage:
            montage += [ref, test]
            titles += [f"reference {ref_item.id}", f"test {test_item.id}"]
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    out = _header(opts, "paired", real_path, synthetic_path)
    counts = {"n_pairs": len(pairs), "n_real": len(real), "n_synthetic": len(synthetic)}
    out["preprocessing"] = _preprocessing(opts, data_range, why)
    out["preprocessing"]["mask"] += " (of the reference)"
    out["settings"] = settings
    _paired_summary(out, rows, counts, un_r, un_s)
    out["timing_s"] = {"total": round(time.time() - t0, 2)}
    return out, {"rows": rows, "montage": montage, "titles": titles}
