"""Cor2Vox shape channels on concentric and disjoint spheres."""

from __future__ import annotations

import numpy as np
import pytest

from brainsynth.evaluation.surface import surface_from_mask
from brainsynth.geometry import sdf
from brainsynth.geometry.channels import (
    CHANNELS,
    fuse_cortex,
    shape_channels,
    stack_channels,
)
from brainsynth.io import Surface

SHAPE = (24, 24, 24)
AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])
AFFINE[:3, 3] = -11.5


def grid_points(shape=SHAPE, affine=AFFINE) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def sphere(radius: float, centre) -> Surface:
    """Marching cubes of a linear ramp on a 0.5 mm grid: a sphere to ~0.05 mm."""
    step, n = 0.5, 64
    fine = np.diag([step, step, step, 1.0])
    fine[:3, 3] = np.asarray(centre, float) - step * (n - 1) / 2
    r = np.linalg.norm(grid_points((n, n, n), fine) - centre, axis=-1)
    return surface_from_mask(np.clip((radius - r) / step + 0.5, 0, 1), fine)


def test_fuse_cortex_rule():
    s_p = np.array([-3.0, -1.0, -1.0, 2.0, 4.0, 0.0])
    s_w = np.array([-1.0, 1.0, -1.0, 3.0, 1.0, -2.0])
    # both inside: the max (the white distance); signs differ: 0; both outside: the min (pial)
    np.testing.assert_array_equal(fuse_cortex(s_p, s_w), [-1.0, 0.0, -1.0, 2.0, 1.0, 0.0])


def test_concentric_spheres():
    centre, r_white, r_pial, clip = np.array([0.2, -0.3, 0.1]), 4.5, 7.5, 3.0
    ch = shape_channels(
        sphere(r_pial, centre), sphere(r_white, centre), None, None, SHAPE, AFFINE, clip_mm=clip
    )
    stacked = ch.stack()
    assert stacked.shape == (5, *SHAPE) and stacked.dtype == np.float32
    assert CHANNELS == ("S_c", "S_p", "S_w", "E", "R")
    for i, name in enumerate(CHANNELS):
        np.testing.assert_array_equal(stacked[i], ch.as_dict()[name])
    np.testing.assert_array_equal(stack_channels(ch.as_dict()), stacked)

    r = np.linalg.norm(grid_points() - centre, axis=-1)
    tol = 0.1  # mesh vs sphere
    d_white, d_pial = r - r_white, r - r_pial
    # clipped to +-clip mm and divided by clip
    for got, ref in ((ch.S_p, d_pial), (ch.S_w, d_white)):
        assert got.min() >= -1 and got.max() <= 1
        assert np.abs(got - np.clip(ref, -clip, clip) / clip).max() < (tol + 0.5) / clip
    assert np.isclose(ch.S_p.max(), 1.0) and np.isclose(ch.S_w.min(), -1.0)

    inside_white = d_white < -tol
    ribbon = (d_white > tol) & (d_pial < -tol)
    outside_pial = d_pial > tol
    np.testing.assert_array_equal(ch.S_c[inside_white], ch.S_w[inside_white])
    np.testing.assert_array_equal(ch.S_c[outside_pial], ch.S_p[outside_pial])
    assert (ch.S_c[ribbon] == 0).all() and ribbon.sum() > 1000
    np.testing.assert_array_equal(
        ch.R[ribbon | inside_white | outside_pial], ribbon[ribbon | inside_white | outside_pial]
    )
    assert set(np.unique(ch.R)) <= {0.0, 1.0}

    # edge map: 1 on a surface, exp(-1/2) at sigma, ~0 a few voxels away
    assert ch.edge_sigma_mm == 0.5 and ch.clip_mm == clip
    near = np.minimum(np.abs(d_white), np.abs(d_pial))
    assert (ch.E[near < 0.05] > 0.98).all()
    assert (ch.E[near > 2.5] < 1e-5).all()
    assert ch.E.min() >= 0 and ch.E.max() <= 1


def test_two_hemispheres_union():
    c_lh, c_rh = np.array([-5.5, 0.0, 0.0]), np.array([5.5, 0.3, -0.2])
    pial_lh, white_lh = sphere(4.5, c_lh), sphere(2.5, c_lh)
    pial_rh, white_rh = sphere(4.0, c_rh), sphere(2.0, c_rh)
    clip = 4.0
    ch = shape_channels(pial_lh, white_lh, pial_rh, white_rh, SHAPE, AFFINE, clip_mm=clip)
    for got, (lh, rh) in ((ch.S_p, (pial_lh, pial_rh)), (ch.S_w, (white_lh, white_rh))):
        ref = np.minimum(
            sdf.signed_distance(lh, SHAPE, AFFINE), sdf.signed_distance(rh, SHAPE, AFFINE)
        )
        np.testing.assert_array_equal(got < 0, ref < 0)  # inside either hemisphere is inside
        assert np.abs(got - np.clip(ref, -clip, clip) / clip).max() < 0.5 / clip
    p = grid_points()
    in_lh = np.linalg.norm(p - c_lh, axis=-1) < 4.4
    in_rh = np.linalg.norm(p - c_rh, axis=-1) < 3.9
    assert (ch.S_p[in_lh] < 0).all() and (ch.S_p[in_rh] < 0).all()
    ribbon_rh = (np.linalg.norm(p - c_rh, axis=-1) > 2.1) & in_rh
    assert (ch.R[ribbon_rh] == 1).all() and (ch.S_c[ribbon_rh] == 0).all()

    # a missing right hemisphere: the left one alone
    left = shape_channels(pial_lh, white_lh, None, None, SHAPE, AFFINE, clip_mm=clip)
    assert (left.S_p[in_rh] > 0).all() and (left.R[in_rh] == 0).all()
    np.testing.assert_allclose(left.S_p[in_lh], ch.S_p[in_lh], atol=1e-6)


def test_arguments_are_checked():
    s = sphere(4.0, (0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="pial"):
        shape_channels(None, s, None, None, SHAPE, AFFINE)
    with pytest.raises(ValueError, match="white"):
        shape_channels(s, None, None, None, SHAPE, AFFINE)
    with pytest.raises(ValueError, match="clip_mm"):
        shape_channels(s, s, None, None, SHAPE, AFFINE, clip_mm=0)
    with pytest.raises(ValueError, match="edge_sigma_mm"):
        shape_channels(s, s, None, None, SHAPE, AFFINE, edge_sigma_mm=-1.0)


@pytest.mark.shared
def test_pycortex_s1_channels(shared_data):
    from brainsynth.evaluation.surface import distances_to_mesh, signed_volume
    from brainsynth.io import read_surface

    surf = shared_data / "pycortex_s1" / "sub-S1" / "surf"
    mesh = {
        (h, k): read_surface(surf / f"sub-S1_hemi-{h}_{k}.surf.gii")
        for h in ("L", "R")
        for k in ("pial", "white")
    }
    verts = np.concatenate([m.vertices for m in mesh.values()])
    size, clip = 64, 5.0
    h = float((verts.max(0) - verts.min(0)).max() * 1.05 / size)
    aff = np.diag([h, h, h, 1.0])
    aff[:3, 3] = (verts.max(0) + verts.min(0)) / 2 - h * (size - 1) / 2
    shape = (size, size, size)
    ch = shape_channels(
        mesh["L", "pial"], mesh["L", "white"], mesh["R", "pial"], mesh["R", "white"],
        shape, aff, clip_mm=clip,
    )  # fmt: skip
    # enclosed volumes: the inside voxels of each union against the meshes' own volumes
    vox = h**3
    volume = {}
    for got, kind in ((ch.S_p, "pial"), (ch.S_w, "white")):
        volume[kind] = sum(signed_volume(mesh[hemi, kind]) for hemi in ("L", "R"))
        assert abs((got < 0).sum() * vox / volume[kind] - 1) < 0.03, kind
    assert abs(ch.R.sum() * vox / (volume["pial"] - volume["white"]) - 1) < 0.05
    # the white surface lies inside the pial one: almost no voxel inside white is outside pial
    deep_white = ch.S_w < -1.0 / clip
    assert (ch.S_p[deep_white] > 0).mean() < 1e-3
    # the band is exact: near-surface voxels against the exact point-to-triangle distance
    rng = np.random.default_rng(0)
    near = np.flatnonzero((np.abs(ch.S_p) < 1.0 / clip).ravel())
    idx = rng.choice(near, 300, replace=False)
    ijk = np.stack(np.unravel_index(idx, shape), axis=1)
    pts = ijk @ aff[:3, :3].T + aff[:3, 3]
    exact = np.minimum(
        distances_to_mesh(pts, mesh["L", "pial"]), distances_to_mesh(pts, mesh["R", "pial"])
    )
    np.testing.assert_allclose(np.abs(ch.S_p.ravel()[idx]) * clip, exact, atol=1e-4)
