"""cmrkit.figures: what each plot draws (positions, values, labels), checked on the artists."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.patches import Wedge

from cmrkit import figures
from cmrkit.labels import LABEL_COLOURS
from cmrkit.strain import aha_segment, ideal_ring_grid

A = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
B = np.array([1.1, 1.9, 3.2, 3.8, 5.3])


def test_image_grid_layout_and_orientation():
    seq = np.zeros((3, 8, 10))
    seq[:, 2, 7] = 1.0  # row 2 (y), column 7 (x)
    fig = figures.image_grid({"a": seq, "b": seq}, [0, 2])
    axes = fig.axes
    assert len(axes) == 4
    img = axes[0].images[0].get_array()
    assert img.shape == (8, 10) and img[2, 7] == 1.0  # shown as given: rows = y, columns = x
    plt.close(fig)


def test_landmark_overlay_draws_the_given_points():
    lm = np.stack([ideal_ring_grid((20.0, 15.0), 5.0, 9.0)] * 2)  # (2 frames, 2, 168)
    fig = figures.landmark_overlay({"t": np.zeros((2, 32, 40))}, {"t": lm}, [1])
    ax = fig.axes[0]
    pts = np.concatenate([c.get_offsets() for c in ax.collections])
    assert pts.shape == (168, 2)
    np.testing.assert_allclose(sorted(pts[:, 0]), sorted(lm[1, 0]))
    np.testing.assert_allclose(sorted(pts[:, 1]), sorted(lm[1, 1]))
    plt.close(fig)


def test_strain_curves_mean_band():
    c = np.array([[0.0, -0.1, -0.2], [0.0, -0.3, -0.2]])
    fig = figures.strain_curves({"x": c}, ylabel="E")
    line = fig.axes[0].lines[0]
    np.testing.assert_allclose(line.get_ydata(), [0.0, -0.2, -0.2])
    plt.close(fig)


def test_segmentation_overlay_and_show_close_figures():
    fig = figures.segmentation_overlay([np.zeros((4, 4))], [np.eye(4, dtype=np.uint8) * 2], ["a"])
    assert len(fig.axes) == 1
    figures.show(fig)
    assert not plt.fignum_exists(fig.number)


def test_label_contours_use_the_label_colours():
    lab = np.zeros((12, 12), np.uint8)
    lab[3:9, 3:9] = 2
    lab[5:7, 5:7] = 1
    fig, ax = plt.subplots()
    figures.label_contours(ax, lab)
    colours = [tuple(np.round(c.get_edgecolor()[0][:3], 3)) for c in ax.collections]
    expected = [tuple(np.round(plt.matplotlib.colors.to_rgb(LABEL_COLOURS[k]), 3)) for k in (1, 2)]
    assert colours == expected  # LV then myocardium; no RV in the map, no RV contour
    plt.close(fig)


def test_label_cmap_is_transparent_background_then_label_colours():
    rgba = figures.LABEL_CMAP(np.arange(4))
    assert rgba[0, 3] == 0
    for k in (1, 2, 3):
        np.testing.assert_allclose(rgba[k, :3], plt.matplotlib.colors.to_rgb(LABEL_COLOURS[k]))
        assert rgba[k, 3] == pytest.approx(0.45)


# ------------------------------------------------------------------------------------------ AHA bullseye
def test_bullseye_segment_geometry_matches_the_numbering():
    # the wedge of every segment contains exactly the angles aha_segment maps to it
    for seg in range(1, 17):
        r0, r1, t0, t1 = figures._segment_geometry(seg)
        level = {4.0: "basal", 3.0: "mid", 2.0: "apical"}[r1]
        mid = (t0 + t1) / 2
        assert aha_segment(mid, level) == seg
        assert t1 - t0 == (60.0 if seg <= 12 else 90.0)
    assert figures._segment_geometry(17)[:2] == (0.0, 1.0)


def test_bullseye_plot_draws_17_segments():
    vals = {s: -0.2 for s in range(1, 17)}
    vals[7] = float("nan")
    fig = figures.bullseye_plot(vals, vmin=-0.3, vmax=0.0, highlight=[1], label="peak Ecc")
    ax = fig.axes[0]
    wedges = [p for p in ax.patches if isinstance(p, Wedge)]
    assert len(wedges) == 17 + 1  # + the outline of the highlighted segment
    texts = [t.get_text() for t in ax.texts]
    assert "7\nn/a" in texts and "17\nn/a" in texts and "1\n-0.20" in texts
    plt.close(fig)
    with pytest.raises(ValueError, match="17 values"):
        figures.bullseye_plot([0.0] * 16)
    with pytest.raises(ValueError, match="1..17"):
        figures.bullseye_plot({18: 0.0})


# ------------------------------------------------------------------------------------------ statistics
def test_bland_altman_plot_draws_bias_and_limits():
    ax = figures.bland_altman_plot(A, B, title="Ec basal")
    ys = sorted(line.get_ydata()[0] for line in ax.get_lines())
    res = ax.bland_altman
    assert ys == pytest.approx(sorted([res.bias, res.loa_low, res.loa_high]))
    assert ax.get_title() == "Ec basal"
    plt.close(ax.figure)


def test_violin_and_box_plots():
    rng = np.random.default_rng(1)
    data = {r: {"Original": rng.normal(size=30), "Generated": rng.normal(size=30)} for r in ("Basal", "Mid", "Apical")}
    ax = figures.violin_plot(data, ylabel="Ec")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Basal", "Mid", "Apical"]
    assert len(ax.collections) >= 6  # 6 violin bodies (+ IQR bars and median dots)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["Original", "Generated"]
    plt.close(ax.figure)
    ax = figures.box_plot({"LVV": rng.normal(size=20), "LVM": rng.normal(size=20)})
    assert len(ax.patches) == 2 and ax.get_legend() is None
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="mix"):
        figures.box_plot({"a": [1, 2], "b": {"x": [1, 2]}})


def test_landmark_overlay_keeps_the_image_extent_when_landmarks_leave_it():
    """Landmarks far off the image (a tracker lost on generated tagging) must not widen the axes."""
    lm = np.stack([ideal_ring_grid((20.0, 15.0), 5.0, 9.0)] * 2)
    lost = lm.copy()
    lost[1, 0, :10] = 400.0  # 10 landmarks far to the right of a 40-pixel-wide image
    lost[1, 1, 10:15] = -250.0  # 5 far above it
    fig = figures.landmark_overlay(
        {"orig": np.zeros((2, 32, 40)), "gen": np.zeros((2, 32, 40))}, {"orig": lm, "gen": lost}, [0, 1]
    )
    for ax in fig.axes:
        assert ax.get_xlim() == (-0.5, 39.5)
        assert ax.get_ylim() == (31.5, -0.5)  # top-left origin kept
    assert "15 landmarks off the image" in fig.axes[3].get_title()
    assert "off the image" not in fig.axes[2].get_title()
    plt.close(fig)
