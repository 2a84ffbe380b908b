"""FID and MMD with known answers; scalar comparisons; random pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import FIDMetric
from monai.metrics.mmd import compute_mmd
from scipy import linalg

from brainsynth.evaluation import distribution as dist


def _gauss(n, d, seed, mu=0.0):
    return np.random.default_rng(seed).standard_normal((n, d)) + mu


def test_fid_identical_sets_is_zero():
    x = _gauss(50, 8, 0)
    assert dist.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    # n < d (rank-deficient covariances) still gives ~0 for identical sets.
    y = _gauss(10, 64, 1)
    assert dist.frechet_distance(y, y) == pytest.approx(0.0, abs=1e-7)


def test_fid_mean_shift_equals_squared_norm():
    mu = np.array([1.0, 2.0, 0.0, -0.5])
    x = _gauss(400, 4, 0)
    # Same samples shifted: covariances equal, FID = ||mu||^2 exactly.
    assert dist.frechet_distance(x, x + mu) == pytest.approx(float(mu @ mu), rel=1e-9)
    # Independent samples of N(0, I) and N(mu, I): ||mu||^2 up to O(d/n) and sampling noise.
    a, b = _gauss(20000, 4, 1), _gauss(20000, 4, 2, mu)
    assert dist.frechet_distance(a, b) == pytest.approx(float(mu @ mu), abs=0.15)


def test_fid_scaled_covariance_is_analytic():
    x = _gauss(300, 6, 3)
    s = 0.5
    c = np.cov(x, rowvar=False)
    m = x.mean(0)
    # y = s x: S_y = s^2 S_x, mu_y = s mu_x -> FID = (1-s)^2 (||mu_x||^2 + tr S_x).
    expected = (1 - s) ** 2 * (m @ m + np.trace(c))
    assert dist.frechet_distance(x, s * x) == pytest.approx(expected, rel=1e-8)


@pytest.mark.filterwarnings("ignore:The `disp` argument:DeprecationWarning")
def test_fid_equals_sqrtm_formula_and_monai():
    x, y = _gauss(200, 10, 4), _gauss(150, 10, 5, 0.3) * 1.3
    sx, sy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = linalg.sqrtm(sx @ sy).real
    ref = ((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(sx + sy - 2 * covmean)
    ours = dist.frechet_distance(x, y)
    assert ours == pytest.approx(ref, rel=1e-6)
    monai = float(FIDMetric()(torch.from_numpy(y), torch.from_numpy(x)))
    assert ours == pytest.approx(monai, rel=1e-4)
    # The sample-space (SVD) and feature-space (eigh) forms agree, for n > d and n < d.
    for a, b in ((x, y), (x[:7], y[:9])):
        f1 = dist.frechet_distance(a, b, method="feature")
        assert dist.frechet_distance(a, b, method="sample") == pytest.approx(f1, rel=1e-8)
    rep = dist.fid_report(x[:5], y[:5])
    assert rep["dim"] == 10 and rep["n_real"] == 5 and "rank-deficient" in rep["caveat"]


def test_unbiased_rbf_mmd_of_identical_sets():
    x = _gauss(40, 5, 6)
    value, s = dist.mmd2_rbf_unbiased(x, x)
    # For Y = X the U-statistic equals -(2/n)(1 - mean off-diagonal k): <= 0 and >= -2/n.
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    k = np.exp(-d2 / (2 * s * s))
    n = len(x)
    mean_off = (k.sum() - n) / (n * (n - 1))
    assert value == pytest.approx(-(2 / n) * (1 - mean_off), rel=1e-9)
    assert -2 / n <= value <= 0
    assert s == pytest.approx(np.median(np.sqrt(d2[np.triu_indices(n, 1)])) * 1.0, rel=0.05)


def test_mmd_detects_a_shift_and_not_a_resample():
    a, b = _gauss(60, 4, 7), _gauss(60, 4, 8)
    c = _gauss(60, 4, 9, mu=1.0)
    same, s_same = dist.mmd2_rbf_unbiased(a, b)
    diff, s_diff = dist.mmd2_rbf_unbiased(a, c)
    assert diff > 0.1 > abs(same)
    assert dist.mmd_permutation_pvalue(a, c, s_diff, 200, seed=0) < 0.01
    assert dist.mmd_permutation_pvalue(a, b, s_same, 200, seed=0) > 0.05
    rep = dist.mmd_report(a, c, n_permutations=50)
    assert rep["kernel"].startswith("gaussian rbf") and "unbiased" in rep["estimator"]


def test_linear_mmd_equals_monai():
    a, b = _gauss(30, 6, 10), _gauss(30, 6, 11, 0.2)
    ours = dist.mmd2_linear_unbiased(a, b)
    ref = float(compute_mmd(torch.from_numpy(a), torch.from_numpy(b), None))
    assert ours == pytest.approx(ref, rel=1e-9, abs=1e-12)


def test_compare_scalars():
    r = np.arange(20.0)
    out = dist.compare_scalars(r, r)
    assert out["ks_statistic"] == 0 and out["wasserstein1"] == 0
    out = dist.compare_scalars(r, r + 3.0)
    assert out["wasserstein1"] == pytest.approx(3.0)
    assert out["mean_synthetic"] - out["mean_real"] == pytest.approx(3.0)
    assert out["std_real"] == pytest.approx(np.std(r, ddof=1))


def test_random_pairs():
    p = dist.random_pairs(10, 12, seed=0)
    assert len(p) == len(set(p)) == 12 and all(i < j for i, j in p)
    assert p == dist.random_pairs(10, 12, seed=0)
    assert len(dist.random_pairs(4, 100)) == 6
    assert dist.random_pairs(1, 5) == []
