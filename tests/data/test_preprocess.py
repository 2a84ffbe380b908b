"""Each preprocessing step keeps the anatomy at its world position (analytic checks + real data)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from brainsynth.data.preprocess import (
    crop_pad,
    normalise_intensity,
    preprocess_subject,
    reorient_ras,
    resample,
    to_original,
)
from brainsynth.io import Volume, read_volume


def _world(vol: Volume, ijk) -> np.ndarray:
    return vol.affine[:3, :3] @ np.asarray(ijk, float) + vol.affine[:3, 3]


def _blob_volume(affine: np.ndarray, shape=(30, 34, 26), centre=(12.0, 20.0, 9.0)) -> Volume:
    g = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    d2 = ((g - np.asarray(centre)) ** 2).sum(-1)
    return Volume(np.exp(-d2 / (2 * 2.5**2)).astype(np.float32), affine)


def _psr_affine() -> np.ndarray:  # like the IXI files
    return np.array([[0, 0, 2.0, -91.6], [-2.0, 0, 0, 120.8], [0, 2.0, 0, -123.3], [0, 0, 0, 1]])


def test_reorient_keeps_world_position_of_a_voxel():
    vol = Volume(np.zeros((5, 6, 7), np.float32), _psr_affine())
    vol.data[1, 2, 3] = 1.0
    ras = reorient_ras(vol)
    assert ras.orientation == "RAS"
    ijk = np.argwhere(ras.data == 1.0)[0]
    np.testing.assert_allclose(_world(ras, ijk), _world(vol, (1, 2, 3)), atol=1e-9)
    assert sorted(ras.shape) == sorted(vol.shape)


@pytest.mark.parametrize("spacing", [1.0, 3.0, (1.5, 2.5, 3.0)])
def test_resample_keeps_centre_of_mass_in_world(spacing):
    vol = _blob_volume(_psr_affine())
    out = resample(vol, spacing)
    np.testing.assert_allclose(out.spacing, np.broadcast_to(spacing, (3,)), atol=1e-6)
    com_in = _world(vol, ndimage.center_of_mass(vol.data))
    com_out = _world(out, ndimage.center_of_mass(out.data))
    assert np.linalg.norm(com_in - com_out) < 0.5 * min(out.spacing.min(), 2.0)


def test_resample_labels_nearest_keeps_values():
    lab = Volume(np.random.default_rng(0).integers(0, 4, (10, 10, 10)).astype(np.uint8), np.eye(4))
    out = resample(lab, 0.5, order=0)
    assert set(np.unique(out.data)) <= {0, 1, 2, 3}


def test_crop_pad_world_preserved_and_inverse():
    vol = _blob_volume(_psr_affine())
    cropped = crop_pad(vol, (16, 40, 20), centre=(12, 20, 9))
    # a kept voxel sits at the same world point
    ijk = np.argwhere(cropped.data == cropped.data.max())[0]
    src = np.argwhere(vol.data == vol.data.max())[0]
    np.testing.assert_allclose(_world(cropped, ijk), _world(vol, src), atol=1e-9)
    # padding with zeros beyond the source
    assert cropped.shape == (16, 40, 20)


def test_normalise_maps_percentiles():
    data = np.random.default_rng(1).normal(100, 20, (20, 20, 20)).astype(np.float32)
    mask = Volume(np.ones_like(data, dtype=np.uint8), np.eye(4))
    out = normalise_intensity(Volume(data, np.eye(4)), mask, 1, 99)
    assert out.data.min() == 0.0 and out.data.max() == 1.0
    assert abs(np.mean(out.data <= 0) - 0.01) < 0.005
    assert abs(np.mean(out.data >= 1) - 0.01) < 0.005


def test_pipeline_round_trip_to_original():
    rng = np.random.default_rng(2)
    shape = (40, 44, 36)
    labels = np.zeros(shape, np.uint8)
    labels[8:32, 10:34, 6:30] = 2
    labels[16:24, 18:26, 14:22] = 4
    t1 = np.where(labels == 2, 100.0, np.where(labels == 4, 30.0, 5.0)) + rng.normal(0, 1, shape)
    aff = _psr_affine()
    aff[:3, :3] /= 2.0  # 1 mm
    img, lab, rec = preprocess_subject(
        Volume(t1.astype(np.float32), aff), Volume(labels, aff), spacing=1.0, shape=(32, 32, 32)
    )
    assert img.orientation == "RAS" and img.shape == (32, 32, 32)
    assert img.data.min() >= 0 and img.data.max() <= 1 and img.data[lab.data == 0].max() == 0
    back = to_original(lab, rec, order=0)
    assert back.shape == shape
    np.testing.assert_array_equal(back.data, labels)  # the brain fits in the crop: exact


def test_label_grid_mismatch_is_an_error():
    a = Volume(np.zeros((8, 8, 8), np.float32), np.eye(4))
    b = Volume(np.zeros((8, 8, 9), np.uint8), np.eye(4))
    with pytest.raises(ValueError, match="does not match"):
        preprocess_subject(a, b, spacing=1.0, shape=(8, 8, 8))


def test_real_ixi_subject(shared_data):
    root = shared_data / "ixi"
    t1 = read_volume(root / "sub-IXI012/anat/sub-IXI012_T1w.nii.gz")
    lab = read_volume(
        root / "derivatives/dlmuse/sub-IXI012/anat/sub-IXI012_dseg.nii.gz", dtype=None
    )
    img, plab, rec = preprocess_subject(t1, lab, spacing=2.0, shape=(96, 112, 96))
    assert img.shape == (96, 112, 96) and img.orientation == "RAS"
    # the whole brain fits: no labelled voxel lost by the crop
    assert (plab.data > 0).sum() == (lab.data > 0).sum()
    # mapping the processed labels back reproduces the original label map exactly
    np.testing.assert_array_equal(to_original(plab, rec, order=0).data, lab.data)
    # world centre of the brain is unchanged
    c0 = _world(t1, ndimage.center_of_mass(lab.data > 0))
    c1 = _world(img, ndimage.center_of_mass(plab.data > 0))
    assert np.linalg.norm(c0 - c1) < 1e-6


def test_real_pycortex_lia_to_ras(shared_data):
    t1 = read_volume(shared_data / "pycortex_s1/sub-S1/anat/sub-S1_T1w.nii.gz")
    ras = reorient_ras(t1)
    assert t1.orientation == "LIA" and ras.orientation == "RAS"
    i, j, k = 100, 80, 140
    ijk_ras = np.round(np.linalg.inv(ras.affine) @ np.r_[_world(t1, (i, j, k)), 1])[:3].astype(int)
    assert ras.data[tuple(ijk_ras)] == t1.data[i, j, k]
    small = resample(ras, 2.0)
    assert small.shape == (128, 128, 128)
