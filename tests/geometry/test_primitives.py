"""The analytic test meshes: sizes, radii, outward orientation, closedness."""

from __future__ import annotations

import numpy as np

from brainsynth.geometry.mesh import is_closed
from brainsynth.geometry.primitives import graded_square, icosphere, uv_sphere


def _signed_volume(v: np.ndarray, f: np.ndarray) -> float:
    return float(np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6)


def test_spheres_are_closed_outward_and_on_their_radius():
    for mesh, n in ((icosphere(3, 5.0), 10 * 4**3 + 2), (uv_sphere(20, 40, 5.0), 19 * 40 + 2)):
        assert mesh.n_vertices == n
        np.testing.assert_allclose(np.linalg.norm(mesh.vertices, axis=1), 5.0)
        assert is_closed(mesh.faces)[0]
        vol = _signed_volume(mesh.vertices, mesh.faces)
        assert 0.95 * 4 / 3 * np.pi * 125 < vol < 4 / 3 * np.pi * 125  # inscribed, outward
    moved = icosphere(2, 1.0, (3.0, 0.0, 0.0))
    np.testing.assert_allclose(moved.vertices.mean(0), [3.0, 0.0, 0.0], atol=1e-12)


def test_graded_square_covers_its_area_with_crowded_vertices():
    sq = graded_square(8.0, 10)
    v, f = sq.vertices, sq.faces
    normals = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    assert (normals[:, 2] > 0).all()  # +z
    np.testing.assert_allclose(normals[:, 2].sum() / 2, 64.0)
    assert np.mean(v[:, 0] <= 1.0) > 0.5  # x <= length / 8 on 6 of the 11 grid lines


def test_tilted_plane_is_the_plane_it_says():
    from brainsynth.geometry.primitives import tilted_plane

    p = tilted_plane(-2.0, 5.0, 1.5, 0.2)
    np.testing.assert_allclose(p.vertices[:, 2], 1.5 + 0.2 * p.vertices[:, 0])
    assert p.vertices[:, :2].min() == -2.0 and p.vertices[:, :2].max() == 5.0
    v, f = p.vertices, p.faces
    assert (np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])[:, 2] > 0).all()
