"""Inside tests of points against closed meshes (generalised winding numbers by a sheared ray)
and keeping nested surfaces apart: white inside pial, the two hemispheres' pial surfaces apart
(``geometry.extract``'s notes, step 5)."""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.spatial import cKDTree

from brainsynth.data.phantom_surfaces import adjacency, vertex_normals
from brainsynth.evaluation.surface import distances_to_mesh
from brainsynth.io import Surface

# --- inside test and crossing ------------------------------------------------------------------

_SHEAR = (0.0137, 0.0241)  # a generic ray direction (module docstring)


def winding_numbers(points: np.ndarray, surface: Surface, chunk: int = 20_000) -> np.ndarray:
    """Winding number (int, (N,)) of ``surface`` (closed, outward-oriented) around each point
    (N, 3): 1 inside, 0 outside (module docstring)."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    v, f = surface.vertices, surface.faces
    sx, sy = _SHEAR
    vx, vy, vz = v[:, 0] + sx * v[:, 2], v[:, 1] + sy * v[:, 2], v[:, 2]
    px, py, pz = p[:, 0] + sx * p[:, 2], p[:, 1] + sy * p[:, 2], p[:, 2]
    tx, ty = vx[f], vy[f]
    area2 = (tx[:, 1] - tx[:, 0]) * (ty[:, 2] - ty[:, 0]) - (ty[:, 1] - ty[:, 0]) * (
        tx[:, 2] - tx[:, 0]
    )
    keep = area2 != 0
    f, tx, ty, area2 = f[keep], tx[keep], ty[keep], area2[keep]
    out = np.zeros(len(p), dtype=np.int64)
    if len(f) == 0 or len(p) == 0:
        return out
    # bucket triangles by the cells of a 2D grid their xy bounding boxes cover
    span = np.concatenate([tx.max(1) - tx.min(1), ty.max(1) - ty.min(1)])
    h = max(float(np.median(span)), 1e-6)
    x0, y0 = float(tx.min()), float(ty.min())
    ix0 = np.floor((tx.min(1) - x0) / h).astype(np.int64)
    ix1 = np.floor((tx.max(1) - x0) / h).astype(np.int64)
    iy0 = np.floor((ty.min(1) - y0) / h).astype(np.int64)
    iy1 = np.floor((ty.max(1) - y0) / h).astype(np.int64)
    nx, ny = int(ix1.max()) + 1, int(iy1.max()) + 1
    pcx = np.floor((px - x0) / h).astype(np.int64)
    pcy = np.floor((py - y0) / h).astype(np.int64)
    valid = (pcx >= 0) & (pcy >= 0) & (pcx < nx) & (pcy < ny)
    pkey = np.where(valid, pcx * ny + pcy, -1)
    # only the triangles whose box holds a query point (a summed-area table of occupied cells):
    # a local recheck of a few points then costs little
    occ = np.zeros((nx + 1, ny + 1), dtype=np.int64)
    np.add.at(occ, (pcx[valid] + 1, pcy[valid] + 1), 1)
    occ = occ.cumsum(0).cumsum(1)
    hits = occ[ix1 + 1, iy1 + 1] - occ[ix0, iy1 + 1] - occ[ix1 + 1, iy0] + occ[ix0, iy0]
    rel = np.flatnonzero(hits > 0)
    f, tx, ty, area2 = f[rel], tx[rel], ty[rel], area2[rel]
    ix0, ix1, iy0, iy1 = ix0[rel], ix1[rel], iy0[rel], iy1[rel]
    nx_t, ny_t = ix1 - ix0 + 1, iy1 - iy0 + 1
    n_cells = nx_t * ny_t
    tri = np.repeat(np.arange(len(f)), n_cells)
    local = np.arange(len(tri)) - np.repeat(np.cumsum(n_cells) - n_cells, n_cells)
    cx = ix0[tri] + local // ny_t[tri]
    cy = iy0[tri] + local % ny_t[tri]
    key = cx * ny + cy
    order = np.argsort(key, kind="stable")
    key, tri = key[order], tri[order]
    zf = vz[f]
    for start in range(0, len(p), chunk):
        sl = slice(start, start + chunk)
        lo = np.searchsorted(key, pkey[sl], side="left")
        hi = np.searchsorted(key, pkey[sl], side="right")
        cnt = np.where(pkey[sl] >= 0, hi - lo, 0)
        if cnt.sum() == 0:
            continue
        q = np.repeat(np.arange(start, start + len(cnt)), cnt)
        t = tri[np.repeat(lo, cnt) + np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)]
        qx, qy = px[q], py[q]
        ax, ay = tx[t, 0], ty[t, 0]
        bx, by = tx[t, 1], ty[t, 1]
        cx_, cy_ = tx[t, 2], ty[t, 2]
        w_c = (bx - ax) * (qy - ay) - (by - ay) * (qx - ax)  # opposite c: weight of c
        w_a = (cx_ - bx) * (qy - by) - (cy_ - by) * (qx - bx)
        w_b = (ax - cx_) * (qy - cy_) - (ay - cy_) * (qx - cx_)
        s = np.sign(area2[t])
        inside = (s * w_a > 0) & (s * w_b > 0) & (s * w_c > 0)
        zhit = (w_a * zf[t, 0] + w_b * zf[t, 1] + w_c * zf[t, 2]) / area2[t]
        hit = inside & (zhit > pz[q])
        np.add.at(out, q[hit], s[hit].astype(np.int64))
    return out


def inside(points: np.ndarray, surface: Surface) -> np.ndarray:
    """Boolean (N,): the points inside the closed surface (winding number > 0)."""
    return winding_numbers(points, surface) > 0


def crossing_fraction(inner: Surface, outer: Surface) -> float:
    """Fraction of ``outer``'s vertices strictly inside ``inner`` (0 for nested surfaces; e.g. pial
    vertices inside the white surface). Checked at vertices only."""
    return float(inside(outer.vertices, inner).mean())


def longest_edge(surface: Surface) -> float:
    v, f = surface.vertices, surface.faces
    d = [v[f[:, k]] - v[f[:, (k + 1) % 3]] for k in range(3)]
    return float(np.sqrt(max(np.einsum("ij,ij->i", x, x).max() for x in d)))


def _wrong_side(
    points: np.ndarray, other: Surface, want_inside: bool, eps: float, tree: cKDTree
) -> np.ndarray:
    """Boolean: the points on the wrong side of the closed surface ``other`` (outside it when
    ``want_inside``, else inside it) or within ``eps`` of it."""
    ins = inside(points, other)
    bad = ~ins if want_inside else ins
    if eps > 0 and len(points):
        d_v, _ = tree.query(points)
        # the surface is at least (distance to its nearest vertex - longest edge) away
        near = np.flatnonzero(~bad & (d_v < eps + longest_edge(other) / np.sqrt(3.0)))
        if near.size:
            bad[near[distances_to_mesh(points[near], other) < eps]] = True
    return bad


def _relax(x: np.ndarray, a: sparse.csr_matrix, moved: np.ndarray) -> np.ndarray:
    """Two Laplacian steps on the moved vertices and their neighbours (spreads a push over its
    1-ring instead of leaving a spike); returns the band of vertices that moved."""
    band = moved | ((a @ moved.astype(np.float64)) > 0)
    for _ in range(2):
        x[band] += 0.5 * ((a @ x)[band] - x[band])
    return band


def _push(
    x: np.ndarray,
    bad: np.ndarray,
    target: Surface,
    tree: cKDTree,
    offset: np.ndarray,
) -> None:
    """Move the ``bad`` vertices to their nearest ``target`` vertex + ``offset`` x its outward
    normal (a negative offset goes inward)."""
    _, j = tree.query(x[bad])
    x[bad] = target.vertices[j] + offset[:, None] * vertex_normals(target.vertices, target.faces)[j]


def points_near(points: np.ndarray, targets: list[np.ndarray], radius: float) -> list[np.ndarray]:
    """For each array of ``targets``: boolean, within ``radius`` of one of ``points``."""
    if len(points) == 0:
        return [np.zeros(len(t), dtype=bool) for t in targets]
    tree = cKDTree(points)
    return [np.isfinite(tree.query(t, distance_upper_bound=radius)[0]) for t in targets]


def separate_surfaces(
    white: Surface,
    pial: Surface,
    eps_mm: float = 0.1,
    rounds: int = 6,
    check_white: np.ndarray | None = None,
    check_pial: np.ndarray | None = None,
    full_check: bool = True,
) -> tuple[Surface, Surface, dict]:
    """Move vertices so that every pial vertex is outside the white surface and every white vertex
    inside the pial one, by at least ``eps_mm`` (module docstring, step 5).

    Each round checks the vertices that may have changed side (all at first, then those near a
    vertex moved in the round before), pulls the white vertices outside (or within ``eps_mm`` of)
    the pial surface in to ``2 eps_mm`` inside the nearest pial vertex (doubling that offset for a
    vertex that needs a second pull), then pushes the pial vertices inside the white surface out
    likewise, and relaxes the moved vertices with their neighbours (not in the last round). White
    goes first so that where the two masks coincide (the medial wall, cortex missing from the
    labels) the white surface moves in and the pial surface stays on the mask's boundary, as
    FreeSurfer's pial and white coincide on the medial wall: the two hemispheres' pial surfaces
    then meet at the midline without overlapping. Returns the new (white, pial)
    and ``pial_moved``, ``white_moved`` (vertices moved), ``pial_inside_white``,
    ``white_outside_pial`` (fractions of vertices on the wrong side after the fix, full check) and
    ``rounds``. ``check_white``/``check_pial`` (boolean per vertex): check only those in the first
    round (after a local change); default all. ``full_check=False`` skips the final check (the
    two fractions are then NaN)."""
    wv, pv = white.vertices.copy(), pial.vertices.copy()
    wf, pf = white.faces, pial.faces
    aw, ap = adjacency(wf, len(wv)), adjacency(pf, len(pv))
    p_push = np.zeros(len(pv), dtype=np.int64)  # times pushed, for the escalating offset
    w_push = np.zeros(len(wv), dtype=np.int64)
    p_moved = np.zeros(len(pv), dtype=bool)
    w_moved = np.zeros(len(wv), dtype=bool)
    check_p = np.ones(len(pv), dtype=bool) if check_pial is None else check_pial.copy()
    check_w = np.ones(len(wv), dtype=bool) if check_white is None else check_white.copy()
    reach = max(longest_edge(white), longest_edge(pial))
    done = 0
    for r in range(rounds):
        last = r == rounds - 1
        p_old, w_old = pv.copy(), wv.copy()
        p_surf = Surface(pv, pf)
        idx = np.flatnonzero(check_w)
        bad_w = np.zeros(len(wv), dtype=bool)
        bad_w[idx] = _wrong_side(wv[idx], p_surf, True, eps_mm, cKDTree(pv))
        if bad_w.any():
            off = -2.0 * eps_mm * 2.0 ** np.minimum(w_push[bad_w], 6)
            _push(wv, bad_w, p_surf, cKDTree(pv), off)
            w_push[bad_w] += 1
            if not last:
                _relax(wv, aw, bad_w)
        w_surf = Surface(wv, wf)
        idx = np.flatnonzero(check_p)
        bad_p = np.zeros(len(pv), dtype=bool)
        bad_p[idx] = _wrong_side(pv[idx], w_surf, False, eps_mm, cKDTree(wv))
        if bad_p.any():
            off = 2.0 * eps_mm * 2.0 ** np.minimum(p_push[bad_p], 6)
            _push(pv, bad_p, w_surf, cKDTree(wv), off)
            p_push[bad_p] += 1
            if not last:
                _relax(pv, ap, bad_p)
        done = r + 1
        ch_p = np.any(pv != p_old, axis=1)
        ch_w = np.any(wv != w_old, axis=1)
        p_moved |= ch_p
        w_moved |= ch_w
        if not ch_p.any() and not ch_w.any():
            break
        # a vertex can only change side where a moved vertex's triangles swept past it
        pts = np.concatenate([pv[ch_p], p_old[ch_p], wv[ch_w], w_old[ch_w]])
        shift = max(
            float(np.linalg.norm(pv - p_old, axis=1).max()),
            float(np.linalg.norm(wv - w_old, axis=1).max()),
        )
        check_p, check_w = points_near(pts, [pv, wv], 2 * reach + shift + 2 * eps_mm)
    new_w, new_p = Surface(wv, wf, dict(white.meta)), Surface(pv, pf, dict(pial.meta))
    stats = {
        "pial_moved": int(p_moved.sum()),
        "white_moved": int(w_moved.sum()),
        "pial_inside_white": crossing_fraction(new_w, new_p) if full_check else float("nan"),
        "white_outside_pial": float((~inside(wv, new_p)).mean()) if full_check else float("nan"),
        "rounds": done,
    }
    return new_w, new_p, stats


def separate_hemispheres(
    lh: Surface,
    rh: Surface,
    eps_mm: float = 0.1,
    rounds: int = 3,
    check_lh: np.ndarray | None = None,
    check_rh: np.ndarray | None = None,
    full_check: bool = True,
) -> tuple[Surface, Surface, dict]:
    """Move the vertices of the left pial surface that lie inside the right one (or within
    ``eps_mm`` of it) out to ``2 eps_mm`` beyond the nearest right vertex, then the right ones
    against the moved left surface, for a few rounds (checking, relaxing and escalating as
    ``separate_surfaces`` does). Smoothing can push the medial faces of two hemispheres that touch
    in the label map a little across each other (Taubin's inflation step). Returns the new
    (lh, rh) and ``lh_moved``, ``rh_moved`` (boolean per vertex), ``lh_inside_rh``,
    ``rh_inside_lh`` (fractions after, full check). ``check_lh``, ``check_rh``, ``full_check``: as
    in ``separate_surfaces``."""
    verts = {"lh": lh.vertices.copy(), "rh": rh.vertices.copy()}
    faces = {"lh": lh.faces, "rh": rh.faces}
    adj = {h: adjacency(faces[h], len(verts[h])) for h in verts}
    pushes = {h: np.zeros(len(verts[h]), dtype=np.int64) for h in verts}
    moved = {h: np.zeros(len(verts[h]), dtype=bool) for h in verts}
    given = {"lh": check_lh, "rh": check_rh}
    check = {
        h: np.ones(len(verts[h]), dtype=bool) if c is None else c.copy() for h, c in given.items()
    }
    reach = max(longest_edge(lh), longest_edge(rh))
    for r in range(rounds):
        old = {h: verts[h].copy() for h in verts}
        for h, o in (("lh", "rh"), ("rh", "lh")):
            other = Surface(verts[o], faces[o])
            tree = cKDTree(verts[o])
            idx = np.flatnonzero(check[h])
            bad = np.zeros(len(verts[h]), dtype=bool)
            bad[idx] = _wrong_side(verts[h][idx], other, False, eps_mm, tree)
            if bad.any():
                off = 2.0 * eps_mm * 2.0 ** np.minimum(pushes[h][bad], 6)
                _push(verts[h], bad, other, tree, off)
                pushes[h][bad] += 1
                if r < rounds - 1:
                    _relax(verts[h], adj[h], bad)
        changed = {h: np.any(verts[h] != old[h], axis=1) for h in verts}
        for h in verts:
            moved[h] |= changed[h]
        if not any(c.any() for c in changed.values()):
            break
        pts = np.concatenate([a[changed[h]] for h in verts for a in (verts[h], old[h])])
        shift = max(float(np.linalg.norm(verts[h] - old[h], axis=1).max()) for h in verts)
        check["lh"], check["rh"] = points_near(
            pts, [verts["lh"], verts["rh"]], 2 * reach + shift + 2 * eps_mm
        )
    new_l = Surface(verts["lh"], faces["lh"], dict(lh.meta))
    new_r = Surface(verts["rh"], faces["rh"], dict(rh.meta))
    stats = {
        "lh_moved": moved["lh"],
        "rh_moved": moved["rh"],
        "lh_inside_rh": crossing_fraction(new_r, new_l) if full_check else float("nan"),
        "rh_inside_lh": crossing_fraction(new_l, new_r) if full_check else float("nan"),
    }
    return new_l, new_r, stats
