"""M&Ms reader: derived ED/ES layout, official 4-D layout with metadata CSV, and the real shared files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from cmrkit.clinical import phenotypes
from cmrkit.io import DataError, iter_subjects, load_subject, save_nifti

SHAPE = (18, 16, 3)


def labels(r_lv):
    x, y = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
    r = np.hypot(x - 10, y - 8)
    sl = np.zeros(SHAPE[:2], np.uint8)
    sl[np.hypot(x - 3, y - 8) < 3.5] = 3
    sl[r < r_lv + 2] = 2
    sl[r < r_lv] = 1
    return np.repeat(sl[:, :, None], SHAPE[2], axis=2)


AFF = np.diag([1.2, 1.2, 9.6, 1.0])


def write_derived(folder, case, images=True):
    rng = np.random.default_rng(len(case))
    for ph, r in (("ED", 5.0), ("ES", 3.0)):
        if images:
            save_nifti(folder / f"{case}_sa_{ph}.nii.gz", rng.normal(size=SHAPE), AFF)
        save_nifti(folder / f"{case}_sa_{ph}_gt.nii.gz", labels(r), AFF, kind="label")


def test_flat_derived_folder_with_labels_only_case(tmp_path):
    write_derived(tmp_path, "better_AAA111")
    write_derived(tmp_path, "worse_BBB222", images=False)
    pd.DataFrame(
        {"External code": ["AAA111", "BBB222"], "Vendor": ["A", "B"], "Centre": [1, 2], "ED": [0, 0], "ES": [9, 11]}
    ).to_csv(tmp_path / "info.csv", index=False)
    subs = list(iter_subjects(tmp_path, "mnms"))
    assert [s.subject_id for s in subs] == ["better_AAA111", "worse_BBB222"]
    a, b = subs
    assert a.cine.shape == (*SHAPE, 2) and (a.ed_frame, a.es_frame) == (0, 1)
    assert b.cine is None and b.cine_labels.shape == (*SHAPE, 2)
    assert a.meta["vendor"] == "A" and b.covariates["centre"] == 2
    assert a.meta["original_frames_0based"] == {"ed": 0, "es": 9}
    np.testing.assert_array_equal(a.label_es, labels(3.0))
    # one file path is enough to load a case
    s = load_subject(tmp_path / "better_AAA111_sa_ES_gt.nii.gz", dataset="mnms")
    assert s.subject_id == "better_AAA111"
    with pytest.raises(DataError, match="holds several cases"):
        load_subject(tmp_path, dataset="mnms")


def test_official_4d_layout_uses_csv_frames(tmp_path):
    code = "C3D4E5"
    d = tmp_path / code
    d.mkdir()
    T = 8
    gt = np.zeros((*SHAPE, T), np.uint8)
    gt[..., 0] = labels(5.0)
    gt[..., 5] = labels(3.0)
    save_nifti(d / f"{code}_sa.nii.gz", np.random.default_rng(0).normal(size=(*SHAPE, T)), AFF, frame_duration_ms=30.0)
    save_nifti(d / f"{code}_sa_gt.nii.gz", gt, AFF, kind="label")
    pd.DataFrame({"External code": [code], "Vendor": ["C"], "Centre": [3], "ED": [0], "ES": [5]}).to_csv(
        tmp_path / "meta.csv", index=False
    )
    s = next(iter_subjects(tmp_path, "mnms"))
    assert (s.ed_frame, s.es_frame) == (0, 5) and s.meta["ed_es_source"]["es"] == "metadata CSV (0-based)"
    assert s.labelled_frames.tolist() == [True, False, False, False, False, True, False, False]
    assert s.meta["frame_duration_ms"] == pytest.approx(30.0)
    # without the CSV: the two labelled frames, the larger LV volume is ED
    (tmp_path / "meta.csv").unlink()
    s2 = load_subject(d, dataset="mnms")
    assert (s2.ed_frame, s2.es_frame) == (0, 5) and "inferred" in s2.meta["ed_es_source"]["ed"]


def test_official_layout_frame_outside_sequence(tmp_path):
    code = "Z9Z9Z9"
    d = tmp_path / code
    d.mkdir()
    save_nifti(d / f"{code}_sa.nii.gz", np.ones((*SHAPE, 4)), AFF)
    pd.DataFrame({"External code": [code], "ED": [0], "ES": [7]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(DataError, match=r"m.csv: Z9Z9Z9: ES=7 outside 0..3"):
        load_subject(d, dataset="mnms")


def test_image_label_mismatch_in_derived_case(tmp_path):
    write_derived(tmp_path, "X1")
    save_nifti(tmp_path / "X1_sa_ES_gt.nii.gz", labels(3.0)[:, :, :2], AFF, kind="label")
    with pytest.raises(DataError, match=r"X1_sa_ES_gt.nii.gz: shape \(18, 16, 2\) does not match"):
        load_subject(tmp_path / "X1_sa_ED.nii.gz", dataset="mnms")


# ----------------------------------------------------------------------------- real files
# LV EDV / ESV (mL) listed in ../shared/realdata/mnms/SOURCE.md, computed there from the labels
SOURCE_VOLUMES = {
    "better_G1K1V3": (158.9, 70.8),
    "better_H1N8S6": (95.5, 40.5),
    "worse_B5F8L9": (144.5, 59.9),
    "worse_A5P5W0": (191.5, 43.0),
}


@pytest.mark.realdata
def test_real_mnms_files(realdata):
    subs = {s.subject_id: s for s in iter_subjects(realdata / "mnms", "mnms")}
    assert set(subs) == set(SOURCE_VOLUMES)
    assert subs["worse_A5P5W0"].cine is None  # labels-only case
    for sid, s in subs.items():
        assert s.labelled_frames.all() and s.meta["frames"] == "ED/ES only"
        if s.cine is not None:
            assert s.cine.shape == s.cine_labels.shape and np.isfinite(s.cine).all()
        p = phenotypes(s.label_ed, s.label_es, s.affine)
        edv, esv = SOURCE_VOLUMES[sid]
        assert p["LVEDV"] == pytest.approx(edv, abs=0.06) and p["LVESV"] == pytest.approx(esv, abs=0.06)
        assert 40 <= p["LVEF"] <= 85 and 30 <= p["RVEF"] <= 80
        assert 50 <= p["LVM"] <= 250
        # label convention: the LV blood pool (1) is surrounded by myocardium (2), not RV (3)
        for lab in (s.label_ed, s.label_es):
            lv = lab == 1
            ring = ndi.binary_dilation(lv, structure=np.ones((3, 3, 1), bool)) & ~lv
            neighbours = lab[ring]
            assert np.mean(neighbours == 2) > 0.95 and np.mean(neighbours == 3) == 0.0
            filled = np.stack([ndi.binary_fill_holes(lab[..., z] == 2) for z in range(lab.shape[2])], axis=-1)
            assert np.mean(filled[lv]) > 0.8 and np.mean(filled[lab == 3]) < 0.01  # LV inside the ring, RV outside


# ----------------------------------------------------------------------------- a heterogeneous folder
#: (case, LV blood-pool radius at ED in pixels, has images); the labels-only case sorts first, as in the
#: real folders that stopped notebook 00 at their first subject
BYOD_CASES = (("AAA000", 7.5, False), ("BBB111", 7.0, True), ("CCC222", 8.0, True), ("DDD333", 6.5, True))
#: a metadata CSV as the M&Ms release ships it (values made up for the test)
BYOD_COVARIATES = pd.DataFrame(
    {
        "External code": ["AAA000", "BBB111", "CCC222", "DDD333"],
        "VendorName": ["Siemens", "Philips", "GE", "Canon"],
        "Vendor": ["A", "B", "C", "D"],
        "Centre": [1, 2, 3, 4],
        "ED": [0, 0, 0, 0],
        "ES": [9, 10, 11, 9],
        "Age": [60, 45, 52, 70],
        "Pathology": ["DCM", "NOR", "NOR", "NOR"],
        "Sex": ["M", "F", "M", "F"],
        "Height": [175.0, 165.0, 180.0, None],
        "Weight": [80.0, 62.0, 85.0, None],
    }
)
BYOD_SHAPE, BYOD_AFF = (48, 44, 6), np.diag([1.6, 1.6, 8.0, 1.0])


def byod_labels(r_lv: float) -> np.ndarray:
    """LV blood pool (radius ``r_lv`` px), a 3 px myocardial ring and an RV crescent on slices 0-4 (none on 5)."""
    x, y = np.meshgrid(np.arange(BYOD_SHAPE[0]), np.arange(BYOD_SHAPE[1]), indexing="ij")
    r = np.hypot(x - 26, y - 22)
    sl = np.zeros(BYOD_SHAPE[:2], np.uint8)
    sl[(np.hypot(x - 13, y - 22) < r_lv + 2) & (r >= r_lv + 3)] = 3
    sl[r < r_lv + 3] = 2
    sl[r < r_lv] = 1
    out = np.repeat(sl[:, :, None], BYOD_SHAPE[2], axis=2)
    out[..., 5] = 0
    return out


def write_byod_mnms(folder, covariates: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """A flat M&Ms ED/ES folder as real ones come: ``AAA000`` has labels but no images, the others
    both; with ``covariates`` the release's metadata CSV. Returns the labels written per case and phase."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for case, r_ed, images in BYOD_CASES:
        rng = np.random.default_rng(len(written))
        written[case] = {}
        for ph, r in (("ED", r_ed), ("ES", 0.7 * r_ed)):
            lab = byod_labels(r)
            written[case][ph] = lab
            save_nifti(folder / f"{case}_sa_{ph}_gt.nii.gz", lab, BYOD_AFF, kind="label")
            if images:  # bSSFP-like: bright blood, dark myocardium, Rician-ish noise
                img = np.choose(lab, [60.0, 280.0, 90.0, 260.0]) + rng.normal(0, 8.0, lab.shape)
                save_nifti(folder / f"{case}_sa_{ph}.nii.gz", np.abs(img), BYOD_AFF)
    if covariates:
        BYOD_COVARIATES.to_csv(folder / "mnms_metadata.csv", index=False)
    return written
