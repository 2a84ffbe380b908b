"""Set mode of ``brainsynth evaluate`` (real vs synthetic, unpaired): :func:`evaluate_sets`.

Per volume: features (FID/MMD), tissue volumes (GMM; and label volumes when every volume of both
sets has a label map), intensity histogram inside the brain mask; per set: MS-SSIM over random
pairs (diversity; whole volumes, fixed seed, ``n_pairs`` stated).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from brainsynth.errors import InputError
from brainsynth.evaluation import anatomy, distribution, image
from brainsynth.evaluation.inputs import Item, _maybe_tqdm, _VolumeStore, load_image
from brainsynth.evaluation.options import EvalOptions, _data_range, _header, _preprocessing
from brainsynth.io import read_volume

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


# --- per-volume pass ---------------------------------------------------------------------------


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


# --- metrics between and within the sets -------------------------------------------------------


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


def _grid_warnings(r: SetSummary, s: SetSummary) -> list[str]:
    warn: list[str] = []
    if set(r.shapes) != set(s.shapes):
        warn.append(
            f"grid shapes differ between sets (real {sorted(set(r.shapes))}, synthetic "
            f"{sorted(set(s.shapes))}): features and diversity are not comparable on equal terms"
        )
    if not np.allclose(np.mean(r.spacings, 0), np.mean(s.spacings, 0), atol=1e-3):
        warn.append("voxel sizes differ between sets: volumes are in mm^3 but textures differ")
    return warn


def _feature_metrics(r: SetSummary, s: SetSummary, extractor, opts: EvalOptions) -> dict:
    """``features`` (the extractor's description), ``fid`` and ``mmd`` entries of metrics.json."""
    fr, fs = np.stack(r.features), np.stack(s.features)
    out = {"features": extractor.describe()}
    out["fid"] = {**distribution.fid_report(fr, fs), "features": extractor.name}
    mmd = distribution.mmd_report(fr, fs, opts.n_permutations, opts.seed)
    out["mmd"] = {**mmd, "features": extractor.name}
    return out


def _diversity_metrics(r: SetSummary, s: SetSummary, opts: EvalOptions, data_range: float) -> dict:
    params = image.ms_ssim_params(s.shapes[0]) if len(set(s.shapes)) == 1 else None
    return {
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


def _intensity_metrics(r: SetSummary, s: SetSummary, hist_range: tuple[float, float]) -> dict:
    return {
        "description": "intensities inside the brain masks, pooled per set",
        "wasserstein1_pooled_histogram": _hist_w1(r.hist, s.hist, hist_range),
        "histogram_bins": HIST_BINS,
        "histogram_range": list(hist_range),
        "mean_in_mask": distribution.compare_scalars(r.mean_intensity, s.mean_intensity),
    }


def _anatomy_metrics(r: SetSummary, s: SetSummary, want_labels: bool, warn: list[str]) -> dict:
    """Tissue-volume distributions (GMM; label maps when every volume has one). A warning about
    differing label schemes is appended to ``warn``."""
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
    return est


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
    warn = _grid_warnings(r, s)
    if extractor is not None:
        t = time.time()
        out.update(_feature_metrics(r, s, extractor, opts))
        timing["fid_mmd"] = time.time() - t
    if opts.diversity:
        t = time.time()
        out["diversity_ms_ssim"] = _diversity_metrics(r, s, opts, data_range)
        timing["diversity"] = time.time() - t
    out["intensity"] = _intensity_metrics(r, s, hist_range)
    if opts.anatomy:
        out["anatomy"] = _anatomy_metrics(r, s, want_labels, warn)
    out["warnings"] = warn
    timing["total"] = time.time() - t0
    out["timing_s"] = {k: round(v, 2) for k, v in timing.items()}
    extras = {
        "sets": sets,
        "features_name": None if extractor is None else extractor.name,
        "hist_range": hist_range,
    }
    return out, extras
