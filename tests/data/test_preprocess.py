"""Each preprocessing step keeps the anatomy at its world position (analytic checks + real data)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from brainsynth.data.preprocess import (
    PreprocessRecord,
    apply_mask,
    crop_pad,
    denormalise_intensity,
    mask_from_labels,
    normalise_intensity,
    preprocess_subject,
    reorient_ras,
    resample,
    to_original,
)
from brainsynth.io import Volume, read_volume


def _world(vol: Volume, ijk) -> np.ndarray:
    return vol.affine[:3, :3] @ np.asarray(ijk, float) + vol.affine[:3, 3]


def _blob(affine: np.ndarray, shape=(30, 34, 26), centre=(12.0, 20.0, 9.0), r=2.5) -> Volume:
    g = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    d2 = ((g - np.asarray(centre)) ** 2).sum(-1)
    return Volume(np.exp(-d2 / (2 * r**2)).astype(np.float32), affine)


def _affine(codes: str, spacing=2.0, origin=(-91.6, 120.8, -123.3)) -> np.ndarray:
    """Axis-aligned affine whose array axes point along ``codes`` (e.g. "PSR", like IXI)."""
    aff = np.eye(4)
    aff[:3, :3] = 0
    for i, (ax, sign) in enumerate(nib.orientations.axcodes2ornt(codes)):
        aff[int(ax), i] = sign * spacing
    aff[:3, 3] = origin
    assert "".join(nib.aff2axcodes(aff)) == codes
    return aff


def _oblique(spacing=(1.0, 1.2, 0.9)) -> np.ndarray:
    t = 0.35
    rot = np.array([[np.cos(t), 0, np.sin(t)], [0, 1, 0], [-np.sin(t), 0, np.cos(t)]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag(spacing) @ np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]])
    aff[:3, 3] = [30.0, -12.0, 7.5]
    return aff


@pytest.mark.parametrize("codes", ["PSR", "LIA", "LPI", "RAS", "oblique"])
def test_reorient_keeps_world_position_of_a_voxel(codes):
    aff = _oblique() if codes == "oblique" else _affine(codes)
    vol = Volume(np.zeros((5, 6, 7), np.float32), aff)
    vol.data[1, 2, 3] = 1.0
    ras = reorient_ras(vol)
    assert ras.orientation == "RAS"
    (ijk,) = np.argwhere(ras.data == 1.0)
    np.testing.assert_allclose(_world(ras, ijk), _world(vol, (1, 2, 3)), atol=1e-9)
    assert sorted(ras.shape) == sorted(vol.shape)
    np.testing.assert_allclose(sorted(ras.spacing), sorted(vol.spacing))


@pytest.mark.parametrize("spacing", [1.0, 3.0, (1.5, 2.5, 3.0)])
@pytest.mark.parametrize("codes", ["PSR", "oblique"])
def test_resample_keeps_centre_of_mass_and_fov_centre(spacing, codes):
    aff = _oblique() if codes == "oblique" else _affine(codes)
    vol = _blob(aff)
    out = resample(vol, spacing)
    np.testing.assert_allclose(out.spacing, np.broadcast_to(spacing, (3,)), atol=1e-6)
    com_in = _world(vol, ndimage.center_of_mass(vol.data))
    com_out = _world(out, ndimage.center_of_mass(out.data))
    assert np.linalg.norm(com_in - com_out) < 0.5 * out.spacing.min()
    fov_in = _world(vol, (np.asarray(vol.shape) - 1) / 2)
    fov_out = _world(out, (np.asarray(out.shape) - 1) / 2)
    np.testing.assert_allclose(fov_out, fov_in, atol=1e-9)


def test_resample_antialiases_when_downsampling():
    stripes = np.zeros((32, 8, 8), np.float32)
    stripes[::4] = 1.0  # period 4 voxels, mean 0.25: invisible at a quarter of the resolution
    vol = Volume(stripes, np.eye(4))
    smooth = resample(vol, (4.0, 1.0, 1.0))
    aliased = resample(vol, (4.0, 1.0, 1.0), antialias=False)
    assert smooth.shape == aliased.shape == (8, 8, 8)
    np.testing.assert_allclose(aliased.data[2:-2], 0.0, atol=1e-6)  # the stripes vanished
    np.testing.assert_allclose(smooth.data[2:-2], 0.25, atol=0.03)  # their mean is kept


def test_resample_labels_nearest_keeps_values_and_dtype():
    lab = Volume(np.random.default_rng(0).integers(0, 4, (10, 10, 10)).astype(np.uint16), np.eye(4))
    out = resample(lab, 0.5, order=0)
    assert out.data.dtype == np.uint16 and set(np.unique(out.data)) <= {0, 1, 2, 3}
    np.testing.assert_array_equal(out.data[::2, ::2, ::2], lab.data)


def test_crop_pad_world_preserved_and_centred_on_mask():
    vol = _blob(_affine("PSR"))
    mask = (vol.data > 0.5).astype(np.uint8)
    cropped = crop_pad(vol, (16, 41, 20), center_mask=mask)
    assert cropped.shape == (16, 41, 20)
    (ijk,) = np.argwhere(cropped.data == cropped.data.max())
    (src,) = np.argwhere(vol.data == vol.data.max())
    np.testing.assert_allclose(_world(cropped, ijk), _world(vol, src), atol=1e-9)
    np.testing.assert_allclose(ijk, (np.asarray(cropped.shape) - 1) // 2, atol=0.5)
    origin = np.linalg.solve(cropped.affine[:3, :3], vol.affine[:3, 3] - cropped.affine[:3, 3])
    off = int(round(origin[1]))  # where source voxel y=0 landed: y is padded 34 -> 41 with zeros
    assert 0 <= off and off + 34 < 41
    assert (cropped.data[:, :off] == 0).all() and (cropped.data[:, off + 34 :] == 0).all()


def test_crop_pad_then_to_original_recovers_the_inside():
    rng = np.random.default_rng(3)
    vol = Volume(rng.random((20, 24, 18)).astype(np.float32), _oblique())
    cropped = crop_pad(vol, (12, 30, 10), centre=(9, 11, 8))
    rec = PreprocessRecord(
        vol.affine.tolist(), list(vol.shape), cropped.affine.tolist(), list(cropped.shape)
    )
    back = to_original(cropped, rec, order=0)
    inside = to_original(np.ones(cropped.shape, np.uint8), rec, order=0).data > 0
    assert inside.sum() == 12 * 24 * 10  # x and z cropped, y padded
    np.testing.assert_array_equal(back.data[inside], vol.data[inside])
    assert (back.data[~inside] == 0).all()


def test_normalise_maps_percentiles_to_0_and_1():
    data = np.random.default_rng(1).normal(100, 20, (20, 20, 20)).astype(np.float32)
    mask = np.zeros(data.shape, np.uint8)
    mask[2:18, 2:18, 2:18] = 1
    out = normalise_intensity(Volume(data, np.eye(4)), Volume(mask, np.eye(4)), 1, 99)
    inside = out.data[mask > 0]
    assert inside.min() == 0.0 and inside.max() == 1.0 and (out.data[mask == 0] == 0).all()
    lo, hi = np.percentile(data[mask > 0], [1, 99])
    ramp = (data[mask > 0] - lo) / (hi - lo)
    sel = (ramp > 0) & (ramp < 1)
    np.testing.assert_allclose(inside[sel], ramp[sel], atol=1e-6)
    assert abs(np.mean(inside <= 0) - 0.01) < 0.003 and abs(np.mean(inside >= 1) - 0.01) < 0.003
    with pytest.raises(ValueError, match="flat"):
        normalise_intensity(Volume(np.ones((4, 4, 4), np.float32), np.eye(4)))


def test_mask_from_labels_keeps_brain_and_csf_not_head_tissue():
    lab = np.zeros((6, 6, 6), np.uint16)
    lab[0] = 502  # whole-head SynthSeg maps: extra-cerebral tissue
    lab[1], lab[2], lab[3], lab[4] = 24, 2, 3, 4
    lab[5] = 41
    m = mask_from_labels(Volume(lab, np.eye(4))).data
    assert m.dtype == np.uint8
    np.testing.assert_array_equal(m[:, 0, 0], [0, 1, 1, 1, 1, 1])
    img = apply_mask(Volume(np.full(lab.shape, 7.0, np.float32), np.eye(4)), Volume(m, np.eye(4)))
    assert img.data[0].max() == 0 and img.data[1:].min() == 7.0


def _synthetic_subject(shape=(40, 44, 36), seed=2):
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint8)
    labels[8:32, 10:34, 6:30] = 2
    labels[12:28, 14:30, 10:26] = 3
    labels[16:24, 18:26, 14:22] = 4
    labels[2:5, 2:40, 2:34] = 165 % 256  # head tissue outside the brain (not in any scheme)
    t1 = np.select([labels == 2, labels == 3, labels == 4], [100.0, 70.0, 30.0], 40.0)
    aff = _affine("PSR", spacing=1.0)
    return Volume((t1 + rng.normal(0, 1, shape)).astype(np.float32), aff), Volume(labels, aff)


def test_pipeline_output_and_round_trip_to_original():
    t1, labels = _synthetic_subject()
    img, lab, rec = preprocess_subject(t1, labels, spacing=1.0, shape=(32, 32, 32))
    assert img.orientation == "RAS" and img.shape == (32, 32, 32) and img.data.dtype == np.float32
    assert img.data.min() >= 0 and img.data.max() <= 1
    assert img.data[lab.data == 0].max() == 0 and img.data[lab.data == 165].max() == 0
    assert rec.mask_source == "labels" and rec.label_scheme == "freesurfer"
    assert rec.mask_voxels_cropped == 0 and rec.original_orientation == "PSR"
    rec = PreprocessRecord.from_dict(json.loads(json.dumps(rec.to_dict())))  # JSON-serialisable
    back = to_original(lab, rec, order=0)
    assert back.shape == t1.shape and np.allclose(back.affine, t1.affine)
    brain = np.isin(labels.data, [2, 3, 4])
    np.testing.assert_array_equal(back.data[brain], labels.data[brain])
    img_back = denormalise_intensity(to_original(img, rec, order=0), rec)
    lo, hi = rec.intensity_range
    inside = brain & (t1.data > lo) & (t1.data < hi)
    np.testing.assert_allclose(img_back.data[inside], t1.data[inside], atol=1e-3)


def test_pipeline_without_labels_keeps_the_head_and_centres_it():
    t1, _ = _synthetic_subject()
    img, lab, rec = preprocess_subject(t1, spacing=2.0, shape=(24, 24, 24))
    assert lab is None and rec.mask_source == "foreground" and img.shape == (24, 24, 24)
    assert img.data.max() == 1.0 and rec.spacing == [2.0, 2.0, 2.0]


def test_label_grid_mismatch_is_an_error():
    a = Volume(np.zeros((8, 8, 8), np.float32), np.eye(4))
    b = Volume(np.zeros((8, 8, 9), np.uint8), np.eye(4))
    with pytest.raises(ValueError, match="does not match"):
        preprocess_subject(a, b, spacing=1.0, shape=(8, 8, 8))
    shifted = np.eye(4)
    shifted[0, 3] = 4.0
    with pytest.raises(ValueError, match="does not match"):
        preprocess_subject(a, Volume(np.zeros((8, 8, 8), np.uint8), shifted), 1.0, (8, 8, 8))


def test_real_ixi_subject(shared_data):
    root = shared_data / "ixi"
    t1 = read_volume(root / "sub-IXI012/anat/sub-IXI012_T1w.nii.gz")
    lab = read_volume(
        root / "derivatives/dlmuse/sub-IXI012/anat/sub-IXI012_dseg.nii.gz", dtype=None
    )
    assert t1.orientation == "PSR" and t1.shape == (120, 120, 90)
    img, plab, rec = preprocess_subject(t1, lab, spacing=2.0, shape=(96, 112, 96))
    assert img.shape == (96, 112, 96) and img.orientation == "RAS" and rec.label_scheme == "dlmuse"
    assert rec.mask_voxels_cropped == 0 and (plab.data > 0).sum() == (lab.data > 0).sum()
    assert img.data[plab.data == 0].max() == 0  # skull-stripped
    np.testing.assert_array_equal(to_original(plab, rec, order=0).data, lab.data)
    c0 = _world(t1, ndimage.center_of_mass(lab.data > 0))
    c1 = _world(img, ndimage.center_of_mass(plab.data > 0))
    assert np.linalg.norm(c0 - c1) < 1e-6
    # T1 contrast: white matter (81, 82) > cortex (200, 201) > lateral ventricles (51, 52)
    wm, gm, csf = (
        np.median(img.data[np.isin(plab.data, v)]) for v in ((81, 82), (200, 201), (51, 52))
    )
    assert wm > 0.6 and wm > gm > csf


def test_real_pycortex_lia_1mm(shared_data):
    t1 = read_volume(shared_data / "pycortex_s1/sub-S1/anat/sub-S1_T1w.nii.gz")
    ras = reorient_ras(t1)
    assert t1.orientation == "LIA" and ras.orientation == "RAS"
    i, j, k = 100, 80, 140
    ijk_ras = np.round(np.linalg.inv(ras.affine) @ np.r_[_world(t1, (i, j, k)), 1])[:3]
    assert ras.data[tuple(ijk_ras.astype(int))] == t1.data[i, j, k]
    img, _, rec = preprocess_subject(t1, spacing=2.0, shape=(96, 112, 96))
    assert img.shape == (96, 112, 96) and rec.mask_source == "foreground"
    # mapped back, the output overlays the scan: voxelwise it matches the normalised original
    back = to_original(img, rec, order=1).data
    covered = to_original(np.ones(img.shape, np.uint8), rec, order=0).data > 0
    lo, hi = rec.intensity_range
    ref = np.clip((t1.data - lo) / (hi - lo), 0, 1)
    assert covered.mean() > 0.4
    assert np.corrcoef(back[covered], ref[covered])[0, 1] > 0.95


def test_nothing_to_normalise_says_why():
    from brainsynth.data.preprocess import robust_range

    with pytest.raises(ValueError, match="no voxels to normalise: the brain mask is empty"):
        robust_range(np.ones((4, 4, 4)), np.zeros((4, 4, 4)))
    with pytest.raises(ValueError, match="no voxels to normalise: the image is all zero"):
        robust_range(np.zeros((4, 4, 4)))
    flat = Volume(np.full((12, 12, 12), 5.0, np.float32), np.eye(4))
    with pytest.raises(ValueError, match="no head to find: every voxel of the image is 5"):
        preprocess_subject(flat, spacing=1.0, shape=(8, 8, 8))
