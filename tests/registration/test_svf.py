"""Torch SVF / displacement-field operations (registration.svf): analytic checks of the warp
direction, composition order, scaling and squaring (against the matrix exponential), inversion,
Jacobian determinants (against the numpy evaluation code), point mapping and gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.blocks import DVF2DDF
from scipy import ndimage
from scipy.linalg import expm

from brainsynth.evaluation import deformation as df
from brainsynth.registration import fields, svf

DTYPES = [torch.float32, torch.float64]
SHAPES = [(20, 18), (16, 18, 17)]  # 2D and 3D, axes of different sizes to catch transposes


def _interior(t: torch.Tensor, margin: int, nd: int) -> torch.Tensor:
    """Crop ``margin`` voxels off each side of the last ``nd`` axes."""
    sl = [slice(None)] * (t.ndim - nd) + [slice(margin, -margin)] * nd
    return t[tuple(sl)]


def _smooth_velocity(
    shape: tuple[int, ...], sigma: float, max_disp: float, seed: int, dtype: torch.dtype
) -> torch.Tensor:
    """(1, N, *shape): Gaussian-smoothed white noise scaled to max |v| = max_disp (as
    fields.random_velocity, in 2D or 3D)."""
    rng = np.random.default_rng(seed)
    v = np.stack(
        [ndimage.gaussian_filter(rng.standard_normal(shape), sigma) for _ in range(len(shape))]
    )
    v *= max_disp / np.sqrt((v**2).sum(0)).max()
    return torch.from_numpy(v)[None].to(dtype)


def _linear_field(a: np.ndarray, b: np.ndarray, shape: tuple[int, ...], dtype) -> torch.Tensor:
    """(1, N, *shape): u(x) = A x + b."""
    x = svf.identity_grid(shape, dtype=torch.float64)
    u = torch.einsum("ij,j...->i...", torch.from_numpy(a), x) + torch.from_numpy(b).reshape(
        -1, *([1] * len(shape))
    )
    return u[None].to(dtype)


# --- 1. identity ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_zero_velocity_integrates_to_zero_and_warps_to_identity(shape, dtype):
    nd = len(shape)
    v = torch.zeros(2, nd, *shape, dtype=dtype)
    u = svf.integrate(v)
    assert u.shape == v.shape and u.dtype == dtype
    assert torch.equal(u, torch.zeros_like(u))  # exactly: interpolating zeros gives zeros
    img = torch.randn(2, 3, *shape, dtype=dtype)
    # grid_sample normalises coordinates to [-1, 1] and back, so integer grid points are hit only
    # up to rounding: a few ulps of the coordinate (~1e-6 in float32, ~1e-14 in float64)
    atol = 5e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(svf.warp(img, u), img, rtol=0, atol=atol)
    labels = torch.randint(0, 40, (2, 1, *shape)).to(dtype)
    assert torch.equal(svf.warp(labels, u, mode="nearest"), labels)


def test_identity_grid_is_voxel_coordinates():
    g = svf.identity_grid((3, 4, 5), dtype=torch.float64)
    assert g.shape == (3, 3, 4, 5)
    assert g[0, 2, 1, 4] == 2 and g[1, 2, 1, 4] == 1 and g[2, 2, 1, 4] == 4


# --- 5. warp direction and label maps ------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_warp_shift_reads_next_voxel_along_each_axis(shape):
    nd = len(shape)
    img = torch.randn(1, 2, *shape, dtype=torch.float64)
    for axis in range(nd):
        u = torch.zeros(1, nd, *shape, dtype=torch.float64)
        u[:, axis] = 1.0
        out = svf.warp(img, u)
        head = [slice(None)] * img.ndim
        tail = [slice(None)] * img.ndim
        head[2 + axis], tail[2 + axis] = slice(0, -1), slice(1, None)
        torch.testing.assert_close(out[tuple(head)], img[tuple(tail)], rtol=0, atol=1e-12)
        # border padding: the last slice repeats the last slice of the input
        last = [slice(None)] * img.ndim
        last[2 + axis] = slice(-1, None)
        torch.testing.assert_close(out[tuple(last)], img[tuple(last)], rtol=0, atol=1e-12)
        zeros = svf.warp(img, u, padding="zeros")
        assert torch.all(zeros[tuple(last)] == 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_warp_nearest_keeps_label_values_exactly(dtype):
    shape = (16, 18, 17)
    labels = torch.randint(0, 60, (1, 1, *shape))
    u = _smooth_velocity(shape, 3.0, 2.5, seed=1, dtype=dtype)
    out = svf.warp(labels.to(dtype), u, mode="nearest")
    assert torch.equal(out, out.round())
    assert set(out.unique().tolist()) <= set(labels.unique().tolist())
    # an integer shift moves labels exactly (no interpolation at all)
    s = torch.zeros_like(u)
    s[:, 1] = -2.0
    shifted = svf.warp(labels.to(dtype), s, mode="nearest")
    assert torch.equal(shifted[:, :, :, 2:], labels[:, :, :, :-2].to(dtype))
    # integer tensors come back as integers
    out_int = svf.warp(labels, u, mode="nearest")
    assert out_int.dtype == labels.dtype and torch.equal(out_int.to(dtype), out)


# --- composition ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_compose_two_translations_adds_them(shape, dtype):
    nd = len(shape)
    t1, t2 = torch.zeros(1, nd, *shape, dtype=dtype), torch.zeros(1, nd, *shape, dtype=dtype)
    for i in range(nd):
        t1[:, i], t2[:, i] = 0.7 * (i + 1), -1.9 + 0.5 * i
    torch.testing.assert_close(svf.compose(t1, t2), t1 + t2, rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_compose_affine_and_translation_order(shape):
    nd = len(shape)
    rng = np.random.default_rng(3)
    a = 0.1 * rng.standard_normal((nd, nd))
    b = rng.standard_normal(nd)
    t = np.array([1.0, -2.0, 1.5][:nd])
    u = _linear_field(a, b, shape, torch.float64)
    w = torch.from_numpy(t).reshape(1, nd, *([1] * nd)).expand_as(u).clone()
    x = svf.identity_grid(shape, dtype=torch.float64)[None]
    tt = torch.from_numpy(t).reshape(1, nd, *([1] * nd))
    aa = torch.from_numpy(a)
    # compose(u, w)(x) = w(x) + u(x + w(x)) = t + A (x + t) + b (where x + t is inside the grid)
    expected_uw = (
        tt
        + torch.einsum("ij,bj...->bi...", aa, x + tt)
        + (u - torch.einsum("ij,bj...->bi...", aa, x))
    )
    torch.testing.assert_close(
        _interior(svf.compose(u, w), 3, nd), _interior(expected_uw, 3, nd), rtol=0, atol=1e-10
    )
    # compose(w, u)(x) = u(x) + t everywhere (a constant field is read exactly anywhere)
    torch.testing.assert_close(svf.compose(w, u), u + tt, rtol=0, atol=1e-10)
    # the two orders differ by A t: the test can tell them apart
    assert (svf.compose(u, w) - svf.compose(w, u)).abs().max() > 0.05


def test_compose_matches_warping_twice():
    # a linear image and affine fields: linear interpolation is exact, so both sides are exact
    shape = (18, 16, 17)
    rng = np.random.default_rng(4)
    u = _linear_field(
        0.05 * rng.standard_normal((3, 3)), rng.standard_normal(3), shape, torch.float64
    )
    w = _linear_field(
        0.05 * rng.standard_normal((3, 3)), rng.standard_normal(3), shape, torch.float64
    )
    x = svf.identity_grid(shape, dtype=torch.float64)
    img = (0.3 * x[0] - 0.2 * x[1] + 0.5 * x[2] + 1.0)[None, None]
    once = svf.warp(img, svf.compose(u, w))
    twice = svf.warp(svf.warp(img, u), w)
    margin = 4  # where x + w(x) and x + compose(u, w)(x) stay inside the grid
    torch.testing.assert_close(
        _interior(once, margin, 3), _interior(twice, margin, 3), rtol=0, atol=1e-10
    )
    wrong = svf.warp(svf.warp(img, w), u)  # the other order differs by g . ((AB - BA) x + ...)
    assert _interior((once - wrong).abs(), margin, 3).max().item() > 0.05


# --- 2. scaling and squaring ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(24, 22), (20, 18, 19)])
def test_integrate_linear_velocity_matches_matrix_exponential(shape, dtype):
    nd, steps = len(shape), 7
    rng = np.random.default_rng(7)
    a = rng.standard_normal((nd, nd))
    a *= 0.05 / np.linalg.norm(a, 2)
    c = (np.array(shape) - 1) / 2.0
    v = _linear_field(a, -a @ c, shape, dtype)  # v(x) = A (x - c)
    u = svf.integrate(v, steps=steps)
    x = svf.identity_grid(shape, dtype=torch.float64)
    xc = x - torch.from_numpy(c).reshape(nd, *([1] * nd))
    margin = 3  # border padding is not a linear extrapolation: errors within ~|u| + 1 voxel
    ui = _interior(u[0].double(), margin, nd)

    def expected(m: np.ndarray) -> torch.Tensor:
        return _interior(torch.einsum("ij,j...->i...", torch.from_numpy(m), xc), margin, nd)

    # exactly what scaling and squaring computes, (I + A / 2^s)^(2^s) - I: linear interpolation
    # of a linear field is exact, so only rounding and a faint echo of the border is left (the
    # clamped border values leak inward by up to a voxel per squaring, with weights ~|u_k|: ~1e-8
    # at 3 voxels in float64)
    m_ss = np.linalg.matrix_power(np.eye(nd) + a / 2**steps, 2**steps) - np.eye(nd)
    tol_ss = 1e-4 if dtype == torch.float32 else 1e-6
    assert (ui - expected(m_ss)).abs().max().item() < tol_ss
    # the matrix exponential, up to the O(|A|^2 / 2^(s+1)) scaling and squaring error: 1e-3 voxels
    err = (ui - expected(expm(a) - np.eye(nd))).abs().max().item()
    assert err < 1e-3
    # not trivially: the first-order map id + v (steps = 0) is ~|A|^2 |x - c| / 2 off, > 5e-3
    assert (ui - expected(a)).abs().max().item() > 5e-3


@pytest.mark.filterwarnings("ignore:monai.networks.blocks.Warp")
def test_integrate_uses_compose_convention_and_matches_numpy_fields():
    shape = (16, 18, 17)
    v = _smooth_velocity(shape, 3.0, 3.0, seed=8, dtype=torch.float64)
    steps = 6
    u = v / 2**steps
    for _ in range(steps):
        u = svf.compose(u, u)
    ours = svf.integrate(v, steps=steps)
    torch.testing.assert_close(ours, u, rtol=0, atol=1e-12)
    # MONAI's DVF2DDF with border padding is the same computation
    monai = DVF2DDF(num_steps=steps, padding_mode="border")(v)
    torch.testing.assert_close(ours, monai, rtol=0, atol=1e-12)
    # and the numpy version used for phantoms (map_coordinates, order 1, mode "nearest")
    np_u = fields.scaling_and_squaring(v[0].numpy(), steps=steps)
    np.testing.assert_allclose(ours[0].numpy(), np_u, rtol=0, atol=1e-9)
    assert svf.integrate(v, steps=0) is v


# --- 3. inverse ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_integrate_minus_v_is_the_inverse(dtype):
    shape = (24, 24, 24)
    v = _smooth_velocity(shape, 4.0, 3.0, seed=9, dtype=dtype)
    fwd, bwd = svf.integrate(v), svf.integrate(-v)
    assert fwd.abs().max() > 2.0  # a real deformation
    # phi_v o phi_-v = phi_-v o phi_v = id, up to interpolation: max < 0.03 voxels (measured
    # 0.018-0.019) and mean < 5e-3 (0.0032-0.0037) away from 2 voxels of border (the border is
    # extended by its values, which is not the flow's extension)
    for a, b in ((fwd, bwd), (bwd, fwd)):
        res = _interior(svf.compose(a, b), 2, 3).abs()
        assert res.max().item() < 0.03 and res.mean().item() < 5e-3
    assert _interior(svf.compose(fwd, fwd), 2, 3).abs().max() > 1.0  # the test can fail
    # fixed-point inversion of the forward displacement agrees with integrate(-v)
    # (measured 0.017; compose(fwd, inv) is the fixed-point equation itself, ~1e-15 once converged,
    # compose(inv, fwd) the other side, 0.032)
    inv = svf.invert(fwd)
    assert _interior((inv - bwd).abs(), 2, 3).max().item() < 0.03
    assert _interior(svf.compose(fwd, inv), 2, 3).abs().max().item() < 1e-5
    assert _interior(svf.compose(inv, fwd), 2, 3).abs().max().item() < 0.05


# --- 4. Jacobian determinant and folding ---------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_jacobian_of_affine_field_is_det_i_plus_a_everywhere(shape, dtype):
    nd = len(shape)
    rng = np.random.default_rng(10)
    a = 0.2 * rng.standard_normal((nd, nd))
    u = _linear_field(a, rng.standard_normal(nd), shape, dtype)
    det = svf.jacobian_determinant(u)
    assert det.shape == (1, *shape) and det.dtype == dtype
    expected = float(np.linalg.det(np.eye(nd) + a))
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(det, torch.full_like(det, expected), rtol=0, atol=tol)
    # in mm: the same field on voxels of size h is (A / h) x per mm
    h = [1.5, 0.8, 2.0][:nd]
    det_mm = svf.jacobian_determinant(u, spacing=h)
    expected_mm = float(np.linalg.det(np.eye(nd) + a / np.array(h)[None, :]))
    torch.testing.assert_close(det_mm, torch.full_like(det, expected_mm), rtol=0, atol=tol)


@pytest.mark.parametrize("shape", SHAPES)
def test_jacobian_matches_numpy_evaluation(shape):
    nd = len(shape)
    u = _smooth_velocity(shape, 2.0, 4.0, seed=11, dtype=torch.float64)
    u = torch.cat([u, 0.5 * u.flip(1)])  # batch of 2
    for spacing in (1.0, [1.2, 0.7, 2.0][:nd]):
        det = svf.jacobian_determinant(u, spacing=spacing)
        for b in range(2):
            ref = df.jacobian_determinant(u[b].numpy(), spacing=spacing, channel_axis=0)
            np.testing.assert_allclose(det[b].numpy(), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(24, 24), (24, 24, 24)])
def test_integrated_smooth_velocity_does_not_fold(shape, dtype):
    v = _smooth_velocity(shape, 4.0, 3.0, seed=12, dtype=dtype)
    u = svf.integrate(v)
    assert svf.folding_fraction(u).tolist() == [0.0]
    assert svf.jacobian_determinant(u).min() > 0
    # the same velocity added as a displacement (no integration), 5x larger, does fold
    assert svf.folding_fraction(5 * v).item() > 0


def test_folding_fraction_counts_and_masks():
    shape = (10, 12, 8)
    u = torch.zeros(2, 3, *shape, dtype=torch.float64)
    x = svf.identity_grid(shape, dtype=torch.float64)
    u[1, 0] = -2.0 * x[0]  # det = 1 - 2 = -1 everywhere in sample 1
    u[0, 0, :5] = -2.0 * x[0, :5]  # sample 0: folds in the first rows only
    frac = svf.folding_fraction(u)
    assert frac.shape == (2,) and frac[1] == 1.0 and 0.3 < frac[0] < 0.6
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[7:] = True  # only rows well away from the folded block
    assert svf.folding_fraction(u, mask).tolist() == [0.0, 1.0]


# --- points, eta, smoothness ---------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_points_through_affine_field_is_exact(shape):
    nd = len(shape)
    rng = np.random.default_rng(13)
    a, b = 0.1 * rng.standard_normal((nd, nd)), rng.standard_normal(nd)
    u = _linear_field(a, b, shape, torch.float64)
    pts = rng.random((50, nd)) * (np.array(shape) - 1)  # anywhere inside the grid, off-grid
    expected = pts + pts @ a.T + b
    for field in (u, u[0]):
        out = svf.points_through(field, torch.from_numpy(pts))
        assert out.shape == (50, nd)
        np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-10)


def test_points_through_agrees_with_warp_at_grid_points():
    shape = (16, 18, 17)
    u = _smooth_velocity(shape, 3.0, 2.0, seed=14, dtype=torch.float64)
    x = svf.identity_grid(shape, dtype=torch.float64)
    pts = x.reshape(3, -1).T
    np.testing.assert_allclose(
        svf.points_through(u, pts).numpy(), (x + u[0]).reshape(3, -1).T.numpy(), atol=1e-10
    )


@pytest.mark.parametrize("shape", SHAPES)
def test_scale_velocity_endpoints(shape):
    v = _smooth_velocity(shape, 3.0, 3.0, seed=15, dtype=torch.float32)
    assert torch.equal(svf.integrate(svf.scale_velocity(v, 0.0)), torch.zeros_like(v))
    assert torch.equal(svf.integrate(svf.scale_velocity(v, 1.0)), svf.integrate(v))
    vv = torch.cat([v, v])
    per_sample = svf.integrate(svf.scale_velocity(vv, torch.tensor([0.0, 1.0])))
    assert torch.equal(per_sample[0], torch.zeros_like(v[0]))
    assert torch.equal(per_sample[1], svf.integrate(v)[0])
    # halfway along the geodesic: exp(v/2) o exp(v/2) = exp(v) (up to interpolation)
    half = svf.integrate(svf.scale_velocity(v, 0.5))
    nd = len(shape)
    err = _interior(svf.compose(half, half) - svf.integrate(v), 2, nd).abs().max()
    assert err < 0.02


@pytest.mark.parametrize("shape", [(12, 14), (12, 14, 13)])
def test_smoothness_of_quadratic_field_is_analytic(shape):
    nd = len(shape)
    x = svf.identity_grid(shape, dtype=torch.float64)
    u = torch.zeros(1, nd, *shape, dtype=torch.float64)
    u[0, 0] = 0.3 * x[0] ** 2  # forward differences: 0.3 (2 x0 + 1) along axis 0
    u[0, 1] = -0.2 * x[nd - 1] ** 2  # -0.2 (2 x_last + 1) along the last axis
    k0 = np.arange(shape[0] - 1)
    kl = np.arange(shape[-1] - 1)
    # (1/N) sum_j mean_{i, x}(D_j u_i)^2: each nonzero term is one component of N
    expected = (np.mean((0.3 * (2 * k0 + 1)) ** 2) + np.mean((0.2 * (2 * kl + 1)) ** 2)) / nd**2
    assert svf.smoothness(u).item() == pytest.approx(expected, rel=1e-12)
    assert svf.smoothness(u, spacing=2.0).item() == pytest.approx(expected / 4, rel=1e-12)
    # central differences (monai.losses.DiffusionLoss's choice) give 0.3 * 2 x0 instead
    assert abs(svf.smoothness(u).item() - np.mean((0.6 * k0) ** 2) / nd**2) > 0.01


# --- 7. gradients --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(16, 18), (16, 18, 17)])
def test_gradients_flow_through_integrate_and_warp(shape, dtype):
    nd = len(shape)
    v = _smooth_velocity(shape, 3.0, 2.0, seed=16, dtype=dtype).requires_grad_(True)
    rng = np.random.default_rng(17)
    img = torch.from_numpy(ndimage.gaussian_filter(rng.random(shape), 2))[None, None].to(dtype)
    target = torch.from_numpy(ndimage.gaussian_filter(rng.random(shape), 2))[None, None]
    u = svf.integrate(v)
    loss = ((svf.warp(img, u) - target.to(dtype)) ** 2).mean() + 0.1 * svf.smoothness(u)
    loss = loss + svf.jacobian_determinant(u).var()
    loss.backward()
    assert v.grad is not None and v.grad.shape == v.shape
    assert torch.isfinite(v.grad).all() and v.grad.abs().max() > 0
    assert all(v.grad[:, i].abs().max() > 0 for i in range(nd))
