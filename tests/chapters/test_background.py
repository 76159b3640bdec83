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
