"""UK Biobank / phantom layout reader on tiny synthetic subjects written in tmp_path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cmrkit.io import DataError, MissingFileError, iter_subjects, load_subject, save_nifti

T = 6
SHAPE = (24, 22, 4)
LV_RADII = [6.0, 5.5, 4.5, 3.5, 4.5, 5.5]  # smallest LV at frame 3 (ES)


def oblique_affine(spacing=(1.8, 1.8, 10.0), origin=(-40.0, 30.0, 12.0)):
    a, b = 0.4, -0.7
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    aff = np.eye(4)
    aff[:3, :3] = rz @ rx * np.asarray(spacing)
    aff[:3, 3] = origin
    return aff


def heart_labels(shape, center, r_lv, wall=2.5, r_rv=5.0):
    """LV disk (1) in a myocardial ring (2) with an RV disk (3) to its left, on every slice."""
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    r = np.hypot(x - center[0], y - center[1])
    sl = np.zeros(shape[:2], np.uint8)
    rv = np.hypot(x - (center[0] - r_lv - wall - r_rv + 1.5), y - center[1]) < r_rv
    sl[rv] = 3
    sl[r < r_lv + wall] = 2
    sl[r < r_lv] = 1
    return np.repeat(sl[:, :, None], shape[2], axis=2)


def make_cohort_subject(folder, *, labels4d=True, ed_es=True, tags=True, sa=True, rng=0):
    """Write a UK Biobank-layout subject; returns the arrays written."""
    rng = np.random.default_rng(rng)
    folder.mkdir(parents=True, exist_ok=True)
    aff = oblique_affine()
    lab = np.stack([heart_labels(SHAPE, (13, 11), r) for r in LV_RADII], axis=-1)
    img = (np.choose(lab, [0.1, 1.0, 0.3, 0.9]) + 0.01 * rng.normal(size=lab.shape)).astype(np.float32)
    if sa:
        save_nifti(folder / "sa.nii.gz", img, aff, frame_duration_ms=125.0)  # 6 x 125 ms = 750 ms -> 80 bpm
    if labels4d:
        save_nifti(folder / "label_sa.nii.gz", lab, aff, kind="label")
    if ed_es:
        save_nifti(folder / "sa_ED.nii.gz", img[..., 0], aff)
        save_nifti(folder / "sa_ES.nii.gz", img[..., 3], aff)
        save_nifti(folder / "label_sa_ED.nii.gz", lab[..., 0], aff, kind="label")
        save_nifti(folder / "label_sa_ES.nii.gz", lab[..., 3], aff, kind="label")
    tag_affines = []
    if tags:
        for k, z in enumerate((0, 2, 3), start=1):
            ta = aff.copy()
            ta[:3, :2] = aff[:3, :2] / 1.8 * 1.4  # 1.4 mm tagging pixels in the same plane orientation
            ta[:3, 3] = (aff @ [2.0, 1.0, z, 1.0])[:3]
            tag = rng.normal(size=(30, 28, 1, T)).astype(np.float32)
            save_nifti(folder / f"tag_{k}.nii.gz", tag, ta, frame_duration_ms=40.0)
            tag_affines.append((ta, tag[:, :, 0, :]))
    return {"image": img, "labels": lab, "affine": aff, "tags": tag_affines}


def write_manifest(path, ids, **cols):
    df = pd.DataFrame(
        {"subject_id": ids, "age": [55.0 + i for i in range(len(ids))], "sex": ["F", "M"][: len(ids)] * 1, **cols}
    )
    df.to_csv(path, index=False)


def test_full_subject_folder(tmp_path):
    truth = make_cohort_subject(tmp_path / "sub001")
    s = load_subject(tmp_path / "sub001", dataset="ukbb")
    assert s.subject_id == "sub001" and s.dataset == "ukbb"
    assert s.cine.shape == (*SHAPE, T) and s.cine.dtype == np.float32
    np.testing.assert_allclose(s.cine, truth["image"], atol=1e-6)
    np.testing.assert_array_equal(s.cine_labels, truth["labels"])
    assert s.labelled_frames.all()
    np.testing.assert_allclose(s.affine, truth["affine"], atol=1e-5)
    assert (s.ed_frame, s.es_frame) == (0, 3)
    assert "sa_ES.nii.gz matches frame" == s.meta["ed_es_source"]["es"]
    assert s.meta["heart_rate_bpm"] == pytest.approx(80.0)
    assert [t.name for t in s.tagging] == ["basal", "mid", "apical"]
    for t, (ta, img) in zip(s.tagging, truth["tags"]):
        assert t.image.shape == (30, 28, T)
        np.testing.assert_allclose(t.image, img, atol=1e-6)
        np.testing.assert_allclose(t.affine, ta, atol=1e-5)
    np.testing.assert_allclose(s.tagging[0].spacing, (1.4, 1.4), atol=1e-5)
    np.testing.assert_array_equal(s.label_es, truth["labels"][..., 3])


def test_es_from_labels_when_no_ed_es_files(tmp_path):
    make_cohort_subject(tmp_path / "s", ed_es=False, tags=False)
    s = load_subject(tmp_path / "s", dataset="ukbb")
    assert (s.ed_frame, s.es_frame) == (0, 3)  # ukbb_cardiac rule: ES = smallest LV volume
    assert "smallest LV volume" in s.meta["ed_es_source"]["es"]
    assert s.tagging == []


def test_ed_es_labels_only_are_placed_at_matching_frames(tmp_path):
    truth = make_cohort_subject(tmp_path / "s", labels4d=False, tags=False)
    s = load_subject(tmp_path / "s", dataset="ukbb")
    assert s.labelled_frames.tolist() == [True, False, False, True, False, False]
    np.testing.assert_array_equal(s.cine_labels[..., 3], truth["labels"][..., 3])
    assert not s.cine_labels[..., 1].any()
    with pytest.raises(ValueError, match="frame 1 is not labelled"):
        s.label(1)


def test_ed_es_only_folder_gives_two_frames(tmp_path):
    truth = make_cohort_subject(tmp_path / "s", sa=False, labels4d=False, tags=False)
    s = load_subject(tmp_path / "s", dataset="ukbb")
    assert s.cine.shape == (*SHAPE, 2) and s.meta["frames"] == "ED/ES only"
    np.testing.assert_allclose(s.cine[..., 1], truth["image"][..., 3], atol=1e-6)
    np.testing.assert_array_equal(s.label_ed, truth["labels"][..., 0])


def test_phantom_cohort_with_manifest(tmp_path):
    make_cohort_subject(tmp_path / "p001", tags=False, rng=1)
    make_cohort_subject(tmp_path / "p002", tags=False, ed_es=False, rng=2)
    write_manifest(tmp_path / "manifest.csv", ["p001", "p002"], weight=[70.0, 80.0], ed_frame=[0, 0], es_frame=[3, 2])
    subs = list(iter_subjects(tmp_path, "phantom"))
    assert [s.subject_id for s in subs] == ["p001", "p002"]
    assert subs[1].covariates["weight"] == 80.0 and subs[0].covariates["sex"] == "F"
    assert subs[1].es_frame == 2 and subs[1].meta["ed_es_source"]["es"] == "manifest"
    one = load_subject(tmp_path / "p001", dataset="phantom")
    assert one.covariates["age"] == 55.0 and one.dataset == "phantom"


def test_manifest_ed_es_contradicting_files_is_an_error(tmp_path):
    make_cohort_subject(tmp_path / "p001", tags=False)
    write_manifest(tmp_path / "manifest.csv", ["p001"], ed_frame=[0], es_frame=[2])
    with pytest.raises(DataError, match=r"label_sa_ES.nii.gz: differs from frame 2 \(ES\)"):
        load_subject(tmp_path / "p001", dataset="phantom")


def test_phantom_requires_manifest_and_a_row(tmp_path):
    make_cohort_subject(tmp_path / "p001", tags=False)
    with pytest.raises(MissingFileError, match="manifest.csv"):
        list(iter_subjects(tmp_path, "phantom"))
    write_manifest(tmp_path / "manifest.csv", ["other"])
    with pytest.raises(DataError, match="manifest.csv: no row for subject 'p001'"):
        load_subject(tmp_path / "p001", dataset="phantom")


def test_label_shape_mismatch_names_label_file(tmp_path):
    truth = make_cohort_subject(tmp_path / "s", ed_es=False, tags=False)
    save_nifti(tmp_path / "s" / "label_sa.nii.gz", truth["labels"][:-1], truth["affine"], kind="label")
    with pytest.raises(DataError) as exc:
        load_subject(tmp_path / "s", dataset="ukbb")
    assert str(exc.value).startswith(str(tmp_path / "s" / "label_sa.nii.gz")) and "does not match sa.nii.gz" in str(
        exc.value
    )


def test_label_affine_mismatch(tmp_path):
    truth = make_cohort_subject(tmp_path / "s", ed_es=False, tags=False)
    aff = truth["affine"].copy()
    aff[:3, 3] += 5.0
    save_nifti(tmp_path / "s" / "label_sa.nii.gz", truth["labels"], aff, kind="label")
    with pytest.raises(DataError, match="label_sa.nii.gz: affine differs from sa.nii.gz"):
        load_subject(tmp_path / "s", dataset="ukbb")


def test_3d_cine_rejected(tmp_path):
    truth = make_cohort_subject(tmp_path / "s", ed_es=False, tags=False, labels4d=False)
    save_nifti(tmp_path / "s" / "sa.nii.gz", truth["image"][..., 0], truth["affine"])
    with pytest.raises(DataError, match=r"sa.nii.gz: expected a 4-D image volume, got 3-D"):
        load_subject(tmp_path / "s", dataset="ukbb")


def test_inconsistent_ed_label_file(tmp_path):
    truth = make_cohort_subject(tmp_path / "s", tags=False)
    save_nifti(tmp_path / "s" / "label_sa_ED.nii.gz", truth["labels"][..., 2], truth["affine"], kind="label")
    with pytest.raises(DataError, match=r"label_sa_ED.nii.gz: differs from frame 0 \(ED\) of label_sa.nii.gz"):
        load_subject(tmp_path / "s", dataset="ukbb")


def test_bad_label_value_in_cohort_file(tmp_path):
    truth = make_cohort_subject(tmp_path / "s", ed_es=False, tags=False)
    bad = truth["labels"].astype(np.float32)
    bad[0, 0, 0, 0] = 7
    import nibabel as nib

    nib.save(nib.Nifti1Image(bad, truth["affine"]), tmp_path / "s" / "label_sa.nii.gz")
    with pytest.raises(DataError, match=r"label_sa.nii.gz: label values \[7\]"):
        load_subject(tmp_path / "s", dataset="ukbb")


def test_not_a_subject_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a UK Biobank-layout subject folder"):
        load_subject(tmp_path / "empty", dataset="ukbb")
    with pytest.raises(DataError, match="no subject folders"):
        list(iter_subjects(tmp_path, "ukbb"))


def test_tagging_with_several_slices_rejected(tmp_path):
    truth = make_cohort_subject(tmp_path / "s", ed_es=False)
    save_nifti(tmp_path / "s" / "tag_2.nii.gz", np.zeros((8, 8, 2, T)), truth["affine"])
    with pytest.raises(DataError, match=r"tag_2.nii.gz: tagging file must hold one slice"):
        load_subject(tmp_path / "s", dataset="ukbb")
