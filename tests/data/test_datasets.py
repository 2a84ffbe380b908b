"""BIDS/manifest/folder readers, covariates and label schemes (synthetic + real IXI/SynthSeg)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from brainsynth.data.covariates import (
    COVARIATES,
    CovariateNormaliser,
    check_names,
    format_value,
    implausible,
    parse_value,
    sex_code,
)
from brainsynth.data.datasets import load_subjects, read_bids
from brainsynth.data.labels import (
    detect_scheme,
    intracranial_mask,
    label_counts,
    label_volumes,
    resolve_scheme,
)
from brainsynth.errors import InputError
from brainsynth.io import Surface, Volume, read_volume, write_surface, write_volume

_TET = Surface(np.eye(3).tolist() + [[0, 0, 0]], [[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


def _vol(path, value=1.0):
    return write_volume(Volume(np.full((4, 4, 4), value, np.float32), np.eye(4)), path)


def _bids(root, ids=("sub-01", "sub-02"), rows=1):
    for sid in ids:
        _vol(root / sid / "anat" / f"{sid}_T1w.nii.gz")
    lines = ["participant_id\tage\tsex\tsite"]
    lines += [f"{s}\t{30 + i}\t{'MF'[i % 2]}\tHH" for i, s in enumerate(ids[:rows])]
    (root / "participants.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_bids_reader_covariates_and_missing_row_warning(tmp_path):
    root = _bids(tmp_path)
    with pytest.warns(UserWarning, match=r"participants\.tsv: no row for sub-02 .*sub-02_T1w"):
        subs = read_bids(root)
    assert [s.id for s in subs] == ["sub-01", "sub-02"]
    assert subs[0].covariates == {"age": 30.0, "sex": 1.0}  # M -> 1
    assert subs[1].covariates == {} and subs[0].labels is None
    with pytest.raises(InputError, match=r"participants\.tsv: no row for sub-02 \(whose T1w is"):
        read_bids(root, require_covariates=True)


def test_bids_derivatives_sessions_and_surfaces(tmp_path):
    root = _bids(tmp_path, ids=("sub-01",))
    deriv = root / "derivatives"
    _vol(deriv / "seg" / "sub-01" / "anat" / "sub-01_desc-aseg_dseg.nii.gz")
    _vol(deriv / "seg" / "sub-01" / "anat" / "sub-01_space-MNI152_dseg.nii.gz")  # not native
    write_surface(_TET, deriv / "surf" / "sub-01" / "anat" / "sub-01_hemi-L_pial.surf.gii")
    write_surface(_TET, deriv / "surf" / "sub-01" / "anat" / "sub-01_hemi-R_white.surf.gii")
    write_surface(_TET, deriv / "freesurfer" / "sub-01" / "surf" / "rh.pial")
    (s,) = read_bids(root)
    assert s.labels.name == "sub-01_desc-aseg_dseg.nii.gz"
    assert set(s.surfaces) == {"lh_pial", "rh_white", "rh_pial"}
    assert s.surfaces["rh_pial"].name == "rh.pial"
    # sessions: one subject per session, derivatives matched by session
    for ses in ("ses-1", "ses-10"):
        _vol(root / "sub-02" / ses / "anat" / f"sub-02_{ses}_T1w.nii")
        _vol(deriv / "seg" / "sub-02" / ses / "anat" / f"sub-02_{ses}_dseg.nii.gz")
    with pytest.warns(UserWarning, match="no row for sub-02"):
        subs = {s.id: s for s in read_bids(root)}
    assert subs["sub-02_ses-1"].labels.name == "sub-02_ses-1_dseg.nii.gz"
    assert subs["sub-02_ses-10"].labels.name == "sub-02_ses-10_dseg.nii.gz"


def test_bids_table_errors(tmp_path):
    root = _bids(tmp_path, ids=("sub-01",))
    (root / "participants.tsv").write_text("id\tage\nsub-01\t30\n")
    with pytest.raises(InputError, match="no participant_id column"):
        read_bids(root)
    (root / "participants.tsv").write_text("participant_id\tage\nsub-01\tthirty\n")
    with pytest.raises(InputError, match=r"participants\.tsv: sub-01, column 'age': .*number"):
        read_bids(root)
    (root / "participants.tsv").write_text("participant_id\tage\nsub-01\t30\nsub-01\t31\n")
    with pytest.raises(InputError, match="appears twice"):
        read_bids(root)
    (root / "participants.tsv").write_text("participant_id\tage\tsex\n01\tn/a\tfemale\n")
    (s,) = read_bids(root)  # bare ids get their sub- prefix; n/a -> None
    assert s.covariates == {"age": None, "sex": 0.0}


def test_manifest_reader(tmp_path):
    _vol(tmp_path / "img" / "a.nii.gz")
    text = "subject,t1,labels,age,sex,brain_mm3,site\ns1,img/a.nii.gz,,n/a,F,1.2e6,X\n"
    (tmp_path / "m.csv").write_text(text)
    with pytest.warns(UserWarning, match=r"ignoring columns \['site'\]"):
        (s,) = load_subjects(tmp_path / "m.csv")
    assert s.t1 == tmp_path / "img" / "a.nii.gz" and s.labels is None
    assert s.covariates == {"age": None, "sex": 0.0, "brain_volume": 1.2e6}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("id,path\nx,y\n", r"bad\.csv: manifest needs columns"),
        ("subject,t1,lables\nx,y,z\n", r"unknown column 'lables' \(did you mean 'labels'\?\)"),
        ("subject,t1\nx,a.nii\nx,b.nii\n", r"line 3: subject x appears twice"),
        ("subject,t1,sex\nx,a.nii,X\n", r"line 2 \(x\), column 'sex': sex must be M or F"),
        ("subject,t1\n", r"header but no rows"),
        ("subject,t1\n../x,a.nii\n", r"line 2: subject id '\.\./x' may use only"),
        ("", r"empty table"),
    ],
)
def test_manifest_errors_name_the_file(tmp_path, text, match):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(InputError, match=match):
        load_subjects(tmp_path / "bad.csv")


def test_folder_of_nifti_files_pairs_dseg(tmp_path):
    _vol(tmp_path / "a.nii.gz")
    _vol(tmp_path / "a_dseg.nii.gz")
    _vol(tmp_path / "b.nii")
    subs = load_subjects(tmp_path)
    assert [(s.id, s.labels.name if s.labels else None) for s in subs] == [
        ("a", "a_dseg.nii.gz"),
        ("b", None),
    ]
    with pytest.raises(InputError, match="not found"):
        load_subjects(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: no BIDS layout"):
        load_subjects(tmp_path / "empty")


def test_covariate_parsing_and_errors():
    with pytest.raises(InputError, match=r"unknown covariate\(s\) \['iq'\]"):
        check_names(["age", "iq"])
    with pytest.raises(InputError, match="sex must be M or F"):
        parse_value("sex", "X")
    with pytest.raises(InputError, match="must be a finite non-negative"):
        parse_value("age", "-3")
    assert parse_value("age", "n/a") is None and parse_value("sex", " male ") == 1.0
    assert (
        format_value("sex", 1.0) == "M"
        and sex_code("f") == 0.0
        and format_value("age", None) == "n/a"
    )


def test_implausible_covariates():
    assert implausible("age", 1e9) == "1e+09 is outside the plausible range 0..120 years"
    assert "(in mm^3: is it in ml or litres?)" in implausible("brain_volume", 1200.0)
    assert implausible("ventricle_volume", 4e5).startswith("400000 is outside")
    for name, value in [("age", 0.0), ("age", 120.0), ("brain_volume", 1.2e6), ("sex", 1.0)]:
        assert implausible(name, value) is None
    assert implausible("age", None) is None


def test_implausible_table_values_become_the_subjects_problems(tmp_path):
    root = _bids(tmp_path, ids=("sub-01", "sub-02"), rows=2)
    (root / "participants.tsv").write_text(
        "participant_id\tage\tsex\tbrain_mm3\nsub-01\t1e9\tF\t1200\nsub-02\t40\tM\t1.2e6\n"
    )
    one, two = read_bids(root)
    assert one.covariates["age"] == 1e9 and len(one.problems) == 2 and not two.problems
    assert one.problems[0].startswith(f"{root / 'participants.tsv'}: sub-01, column 'age': 1e+09")
    assert (
        "column 'brain_mm3': 1200 is outside the plausible range 300000..2.5e+06 mm^3"
        in (one.problems[1])
    )
    (tmp_path / "m.csv").write_text("subject,t1,age\ns1,sub-01/anat/sub-01_T1w.nii.gz,200\n")
    (s,) = load_subjects(tmp_path / "m.csv")
    assert s.problems == [f"{tmp_path / 'm.csv'}: line 2 (s1), column 'age': 200 is outside the "
                          "plausible range 0..120 years"]  # fmt: skip


def test_table_warnings_missing_column_and_missing_cells(tmp_path):
    root = _bids(tmp_path, ids=("sub-01", "sub-02", "sub-03"), rows=0)
    table = root / "participants.tsv"
    table.write_text("participant_id\tage\nsub-01\tnan\nsub-02\tn/a\nsub-03\t\n")
    with pytest.warns(UserWarning) as record:
        read_bids(root)
    messages = [str(w.message) for w in record]
    assert f"{table}: no sex column: missing for every subject" in messages[0]
    assert (
        f"{table}: cells read as missing, per column: age 3 (empty 1, n/a 1, nan 1)"
        in (messages[1])
    )
    assert len(messages) == 2  # one warning per finding, not one per cell


def test_resolve_scheme_refuses_maps_that_strip_everything():
    with pytest.raises(InputError, match="all zero"):
        resolve_scheme(label_counts(np.zeros((4, 4, 4), np.uint8)), "freesurfer")
    with pytest.raises(InputError, match=r"no brain or CSF label of the freesurfer scheme .*530"):
        resolve_scheme(label_counts(np.full((4, 4, 4), 530, np.uint16)), "freesurfer")
    lab = np.zeros((4, 4, 4), np.uint8)
    lab[1:3, 1:3, 1:3] = 2
    assert resolve_scheme(label_counts(lab)) == "freesurfer"


def test_normaliser_round_trip_and_missing_values():
    rows = [
        {"age": 20.0, "sex": 0.0, "ventricle_volume": 1e4, "brain_volume": 1.1e6},
        {"age": 60.0, "sex": 1.0, "ventricle_volume": 3e4, "brain_volume": 1.3e6},
        {"age": None, "sex": None, "ventricle_volume": 2e4, "brain_volume": 1.2e6},
    ]
    norm = CovariateNormaliser.fit(rows)
    assert norm.mean["age"] == 40.0 and norm.sex_fraction_male == 0.5
    vec = norm.transform(rows[1])
    assert vec.shape == (len(COVARIATES),) and vec.dtype == np.float32
    assert vec[0] == pytest.approx(1.0) and vec[1] == 1.0
    back = CovariateNormaliser.from_dict(json.loads(json.dumps(norm.to_dict()))).inverse(vec)
    for k in COVARIATES:
        assert back[k] == pytest.approx(rows[1][k], rel=1e-5)
    np.testing.assert_allclose(norm.transform(rows[2])[:2], [0.0, 0.5])  # missing -> mean
    with pytest.raises(InputError, match="unknown covariate"):
        norm.transform({"age": 3.0, "height": 1.8})


def test_freesurfer_volumes_and_definitions():
    lab = np.zeros((10, 10, 10), np.uint16)
    lab[2:8, 2:8, 2:8] = 2
    lab[4:6, 4:6, 4:6] = 4  # ventricle: part of the brain volume
    lab[0, :, :] = 24  # CSF: not brain, but intracranial
    lab[9, :, :] = 530  # head tissue in whole-head SynthSeg maps: neither
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    assert detect_scheme(lab) == "freesurfer"
    assert label_volumes(lab, aff) == {"brain_volume": 216 * 8.0, "ventricle_volume": 8 * 8.0}
    assert intracranial_mask(lab).sum() == 216 + 100


def test_dlmuse_detection_and_ambiguity():
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[:5] = 81  # MUSE frontal WM
    lab[5:8] = 200  # MUSE superior temporal gyrus
    lab[8, :, :5] = 51  # lateral ventricle (thalamus in FreeSurfer numbering)
    lab[9] = 1  # cortical CSF
    assert detect_scheme(lab) == "dlmuse"
    v = label_volumes(lab, np.eye(4))
    assert v == {"brain_volume": 850.0, "ventricle_volume": 50.0}
    with pytest.raises(InputError, match="cannot tell the label scheme"):
        detect_scheme(np.full((4, 4, 4), 51, np.uint8))  # known to both
    with pytest.raises(InputError, match="cannot tell the label scheme"):
        detect_scheme(np.full((4, 4, 4), 999, np.uint16))  # known to neither


def test_ixi_bids_reader_finds_160(shared_data):
    subs = load_subjects(shared_data / "ixi")
    assert len(subs) == 160 and len({s.id for s in subs}) == 160
    assert all(s.labels is not None and s.labels.name.endswith("_dseg.nii.gz") for s in subs)
    ages = [s.covariates["age"] for s in subs]
    assert any(a is None for a in ages)  # n/a parsed as missing
    assert all(isinstance(a, float) and 18 <= a <= 90 for a in ages if a is not None)
    assert {s.covariates["sex"] for s in subs} <= {0.0, 1.0, None}
    assert all(s.covariates["brain_volume"] > 8e5 for s in subs)


def test_dlmuse_volumes_match_tables_for_all_160(shared_data):
    """Computed volumes equal DLMUSE's ROI 701/509 and participants.tsv to the voxel (8 mm^3)."""
    root = shared_data / "ixi"
    with open(root / "derivatives/dlmuse/volumes.tsv", newline="") as fh:
        table = {r["participant_id"]: r for r in csv.DictReader(fh, delimiter="\t")}
    for s in load_subjects(root):
        lab = read_volume(s.labels, dtype=None)
        assert detect_scheme(lab.data) == "dlmuse"
        v = label_volumes(lab.data, lab.affine)
        assert v["brain_volume"] == pytest.approx(float(table[s.id]["701"]), abs=1.0)
        assert v["ventricle_volume"] == pytest.approx(float(table[s.id]["509"]), abs=1.0)
        assert v["brain_volume"] == pytest.approx(s.covariates["brain_volume"], abs=1.0)
        assert v["ventricle_volume"] == pytest.approx(s.covariates["ventricle_volume"], abs=1.0)


def test_synthseg_whole_head_maps_are_freesurfer(shared_data):
    lab = read_volume(shared_data / "synthseg_labels/training_seg_01.nii.gz", dtype=None)
    assert detect_scheme(lab.data) == "freesurfer"
    v = label_volumes(lab.data, lab.affine)
    assert 8e5 < v["brain_volume"] < 1.8e6 and 5e3 < v["ventricle_volume"] < 1.5e5
    head = (lab.data > 0).sum()
    assert intracranial_mask(lab.data).sum() < 0.8 * head  # skull/scalp labels are not kept


def test_pycortex_surfaces_found(shared_data):
    (s,) = load_subjects(shared_data / "pycortex_s1")
    assert set(s.surfaces) == {"lh_pial", "lh_white", "rh_pial", "rh_white"}
    assert s.t1.name == "sub-S1_T1w.nii.gz" and s.labels is None
