"""Forward operators: exact adjoints, analytic slice-profile checks, affine-derived acquisitions,
bias-field fitting, masked likelihoods and gradients, in tiny 2D and 3D cases (float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from brainsynth.inverse.operators import (
    BiasField,
    Compose,
    Identity,
    LinearOperator,
    Mask,
    Operator,
    add_noise,
    log_likelihood,
    observed_mask,
    residual,
)
from brainsynth.inverse.slices import (
    SliceAcquisition,
    acquisition_from_affines,
    acquisition_matrix,
    profile_kernel,
)

F64 = torch.float64
SHAPES = {2: (12, 10), 3: (8, 9, 10)}


def _rand(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=F64)


def _adjoint_gap(op, x_shape: tuple[int, ...]) -> float:
    """|<A x, y> - <x, A^T y>| relative to |A x| |y|."""
    x = _rand(*x_shape)
    ax = op.forward(x)
    y = _rand(*ax.shape)
    lhs, rhs = (ax * y).sum(), (x * op.adjoint(y)).sum()
    return float((lhs - rhs).abs() / (ax.norm() * y.norm()))


# ---- adjoints ---------------------------------------------------------------------------

SLICE_CASES = [
    # (spatial_dims, axis, thickness, spacing, offset, profile)
    (2, 0, 3.0, 3.0, None, "box"),
    (2, 1, 2.5, 4.0, 0.3, "box"),  # gap: spacing > thickness, non-integer positions
    (2, 0, 2.0, 1.5, 0.0, "triangle"),
    (2, 1, 3.3, 3.3, None, "gaussian"),
    (3, 2, 5.0, 5.0, None, "box"),
    (3, 0, 1.7, 2.6, 0.25, "triangle"),
    (3, 1, 2.0, 3.0, 1.0, "gaussian"),  # gap
    (3, 2, 4.0, 2.0, -0.5, "gaussian"),  # overlapping slices, first centre on the grid's edge
]


@pytest.mark.parametrize(
    "boundary,sampling", [("renormalise", "integrate"), ("zero", "interpolate")]
)
@pytest.mark.parametrize("dims,axis,thick,spacing,offset,profile", SLICE_CASES)
def test_slice_acquisition_adjoint(dims, axis, thick, spacing, offset, profile, boundary, sampling):
    shape = SHAPES[dims]
    op = SliceAcquisition(
        dims,
        axis,
        shape[axis],
        thick,
        spacing,
        offset,
        profile=profile,
        boundary=boundary,
        sampling=sampling,
    )
    assert isinstance(op, LinearOperator)
    assert _adjoint_gap(op, (2, 2, *shape)) < 1e-14
    y = op(_rand(1, 1, *shape))
    assert tuple(y.shape[2:]) == op.out_shape(shape)


@pytest.mark.parametrize("dims", [2, 3])
def test_voxelwise_and_composed_adjoints(dims):
    shape = SHAPES[dims]
    bias = BiasField(dims, shape, order=2)
    bias.coefficients = 0.3 * _rand(2, bias.num_coefficients)
    mask = Mask(dims, (torch.rand(1, 1, *shape) > 0.4).double())
    acq = SliceAcquisition(dims, dims - 1, shape[-1], 2.5, 3.0, profile="gaussian")
    ops = [bias, mask, Identity(dims), Compose(bias, acq), Compose(mask, bias, acq)]
    for op in ops:
        assert isinstance(op, Operator) and op.linear
        assert _adjoint_gap(op, (2, 2, *shape)) < 1e-14


# ---- slice acquisition: analytic checks -------------------------------------------------


def test_box_of_one_voxel_is_identity():
    for dims, shape in SHAPES.items():
        for axis in range(dims):
            op = SliceAcquisition(dims, axis, shape[axis], 1.0, 1.0, 0.0, profile="box")
            torch.testing.assert_close(op.matrix, torch.eye(shape[axis], dtype=F64))
            x = _rand(1, 2, *shape)
            torch.testing.assert_close(op(x), x)


def test_kernels_integrate_the_profile_over_voxels():
    torch.testing.assert_close(profile_kernel(3, "box"), torch.full((3,), 1 / 3, dtype=F64))
    box4 = torch.tensor([1, 2, 2, 2, 1], dtype=F64) / 8  # fractional end weights
    torch.testing.assert_close(profile_kernel(4, "box"), box4)
    torch.testing.assert_close(
        profile_kernel(2, "triangle"), torch.tensor([1, 8, 14, 8, 1], dtype=F64) / 32
    )
    for t in (1.3, 2.5, 5.0):
        for p in ("box", "triangle", "gaussian"):
            k = profile_kernel(t, p)
            assert math.isclose(float(k.sum()), 1.0, abs_tol=1e-12)
            torch.testing.assert_close(k, k.flip(0))  # symmetric, centred


@pytest.mark.parametrize("thickness", [3.0, 5.0, 8.5])
def test_gaussian_fwhm_matches_thickness(thickness):
    k = profile_kernel(thickness, "gaussian").numpy()
    d = np.arange(k.size) - (k.size - 1) / 2
    # Half-maximum crossings, linearly interpolated on the discrete weights.
    half = k.max() / 2
    j = int(np.nonzero(k >= half)[0].max())
    right = d[j] + (k[j] - half) / (k[j] - k[j + 1])
    assert abs(2 * right - thickness) / thickness < 0.05  # the crossing's interpolation error
    # Integrating over a voxel adds a unit box's variance 1/12: take it off, FWHM is exact.
    var = float((k * d**2).sum()) - 1 / 12
    assert abs(2 * math.sqrt(2 * math.log(2)) * math.sqrt(var) - thickness) < 1e-3 * thickness


def test_triangle_fwhm_matches_thickness():
    t = 4.0
    k = profile_kernel(t, "triangle").numpy()
    var = float((k * (np.arange(k.size) - (k.size - 1) / 2) ** 2).sum()) - 1 / 12
    assert math.isclose(
        var, t**2 / 6, rel_tol=1e-12
    )  # a triangle of half-base t has variance t^2/6


@pytest.mark.parametrize("profile", ["box", "triangle", "gaussian"])
def test_constant_images_stay_constant(profile):
    n, t = 30, 3.7
    pos = torch.linspace(-0.5, n - 0.5, 17)
    m = acquisition_matrix(n, pos, t, profile, boundary="renormalise")
    torch.testing.assert_close(m.sum(1), torch.ones(17, dtype=F64))
    assert bool((m >= 0).all())
    mz = acquisition_matrix(n, pos, t, profile, boundary="zero")
    half_support = {
        "box": t / 2,
        "triangle": t,
        "gaussian": 4 * t / (2 * math.sqrt(2 * math.log(2))),
    }
    inner = (pos - half_support[profile] >= -0.5) & (pos + half_support[profile] <= n - 0.5)
    assert int(inner.sum()) >= 8
    torch.testing.assert_close(mz.sum(1)[inner], torch.ones(int(inner.sum()), dtype=F64))
    # Zero padding loses weight at the edges: half the (symmetric) profile on the grid's edge.
    torch.testing.assert_close(mz.sum(1)[[0, -1]], torch.full((2,), 0.5, dtype=F64))
    op = SliceAcquisition(3, 1, n, t, 2.2, 0.4, profile=profile)
    torch.testing.assert_close(
        op(torch.full((1, 1, 3, n, 2), 0.7, dtype=F64)),
        0.7 * torch.ones(1, 1, 3, op.n_slices, 2, dtype=F64),
    )


@pytest.mark.parametrize("profile", ["box", "triangle", "gaussian"])
def test_sampling_modes(profile):
    n, t = 24, 3.4
    whole = torch.arange(2.0, 22.0, 3.0)  # integer centres: both modes blur, then sample
    for boundary in ("renormalise", "zero"):
        a = acquisition_matrix(n, whole, t, profile, boundary, "integrate")
        b = acquisition_matrix(n, whole, t, profile, boundary, "interpolate")
        torch.testing.assert_close(a, b)
    k = profile_kernel(t, profile)
    r = (k.numel() - 1) // 2
    torch.testing.assert_close(a[2, 8 - r : 8 + r + 1], k)  # row of the centre at voxel 8
    # At half-integer centres integration keeps the 2-voxel mean; interpolation adds a tent.
    half = torch.tensor([4.5, 11.5])
    mi = acquisition_matrix(n, half, 2.0, "box", sampling="integrate")
    assert mi[0].nonzero().flatten().tolist() == [4, 5] and float(mi[0, 4]) == 0.5
    mt = acquisition_matrix(n, half, 2.0, "box", sampling="interpolate")
    torch.testing.assert_close(mt[0, 3:7], torch.tensor([1, 3, 3, 1], dtype=F64) / 8)


def test_slice_count_and_positions():
    op = SliceAcquisition(3, 2, 20, 5.0)  # default offset: first slab starts at the edge
    assert op.n_slices == 4 and op.positions.tolist() == [2.0, 7.0, 12.0, 17.0]
    op = SliceAcquisition(2, 0, 20, 2.0, spacing=6.0, offset=1.5)  # gap of 4 voxels
    assert op.n_slices == 4 and op.positions.tolist() == [1.5, 7.5, 13.5, 19.5]
    op = SliceAcquisition(2, 1, 20, 2.0, spacing=6.0, offset=1.5, n_slices=2)
    assert op.positions.tolist() == [1.5, 7.5]
    op = SliceAcquisition(3, 0, 12, 6.0, voxel_size=2.0)  # mm: 3-voxel slabs
    assert (op.thickness, op.spacing, op.n_slices) == (3.0, 3.0, 4)
    # Interpolation at a half-integer centre mixes the two neighbouring blurred voxels.
    x = _rand(1, 1, 20, 3)
    op = SliceAcquisition(2, 0, 20, 1.0, spacing=4.0, offset=2.5)
    torch.testing.assert_close(op(x)[:, :, 0], (x[:, :, 2] + x[:, :, 3]) / 2)
    with pytest.raises(ValueError, match="outside"):
        SliceAcquisition(2, 0, 20, 2.0, spacing=6.0, offset=1.5, n_slices=5)


def _affines(spatial_dims: int, slice_mm: float, axis: int):
    d = spatial_dims
    hr = np.eye(d + 1)
    hr[:d, d] = [-10.0, 4.0, 7.0][:d]  # any world origin
    lr = hr.copy()
    lr[axis, axis] = slice_mm
    lr[axis, d] += (slice_mm - 1) / 2  # the scan's first slab starts where the grid does
    return hr, lr


def test_from_affines_thick_slices_average_voxels():
    hr, lr = _affines(3, 5.0, axis=2)
    op = SliceAcquisition.from_affines(hr, (6, 4, 20), lr, (6, 4, 4), profile="box")
    assert (op.axis, op.thickness, op.spacing, op.offset, op.n_slices) == (2, 5.0, 5.0, 2.0, 4)
    x = _rand(2, 1, 6, 4, 20)
    torch.testing.assert_close(op(x), x.reshape(2, 1, 6, 4, 4, 5).mean(-1))
    # Given thickness (mm) on a 0.5 mm grid: 3 mm slices every 5 mm (a 2 mm gap).
    hr2 = np.diag([0.5, 0.5, 0.5, 1.0])
    lr2 = np.diag([0.5, 0.5, 5.0, 1.0])
    lr2[2, 3] = 2.25
    op2 = SliceAcquisition.from_affines(hr2, (4, 4, 40), lr2, (4, 4, 4), thickness=3.0)
    assert (op2.thickness, op2.spacing, op2.offset) == (6.0, 10.0, 4.5)


def test_from_affines_2d_and_errors():
    hr, lr = _affines(2, 3.0, axis=0)
    op = SliceAcquisition.from_affines(hr, (12, 5), lr, (4, 5), profile="triangle")
    assert (op.axis, op.spacing, op.thickness, op.n_slices, op.spatial_dims) == (0, 3.0, 3.0, 4, 2)
    rot = np.eye(4)
    c, s = math.cos(0.2), math.sin(0.2)
    rot[:2, :2] = [[c, -s], [s, c]]
    hr3, lr3 = _affines(3, 5.0, axis=2)
    with pytest.raises(ValueError, match="oblique"):
        SliceAcquisition.from_affines(hr3, (6, 4, 20), rot @ lr3, (6, 4, 4))
    flip = lr3.copy()
    flip[0, 0] = -1.0
    with pytest.raises(ValueError, match="flipped"):
        SliceAcquisition.from_affines(hr3, (6, 4, 20), flip, (6, 4, 4))
    perm = lr3[:, [1, 0, 2, 3]]
    with pytest.raises(ValueError, match="permuted"):
        SliceAcquisition.from_affines(hr3, (6, 4, 20), perm, (4, 6, 4))
    two = lr3.copy()
    two[0, 0], two[0, 3] = 2.0, hr3[0, 3] + 0.5
    with pytest.raises(ValueError, match="acquisition_from_affines"):
        SliceAcquisition.from_affines(hr3, (6, 4, 20), two, (3, 4, 4))
    both = acquisition_from_affines(hr3, (6, 4, 20), two, (3, 4, 4))
    x = _rand(1, 1, 6, 4, 20)
    torch.testing.assert_close(both(x), x.reshape(1, 1, 3, 2, 4, 4, 5).mean((3, 6)))
    assert isinstance(acquisition_from_affines(hr3, (6, 4, 20), hr3, (6, 4, 20)), Identity)


# ---- bias field ---------------------------------------------------------------------------


@pytest.mark.parametrize("dims", [2, 3])
def test_bias_field_is_one_for_zero_coefficients_and_smooth(dims):
    shape = SHAPES[dims]
    region = (torch.rand(*shape) > 0.3).double()
    op = BiasField(dims, shape, order=3, region=region)
    assert op.num_coefficients == math.comb(3 + dims, dims) - 1
    torch.testing.assert_close(op.field(), torch.ones(1, 1, *shape, dtype=F64))
    c = 0.4 * _rand(3, op.num_coefficients)
    log_b = op.log_field(c)
    # Zero log-mean over the region: the field never carries global intensity.
    torch.testing.assert_close((log_b * region).flatten(1).sum(1), torch.zeros(3, dtype=F64))
    # Smooth: log b is a polynomial of degree <= 3 along each axis of the uniform grid, so every
    # fourth finite difference vanishes.
    for a in range(dims):
        assert float(torch.diff(log_b, n=4, dim=1 + a).abs().max()) < 1e-10
    x = _rand(3, 2, *shape)
    torch.testing.assert_close(op.forward(x), x)
    op.coefficients = c
    torch.testing.assert_close(op.forward(x), x * log_b.exp()[:, None])


@pytest.mark.parametrize("dims", [2, 3])
def test_bias_fit_recovers_coefficients(dims):
    shape = SHAPES[dims]
    op = BiasField(dims, shape, order=3)
    c = 0.3 * _rand(2, op.num_coefficients)
    x = 0.2 + torch.rand(2, 1, *shape, dtype=F64)
    y = 1.3 * op.field(c) * x  # a global scale too: it must not leak into c
    for steps in (0, 2):
        c_hat = op.fit(x, y, gn_steps=steps, update=False)
        assert float((c_hat - c).norm() / c.norm()) < 1e-3
    mask = torch.rand(1, 1, *shape) > 0.5
    y_out = torch.where(mask, y, torch.rand_like(y))  # garbage outside the mask is ignored
    c_hat = op.fit(x, y_out, mask=mask)
    assert float((c_hat - c).norm() / c.norm()) < 1e-3
    torch.testing.assert_close(op.coefficients, c_hat)  # update=True stores it
    g = torch.Generator().manual_seed(1)
    y_noisy = add_noise(y, 0.01, g)
    c_hat = op.fit(x, y_noisy)
    assert float((c_hat - c).norm() / c.norm()) < 0.05


def test_bias_fit_multichannel_and_order_zero():
    op = BiasField(2, (10, 12), order=2, region=torch.ones(1, 1, 10, 12))
    c = 0.5 * _rand(1, op.num_coefficients)
    x = 0.5 + torch.rand(1, 3, 10, 12, dtype=F64)
    c_hat = op.fit(x, op.field(c) * x, update=False)
    assert float((c_hat - c).norm() / c.norm()) < 1e-6
    flat = BiasField(3, (4, 4, 4), order=0)
    x3 = _rand(1, 1, 4, 4, 4)
    assert flat.num_coefficients == 0 and torch.equal(flat(x3), x3)
    with pytest.raises(ValueError, match="voxels"):
        op.fit(-x, x)


# ---- gradients ----------------------------------------------------------------------------


def test_gradcheck_slice_acquisition_and_bias_field():
    acq3 = SliceAcquisition(3, 1, 6, 2.5, 2.0, 0.3, profile="gaussian")
    x3 = _rand(1, 1, 3, 6, 2).requires_grad_()
    assert torch.autograd.gradcheck(acq3.forward, (x3,))
    acq2 = SliceAcquisition(2, 0, 7, 3.0, profile="triangle")
    assert torch.autograd.gradcheck(acq2.forward, (_rand(1, 2, 7, 3).requires_grad_(),))
    bias = BiasField(2, (5, 4), order=2)
    c = (0.2 * _rand(1, bias.num_coefficients)).requires_grad_()
    x2 = _rand(1, 1, 5, 4).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, c: x * bias.field(c), (x2, c))
    bias.coefficients = c.detach()
    assert torch.autograd.gradcheck(bias.forward, (x2,))
    bias3 = BiasField(3, (3, 4, 3), order=2)
    c3 = (0.2 * _rand(1, bias3.num_coefficients)).requires_grad_()
    assert torch.autograd.gradcheck(bias3.field, (c3,))


# ---- likelihood, masks, composition -------------------------------------------------------


@pytest.mark.parametrize("dims", [2, 3])
def test_masked_likelihood_counts_observed_voxels(dims):
    shape = SHAPES[dims]
    m = (torch.rand(2, 1, *shape) > 0.3).double()
    op = Mask(dims, m, sigma=0.1)
    x, y = _rand(2, 1, *shape), _rand(2, 1, *shape)
    expect = -((m * (y - x)) ** 2).flatten(1).sum(1) / (2 * 0.1**2)
    torch.testing.assert_close(log_likelihood(op, x, y), expect)
    y2 = torch.where(m > 0, y, y + 100.0)  # content in the masked region never matters
    torch.testing.assert_close(log_likelihood(op, x, y2), expect)
    torch.testing.assert_close(residual(op, x, y2), m * (y - x))
    # Gradient flows through the likelihood to x, zero where unobserved.
    xg = x.clone().requires_grad_()
    log_likelihood(op, xg, y).sum().backward()
    assert xg.grad is not None and bool((xg.grad[m.expand_as(xg) == 0] == 0).all())


def test_identity_trust_and_unmasked_likelihood():
    op = Identity(3, sigma=0.5)
    x, y = _rand(1, 2, 4, 4, 4), _rand(1, 2, 4, 4, 4)
    assert observed_mask(op) is None
    torch.testing.assert_close(log_likelihood(op, x, y), -((y - x) ** 2).sum().reshape(1) / 0.5)


def test_compose_order_sigma_and_mask_propagation():
    shape = (6, 5, 12)
    bias = BiasField(3, shape, order=1, coefficients=torch.tensor([0.2, -0.1, 0.3]).double())
    acq = SliceAcquisition(3, 2, 12, 3.0, sigma=0.02)
    x = _rand(1, 1, *shape)
    comp = Compose(bias, acq)
    torch.testing.assert_close(comp(x), acq(bias(x)))
    assert comp.sigma == 0.02 and Compose(bias, acq, sigma=0.3).sigma == 0.3
    # A lesion on the hi-res grid before the acquisition: slices it touches are not measured.
    m = torch.ones(1, 1, *shape, dtype=F64)
    m[..., 4] = 0  # hi-res slab 4 belongs to scan slice 1 (voxels 3..5)
    seen = observed_mask(Compose(Mask(3, m), bias, acq))
    assert seen is not None and seen.shape == (1, 1, 6, 5, 4)
    assert seen[..., 1].sum() == 0 and bool((seen[..., [0, 2, 3]] == 1).all())
    # A mask in the scan's space (missing slices) after the acquisition.
    lost = torch.ones(1, 1, 6, 5, 4, dtype=F64)
    lost[..., 3] = 0
    seen2 = observed_mask(Compose(bias, acq, Mask(3, lost)))
    assert seen2 is not None and torch.equal(seen2, lost)
    with pytest.raises(ValueError, match="spatial_dims"):
        Compose(Identity(2), Identity(3))


def test_add_noise_is_seeded_and_scaled():
    y = torch.zeros(4, 1, 16, 16, 16, dtype=F64)
    a = add_noise(y, 0.2, torch.Generator().manual_seed(3))
    b = add_noise(y, 0.2, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert abs(float(a.std()) - 0.2) < 0.01 and abs(float(a.mean())) < 0.01
