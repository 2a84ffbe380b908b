"""Shape model: PCA recovers known modes, whitened codes round-trip, slerp keeps the latent norm and
the per-vertex variance where linear interpolation halves it, decoded meshes stay clean."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from brainsynth.errors import InputError
from brainsynth.geometry.mesh_checks import flipped_faces, self_intersections
from brainsynth.geometry.shape_model import (
    ShapeModel,
    fit_shape_model,
    load_shape_model,
    slerp,
)
from brainsynth.io import Surface

sys.path.insert(0, str(Path(__file__).parent))

from mesh_helpers import unit_sphere  # noqa: E402

N_VERTS = 400
RADII = {"lh_pial": 30.0, "lh_white": 26.0}
MODE_RMS_MM = np.array([2.0, 1.5, 1.0, 0.7])  # per-vertex rms displacement of the 4 true modes
NOISE_MM = 1e-3
N_SUBJECTS = 40


U, FACES = unit_sphere(N_VERTS)


def _modes(rng: np.random.Generator) -> np.ndarray:
    """(D, 4) orthonormal smooth modes: radial displacements by random quadratic polynomials of the
    unit coordinates, the white surface following the pial at 0.8 of its amplitude."""
    x, y, z = U.T
    basis = np.stack([x, y, z, x * y, y * z, x * z, x**2 - y**2, 3 * z**2 - 1], axis=1)
    f = basis @ rng.standard_normal((basis.shape[1], 4))  # (N, 4)
    cols = [
        np.concatenate([(f[:, k, None] * U).ravel(), (0.8 * f[:, k, None] * U).ravel()])
        for k in range(4)
    ]
    q, _ = np.linalg.qr(np.stack(cols, axis=1))
    return q


def _base() -> np.ndarray:
    return np.concatenate([(RADII[name] * U).ravel() for name in RADII])


def _to_subject(x: np.ndarray) -> dict[str, Surface]:
    half = 3 * N_VERTS
    return {
        "lh_pial": Surface(x[:half].reshape(-1, 3), FACES),
        "lh_white": Surface(x[half:].reshape(-1, 3), FACES),
    }


@pytest.fixture(scope="module")
def cohort():
    """(subjects, data (n, D), base, modes (D, 4), sigma (4,)): coefficients exactly centred and
    orthogonal with sample variances sigma^2, so PCA must return sigma^2 and the modes."""
    rng = np.random.default_rng(1)
    modes = _modes(rng)
    sigma = MODE_RMS_MM * np.sqrt(2 * N_VERTS)  # rms per vertex -> norm of the D-vector
    a = rng.standard_normal((N_SUBJECTS, 4))
    q, _ = np.linalg.qr(a - a.mean(axis=0))
    coef = q * np.sqrt(N_SUBJECTS - 1) * sigma
    data = _base() + coef @ modes.T + NOISE_MM * rng.standard_normal((N_SUBJECTS, 6 * N_VERTS))
    return [_to_subject(x) for x in data], data, _base(), modes, sigma


@pytest.fixture(scope="module")
def model4(cohort) -> ShapeModel:
    return fit_shape_model(cohort[0], n_components=4)


def test_fit_recovers_mean_modes_and_variances(cohort, model4):
    _, data, base, modes, sigma = cohort
    m = model4
    assert m.names == ("lh_pial", "lh_white") and m.n_vertices == (N_VERTS, N_VERTS)
    assert m.n_subjects == N_SUBJECTS and m.n_components == 4
    np.testing.assert_allclose(m.mean, base, atol=5 * NOISE_MM)
    np.testing.assert_allclose(m.variances, sigma**2, rtol=1e-3)
    np.testing.assert_allclose(m.singular_values, sigma * np.sqrt(N_SUBJECTS - 1), rtol=1e-3)
    np.testing.assert_allclose(np.abs(m.components @ modes), np.eye(4), atol=1e-3)
    np.testing.assert_allclose(m.components @ m.components.T, np.eye(4), atol=1e-10)
    noise_total = NOISE_MM**2 * data.shape[1]
    np.testing.assert_allclose(m.explained_variance_ratio.sum(), 1.0, atol=3 * noise_total / 1e3)
    np.testing.assert_allclose(m.explained_variance_ratio, sigma**2 / m.total_variance, rtol=1e-3)
    for name, s in m.mean_surfaces().items():
        np.testing.assert_array_equal(s.faces, FACES)
        np.testing.assert_allclose(np.linalg.norm(s.vertices, axis=1), RADII[name], atol=0.01)


def test_component_count_by_fraction_int_and_none(cohort):
    subjects = cohort[0]
    full = fit_shape_model(subjects)
    assert full.n_components == N_SUBJECTS - 1  # the centred data have rank n - 1
    assert full.variances[4] < 1e-5 * full.variances[3]  # 4 significant components, then noise
    assert fit_shape_model(subjects, n_components=0.999).n_components == 4
    assert fit_shape_model(subjects, n_components=0.5).n_components == 1
    assert fit_shape_model(subjects, n_components=2).n_components == 2
    with pytest.raises(ValueError, match="rank"):
        fit_shape_model(subjects, n_components=N_SUBJECTS)
    with pytest.raises(ValueError, match="fraction"):
        fit_shape_model(subjects, n_components=1.5)
    np.testing.assert_allclose(full.truncate(4).variances, full.variances[:4])


def test_encode_decode_round_trips(cohort, model4):
    subjects, data, *_ = cohort
    z = np.random.default_rng(2).standard_normal((5, 4))
    for code in z:
        np.testing.assert_allclose(model4.encode(model4.decode(code)), code, atol=1e-9)
    # training codes are whitened: zero mean, unit sample variance, uncorrelated
    codes = model4.encode(data)
    np.testing.assert_allclose(codes.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(np.cov(codes, rowvar=False), np.eye(4), atol=1e-8)
    full = fit_shape_model(subjects)
    for s, x in zip(subjects[:5], data[:5]):
        np.testing.assert_allclose(full.flatten(full.reconstruct(s)), x, atol=1e-9)


def test_reconstruction_error_decreases_with_k(cohort):
    subjects, data, base, modes, sigma = cohort
    full = fit_shape_model(subjects)
    rng = np.random.default_rng(3)
    held_out = (
        base
        + (rng.standard_normal(4) * sigma) @ modes.T
        + NOISE_MM * rng.standard_normal(data.shape[1])
    )
    train = data[7]
    errors_new, errors_train = [], []
    for k in range(1, 9):
        m = full.truncate(k)
        errors_new.append(np.linalg.norm(m.decode_vertices(m.encode(held_out)) - held_out))
        errors_train.append(np.linalg.norm(m.decode_vertices(m.encode(train)) - train))
    assert np.all(np.diff(errors_new[:4]) < 0) and np.all(np.diff(errors_new) <= 1e-12)
    assert np.all(np.diff(errors_train) <= 1e-12)
    # with 4 components only the noise is left
    assert errors_new[3] < 3 * NOISE_MM * np.sqrt(data.shape[1])
    assert errors_new[0] > 100 * errors_new[3]


def test_rigid_alignment_removes_pose(cohort):
    subjects, data, *_ = cohort
    rng = np.random.default_rng(4)
    posed = []
    for x in data:
        rot = Rotation.from_rotvec(rng.normal(scale=0.3, size=3)).as_matrix()
        pts = x.reshape(-1, 3) @ rot.T + rng.normal(scale=5.0, size=3)
        posed.append(_to_subject(pts.ravel()))
    still = fit_shape_model(subjects, n_components=4, alignment="rigid")
    moved = fit_shape_model(posed, n_components=4, alignment="rigid")
    np.testing.assert_allclose(moved.variances, still.variances, rtol=1e-6)
    codes_still = np.abs(still.encode(data))
    codes_moved = np.abs(np.stack([moved.encode(s) for s in posed]))
    np.testing.assert_allclose(codes_moved, codes_still, atol=1e-5)  # equal up to signs
    unaligned = fit_shape_model(posed, n_components=4)
    assert unaligned.variances[0] > 5 * still.variances[0]  # pose swamps the shape modes


# -- slerp ------------------------------------------------------------------------------------------
def test_slerp_endpoints_norm_and_angle():
    rng = np.random.default_rng(5)
    k = 16
    z0, z1 = rng.standard_normal(k), rng.standard_normal(k)
    z1 *= np.linalg.norm(z0) / np.linalg.norm(z1)
    phi = np.linspace(0, 1, 11)
    path = slerp(z0, z1, phi)
    assert path.shape == (11, k)
    np.testing.assert_allclose(slerp(z0, z1, 0.0), z0, atol=1e-12)
    np.testing.assert_allclose(slerp(z0, z1, 1.0), z1, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), np.linalg.norm(z0), rtol=1e-12)
    omega = np.arccos(z0 @ z1 / (np.linalg.norm(z0) * np.linalg.norm(z1)))

    def angle(a, b):
        cos = a @ b / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b))
        return np.arccos(np.clip(cos, -1, 1))

    np.testing.assert_allclose(angle(path, z0), phi * omega, atol=1e-7)
    # equal norms: Shoemake's formula
    shoemake = (
        np.sin((1 - phi[:, None]) * omega) * z0 + np.sin(phi[:, None] * omega) * z1
    ) / np.sin(omega)
    np.testing.assert_allclose(path, shoemake, atol=1e-12)
    # unequal norms: the norm moves linearly, the angle still linearly
    w1 = 3.0 * z1
    path = slerp(z0, w1, phi)
    r0 = np.linalg.norm(z0)
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), r0 + phi * 2 * r0, rtol=1e-12)
    np.testing.assert_allclose(angle(path, z0), phi * omega, atol=1e-7)
    # batches broadcast
    b0, b1 = rng.standard_normal((7, k)), rng.standard_normal((7, k))
    np.testing.assert_allclose(slerp(b0, b1, 0.3)[2], slerp(b0[2], b1[2], 0.3), atol=1e-12)


def test_slerp_degenerate_cases():
    z = np.array([3.0, 4.0, 0.0])
    np.testing.assert_allclose(slerp(z, z, 0.4), z, atol=1e-12)  # parallel
    np.testing.assert_allclose(slerp(z, 2 * z, 0.5), 1.5 * z, atol=1e-12)
    mid = slerp(z, -z, 0.5)  # opposite: a half turn through a perpendicular direction
    np.testing.assert_allclose(np.linalg.norm(mid), 5.0, rtol=1e-12)
    np.testing.assert_allclose(mid @ z, 0.0, atol=1e-9)
    np.testing.assert_allclose(slerp(z, -z, 1.0), -z, atol=1e-9)
    np.testing.assert_allclose(slerp(np.zeros(3), z, 0.25), 0.25 * z, atol=1e-12)
    assert np.isfinite(slerp(z, z + 1e-12, np.linspace(0, 1, 5))).all()


def test_slerp_keeps_the_latent_norm_and_per_vertex_variance_where_lerp_shrinks_them(
    cohort, model4
):
    """Midpoints of random codes of norm sqrt(K): slerp's decoded shapes have the training set's
    per-vertex variance, linear interpolation's about half (and a latent norm / sqrt(2))."""
    _, data, *_ = cohort
    k, pairs = model4.n_components, 4000
    rng = np.random.default_rng(6)
    g = rng.standard_normal((2, pairs, k))
    z0, z1 = np.sqrt(k) * g / np.linalg.norm(g, axis=-1, keepdims=True)
    mid_slerp, mid_lerp = slerp(z0, z1, 0.5), 0.5 * (z0 + z1)
    norm = np.sqrt(k)
    np.testing.assert_allclose(np.linalg.norm(mid_slerp, axis=1), norm, rtol=1e-12)
    assert abs(np.linalg.norm(mid_lerp, axis=1).mean() / norm - 1 / np.sqrt(2)) < 0.1

    def per_vertex_variance(x: np.ndarray) -> np.ndarray:  # (B, D) -> (V,) summed over x, y, z
        return x.reshape(len(x), -1, 3).var(axis=0, ddof=1).sum(axis=1)

    train = per_vertex_variance(data)
    v_slerp = per_vertex_variance(model4.decode_vertices(mid_slerp))
    v_lerp = per_vertex_variance(model4.decode_vertices(mid_lerp))
    ratio_slerp, ratio_lerp = v_slerp.sum() / train.sum(), v_lerp.sum() / train.sum()
    assert 0.93 < ratio_slerp < 1.07, ratio_slerp
    assert 0.43 < ratio_lerp < 0.57, ratio_lerp
    assert np.corrcoef(v_slerp, train)[0, 1] > 0.98  # the same spatial pattern, not just in sum
    np.testing.assert_allclose(np.median(v_lerp / v_slerp), 0.5, atol=0.07)


# -- decoded meshes are valid ------------------------------------------------------------------------
def test_decoded_meshes_do_not_flip_or_self_intersect(model4):
    mean = model4.mean_surfaces()
    for s in mean.values():
        assert len(self_intersections(s.vertices, s.faces)) == 0
    rng = np.random.default_rng(7)
    codes = model4.sample_codes(6, rng)
    shapes = [model4.decode(z) for z in slerp(codes[:3], codes[3:], 0.5)]
    shapes += model4.sample(3, generator=8, temperature=1.0)
    for shape in shapes:
        for name, s in shape.items():
            assert not flipped_faces(s.vertices, s.faces, mean[name].vertices).any()
            assert len(self_intersections(s.vertices, s.faces)) == 0


def test_mesh_checks_catch_a_vertex_pushed_through():
    v = 30.0 * U
    assert len(self_intersections(v, FACES)) == 0
    bad = v.copy()
    bad[0] = -1.2 * v[0]  # through the sphere and out the other side
    pairs = self_intersections(bad, FACES)
    assert len(pairs) > 0
    touched = np.isin(FACES[pairs], 0).any(axis=(1, 2))
    assert touched.all()  # every crossing involves a face of the moved vertex
    assert flipped_faces(bad, FACES, v).any()
    assert not flipped_faces(v, FACES, v).any()


def test_sampling_is_seeded(model4):
    a = model4.sample_codes(3, 11)
    np.testing.assert_array_equal(a, model4.sample_codes(3, np.random.default_rng(11)))
    np.testing.assert_allclose(model4.sample_codes(3, 11, temperature=0.5), 0.5 * a)


# -- storage and validation ---------------------------------------------------------------------------
def test_save_load_round_trip(model4, tmp_path):
    path = model4.save(tmp_path / "shape_model.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["shape_model.safetensors"]  # no temp left
    back = load_shape_model(path)
    for name in ("mean", "components", "variances"):
        np.testing.assert_array_equal(getattr(back, name), getattr(model4, name))
    assert back.names == model4.names and back.n_vertices == model4.n_vertices
    assert back.n_subjects == model4.n_subjects and back.alignment == model4.alignment
    assert back.total_variance == model4.total_variance
    for name in model4.names:
        np.testing.assert_array_equal(back.faces[name], model4.faces[name])
    z = np.ones(4)
    np.testing.assert_array_equal(back.decode_vertices(z), model4.decode_vertices(z))


def test_load_rejects_damaged_and_foreign_files(model4, tmp_path):
    path = model4.save(tmp_path / "m.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:100])
    with pytest.raises(InputError, match="cut.safetensors"):
        load_shape_model(cut)
    with pytest.raises(InputError, match="not found"):
        load_shape_model(tmp_path / "missing.safetensors")
    from safetensors.numpy import save_file

    other = tmp_path / "weights.safetensors"
    save_file({"w": np.zeros(3)}, str(other))
    with pytest.raises(InputError, match="not a brainsynth shape model"):
        load_shape_model(other)


def test_fit_rejects_uncorresponded_subjects(cohort):
    subjects = list(cohort[0][:3])
    v2, f2 = unit_sphere(N_VERTS + 2)
    subjects.append({"lh_pial": Surface(30 * v2, f2), "lh_white": subjects[0]["lh_white"]})
    with pytest.raises(ValueError, match="subject 3: lh_pial"):
        fit_shape_model(subjects)
    renamed = [{"rh_pial": s["lh_pial"], "lh_white": s["lh_white"]} for s in cohort[0][:2]]
    with pytest.raises(ValueError, match="subject 1"):
        fit_shape_model([cohort[0][0], renamed[1]])
    with pytest.raises(ValueError, match="two subjects"):
        fit_shape_model(cohort[0][:1])
