"""cmrkit.chapters.background: the strain worked example, and every artefact on a tiny phantom cohort."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from cmrkit.chapters import background as bg
from cmrkit.registry import for_notebook


# ------------------------------------------------------------------------------------------ strain
def test_green_lagrange_worked_example():
    ex = bg.green_lagrange_example(10.0, 8.0)
    assert ex["green"] == pytest.approx((64 - 100) / 200) and ex["linear"] == pytest.approx(-0.2)
    assert ex["green_from_linear"] == pytest.approx(ex["green"])
    with pytest.raises(ValueError):
        bg.green_lagrange_example(0.0, 1.0)


# ------------------------------------------------------------------------------------------ all steps
@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory):
    from cmrkit.phantom import Geometry, generate_cohort

    out = tmp_path_factory.mktemp("phantom") / "tiny"
    g = Geometry(
        matrix=64, pixel_mm=3.0, slices=8, cine_frames=8, tag_frames=8, tag_pixel_mm=2.0, slice_samples=1, supersample=1
    )
    # seed 0: subject 0 has regional dysfunction, subject 1 is normal
    generate_cohort(out, 2, seed=0, geometry=g, pathology_fraction=0.5, workers=1, progress=False)
    return out


def test_every_registered_artefact_is_written(tiny_cohort, tmp_path):
    from cmrkit.config import load
    from cmrkit.report import Report

    absent = str(tmp_path / "no_real_data_here")
    cfg = load("smoke", data_dir=str(tiny_cohort), check_data=False, overrides={"realdata.mnms": absent})
    rep = Report(profile="smoke", seed=0, dataset="phantom (tiny)", root=tmp_path / "rep", notebook="00_background")
    out = bg.run_all(cfg, rep)
    assert rep.dataset == "phantom (tiny, 2 subjects)"  # labelled as the notebook labels it
    for art in for_notebook("00_background"):
        folder, suffix = ("tables", ".csv") if art.kind == "table" else ("figures", ".png")
        assert (tmp_path / "rep" / folder / f"{art.id}{suffix}").is_file(), art.id
    # real data absent: said so in the table and the figure caption, not crashed
    realism = pd.read_csv(tmp_path / "rep" / "tables" / "bg_realism.csv")
    absent_row = realism[realism["row"] == "cine/M&Ms/all"]
    assert len(absent_row) == 1 and absent_row["value"].iloc[0] == 0
    assert absent_row["note"].iloc[0] == f"real M&Ms folder {absent} absent: no real-data comparison"
    cap = json.loads((tmp_path / "rep" / "figures" / "bg_real_vs_phantom.json").read_text())["caption"]
    assert "Real data absent" in cap
    # the phantom's tags are 6 mm apart (profile tag_spacing_mm), measured from the spectrum
    period = realism[(realism["metric"] == "tag period") & realism["row"].str.startswith("tagging/phantom")]
    assert period["value"].iloc[0] == pytest.approx(6.0, rel=0.03)
    # indices measured from the labels agree with the phantom's own measurement in the manifest
    man = pd.read_csv(tiny_cohort / "manifest.csv").set_index("subject_id")
    ind = out["indices"].set_index("subject")
    for sid in ind.index:
        assert ind.loc[sid, "LVEDV"] == pytest.approx(man.loc[sid, "lvedv_ml_measured"], rel=1e-3)
    # the dysfunctional segments of the pathological subject contract less than the others
    be = out["strain"]["bullseye"]
    sick = [s for s in be if man.loc[s, "pathology"] != "none"][0]
    segs = [int(x) for x in man.loc[sick, "pathology"].split("segments")[1].split(",")]
    bad = np.mean([be[sick][s] for s in segs if s in be[sick]])
    good = np.mean([v for s, v in be[sick].items() if s not in segs])
    assert bad > good + 0.05  # peak Ecc closer to zero
    # the printed summary carries the same numbers as the figure's panels (a) and (b)
    sl = out["strain"]["slice"]
    assert f"Green E = {out['strain']['example']['green']:.3f}" in out["strain_summary"]
    assert f"{sl['subject']} mid slice: peak Ecc Green {sl['peak_Ecc_green']:.3f}" in out["strain_summary"]
    plt.close("all")


def test_no_real_data_configured_is_said_not_guessed(tiny_cohort, tmp_path):
    from cmrkit.io.cohort import load_cohort
    from cmrkit.report import Report

    cohort = load_cohort(tiny_cohort, "phantom")
    rep = Report(profile="smoke", seed=0, dataset="phantom (tiny)", root=tmp_path, notebook="00_background")
    bg.realism_table(cohort, rep, real_dir="", phantom_measurements={})
    table = pd.read_csv(tmp_path / "tables" / "bg_realism.csv")
    note = table.loc[table["row"] == "cine/M&Ms/all", "note"].iloc[0]
    assert note == "no real M&Ms folder configured (realdata.mnms is empty): no real-data comparison"
    fig, meas = bg.real_vs_phantom(cohort, None, real_dir="", n=1, n_measure=1)
    assert meas["real"] == {} and list(meas["phantom"]) == cohort.ids[:1]
    assert any("no real M&Ms folder configured" in t.get_text() for t in fig.axes[0].texts)
    plt.close("all")


# ------------------------------------------------------------------------------------------ real folders
def _run(tmp_path, dataset, data_dir):
    from cmrkit.config import load
    from cmrkit.report import Report

    absent = str(tmp_path / "no_real_data_here")
    cfg = load("smoke", dataset=dataset, data_dir=str(data_dir), overrides={"realdata.mnms": absent})
    rep = Report.from_config(cfg, notebook="00_background", root=tmp_path / "rep", dataset_label=dataset)
    out = bg.run_all(cfg, rep)
    plt.close("all")
    return tmp_path / "rep", out


def _sidecar(root, art):
    folder = "tables" if art.startswith(("bg_indices", "bg_realism", "bg_phenotypes")) else "figures"
    return json.loads((root / folder / f"{art}.json").read_text())


def test_mnms_folder_without_covariates_and_a_labels_only_first_subject(tmp_path, capsys):
    """The issue's folder: the first subject has labels but no image and there is no metadata CSV. Every
    step uses the subjects that have what it needs and names the others; only the comparison by sex is
    left out, with the reason."""
    from tests.io.test_mnms import write_byod_mnms

    written = write_byod_mnms(tmp_path / "mnms")
    root, out = _run(tmp_path, "mnms", tmp_path / "mnms")
    assert out["left_out"] == {"bg_phenotypes_vs_reference": "needs a 'sex' covariate; this data set has none"}
    for art in for_notebook("00_background"):
        folder, suffix = ("tables", ".csv") if art.kind == "table" else ("figures", ".png")
        assert (root / folder / f"{art.id}{suffix}").is_file() == (art.id != "bg_phenotypes_vs_reference"), art.id
    # the cycle is BBB111's (the first with a cine); AAA000 is named with the reason
    assert out["cycle"]["subject"] == "BBB111" and (out["cycle"]["ed"], out["cycle"]["es"]) == (0, 1)
    for art in ("bg_cardiac_cycle", "bg_cine_viewer", "bg_real_vs_phantom", "bg_realism"):
        assert _sidecar(root, art)["left_out"]["AAA000"] == "no cine image", art
    # indices need labels only: the labels-only subject is measured (independent voxel count)
    ind = out["indices"].set_index("subject")
    vox_ml = 1.6 * 1.6 * 8.0 / 1000.0
    assert list(ind.index) == ["AAA000", "BBB111", "CCC222", "DDD333"]
    for sid in ind.index:
        assert ind.loc[sid, "LVEDV"] == pytest.approx((written[sid]["ED"] == 1).sum() * vox_ml)
        assert ind.loc[sid, "RVEDV"] == pytest.approx((written[sid]["ED"] == 3).sum() * vox_ml)
    # realism rows name the run's data set apart from the real M&Ms reference
    realism = pd.read_csv(root / "tables" / "bg_realism.csv")
    assert set(realism.loc[realism["row"].str.endswith("/all"), "row"]) == {"cine/M&Ms/all", "cine/M&Ms (this run)/all"}
    run_rows = realism[realism["row"] == "cine/M&Ms (this run)/all"]
    assert run_rows["n"].max() == 3 and not realism["row"].str.startswith("tagging/").any()
    assert _sidecar(root, "bg_realism")["left_out"]["tagging rows"].startswith("no ground truth")
    # phenotypes of every labelled subject together, not split by sex; the figure says why
    dist = _sidecar(root, "bg_phenotype_distributions")
    assert dist["left_out"] == {"split by sex": "needs a 'sex' covariate; this data set has none"}
    assert "of both sexes together" in dist["caption"]
    printed = capsys.readouterr().out
    assert "bg_phenotypes_vs_reference left out: needs a 'sex' covariate; this data set has none" in printed
    assert "bg_cardiac_cycle: Left out: AAA000 (no cine image)" in printed


def test_mnms_folder_with_the_metadata_csv_compares_by_sex(tmp_path):
    from tests.io.test_mnms import write_byod_mnms

    written = write_byod_mnms(tmp_path / "mnms", covariates=True)
    root, out = _run(tmp_path, "mnms", tmp_path / "mnms")
    assert out["left_out"] == {}
    cmp = pd.read_csv(root / "tables" / "bg_phenotypes_vs_reference.csv")
    meta = _sidecar(root, "bg_phenotypes_vs_reference")
    # AAA000 (DCM) is not compared with healthy reference cohorts; the three NOR subjects are
    assert meta["left_out"]["AAA000"] == "pathology DCM; the reference cohorts are healthy"
    assert meta["notes"][0].startswith("Cohort: 3 of 4 subjects without a recorded pathology")
    vox_ml = 1.6 * 1.6 * 8.0 / 1000.0
    edv = {sid: (written[sid]["ED"] == 1).sum() * vox_ml for sid in written}
    women = cmp[cmp["row"].str.startswith("LVEDV/female/") & (cmp["metric"] == "cohort")]
    men = cmp[cmp["row"].str.startswith("LVEDV/male/") & (cmp["metric"] == "cohort")]
    assert women["value"].iloc[0] == pytest.approx((edv["BBB111"] + edv["DDD333"]) / 2) and women["n"].iloc[0] == 2
    assert men["value"].iloc[0] == pytest.approx(edv["CCC222"]) and men["n"].iloc[0] == 1
    # LV mass index needs height and weight: DDD333 has none, so women's LVMi has one subject
    lvmi_w = cmp[cmp["row"].str.startswith("LVMi/female/") & (cmp["metric"] == "cohort")]
    lvm = (written["BBB111"]["ED"] == 2).sum() * vox_ml * 1.05
    assert lvmi_w["n"].iloc[0] == 1
    assert lvmi_w["value"].iloc[0] == pytest.approx(lvm / np.sqrt(165 * 62 / 3600), rel=1e-5)  # CSV keeps 6 digits
    assert meta["left_out"]["DDD333 LVMi"] == "no height and weight"
    assert "split by sex" not in _sidecar(root, "bg_phenotype_distributions")["left_out"]


def test_dicom_folder_with_contours(tmp_path):
    """The committed Sunnybrook subset: contours give LV labels (myocardium at ED only), no RV; ED is the
    late contoured phase."""
    from cmrkit.utils import REPO_ROOT

    root, out = _run(tmp_path, "dicom", REPO_ROOT / "tests" / "data" / "sunnybrook")
    assert out["left_out"] == {"bg_phenotypes_vs_reference": "needs a 'sex' covariate; this data set has none"}
    cyc = out["cycle"]
    assert cyc["subject"] == "SCD0000301" and (cyc["ed"], cyc["es"]) == (2, 1)
    assert (
        np.isnan(cyc["volumes"]["LV"][0])
        and np.isnan(cyc["volumes"]["MYO"][1])
        and np.isnan(cyc["volumes"]["RV"]).all()
    )
    assert cyc["volumes"]["LV"][2] > cyc["volumes"]["LV"][1] > 0
    assert _sidecar(root, "bg_cardiac_cycle")["left_out"] == {
        "RV blood pool curve": "not delineated in the labels of SCD0000301"
    }
    ind = pd.read_csv(root / "tables" / "bg_indices.csv")
    assert not ind["metric"].str.startswith("RV").any() and {"LVEDV", "LVEF", "LVM", "WT"} <= set(ind["metric"])
    assert list(_sidecar(root, "bg_indices")["left_out"].values()) == ["not delineated in its labels: MYO at ES, RV"]


@pytest.mark.realdata
def test_real_mnms_and_sunnybrook_folders(tmp_path, realdata):
    """Notebook 00's steps on the real M&Ms cases (one of them labels only, no covariates) and on the
    full Sunnybrook series with its expert contours."""
    root, out = _run(tmp_path / "m", "mnms", realdata / "mnms")
    assert out["cycle"]["subject"] == "better_G1K1V3"
    assert _sidecar(root, "bg_cardiac_cycle")["left_out"] == {"worse_A5P5W0": "no cine image"}
    assert set(out["left_out"]) == {"bg_phenotypes_vs_reference"}
    ind = out["indices"].set_index("subject")
    assert ind.loc["worse_A5P5W0", "LVEDV"] == pytest.approx(191.5, abs=0.06)  # SOURCE.md, labels only
    root, out = _run(tmp_path / "s", "dicom", realdata / "sunnybrook" / "final_data" / "dicoms")
    cyc = out["cycle"]
    assert (cyc["ed"], cyc["es"]) == (19, 6) and 15 < 100 * (
        1 - cyc["volumes"]["LV"][6] / cyc["volumes"]["LV"][19]
    ) < 35
    assert set(out["left_out"]) == {"bg_phenotypes_vs_reference"}
