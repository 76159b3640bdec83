"""cmrkit.widgets: pure renderers, the static montage and the ipywidgets viewer driven without a kernel."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest

from cmrkit import widgets


def _cine(X=20, Y=16, Z=4, T=5):
    """(X, Y, Z, T) cine whose value encodes its index, and labels in a box."""
    x, y, z, t = np.meshgrid(np.arange(X), np.arange(Y), np.arange(Z), np.arange(T), indexing="ij")
    cine = (1000 * z + 100 * t + x + 0.01 * y).astype(np.float32)
    lab = np.zeros(cine.shape, np.uint8)
    lab[6:12, 5:9, 1:3] = 2
    lab[8:10, 6:8, 1:3] = 1
    return cine, lab


def test_to_zthw_layouts():
    cine, _ = _cine()
    a = widgets.to_zthw(cine, "xyzt")
    assert a.shape == (4, 5, 16, 20)
    assert a[2, 3, 7, 11] == cine[11, 7, 2, 3]  # row = y, column = x
    assert widgets.to_zthw(a, "zthw") is a
    with pytest.raises(ValueError, match="layout"):
        widgets.to_zthw(cine, "tzyx")
    with pytest.raises(ValueError, match="4-D"):
        widgets.to_zthw(cine[..., 0])


def test_render_slice_frame_shows_the_requested_slice_and_frame():
    cine, lab = _cine()
    fig = widgets.render_slice_frame(cine, 2, 3, lab)
    ims = fig.axes[0].get_images()
    assert len(ims) == 2  # image + label overlay
    np.testing.assert_array_equal(ims[0].get_array(), cine[:, :, 2, 3].T)
    np.testing.assert_array_equal(np.asarray(ims[1].get_array()), lab[:, :, 2, 3].T)
    plt.close(fig)
    with pytest.raises(ValueError, match="z=9"):
        widgets.render_slice_frame(cine, 9, 0)
    with pytest.raises(ValueError, match="labels"):
        widgets.render_slice_frame(cine, 0, 0, lab[:-1])


def test_label_bbox_is_a_square_around_the_labels():
    _, lab = _cine()
    # labels: x 6..11, y 5..8 -> rows 4..9, cols 5..12 with a 1-pixel margin, squared to side 8
    assert widgets.label_bbox(widgets.to_zthw(lab), margin_px=1) == (slice(3, 11), slice(5, 13))
    assert widgets.label_bbox(np.zeros((2, 2, 8, 8))) is None


def test_render_crop_to_labels():
    cine, lab = _cine(X=60, Y=50)
    fig = widgets.render_slice_frame(cine, 1, 0, lab, crop=True)
    arr = fig.axes[0].get_images()[0].get_array()
    rows, cols = widgets.label_bbox(widgets.to_zthw(lab))
    assert arr.shape == (rows.stop - rows.start, cols.stop - cols.start) and arr.shape[0] == arr.shape[1] < 50
    np.testing.assert_array_equal(arr, cine[:, :, 1, 0].T[rows, cols])
    plt.close(fig)


def test_montage_grid_and_default_slices():
    cine, lab = _cine()
    fig = widgets.slice_montage(cine, lab, frames=[0, 2, 4], frame_names=["ED", "x", "ES"])
    assert len(fig.axes) == 2 * 3  # only the 2 labelled slices by default
    assert fig.axes[0].get_title() == "ED"
    plt.close(fig)
    with pytest.raises(ValueError, match="frame_names"):
        widgets.slice_montage(cine, frames=[0, 1], frame_names=["ED"])


def test_headless_viewer_returns_a_figure():
    cine, lab = _cine()
    fig = widgets.slice_frame_viewer(cine, lab, interactive=False, frames=[0, 1])
    assert isinstance(fig, plt.Figure)
    plt.close(fig)


def test_interactive_viewer_calls_the_renderer_with_slider_values():
    pytest.importorskip("ipywidgets")
    cine, lab = _cine()
    calls = []

    def fake(c, z, t, labels=None, layout=None):
        calls.append((z, t))
        assert c.shape == (4, 5, 16, 20) and layout == "zthw"
        assert labels is not None and labels.shape == c.shape
        return None

    v = widgets.slice_frame_viewer(cine, lab, interactive=True, renderer=fake)
    assert isinstance(v, widgets.SliceFrameViewer)
    assert calls == [(2, 0)]  # initial render: middle slice, frame 0
    assert not v.slice_slider.continuous_update and not v.frame_slider.continuous_update
    assert (v.slice_slider.max, v.frame_slider.max) == (3, 4)
    v.slice_slider.value = 1
    v.frame_slider.value = 4
    assert calls[-2:] == [(1, 0), (1, 4)]
    assert v.ui.children[-1] is v.output


def test_interactive_viewer_with_the_real_renderer_keeps_the_last_figure():
    pytest.importorskip("ipywidgets")
    cine, lab = _cine()
    v = widgets.SliceFrameViewer(cine, lab, z=1, t=2, crop=False)
    np.testing.assert_array_equal(v.last_figure.axes[0].get_images()[0].get_array(), cine[:, :, 1, 2].T)
    v.frame_slider.value = 3
    np.testing.assert_array_equal(v.last_figure.axes[0].get_images()[0].get_array(), cine[:, :, 1, 3].T)


def test_index_frame_viewer_drives_any_renderer():
    pytest.importorskip("ipywidgets")
    calls = []

    def render(i, t):
        calls.append((i, t))
        fig, ax = plt.subplots()
        ax.set_title(f"{i}/{t}")
        return fig

    v = widgets.IndexFrameViewer(render, 3, 7, frame=5, labels=("test slice", "frame"))
    assert calls == [(0, 5)] and v.last_figure.axes[0].get_title() == "0/5"
    assert (v.item_slider.max, v.frame_slider.max) == (2, 6) and v.item_slider.description == "test slice"
    assert not plt.fignum_exists(v.last_figure.number)  # shown in the output widget, then closed
    v.item_slider.value = 2
    assert calls[-1] == (2, 5) and v.last_figure.axes[0].get_title() == "2/5"
    with pytest.raises(ValueError, match="frame=7 outside 0..6"):
        widgets.IndexFrameViewer(render, 3, 7, frame=7)
