"""Paired image metrics: analytic PSNR/MAE, SSIM/MS-SSIM against MONAI, monotonicity, 4-G-R-SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import MultiScaleSSIMMetric
from monai.metrics.regression import compute_ssim_and_cs
from scipy import ndimage

from brainsynth.evaluation import image as im


def _smooth_volume(shape, seed=0, sigma=2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = ndimage.gaussian_filter(rng.random(shape), sigma)
    v = (v - v.min()) / (v.max() - v.min())
    return v.astype(np.float32)


def test_psnr_and_mae_constant_offset_are_analytic():
    a = _smooth_volume((16, 16, 16))
    for c in (0.01, 0.1, 0.25):
        b = a + c
        assert im.mae(a, b) == pytest.approx(c, rel=1e-6)
        # MSE = c^2, so PSNR = 20 log10(L / c) for data range L.
        assert im.psnr(a, b, data_range=1.0) == pytest.approx(20 * math.log10(1.0 / c), rel=1e-6)
        assert im.psnr(a, b, data_range=2.0) == pytest.approx(20 * math.log10(2.0 / c), rel=1e-6)
    assert im.psnr(a, a, 1.0) == math.inf


def test_masked_metrics_only_see_the_mask():
    a = _smooth_volume((20, 20, 20))
    mask = np.zeros(a.shape, bool)
    mask[5:15, 5:15, 5:15] = True
    b = a.copy()
    b[~mask] += 0.5  # errors only outside the mask
    assert im.mae(a, b, mask) == 0.0
    assert im.mae(a, b) > 0.3
    assert im.psnr(a, b, 1.0, mask) == math.inf
    full = np.ones(a.shape, bool)
    assert im.ssim(a, b, 1.0, full, kernel_size=7) == pytest.approx(
        im.ssim(a, b, 1.0, kernel_size=7)
    )


def test_ssim_is_one_for_itself_and_drops_monotonically_with_noise():
    a = _smooth_volume((24, 24, 24))
    assert im.ssim(a, a, 1.0) == pytest.approx(1.0, abs=1e-6)
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(a.shape).astype(np.float32)
    values = [im.ssim(a, a + s * noise, 1.0) for s in (0.01, 0.03, 0.1, 0.3)]
    assert all(x > y for x, y in zip(values, values[1:])), values
    assert values[0] < 1.0


def test_ssim_equals_monai_map_mean():
    a = _smooth_volume((24, 26, 22))
    b = np.clip(a + 0.05 * np.random.default_rng(2).standard_normal(a.shape), 0, 1)
    ours = im.ssim(a, b, 1.0, kernel_size=7)
    t = lambda x: torch.from_numpy(np.asarray(x, np.float32))[None, None]  # noqa: E731
    ref, _ = compute_ssim_and_cs(t(b), t(a), 3, (7, 7, 7), (1.5, 1.5, 1.5), data_range=1.0)
    assert ours == pytest.approx(float(ref.mean()), abs=1e-5)


@pytest.mark.parametrize(
    "shape,kernel,levels",
    [((48, 48, 48), 3, 5), ((96, 112, 96), 5, 5), ((32, 32, 32), 3, 4), ((176, 200, 176), 11, 5)],
)
def test_ms_ssim_rule(shape, kernel, levels):
    p = im.ms_ssim_params(shape)
    assert (p.kernel_size, p.levels) == (kernel, levels)
    assert sum(p.weights) == pytest.approx(1.0, abs=1e-3)
    # MONAI's condition for the chosen kernel holds.
    assert min(shape) // max(1, p.levels - 1) ** 2 > p.kernel_size - 1 or p.levels < 5


@pytest.mark.parametrize("shape", [(48, 48, 48), (96, 112, 96)])
def test_ms_ssim_matches_monai_and_is_one_for_itself(shape):
    a = _smooth_volume(shape, sigma=1.5)
    b = np.clip(a + 0.05 * np.random.default_rng(3).standard_normal(shape), 0, 1).astype(np.float32)
    p = im.ms_ssim_params(shape)
    ours = im.ms_ssim(a, b, 1.0)
    metric = MultiScaleSSIMMetric(spatial_dims=3, data_range=1.0, kernel_size=p.kernel_size)
    ref = float(metric(torch.from_numpy(b)[None, None], torch.from_numpy(a)[None, None]).item())
    assert ours == pytest.approx(ref, abs=1e-4)
    assert im.ms_ssim(a, a, 1.0) == pytest.approx(1.0, abs=1e-6)
    full = np.ones(shape, bool)
    assert im.ms_ssim(a, b, 1.0, mask=full) == pytest.approx(ours, abs=1e-9)
    assert 0.0 < ours < 1.0


def test_ms_ssim_decreases_with_noise():
    a = _smooth_volume((48, 48, 48), sigma=1.5)
    noise = np.random.default_rng(4).standard_normal(a.shape).astype(np.float32)
    values = [im.ms_ssim(a, a + s * noise, 1.0) for s in (0.02, 0.1, 0.3)]
    assert values[0] > values[1] > values[2]


def test_four_component_gssim():
    a = _smooth_volume((32, 32, 32), sigma=1.0)
    r = im.four_component_gssim(a, a, 1.0)
    assert r["value"] == pytest.approx(1.0, abs=1e-6)
    assert sum(v["fraction"] for v in r["regions"].values()) == pytest.approx(1.0)
    assert r["regions"]["changed_edge"]["fraction"] == 0.0
    blurred = [im.four_component_gssim(a, ndimage.gaussian_filter(a, s), 1.0) for s in (0.5, 1, 2)]
    values = [b["value"] for b in blurred]
    assert values[0] > values[1] > values[2]
    assert blurred[2]["regions"]["changed_edge"]["fraction"] > 0
    w = dict(im.FOUR_G_WEIGHTS, changed_edge=1.0)
    assert im.four_component_gssim(a, a, 1.0, weights=w)["weights"]["changed_edge"] == 1.0


def test_paired_metrics_keys_and_errors():
    a = _smooth_volume((16, 16, 16))
    m = im.paired_metrics(a, a + 0.1, 1.0, mask=a > 0.3)
    assert set(m) == {"whole", "mask"}
    assert set(m["whole"]) == {"mae", "psnr", "ssim", "ms_ssim", "4g_r_ssim"}
    assert m["mask"]["mae"] == pytest.approx(0.1, rel=1e-5)
    with pytest.raises(ValueError, match="shapes differ"):
        im.mae(a, a[:8])
    with pytest.raises(ValueError, match="smaller than the SSIM window"):
        im.ssim(a[:8, :8, :8], a[:8, :8, :8], 1.0)
