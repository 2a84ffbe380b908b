"""fsaverage5 surfaces fitted to the MNI152 2009 template, and mesh helpers for the phantoms.

nilearn ships fsaverage5 pial and white meshes (MNI305-like space) and the MNI152 2009 template, but
the two do not line up: the template's brain is ~6% larger and its folds differ from the average
surface's. We fit them once, without any data beyond those files:
1. a 12-parameter affine that puts the white vertices on the template's WM/GM boundary and the pial
   vertices on its tissue/CSF boundary (robust least squares on signed distance maps);
2. a few damped, smoothed moves of each vertex along its normal to the nearest boundary crossing.
What remains is the mismatch between an average surface and an average image (a few mm in deep
sulci); the phantom's labels come from the template's tissue maps, not from these surfaces.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy import sparse

from brainsynth.data.phantom_field import _apply, sample_points
from brainsynth.io import read_surface

HEMIS = ("L", "R")
KINDS = ("pial", "white")
_NILEARN_KIND = {"pial": "pial", "white": "white_matter"}
_NILEARN_HEMI = {"L": "left", "R": "right"}


def load_fsaverage5() -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """``{(hemi, kind): (vertices (N, 3) mm, faces (M, 3))}``: nilearn's packaged fsaverage5 GIfTI
    files, read directly (or through ``nilearn.datasets.load_fsaverage`` if they have moved)."""
    from brainsynth.data.phantom_template import nilearn_data_dir

    folder = nilearn_data_dir()
    out = {}
    for hemi in HEMIS:
        for kind in KINDS:
            path = (
                folder / "fsaverage5" / f"{kind}_{_NILEARN_HEMI[hemi]}.gii.gz" if folder else None
            )
            if path is not None and path.exists():
                s = read_surface(path)
                out[hemi, kind] = (s.vertices, s.faces)
    if len(out) == 4:
        return out
    from nilearn import datasets

    mesh = datasets.load_fsaverage("fsaverage5")
    for hemi in HEMIS:
        for kind in KINDS:
            part = mesh[_NILEARN_KIND[kind]].parts[_NILEARN_HEMI[hemi]]
            out[hemi, kind] = (
                np.asarray(part.coordinates, dtype=np.float64),
                np.asarray(part.faces, dtype=np.int64),
            )
    return out


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (N, 3); outward for FreeSurfer-ordered faces."""
    tri = vertices[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(n, faces[:, k], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def adjacency(faces: np.ndarray, n_vertices: int) -> sparse.csr_matrix:
    """Row-normalised vertex adjacency: ``A @ x`` averages ``x`` over each vertex's neighbours."""
    i = np.concatenate(
        [faces[:, 0], faces[:, 1], faces[:, 2], faces[:, 1], faces[:, 2], faces[:, 0]]
    )
    j = np.concatenate(
        [faces[:, 1], faces[:, 2], faces[:, 0], faces[:, 0], faces[:, 1], faces[:, 2]]
    )
    a = sparse.coo_matrix((np.ones(len(i)), (i, j)), shape=(n_vertices, n_vertices)).tocsr()
    a.data[:] = 1.0  # duplicate edges were summed
    deg = np.asarray(a.sum(axis=1)).ravel()
    return sparse.diags(1.0 / np.maximum(deg, 1)) @ a


def signed_distance(inside: np.ndarray, voxel_mm: float) -> np.ndarray:
    """Signed distance in mm to a mask's boundary: negative inside, positive outside."""
    return (
        (ndi.distance_transform_edt(~inside) - ndi.distance_transform_edt(inside)) * voxel_mm
    ).astype(np.float32)


def _affine_from(p: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] += p[:9].reshape(3, 3)
    m[:3, 3] = p[9:]
    return m


def fit_affine(
    points: list[np.ndarray],
    sdfs: list[np.ndarray],
    grid_affine: np.ndarray,
    iterations: int = 20,
    scale_mm: float = 2.0,
) -> np.ndarray:
    """4x4 world affine M minimising ``sum_k sum_i rho(sdf_k(M p_ki))``, rho soft-L1 (``scale_mm``).

    ``points[k]`` (N_k, 3) world mm go with ``sdfs[k]`` (mm) on the grid ``grid_affine``. Damped
    Gauss-Newton with iteratively reweighted residuals; the Jacobian is analytic,
    ``d sdf(M p) / dM = grad sdf(M p) p^T`` (12 x 12 normal equations: no large SVD).
    """
    inv = np.linalg.inv(grid_affine)
    stacked = [np.concatenate([s[None], np.stack(np.gradient(s))]) for s in sdfs]
    pts = np.concatenate(points)
    p = np.zeros(12)
    for _ in range(iterations):
        m = _affine_from(p)
        vals = np.concatenate(
            [sample_points(f, _apply(inv @ m, q)) for q, f in zip(points, stacked)]
        )
        r, g_world = vals[:, 0], vals[:, 1:] @ inv[:3, :3]  # d sdf / d world
        jac = np.concatenate([np.repeat(g_world, 3, axis=1) * np.tile(pts, 3), g_world], axis=1)
        w = 1.0 / np.sqrt(1.0 + (r / scale_mm) ** 2)  # IRLS weights of soft-L1
        jtj = np.einsum("ni,n,nj->ij", jac, w, jac)
        step = np.linalg.solve(
            jtj + 1e-3 * np.diag(np.diag(jtj)), -np.einsum("ni,n->i", jac, w * r)
        )
        p = p + step
        if np.abs(step).max() < 1e-4:
            break
    return _affine_from(p)


def _crossings(profile: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Offset of the outward-decreasing 0.5 crossing nearest to 0 per row of ``profile`` (NaN if none)."""
    a, b = profile[:, :-1] - 0.5, profile[:, 1:] - 0.5
    hit = (a >= 0) & (b < 0)
    frac = a / np.where(hit, a - b, 1.0)
    where = offsets[:-1] + frac * (offsets[1] - offsets[0])
    dist = np.where(hit, np.abs(where), np.inf)
    best = dist.argmin(axis=1)
    out = where[np.arange(len(where)), best]
    return np.where(np.isfinite(dist.min(axis=1)), out, np.nan)


def refine_along_normals(
    vertices: np.ndarray,
    faces: np.ndarray,
    prob: np.ndarray,
    prob_affine: np.ndarray,
    iters: int = 3,
    reach_mm: float = 4.0,
    max_step_mm: float = 1.5,
) -> np.ndarray:
    """Move vertices along their normals towards the nearest 0.5 crossing of ``prob`` (inside > 0.5).

    Each move is smoothed over the mesh (so the surface stays regular), damped and capped, which
    keeps the fit from jumping into a neighbouring gyrus.
    """
    v = vertices.copy()
    adj = adjacency(faces, len(v))
    offsets = np.arange(-reach_mm, reach_mm + 1e-6, 0.5)
    inv = np.linalg.inv(prob_affine)
    for _ in range(iters):
        n = vertex_normals(v, faces)
        pts = v[:, None, :] + offsets[None, :, None] * n[:, None, :]
        prof = sample_points(prob[None], _apply(inv, pts.reshape(-1, 3)))[:, 0]
        step = np.nan_to_num(_crossings(prof.reshape(len(v), -1), offsets))
        for _ in range(5):
            step = adj @ step
        v = v + 0.7 * np.clip(step, -max_step_mm, max_step_mm)[:, None] * n
    return v


def rasterize_filled(
    vertices: np.ndarray, faces: np.ndarray, shape: tuple[int, ...], affine: np.ndarray
) -> np.ndarray:
    """Boolean mask of the voxels inside a closed mesh (surface voxels included)."""
    inv = np.linalg.inv(affine)
    tri = _apply(inv, vertices)[faces]
    edge = float(np.linalg.norm(tri - np.roll(tri, 1, axis=1), axis=2).max())
    n = max(1, int(np.ceil(edge / 0.4)))
    ab = np.array([(i, j) for i in range(n + 1) for j in range(n + 1 - i)], dtype=np.float64) / n
    w = np.stack([1 - ab.sum(1), ab[:, 0], ab[:, 1]], axis=1)  # barycentric weights (K, 3)
    shell = np.zeros(shape, dtype=bool)
    for chunk in np.array_split(np.arange(len(tri)), max(1, len(tri) // 4000)):
        pts = np.einsum("kj,fjd->fkd", w, tri[chunk]).reshape(-1, 3)
        idx = np.rint(pts).astype(np.int64)
        ok = np.all((idx >= 0) & (idx < np.array(shape)), axis=1)
        shell[tuple(idx[ok].T)] = True
    return ndi.binary_fill_holes(shell)
