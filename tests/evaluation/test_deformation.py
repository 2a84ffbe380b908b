"""Jacobian determinants: translation, affine fields, folding; units."""

from __future__ import annotations

import numpy as np
import pytest

from brainsynth.evaluation import deformation as df


def _grid(shape, spacing=(1.0, 1.0, 1.0)):
    return np.stack(
        np.meshgrid(*[np.arange(s) * sp for s, sp in zip(shape, spacing)], indexing="ij")
    )


def test_translation_has_unit_jacobian_and_no_folding():
    u = np.zeros((3, 12, 10, 8))
    u[0], u[1], u[2] = 2.5, -1.0, 0.3
    det = df.jacobian_determinant(u)
    assert np.allclose(det, 1.0)
    s = df.jacobian_stats(det)
    assert s["folding_voxels"] == 0 and s["folding_percent"] == 0.0
    assert s["mean"] == pytest.approx(1.0) and s["std"] == pytest.approx(0.0, abs=1e-12)


def test_affine_field_jacobian_equals_det_a_in_voxels_and_mm():
    a = np.array([[1.1, 0.2, 0.0], [-0.1, 0.9, 0.05], [0.0, 0.1, 1.2]])
    shape = (10, 12, 9)
    x = _grid(shape)
    u = np.einsum("ij,j...->i...", a - np.eye(3), x)  # phi(x) = A x
    assert np.allclose(df.jacobian_determinant(u), np.linalg.det(a))
    # The same map in mm (2 x 1.5 x 3 mm voxels): u and spacing both in mm.
    sp = (2.0, 1.5, 3.0)
    xm = _grid(shape, sp)
    um = np.einsum("ij,j...->i...", a - np.eye(3), xm)
    assert np.allclose(df.jacobian_determinant(um, spacing=sp), np.linalg.det(a))
    # Channel-last input gives the same answer.
    assert np.allclose(df.jacobian_determinant(np.moveaxis(um, 0, -1), sp), np.linalg.det(a))
    # Units matter: a field in mm read as voxels gives a different (wrong) determinant.
    assert not np.allclose(df.jacobian_determinant(um), np.linalg.det(a))


def test_folded_field_shows_folding():
    shape = (64, 6, 6)
    x = _grid(shape)[0]
    amp, k = 8.0, 2 * np.pi / 32
    u = np.zeros((3, *shape))
    u[0] = amp * np.sin(k * x)  # det = 1 + amp k cos(k x): < 0 where cos < -1/(amp k)
    s = df.deformation_metrics(u)
    expected = 100 * np.arccos(1 / (amp * k)) / np.pi  # share of a period with det < 0
    assert s["min"] < 0 and s["folding_voxels"] > 0
    assert s["folding_percent"] == pytest.approx(expected, abs=5.0)
    assert s["displacement"]["max"] == pytest.approx(amp, rel=0.01)
    mask = np.zeros(shape, bool)
    mask[:4] = True  # around x = 0, where cos ~ 1: no folding there
    assert df.jacobian_stats(df.jacobian_determinant(u), mask)["folding_voxels"] == 0


def test_bad_shapes():
    with pytest.raises(ValueError, match="displacement field of shape"):
        df.jacobian_determinant(np.zeros((4, 5, 6)))
    assert df.jacobian_determinant(np.zeros((2, 5, 6))).shape == (5, 6)  # 2D works
