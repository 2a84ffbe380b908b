"""BIDS and manifest readers, covariates from tables and label maps."""

from __future__ import annotations

import numpy as np
import pytest

from brainsynth.data.covariates import COVARIATES, CovariateNormaliser, check_names, parse_value
from brainsynth.data.datasets import load_subjects, read_bids
from brainsynth.data.labels import detect_scheme, label_volumes
from brainsynth.errors import InputError
from brainsynth.io import Volume, read_volume, write_volume


def _bids(tmp_path, ids=("sub-01", "sub-02"), rows=True):
    for sid in ids:
        write_volume(
            Volume(np.ones((4, 4, 4), np.float32), np.eye(4)),
            tmp_path / sid / "anat" / f"{sid}_T1w.nii.gz",
        )
    if rows:
        lines = ["participant_id\tage\tsex"] + [
            f"{s}\t{30 + i}\t{'MF'[i % 2]}" for i, s in enumerate(ids[:1])
        ]
        (tmp_path / "participants.tsv").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_bids_reader_and_missing_row(tmp_path):
    root = _bids(tmp_path)
    subs = read_bids(root)
    assert [s.id for s in subs] == ["sub-01", "sub-02"]
    assert subs[0].covariates == {"age": 30.0, "sex": 1.0}
    assert subs[1].covariates == {}
    with pytest.raises(InputError, match=r"participants\.tsv: no row for sub-02"):
        read_bids(root, require_covariates=True)


def test_manifest_reader(tmp_path):
    write_volume(Volume(np.ones((4, 4, 4), np.float32), np.eye(4)), tmp_path / "a.nii.gz")
    (tmp_path / "m.csv").write_text("subject,t1,age,sex,brain_mm3\ns1,a.nii.gz,n/a,F,1.2e6\n")
    (s,) = load_subjects(tmp_path / "m.csv")
    assert s.t1 == tmp_path / "a.nii.gz"
    assert s.covariates == {"age": None, "sex": 0.0, "brain_volume": 1.2e6}
    (tmp_path / "bad.csv").write_text("id,path\nx,y\n")
    with pytest.raises(InputError, match=r"bad\.csv: manifest needs columns"):
        load_subjects(tmp_path / "bad.csv")


def test_covariate_errors():
    with pytest.raises(InputError, match="unknown covariate"):
        check_names(["age", "iq"])
    with pytest.raises(InputError, match="sex must be M or F"):
        parse_value("sex", "X")
    assert parse_value("age", "n/a") is None


def test_normaliser_round_trip():
    rows = [
        {"age": 20.0, "sex": 0.0, "ventricle_volume": 1e4, "brain_volume": 1.1e6},
        {"age": 60.0, "sex": 1.0, "ventricle_volume": 3e4, "brain_volume": 1.3e6},
    ]
    norm = CovariateNormaliser.fit(rows)
    vec = norm.transform(rows[1])
    assert vec.shape == (len(COVARIATES),)
    np.testing.assert_allclose(vec[[0, 2, 3]], [1.0, 1.0, 1.0], atol=1e-6)  # (x - mean) / std
    back = CovariateNormaliser.from_dict(norm.to_dict()).inverse(vec)
    for k in COVARIATES:
        assert back[k] == pytest.approx(rows[1][k], rel=1e-5)


def test_freesurfer_volumes():
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[2:8, 2:8, 2:8] = 2
    lab[4:6, 4:6, 4:6] = 4
    lab[0, :, :] = 24
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    assert detect_scheme(lab) == "freesurfer"
    v = label_volumes(lab, aff)
    assert v["ventricle_volume"] == 8 * 8.0
    assert v["brain_volume"] == 216 * 8.0


def test_ixi_bids_reader_160(shared_data):
    subs = load_subjects(shared_data / "ixi")
    assert len(subs) == 160
    assert all(s.labels is not None and s.labels.exists() for s in subs)
    ages = [s.covariates.get("age") for s in subs]
    assert sum(a is None for a in ages) >= 1  # n/a parsed as missing
    assert all(18 <= a <= 90 for a in ages if a is not None)
    assert {s.covariates["sex"] for s in subs} <= {0.0, 1.0, None}


def test_dlmuse_volumes_match_table(shared_data):
    subs = load_subjects(shared_data / "ixi")[:6]
    for s in subs:
        lab = read_volume(s.labels, dtype=None)
        assert detect_scheme(lab.data) == "dlmuse"
        v = label_volumes(lab.data, lab.affine)
        assert v["ventricle_volume"] == pytest.approx(s.covariates["ventricle_volume"], rel=1e-6)
        assert v["brain_volume"] == pytest.approx(s.covariates["brain_volume"], rel=1e-3)


def test_pycortex_surfaces_found(shared_data):
    (s,) = load_subjects(shared_data / "pycortex_s1")
    assert set(s.surfaces) == {"lh_pial", "lh_white", "rh_pial", "rh_white"}
