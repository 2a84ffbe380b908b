"""Surface distances with analytic answers; marching-cubes spheres."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from brainsynth.evaluation import surface as sf
from brainsynth.io import Surface


def icosphere(subdivisions: int, radius: float = 1.0, centre=(0.0, 0.0, 0.0)) -> Surface:
    """Icosahedron subdivided ``subdivisions`` times, vertices on the sphere, faces outward."""
    t = (1 + 5**0.5) / 2
    verts = [
        [-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t],
        [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1],
    ]  # fmt: skip
    faces = [
        [0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
        [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9],
        [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1],
    ]  # fmt: skip
    v = [np.asarray(p, float) / np.linalg.norm(p) for p in verts]
    for _ in range(subdivisions):
        cache: dict[tuple[int, int], int] = {}
        new = []
        for i, j, k in faces:
            mids = []
            for p, q in ((i, j), (j, k), (k, i)):
                key = (min(p, q), max(p, q))
                if key not in cache:
                    m = v[p] + v[q]
                    v.append(m / np.linalg.norm(m))
                    cache[key] = len(v) - 1
                mids.append(cache[key])
            a, b, c = mids
            new += [[i, a, c], [j, b, a], [k, c, b], [a, b, c]]
        faces = new
    return Surface(np.asarray(v) * radius + np.asarray(centre), np.asarray(faces))


def test_point_triangle_distance_is_exact():
    mesh = icosphere(1, 10.0)
    pts = np.random.default_rng(0).normal(size=(200, 3)) * 12
    got = sf.distances_to_mesh(pts, mesh)
    v, f = mesh.vertices, mesh.faces
    brute = np.array(
        [
            sf.point_triangle_distance(
                np.repeat(p[None], len(f), 0), v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
            ).min()
            for p in pts
        ]
    )
    assert np.allclose(got, brute, atol=1e-12)
    # ... and never above the distance to a dense sample of the surface (an upper bound).
    dense = sf.sample_surface(mesh, samples_per_mm2=500, max_samples=2_000_000)
    upper = cKDTree(dense).query(pts)[0]
    assert np.all(got <= upper + 1e-12) and np.max(upper - got) < 0.05


def test_assd_of_shifted_sphere():
    """A sphere (R) and the same sphere moved by d << R: a point at angle theta to the shift lies
    | sqrt(R^2 + d^2 - 2 R d cos(theta)) - R | ~ d |cos(theta)| from the other sphere, and cos(theta)
    is uniform on [-1, 1] over the sphere's area, so ASSD ~ d E|cos| = d/2 (not d) and
    HD95 ~ 0.95 d. The exact expectations are integrated numerically; tolerance 2 %."""
    radius, d = 40.0, 1.5
    a = icosphere(4, radius)
    b = icosphere(4, radius, (d, 0, 0))
    u = np.linspace(-1, 1, 400_001)
    dist = np.abs(np.sqrt(radius**2 + d**2 - 2 * radius * d * u) - radius)
    r = sf.surface_distances(a, b, samples_per_mm2=0.5)
    assert r["assd"] == pytest.approx(dist.mean(), rel=0.02)
    assert dist.mean() == pytest.approx(d / 2, rel=1e-3)
    assert r["hd95"] == pytest.approx(np.percentile(dist, 95), rel=0.02)
    assert r["hd"] == pytest.approx(d, rel=0.02)


def test_assd_of_concentric_spheres_is_the_radius_gap():
    d = 2.0
    r = sf.surface_distances(icosphere(4, 30.0), icosphere(4, 30.0 + d), samples_per_mm2=0.5)
    assert r["assd"] == pytest.approx(d, rel=0.01)
    assert r["hd95"] == pytest.approx(d, rel=0.01)
    same = sf.surface_distances(icosphere(3, 30.0), icosphere(3, 30.0), samples_per_mm2=0.2)
    assert same["assd"] < 1e-9


def _ball(radius_vox: float, shape=(40, 40, 40)):
    g = np.stack(np.meshgrid(*[np.arange(s) - (s - 1) / 2 for s in shape], indexing="ij"))
    r = np.sqrt((g**2).sum(0))
    return r, np.clip(radius_vox - r + 0.5, 0.0, 1.0)  # occupancy (partial-volume) mask


@pytest.mark.parametrize("affine_diag", [(2.0, 2.0, 2.0), (-2.0, 2.0, 2.0)])
def test_marching_cubes_sphere_area_volume_and_orientation(affine_diag):
    rv = 12.0  # voxels; 24 mm with 2 mm voxels
    r, occupancy = _ball(rv)
    aff = np.diag([*affine_diag, 1.0])
    radius = rv * 2.0
    s = sf.surface_from_mask(occupancy, aff)
    assert sf.signed_volume(s) > 0  # outward faces, also for a left-handed affine
    assert sf.mesh_area(s) == pytest.approx(4 * np.pi * radius**2, rel=0.02)
    assert sf.signed_volume(s) == pytest.approx(4 / 3 * np.pi * radius**3, rel=0.02)
    # A binary mask: volume within 2 %, area terraced (documented ~+9 %).
    b = sf.surface_from_mask(r < rv, aff)
    assert sf.signed_volume(b) == pytest.approx(4 / 3 * np.pi * radius**3, rel=0.02)
    assert 1.0 < sf.mesh_area(b) / (4 * np.pi * radius**2) < 1.12
    # World coordinates: centred where the affine puts the array centre.
    centre = aff[:3, :3] @ ((np.array(occupancy.shape) - 1) / 2)
    assert np.allclose(s.vertices.mean(0), centre, atol=0.1)
    # The extracted surface lies on the analytic sphere (ASSD well below a voxel).
    ref = icosphere(4, radius, centre)
    assert sf.surface_distances(s, ref, samples_per_mm2=0.2)["assd"] < 0.2


def test_surface_from_empty_mask_fails():
    with pytest.raises(ValueError, match="no voxel"):
        sf.surface_from_mask(np.zeros((5, 5, 5)), np.eye(4))


def test_point_triangle_distance_of_collinear_triangles_is_the_distance_to_their_edges():
    rng = np.random.default_rng(3)
    n = 500
    a, b = rng.normal(size=(n, 3)), rng.normal(size=(n, 3))
    c = a + rng.uniform(-0.5, 1.5, size=(n, 1)) * (b - a)  # on the line through a and b
    p = rng.normal(size=(n, 3)) * 2

    def seg(p, u, w):
        t = np.clip(np.einsum("ij,ij->i", p - u, w - u) / np.einsum("ij,ij->i", w - u, w - u), 0, 1)
        return np.linalg.norm(p - u - t[:, None] * (w - u), axis=1)

    ref = np.minimum.reduce([seg(p, a, b), seg(p, a, c), seg(p, b, c)])
    np.testing.assert_allclose(sf.point_triangle_distance(p, a, b, c), ref, atol=1e-9)
