"""Round trips keep voxels and affines exactly; bad files fail with the file and the problem named."""

from __future__ import annotations

import gzip
import os

import nibabel as nib
import numpy as np
import pytest

from brainsynth.errors import InputError
from brainsynth.io import Surface, Volume, read_surface, read_volume, write_surface, write_volume


def _oblique_affine() -> np.ndarray:
    theta = 0.3
    rot = np.array(
        [[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]]
    )
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([1.5, -2.0, 2.5])
    aff[:3, 3] = [-80.25, 110.5, -60.0]
    return aff


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".mgz"])
def test_volume_round_trip_exact(tmp_path, suffix):
    data = np.random.default_rng(0).random((7, 9, 5)).astype(np.float32)
    vol = Volume(data, _oblique_affine())
    back = read_volume(write_volume(vol, tmp_path / f"v{suffix}"))
    np.testing.assert_array_equal(back.data, data)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-5)
    np.testing.assert_allclose(back.spacing, [1.5, 2.0, 2.5], atol=1e-5)


def test_label_dtype_kept(tmp_path):
    lab = Volume(np.arange(60, dtype=np.uint16).reshape(3, 4, 5), np.eye(4))
    back = read_volume(write_volume(lab, tmp_path / "l.nii.gz"), dtype=None)
    assert back.data.dtype == np.uint16
    np.testing.assert_array_equal(back.data, lab.data)


@pytest.mark.parametrize("suffix", [".nii.gz", ".mgz"])
@pytest.mark.parametrize("dtype", [np.int64, np.uint16, bool])
def test_integer_volumes_written_in_a_storable_dtype(tmp_path, suffix, dtype):
    data = np.arange(60).reshape(3, 4, 5) % 2 if dtype is bool else np.arange(60).reshape(3, 4, 5)
    back = read_volume(write_volume(Volume(data.astype(dtype), np.eye(4)), tmp_path / f"i{suffix}"))
    np.testing.assert_array_equal(back.data, data)


def test_nifti_header_says_mm_and_scanner_space(tmp_path):
    p = write_volume(Volume(np.zeros((2, 2, 2), np.float32), _oblique_affine()), tmp_path / "h.nii")
    hdr = nib.load(str(p)).header
    assert hdr.get_xyzt_units()[0] == "mm"
    assert int(hdr["sform_code"]) == 1 and int(hdr["qform_code"]) == 1


def _mesh() -> Surface:
    v = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]], dtype=float) + [1.5, -2.0, 3.0]
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    return Surface(v, f)


@pytest.mark.parametrize("name", ["lh.pial.surf.gii", "lh.pial"])
def test_surface_round_trip(tmp_path, name):
    s = _mesh()
    back = read_surface(write_surface(s, tmp_path / name))
    np.testing.assert_allclose(back.vertices, s.vertices, atol=1e-5)
    np.testing.assert_array_equal(back.faces, s.faces)


def test_freesurfer_cras_applied(tmp_path):
    s = _mesh()
    info = {
        "head": np.array([2, 0, 20], dtype=np.int32),
        "valid": "1  # volume info valid",
        "filename": "orig.mgz",
        "volume": np.array([256, 256, 256]),
        "voxelsize": np.array([1.0, 1.0, 1.0]),
        "xras": np.array([-1.0, 0, 0]),
        "yras": np.array([0, 0, -1.0]),
        "zras": np.array([0, 1.0, 0]),
        "cras": np.array([5.0, -7.0, 11.0]),
    }
    nib.freesurfer.write_geometry(str(tmp_path / "rh.white"), s.vertices, s.faces, volume_info=info)
    back = read_surface(tmp_path / "rh.white")
    np.testing.assert_allclose(back.vertices, s.vertices + [5.0, -7.0, 11.0], atol=1e-4)
    again = read_surface(write_surface(back, tmp_path / "rh.white2"))
    np.testing.assert_allclose(again.vertices, back.vertices, atol=1e-4)


def test_corrupt_gzip_named(tmp_path):
    p = write_volume(
        Volume(np.random.default_rng(0).random((20, 20, 20)).astype(np.float32), np.eye(4)),
        tmp_path / "a.nii.gz",
    )
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match=r"a\.nii\.gz.*(corrupt|truncated|cannot read)"):
        read_volume(p)


@pytest.mark.parametrize("suffix", [".nii", ".mgz"])
def test_truncated_nii_and_mgz_named(tmp_path, suffix):
    vol = Volume(np.random.default_rng(0).random((10, 10, 10)).astype(np.float32), np.eye(4))
    p = write_volume(vol, tmp_path / f"t{suffix}")
    p.write_bytes(p.read_bytes()[:-1500])
    with pytest.raises(InputError, match=rf"t\{suffix}: (corrupt|truncated|cannot read)"):
        read_volume(p)


def test_empty_file_named(tmp_path):
    (tmp_path / "e.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match=r"e\.nii\.gz: .*(Empty|empty|corrupt)"):
        read_volume(tmp_path / "e.nii.gz")


def test_not_gzip_at_all(tmp_path):
    p = tmp_path / "b.nii.gz"
    p.write_bytes(b"this is not gzip")
    with pytest.raises(InputError, match=r"b\.nii\.gz"):
        read_volume(p)


def test_4d_where_3d_expected(tmp_path):
    p = write_volume(Volume(np.zeros((4, 4, 4, 3), np.float32), np.eye(4)), tmp_path / "f.nii.gz")
    with pytest.raises(InputError, match=r"f\.nii\.gz: expected a 3D volume, got 4D"):
        read_volume(p)
    # a trailing singleton axis is accepted
    q = write_volume(Volume(np.zeros((4, 4, 4, 1), np.float32), np.eye(4)), tmp_path / "g.nii.gz")
    assert read_volume(q).shape == (4, 4, 4)


def test_nan_voxels(tmp_path):
    d = np.ones((4, 4, 4), np.float32)
    d[1, 2, 3] = np.nan
    p = write_volume(Volume(d, np.eye(4)), tmp_path / "n.nii")
    with pytest.raises(InputError, match=r"n\.nii: 1 voxels are NaN"):
        read_volume(p)


def test_missing_file_and_wrong_suffix(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_volume(tmp_path / "nope.nii.gz")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(InputError, match="not a volume file"):
        read_volume(tmp_path / "x.txt")


def test_empty_and_non_triangular_mesh(tmp_path):
    with pytest.raises(InputError, match="empty mesh"):
        Surface(np.zeros((0, 3)), np.zeros((0, 3), int))
    with pytest.raises(InputError, match=r"triangles \(M, 3\)"):
        Surface(np.zeros((4, 3)), np.array([[0, 1, 2, 3]]))
    with pytest.raises(InputError, match="out of range"):
        Surface(np.zeros((3, 3)), np.array([[0, 1, 5]]))
    # FreeSurfer files that are not surfaces, broken GIfTI XML
    (tmp_path / "lh.pial").write_bytes(b"")
    with pytest.raises(InputError, match=r"lh\.pial: cannot read"):
        read_surface(tmp_path / "lh.pial")
    (tmp_path / "broken.surf.gii").write_text("<GIFTI")
    with pytest.raises(InputError, match=r"broken\.surf\.gii: cannot read surface"):
        read_surface(tmp_path / "broken.surf.gii")
    # a GIfTI with points but no triangles
    img = nib.gifti.GiftiImage()
    img.add_gifti_data_array(
        nib.gifti.GiftiDataArray(np.zeros((3, 3), np.float32), intent="NIFTI_INTENT_POINTSET")
    )
    nib.save(img, str(tmp_path / "pts.surf.gii"))
    with pytest.raises(InputError, match=r"pts\.surf\.gii: .*no TRIANGLE"):
        read_surface(tmp_path / "pts.surf.gii")


def test_atomic_write_honours_umask(tmp_path):
    old = os.umask(0o022)
    try:
        p = write_volume(Volume(np.ones((2, 2, 2), np.float32), np.eye(4)), tmp_path / "m.nii.gz")
    finally:
        os.umask(old)
    assert p.stat().st_mode & 0o777 == 0o644  # readable by others, like any file we create


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "keep.nii.gz"
    write_volume(Volume(np.ones((3, 3, 3), np.float32), np.eye(4)), target)
    before = target.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(nib, "save", boom)
    with pytest.raises(RuntimeError):
        write_volume(Volume(np.zeros((3, 3, 3), np.float32), np.eye(4)), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.nii.gz"]


def test_real_pycortex_surface_and_t1(shared_data):
    s1 = shared_data / "pycortex_s1" / "sub-S1"
    t1 = read_volume(s1 / "anat" / "sub-S1_T1w.nii.gz")
    assert t1.shape == (256, 256, 256) and t1.orientation == "LIA"
    pial = read_surface(s1 / "surf" / "sub-S1_hemi-L_pial.surf.gii")
    white = read_surface(s1 / "surf" / "sub-S1_hemi-L_white.surf.gii")
    assert pial.n_vertices == white.n_vertices > 100_000
    # surfaces are in the T1's world space: vertices map inside the volume
    vox = np.c_[pial.vertices, np.ones(pial.n_vertices)] @ np.linalg.inv(t1.affine).T
    assert (vox[:, :3] > 0).all() and (vox[:, :3] < 256).all()
    # and land on head tissue, not air
    idx = np.round(vox[:, :3]).astype(int)
    assert np.mean(t1.data[idx[:, 0], idx[:, 1], idx[:, 2]] > 20) > 0.95
    with gzip.open(s1 / "anat" / "sub-S1_T1w.nii.gz") as fh:
        assert fh.read(4)  # readable gzip


def test_truncated_real_scan_named(shared_data, tmp_path):
    src = shared_data / "ixi" / "sub-IXI012" / "anat" / "sub-IXI012_T1w.nii.gz"
    bad = tmp_path / "sub-IXI012_T1w.nii.gz"
    bad.write_bytes(src.read_bytes()[: src.stat().st_size * 2 // 3])
    with pytest.raises(InputError, match=r"sub-IXI012_T1w\.nii\.gz: corrupt or truncated gzip"):
        read_volume(bad)
