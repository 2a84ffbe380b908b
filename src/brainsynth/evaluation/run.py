"""The evaluation run behind ``brainsynth evaluate``: read two sets of volumes, compute every metric,
write ``metrics.json`` (atomically), ``per_subject.tsv`` / ``per_pair.tsv`` and ``report.html``.

Two modes:

``evaluate_sets`` (real vs synthetic, unpaired)
    per volume: features (FID/MMD), tissue volumes (GMM; and label volumes when every volume of both
    sets has a label map), intensity histogram inside the brain mask; per set: MS-SSIM over random
    pairs (diversity; whole volumes, fixed seed, ``n_pairs`` stated).
``evaluate_paired`` (restoration outputs vs ground truth)
    volumes matched by subject id (exact, else after removing a trailing ``_T1w``/``_restored``/...
    token), MAE/PSNR/SSIM/MS-SSIM/4-G-R-SSIM over the whole volume and inside the reference's mask.

Preprocessing, identical for both sets: reorient to RAS (exact axis permutation), intensities mapped
by ``intensity``:

``unit`` (default)
    uint8 files are divided by 255 (the cache's storage); other files must already lie in [0, 1]
    (±0.01), else an error says to choose ``robust`` or ``raw``. ``data_range = 1``.
``robust``
    each volume divided by the 99.5th percentile of its positive voxels, clipped to [0, 1].
    ``data_range = 1``.
``raw``
    values as stored; ``data_range`` given, or max - min over the real set (stated in the output).

Brain mask: ``intensity > mask_threshold`` (after the mapping), holes filled, largest component.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np

from brainsynth import __version__
from brainsynth.data.datasets import volume_stem
from brainsynth.errors import InputError
from brainsynth.evaluation import anatomy, distribution, image
from brainsynth.io import Volume, read_volume, write_text_atomic

Intensity = Literal["unit", "robust", "raw"]
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mgz")
_PAIR_TOKENS = ("T1w", "t1", "restored", "restore", "pred", "prediction", "recon", "output", "gt")


@dataclass
class Item:
    """One input volume: ``id`` (subject or file stem), ``image`` path, optional ``labels`` path."""

    id: str
    image: Path
    labels: Path | None = None


@dataclass
class EvalOptions:
    intensity: Intensity = "unit"
    data_range: float | None = None
    mask_threshold: float = 0.05
    features_weights: Path | None = None
    features: bool = True
    anatomy: bool = True
    diversity: bool = True
    n_pairs: int = 100
    n_permutations: int = 500
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    n_montage: int = 4
    memory_budget_gb: float = 2.0
    command: str | None = None  # the command line that asked for this run (recorded in outputs)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["features_weights"] = (
            None if self.features_weights is None else str(self.features_weights)
        )
        return d


# --- inputs ------------------------------------------------------------------------------------


def _list_volumes(path: str | Path) -> list[Item]:
    """Fallback reader: a folder of ``*.nii``/``*.nii.gz``/``*.mgz`` (``*_dseg`` files are taken as
    label maps of the same stem) or a CSV/TSV manifest with an ``image`` or ``t1`` column (optional
    ``subject`` and ``labels``; relative paths resolved against the manifest's folder)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "not found")
    if path.is_dir() and (path / "manifest.tsv").exists():
        path = path / "manifest.tsv"
    if path.is_file():
        if path.suffix.lower() not in (".csv", ".tsv"):
            raise InputError(path, "expected a folder of NIfTI files or a .csv/.tsv manifest")
        delim = "," if path.suffix.lower() == ".csv" else "\t"
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh, delimiter=delim))
        if not rows:
            raise InputError(path, "manifest has no rows")
        col = "image" if "image" in rows[0] else "t1" if "t1" in rows[0] else None
        if col is None:
            raise InputError(path, f"manifest needs an 'image' or 't1' column; has {list(rows[0])}")
        items = []
        for i, r in enumerate(rows):
            img = path.parent / r[col]
            lab = r.get("labels") or ""
            sid = r.get("subject") or volume_stem(img) or f"row{i + 2}"
            items.append(Item(sid, img, path.parent / lab if lab and lab != "n/a" else None))
        return items
    files = sorted(
        p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES)
    )
    labels = {volume_stem(p)[: -len("_dseg")]: p for p in files if volume_stem(p).endswith("_dseg")}
    items = [
        Item(volume_stem(p), p, labels.get(volume_stem(p)))
        for p in files
        if not volume_stem(p).endswith("_dseg")
    ]
    if not items:
        raise InputError(path, "no NIfTI/MGZ volumes found")
    return items


def list_inputs(path: str | Path) -> list[Item]:
    """Volumes of a folder, BIDS folder or manifest: ``brainsynth.data.datasets.load_subjects`` when
    available (BIDS, manifests, folders), else :func:`_list_volumes`."""
    try:
        from brainsynth.data.datasets import load_subjects
    except ImportError:  # pragma: no cover - the data layer is part of the package
        return _list_volumes(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unknown manifest columns etc. do not matter here
        subjects = load_subjects(path)
    return [Item(s.id, Path(s.t1), None if s.labels is None else Path(s.labels)) for s in subjects]


def load_image(item: Item, intensity: Intensity) -> tuple[np.ndarray, Volume]:
    """(RAS float32 array mapped by ``intensity``, the RAS Volume as read)."""
    from brainsynth.data.preprocess import reorient_ras

    vol = reorient_ras(read_volume(item.image, dtype=None))
    raw = vol.data
    x = raw.astype(np.float32)
    if intensity == "unit":
        if raw.dtype == np.uint8:
            x = x / 255.0
        elif x.size and (x.min() < -0.01 or x.max() > 1.01):
            raise InputError(
                item.image,
                f"intensities {x.min():.3g}..{x.max():.3g} are not in [0, 1] (and not uint8): "
                "use --intensity robust (per-volume 99.5th percentile -> 1) or --intensity raw",
            )
        x = np.clip(x, 0.0, 1.0)
    elif intensity == "robust":
        pos = x[x > 0]
        hi = float(np.percentile(pos, 99.5)) if pos.size else 1.0
        x = np.clip(x / (hi if hi > 0 else 1.0), 0.0, 1.0)
    elif intensity != "raw":
        raise ValueError(f"unknown intensity mode {intensity!r}")
    return np.ascontiguousarray(x, dtype=np.float32), vol


def _maybe_tqdm(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="vol", dynamic_ncols=True, leave=False)


class _VolumeStore:
    """Arrays of one set: kept in memory within a budget, re-read from disk beyond it."""

    def __init__(self, items: Sequence[Item], intensity: Intensity, budget_bytes: float):
        self.items, self.intensity, self.budget = list(items), intensity, budget_bytes
        self.kept: dict[int, np.ndarray] = {}
        self.used = 0.0

    def offer(self, i: int, x: np.ndarray) -> None:
        if self.used + x.nbytes <= self.budget:
            self.kept[i] = x
            self.used += x.nbytes

    def get(self, i: int) -> np.ndarray:
        if i in self.kept:
            return self.kept[i]
        return load_image(self.items[i], self.intensity)[0]


# --- per-volume pass ---------------------------------------------------------------------------

HIST_BINS = 100


@dataclass
class SetSummary:
    name: str
    items: list[Item]
    store: _VolumeStore
    features: list[np.ndarray] = field(default_factory=list)
    gmm: list[dict] = field(default_factory=list)
    labels: list[dict | None] = field(default_factory=list)
    hist: np.ndarray = field(default_factory=lambda: np.zeros(HIST_BINS))
    hist_range: tuple[float, float] = (0.0, 1.0)
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    spacings: list[tuple[float, ...]] = field(default_factory=list)
    mean_intensity: list[float] = field(default_factory=list)
    montage: list[np.ndarray] = field(default_factory=list)


def _scan_set(
    name: str,
    items: Sequence[Item],
    opts: EvalOptions,
    extractor,
    hist_range: tuple[float, float],
    want_labels: bool,
) -> SetSummary:
    store = _VolumeStore(items, opts.intensity, opts.memory_budget_gb * 2**30 / 2)
    s = SetSummary(name, list(items), store, hist_range=hist_range)
    bar = _maybe_tqdm(len(items), f"{name}: features/anatomy", opts.progress)
    for i, item in enumerate(items):
        x, vol = load_image(item, opts.intensity)
        store.offer(i, x)
        mask = anatomy.brain_mask_from_intensity(x, opts.mask_threshold)
        if not mask.any():
            raise InputError(item.image, f"no voxel above --mask-threshold {opts.mask_threshold}")
        s.shapes.append(tuple(x.shape))
        s.spacings.append(tuple(float(v) for v in vol.spacing))
        s.mean_intensity.append(float(x[mask].mean()))
        s.hist += np.histogram(x[mask], bins=HIST_BINS, range=hist_range)[0]
        if extractor is not None:
            s.features.append(extractor(x, mask))
        if opts.anatomy:
            vv = float(np.prod(vol.spacing))
            s.gmm.append(
                anatomy.tissue_volumes_gmm(x, vv, mask=mask, seed=opts.seed, spacing=vol.spacing)
            )
            if want_labels and item.labels is not None:
                lab = read_volume(item.labels, dtype=None)
                s.labels.append(anatomy.tissue_volumes_from_labels(lab.data, lab.affine))
            else:
                s.labels.append(None)
        if len(s.montage) < opts.n_montage:
            s.montage.append(x)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return s


def _diversity(s: SetSummary, opts: EvalOptions, data_range: float) -> dict:
    if len(set(s.shapes)) > 1:
        return {"skipped": f"volumes of {s.name} have different shapes {sorted(set(s.shapes))}"}
    if len(s.items) < 2:
        return {"skipped": f"{s.name} has fewer than 2 volumes"}
    params = image.ms_ssim_params(s.shapes[0])
    pairs = distribution.random_pairs(len(s.items), opts.n_pairs, opts.seed)
    bar = _maybe_tqdm(len(pairs), f"{s.name}: MS-SSIM pairs", opts.progress)
    res = distribution.pairwise_similarity(
        s.store.get,
        pairs,
        lambda a, b: image.ms_ssim(a, b, data_range, params=params),
        None if bar is None else bar.update,
    )
    if bar is not None:
        bar.close()
    res["pairs"] = [list(p) for p in pairs]
    return res


def _hist_w1(a: np.ndarray, b: np.ndarray, rng: tuple[float, float]) -> float:
    from scipy.stats import wasserstein_distance

    edges = np.linspace(rng[0], rng[1], HIST_BINS + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    if a.sum() == 0 or b.sum() == 0:
        return math.nan
    return float(wasserstein_distance(centres, centres, a, b))


def _data_range(real: Sequence[Item], opts: EvalOptions) -> tuple[float, str]:
    if opts.intensity != "raw":
        return 1.0, f"1 (intensity mode {opts.intensity!r}: images in [0, 1])"
    if opts.data_range is not None:
        return float(opts.data_range), "given (--data-range)"
    lo, hi = math.inf, -math.inf
    for item in real:
        x = load_image(item, "raw")[0]
        lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))
    return hi - lo, "max - min over the real set"


def _header(opts: EvalOptions, mode: str, real_path, synth_path) -> dict:
    return {
        "brainsynth_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": opts.command,
        "mode": mode,
        "inputs": {"real": str(real_path), "synthetic": str(synth_path)},
        "options": opts.to_dict(),
    }


def _preprocessing(opts: EvalOptions, data_range: float, why: str) -> dict:
    return {
        "orientation": "RAS (exact axis permutation of the stored array)",
        "intensity": opts.intensity,
        "data_range": data_range,
        "data_range_source": why,
        "mask": (
            f"intensity > {opts.mask_threshold} after intensity mapping, holes filled, "
            "largest 26-connected component"
        ),
    }


def evaluate_sets(
    real: Sequence[Item],
    synthetic: Sequence[Item],
    opts: EvalOptions | None = None,
    real_path: str | Path = "",
    synthetic_path: str | Path = "",
) -> tuple[dict, dict]:
    """Real-vs-synthetic metrics. Returns ``(metrics, extras)``: ``metrics`` is what goes into
    metrics.json; ``extras`` holds arrays for the report (features, montages, histograms)."""
    from brainsynth.evaluation.features import load_extractor

    opts = opts or EvalOptions()
    if len(real) < 2 or len(synthetic) < 2:
        raise InputError(
            None, f"need >= 2 volumes per set (real {len(real)}, synthetic {len(synthetic)})"
        )
    t0 = time.time()
    timing: dict[str, float] = {}
    data_range, why = _data_range(real, opts)
    hist_range = (0.0, 1.0) if opts.intensity != "raw" else (0.0, data_range)
    extractor = (
        load_extractor(opts.features_weights, opts.device, opts.seed) if opts.features else None
    )
    want_labels = all(i.labels is not None for i in [*real, *synthetic])
    sets = {}
    for name, items in (("real", real), ("synthetic", synthetic)):
        t = time.time()
        sets[name] = _scan_set(name, items, opts, extractor, hist_range, want_labels)
        timing[f"scan_{name}"] = time.time() - t
    r, s = sets["real"], sets["synthetic"]
    out = _header(opts, "sets", real_path, synthetic_path)
    out["inputs"].update({"n_real": len(real), "n_synthetic": len(synthetic)})
    out["preprocessing"] = _preprocessing(opts, data_range, why)
    warn: list[str] = []
    if set(r.shapes) != set(s.shapes):
        warn.append(
            f"grid shapes differ between sets (real {sorted(set(r.shapes))}, synthetic "
            f"{sorted(set(s.shapes))}): features and diversity are not comparable on equal terms"
        )
    if not np.allclose(np.mean(r.spacings, 0), np.mean(s.spacings, 0), atol=1e-3):
        warn.append("voxel sizes differ between sets: volumes are in mm^3 but textures differ")

    if extractor is not None:
        t = time.time()
        fr, fs = np.stack(r.features), np.stack(s.features)
        out["features"] = extractor.describe()
        out["fid"] = {**distribution.fid_report(fr, fs), "features": extractor.name}
        mmd = distribution.mmd_report(fr, fs, opts.n_permutations, opts.seed)
        out["mmd"] = {**mmd, "features": extractor.name}
        timing["fid_mmd"] = time.time() - t

    if opts.diversity:
        t = time.time()
        params = image.ms_ssim_params(s.shapes[0]) if len(set(s.shapes)) == 1 else None
        out["diversity_ms_ssim"] = {
            "description": (
                "MS-SSIM between random distinct pairs within each set, whole volumes "
                "(lower = more diverse); pairs drawn with numpy default_rng(seed)"
            ),
            "seed": opts.seed,
            "n_pairs_requested": opts.n_pairs,
            "data_range": data_range,
            "params": None if params is None else params.to_dict(),
            "synthetic": _diversity(s, opts, data_range),
            "real": _diversity(r, opts, data_range),
        }
        timing["diversity"] = time.time() - t

    out["intensity"] = {
        "description": "intensities inside the brain masks, pooled per set",
        "wasserstein1_pooled_histogram": _hist_w1(r.hist, s.hist, hist_range),
        "histogram_bins": HIST_BINS,
        "histogram_range": list(hist_range),
        "mean_in_mask": distribution.compare_scalars(r.mean_intensity, s.mean_intensity),
    }

    if opts.anatomy:
        est: dict[str, dict] = {}
        est["gmm"] = {
            "description": anatomy.GMM_DESCRIPTION,
            "units": "mm^3",
            "volumes": {
                k: distribution.compare_scalars([g[k] for g in r.gmm], [g[k] for g in s.gmm])
                for k in anatomy.VOLUME_KEYS
            },
        }
        if want_labels:
            schemes = sorted({d["scheme"] for d in [*r.labels, *s.labels] if d})
            est["labels"] = {
                "description": "label maps (FreeSurfer or DLMUSE numbering; see evaluation.anatomy)",
                "schemes": schemes,
                "units": "mm^3",
                "volumes": {
                    k: distribution.compare_scalars(
                        [d[k] for d in r.labels if d], [d[k] for d in s.labels if d]
                    )
                    for k in anatomy.VOLUME_KEYS
                },
            }
            if len(schemes) > 1:
                warn.append(
                    f"label schemes differ between volumes ({schemes}): GM/WM definitions differ"
                )
        out["anatomy"] = est
    out["warnings"] = warn
    timing["total"] = time.time() - t0
    out["timing_s"] = {k: round(v, 2) for k, v in timing.items()}
    extras = {
        "sets": sets,
        "features_name": None if extractor is None else extractor.name,
        "hist_range": hist_range,
    }
    return out, extras


# --- paired ------------------------------------------------------------------------------------


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
        settings = settings or image.paired_settings(ref.shape, data_range)
        row = {"id": ref_item.id, "reference": str(ref_item.image), "test": str(test_item.image)}
        for region, vals in m.items():
            for k, v in vals.items():
                row[f"{region}_{k}"] = v
        rows.append(row)
        if len(montage) < 2 * opts.n_montage:
            montage += [ref, test]
            titles += [f"reference {ref_item.id}", f"test {test_item.id}"]
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    out = _header(opts, "paired", real_path, synthetic_path)
    out["inputs"].update(
        {
            "n_pairs": len(pairs),
            "n_real": len(real),
            "n_synthetic": len(synthetic),
            "unmatched_real": un_r,
            "unmatched_synthetic": un_s,
        }
    )
    out["preprocessing"] = _preprocessing(opts, data_range, why)
    out["preprocessing"]["mask"] += " (of the reference)"
    out["settings"] = settings
    keys = [k for k in rows[0] if k not in ("id", "reference", "test")]
    out["summary"] = {k: _summ([r[k] for r in rows]) for k in keys}
    out["warnings"] = (
        [f"{len(un_r)} real and {len(un_s)} synthetic volumes had no partner"]
        if un_r or un_s
        else []
    )
    out["timing_s"] = {"total": round(time.time() - t0, 2)}
    return out, {"rows": rows, "montage": montage, "titles": titles}


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


def _tsv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


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


def run_evaluation(
    real_path: str | Path,
    synthetic_path: str | Path,
    out_dir: str | Path,
    opts: EvalOptions | None = None,
    paired: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Read both inputs, evaluate, write metrics.json, per_subject.tsv/per_pair.tsv, figures/ and
    report.html into ``out_dir``. Returns the metrics."""
    from brainsynth.evaluation.report import write_report

    opts = opts or EvalOptions()
    out = Path(out_dir)
    real = list_inputs(real_path)
    synthetic = list_inputs(synthetic_path)
    if log:
        log(
            f"real: {len(real)} volumes from {real_path}; synthetic: {len(synthetic)} from {synthetic_path}"
        )
    if paired:
        metrics, extras = evaluate_paired(real, synthetic, opts, real_path, synthetic_path)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "per_pair.tsv", _tsv(extras["rows"]))
    else:
        metrics, extras = evaluate_sets(real, synthetic, opts, real_path, synthetic_path)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "per_subject.tsv", _tsv(per_subject_rows(extras)))
    write_text_atomic(out / "metrics.json", metrics_json(metrics))
    write_report(metrics, extras, out)
    return metrics
