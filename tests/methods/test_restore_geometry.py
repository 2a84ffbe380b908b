"""Restore's geometry, baselines and simulated degradations: the prior's grid placed on a scan,
slices kept where they were acquired, interpolation along the slice axis, and degrade's outputs
(slice positions centred on the field of view, thickness in the sidecar, bias strength, lesion)."""

from __future__ import annotations

import numpy as np

from brainsynth.io import Volume
from brainsynth.methods.restore import baselines
from brainsynth.methods.restore import geometry as geo
from brainsynth.methods.restore.degrade import Degradation, degrade


def _clean(shape=(32, 36, 40), spacing=2.0) -> Volume:
    aff = np.diag([spacing, spacing, spacing, 1.0])
    aff[:3, 3] = [-30.0, -40.0, -35.0]
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    brain = ((i - 16) / 12) ** 2 + ((j - 18) / 14) ** 2 + ((k - 20) / 15) ** 2 <= 1
    data = np.where(brain, 0.5 + 0.01 * k + 0.005 * i, 0.0).astype(np.float32)
    return Volume(data, aff)


def test_degrade_centres_the_slices_and_records_the_thickness():
    v = _clean()
    d = degrade(v, Degradation(slice_spacing=8.0, gap=2.0, axis=2))
    assert d.image.shape == (32, 36, 10)  # floor(40 * 2 / 8)
    assert np.allclose(d.image.spacing, [2, 2, 8])
    assert np.allclose(geo.fov_centre(d.image), geo.fov_centre(v))
    assert d.sidecar["SliceThickness"] == 6.0 and d.sidecar["SpacingBetweenSlices"] == 8.0
    # a box slab of a function linear along the axis is its value at the slab's centre
    inside = (d.image.data > 0)[16, 18]
    k_centre = np.linalg.solve(v.affine, d.image.affine @ [16, 18, 0, 1])[2] + 4 * np.arange(10)
    expected = 0.5 + 0.01 * k_centre + 0.005 * 16
    full = np.flatnonzero(inside)[1:-1]  # slabs wholly inside the brain
    assert np.allclose(d.image.data[16, 18][full], expected[full], atol=1e-5)


def test_degrade_bias_has_the_requested_strength_and_lesion_stays_in_the_brain():
    v = _clean()
    d = degrade(v, Degradation(bias=0.2, lesion_radius=6.0, seed=3))
    brain = v.data > 0
    log = np.log(d.bias.data[brain])
    assert abs(log.std() - 0.2) < 1e-6 and abs(log.mean()) < 1e-6
    assert (
        d.mask is not None and d.mask.data.any() and not (d.mask.data.astype(bool) & ~brain).any()
    )
    assert d.sidecar["Degradation"]["bias"] == 0.2 and "SliceThickness" not in d.sidecar


def test_place_keeps_the_slices_and_the_grid_matches_the_pooled_clean_grid():
    v = _clean()
    d = degrade(v, Degradation(slice_spacing=12.0, gap=2.0))
    g = geo.place(d.image, 4.0, (16, 18, 20), geo.fov_centre(d.image))
    pooled = v.affine @ np.diag([2.0, 2, 2, 1])
    pooled[:3, 3] = v.affine[:3, 3] + 1.0  # voxel k covers clean voxels 2k, 2k + 1
    assert np.allclose(g.prior_affine, pooled)
    assert g.axis == 2 and g.grid_shape == (16, 18, d.image.shape[2])
    # the measurement grid's slices are the scan's own: same world positions
    assert np.allclose(g.grid_affine[:3, 2], d.image.affine[:3, 2])
    assert np.allclose(g.grid_affine[2, 3], d.image.affine[2, 3])
    assert geo.slice_axis(v) is None


def test_upsample_reproduces_linear_functions_and_cubic_reproduces_cubics():
    g = geo.Geometry(np.eye(4), (4, 5, 30), np.diag([1, 1, 3.0, 1]), (4, 5, 10), 2, 3.0)
    z = 3.0 * np.arange(10)  # slice positions in prior voxels
    y = np.broadcast_to(2.0 + 0.5 * z, (4, 5, 10))
    up = baselines.upsample(y, g, 1)
    zz = np.arange(30)
    inner = zz <= 27  # beyond the last slice the edge is held
    assert np.allclose(up[0, 0, inner], 2.0 + 0.5 * zz[inner], atol=1e-5)
    quad = np.broadcast_to(((z - 13.5) / 10) ** 2, (4, 5, 10))
    upq = baselines.upsample(quad, g, 3)
    mid = (zz > 6) & (zz < 21)  # away from the boundary conditions
    truth = ((zz[mid] - 13.5) / 10) ** 2
    err_cubic = np.abs(upq[1, 2, mid] - truth).max()
    err_linear = np.abs(baselines.upsample(quad, g, 1)[1, 2, mid] - truth).max()
    assert err_cubic < 0.5 * err_linear


def test_biharmonic_fills_a_linear_ramp_exactly_and_n4_keeps_a_flat_image_flat():
    ramp = np.broadcast_to(np.linspace(0, 1, 16), (16, 16, 16)).copy()
    hole = np.zeros(ramp.shape, bool)
    hole[6:10, 6:10, 6:10] = True
    filled = baselines.biharmonic(np.where(hole, 0.0, ramp), hole)
    assert np.abs(filled - ramp)[hole].max() < 1e-3
    flat = np.full((20, 20, 20), 0.7, np.float32)
    mask = np.zeros(flat.shape, np.uint8)
    mask[4:16, 4:16, 4:16] = 1
    out = baselines.n4(flat, mask, 2.0, iterations=5)
    inside = out[mask > 0]
    assert np.allclose(inside, 0.7, rtol=0.01)  # flat, and the brain's mean is kept
    assert abs(inside.mean() - 0.7) < 1e-5 and np.all(out[mask == 0] == 0.7)
