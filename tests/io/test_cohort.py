"""cmrkit.io.cohort: phantom manifest cohorts read on demand, real-layout cohorts with measured
phenotypes, the real M&Ms reader and the mid-ventricular slice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cmrkit.clinical import MEASURED_COLUMNS
from cmrkit.io.cohort import FEATURES, Cohort, load_cohort, load_real_mnms, mid_slice, needs_reason
from cmrkit.utils import REPO_ROOT

from .test_mnms import write_byod_mnms, write_derived
from .test_ukbb import SHAPE, make_cohort_subject, write_manifest


def test_mid_slice():
    lab = np.zeros((8, 8, 6), np.uint8)
    lab[2:4, 2:4, 1:5] = 2
    lab[3, 3, 1:5] = 1
    assert mid_slice(lab) == 3
    with pytest.raises(ValueError, match="no slice holds both"):
        mid_slice(np.zeros((4, 4, 3)))


def _phantom_cohort(tmp_path, n=3):
    ids = [f"p{i:03d}" for i in range(n)]
    for i, sid in enumerate(ids):
        make_cohort_subject(tmp_path / sid, tags=False, rng=i)
    write_manifest(
        tmp_path / "manifest.csv",
        ids,
        sex=["F", "M", "F"][:n],
        pathology=["none", "akinetic LAD segments 1,2", "none"][:n],
        ed_frame=[0] * n,
        es_frame=[3] * n,
    )
    return ids


def test_phantom_cohort_reads_the_manifest_and_subjects_on_demand(tmp_path):
    ids = _phantom_cohort(tmp_path)
    c = load_cohort({"data_dir": str(tmp_path), "dataset": "phantom"})  # a Config is such a mapping
    assert isinstance(c, Cohort) and c.ids == ids and c.has_ground_truth and c.dataset == "phantom"
    assert list(c.table["subject_id"]) == ids
    assert c.healthy_ids() == ["p000", "p002"] and c.pathological_ids() == ["p001"]
    assert c.pathology("p001").startswith("akinetic") and c.measured_ids(2) == ids[:2]
    c.cache_size = 1
    s0 = c.subject("p000")
    assert s0.subject_id == "p000" and s0.cine.shape == (*SHAPE, 6)
    assert c.subject("p000") is s0  # cached
    c.subject("p001")
    assert c.subject("p000") is not s0  # evicted by the newer subject, read again
    with pytest.raises(KeyError, match="not in the cohort"):
        c.subject("p999")
    assert load_cohort(tmp_path, "phantom", max_subjects=2).ids == ids[:2]


def test_phantom_cohort_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest"):
        load_cohort(tmp_path, "phantom")
    _phantom_cohort(tmp_path, n=2)
    (tmp_path / "p001" / "sa.nii.gz").unlink()
    for f in (tmp_path / "p001").iterdir():
        f.unlink()
    (tmp_path / "p001").rmdir()
    with pytest.raises(FileNotFoundError, match=r"subject folders missing for \['p001'\]"):
        load_cohort(tmp_path, "phantom")
    with pytest.raises(ValueError, match="give the data set layout"):
        load_cohort(tmp_path)


def test_real_layout_cohort_measures_phenotypes_from_the_labels(tmp_path):
    written = [make_cohort_subject(tmp_path / f"s{i}", tags=False, rng=i) for i in range(2)]
    c = load_cohort(tmp_path, "ukbb")
    assert c.ids == ["s0", "s1"] and not c.has_ground_truth
    assert list(c.table["pathology"]) == ["unknown", "unknown"]
    assert set(MEASURED_COLUMNS.values()) <= set(c.table.columns)
    # independent count: LV blood pool voxels at ED (frame 0) and ES (frame 3) x the voxel volume
    vox_ml = abs(np.linalg.det(written[0]["affine"][:3, :3])) / 1000.0
    lab = written[0]["labels"]
    row = c.table.iloc[0]
    assert row["lvedv_ml_measured"] == pytest.approx((lab[..., 0] == 1).sum() * vox_ml)
    assert row["lvesv_ml_measured"] == pytest.approx((lab[..., 3] == 1).sum() * vox_ml)
    assert row["rvedv_ml_measured"] == pytest.approx((lab[..., 0] == 3).sum() * vox_ml)
    assert c.subject("s1") is c.subject("s1")  # read at load time, kept
    assert load_cohort(tmp_path, "ukbb", max_subjects=1).ids == ["s0"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no subject folders"):  # the reader names the folder
        load_cohort(tmp_path / "empty", "ukbb")


def test_load_real_mnms_skips_labels_only_cases_and_absent_folders(tmp_path):
    assert load_real_mnms(None) == [] and load_real_mnms("") == [] and load_real_mnms(tmp_path / "nope") == []
    write_derived(tmp_path, "better_AAA111")
    write_derived(tmp_path, "worse_BBB222", images=False)
    pd.DataFrame(
        {"External code": ["AAA111", "BBB222"], "Vendor": ["A", "B"], "Centre": [1, 2], "ED": [0, 0], "ES": [9, 11]}
    ).to_csv(tmp_path / "info.csv", index=False)
    cases = load_real_mnms(tmp_path)
    assert [s.subject_id for s in cases] == ["better_AAA111"]
    assert cases[0].cine is not None and cases[0].cine_labels is not None


# ----------------------------------------------------------------------------- heterogeneous real folders
def test_needs_reason_wording():
    assert needs_reason(["tagging"]) == "needs tagging; this data set has none"
    assert needs_reason(["cine", "tagging"]) == "needs cine images and tagging; this data set has neither"
    assert needs_reason(["cine", "tagging", "sex"]).endswith("; this data set has none of them")
    with pytest.raises(ValueError, match="expected names from"):
        needs_reason(["covariates"])
    with pytest.raises(ValueError):
        needs_reason([])


def test_folder_without_covariates_and_a_labels_only_subject(tmp_path):
    written = write_byod_mnms(tmp_path)
    c = load_cohort(tmp_path, "mnms")
    assert c.ids == ["AAA000", "BBB111", "CCC222", "DDD333"]
    ok, skipped = c.select("cine", "labels")
    assert ok == ["BBB111", "CCC222", "DDD333"] and skipped == {"AAA000": "no cine image"}
    assert c.select("labels") == (c.ids, {})  # the labels-only case has labels
    assert c.select("cine", "sex")[1]["AAA000"] == "no cine image, no 'sex' covariate"
    assert c.provides() == {"cine", "labels"}
    assert c.unmet(["cine", "labels"]) is None
    assert c.unmet(["labels", "sex"]) == "needs a 'sex' covariate; this data set has none"
    assert c.unmet(["tagging"]) == "needs tagging; this data set has none"
    assert c.measured_ids() == ok
    assert list(c.table["pathology"]) == ["unknown"] * 4 and "sex" not in c.table.columns
    assert c.healthy_ids() == [] and c.pathological_ids() == []  # unknown is neither
    # the labels-only case's phenotypes are measured from its labels (independent voxel count)
    vox_ml = 1.6 * 1.6 * 8.0 / 1000.0
    row = c.table.set_index("subject_id").loc["AAA000"]
    assert row["lvedv_ml_measured"] == pytest.approx((written["AAA000"]["ED"] == 1).sum() * vox_ml)
    text = c.describe()
    assert "4 subjects (mnms): 3 with a cine and labels at ED and ES" in text and "AAA000: no cine image" in text
    assert "a 'sex' covariate: 0 of 4 subjects" in text and "tagging: 0 of 4 subjects" in text


def test_metadata_csv_gives_sex_age_size_and_diagnosis(tmp_path):
    write_byod_mnms(tmp_path, covariates=True)
    c = load_cohort(tmp_path, "mnms")
    t = c.table.set_index("subject_id")
    assert list(t["sex"]) == ["M", "F", "M", "F"] and list(t["age"]) == [60, 45, 52, 70]
    assert t.loc["CCC222", "height_cm"] == 180.0 and np.isnan(t.loc["DDD333", "weight_kg"])
    # the release's diagnosis: NOR is a normal heart ("none", as in the phantom manifest), the rest kept
    assert list(t["pathology"]) == ["DCM", "none", "none", "none"]
    assert c.healthy_ids() == ["BBB111", "CCC222", "DDD333"] and c.pathological_ids() == ["AAA000"]
    assert c.provides() == {"cine", "labels", "sex", "height_weight"}
    assert c.select("height_weight") == (["AAA000", "BBB111", "CCC222"], {"DDD333": "no height and weight"})


def test_phantom_cohort_provides_everything_without_reading_subjects(tmp_path):
    _phantom_cohort(tmp_path)
    c = load_cohort(tmp_path, "phantom")
    c.subject = None  # any read would fail
    # this manifest records sex but not height and weight: covariates come from the table
    assert c.provides() == set(FEATURES) - {"height_weight"}
    assert c.select("cine", "tagging", "ground_truth", "sex") == (c.ids, {})


def test_undelineated_structures_are_nan_not_zero():
    """Sunnybrook contours delineate the LV (and the myocardium at ED only), no RV: its RV volumes are
    unknown, not 0 mL, and the LV phenotypes are measured."""
    c = load_cohort(REPO_ROOT / "tests" / "data" / "sunnybrook", "dicom")
    row = c.table.iloc[0]
    assert np.isnan(row["rvedv_ml_measured"]) and np.isnan(row["rvef_pct_measured"])
    assert row["lvedv_ml_measured"] > row["lvesv_ml_measured"] > 0 and row["lvm_g_measured"] > 0
    assert c.undelineated("SCD0000301") == ["MYO at ES", "RV"]
    ph = c.phenotypes("SCD0000301")
    assert np.isnan(ph["RVEDV"]) and ph["LVEDV"] == pytest.approx(row["lvedv_ml_measured"])
    assert "not delineated in the labels: MYO at ES, RV" in c.describe()
