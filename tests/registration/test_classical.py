"""Diffeomorphic demons baseline: axis/sign conventions (known shifts), recovery of a smooth
diffeomorphic deformation of a textured phantom, no folding, determinism, input checks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from brainsynth.evaluation.deformation import jacobian_determinant
from brainsynth.evaluation.overlap import dice
from brainsynth.registration import fields
from brainsynth.registration.classical import register_demons

N = 32


def _phantom() -> tuple[np.ndarray, np.ndarray]:
    """Labels and image on a 32^3 grid: an ellipsoid (1) with an inner ellipsoid (2) holding two
    small dark blobs (3), plus a smooth texture inside the head so the interior is not flat."""
    g = np.stack(np.meshgrid(*[np.arange(N) - (N - 1) / 2] * 3, indexing="ij"))

    def ellipsoid(centre: tuple[float, ...], radii: tuple[float, ...]) -> np.ndarray:
        c = np.asarray(centre)[:, None, None, None]
        r = np.asarray(radii)[:, None, None, None]
        return (((g - c) / r) ** 2).sum(0) < 1

    lab = np.zeros((N,) * 3, np.int16)
    lab[ellipsoid((0, 0, 0), (13, 11, 10))] = 1
    lab[ellipsoid((0, 0, 0), (10, 8, 7))] = 2
    lab[ellipsoid((-3, 2, 0), (3, 2, 4))] = 3
    lab[ellipsoid((4, -2, 1), (2.5, 3, 3))] = 3
    tex = ndimage.gaussian_filter(np.random.default_rng(123).standard_normal(lab.shape), 1.5)
    img = np.array([0.0, 0.4, 0.8, 0.15])[lab] + 0.08 * (tex / tex.std()) * (lab > 0)
    return lab, ndimage.gaussian_filter(img, 0.7)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_shift_recovered_with_brainsynth_convention(axis):
    _, fixed = _phantom()
    moving = np.roll(fixed, 2, axis=axis)  # moving(x) = fixed(x - 2 e_axis)
    u = register_demons(fixed, moving)
    assert u.shape == (3, N, N, N) and u.dtype == np.float32
    inner = _phantom()[0] >= 2
    # phi(x) = x + u(x) samples moving at x + 2 e_axis: u[axis] ~ +2, the others ~ 0
    for i in range(3):
        assert u[i][inner].mean() == pytest.approx(2.0 if i == axis else 0.0, abs=0.15)
    mse_before = ((moving - fixed) ** 2).mean()
    mse_after = ((fields.warp(moving, u) - fixed) ** 2).mean()
    assert mse_after < 0.2 * mse_before


def test_smooth_deformation_recovered_without_folding():
    lab, fixed = _phantom()
    rng = np.random.default_rng(1)
    u_true = fields.scaling_and_squaring(fields.random_velocity((N,) * 3, 8.0, 4.0, rng))
    moving = fields.warp(fixed, u_true)
    moving_lab = fields.warp(lab.astype(np.float64), u_true, order=0).round().astype(int)

    u = register_demons(fixed, moving)

    warped = fields.warp(moving, u)
    warped_lab = fields.warp(moving_lab.astype(np.float64), u, order=0).round().astype(int)
    # the images share one grid with no affine difference: the affine-only baseline is identity
    blobs_before = dice(moving_lab == 3, lab == 3)
    blobs_after = dice(warped_lab == 3, lab == 3)
    bright_before = dice(moving > 0.6, fixed > 0.6)  # thresholded inner ellipsoid
    bright_after = dice(warped > 0.6, fixed > 0.6)
    assert blobs_before < 0.8 and blobs_after > 0.9, (blobs_before, blobs_after)
    assert bright_before < 0.9 and bright_after > 0.93, (bright_before, bright_after)
    assert ((warped - fixed) ** 2).mean() < 0.2 * ((moving - fixed) ** 2).mean()
    jd = jacobian_determinant(u)
    assert (jd <= 0).mean() <= 0.001
    assert jd.min() > 0.2


def test_deterministic():
    _, fixed = _phantom()
    moving = np.roll(fixed, 1, axis=1)
    kw = {"iterations": (10, 5), "shrink_factors": (2, 1)}
    np.testing.assert_array_equal(
        register_demons(fixed, moving, **kw), register_demons(fixed, moving, **kw)
    )


def test_input_checks():
    a = np.zeros((8, 8, 8))
    with pytest.raises(ValueError, match=r"\(8, 8, 8\) and \(8, 8, 9\)"):
        register_demons(a, np.zeros((8, 8, 9)))
    with pytest.raises(ValueError, match="one iteration count per pyramid level"):
        register_demons(a, a, iterations=(10, 10), shrink_factors=(4, 2, 1))
    with pytest.raises(ValueError, match="smoothing"):
        register_demons(a, a, smoothing=0.0)
