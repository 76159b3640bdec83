"""Interactive viewers for the notebooks: a slice x frame cine viewer (ipywidgets) with a static twin.

Design: every view is a **pure render function** returning a matplotlib ``Figure``
(:func:`render_slice_frame`, :func:`slice_montage`); the ipywidgets UIs (:class:`SliceFrameViewer`
for a cine, :class:`IndexFrameViewer` for any ``render(item, frame)``) are thin shells that call
the renderer when a slider changes and are only built when asked for (``interactive=True``).
Headless runs (papermill, the CLI) get a static figure, which is displayed and saved like any other
figure, never only inside an ipywidgets ``Output`` (whose content nbclient keeps in the widget state,
not in the cell outputs).

Array layouts
-------------
``layout="xyzt"`` (default) is the kit's :class:`cmrkit.io.Subject` convention ``cine[x, y, z, t]``;
``layout="zthw"`` is ``cine[z, t, row, column]``. Images are shown with row = y and column = x and
the origin at the top left, as in :mod:`cmrkit.figures`. Labels follow the kit convention of
:mod:`cmrkit.labels` (0 background, 1 LV blood pool, 2 LV myocardium, 3 RV blood pool) and are drawn
with :data:`cmrkit.figures.LABEL_CMAP`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import matplotlib.pyplot as plt
import numpy as np

from .figures import LABEL_CMAP

__all__ = [
    "to_zthw",
    "display_window",
    "label_bbox",
    "render_slice_frame",
    "slice_montage",
    "SliceFrameViewer",
    "IndexFrameViewer",
    "slice_frame_viewer",
]

Layout = Literal["xyzt", "zthw"]


def to_zthw(array: Any, layout: Layout = "xyzt", name: str = "cine") -> np.ndarray:
    """Return a 4-D array as ``(Z, T, H, W)`` (row = y, column = x).

    Parameters
    ----------
    array
        ``(X, Y, Z, T)`` for ``layout="xyzt"`` or ``(Z, T, H, W)`` for ``layout="zthw"``.
    layout
        Axis order of ``array``; it is never guessed from the shape.
    name
        Argument name used in error messages.
    """
    arr = np.asarray(array)
    if arr.ndim != 4:
        raise ValueError(
            f"{name}: expected a 4-D array ({'X, Y, Z, T' if layout == 'xyzt' else 'Z, T, H, W'}), "
            f"got shape {arr.shape}"
        )
    if layout == "xyzt":
        return np.transpose(arr, (2, 3, 1, 0))
    if layout == "zthw":
        return arr
    raise ValueError(f"layout: expected 'xyzt' or 'zthw', got {layout!r}")


def display_window(cine: Any, percentiles: tuple[float, float] = (0.5, 99.5)) -> tuple[float, float]:
    """A robust grey-level window ``(vmin, vmax)`` shared by all slices and frames of a cine."""
    a = np.asarray(cine, dtype=float)
    a = a[np.isfinite(a)]
    if a.size == 0:
        raise ValueError("cine: no finite values")
    lo, hi = np.percentile(a, percentiles)
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def label_bbox(labels_zthw: np.ndarray, margin_px: int = 8) -> tuple[slice, slice] | None:
    """Row and column slices of the box holding every non-zero label (all slices and frames),
    enlarged by ``margin_px`` and made square; ``None`` when there is no label."""
    lab = np.asarray(labels_zthw)
    rows = np.flatnonzero(np.any(lab != 0, axis=tuple(i for i in range(lab.ndim) if i != lab.ndim - 2)))
    cols = np.flatnonzero(np.any(lab != 0, axis=tuple(range(lab.ndim - 1))))
    if rows.size == 0 or cols.size == 0:
        return None
    h, w = lab.shape[-2:]
    r0, r1, c0, c1 = rows[0] - margin_px, rows[-1] + 1 + margin_px, cols[0] - margin_px, cols[-1] + 1 + margin_px
    side = max(r1 - r0, c1 - c0)
    rc, cc = (r0 + r1) / 2.0, (c0 + c1) / 2.0
    r0, c0 = int(round(rc - side / 2.0)), int(round(cc - side / 2.0))
    r0, c0 = min(max(r0, 0), max(h - side, 0)), min(max(c0, 0), max(w - side, 0))
    return slice(r0, min(r0 + side, h)), slice(c0, min(c0 + side, w))


def _check_pair(cine: Any, labels: Any, layout: Layout) -> tuple[np.ndarray, np.ndarray | None]:
    c = to_zthw(cine, layout, "cine")
    lab = None
    if labels is not None:
        lab = to_zthw(labels, layout, "labels")
        if lab.shape != c.shape:
            raise ValueError(f"labels: shape {lab.shape} (as Z, T, H, W) differs from cine {c.shape}")
    return c, lab


def _check_index(value: int, n: int, name: str) -> int:
    v = int(value)
    if not 0 <= v < n:
        raise ValueError(f"{name}={value} outside 0..{n - 1}")
    return v


def render_slice_frame(
    cine: Any,
    z: int,
    t: int,
    labels: Any = None,
    *,
    layout: Layout = "xyzt",
    window: tuple[float, float] | None = None,
    crop: bool = False,
    ax: Any = None,
    title: str | None = None,
) -> plt.Figure:
    """One short-axis slice ``z`` at frame ``t``, with the labels overlaid when given.

    Parameters
    ----------
    cine, labels
        4-D arrays in ``layout`` (labels optional, same shape).
    z, t
        Slice and frame (0-based).
    window
        Grey-level ``(vmin, vmax)``; default :func:`display_window` of the whole cine, so frames and
        slices share one scale.
    crop
        Crop to the labelled region (:func:`label_bbox`) when labels are given.
    ax
        Draw into this axes instead of a new figure.
    """
    c, lab = _check_pair(cine, labels, layout)
    z = _check_index(z, c.shape[0], "z")
    t = _check_index(t, c.shape[1], "t")
    vmin, vmax = window or display_window(c)
    box = label_bbox(lab) if (crop and lab is not None) else None
    rs, cs = box if box is not None else (slice(None), slice(None))
    if ax is None:
        fig, ax = plt.subplots(figsize=(3.6, 3.6))
    else:
        fig = ax.figure
    ax.imshow(c[z, t][rs, cs], cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
    if lab is not None:
        ax.imshow(lab[z, t][rs, cs], cmap=LABEL_CMAP, vmin=0, vmax=3, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title if title is not None else f"slice {z}, frame {t}", fontsize=9)
    return fig


def slice_montage(
    cine: Any,
    labels: Any = None,
    *,
    layout: Layout = "xyzt",
    slices: Sequence[int] | None = None,
    frames: Sequence[int] | None = None,
    frame_names: Sequence[str] | None = None,
    max_slices: int = 8,
    crop: bool = True,
    title: str = "",
    size: float = 1.35,
) -> plt.Figure:
    """Static slice x frame montage: one row per slice (base at the top), one column per frame.

    Parameters
    ----------
    slices
        Slice indices; default up to ``max_slices`` evenly spaced over the stack (labelled slices
        only when labels are given).
    frames
        Frame indices; default four evenly spaced frames starting at frame 0.
    frame_names
        Column titles (e.g. ``["ED", "ES"]``); default ``"frame t"``.
    crop
        Crop every panel to the labelled region (with labels).
    """
    c, lab = _check_pair(cine, labels, layout)
    nz, nt = c.shape[:2]
    if slices is None:
        cand = np.arange(nz)
        if lab is not None:
            has = np.flatnonzero(np.any(lab != 0, axis=(1, 2, 3)))
            cand = has if has.size else cand
        take = np.unique(np.round(np.linspace(0, len(cand) - 1, min(max_slices, len(cand)))).astype(int))
        slices = [int(cand[i]) for i in take]
    if frames is None:
        frames = sorted({int(round(f)) for f in np.linspace(0, nt, 4, endpoint=False)})
    slices = [_check_index(s, nz, "slices") for s in slices]
    frames = [_check_index(f, nt, "frames") for f in frames]
    if frame_names is not None and len(frame_names) != len(frames):
        raise ValueError(f"frame_names: {len(frame_names)} names for {len(frames)} frames")
    window = display_window(c)
    fig, axes = plt.subplots(
        len(slices), len(frames), figsize=(size * len(frames) + 0.6, size * len(slices) + 0.5), squeeze=False
    )
    for i, z in enumerate(slices):
        for j, t in enumerate(frames):
            name = frame_names[j] if frame_names is not None else f"frame {t}"
            render_slice_frame(
                c, z, t, lab, layout="zthw", window=window, crop=crop, ax=axes[i, j], title=name if i == 0 else ""
            )
        axes[i, 0].set_ylabel(f"slice {z}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()) if title else None)
    return fig


class SliceFrameViewer:
    """ipywidgets UI: a slice slider and a frame slider (``continuous_update=False``) driving a renderer.

    The renderer is called as ``renderer(cine, z, t, labels=labels, layout=layout)`` and must return
    a matplotlib figure (default :func:`render_slice_frame`); the figure is shown in ``output`` and
    closed. Attributes ``slice_slider``, ``frame_slider``, ``output`` and ``ui`` (the whole box) are
    public so a notebook (or a test) can drive the viewer.
    """

    def __init__(
        self,
        cine: Any,
        labels: Any = None,
        *,
        layout: Layout = "xyzt",
        renderer: Callable[..., Any] | None = None,
        z: int | None = None,
        t: int = 0,
        crop: bool = True,
    ) -> None:
        import ipywidgets as W

        c, lab = _check_pair(cine, labels, layout)
        self.cine, self.labels, self.layout = c, lab, "zthw"
        self.renderer = renderer or render_slice_frame
        self.crop = crop
        nz, nt = c.shape[:2]
        z0 = nz // 2 if z is None else _check_index(z, nz, "z")
        t0 = _check_index(t, nt, "t")
        self.slice_slider = W.IntSlider(value=z0, min=0, max=nz - 1, description="slice", continuous_update=False)
        self.frame_slider = W.IntSlider(value=t0, min=0, max=nt - 1, description="frame", continuous_update=False)
        self.output = W.Output()
        self.ui = W.VBox([W.HBox([self.slice_slider, self.frame_slider]), self.output])
        self.slice_slider.observe(self._on_change, names="value")
        self.frame_slider.observe(self._on_change, names="value")
        self.last_figure: Any = None
        self.update()

    def _on_change(self, _change: Any = None) -> None:
        self.update()

    def update(self) -> Any:
        """Render the current slider position into ``output``; returns the renderer's figure."""
        kwargs: dict[str, Any] = {"labels": self.labels, "layout": self.layout}
        if self.renderer is render_slice_frame:
            kwargs["crop"] = self.crop
        fig = self.renderer(self.cine, self.slice_slider.value, self.frame_slider.value, **kwargs)
        self.last_figure = fig
        with self.output:
            from IPython.display import clear_output, display

            clear_output(wait=True)
            if fig is not None:
                display(fig)
        if isinstance(fig, plt.Figure):
            plt.close(fig)
        return fig

    def _ipython_display_(self) -> None:  # pragma: no cover - needs a front end
        from IPython.display import display

        display(self.ui)


class IndexFrameViewer:
    """ipywidgets UI: an item slider and a frame slider (``continuous_update=False``) driving any
    renderer ``render(item, frame) -> Figure`` (e.g. the test slices of a chapter and their frames).

    The figure is shown in ``output`` and closed; ``item_slider``, ``frame_slider``, ``output``, ``ui``
    and ``last_figure`` are public so a notebook (or a test) can drive the viewer. ``labels`` are the
    two slider descriptions.
    """

    def __init__(
        self,
        render: Callable[[int, int], Any],
        n_items: int,
        n_frames: int,
        *,
        item: int = 0,
        frame: int = 0,
        labels: tuple[str, str] = ("item", "frame"),
    ) -> None:
        import ipywidgets as W

        if int(n_items) < 1 or int(n_frames) < 1:
            raise ValueError(f"IndexFrameViewer needs at least one item and one frame, got {n_items} and {n_frames}")
        self.render = render
        self.item_slider = W.IntSlider(
            value=_check_index(item, int(n_items), "item"),
            min=0,
            max=int(n_items) - 1,
            description=labels[0],
            continuous_update=False,
        )
        self.frame_slider = W.IntSlider(
            value=_check_index(frame, int(n_frames), "frame"),
            min=0,
            max=int(n_frames) - 1,
            description=labels[1],
            continuous_update=False,
        )
        self.output = W.Output()
        self.ui = W.VBox([W.HBox([self.item_slider, self.frame_slider]), self.output])
        self.item_slider.observe(self._on_change, names="value")
        self.frame_slider.observe(self._on_change, names="value")
        self.last_figure: Any = None
        self.update()

    def _on_change(self, _change: Any = None) -> None:
        self.update()

    def update(self) -> Any:
        """Render the current slider position into ``output``; returns the renderer's figure."""
        fig = self.render(self.item_slider.value, self.frame_slider.value)
        self.last_figure = fig
        with self.output:
            from IPython.display import clear_output, display

            clear_output(wait=True)
            if fig is not None:
                display(fig)
        if isinstance(fig, plt.Figure):
            plt.close(fig)
        return fig

    def _ipython_display_(self) -> None:  # pragma: no cover - needs a front end
        from IPython.display import display

        display(self.ui)


def slice_frame_viewer(
    cine: Any,
    labels: Any = None,
    *,
    interactive: bool = False,
    layout: Layout = "xyzt",
    renderer: Callable[..., Any] | None = None,
    **montage_kwargs: Any,
) -> SliceFrameViewer | plt.Figure:
    """Slice x frame viewer of a cine stack.

    With ``interactive=True`` returns a :class:`SliceFrameViewer` (display it in a notebook); otherwise
    (headless, papermill, CLI) the static :func:`slice_montage` figure, which the caller saves and
    displays. ``montage_kwargs`` go to :func:`slice_montage` (``slices``, ``frames``, ``frame_names``,
    ``crop``, ``title``...).
    """
    if interactive:
        return SliceFrameViewer(cine, labels, layout=layout, renderer=renderer)
    return slice_montage(cine, labels, layout=layout, **montage_kwargs)
