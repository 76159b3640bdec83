"""cmrkit.chapters.background: AHA geometry, strain examples, and every artefact on a tiny phantom cohort."""

from __future__ import annotations

import json
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from cmrkit.chapters import background as bg
from cmrkit.registry import for_notebook


# ------------------------------------------------------------------------------------------ AHA geometry
@pytest.mark.parametrize(
    "angle, level, seg",
    [
        (90, "basal", 1),
        (150, "basal", 2),
        (210, "basal", 3),
        (270, "basal", 4),
        (330, "basal", 5),
        (30, "basal", 6),
        (61, "basal", 1),
        (119.9, "basal", 1),
        (120, "basal", 2),
        (59.9, "basal", 6),
        (-30, "basal", 5),
        (450, "basal", 1),
        (90, "mid", 7),
        (170, "mid", 8),
        (180, "mid", 9),
        (200, "mid", 9),
        (270, "mid", 10),
        (300, "mid", 11),
        (0, "mid", 12),
        (90, "apical", 13),
        (180, "apical", 14),
        (270, "apical", 15),
        (0, "apical", 16),
        (44, "apical", 16),
        (46, "apical", 13),
        (123, "apex", 17),
    ],
)
def test_aha_segment_numbering(angle, level, seg):
    # Cerqueira et al. 2002: segment 1 anterior at the top, counter-clockwise, septum on the left
    assert bg.aha_segment(angle, level) == seg


def test_aha_segment_vectorised_and_names():
    segs = bg.aha_segment(np.arange(0, 360, 60) + 30, "mid")
    assert sorted(segs.tolist()) == list(range(7, 13))
    assert bg.AHA_SEGMENT_NAMES[2] == "basal anteroseptal" and bg.AHA_SEGMENT_NAMES[14] == "apical septal"
    with pytest.raises(ValueError, match="level"):
        bg.aha_segment(0, "middle")


def test_bullseye_segment_geometry_matches_the_numbering():
    # the wedge of every segment contains exactly the angles aha_segment maps to it
    for seg in range(1, 17):
        r0, r1, t0, t1 = bg._segment_geometry(seg)
        level = {4.0: "basal", 3.0: "mid", 2.0: "apical"}[r1]
        mid = (t0 + t1) / 2
        assert bg.aha_segment(mid, level) == seg
        assert t1 - t0 == (60.0 if seg <= 12 else 90.0)
    assert bg._segment_geometry(17)[:2] == (0.0, 1.0)


def test_bullseye_plot_draws_17_segments():
    from matplotlib.patches import Wedge

    vals = {s: -0.2 for s in range(1, 17)}
    vals[7] = float("nan")
    fig = bg.bullseye_plot(vals, vmin=-0.3, vmax=0.0, highlight=[1], label="peak Ecc")
    ax = fig.axes[0]
    wedges = [p for p in ax.patches if isinstance(p, Wedge)]
    assert len(wedges) == 17 + 1  # + the outline of the highlighted segment
    texts = [t.get_text() for t in ax.texts]
    assert "7\nn/a" in texts and "17\nn/a" in texts and "1\n-0.20" in texts
    plt.close(fig)
    with pytest.raises(ValueError, match="17 values"):
        bg.bullseye_plot([0.0] * 16)
    with pytest.raises(ValueError, match="1..17"):
        bg.bullseye_plot({18: 0.0})


def test_spoke_segment_angles_follow_the_phantom_frame():
    # septum at theta_rv = 0, anterior at +90 (sense +1), first spoke 45 degrees from the septum
    ang = bg._spoke_segment_angles({"theta_rv": 0.0, "sense": 1.0, "landmark_theta0": math.radians(45)})
    np.testing.assert_allclose(ang[:2], [180 - 52.5, 180 - 67.5])
    assert bg.aha_segment(ang[0], "basal") == 2 and bg.aha_segment(ang[1], "basal") == 1
    # the other sense: anterior lies at decreasing angle, spokes still run towards increasing angle
    other = bg._spoke_segment_angles({"theta_rv": 0.0, "sense": -1.0, "landmark_theta0": math.radians(-45)})
    np.testing.assert_allclose(other[:2], [180 - 37.5, 180 - 22.5])


@pytest.mark.parametrize("theta_rv, sense", [(-2.8, 1.0), (0.7, -1.0), (2.0, 1.0)])
def test_bullseye_segments_agree_with_the_phantom_regional_model(theta_rv, sense):
    from cmrkit.phantom.motion import RegionalFunction

    theta0 = theta_rv + sense * 1.1
    info = {"theta_rv": theta_rv, "sense": sense, "landmark_theta0": theta0}
    th = theta0 + 2 * np.pi * (np.arange(24) + 0.5) / 24
    rf = RegionalFunction(theta_septum=theta_rv, sense=sense, z_apex_en=0.0, z_base=90.0)
    for level, z in (("basal", 85.0), ("mid", 45.0), ("apical", 10.0)):
        ours = bg.aha_segment(bg._spoke_segment_angles(info), level)
        np.testing.assert_array_equal(ours, rf.segment_of(th, np.full(24, z)))


# ------------------------------------------------------------------------------------------ strain
def test_green_lagrange_worked_example():
    ex = bg.green_lagrange_example(10.0, 8.0)
    assert ex["green"] == pytest.approx((64 - 100) / 200) and ex["linear"] == pytest.approx(-0.2)
    assert ex["green_from_linear"] == pytest.approx(ex["green"])
    with pytest.raises(ValueError):
        bg.green_lagrange_example(0.0, 1.0)


def test_regional_peak_ecc_of_a_uniform_contraction():
    from cmrkit.strain import ideal_ring_grid

    ed = ideal_ring_grid((64, 64), 20, 30)
    frames = [ed]
    for lam in (0.95, 0.85, 0.9):
        frames.append(64 + lam * (ed - 64))  # uniform in-plane scaling by lam
    lm = np.stack(frames)
    seg_angles = np.mod(180 - (np.arange(24) + 0.5) * 15.0, 360)
    out = bg.regional_peak_ecc(lm, "basal", seg_angles)
    assert sorted(out) == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(list(out.values()), (0.85**2 - 1) / 2, rtol=1e-9)
    out4 = bg.regional_peak_ecc(lm, "apical", seg_angles)
    assert sorted(out4) == [13, 14, 15, 16]


def test_mid_slice():
    lab = np.zeros((8, 8, 6), np.uint8)
    lab[2:4, 2:4, 1:5] = 2
    lab[3, 3, 1:5] = 1
    assert bg.mid_slice(lab) == 3
    with pytest.raises(ValueError):
        bg.mid_slice(np.zeros((4, 4, 3)))


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

    cfg = load("smoke", data_dir=str(tiny_cohort), check_data=False)
    rep = Report(profile="smoke", seed=0, dataset="phantom (tiny)", root=tmp_path / "rep", notebook="00_background")
    out = bg.run_all(cfg, rep, real_dir=tmp_path / "no_real_data_here")
    for art in for_notebook("00_background"):
        folder, suffix = ("tables", ".csv") if art.kind == "table" else ("figures", ".png")
        assert (tmp_path / "rep" / folder / f"{art.id}{suffix}").is_file(), art.id
    # real data absent: said so in the table and the figure caption, not crashed
    realism = pd.read_csv(tmp_path / "rep" / "tables" / "bg_realism.csv")
    absent = realism[realism["row"] == "cine/M&Ms/all"]
    assert len(absent) == 1 and absent["value"].iloc[0] == 0 and "absent" in absent["note"].iloc[0]
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
    plt.close("all")
