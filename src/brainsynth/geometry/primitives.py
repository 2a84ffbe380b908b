"""Closed and open triangle meshes with known geometry, for checking surface code against
analytic answers (signed distances, ASSD, quadrature): an icosphere (near-uniform vertices), a
latitude-longitude sphere (uneven vertex density) and a graded square (vertices crowded at one
edge), and the tilted plane it is measured against. Faces are oriented outward
(counter-clockwise seen from outside; +z for the open meshes)."""

from __future__ import annotations

import numpy as np

from brainsynth.io import Surface


def icosphere(level: int, radius: float = 1.0, centre=(0.0, 0.0, 0.0)) -> Surface:
    """An icosahedron subdivided ``level`` times (each face into 4), vertices projected to the
    sphere: 10 * 4**level + 2 vertices."""
    t = (1 + 5**0.5) / 2
    v = np.array(
        [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t],
         [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]]
    )  # fmt: skip
    f = np.array(
        [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
         [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
         [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]]
    )  # fmt: skip
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    for _ in range(level):
        edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
        unique, inverse = np.unique(edges, axis=0, return_inverse=True)
        mid = v[unique].mean(axis=1)
        mid /= np.linalg.norm(mid, axis=1, keepdims=True)
        m_ab, m_bc, m_ca = (len(v) + inverse.reshape(3, -1)).reshape(3, -1)
        v = np.concatenate([v, mid])
        a, b, c = f.T
        f = np.concatenate(
            [
                np.stack([a, m_ab, m_ca], 1),
                np.stack([b, m_bc, m_ab], 1),
                np.stack([c, m_ca, m_bc], 1),
                np.stack([m_ab, m_bc, m_ca], 1),
            ]
        )
    return Surface(v * radius + np.asarray(centre, dtype=float), f)


def uv_sphere(n_lat: int, n_lon: int, radius: float = 1.0, centre=(0.0, 0.0, 0.0)) -> Surface:
    """Latitude-longitude sphere, poles on the z axis: rings equally spaced in polar angle, so the
    vertex density per mm^2 grows as 1 / sin(theta) toward the poles (a third of the vertices lie
    within 30 degrees of a pole, 13 % of the area)."""
    theta = np.pi * np.arange(1, n_lat) / n_lat
    phi = 2 * np.pi * np.arange(n_lon) / n_lon
    t, f = np.meshgrid(theta, phi, indexing="ij")
    ring = np.stack([np.sin(t) * np.cos(f), np.sin(t) * np.sin(f), np.cos(t)], -1).reshape(-1, 3)
    v = np.concatenate([[[0.0, 0.0, 1.0]], ring, [[0.0, 0.0, -1.0]]])
    south = len(v) - 1
    j = np.arange(n_lon)
    jn = (j + 1) % n_lon
    faces = [np.stack([np.zeros(n_lon, int), 1 + j, 1 + jn], 1)]
    last = 1 + (n_lat - 2) * n_lon
    faces.append(np.stack([np.full(n_lon, south), last + jn, last + j], 1))
    for i in range(n_lat - 2):
        a, b = 1 + i * n_lon + j, 1 + (i + 1) * n_lon + j
        c, d = 1 + (i + 1) * n_lon + jn, 1 + i * n_lon + jn
        faces += [np.stack([a, b, c], 1), np.stack([a, c, d], 1)]
    return Surface(v * radius + np.asarray(centre, dtype=float), np.concatenate(faces))


def graded_square(length: float, n: int) -> Surface:
    """The open square [0, length]^2 at z = 0, normal +z, grid lines x_i = length (i / n)^3
    (vertices crowd at x = 0: about half of them have x <= length / 8) and y uniform."""
    x = length * (np.arange(n + 1) / n) ** 3
    y = length * np.arange(n + 1) / n
    gx, gy = np.meshgrid(x, y, indexing="ij")
    v = np.stack([gx, gy, np.zeros_like(gx)], -1).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    a = (i * (n + 1) + j).ravel()
    b, c, d = a + n + 1, a + n + 2, a + 1
    return Surface(v, np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)]))


def tilted_plane(lo: float, hi: float, height: float, slope: float) -> Surface:
    """The plane z = height + slope * x over [lo, hi]^2 as two triangles: a point (x, y, 0) lies
    (height + slope x) / sqrt(1 + slope^2) from it wherever its foot falls inside."""
    corners = np.array([[lo, lo], [hi, lo], [hi, hi], [lo, hi]])
    return Surface(
        np.column_stack([corners, height + slope * corners[:, 0]]),
        np.array([[0, 1, 2], [0, 2, 3]]),
    )
