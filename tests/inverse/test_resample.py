"""GridResample: identity on the same grid, an exact adjoint, a known shift; and the affine
registration recovers a known affine between two synthetic heads."""

from __future__ import annotations

import numpy as np
import torch

from brainsynth.data.preprocess import resample_to_grid
from brainsynth.inverse.resample import GridResample
from brainsynth.io import Volume
from brainsynth.registration.affine import register_affine


def test_identity_shift_and_adjoint():
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    x = torch.rand(2, 1, 6, 7, 8, dtype=torch.float64)
    same = GridResample(aff, (6, 7, 8), aff, (6, 7, 8))
    assert torch.allclose(same(x.float()), x.float(), atol=1e-6)
    shifted = aff.copy()
    shifted[0, 3] = 2.0  # one voxel along the first axis
    op = GridResample(aff, (6, 7, 8), shifted, (5, 7, 8))
    assert torch.allclose(op(x.float()), x[:, :, 1:].float(), atol=1e-6)
    rot = np.eye(4)
    c, s = np.cos(0.3), np.sin(0.3)
    rot[:2, :2] = [[c, -s], [s, c]]
    oblique = GridResample(aff, (6, 7, 8), rot @ np.diag([1.5, 1.5, 3, 1]), (9, 5, 4))
    y = torch.rand(2, 1, 9, 5, 4)
    lhs = (oblique(x.float()) * y).sum()
    rhs = (x.float() * oblique.adjoint(y)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-5)


def _head(shape=(40, 44, 36)) -> np.ndarray:
    i, j, k = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    c = [(n - 1) / 2 for n in shape]
    r = ((i - c[0]) / 14) ** 2 + ((j - c[1]) / 17) ** 2 + ((k - c[2]) / 12) ** 2
    inner = ((i - c[0] - 4) / 5) ** 2 + ((j - c[1] + 3) / 7) ** 2 + ((k - c[2]) / 4) ** 2
    return (
        np.where(r <= 1, 0.8, 0.0) - np.where(inner <= 1, 0.5, 0.0) + 0.2 * (r <= 0.4) * (k > c[2])
    )


def test_affine_registration_recovers_a_known_affine():
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = [-40, -44, -36]
    fixed = Volume(_head().astype(np.float32), aff)
    m = np.eye(4)
    a = np.deg2rad(6)
    m[:3, :3] = 1.05 * np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    m[:3, 3] = [4.0, -3.0, 2.0]
    # moving(M p) = fixed(p): sample fixed at M^-1 q for the moving grid's points q
    moving = resample_to_grid(fixed, np.linalg.inv(m) @ aff, fixed.shape)
    moving = Volume(moving.data, aff)
    est = register_affine(fixed, moving)
    pts = np.c_[np.random.default_rng(0).uniform(-20, 20, (50, 3)), np.ones(50)]
    err = np.linalg.norm((pts @ est.T - pts @ m.T)[:, :3], axis=1)
    assert err.max() < 1.0  # mm, half a voxel
