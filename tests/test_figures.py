import matplotlib.pyplot as plt
import numpy as np

from cmrkit import figures
from cmrkit.strain import ideal_ring_grid


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
