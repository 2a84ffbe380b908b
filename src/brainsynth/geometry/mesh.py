"""Closed triangle meshes from masks and their checks: marching cubes (level 0.4, vertices on the
edge midpoints; ``geometry.extract``'s notes, step 3), 1-to-4 subdivision, Taubin smoothing,
components, Euler characteristic, genus, watertightness."""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from brainsynth.data.phantom_surfaces import adjacency
from brainsynth.errors import InputError
from brainsynth.evaluation.surface import signed_volume
from brainsynth.geometry.topology import mask_bbox
from brainsynth.io import Surface

MC_LEVEL = 0.4  # geometry.extract's notes, step 3

# --- meshes ------------------------------------------------------------------------------------


def _edges(faces: np.ndarray) -> np.ndarray:
    return np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])


def mesh_components(faces: np.ndarray, n_vertices: int) -> tuple[int, np.ndarray]:
    """Connected components of the mesh's edge graph: (count, label per vertex). Unreferenced
    vertices count as components of their own."""
    e = _edges(np.asarray(faces))
    g = sparse.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n_vertices, n_vertices))
    n, labels = connected_components(g, directed=False)
    return int(n), labels


def euler_characteristic(faces: np.ndarray, n_vertices: int) -> int:
    """V - E + F of the mesh (V: referenced vertices, E: distinct undirected edges)."""
    f = np.asarray(faces)
    e = np.sort(_edges(f), axis=1)
    n_e = len(np.unique(e[:, 0] * np.int64(n_vertices) + e[:, 1]))
    n_v = len(np.unique(f))
    return int(n_v - n_e + len(f))


def genus(faces: np.ndarray, n_vertices: int) -> int:
    """Total genus of a closed orientable mesh: ``(2 C - (V - E + F)) / 2`` over its C connected
    components (0 for spheres, 1 per handle). Meaningless for open meshes (see ``is_closed``)."""
    f = np.asarray(faces)
    used = np.unique(f)
    remap = np.full(n_vertices, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    ff = remap[f]
    c, _ = mesh_components(ff, len(used))
    return (2 * c - euler_characteristic(ff, len(used))) // 2


def is_closed(faces: np.ndarray) -> tuple[bool, bool]:
    """(watertight, consistently oriented): every undirected edge bounds exactly two faces, and
    every directed edge occurs once (neighbouring faces traverse their shared edge oppositely)."""
    d = _edges(np.asarray(faces, dtype=np.int64))
    n = int(d.max()) + 1
    undirected = np.unique(np.sort(d, axis=1) @ np.array([n, 1]), return_counts=True)[1]
    directed = np.unique(d @ np.array([n, 1]), return_counts=True)[1]
    watertight = bool((undirected == 2).all())
    return watertight, bool(watertight and (directed == 1).all())


def _compact(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    used = np.unique(faces)
    remap = np.full(len(vertices), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return vertices[used], remap[faces]


def largest_mesh_component(surface: Surface) -> tuple[Surface, int]:
    """The connected piece with the most faces, and how many pieces were dropped."""
    n, lbl = mesh_components(surface.faces, surface.n_vertices)
    if n <= 1:
        return surface, 0
    face_lbl = lbl[surface.faces[:, 0]]
    sizes = np.bincount(face_lbl, minlength=n)
    best = int(np.argmax(sizes))
    v, f = _compact(surface.vertices, surface.faces[face_lbl == best])
    return Surface(v, f, dict(surface.meta)), int((sizes > 0).sum() - 1)


def marching_cubes_surface(
    mask: np.ndarray, affine: np.ndarray, subdivide: int = 0, level: float = MC_LEVEL
) -> Surface:
    """Closed, outward-oriented surface of a binary mask (X, Y, Z) in world mm (module docstring,
    step 3): marching cubes at ``level`` on the cropped, zero-padded mask, vertices moved to the
    midpoints of their grid edges, then ``subdivide`` rounds of 1-to-4 midpoint subdivision."""
    from skimage.measure import marching_cubes

    m = np.asarray(mask, dtype=bool)
    if not m.any():
        raise InputError(None, "empty mask: nothing to extract a surface from")
    lo, hi = mask_bbox(m, margin=0)
    crop = np.pad(m[tuple(slice(a, b) for a, b in zip(lo, hi))], 1).astype(np.float32)
    verts, faces, _, _ = marching_cubes(crop, level=level, allow_degenerate=True)
    vox = verts.astype(np.float64)
    # a vertex on a grid edge has one non-integer coordinate: put it halfway along the edge
    # (vertices the case tables put inside a cell, if any, have three and stay)
    frac = vox - np.floor(vox)
    off_grid = np.minimum(frac, 1 - frac) > 1e-6
    on_edge = off_grid.sum(axis=1) == 1
    snap = off_grid & on_edge[:, None]
    vox[snap] = np.floor(vox[snap]) + 0.5
    vox += lo - 1.0
    aff = np.asarray(affine, dtype=np.float64)
    v, f = _compact(vox @ aff[:3, :3].T + aff[:3, 3], faces.astype(np.int64))
    for _ in range(subdivide):
        v, f = subdivide_mesh(v, f)
    if signed_volume(Surface(v, f)) < 0:
        f = f[:, ::-1].copy()
    return Surface(v, f)


def subdivide_mesh(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-to-4 midpoint subdivision: a new vertex in the middle of each edge, each triangle split in
    four (same shape, same topology, orientation kept)."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    e = np.sort(_edges(f), axis=1)
    uniq, inv = np.unique(e[:, 0] * np.int64(len(v)) + e[:, 1], return_inverse=True)
    a, b = np.divmod(uniq, np.int64(len(v)))
    mid = len(v) + inv.reshape(3, -1).T  # (M, 3): midpoints of edges 01, 12, 20
    new_v = np.concatenate([v, 0.5 * (v[a] + v[b])])
    m01, m12, m20 = mid[:, 0], mid[:, 1], mid[:, 2]
    new_f = np.concatenate(
        [
            np.stack([f[:, 0], m01, m20], 1),
            np.stack([m01, f[:, 1], m12], 1),
            np.stack([m20, m12, f[:, 2]], 1),
            np.stack([m01, m12, m20], 1),
        ]
    )
    return new_v, new_f


def taubin_smooth(
    vertices: np.ndarray,
    faces: np.ndarray,
    iterations: int = 10,
    lam: float = 0.5,
    mu: float = -0.53,
) -> np.ndarray:
    """Taubin lambda/mu smoothing (Taubin 1995): per iteration ``x += lam (A x - x)`` then
    ``x += mu (A x - x)`` with ``A`` the neighbour average; ``mu < -lam`` undoes the shrinkage of
    the first step at low frequencies. Returns new vertices (N, 3)."""
    if not mu < -lam < 0:
        raise ValueError(f"Taubin smoothing needs mu < -lam < 0, got lam={lam}, mu={mu}")
    x = np.asarray(vertices, dtype=np.float64).copy()
    a = adjacency(np.asarray(faces), len(x))
    for _ in range(iterations):
        x += lam * (a @ x - x)
        x += mu * (a @ x - x)
    return x
