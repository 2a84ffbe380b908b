"""The phantoms' subject -> template map, built on :mod:`brainsynth.registration.fields`.

Maps go from *output* (subject) coordinates to *template* coordinates: the direction image
resampling needs (``out(x) = template(T(x))``). Points defined in the template (surface vertices)
need the inverse ``T^-1``: exact for the affine part, fixed-point iteration for the displacement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from brainsynth.registration.fields import identity_grid, sample


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """4x4 affine applied to points (..., 3)."""
    m = np.asarray(matrix, dtype=np.float64)
    # einsum: a BLAS matmul of (N, 3) by (3, 3) is several times slower on a shared 2-core machine
    return np.einsum("...j,ij->...i", np.asarray(points, dtype=np.float64), m[:3, :3]) + m[:3, 3]


def sample_points(field: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Trilinear values of ``field: (C, X, Y, Z)`` at voxel ``points: (N, 3)`` -> (N, C); the border
    value outside the grid."""
    return sample(field, np.asarray(points, dtype=np.float64).T).T


@dataclass(frozen=True)
class Deformation:
    """Subject world mm -> template world mm: ``T(x) = G psi(G^-1 L x)``.

    ``linear`` (4x4 ``L``, world -> world) acts first (brain size, small shear). ``psi = id + disp``
    is the nonlinear part: ``disp: (3, X, Y, Z)`` in voxel units of a control grid whose voxel ->
    world affine is ``grid_affine`` (``G``), e.g. ``exp(v)`` from scaling and squaring.
    """

    linear: np.ndarray
    disp: np.ndarray
    grid_affine: np.ndarray

    def to_template(self, points: np.ndarray) -> np.ndarray:
        """Subject world points (N, 3) -> template world points (N, 3)."""
        q = _apply(np.linalg.inv(self.grid_affine) @ self.linear, points)
        return _apply(self.grid_affine, q + sample_points(self.disp, q))

    def to_subject(self, points: np.ndarray, tol: float = 1e-3) -> np.ndarray:
        """Template world points (N, 3) -> subject world points: the inverse of :meth:`to_template`
        (exact for ``L``; :func:`invert_points` for ``psi``). Raises if the iteration does not
        converge to ``tol`` voxels (it would mean a field too strong to be a sane anatomy)."""
        target = _apply(np.linalg.inv(self.grid_affine), points)
        q, residual = invert_points(self.disp, target)
        if residual > tol:
            raise RuntimeError(f"inverse deformation did not converge (residual {residual:.3g} vx)")
        return _apply(np.linalg.inv(self.linear) @ self.grid_affine, q)

    def voxel_map(self, shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
        """Template voxel coordinates ``(3, X, Y, Z)`` of every voxel of the grid ``(shape, affine)``
        shared by template and output; minus :func:`identity_grid` it is the voxel displacement."""
        idx = identity_grid(shape).reshape(3, -1).T
        out = _apply(np.linalg.inv(affine), self.to_template(_apply(affine, idx)))
        return out.T.reshape(3, *shape).astype(np.float32)


def _residual(disp: np.ndarray, q: np.ndarray, t: np.ndarray) -> np.ndarray:
    return q + sample_points(disp, q) - t


def _newton(disp: np.ndarray, t: np.ndarray, q: np.ndarray, iterations: int = 30) -> np.ndarray:
    """Newton steps ``q <- q - (I + grad disp(q))^-1 r`` (steps capped at 1 voxel), for points where
    the plain iteration is too slow: strongly compressed regions, where ``|grad disp|`` nears 1."""
    grad = np.concatenate([np.stack(np.gradient(c)) for c in disp])  # (9, ...): d disp_i / d x_j
    for _ in range(iterations):
        r = _residual(disp, q, t)
        if np.abs(r).max(initial=0.0) < 1e-6:
            break
        jac = sample_points(grad, q).reshape(-1, 3, 3) + np.eye(3)
        step = np.linalg.solve(jac, r[..., None])[..., 0]
        norm = np.linalg.norm(step, axis=1, keepdims=True)
        q = q - step / np.maximum(norm, 1.0)
    return q


def invert_points(
    disp: np.ndarray, targets: np.ndarray, iterations: int = 100, tol: float = 1e-4
) -> tuple[np.ndarray, float]:
    """Solve ``q + disp(q) = target`` for voxel points (N, 3); returns ``(q, largest residual)``.

    Fixed-point iteration ``q <- target - disp(q)`` (a contraction where ``|grad disp| < 1``) until
    the steps fall below ``tol`` voxels; points it leaves unconverged get Newton steps.
    """
    t = np.asarray(targets, dtype=np.float64)
    q = t - sample_points(disp, t)
    for _ in range(iterations):
        q_new = t - sample_points(disp, q)
        step = float(np.abs(q_new - q).max(initial=0.0))
        q = q_new
        if step < tol:
            break
    bad = np.abs(_residual(disp, q, t)).max(axis=1) > tol
    if bad.any():
        q[bad] = _newton(disp, t[bad], q[bad])
    return q, float(np.abs(_residual(disp, q, t)).max(initial=0.0))


def source_flow(source: np.ndarray, halo_sigma: float, pad: int = 16) -> np.ndarray:
    """Velocity ``v = grad phi`` (3, *shape), voxel units, whose divergence is ``-source`` plus a
    compensating positive halo (``source`` blurred by ``halo_sigma`` voxels, outside the source).

    ``lap phi = q`` is solved with FFTs (discrete Laplacian eigenvalues) on a zero-padded grid. Used
    as the subject -> template flow, ``exp(a v)`` has Jacobian determinant ~ ``exp(-a)`` inside the
    source: it enlarges the source region by ~ ``e^a`` in the subject and compresses the halo.
    """
    src = np.asarray(source, dtype=np.float64)
    halo = ndi.gaussian_filter(src, halo_sigma) * np.clip(1.0 - src, 0.0, 1.0)
    q = -src + halo * (src.sum() / max(halo.sum(), 1e-12))  # zero net source
    qp = np.pad(q, pad)
    eig = np.zeros(qp.shape)
    for a, n in enumerate(qp.shape):  # eigenvalues of the 7-point Laplacian, axis by axis
        axis_shape = [-1 if i == a else 1 for i in range(3)]
        eig = eig + np.reshape(2.0 * (np.cos(2 * np.pi * np.fft.fftfreq(n)) - 1.0), axis_shape)
    eig[0, 0, 0] = 1.0
    phi_hat = np.fft.fftn(qp) / eig
    phi_hat[0, 0, 0] = 0.0
    phi = np.real(np.fft.ifftn(phi_hat))[tuple(slice(pad, pad + n) for n in q.shape)]
    return np.stack(list(np.gradient(phi))).astype(np.float32)
