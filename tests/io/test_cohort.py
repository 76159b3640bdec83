"""cmrkit.io.cohort: phantom manifest cohorts read on demand, real-layout cohorts with measured
phenotypes, the real M&Ms reader and the mid-ventricular slice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cmrkit.clinical import MEASURED_COLUMNS
from cmrkit.io.cohort import Cohort, load_cohort, load_real_mnms, mid_slice

from .test_mnms import write_derived
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
