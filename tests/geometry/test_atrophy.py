"""Atrophy: pial vertices move inward by the requested mm of corresponded thickness, only in the
region, never below the minimum thickness, without flipping faces; real surfaces of pycortex S1."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from brainsynth.geometry.atrophy import (
    atrophy,
    flipped_fraction,
    region_weights,
    thickness,
)
from brainsynth.geometry.mesh_checks import self_intersections
from brainsynth.io import Surface, read_surface

sys.path.insert(0, str(Path(__file__).parent))

from mesh_helpers import unit_sphere  # noqa: E402

R_WHITE, R_PIAL = 20.0, 23.0


U, FACES = unit_sphere(500)
WHITE = Surface(R_WHITE * U, FACES, {"note": "white"})
PIAL = Surface(R_PIAL * U, FACES, {"volume_info": {"cras": [1.0, 2.0, 3.0]}})


def test_concentric_spheres_thin_by_exactly_the_requested_mm():
    np.testing.assert_allclose(thickness(PIAL, WHITE), R_PIAL - R_WHITE, rtol=1e-12)
    out = atrophy(PIAL, WHITE, 0.5)
    np.testing.assert_allclose(thickness(out, WHITE), R_PIAL - R_WHITE - 0.5, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(out.vertices, axis=1), R_PIAL - 0.5, atol=1e-12)
    np.testing.assert_array_equal(out.faces, FACES)
    assert out.meta == PIAL.meta  # volume geometry kept for FreeSurfer writing
    assert flipped_fraction(PIAL, out) == 0.0 and flipped_fraction(PIAL, out, WHITE) == 0.0
    assert len(self_intersections(out.vertices, out.faces)) == 0
    np.testing.assert_array_equal(PIAL.vertices, R_PIAL * U)  # input untouched


def test_only_the_region_moves():
    region = U[:, 2] > 0.2
    out = atrophy(PIAL, WHITE, 0.5, region_mask=region)
    np.testing.assert_array_equal(out.vertices[~region], PIAL.vertices[~region])
    t = thickness(out, WHITE)
    np.testing.assert_allclose(t[region], R_PIAL - R_WHITE - 0.5, atol=1e-12)
    np.testing.assert_allclose(t[~region], R_PIAL - R_WHITE, atol=1e-12)
    assert flipped_fraction(PIAL, out) == 0.0


def test_never_below_the_minimum_thickness_and_never_thickened():
    rng = np.random.default_rng(0)
    t0 = rng.uniform(0.2, 3.0, len(U))
    pial = Surface((R_WHITE + t0)[:, None] * U, FACES)
    mm = rng.uniform(0.0, 3.0, len(U))  # per vertex
    out = atrophy(pial, WHITE, mm, min_thickness=0.5)
    t = thickness(out, WHITE)
    np.testing.assert_allclose(t, np.maximum(t0 - mm, np.minimum(t0, 0.5)), atol=1e-12)
    assert (t >= np.minimum(t0, 0.5) - 1e-12).all() and (t <= t0 + 1e-12).all()
    thin = t0 <= 0.5
    np.testing.assert_array_equal(out.vertices[thin], pial.vertices[thin])
    # a vertex stays on its pial-white segment: never past the white surface
    assert (np.linalg.norm(out.vertices, axis=1) > R_WHITE).all()
    huge = atrophy(PIAL, WHITE, 50.0, min_thickness=0.0)
    np.testing.assert_allclose(huge.vertices, WHITE.vertices, atol=1e-12)


def test_taper_ramps_the_weight_over_rings():
    region = U[:, 2] > 0.0
    w = region_weights(FACES, len(U), region, taper_rings=2)
    assert (w[~region] == 0).all()
    np.testing.assert_allclose(np.unique(w[region]), [1 / 3, 2 / 3, 1.0], atol=1e-12)
    # ring 1 touches the outside, ring 2 does not
    neighbours = {i: set() for i in range(len(U))}
    for a, b, c in FACES:
        neighbours[a] |= {b, c}
        neighbours[b] |= {a, c}
        neighbours[c] |= {a, b}
    for v in np.flatnonzero(region):
        touches_outside = any(not region[n] for n in neighbours[v])
        assert touches_outside == np.isclose(w[v], 1 / 3)
    out = atrophy(PIAL, WHITE, 0.6, region_mask=region, taper_rings=2)
    np.testing.assert_allclose(thickness(out, WHITE), R_PIAL - R_WHITE - 0.6 * w, atol=1e-12)
    assert flipped_fraction(PIAL, out) == 0.0
    np.testing.assert_array_equal(region_weights(FACES, len(U), region, 0), region)
    np.testing.assert_array_equal(region_weights(FACES, len(U), None, 3), 1.0)


def test_uncorresponded_white_moves_along_the_normal():
    u2, f2 = unit_sphere(3000)  # a finer white mesh: no vertex correspondence
    white = Surface(R_WHITE * u2, f2)
    t_before = thickness(PIAL, white)
    sagitta = 0.05  # the flat facets of the white mesh lie up to ~0.05 mm inside its sphere
    assert (np.abs(t_before - (R_PIAL - R_WHITE)) < sagitta).all()
    out = atrophy(PIAL, white, 0.5)
    np.testing.assert_allclose(np.linalg.norm(out.vertices, axis=1), R_PIAL - 0.5, atol=1e-3)
    np.testing.assert_allclose(thickness(out, white), t_before - 0.5, atol=1e-3)
    assert flipped_fraction(PIAL, out) == 0.0
    clamped = atrophy(PIAL, white, 10.0, min_thickness=1.0)
    assert (thickness(clamped, white) >= 1.0 - 1e-9).all()
    with pytest.raises(ValueError, match="equal vertex counts"):
        atrophy(PIAL, white, 0.5, corresponded=True)


def test_flipped_fraction_sees_a_fold():
    # moving a vertex along its normal never turns its fan over; across a neighbour it does
    bad = PIAL.vertices.copy()
    neighbour = FACES[np.flatnonzero((FACES == 0).any(axis=1))[0]]
    n = neighbour[neighbour != 0][0]
    bad[0] = 2 * bad[n] - bad[0]
    assert flipped_fraction(PIAL, Surface(bad, FACES)) > 0


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match=">= 0"):
        atrophy(PIAL, WHITE, -0.5)
    with pytest.raises(ValueError, match="boolean"):
        atrophy(PIAL, WHITE, 0.5, region_mask=np.ones(len(U)))
    with pytest.raises(ValueError, match="boolean"):
        atrophy(PIAL, WHITE, 0.5, region_mask=np.ones(3, dtype=bool))
    with pytest.raises(ValueError):
        atrophy(PIAL, WHITE, np.zeros(3))


@pytest.mark.shared
def test_real_pycortex_hemisphere_thins_by_half_a_millimetre(shared_data):
    surf = shared_data / "pycortex_s1" / "sub-S1" / "surf"
    pial = read_surface(surf / "sub-S1_hemi-L_pial.surf.gii")
    white = read_surface(surf / "sub-S1_hemi-L_white.surf.gii")
    assert pial.n_vertices == white.n_vertices > 100_000  # FreeSurfer: vertex-corresponded
    np.testing.assert_array_equal(pial.faces, white.faces)
    start = time.perf_counter()
    out = atrophy(pial, white, 0.5, min_thickness=0.5)
    seconds = time.perf_counter() - start
    t0, t1 = thickness(pial, white), thickness(out, white)
    free = t0 >= 1.0  # not clamped by the 0.5 mm minimum
    assert free.mean() > 0.9
    np.testing.assert_allclose(t0[free] - t1[free], 0.5, atol=1e-9)
    expected = np.minimum(0.5, np.maximum(t0 - 0.5, 0.0))  # what clamping allows
    np.testing.assert_allclose((t0 - t1).mean(), expected.mean(), atol=1e-9)
    assert 0.45 < (t0 - t1).mean() <= 0.5
    assert (t1 >= np.minimum(t0, 0.5) - 1e-9).all()
    # folds: real pial meshes have slivers inverted against the white surface; leaving those out,
    # almost no face turns over (measured: 10 of 305,782)
    assert flipped_fraction(pial, out, white) < 1e-4
    assert flipped_fraction(pial, out) < 5e-3
    print(
        f"pycortex S1 lh: mean thickness {t0.mean():.3f} -> {t1.mean():.3f} mm "
        f"in {seconds:.3f} s; flipped {flipped_fraction(pial, out):.5f} "
        f"(new folds {flipped_fraction(pial, out, white):.6f})"
    )
