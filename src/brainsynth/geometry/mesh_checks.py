"""Cheap validity checks for triangle meshes that move: flipped faces and self-intersections.

* ``flipped_faces``: faces whose normal turned by more than 90 degrees relative to a reference
  embedding of the same connectivity (the mean shape, the mesh before a move). A face that folds
  over its neighbours flips; this is the usual first symptom of a mesh running into itself.
* ``self_intersections``: pairs of non-adjacent faces that cross. Candidates come from a KD-tree of
  face centroids (two triangles can only meet if their centroids lie within the sum of their
  bounding radii); each candidate pair is tested exactly by segment-triangle crossings (two
  non-coplanar triangles intersect iff an edge of one crosses the other). Coplanar overlaps and
  crossings between faces that share a vertex are not reported (the flip test covers folds at a
  shared edge). Meant for small and medium meshes (up to ~50k faces): the number of candidate
  pairs grows with the longest triangle.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def face_normals(vertices: np.ndarray, faces: np.ndarray, unit: bool = True) -> np.ndarray:
    """Face normals (M, 3), right-handed in the face's vertex order; unit length if ``unit``
    (degenerate faces get a zero normal)."""
    tri = np.asarray(vertices, dtype=np.float64)[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    if unit:
        n = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-300)
    return n


def flipped_faces(vertices: np.ndarray, faces: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Boolean (M,): the face's normal on ``vertices`` points against (dot <= 0) its normal on
    ``reference`` (same connectivity, e.g. the mean mesh or the mesh before a move). Faces that
    collapsed to zero area count as flipped."""
    a = face_normals(vertices, faces, unit=False)
    b = face_normals(reference, faces, unit=False)
    return np.einsum("ij,ij->i", a, b) <= 0


def _segments_cross_triangles(
    p0: np.ndarray, p1: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray, tol: float
) -> np.ndarray:
    """Row-wise: does segment p0-p1 cross the interior of triangle abc? (Moller-Trumbore with the
    ray parameter restricted to the segment; all arrays (P, 3).) Parallel segments never cross."""
    d = p1 - p0
    e1, e2 = b - a, c - a
    h = np.cross(d, e2)
    det = np.einsum("ij,ij->i", e1, h)
    scale = np.linalg.norm(d, axis=1) * np.linalg.norm(e1, axis=1) * np.linalg.norm(e2, axis=1)
    ok = np.abs(det) > 1e-12 * np.maximum(scale, 1e-300)
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    s = p0 - a
    u = inv * np.einsum("ij,ij->i", s, h)
    q = np.cross(s, e1)
    v = inv * np.einsum("ij,ij->i", d, q)
    t = inv * np.einsum("ij,ij->i", e2, q)
    # strict inside (by ``tol``): touching at an edge or a vertex is not a crossing
    return ok & (u > tol) & (v > tol) & (u + v < 1 - tol) & (t > tol) & (t < 1 - tol)


def self_intersections(
    vertices: np.ndarray, faces: np.ndarray, tol: float = 1e-9, chunk: int = 200_000
) -> np.ndarray:
    """Pairs of faces (P, 2), ``i < j``, that share no vertex and cross each other (module
    docstring for what is and is not detected). Empty (0, 2) for a clean mesh."""
    v = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    tri = v[faces]  # (M, 3, 3)
    centre = tri.mean(axis=1)
    radius = np.linalg.norm(tri - centre[:, None], axis=2).max(axis=1)
    tree = cKDTree(centre)
    pairs = tree.query_pairs(2.0 * float(radius.max()) + 1e-12, output_type="ndarray")
    if len(pairs) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    i, j = pairs[:, 0], pairs[:, 1]
    near = np.linalg.norm(centre[i] - centre[j], axis=1) <= radius[i] + radius[j] + 1e-12
    shares = (faces[i][:, :, None] == faces[j][:, None, :]).any(axis=(1, 2))
    pairs = np.sort(pairs[near & ~shares], axis=1)
    hits = []
    for start in range(0, len(pairs), chunk):
        pi, pj = pairs[start : start + chunk, 0], pairs[start : start + chunk, 1]
        ti, tj = tri[pi], tri[pj]
        crossed = np.zeros(len(pi), dtype=bool)
        for one, other in ((ti, tj), (tj, ti)):
            for k in range(3):
                crossed |= _segments_cross_triangles(
                    one[:, k], one[:, (k + 1) % 3], other[:, 0], other[:, 1], other[:, 2], tol
                )
        hits.append(pairs[start : start + chunk][crossed])
    out = np.concatenate(hits) if hits else np.zeros((0, 2), dtype=np.int64)
    return out[np.lexsort((out[:, 1], out[:, 0]))]
