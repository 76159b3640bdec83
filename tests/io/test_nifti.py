"""Checked NIfTI reading: round trips and one clear DataError per kind of bad file."""

from __future__ import annotations

import gzip
import pickle

import nibabel as nib
import numpy as np
import pytest

from cmrkit.io.nifti import (
    DataError,
    MissingFileError,
    check_same_geometry,
    load_nifti,
    save_nifti,
    spacing_from_affine,
    voxel_volume_ml,
)


def _affine(spacing=(1.5, 1.25, 8.0), angle=0.3, origin=(10.0, -20.0, 5.0)):
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ np.array(
        [[1, 0, 0], [0, np.cos(0.5), -np.sin(0.5)], [0, np.sin(0.5), np.cos(0.5)]]
    )
    a = np.eye(4)
    a[:3, :3] = rot * np.asarray(spacing)
    a[:3, 3] = origin
    return a


def test_image_round_trip_keeps_data_affine_and_frame_duration(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(6, 5, 4, 3)).astype(np.float32)
    aff = _affine()
    p = save_nifti(tmp_path / "sa.nii.gz", data, aff, frame_duration_ms=37.5)
    vol = load_nifti(p, ndim=4)
    assert vol.data.dtype == np.float32
    np.testing.assert_array_equal(vol.data, data)
    np.testing.assert_allclose(vol.affine, aff, atol=1e-5)
    assert vol.frame_duration_ms == pytest.approx(37.5)
    np.testing.assert_allclose(vol.spacing, (1.5, 1.25, 8.0), atol=1e-5)


def test_frame_duration_in_seconds_is_converted_and_unknown_unit_gives_none(tmp_path):
    img = nib.Nifti1Image(np.zeros((3, 3, 2, 4), np.float32), np.eye(4))
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_zooms((1, 1, 1, 0.04))
    nib.save(img, tmp_path / "s.nii.gz")
    assert load_nifti(tmp_path / "s.nii.gz", ndim=4).frame_duration_ms == pytest.approx(40.0)
    img.header.set_xyzt_units("mm", "unknown")
    nib.save(img, tmp_path / "u.nii.gz")
    assert load_nifti(tmp_path / "u.nii.gz", ndim=4).frame_duration_ms is None


def test_label_round_trip_is_uint8_and_float_labels_are_accepted(tmp_path):
    lab = np.zeros((4, 4, 2), np.float64)
    lab[1, 1, 0], lab[2, 2, 1], lab[3, 3, 1] = 1, 2, 3
    nib.save(nib.Nifti1Image(lab, np.eye(4)), tmp_path / "l.nii.gz")  # M&Ms stores labels as float64
    vol = load_nifti(tmp_path / "l.nii.gz", ndim=3, kind="label")
    assert vol.data.dtype == np.uint8
    np.testing.assert_array_equal(vol.data, lab.astype(np.uint8))


def test_missing_file_is_both_dataerror_and_filenotfound(tmp_path):
    p = tmp_path / "nope.nii.gz"
    with pytest.raises(MissingFileError) as exc:
        load_nifti(p)
    assert isinstance(exc.value, FileNotFoundError) and isinstance(exc.value, DataError)
    assert str(exc.value).startswith(str(p))


def test_truncated_gzip_names_file_and_problem(tmp_path):
    p = tmp_path / "sa.nii.gz"
    save_nifti(p, np.random.default_rng(1).normal(size=(32, 32, 8, 4)), np.eye(4))
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError) as exc:
        load_nifti(p, ndim=4)
    msg = str(exc.value)
    assert msg.startswith(str(p)) and "truncated or corrupt" in msg


def test_header_only_fragment_and_garbage_are_errors(tmp_path):
    p = tmp_path / "frag.nii.gz"
    save_nifti(p, np.ones((8, 8, 2)), np.eye(4))
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(DataError, match="frag.nii.gz"):
        load_nifti(p)
    g = tmp_path / "garbage.nii.gz"
    g.write_bytes(gzip.compress(b"this is not a nifti file at all" * 3))
    with pytest.raises(DataError) as exc:
        load_nifti(g)
    assert str(exc.value).startswith(str(g))


def test_3d_where_4d_required(tmp_path):
    p = save_nifti(tmp_path / "sa.nii.gz", np.ones((4, 4, 3)), np.eye(4))
    with pytest.raises(DataError, match=r"expected a 4-D image volume, got 3-D"):
        load_nifti(p, ndim=4)


def test_trailing_singleton_axis_counts_as_lower_dimension(tmp_path):
    p = save_nifti(tmp_path / "x.nii.gz", np.ones((4, 4, 3, 1)), np.eye(4))
    assert load_nifti(p, ndim=3).data.shape == (4, 4, 3)


@pytest.mark.parametrize("bad, needle", [(5, "[5]"), (-1, "[-1]"), (1.5, "non-integer")])
def test_bad_label_values(tmp_path, bad, needle):
    lab = np.zeros((4, 4, 2), np.float32)
    lab[0, 0, 0] = bad
    lab[1, 1, 1] = 2
    p = tmp_path / "label.nii.gz"
    nib.save(nib.Nifti1Image(lab, np.eye(4)), p)
    with pytest.raises(DataError) as exc:
        load_nifti(p, kind="label")
    assert str(exc.value).startswith(str(p)) and needle in str(exc.value)


def test_nan_image_rejected(tmp_path):
    img = np.ones((4, 4, 2), np.float32)
    img[2, 2, 1] = np.nan
    p = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(img, np.eye(4)), p)
    with pytest.raises(DataError, match="1 NaN/inf"):
        load_nifti(p)


def test_check_same_geometry_reports_shape_and_affine_mismatch(tmp_path):
    a = load_nifti(save_nifti(tmp_path / "a.nii.gz", np.ones((4, 4, 3)), np.eye(4)))
    b = load_nifti(save_nifti(tmp_path / "b.nii.gz", np.ones((4, 5, 3)), np.eye(4)))
    aff = np.eye(4)
    aff[0, 3] = 2.0
    c = load_nifti(save_nifti(tmp_path / "c.nii.gz", np.ones((4, 4, 3)), aff))
    with pytest.raises(DataError, match=r"b.nii.gz: shape \(4, 5, 3\) does not match a.nii.gz"):
        check_same_geometry(a, b)
    with pytest.raises(DataError, match=r"c.nii.gz: affine differs from a.nii.gz by up to 2"):
        check_same_geometry(a, c)
    check_same_geometry(a, load_nifti(tmp_path / "a.nii.gz"))


def test_voxel_volume_from_oblique_affine_equals_spacing_product():
    aff = _affine(spacing=(1.8, 1.8, 10.0))
    assert voxel_volume_ml(aff) == pytest.approx(1.8 * 1.8 * 10.0 / 1000)
    assert voxel_volume_ml((1.8, 1.8, 10.0)) == pytest.approx(0.0324)
    np.testing.assert_allclose(spacing_from_affine(aff), (1.8, 1.8, 10.0))
    with pytest.raises(ValueError, match="spacing"):
        voxel_volume_ml((1.0, -1.0, 2.0))


def test_dataerror_pickles_with_path_and_problem():
    err = pickle.loads(pickle.dumps(DataError("/x/y.nii.gz", "broken")))
    assert str(err) == "/x/y.nii.gz: broken" and err.problem == "broken"
