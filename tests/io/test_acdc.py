"""ACDC reader: Info.cfg parsing, 1-based ED/ES, label remapping (1 RV / 3 LV -> kit 1 LV / 3 RV)."""

from __future__ import annotations

import numpy as np
import pytest

from cmrkit.io import DataError, MissingFileError, iter_subjects, load_subject, save_nifti
from cmrkit.io.acdc import read_info_cfg

SHAPE = (20, 20, 3)
NF = 5


def acdc_labels(r_lv):
    """ACDC convention: 3 = LV blood pool (centre), 2 = myocardium ring, 1 = RV to the left."""
    x, y = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
    r = np.hypot(x - 11, y - 10)
    sl = np.zeros(SHAPE[:2], np.uint8)
    sl[np.hypot(x - 3, y - 10) < 4] = 1
    sl[r < r_lv + 2] = 2
    sl[r < r_lv] = 3
    return np.repeat(sl[:, :, None], SHAPE[2], axis=2)


INFO = "ED: 1\nES: 3\nGroup: DCM\nHeight: 184.0\nNbFrame: 5\nWeight: 95.0\n"


def make_patient(root, pid="patient001", info=INFO, with_4d=True):
    d = root / pid
    d.mkdir(parents=True)
    (d / "Info.cfg").write_text(info)
    aff = np.diag([1.5, 1.5, 10.0, 1.0])
    rng = np.random.default_rng(3)
    cine = rng.normal(size=(*SHAPE, NF)).astype(np.float32)
    if with_4d:
        save_nifti(d / f"{pid}_4d.nii.gz", cine, aff)
    gt = {1: acdc_labels(5.0), 3: acdc_labels(3.0)}
    for fr in (1, 3):
        save_nifti(d / f"{pid}_frame{fr:02d}.nii.gz", cine[..., fr - 1], aff)
        save_nifti(d / f"{pid}_frame{fr:02d}_gt.nii.gz", gt[fr], aff, kind="label")
    return d, cine, gt


def test_patient_folder_is_read_with_0_based_frames_and_remapped_labels(tmp_path):
    d, cine, gt = make_patient(tmp_path)
    s = load_subject(d, dataset="acdc")
    assert s.subject_id == "patient001" and s.dataset == "acdc"
    assert (s.ed_frame, s.es_frame) == (0, 2)
    assert s.labelled_frames.tolist() == [True, False, True, False, False]
    np.testing.assert_allclose(s.cine, cine, atol=1e-6)
    ed = s.label_ed
    # kit convention: LV (1) where ACDC had 3, RV (3) where ACDC had 1, myocardium unchanged
    np.testing.assert_array_equal(ed == 1, gt[1] == 3)
    np.testing.assert_array_equal(ed == 3, gt[1] == 1)
    np.testing.assert_array_equal(ed == 2, gt[1] == 2)
    assert ed[11, 10, 0] == 1  # the blood pool at the ring centre is LV
    assert s.covariates == {"height_cm": 184.0, "weight_kg": 95.0, "group": "DCM"}
    assert (s.label_es == 1).sum() < (ed == 1).sum()  # ES LV smaller than ED LV


def test_without_4d_the_record_has_two_frames(tmp_path):
    d, cine, _ = make_patient(tmp_path, with_4d=False)
    s = load_subject(d, dataset="acdc")
    assert s.cine.shape == (*SHAPE, 2) and (s.ed_frame, s.es_frame) == (0, 1)
    np.testing.assert_allclose(s.cine[..., 1], cine[..., 2], atol=1e-6)
    assert s.meta["original_frames_0based"] == {"ed": 0, "es": 2}


@pytest.mark.parametrize(
    "info, needle",
    [
        ("ED: 1\nGroup: NOR\n", "missing field(s) ['ES']"),
        ("ES: 3\n", "missing field(s) ['ED']"),
        ("ED: one\nES: 3\n", "field ED must be an integer"),
        ("ED: 0\nES: 3\n", "positive integer (1-based"),
        ("ED: 1\nES: 3\nHeight: tall\n", "field Height must be a number"),
        ("ED 1\nES: 3\n", "line 1 is not 'Key: value'"),
    ],
)
def test_bad_info_cfg(tmp_path, info, needle):
    p = tmp_path / "Info.cfg"
    p.write_text(info)
    with pytest.raises(DataError) as exc:
        read_info_cfg(p)
    assert str(exc.value).startswith(str(p)) and needle in str(exc.value)


def test_missing_info_cfg_and_frame_out_of_range(tmp_path):
    d, _, _ = make_patient(tmp_path)
    (d / "Info.cfg").unlink()
    with pytest.raises(MissingFileError, match="Info.cfg"):
        load_subject(d, dataset="acdc")
    (d / "Info.cfg").write_text("ED: 1\nES: 9\n")
    (d / "patient001_frame09_gt.nii.gz").write_bytes((d / "patient001_frame03_gt.nii.gz").read_bytes())
    with pytest.raises(DataError, match=r"Info.cfg: ES: 9 outside the 5 frames"):
        load_subject(d, dataset="acdc")


def test_label_value_outside_set_in_gt(tmp_path):
    d, _, gt = make_patient(tmp_path)
    bad = gt[1].copy()
    bad[0, 0, 0] = 4
    import nibabel as nib

    nib.save(
        nib.Nifti1Image(bad.astype(np.float32), np.diag([1.5, 1.5, 10.0, 1.0])), d / "patient001_frame01_gt.nii.gz"
    )
    with pytest.raises(DataError, match=r"patient001_frame01_gt.nii.gz: label values \[4\]"):
        load_subject(d, dataset="acdc")


def test_iter_over_training_and_testing(tmp_path):
    make_patient(tmp_path / "training", "patient001")
    make_patient(tmp_path / "testing", "patient101", info="ED: 2\nES: 4\nNbFrame: 5\n")
    subs = list(iter_subjects(tmp_path, "acdc"))
    assert [s.subject_id for s in subs] == ["patient101", "patient001"]  # sorted by path: testing/ < training/
    by = {s.subject_id: s for s in subs}
    assert (by["patient101"].ed_frame, by["patient101"].es_frame) == (1, 3)
    assert by["patient101"].cine_labels is None  # its frame02/04 gt files do not exist
    assert by["patient101"].covariates["group"] is None
