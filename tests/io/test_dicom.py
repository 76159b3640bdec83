"""DICOM cine reader on the committed Sunnybrook fixture (CC0) and, when present, the full series."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cmrkit.io import DataError, MissingFileError, iter_subjects, load_subject
from cmrkit.io.dicom import contour_mask, read_contour_txt, read_dicom_series
from cmrkit.utils import REPO_ROOT

FIXTURE = REPO_ROOT / "tests" / "data" / "sunnybrook"
SERIES = FIXTURE / "SCD0000301"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _read(p):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(p)


@pytest.fixture()
def series_copy(tmp_path):
    dst = tmp_path / "series"
    shutil.copytree(SERIES, dst)
    return dst


def _edit(path: Path, **tags):
    ds = _read(path)
    for k, v in tags.items():
        if v is None:
            delattr(ds, k)
        else:
            setattr(ds, k, v)
    ds.save_as(path)


def test_fixture_geometry_ordering_and_pixels():
    s = read_dicom_series(SERIES)
    assert s.data.shape == (112, 112, 2, 3) and s.data.dtype == np.float32
    # phases ordered by TriggerTime, slices by position along the normal
    np.testing.assert_allclose(s.trigger_times_ms, [[10, 286, 886], [10, 286, 886]])
    assert np.all(np.diff(s.slice_positions_mm) > 0)
    np.testing.assert_allclose(np.linalg.norm(s.affine[:3, :3], axis=0), [1.2891, 1.2891, 8.0], atol=1e-3)
    for z in range(2):
        for t in range(3):
            ds = _read(s.files[z, t])
            # array is [x = column, y = row]
            np.testing.assert_array_equal(s.data[:, :, z, t], ds.pixel_array.T.astype(np.float32))
            assert float(ds.TriggerTime) == s.trigger_times_ms[z, t]
            ipp = np.asarray(ds.ImagePositionPatient, float)
            iop = np.asarray(ds.ImageOrientationPatient, float)
            dr, dc = (float(v) for v in ds.PixelSpacing)
            for i, j in ((0, 0), (17, 5), (111, 111)):
                world_lps = ipp + i * dc * iop[:3] + j * dr * iop[3:]
                np.testing.assert_allclose((s.affine @ [i, j, z, 1])[:3], LPS_TO_RAS @ world_lps, atol=1e-3)
    assert s.meta["heart_rate_bpm"] == 65.0 and s.meta["phase_order"] == "TriggerTime"


def test_fixture_contours_outline_the_bright_blood_pool_and_es_is_smaller():
    s = read_dicom_series(SERIES)
    areas = {}
    for z in range(2):
        for t in (1, 2):  # phase 6 (ES) and phase 19 (ED) carry contours
            n = int(s.files[z, t].stem)
            endo = contour_mask(
                read_contour_txt(SERIES / "contours" / f"IM-0001-{n:04d}-icontour-manual.txt"), (112, 112)
            )
            img = s.data[:, :, z, t]
            areas[(z, t)] = endo.sum()
            epi_path = SERIES / "contours" / f"IM-0001-{n:04d}-ocontour-manual.txt"
            if epi_path.exists():
                ring = contour_mask(read_contour_txt(epi_path), (112, 112)) & ~endo
                assert img[endo].mean() > 2.0 * img[ring].mean()  # SSFP: bright blood, dark myocardium
    for z in range(2):
        assert areas[(z, 1)] < areas[(z, 2)]  # ES cavity smaller than ED


def test_load_subject_dicom():
    s = load_subject(SERIES, dataset="dicom", contours=False)
    assert s.dataset == "dicom" and s.cine.shape == (112, 112, 2, 3)
    assert s.ed_frame == 0 and s.es_frame is None and s.cine_labels is None
    assert s.meta["frame_duration_ms"] == pytest.approx(438.0)  # only 3 of the 20 phases are in the fixture


def test_patient_tags_become_covariates(series_copy):
    for p in series_copy.glob("*.dcm"):
        _edit(p, PatientSex="F", PatientAge="045Y", PatientSize="1.65", PatientWeight="60")
    s = load_subject(series_copy, dataset="dicom")
    assert s.covariates == {"sex": "F", "age": 45.0, "height_cm": pytest.approx(165.0), "weight_kg": 60.0}
    with pytest.raises(DataError, match="is a file"):
        load_subject(series_copy / "81.dcm", dataset="dicom")


def test_mixed_series_error_and_the_two_ways_out(series_copy):
    _edit(series_copy / "87.dcm", SeriesInstanceUID="1.2.3.4")
    with pytest.raises(DataError) as exc:
        read_dicom_series(series_copy)
    msg = str(exc.value)
    assert msg.startswith(str(series_copy)) and "holds 2 DICOM series" in msg and "series_uid=" in msg
    one = read_dicom_series(series_copy, series_uid="1.2.3.4")
    assert one.data.shape == (112, 112, 1, 1)
    with pytest.raises(DataError, match="different numbers of phases"):
        read_dicom_series(series_copy, series_uid=str(_read(SERIES / "81.dcm").SeriesInstanceUID))
    merged = read_dicom_series(series_copy, merge_series=True)
    np.testing.assert_array_equal(merged.data, read_dicom_series(SERIES).data)


def test_missing_geometry_tag_names_the_file(series_copy):
    _edit(series_copy / "100.dcm", ImagePositionPatient=None)
    with pytest.raises(DataError) as exc:
        read_dicom_series(series_copy)
    assert str(exc.value) == f"{series_copy / '100.dcm'}: missing DICOM tag ImagePositionPatient"


def test_incomplete_series_and_duplicate_phase(series_copy):
    (series_copy / "107.dcm").unlink()
    with pytest.raises(DataError, match="different numbers of phases"):
        read_dicom_series(series_copy)
    shutil.copy(SERIES / "107.dcm", series_copy / "107.dcm")
    _edit(series_copy / "107.dcm", TriggerTime="886")
    with pytest.raises(DataError, match=r"duplicate TriggerTime within one slice \(files \['107.dcm', '120.dcm'\]"):
        read_dicom_series(series_copy)


def test_mixed_orientation(series_copy):
    _edit(series_copy / "81.dcm", ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
    with pytest.raises(DataError, match=r"81.dcm: ImageOrientationPatient .* differs .*mixed orientations"):
        read_dicom_series(series_copy)


def test_non_dicom_files_are_skipped_and_empty_folder_is_an_error(series_copy, tmp_path):
    (series_copy / "README.txt").write_text("not dicom")
    s = read_dicom_series(series_copy)
    assert s.meta["skipped_files"] == ["README.txt"] and s.data.shape == (112, 112, 2, 3)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no DICOM images found"):
        read_dicom_series(empty)
    with pytest.raises(MissingFileError):
        read_dicom_series(tmp_path / "absent")


def test_phase_order_falls_back_to_instance_number(series_copy):
    for p in series_copy.glob("*.dcm"):
        _edit(p, TriggerTime=None)
    s = read_dicom_series(series_copy)
    assert s.meta["phase_order"] == "InstanceNumber"
    np.testing.assert_array_equal(s.data, read_dicom_series(SERIES).data)


@pytest.mark.realdata
def test_full_sunnybrook_series_matches_fixture(realdata):
    full_dir = realdata / "sunnybrook" / "final_data" / "dicoms" / "SCD0000301"
    full = read_dicom_series(full_dir)
    assert full.data.shape == (256, 256, 10, 20)
    np.testing.assert_allclose(np.diff(full.slice_positions_mm), 8.0, atol=0.01)  # SliceLocation would say 5.3 mm
    assert np.all(np.diff(full.trigger_times_ms, axis=1) > 0)
    fix = read_dicom_series(SERIES)
    # the fixture holds slices 4 and 5 (file order) = positions 5 and 4 along the normal, phases 0, 6, 19,
    # cropped at column 72, row 68
    z_full = [int(np.argmin(np.abs(full.slice_positions_mm - p))) for p in fix.slice_positions_mm]
    assert sorted(z_full) == [4, 5]
    for zf, zs in zip(z_full, range(2)):
        np.testing.assert_array_equal(fix.data[:, :, zs, :], full.data[72:184, 68:180, zf][..., [0, 6, 19]])
        np.testing.assert_allclose(fix.affine @ [0, 0, zs, 1], full.affine @ [72, 68, zf, 1], atol=1e-3)


# ----------------------------------------------------------------------------- contours as labels
def _shoelace_px(points: np.ndarray) -> float:
    """Area of a closed polygon (pixels²), independent of the rasterisation."""
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def test_contours_become_labels_and_set_ed_es():
    s = load_subject(SERIES, dataset="dicom")
    assert s.cine_labels.shape == s.cine.shape and s.cine_labels.dtype == np.uint8
    # contours on phases 6 (t=1) and 19 (t=2); the larger LV blood pool is ED
    assert s.labelled_frames.tolist() == [False, True, True] and (s.ed_frame, s.es_frame) == (2, 1)
    assert "largest" in s.meta["ed_es_source"]["ed"]
    assert s.meta["labelled_structures"] == {1: ("LV",), 2: ("LV", "MYO")}  # epicardium at ED only, no RV
    assert s.labelled_structures(2) == ("LV", "MYO") and s.labelled_structures(0) == ()
    assert not (s.cine_labels == 3).any() and not (s.cine_labels[..., 0] != 0).any()
    for z in range(2):
        for t in (1, 2):
            n = int(read_dicom_series(SERIES).instance_numbers[z, t])
            endo_pts = read_contour_txt(SERIES / "contours" / f"IM-0001-{n:04d}-icontour-manual.txt")
            lab = s.cine_labels[:, :, z, t]
            np.testing.assert_array_equal(lab == 1, contour_mask(endo_pts, (112, 112)))
            assert (lab == 1).sum() == pytest.approx(_shoelace_px(endo_pts), rel=0.08)
            epi = SERIES / "contours" / f"IM-0001-{n:04d}-ocontour-manual.txt"
            if epi.exists():
                ring = contour_mask(read_contour_txt(epi), (112, 112)) & ~(lab == 1)
                np.testing.assert_array_equal(lab == 2, ring)
            else:
                assert not (lab == 2).any()


def test_contours_in_the_sunnybrook_release_layout(tmp_path):
    """dicoms/<patient>/ beside contourfiles/<original id>/{i,o}-contours/ and link.csv, as released."""
    root = tmp_path / "final_data"
    shutil.copytree(SERIES, root / "dicoms" / "SCD0000301", ignore=shutil.ignore_patterns("contours"))
    for kind in ("i", "o"):
        dst = root / "contourfiles" / "SC-HF-I-4" / f"{kind}-contours"
        dst.mkdir(parents=True)
        for f in (SERIES / "contours").glob(f"*-{kind}contour-manual.txt"):
            shutil.copy(f, dst / f.name)
    (root / "link.csv").write_text("patient_id,original_id\nSCD0000101,SC-HF-I-1\nSCD0000301,SC-HF-I-4\n")
    subs = list(iter_subjects(root / "dicoms", "dicom"))
    assert [s.subject_id for s in subs] == ["SCD0000301"]
    np.testing.assert_array_equal(subs[0].cine_labels, load_subject(SERIES, dataset="dicom").cine_labels)
    assert subs[0].sources["contours"] == root / "contourfiles" / "SC-HF-I-4"
    # without the mapping nothing says which contours are this patient's: no labels, not a guess
    (root / "link.csv").unlink()
    assert load_subject(root / "dicoms" / "SCD0000301", dataset="dicom").cine_labels is None


def test_a_series_folder_or_a_folder_of_series(tmp_path):
    """The fixture folder holds a series folder and non-DICOM files (README, LICENSE); the series folder
    itself holds a contours/ folder: both read as one subject."""
    assert [s.subject_id for s in iter_subjects(FIXTURE, "dicom")] == ["SCD0000301"]
    assert [s.subject_id for s in iter_subjects(SERIES, "dicom")] == ["SCD0000301"]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    with pytest.raises(DataError, match="no DICOM files in it or in its sub-folders"):
        list(iter_subjects(tmp_path, "dicom"))


def test_bad_contours_are_named(series_copy):
    (series_copy / "contours" / "IM-0001-0999-icontour-manual.txt").write_text("1 1\n2 1\n2 2\n")
    with pytest.raises(DataError, match=r"IM-0001-0999-icontour-manual.txt: no image with InstanceNumber 999"):
        load_subject(series_copy, dataset="dicom")
    (series_copy / "contours" / "IM-0001-0999-icontour-manual.txt").unlink()
    (series_copy / "contours" / "IM-0001-0087-ocontour-manual.txt").write_text("1 1\n9 1\n9 9\n")
    (series_copy / "contours" / "IM-0001-0087-icontour-manual.txt").unlink()
    with pytest.raises(DataError, match="0087-ocontour-manual.txt: epicardial contour without the endocardial"):
        load_subject(series_copy, dataset="dicom")


@pytest.mark.realdata
def test_full_sunnybrook_case_labels(realdata):
    """The whole SC-HF-I-4 series with its expert contours: ED/ES and LV volumes from the labels agree
    with the contour polygons (shoelace areas x slice spacing), bright blood inside, dark ring around."""
    s = next(iter_subjects(realdata / "sunnybrook" / "final_data" / "dicoms", "dicom"))
    assert s.cine.shape == (256, 256, 10, 20) and np.flatnonzero(s.labelled_frames).tolist() == [6, 19]
    assert (s.ed_frame, s.es_frame) == (19, 6)
    series = read_dicom_series(realdata / "sunnybrook" / "final_data" / "dicoms" / "SCD0000301")
    cdir = realdata / "sunnybrook" / "final_data" / "contourfiles" / "SC-HF-I-4" / "i-contours"
    vox = float(np.prod(s.spacing))
    for t in (6, 19):
        polys = [
            _shoelace_px(read_contour_txt(cdir / f"IM-0001-{int(n):04d}-icontour-manual.txt"))
            for n in series.instance_numbers[:, t]
            if (cdir / f"IM-0001-{int(n):04d}-icontour-manual.txt").exists()
        ]
        from_labels = (s.cine_labels[..., t] == 1).sum() * vox / 1000
        assert from_labels == pytest.approx(sum(polys) * vox / 1000, rel=0.05)
    lab, img = s.cine_labels[..., 19], s.cine[..., 19]
    assert img[lab == 1].mean() > 2.0 * img[lab == 2].mean()


def test_scanner_exports_without_a_suffix(tmp_path):
    """Files named IM0001... (no .dcm) are DICOM by their 'DICM' mark: the layout check and the reader
    accept the folder, and the contours still find their images by InstanceNumber."""
    from cmrkit.config import ConfigError, check_data_dir

    series = tmp_path / "exam" / "cine_sax"
    shutil.copytree(SERIES, series)
    for i, p in enumerate(sorted(series.glob("*.dcm"))):
        p.rename(series / f"IM{i:04d}")
    assert check_data_dir("dicom", tmp_path / "exam") == tmp_path / "exam"
    (s,) = iter_subjects(tmp_path / "exam", "dicom")
    np.testing.assert_array_equal(s.cine_labels, load_subject(SERIES, dataset="dicom").cine_labels)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "IM0001").write_bytes(b"\0" * 200)  # not DICOM
    with pytest.raises(ConfigError, match="does not have the 'dicom' layout"):
        check_data_dir("dicom", tmp_path / "notes")
