"""Distribution metrics between a real and a synthetic set: FID, MMD, scalar-distribution distances,
and pairwise MS-SSIM (diversity).

Feature arrays are ``(n, d)``: one row per volume (see :mod:`brainsynth.evaluation.features`).

* FID (Heusel et al. 2017): ``||mu_r - mu_s||^2 + tr(S_r + S_s - 2 (S_r S_s)^(1/2))`` with
  unbiased (``n-1``) covariances. ``tr (S_r S_s)^(1/2)`` is computed as the sum of the square roots of
  the eigenvalues of ``S_r^(1/2) S_s S_r^(1/2)`` (symmetric positive semi-definite: the same value as
  ``tr scipy.linalg.sqrtm(S_r @ S_s)``, without its complex round-off; checked in the tests).
  Small n: with ``n <= d`` the covariances are rank-deficient and FID is biased upwards (its
  expectation grows roughly like ``d / n`` even between two samples of one distribution), so FIDs are
  comparable only at equal ``n``, equal feature extractor and equal preprocessing; every result carries
  ``n_real``, ``n_synthetic``, ``dim`` and a caveat string, and benchmarks/ixi_reference.py gives the
  real-vs-real value at a given n.
* MMD^2 (Gretton et al. 2012, eq. 3, the unbiased U-statistic) with a Gaussian RBF kernel
  ``k(x, y) = exp(-||x - y||^2 / (2 s^2))``; bandwidth ``s`` by the median heuristic: the median of the
  pooled pairwise Euclidean distances (``i < j``, real and synthetic together). Unbiased means it can be
  slightly negative (for two identical sets it equals ``-(2/n)(1 - mean off-diagonal k)``). A
  permutation test (fixed seed) gives a p-value. ``mmd2_linear_unbiased`` is the same U-statistic with
  the linear kernel ``<x, y>`` (what MONAI's ``MMDMetric`` computes; equal in the tests); it only
  compares means.
* Scalars (tissue volumes...): mean, std (``ddof=1``), two-sample Kolmogorov-Smirnov statistic
  (+ p-value) and Wasserstein-1 distance (same units as the values).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import linalg, stats


def _features(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name}: features must be (n, d), got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"{name}: need at least 2 samples, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: features contain NaN or infinite values")
    return x


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _tr_sqrt_product(xc: np.ndarray, yc: np.ndarray, method: str = "auto") -> float:
    """``tr (S_x S_y)^(1/2)`` for centred samples ``xc`` (n, d), ``yc`` (m, d), exactly.

    ``feature`` space: eigenvalues of ``S_x^(1/2) S_y S_x^(1/2)`` (d x d). ``sample`` space: the
    non-zero eigenvalues of ``S_x S_y`` are the squared singular values of ``xc yc^T`` divided by
    ``(n-1)(m-1)`` (an n x m matrix): cheaper when ``n + m < 2d``, and free of the d x d
    eigendecomposition of a rank-deficient matrix.
    """
    n, m, d = len(xc), len(yc), xc.shape[1]
    if method == "sample" or (method == "auto" and n + m < 2 * d):
        sv = linalg.svdvals(xc @ yc.T)
        return float(sv.sum() / np.sqrt((n - 1) * (m - 1)))
    s_x = xc.T @ xc / (n - 1)
    s_y = yc.T @ yc / (m - 1)
    r = _psd_sqrt(s_x)
    mat = r @ s_y @ r
    return float(np.sqrt(np.clip(linalg.eigvalsh((mat + mat.T) / 2), 0.0, None)).sum())


def frechet_distance(real: np.ndarray, synthetic: np.ndarray, method: str = "auto") -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(n, d)`` (FID on features).

    ``method``: ``feature`` (d x d eigendecomposition), ``sample`` (n x m SVD) or ``auto`` (the
    cheaper one); both are exact and agree to round-off (tested).
    """
    x, y = _features(real, "real"), _features(synthetic, "synthetic")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    mu_x, mu_y = x.mean(0), y.mean(0)
    xc, yc = x - mu_x, y - mu_y
    tr_x = float((xc**2).sum() / (len(x) - 1))
    tr_y = float((yc**2).sum() / (len(y) - 1))
    fid = float(((mu_x - mu_y) ** 2).sum() + tr_x + tr_y - 2.0 * _tr_sqrt_product(xc, yc, method))
    return max(fid, 0.0)


def fid_caveat(n_real: int, n_synthetic: int, dim: int) -> str:
    n = min(n_real, n_synthetic)
    if n <= dim:
        return (
            f"n={n} <= feature dim {dim}: covariances are rank-deficient and FID is biased upwards; "
            "compare only at equal n with the same feature extractor (see the real-vs-real baseline)"
        )
    return (
        "FID is biased upwards at finite n; compare only at equal n with the same feature extractor"
    )


def fid_report(real: np.ndarray, synthetic: np.ndarray) -> dict:
    x, y = _features(real, "real"), _features(synthetic, "synthetic")
    return {
        "fid": frechet_distance(x, y),
        "n_real": int(x.shape[0]),
        "n_synthetic": int(y.shape[0]),
        "dim": int(x.shape[1]),
        "covariance": "unbiased (n-1)",
        "caveat": fid_caveat(x.shape[0], y.shape[0], x.shape[1]),
    }


# --- MMD ---------------------------------------------------------------------------------------


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.clip(d, 0.0, None)


def median_bandwidth(real: np.ndarray, synthetic: np.ndarray) -> float:
    """Median of the pooled pairwise Euclidean distances (i < j); 1.0 if all points coincide."""
    z = np.concatenate([_features(real, "real"), _features(synthetic, "synthetic")])
    d = np.sqrt(_sq_dists(z, z)[np.triu_indices(len(z), k=1)])
    med = float(np.median(d))
    return med if med > 0 else 1.0


def _mmd2_from_gram(k: np.ndarray, m: int) -> float:
    """Unbiased MMD^2 from the pooled Gram matrix (first ``m`` rows real) (Gretton 2012, eq. 3)."""
    n = k.shape[0] - m
    kxx, kyy, kxy = k[:m, :m], k[m:, m:], k[:m, m:]
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def mmd2_rbf_unbiased(
    real: np.ndarray, synthetic: np.ndarray, bandwidth: float | None = None
) -> tuple[float, float]:
    """Unbiased MMD^2 with ``k = exp(-||x-y||^2 / (2 s^2))``; returns ``(mmd2, s)``. ``s`` defaults
    to :func:`median_bandwidth`."""
    x, y = _features(real, "real"), _features(synthetic, "synthetic")
    s = median_bandwidth(x, y) if bandwidth is None else float(bandwidth)
    z = np.concatenate([x, y])
    k = np.exp(-_sq_dists(z, z) / (2.0 * s * s))
    return _mmd2_from_gram(k, len(x)), s


def mmd2_linear_unbiased(real: np.ndarray, synthetic: np.ndarray) -> float:
    """Unbiased MMD^2 with the linear kernel (MONAI ``MMDMetric``'s estimator): compares means only."""
    x, y = _features(real, "real"), _features(synthetic, "synthetic")
    z = np.concatenate([x, y])
    return _mmd2_from_gram(z @ z.T, len(x))


def mmd_permutation_pvalue(
    real: np.ndarray,
    synthetic: np.ndarray,
    bandwidth: float,
    n_permutations: int = 500,
    seed: int = 0,
) -> float:
    """P-value of the RBF MMD^2 under random relabelling (``(1 + #{perm >= obs}) / (1 + n_perm)``)."""
    x, y = _features(real, "real"), _features(synthetic, "synthetic")
    z = np.concatenate([x, y])
    k = np.exp(-_sq_dists(z, z) / (2.0 * bandwidth * bandwidth))
    m = len(x)
    obs = _mmd2_from_gram(k, m)
    rng = np.random.default_rng(seed)
    count = 0
    for _ in range(n_permutations):
        p = rng.permutation(len(z))
        count += _mmd2_from_gram(k[np.ix_(p, p)], m) >= obs
    return float((1 + count) / (1 + n_permutations))


def mmd_report(
    real: np.ndarray, synthetic: np.ndarray, n_permutations: int = 500, seed: int = 0
) -> dict:
    value, s = mmd2_rbf_unbiased(real, synthetic)
    return {
        "mmd2_rbf_unbiased": value,
        "kernel": "gaussian rbf exp(-||x-y||^2/(2 s^2))",
        "bandwidth": s,
        "bandwidth_rule": "median pooled pairwise Euclidean distance",
        "estimator": "unbiased U-statistic (Gretton et al. 2012, eq. 3); can be < 0",
        "permutation_pvalue": mmd_permutation_pvalue(real, synthetic, s, n_permutations, seed),
        "n_permutations": n_permutations,
        "mmd2_linear_unbiased": mmd2_linear_unbiased(real, synthetic),
        "mmd2_linear_note": "linear kernel <x,y>, unbiased (= MONAI MMDMetric); compares means only",
    }


# --- scalars -----------------------------------------------------------------------------------


def compare_scalars(real: Sequence[float], synthetic: Sequence[float]) -> dict:
    """Mean/std of each set, KS statistic (+ p-value) and Wasserstein-1 distance between them."""
    r = np.asarray([v for v in real if v is not None and np.isfinite(v)], dtype=np.float64)
    s = np.asarray([v for v in synthetic if v is not None and np.isfinite(v)], dtype=np.float64)
    out: dict = {"n_real": int(r.size), "n_synthetic": int(s.size)}
    for name, v in (("real", r), ("synthetic", s)):
        out[f"mean_{name}"] = float(v.mean()) if v.size else None
        out[f"std_{name}"] = float(v.std(ddof=1)) if v.size > 1 else None
    if r.size and s.size:
        ks = stats.ks_2samp(r, s)
        out["ks_statistic"] = float(ks.statistic)
        out["ks_pvalue"] = float(ks.pvalue)
        out["wasserstein1"] = float(stats.wasserstein_distance(r, s))
    else:
        out["ks_statistic"] = out["ks_pvalue"] = out["wasserstein1"] = None
    return out


# --- diversity ---------------------------------------------------------------------------------


def random_pairs(n: int, n_pairs: int, seed: int = 0) -> list[tuple[int, int]]:
    """``min(n_pairs, n(n-1)/2)`` distinct unordered pairs ``i < j`` of ``range(n)``, drawn with a
    fixed seed (all pairs, in order, when fewer exist than asked)."""
    total = n * (n - 1) // 2
    if total == 0:
        return []
    all_pairs = [(i, j) for i in range(n) for j in range(i + 1, n)] if total <= 200_000 else None
    if all_pairs is not None and n_pairs >= total:
        return all_pairs
    rng = np.random.default_rng(seed)
    if all_pairs is not None:
        idx = np.sort(rng.choice(total, size=n_pairs, replace=False))
        return [all_pairs[i] for i in idx]
    chosen: set[tuple[int, int]] = set()
    while len(chosen) < n_pairs:
        i, j = rng.choice(n, size=2, replace=False)
        chosen.add((int(min(i, j)), int(max(i, j))))
    return sorted(chosen)


def pairwise_similarity(
    get: Callable[[int], np.ndarray],
    pairs: Sequence[tuple[int, int]],
    metric: Callable[[np.ndarray, np.ndarray], float],
    progress: Callable[[int], None] | None = None,
) -> dict:
    """``metric`` over ``pairs`` of items ``get(i)``: mean, std, n_pairs and the values."""
    values = []
    for i, j in pairs:
        values.append(float(metric(get(i), get(j))))
        if progress is not None:
            progress(1)
    v = np.asarray(values)
    return {
        "mean": float(v.mean()) if v.size else None,
        "std": float(v.std(ddof=1)) if v.size > 1 else None,
        "n_pairs": int(v.size),
        "values": values,
    }
