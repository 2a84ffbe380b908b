"""A given deform template (data.template: mni152 or a NIfTI path): placed brain-centred on the
run's grid, scaled like the cache, its labels carried, and the training split aligned to it."""

from __future__ import annotations

import numpy as np
import pytest

from brainsynth.data.preprocess import bbox_centre
from brainsynth.errors import InputError
from brainsynth.io import Volume, read_volume, write_volume
from brainsynth.methods.deform.given import given_template


def _grid(shape=(20, 24, 20), mm=4.0):
    aff = np.diag([mm, mm, mm, 1.0])
    aff[:3, 3] = -mm * (np.asarray(shape) - 1) / 2
    return aff, shape


def _box_template(tmp_path, offset=(30.0, -12.0, 7.0)):
    """A 2 mm skull-stripped box 'brain' (intensity 50..150) far from the world origin, with a
    two-label map beside it."""
    data = np.zeros((40, 40, 40), np.float32)
    data[10:30, 12:28, 14:26] = np.linspace(50, 150, 20)[:, None, None]
    lab = np.where(data > 0, 2, 0).astype(np.int16)
    lab[10:20][data[10:20] > 0] = 41
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = offset
    t1 = write_volume(Volume(data, aff), tmp_path / "tpl_T1w.nii.gz")
    write_volume(Volume(lab, aff), tmp_path / "tpl_dseg.nii.gz")
    return t1


def test_a_path_template_is_brain_centred_scaled_and_keeps_its_labels(tmp_path):
    aff, shape = _grid()
    image, dseg = given_template(str(_box_template(tmp_path)), aff, shape)
    assert image.shape == shape and np.allclose(image.affine, aff)
    assert 0.0 <= image.data.min() and image.data.max() <= 1.0 and image.data.max() > 0.95
    centre = bbox_centre(image.data > 0.05)
    np.testing.assert_allclose(centre, (np.asarray(shape) - 1) / 2, atol=1.0)
    assert dseg is not None and set(np.unique(dseg.data)) == {0, 2, 41}
    np.testing.assert_array_equal(dseg.data > 0, image.data > 0)  # same placement


def test_bad_given_templates_are_clear_errors(tmp_path):
    aff, shape = _grid()
    with pytest.raises(InputError, match="nope_T1w.nii.gz: template not found"):
        given_template(str(tmp_path / "nope_T1w.nii.gz"), aff, shape)
    t1 = _box_template(tmp_path)
    lab = read_volume(tmp_path / "tpl_dseg.nii.gz", dtype=None)
    write_volume(Volume(lab.data[:-1], lab.affine), tmp_path / "tpl_dseg.nii.gz")
    with pytest.raises(InputError, match="tpl_dseg.nii.gz: label map on another grid"):
        given_template(str(t1), aff, shape)
    write_volume(Volume(np.zeros((8, 8, 8), np.float32), np.eye(4)), tmp_path / "z_T1w.nii.gz")
    with pytest.raises(InputError, match="empty"):
        given_template(str(tmp_path / "z_T1w.nii.gz"), aff, shape)
    from brainsynth.methods.deform.config import DeformData

    with pytest.raises(ValueError, match="built, mni152 or a .nii"):
        DeformData(template="icbm")


def test_mni152_template_has_tissue_labels_and_is_centred():
    aff, shape = _grid((48, 56, 48))
    image, dseg = given_template("mni152", aff, shape)
    assert dseg is not None
    found = set(np.unique(dseg.data).tolist())
    assert {2, 3, 4, 41, 42, 43} <= found  # cerebral WM, cortex, lateral ventricles, lh + rh
    brain = image.data > 0.05
    np.testing.assert_allclose(bbox_centre(brain), (np.asarray(shape) - 1) / 2, atol=1.0)
    wm, gm = image.data[np.isin(dseg.data, (2, 41))], image.data[np.isin(dseg.data, (3, 42))]
    assert np.median(wm) > np.median(gm)  # T1w contrast


def test_build_template_aligns_the_training_split_to_a_given_template(restore_cache, tmp_path):
    from brainsynth.methods.deform.template import DSEG, T1W, build_template, pooled_grid

    aff, shape = pooled_grid(restore_cache, 2)
    (tmp_path / "given").mkdir()
    t1 = _box_template(tmp_path / "given")
    template, dseg, aligned = build_template(restore_cache, 2, 1, tmp_path / "run", given=str(t1))
    assert template.shape == shape and dseg is not None
    written = read_volume(tmp_path / "run" / "template" / T1W)
    np.testing.assert_allclose(written.data, template.data, atol=1e-6)
    assert (tmp_path / "run" / "template" / DSEG).is_file()
    assert aligned.images.shape[2:] == shape and len(aligned.ids) >= 1
