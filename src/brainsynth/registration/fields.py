"""Dense displacement fields on voxel grids (numpy): random stationary velocity fields,
scaling and squaring, warping, fixed-point inversion and Jacobian determinants.

Convention: a displacement field ``u`` has shape (3, X, Y, Z) in voxel units and defines the
*sampling* map ``phi(x) = x + u(x)``: the warped image is ``I(phi(x))``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def identity_grid(shape: tuple[int, ...]) -> np.ndarray:
    return np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij"))


def sample(field_or_image: np.ndarray, coords: np.ndarray, order: int = 1) -> np.ndarray:
    """Interpolate an image (X,Y,Z) or a vector field (C,X,Y,Z) at voxel ``coords`` (3, ...)."""
    kw = {"order": order, "mode": "nearest", "prefilter": False}
    if field_or_image.ndim == coords.shape[0]:
        return ndimage.map_coordinates(field_or_image, coords, **kw)
    return np.stack([ndimage.map_coordinates(c, coords, **kw) for c in field_or_image])


def random_velocity(
    shape: tuple[int, int, int], sigma: float, max_disp: float, rng: np.random.Generator
) -> np.ndarray:
    """Smooth random velocity (3, *shape): Gaussian-filtered white noise scaled so max |v| = max_disp."""
    v = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), sigma) for _ in range(3)])
    peak = np.sqrt((v**2).sum(0)).max()
    return v * (max_disp / peak) if peak > 0 else v


def scaling_and_squaring(velocity: np.ndarray, steps: int = 7) -> np.ndarray:
    """Displacement of exp(v): start from v / 2^steps and compose with itself ``steps`` times.

    A small enough first step (|v|/2^steps << 1 voxel) keeps every composition invertible, so the
    result is a diffeomorphism (Arsigny et al. 2006).
    """
    grid = identity_grid(velocity.shape[1:])
    u = velocity / (2.0**steps)
    for _ in range(steps):
        u = u + sample(u, grid + u)
    return u


def invert_displacement(u: np.ndarray, points: np.ndarray, iterations: int = 30) -> np.ndarray:
    """For target points y (3, N) find p with p + u(p) = y by fixed-point iteration p <- y - u(p).

    Converges when the field's Lipschitz constant is below 1 (true for the smooth fields here).
    """
    p = points.astype(np.float64).copy()
    for _ in range(iterations):
        p = points - sample(u, p)
    return p


def jacobian_determinant(u: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    """det(I + grad u) by central differences; ``u`` and ``spacing`` in the same units."""
    grads = np.stack(
        [np.stack(np.gradient(u[i], *spacing), axis=0) for i in range(3)]
    )  # grads[i, j] = d u_i / d x_j
    jac = grads + np.eye(3)[:, :, None, None, None]
    return np.linalg.det(np.moveaxis(jac, (0, 1), (-2, -1)))


def warp(image: np.ndarray, u: np.ndarray, order: int = 1, cval: float = 0.0) -> np.ndarray:
    """I(x + u(x)) with constant padding outside the image."""
    coords = identity_grid(image.shape) + u
    return ndimage.map_coordinates(image, coords, order=order, mode="constant", cval=cval)
