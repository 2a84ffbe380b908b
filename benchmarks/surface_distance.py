"""Surface distances (ASSD / HD95 / HD): seconds and values of ``surface_distances``.

    .venv/bin/python benchmarks/surface_distance.py                 # S1 lh pial vs white + analytic
    .venv/bin/python benchmarks/surface_distance.py --old 2000 --brute 50 --densities 1 4

Real meshes (default: pycortex S1 lh pial vs lh white from ../shared/data, 152,893 vertices each):
the new area-weighted metric, timed (index building included), at ``--densities`` quadrature points
per mm^2. Exactness: ``--brute`` random quadrature points against a brute-force minimum over every
triangle (``point_triangle_distance``). The former method, kept below as ``old_*`` for this
comparison only: its vertex-ball search timed on ``--old`` random query points and extrapolated to
its whole query set (the vertices + 1 area-uniform sample per mm^2, max 500,000); its value (the
mean over that pooled set) is computed with the new search, the distances of the two being equal
(checked on the same points). Analytic cases of very uneven vertex density: latitude-longitude
spheres shifted along their pole axis, and a graded square against a tilted plane. Prints Markdown
tables with the machine, its load average and the number of cores. Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import time
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from brainsynth.evaluation import surface as sf
from brainsynth.geometry.primitives import graded_square, tilted_plane, uv_sphere
from brainsynth.io import Surface, read_surface

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "pycortex_s1" / "sub-S1" / "surf"
DEFAULT_A = SHARED / "sub-S1_hemi-L_pial.surf.gii"
DEFAULT_B = SHARED / "sub-S1_hemi-L_white.surf.gii"


# --- the former method, for comparison only ----------------------------------------------------


def old_distances_to_mesh(points: np.ndarray, surface: Surface, chunk: int = 4096) -> np.ndarray:
    """The former search: a KD-tree of vertices; the candidates of ``p`` are the faces around every
    vertex within ``d_v + L`` (``d_v``: distance to the nearest vertex, ``L``: the longest edge)."""
    v, f = surface.vertices, surface.faces
    pts = np.asarray(points, dtype=np.float64)
    tree = cKDTree(v)
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    longest = float(np.linalg.norm(v[edges[:, 0]] - v[edges[:, 1]], axis=1).max())
    order = np.argsort(f.ravel(), kind="stable")
    counts = np.bincount(f.ravel(), minlength=len(v))
    indptr = np.concatenate([[0], np.cumsum(counts)])
    vf = order // 3
    out = np.empty(len(pts))
    for start in range(0, len(pts), chunk):
        p = pts[start : start + chunk]
        d_v, _ = tree.query(p)
        best = d_v.copy()
        balls = tree.query_ball_point(p, d_v + longest + 1e-9)
        lengths = np.fromiter((len(x) for x in balls), dtype=np.int64, count=len(balls))
        verts = np.fromiter(itertools.chain.from_iterable(balls), dtype=np.int64)
        pt = np.repeat(np.arange(len(p)), lengths)
        n_inc = indptr[verts + 1] - indptr[verts]
        pt = np.repeat(pt, n_inc)
        first = np.repeat(indptr[verts], n_inc)
        offset = np.arange(len(pt)) - np.repeat(np.cumsum(n_inc) - n_inc, n_inc)
        fi = vf[first + offset]
        if len(fi):
            d = sf.point_triangle_distance(p[pt], v[f[fi, 0]], v[f[fi, 1]], v[f[fi, 2]])
            np.minimum.at(best, pt, d)
        out[start : start + len(p)] = best
    return out


def old_pooled_points(surface: Surface, seed: int) -> np.ndarray:
    """The former query set: the vertices + area-uniform samples (1 per mm^2, max 500,000)."""
    return sf.sample_surface(surface, 1.0, 500_000, seed)


# --- analytic meshes of uneven vertex density --------------------------------------------------


def analytic_rows() -> list[tuple[str, float, float, float, float]]:
    """(case, analytic, new, old pooled, seconds of the new)."""
    rows = []
    radius, d = 20.0, 1.5
    a, b = uv_sphere(60, 120, radius), uv_sphere(60, 120, radius, (0.0, 0.0, d))
    u = np.linspace(-1, 1, 400_001)
    dist = np.abs(np.sqrt(radius**2 + d**2 - 2 * radius * d * u) - radius)
    t0 = time.perf_counter()
    r = sf.surface_distances(a, b)
    t = time.perf_counter() - t0
    old = (
        sf.distances_to_mesh(old_pooled_points(a, 0), b).mean()
        + sf.distances_to_mesh(old_pooled_points(b, 1), a).mean()
    ) / 2
    name = f"UV spheres R {radius:g} mm, shifted {d:g} mm along the poles: ASSD"
    rows.append((name, float(dist.mean()), r["assd"], float(old), t))
    rows.append(("same: HD95", float(np.percentile(dist, 95)), r["hd95"], float("nan"), t))
    length, h, s = 40.0, 2.0, 0.1
    square = graded_square(length, 40)
    plane = tilted_plane(-20.0, length + 20.0, h, s)
    t0 = time.perf_counter()
    r = sf.surface_distances(square, plane)
    t = time.perf_counter() - t0
    old = sf.distances_to_mesh(old_pooled_points(square, 0), plane).mean()
    exact = (h + s * length / 2) / np.sqrt(1 + s * s)
    rows.append(("graded square -> tilted plane: directed mean", exact, r["mean_a_to_b"], old, t))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--a", type=Path, default=DEFAULT_A)
    ap.add_argument("--b", type=Path, default=DEFAULT_B)
    ap.add_argument("--densities", type=float, nargs="+", default=[1.0])
    ap.add_argument("--old", type=int, default=1000, help="query points for the old search")
    ap.add_argument("--brute", type=int, default=20, help="points for the brute-force check")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    load = os.getloadavg()
    print(
        f"# {platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores "
        f"available, load average {load[0]:.2f} / {load[1]:.2f} (1 / 5 min), numpy {np.__version__}"
    )
    ma, mb = read_surface(a.a), read_surface(a.b)
    print(
        f"# A = {a.a.name} ({ma.n_vertices} vertices, {len(ma.faces)} faces, "
        f"{sf.mesh_area(ma):.0f} mm^2); B = {a.b.name} ({mb.n_vertices} vertices, "
        f"{len(mb.faces)} faces, {sf.mesh_area(mb):.0f} mm^2)"
    )

    print("\n| method | seconds | points A + B | ASSD | HD95 | HD | mean A->B | mean B->A |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for density in a.densities:
        t0 = time.perf_counter()
        r = sf.surface_distances(ma, mb, samples_per_mm2=density, max_samples=None)
        t = time.perf_counter() - t0
        print(
            f"| new, area-weighted, {density:g}/mm^2 | {t:.1f} | {r['n_points'][0]} + "
            f"{r['n_points'][1]} | {r['assd']:.4f} | {r['hd95']:.4f} | {r['hd']:.4f} | "
            f"{r['mean_a_to_b']:.4f} | {r['mean_b_to_a']:.4f} |"
        )

    # the former method: value over its pooled query set (exact distances, by the new search)
    pa, pb = old_pooled_points(ma, a.seed), old_pooled_points(mb, a.seed + 1)
    t0 = time.perf_counter()
    da, db = sf.distances_to_mesh(pa, mb), sf.distances_to_mesh(pb, ma)
    t_new_search = time.perf_counter() - t0
    rng = np.random.default_rng(a.seed)
    sub_a = rng.choice(len(pa), min(a.old, len(pa)), replace=False)
    sub_b = rng.choice(len(pb), min(a.old, len(pb)), replace=False)
    t0 = time.perf_counter()
    old_a = old_distances_to_mesh(pa[sub_a], mb)
    old_b = old_distances_to_mesh(pb[sub_b], ma)
    t_old = time.perf_counter() - t0
    extrap = t_old * (len(pa) + len(pb)) / (len(sub_a) + len(sub_b))
    same = max(np.abs(old_a - da[sub_a]).max(), np.abs(old_b - db[sub_b]).max())
    print(
        f"| old, vertices + samples pooled | ~{extrap:.0f} (extrap. from {t_old:.1f} s for "
        f"{len(sub_a) + len(sub_b)} points; {t_new_search:.1f} s by the new search) | {len(pa)} + "
        f"{len(pb)} | {(da.mean() + db.mean()) / 2:.4f} | "
        f"{max(np.percentile(da, 95), np.percentile(db, 95)):.4f} | "
        f"{max(da.max(), db.max()):.4f} | {da.mean():.4f} | {db.mean():.4f} |"
    )
    n_old = len(sub_a) + len(sub_b)
    print(f"\nOld and new search on the same {n_old} points: max |diff| {same:.1e} mm")

    if a.brute > 0:
        qa, _ = sf.surface_quadrature(ma)
        pts = qa[rng.choice(len(qa), a.brute, replace=False)]
        v, f = mb.vertices, mb.faces
        t0 = time.perf_counter()
        brute = np.array(
            [
                sf.point_triangle_distance(
                    np.repeat(p[None], len(f), 0), v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
                ).min()
                for p in pts
            ]
        )
        t_brute = time.perf_counter() - t0
        diff = np.abs(sf.distances_to_mesh(pts, mb) - brute).max()
        print(
            f"Brute force (every triangle of B) on {a.brute} quadrature points of A: max |diff| "
            f"{diff:.1e} mm ({t_brute:.1f} s)"
        )

    print("\nAnalytic cases, very uneven vertex density (old: vertices + 1 sample/mm^2 pooled):\n")
    print("| case | analytic | new | error | old pooled | error | seconds (new) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, exact, new, old, t in analytic_rows():
        old_s = "-" if np.isnan(old) else f"{old:.4f} | {100 * (old / exact - 1):+.1f} %"
        if np.isnan(old):
            old_s += " | -"
        print(
            f"| {name} | {exact:.4f} | {new:.4f} | {100 * (new / exact - 1):+.2f} % | {old_s} | "
            f"{t:.2f} |"
        )


if __name__ == "__main__":
    main()
