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


# --- integrity and header checks (issue: hostile inputs) ------------------------------------


def _nifti_bytes(data: np.ndarray, **fields) -> bytes:
    """NIfTI-1 bytes with header fields as given (nibabel's writer would fix a bad pixdim)."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(data.shape)
    hdr.set_data_dtype(data.dtype)
    hdr["vox_offset"] = 352
    for key, value in fields.items():
        hdr[key] = value
    return hdr.binaryblock + b"\0" * 4 + data.tobytes(order="F")


def _flip_middle(raw: bytes, n: int = 200) -> bytes:
    b = bytearray(raw)
    mid = len(b) // 2
    b[mid : mid + n] = bytes(x ^ 0xFF for x in b[mid : mid + n])
    return bytes(b)


@pytest.mark.parametrize("suffix", [".nii.gz", ".mgz"])
def test_crc_corrupt_gzip_is_refused(tmp_path, suffix):
    # Stored deflate blocks: the flipped bytes garble voxels but decode, so only the CRC at the end
    # of the stream can tell; nibabel stops reading after the voxels and never got there.
    data = np.random.default_rng(0).random((16, 16, 16)).astype(np.float32)
    img = nib.MGHImage(data, np.eye(4)) if suffix == ".mgz" else nib.Nifti1Image(data, np.eye(4))
    p = tmp_path / f"c{suffix}"
    p.write_bytes(_flip_middle(gzip.compress(img.to_bytes(), compresslevel=0)))
    with pytest.raises(InputError, match=rf"c\{suffix}: corrupt .*gzip data \(CRC check failed"):
        read_volume(p)


def test_gzip_of_a_truncated_file(tmp_path):
    raw = nib.Nifti1Image(np.ones((10, 10, 10), np.float32), np.eye(4)).to_bytes()
    (tmp_path / "t.nii.gz").write_bytes(gzip.compress(raw[:2000]))  # a valid stream, short data
    with pytest.raises(InputError, match=r"truncated: .*\(10, 10, 10\).*decompressed data ends"):
        read_volume(tmp_path / "t.nii.gz")


def test_declared_size_is_checked_before_reading(tmp_path, monkeypatch):
    raw = bytearray(_nifti_bytes(np.ones((8, 8, 8), np.float32)))
    hdr = nib.Nifti1Header(bytes(raw[:348]))
    hdr.set_data_shape((10000, 10000, 10000))
    raw[:348] = hdr.binaryblock
    (tmp_path / "h.nii").write_bytes(raw)
    (tmp_path / "h.nii.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(
        InputError, match=r"h\.nii: truncated: .*\(10000, 10000, 10000\) of float32"
    ):
        read_volume(tmp_path / "h.nii")
    with pytest.raises(InputError, match=r"\(10000, 10000, 10000\) of float32 \(4 TB\), more than"):
        read_volume(tmp_path / "h.nii.gz")
    # a plausible file, but more than the memory there is
    from brainsynth.io import volume

    monkeypatch.setattr(volume, "_available_memory", lambda: 1000)
    p = write_volume(Volume(np.ones((8, 8, 8), np.float32), np.eye(4)), tmp_path / "m.nii")
    with pytest.raises(InputError, match=r"m\.nii: .*\(8, 8, 8\).*1 kB of memory available"):
        read_volume(p)


@pytest.mark.parametrize("shape", [(1, 1, 1), (8, 8, 1)])
def test_degenerate_shape(tmp_path, shape):
    p = write_volume(Volume(np.ones(shape, np.float32), np.eye(4)), tmp_path / "d.nii.gz")
    with pytest.raises(InputError, match=rf"d\.nii\.gz: degenerate shape \({shape[0]}, "):
        read_volume(p)


NO_XFORM = {"qform_code": 0, "sform_code": 0}


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({**NO_XFORM, "pixdim": [1, 0, 0, 0, 1, 1, 1, 1]}, r"pixdim is \(0, 0, 0\) and there is no qform/sform"),
        ({**NO_XFORM, "pixdim": [1, np.nan, 2, 2, 1, 1, 1, 1]}, r"pixdim is \(nan, 2, 2\)"),
        ({**NO_XFORM, "pixdim": [1, -2, 2, 2, 1, 1, 1, 1]}, r"pixdim is \(-2, 2, 2\)"),
        ({"qform_code": 1, "sform_code": 0, "pixdim": [1, 2, 0, 2, 1, 1, 1, 1]}, r"pixdim is \(2, 0, 2\) and there is no sform"),
        ({"sform_code": 1, "srow_x": [np.nan, 0, 0, 0], "srow_y": [0, 1, 0, 0], "srow_z": [0, 0, 1, 0]}, "NaN or infinite"),
        ({"sform_code": 1, "srow_x": [0, 0, 0, 0], "srow_y": [0, 1, 0, 0], "srow_z": [0, 0, 1, 0]}, "singular"),
    ],
)  # fmt: skip
def test_unusable_voxel_size_or_affine(tmp_path, fields, match):
    p = tmp_path / "v.nii"
    p.write_bytes(_nifti_bytes(np.ones((8, 8, 8), np.float32), **fields))
    with pytest.raises(InputError, match=rf"v\.nii: .*{match}"):
        read_volume(p)


def test_assume_spacing_for_a_file_without_voxel_size(tmp_path):
    from brainsynth.io.volume import AssumedSpacingWarning

    p = tmp_path / "v.nii.gz"
    fields = {**NO_XFORM, "pixdim": [1, 0, 0, 0, 1, 1, 1, 1]}
    p.write_bytes(gzip.compress(_nifti_bytes(np.ones((8, 8, 8), np.float32), **fields)))
    with pytest.warns(
        AssumedSpacingWarning, match=r"v\.nii\.gz: voxel size unknown.*assuming 1\.5 mm"
    ):
        vol = read_volume(p, assume_spacing=1.5)
    np.testing.assert_allclose(vol.spacing, [1.5, 1.5, 1.5])
    # a file that has a voxel size keeps it: the assumption is only a fallback
    q = write_volume(
        Volume(np.ones((8, 8, 8), np.float32), np.diag([2.0, 2, 2, 1])), tmp_path / "q.nii"
    )
    np.testing.assert_allclose(read_volume(q, assume_spacing=1.5).spacing, [2, 2, 2])


def test_a_qform_with_negative_pixdim_is_read_as_nibabel_does(tmp_path):
    p = tmp_path / "n.nii"
    fields = {"qform_code": 1, "sform_code": 0, "pixdim": [1, -2, 2, 2, 1, 1, 1, 1]}
    p.write_bytes(_nifti_bytes(np.ones((8, 8, 8), np.float32), **fields))
    np.testing.assert_allclose(read_volume(p).spacing, [2, 2, 2])


def test_an_uncompressed_file_named_gz_is_read(tmp_path):
    data = np.arange(64, dtype=np.float32).reshape(4, 4, 4)
    (tmp_path / "plain.nii.gz").write_bytes(nib.Nifti1Image(data, np.eye(4)).to_bytes())
    np.testing.assert_array_equal(read_volume(tmp_path / "plain.nii.gz").data, data)


def test_scaled_integers_and_nifti2_read(tmp_path):
    stored = np.arange(64, dtype=np.int16).reshape(4, 4, 4)
    img = nib.Nifti1Image(stored, np.eye(4))
    img.header.set_slope_inter(2.0, 1.0)
    nib.save(img, str(tmp_path / "s.nii.gz"))
    np.testing.assert_array_equal(read_volume(tmp_path / "s.nii.gz").data, stored * 2.0 + 1)
    nib.save(nib.Nifti2Image(np.ones((4, 4, 4), np.float32), np.eye(4)), str(tmp_path / "n2.nii"))
    assert read_volume(tmp_path / "n2.nii").shape == (4, 4, 4)
