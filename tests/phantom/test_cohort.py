"""Cohort generation: layout, manifest, determinism across workers, ensure_cohort, CLI."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from cmrkit.config import load
from cmrkit.phantom import (
    COHORT_JSON,
    MANIFEST,
    PHENOTYPES,
    SUBJECT_FILES,
    ensure_cohort,
    generate_cohort,
    read_ground_truth,
)
from cmrkit.phantom.cli import cli_main
from cmrkit.phantom.covariates import COVARIATES

TINY_OVERRIDES = {
    "phantom.matrix": 48,
    "phantom.pixel_mm": 4.0,
    "phantom.cine_frames": 3,
    "phantom.tag_frames": 3,
    "phantom.n_subjects": 2,
    "phantom.workers": 1,
}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, tiny_geometry):
    out = tmp_path_factory.mktemp("cohort1")
    generate_cohort(out, 3, seed=5, geometry=tiny_geometry, pathology_fraction=0.5, workers=1, progress=False)
    return out


def test_layout_and_manifest(cohort, tiny_geometry):
    subjects = sorted(p.name for p in cohort.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert subjects == ["PH0000", "PH0001", "PH0002"]
    for sid in subjects:
        assert all((cohort / sid / f).is_file() for f in SUBJECT_FILES)
    assert not [p for p in cohort.iterdir() if p.name.startswith(".")]  # no temporaries left
    df = pd.read_csv(cohort / MANIFEST)
    assert list(df["subject_id"]) == subjects
    for col in ("subject_id", *COVARIATES, "bsa", "heart_rate", "pathology", *PHENOTYPES, "ed_frame", "es_frame"):
        assert col in df.columns, col
    for k in PHENOTYPES:
        assert f"{k}_measured" in df.columns
    assert (df["ed_frame"] == 0).all()
    spec = json.loads((cohort / COHORT_JSON).read_text())
    assert spec["status"] == "complete" and spec["n_subjects"] == 3 and spec["seed"] == 5
    assert spec["geometry"]["matrix"] == tiny_geometry.matrix


def test_nifti_files(cohort, tiny_geometry):
    g = tiny_geometry
    d = cohort / "PH0001"
    sa = nib.load(d / "sa.nii.gz")
    lab = nib.load(d / "label_sa.nii.gz")
    assert sa.shape == (g.matrix, g.matrix, g.slices, g.cine_frames)
    assert sa.get_data_dtype() == np.float32 and lab.get_data_dtype() == np.uint8
    assert np.allclose(sa.header.get_zooms()[:3], (g.pixel_mm, g.pixel_mm, g.slice_spacing_mm))
    assert np.allclose(sa.affine, lab.affine) and np.allclose(sa.get_qform(), sa.get_sform())
    row = pd.read_csv(cohort / MANIFEST).set_index("subject_id").loc["PH0001"]
    es = int(row["es_frame"])
    assert np.array_equal(np.asarray(nib.load(d / "label_sa_ES.nii.gz").dataobj), np.asarray(lab.dataobj)[..., es])
    assert np.array_equal(np.asarray(nib.load(d / "sa_ED.nii.gz").dataobj), np.asarray(sa.dataobj)[..., 0])
    # frame duration encodes the heart rate: pixdim[4] * T = R-R interval
    assert sa.header.get_zooms()[3] * g.cine_frames == pytest.approx(60000.0 / row["heart_rate"], rel=1e-3)
    gt = read_ground_truth(d)
    for s in range(3):
        tag = nib.load(d / f"tag_{s + 1}.nii.gz")
        assert tag.shape == (g.tag_matrix_resolved, g.tag_matrix_resolved, 1, g.tag_frames)
        k = gt["tag_slice_index"][s]
        centre = tag.affine @ np.array([0, 0, 0, 1.0])
        assert (np.linalg.inv(sa.affine) @ centre)[2] == pytest.approx(k, abs=1e-4)
    assert gt["attrs"]["subject_id"] == "PH0001" and gt["attrs"]["es_frame"] == es
    assert gt["landmarks"]["px"].shape == (3, g.tag_frames, 2, 168)
    assert gt["strain"]["exact"]["ecc_ring"].shape == (3, g.tag_frames, 7)
    assert gt["displacement"]["field"].shape[:3] == (3, g.tag_frames, 2)
    assert gt["attrs"]["params"]["index"] == 1


def test_worker_count_does_not_change_results(cohort, tmp_path, tiny_geometry):
    out = tmp_path / "two"
    generate_cohort(out, 3, seed=5, geometry=tiny_geometry, pathology_fraction=0.5, workers=2, progress=False)
    a = pd.read_csv(cohort / MANIFEST)
    b = pd.read_csv(out / MANIFEST)
    pd.testing.assert_frame_equal(a, b)
    for sid in a["subject_id"]:
        for f in ("sa.nii.gz", "label_sa.nii.gz", "tag_2.nii.gz"):
            x = np.asarray(nib.load(cohort / sid / f).dataobj)
            y = np.asarray(nib.load(out / sid / f).dataobj)
            assert np.array_equal(x, y), (sid, f)
        assert np.array_equal(
            read_ground_truth(cohort / sid)["displacement"]["field"],
            read_ground_truth(out / sid)["displacement"]["field"],
        )


def test_ensure_cohort_generates_once_and_on_change(tmp_path):
    cfg = load("smoke", seed=1, data_dir=tmp_path / "c", overrides=TINY_OVERRIDES)
    out = ensure_cohort(cfg)
    assert (out / MANIFEST).is_file()
    stamp = (out / COHORT_JSON).stat().st_mtime_ns
    sa_ino = (out / "PH0000" / "sa.nii.gz").stat().st_ino
    assert ensure_cohort(cfg) == out
    assert (out / COHORT_JSON).stat().st_mtime_ns == stamp  # nothing regenerated
    # a different geometry regenerates; a larger cohort reuses the matching subjects
    cfg2 = load("smoke", seed=1, data_dir=tmp_path / "c", overrides={**TINY_OVERRIDES, "phantom.cine_frames": 4})
    ensure_cohort(cfg2)
    assert nib.load(out / "PH0000" / "sa.nii.gz").shape[3] == 4
    cfg3 = load(
        "smoke",
        seed=1,
        data_dir=tmp_path / "c",
        overrides={**TINY_OVERRIDES, "phantom.cine_frames": 4, "phantom.n_subjects": 3},
    )
    ino = (out / "PH0000" / "sa.nii.gz").stat().st_ino
    ensure_cohort(cfg3)
    assert (out / "PH0000" / "sa.nii.gz").stat().st_ino == ino and (out / "PH0002").is_dir()
    assert sa_ino is not None
    assert json.loads((out / COHORT_JSON).read_text())["generated_subjects"] == 1


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = cli_main(
        [
            "--profile",
            "smoke",
            "--n",
            "1",
            "--matrix",
            "48",
            "--frames",
            "3",
            "--out",
            str(out),
            "--workers",
            "1",
            "--no-progress",
            "--seed",
            "2",
        ]
    )
    assert rc == 0
    assert (out / MANIFEST).is_file() and (out / "PH0000" / "tag_3.nii.gz").is_file()
    assert "1 subjects" in capsys.readouterr().out
    assert cli_main(["--n", "0", "--out", str(out)]) == 2
    assert cli_main(["--profile", "nope", "--out", str(out)]) == 2
    assert "error" in capsys.readouterr().err
