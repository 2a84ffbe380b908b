"""Mesh -> signed distance on an image grid: seconds and accuracy of ``geometry.sdf.signed_distance``.

    .venv/bin/python benchmarks/sdf.py                           # S1 lh pial, 128^3 around it
    .venv/bin/python benchmarks/sdf.py --grid t1w                # the T1w's grid resampled to 128^3
    .venv/bin/python benchmarks/sdf.py --surface lh.white --size 96 --runs 5

Times ``signed_distance`` (median of ``--runs``) on a real pial hemisphere (default: pycortex S1,
152,893 vertices, from ../shared/data) and, in the same run, any library peer that imports
(point-cloud-utils, open3d, libigl; each timed on the same voxel centres). Accuracy against a slow
exact reference on random voxels: the distance by ``evaluation.surface.distances_to_mesh``
(point-to-triangle, exact; ``--samples`` voxels, half of them within 3 mm of the surface) and the sign
by the generalised winding number (sum of the triangles' solid angles / 4 pi, brute force over all
triangles; ``--sign-samples`` voxels, half of them within 3 mm of the surface). Prints a Markdown table
with the machine, its load average and the number of cores. Nothing here is asserted by the tests.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

from brainsynth.evaluation.surface import distances_to_mesh
from brainsynth.geometry.sdf import inside_mask, signed_distance
from brainsynth.io import Surface, read_surface, read_volume

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "pycortex_s1" / "sub-S1"
DEFAULT_SURFACE = SHARED / "surf" / "sub-S1_hemi-L_pial.surf.gii"
DEFAULT_T1W = SHARED / "anat" / "sub-S1_T1w.nii.gz"


def bbox_grid(surface: Surface, size: int, margin: float = 0.04) -> np.ndarray:
    """Isotropic size^3 grid centred on the mesh's bounding box, its longest side + ``margin``."""
    lo, hi = surface.vertices.min(0), surface.vertices.max(0)
    h = float((hi - lo).max() * (1 + margin) / size)
    aff = np.diag([h, h, h, 1.0])
    aff[:3, 3] = (lo + hi) / 2 - h * (size - 1) / 2
    return aff


def resampled_grid(affine: np.ndarray, shape: tuple[int, ...], size: int) -> np.ndarray:
    """The field of view of (affine, shape) covered by size^3 voxels (voxel i of the new grid is at
    old voxel (i + 0.5) f - 0.5, f = old / new)."""
    f = np.asarray(shape[:3], float) / size
    scale = np.eye(4)
    scale[:3, :3] = np.diag(f)
    scale[:3, 3] = (f - 1) / 2
    return affine @ scale


def voxel_world(flat: np.ndarray, shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    ijk = np.stack(np.unravel_index(flat, shape), axis=1).astype(np.float64)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def winding_number(points: np.ndarray, surface: Surface, chunk: int = 16) -> np.ndarray:
    """Generalised winding number (brute force): sum over triangles of the signed solid angle
    (Van Oosterom & Strackee) / 4 pi. ~1 inside an outward-oriented closed mesh, ~0 outside."""
    tri = surface.vertices[surface.faces]
    out = np.empty(len(points))
    for s in range(0, len(points), chunk):
        p = points[s : s + chunk]
        a, b, c = (tri[None, :, k] - p[:, None] for k in range(3))  # (P, M, 3)
        la, lb, lc = (np.linalg.norm(x, axis=2) for x in (a, b, c))
        num = np.einsum("pmi,pmi->pm", a, np.cross(b, c))
        den = (
            la * lb * lc
            + np.einsum("pmi,pmi->pm", a, b) * lc
            + np.einsum("pmi,pmi->pm", b, c) * la
            + np.einsum("pmi,pmi->pm", c, a) * lb
        )
        out[s : s + chunk] = 2 * np.arctan2(num, den).sum(axis=1) / (4 * np.pi)
    return out


def peers() -> dict:
    """Library SDFs that import here: name -> f(points, vertices, faces) -> signed distances."""
    found = {}
    try:
        import point_cloud_utils as pcu

        def _pcu(p, v, f):
            return pcu.signed_distance_to_mesh(p, v.astype(np.float64), f.astype(np.int32))[0]

        found["point-cloud-utils"] = _pcu
    except ImportError:
        pass
    try:
        import open3d as o3d

        def _o3d(p, v, f):
            scene = o3d.t.geometry.RaycastingScene()
            scene.add_triangles(v.astype(np.float32), f.astype(np.uint32))
            return scene.compute_signed_distance(p.astype(np.float32)).numpy()

        found["open3d"] = _o3d
    except ImportError:
        pass
    try:
        import igl

        def _igl(p, v, f):
            return igl.signed_distance(p, v, f.astype(np.int64))[0]

        found["libigl"] = _igl
    except ImportError:
        pass
    return found


def stratified(rng: np.random.Generator, near_flat: np.ndarray, n_vox: int, n: int) -> np.ndarray:
    """n voxel indices: half among ``near_flat``, half uniform over the grid."""
    near = rng.choice(near_flat, size=min(n // 2, len(near_flat)), replace=False)
    rest = rng.choice(n_vox, size=n - len(near), replace=False)
    return np.concatenate([near, rest])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--surface", type=Path, default=DEFAULT_SURFACE)
    ap.add_argument("--grid", choices=["bbox", "t1w"], default="bbox")
    ap.add_argument("--t1w", type=Path, default=DEFAULT_T1W, help="for --grid t1w")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--band", type=float, default=1.5, help="exact band, voxels")
    ap.add_argument("--refine", type=int, default=1)
    ap.add_argument("--samples", type=int, default=20_000, help="voxels for the distance check")
    ap.add_argument("--sign-samples", type=int, default=300, help="voxels for the winding check")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    surface = read_surface(a.surface)
    shape = (a.size, a.size, a.size)
    if a.grid == "bbox":
        affine = bbox_grid(surface, a.size)
    else:
        t1w = read_volume(a.t1w)
        affine = resampled_grid(t1w.affine, t1w.data.shape, a.size)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    load = os.getloadavg()
    print(
        f"# {platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores "
        f"available, load average {load[0]:.2f} / {load[1]:.2f} (1 / 5 min), numpy {np.__version__}"
    )
    print(
        f"# {a.surface.name}: {surface.n_vertices} vertices, {len(surface.faces)} faces; "
        f"grid {a.grid} {shape}, voxel {np.round(spacing, 3).tolist()} mm; band {a.band} voxels, "
        f"refine {a.refine}"
    )

    times = []
    for _ in range(a.runs):
        t0 = time.perf_counter()
        sdf = signed_distance(surface, shape, affine, band=a.band, refine=a.refine)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    inside_mask(surface, shape, affine)
    t_sign = time.perf_counter() - t0

    rng = np.random.default_rng(a.seed)
    near_flat = np.flatnonzero(np.abs(sdf.ravel()) < 3.0)
    n_vox = sdf.size
    idx = stratified(rng, near_flat, n_vox, a.samples)
    pts = voxel_world(idx, shape, affine)
    t0 = time.perf_counter()
    exact = distances_to_mesh(pts, surface)
    t_exact = time.perf_counter() - t0
    err = np.abs(sdf.ravel()[idx]) - exact
    band_mm = a.band * spacing.max()
    in_band = exact <= band_mm

    sidx = stratified(rng, near_flat, n_vox, a.sign_samples)
    t0 = time.perf_counter()
    wn = winding_number(voxel_world(sidx, shape, affine), surface)
    t_wn = time.perf_counter() - t0
    ref_inside = np.abs(wn) > 0.5
    agree = float(((sdf.ravel()[sidx] < 0) == ref_inside).mean() * 100)

    rows = [
        (
            "ours: signed_distance",
            f"{np.median(times):.2f}",
            f"runs {', '.join(f'{t:.2f}' for t in times)}; sign alone {t_sign:.2f} s",
        ),
        (
            "exact reference (distances_to_mesh)",
            f"~{t_exact * n_vox / len(idx):.0f} (extrap.)",
            f"{t_exact:.1f} s for {len(idx)} voxels",
        ),
        (
            "winding-number sign reference",
            f"~{t_wn * n_vox / len(sidx):.0f} (extrap.)",
            f"{t_wn:.1f} s for {len(sidx)} voxels",
        ),
    ]
    grid_pts = voxel_world(np.arange(n_vox), shape, affine)
    found = peers()
    for name, fn in found.items():
        t0 = time.perf_counter()
        theirs = np.asarray(fn(grid_pts, surface.vertices, surface.faces)).reshape(shape)
        t_peer = time.perf_counter() - t0
        diff = np.abs(np.abs(theirs.ravel()[idx]) - exact)
        sign_ok = float(((theirs.ravel()[sidx] < 0) == ref_inside).mean() * 100)
        rows.append((name, f"{t_peer:.2f}", f"max |err| {diff.max():.3f} mm, sign {sign_ok:.2f} %"))
    if not found:
        rows.append(("library peers", "-", "none importable (point-cloud-utils, open3d, libigl)"))

    print("\n| method | seconds | notes |\n| --- | --- | --- |")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
    print(
        f"\nAccuracy of ours on {len(idx)} voxels ({int(in_band.sum())} within the {band_mm:.2f} mm "
        f"band, half of all within 3 mm of the surface):"
    )
    print("\n| voxels | n | max abs diff (mm) | mean abs diff (mm) | min signed diff (mm) |")
    print("| --- | --- | --- | --- | --- |")
    for name, m in (
        ("all", np.ones_like(in_band)),
        ("band", in_band),
        ("beyond band", ~in_band),
        ("beyond band, < 10 mm", ~in_band & (exact < 10)),
    ):
        if m.any():
            e = err[m]
            print(
                f"| {name} | {int(m.sum())} | {np.abs(e).max():.4f} | {np.abs(e).mean():.4f} | "
                f"{e.min():.2e} |"
            )
    print(
        f"\nSign agreement with the winding number: {agree:.2f} % of {len(sidx)} voxels "
        f"({int(ref_inside.sum())} inside; half within 3 mm of the surface)."
    )


if __name__ == "__main__":
    main()
