"""Meshes shared by the geometry tests (imported with the folder on sys.path, like
tests/training/training_helpers.py)."""

from __future__ import annotations

import numpy as np
from scipy.spatial import ConvexHull


def unit_sphere(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Fibonacci points on the unit sphere and their convex hull's faces, oriented outward."""
    i = np.arange(n) + 0.5
    polar, azimuth = np.arccos(1 - 2 * i / n), np.pi * (1 + 5**0.5) * i
    u = np.stack(
        [np.sin(polar) * np.cos(azimuth), np.sin(polar) * np.sin(azimuth), np.cos(polar)], axis=1
    )
    faces = ConvexHull(u).simplices
    tri = u[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    inward = np.einsum("ij,ij->i", normal, tri.mean(axis=1)) < 0
    faces[inward] = faces[inward][:, ::-1]
    return u, faces
