"""Thesis-style figures built from arrays and numbers (matplotlib), the kit's one plotting module.

* image panels: :func:`image_grid`, :func:`landmark_overlay`, :func:`segmentation_overlay`
  (labels drawn with :data:`LABEL_CMAP`, the colours of :mod:`cmrkit.labels`);
* strain: :func:`strain_curves`, :func:`bullseye_plot` (AHA 17-segment model, numbered as
  :func:`cmrkit.strain.aha_segment`);
* statistics: :func:`bland_altman_plot` (of :func:`cmrkit.stats.bland_altman`),
  :func:`violin_plot` and :func:`box_plot` (grouped distributions, Fig. 4.9 / Fig. 5.3).

Images are in display layout: ``(H, W)`` with row = y and column = x (the landmark convention of
:mod:`cmrkit.strain`), shown with the origin at the top left. Figure builders return the ``Figure``;
the statistical plots draw on a given (or new) ``Axes`` and return it. The notebooks and the chapter
CLIs hand figures to :meth:`cmrkit.report.Report.save_figure`; nothing here reads files or trains
models.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap, to_rgba

from .labels import LABEL_COLOURS
from .stats import as_finite_vector, bland_altman

__all__ = [
    "LABEL_CMAP",
    "show",
    "image_grid",
    "landmark_overlay",
    "segmentation_overlay",
    "label_contours",
    "strain_curves",
    "volume_montage",
    "bullseye_plot",
    "bland_altman_plot",
    "violin_plot",
    "box_plot",
]

#: overlay colours for labels 0..3: transparent background, then :data:`cmrkit.labels.LABEL_COLOURS`
#: (LV red, myocardium green, RV blue) at 45 % opacity; draw with ``vmin=0, vmax=3``
LABEL_CMAP = ListedColormap([(0, 0, 0, 0)] + [to_rgba(c, 0.45) for _, c in sorted(LABEL_COLOURS.items())])

ArrayLike = Any


def show(fig: plt.Figure | None) -> None:
    """Display a figure in the notebook outputs when running in a kernel (papermill included), then
    close it; outside IPython (CLI runs) it only closes it. ``None`` (a figure the run's data set
    could not give, see :meth:`cmrkit.report.Report.skip`) shows nothing."""
    if fig is None:
        return
    try:
        from IPython import get_ipython

        if get_ipython() is not None:
            from IPython.display import display

            display(fig)
    except ImportError:  # pragma: no cover - IPython comes with the notebooks extra
        pass
    plt.close(fig)


def _axes_grid(nrows: int, ncols: int, size: float = 1.6):
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def image_grid(
    rows: Mapping[str, np.ndarray], frames: Sequence[int], *, title: str = "", vmin: float = 0.0, vmax: float = 1.0
) -> plt.Figure:
    """A grid with one row per named sequence (T, H, W) and one column per chosen frame."""
    fig, axes = _axes_grid(len(rows), len(frames))
    for r, (name, seq) in enumerate(rows.items()):
        seq = np.asarray(seq)
        for c, f in enumerate(frames):
            axes[r, c].imshow(seq[f], cmap="gray", vmin=vmin, vmax=vmax)
            if r == 0:
                axes[r, c].set_title(f"frame {f}", fontsize=8)
        axes[r, 0].set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def landmark_overlay(
    sequences: Mapping[str, np.ndarray], landmarks: Mapping[str, np.ndarray], frames: Sequence[int], *, title: str = ""
) -> plt.Figure:
    """Tagged frames with Ferdian landmark grids (frames, 2, 168) drawn on top; endocardial ring in red.

    Every panel keeps the extent of its image: landmarks that a tracker moved off the image (common on
    generated tagging without trackable tags) are clipped, not allowed to widen the axes (which would
    shrink and shift the image); the panel title counts them.
    """
    fig, axes = _axes_grid(len(sequences), len(frames), size=2.0)
    for r, (name, seq) in enumerate(sequences.items()):
        lm = np.asarray(landmarks[name])
        for c, f in enumerate(frames):
            ax = axes[r, c]
            img = np.asarray(seq)[f]
            h, w = img.shape
            ax.imshow(img, cmap="gray")
            pts = lm[f].reshape(2, 24, 7)
            ax.scatter(pts[0, :, 1:].ravel(), pts[1, :, 1:].ravel(), s=2, c="yellow")
            ax.scatter(pts[0, :, 0], pts[1, :, 0], s=3, c="red")
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)  # origin at the top left, as imshow draws it
            x, y = lm[f][0], lm[f][1]
            outside = int(np.sum(~((x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5))))
            lines = [f"frame {f}"] if r == 0 else []
            if outside:
                lines.append(f"{outside} landmarks off the image")
            if lines:
                ax.set_title("\n".join(lines), fontsize=7 if outside else 8)
        axes[r, 0].set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def segmentation_overlay(
    images: Sequence[np.ndarray], labels: Sequence[np.ndarray], titles: Sequence[str], *, title: str = ""
) -> plt.Figure:
    """Images (H, W) with label maps overlaid, one panel each."""
    fig, axes = _axes_grid(1, len(images), size=2.2)
    for ax, img, lab, t in zip(axes[0], images, labels, titles):
        ax.imshow(np.asarray(img), cmap="gray")
        ax.imshow(np.asarray(lab), cmap=LABEL_CMAP, vmin=0, vmax=3, interpolation="nearest")
        ax.set_title(t, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def strain_curves(curves: Mapping[str, np.ndarray], *, ylabel: str, title: str = "", ax=None) -> plt.Figure:
    """Mean curve with a ±1 sd band for each named set of curves (n, frames)."""
    fig, ax = plt.subplots(figsize=(4.5, 3.2)) if ax is None else (ax.figure, ax)
    for name, c in curves.items():
        c = np.asarray(c, dtype=float)
        m, s = np.nanmean(c, axis=0), np.nanstd(c, axis=0)
        x = np.arange(c.shape[1])
        ax.plot(x, m, label=f"{name} (n={c.shape[0]})")
        ax.fill_between(x, m - s, m + s, alpha=0.25)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("frame")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def volume_montage(
    volumes: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
    *,
    title: str = "",
    overlay: bool = True,
    size: float = 1.1,
    vmin: float = 0.0,
    vmax: float = 1.0,
) -> plt.Figure:
    """Every slice of named short-axis volumes, one row per volume (slices left to right).

    ``volumes`` maps a name to ``(image, labels)`` with ``image`` ``(X, Y, Z)`` in the kit's axis order
    (shown with row = y) and ``labels`` ``(X, Y, Z)`` or None. With ``overlay`` a volume with labels
    gets a second row with the labels drawn over the image (:data:`LABEL_CMAP`).
    """
    rows = []
    for name, (img, lab) in volumes.items():
        img = np.asarray(img)
        if img.ndim != 3:
            raise ValueError(f"volume {name!r}: expected (X, Y, Z), got shape {img.shape}")
        rows.append((name, img, None))
        if overlay and lab is not None:
            rows.append(("+ mask", img, np.asarray(lab)))
    if not rows:
        raise ValueError("volume_montage: no volumes")
    nz = max(r[1].shape[2] for r in rows)
    fig, axes = _axes_grid(len(rows), nz, size=size)
    for r, (name, img, lab) in enumerate(rows):
        for z in range(nz):
            ax = axes[r, z]
            if z >= img.shape[2]:
                ax.axis("off")
                continue
            ax.imshow(img[:, :, z].T, cmap="gray", vmin=vmin, vmax=vmax)
            if lab is not None:
                ax.imshow(lab[:, :, z].T, cmap=LABEL_CMAP, vmin=0, vmax=3, interpolation="nearest")
            if r == 0:
                ax.set_title(f"slice {z}", fontsize=7)
        axes[r, 0].set_ylabel(name, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def label_contours(ax: Any, labels: np.ndarray, *, lw: float = 0.8, **contour_kw: Any) -> None:
    """Outline every foreground label of a display-layout label map ``(H, W)`` on ``ax`` in its
    :data:`cmrkit.labels.LABEL_COLOURS` colour (a label that fills the whole map has no outline)."""
    lab = np.asarray(labels)
    for k, col in LABEL_COLOURS.items():
        m = lab == k
        if m.any() and not m.all():
            ax.contour(m.astype(float), levels=[0.5], colors=[col], linewidths=lw, **contour_kw)


# ------------------------------------------------------------------------------------------ AHA bullseye
def _segment_geometry(seg: int) -> tuple[float, float, float, float]:
    """``(r_inner, r_outer, theta_start_deg, theta_end_deg)`` of a segment in the bullseye."""
    if 1 <= seg <= 12:
        k = (seg - 1) % 6
        r0 = 3.0 if seg <= 6 else 2.0
        return r0, r0 + 1.0, 60.0 + 60.0 * k, 120.0 + 60.0 * k
    if 13 <= seg <= 16:
        k = seg - 13
        return 1.0, 2.0, 45.0 + 90.0 * k, 135.0 + 90.0 * k
    if seg == 17:
        return 0.0, 1.0, 0.0, 360.0
    raise ValueError(f"AHA segment must be 1..17, got {seg}")


def bullseye_plot(
    values: Mapping[int, float] | Sequence[float],
    *,
    ax: Any = None,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    label: str = "",
    title: str = "",
    fmt: str = "{:.2f}",
    highlight: Sequence[int] = (),
    colorbar: bool = True,
) -> plt.Figure:
    """AHA 17-segment bullseye (Cerqueira et al. 2002): rings basal (outer), mid, apical, apex (centre).

    Parameters
    ----------
    values
        ``{segment: value}`` or a length-17 sequence (segment ``i + 1`` at index ``i``); missing or
        NaN segments are grey and marked ``n/a``.
    highlight
        Segments outlined in black (e.g. the dysfunctional ones).
    """
    from matplotlib.colors import Normalize
    from matplotlib.patches import Wedge

    if isinstance(values, Mapping):
        vals = {int(k): float(v) for k, v in values.items()}
    else:
        seq = list(values)
        if len(seq) != 17:
            raise ValueError(f"values: expected 17 values (segments 1-17), got {len(seq)}")
        vals = {i + 1: float(v) for i, v in enumerate(seq)}
    bad = [k for k in vals if not 1 <= k <= 17]
    if bad:
        raise ValueError(f"values: segments must be 1..17, got {bad}")
    finite = [v for v in vals.values() if np.isfinite(v)]
    vmin = vmin if vmin is not None else (min(finite) if finite else 0.0)
    vmax = vmax if vmax is not None else (max(finite) if finite else 1.0)
    norm = Normalize(vmin, vmax)
    cm = plt.get_cmap(cmap)
    if ax is None:
        fig, ax = plt.subplots(figsize=(3.4, 3.4))
    else:
        fig = ax.figure
    for seg in range(1, 18):
        r0, r1, t0, t1 = _segment_geometry(seg)
        v = vals.get(seg, float("nan"))
        col = cm(norm(v)) if np.isfinite(v) else (0.85, 0.85, 0.85, 1.0)
        w = Wedge((0, 0), r1, t0, t1, width=r1 - r0, facecolor=col, edgecolor="white", lw=1.2)
        ax.add_patch(w)
        if seg in highlight:
            ax.add_patch(Wedge((0, 0), r1, t0, t1, width=r1 - r0, fill=False, edgecolor="k", lw=1.6, zorder=3))
        rm = 0.0 if seg == 17 else (r0 + r1) / 2
        tm = math.radians((t0 + t1) / 2)
        xt, yt = rm * math.cos(tm), rm * math.sin(tm)
        rgba = col if np.isfinite(v) else (0.85, 0.85, 0.85, 1.0)
        lum = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2]
        txt = f"{seg}\n" + (fmt.format(v) if np.isfinite(v) else "n/a")
        ax.text(xt, yt, txt, ha="center", va="center", fontsize=6.5, color="k" if lum > 0.5 else "w", linespacing=0.9)
    ax.set_xlim(-4.3, 4.3)
    ax.set_ylim(-4.3, 4.3)
    ax.set_aspect("equal")
    ax.axis("off")
    for ang, name in ((90, "anterior"), (180, "septal"), (270, "inferior"), (0, "lateral")):
        r = 4.25
        ax.text(
            r * math.cos(math.radians(ang)),
            r * math.sin(math.radians(ang)),
            name,
            fontsize=6.5,
            color="0.3",
            ha="center",
            va="center",
            rotation=(ang - 90) if ang in (0, 180) else 0,
        )
    if title:
        ax.set_title(title, fontsize=9)
    if colorbar:
        sm = plt.cm.ScalarMappable(norm=norm, cmap=cm)
        cb = fig.colorbar(sm, ax=ax, fraction=0.046, pad=0.02, shrink=0.8)
        cb.ax.tick_params(labelsize=7)
        if label:
            cb.set_label(label, fontsize=8)
    return fig


# ------------------------------------------------------------------------------------------ statistics
def bland_altman_plot(
    a: ArrayLike,
    b: ArrayLike,
    *,
    ax: Any = None,
    k: float = 1.96,
    title: str | None = None,
    xlabel: str = "Mean of the two measurements",
    ylabel: str = "Difference (a - b)",
    annotate: bool = True,
    digits: int = 3,
    scatter_kw: Mapping[str, Any] | None = None,
) -> Any:
    """Scatter of differences against means with the bias (solid) and the limits of agreement
    (dashed), as thesis Fig. 4.8. Returns the ``Axes``; the :class:`cmrkit.stats.BlandAltman` result
    (:func:`cmrkit.stats.bland_altman`) is in ``ax.bland_altman``."""
    res = bland_altman(a, b, k=k)
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.5))
    kw = {"s": 14, "alpha": 0.7, "color": "tab:blue", "edgecolors": "none", **(scatter_kw or {})}
    ax.scatter(res.mean, res.diff, **kw)
    ax.axhline(res.bias, color="k", lw=1.2, ls="-")
    for y in (res.loa_low, res.loa_high):
        ax.axhline(y, color="tab:red", lw=1.0, ls="--")
    if annotate:
        tr = ax.get_yaxis_transform()
        ax.text(1.0, res.bias, f" bias {res.bias:.{digits}f}", transform=tr, va="bottom", ha="right", fontsize=8)
        ax.text(
            1.0,
            res.loa_high,
            f" +{k:g} SD {res.loa_high:.{digits}f}",
            transform=tr,
            va="bottom",
            ha="right",
            fontsize=8,
        )
        ax.text(
            1.0, res.loa_low, f" -{k:g} SD {res.loa_low:.{digits}f}", transform=tr, va="top", ha="right", fontsize=8
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.bland_altman = res
    return ax


def _groups(
    data: Mapping[str, Any] | Sequence[Any], labels: Sequence[str] | None
) -> tuple[list[str], list[str] | None, list[list[np.ndarray]]]:
    """Normalise {x: values} / {x: {hue: values}} / [values, ...] into (x labels, hue labels, arrays[x][hue])."""
    if isinstance(data, Mapping):
        xs = [str(k) for k in data]
        vals = list(data.values())
    else:
        vals = list(data)
        xs = list(labels) if labels is not None else [str(i) for i in range(len(vals))]
    if not vals:
        raise ValueError("no groups to plot")
    if len(xs) != len(vals):
        raise ValueError(f"labels has {len(xs)} entries for {len(vals)} groups")
    if all(isinstance(v, Mapping) for v in vals):
        hues = list(dict.fromkeys(str(h) for v in vals for h in v))
        arrs = [[as_finite_vector(v[h], f"{x}/{h}") if h in v else np.empty(0) for h in hues] for x, v in zip(xs, vals)]
        return xs, hues, arrs
    if any(isinstance(v, Mapping) for v in vals):
        raise ValueError("mix of grouped ({hue: values}) and plain groups")
    return xs, None, [[as_finite_vector(v, x)] for x, v in zip(xs, vals)]


def _grouped_plot(
    kind: str,
    data: Mapping[str, Any] | Sequence[Any],
    *,
    ax: Any,
    labels: Sequence[str] | None,
    colors: Sequence[str] | None,
    width: float,
    ylabel: str | None,
    title: str | None,
    legend: bool,
    **kw: Any,
) -> Any:
    from matplotlib.patches import Patch

    xs, hues, arrs = _groups(data, labels)
    nh = 1 if hues is None else len(hues)
    cycle = list(colors) if colors is not None else plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if ax is None:
        _, ax = plt.subplots(figsize=(max(3.5, 1.2 * len(xs) * nh), 3.5))
    w = width / nh
    for h in range(nh):
        pos = [i + (h - (nh - 1) / 2) * w for i in range(len(xs))]
        data_h = [arrs[i][h] for i in range(len(xs))]
        keep = [j for j, a in enumerate(data_h) if a.size]
        if not keep:
            continue
        color = cycle[h % len(cycle)]
        pts, vals = [pos[j] for j in keep], [data_h[j] for j in keep]
        if kind == "violin":
            parts = ax.violinplot(vals, positions=pts, widths=w * 0.9, showmedians=False, showextrema=False, **kw)
            for body in parts["bodies"]:
                body.set_facecolor(color)
                body.set_edgecolor("k")
                body.set_alpha(0.6)
            for p, v in zip(pts, vals):  # Fig. 4.9 style: IQR bar and white median dot
                q1, med, q3 = np.percentile(v, [25, 50, 75])
                ax.vlines(p, q1, q3, color="k", lw=4)
                ax.scatter([p], [med], color="white", s=12, zorder=3)
        else:
            bp = ax.boxplot(vals, positions=pts, widths=w * 0.8, patch_artist=True, manage_ticks=False, **kw)
            for box in bp["boxes"]:
                box.set_facecolor(color)
                box.set_alpha(0.7)
            for med in bp["medians"]:
                med.set_color("k")
    ax.set_xticks(range(len(xs)))
    ax.set_xticklabels(xs)
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if legend and hues is not None:
        ax.legend(
            handles=[Patch(facecolor=cycle[h % len(cycle)], alpha=0.6, label=hues[h]) for h in range(nh)],
            frameon=False,
            fontsize=8,
        )
    return ax


def violin_plot(
    data: Mapping[str, Any] | Sequence[Any],
    *,
    ax: Any = None,
    labels: Sequence[str] | None = None,
    colors: Sequence[str] | None = None,
    width: float = 0.8,
    ylabel: str | None = None,
    title: str | None = None,
    legend: bool = True,
    **kw: Any,
) -> Any:
    """Violins per group, optionally split by a second factor drawn side by side.

    ``data``: ``{"Basal": values, ...}`` or ``{"Basal": {"Original": v1, "Generated": v2}, ...}``
    (Fig. 4.9), or a list of arrays with ``labels``. Each violin shows the KDE (matplotlib), the
    interquartile range (black bar) and the median (white dot). Returns the ``Axes``.
    """
    return _grouped_plot(
        "violin",
        data,
        ax=ax,
        labels=labels,
        colors=colors,
        width=width,
        ylabel=ylabel,
        title=title,
        legend=legend,
        **kw,
    )


def box_plot(
    data: Mapping[str, Any] | Sequence[Any],
    *,
    ax: Any = None,
    labels: Sequence[str] | None = None,
    colors: Sequence[str] | None = None,
    width: float = 0.8,
    ylabel: str | None = None,
    title: str | None = None,
    legend: bool = True,
    **kw: Any,
) -> Any:
    """Box plots per group, optionally split by a second factor (Fig. 5.3:
    ``{"LVV": {"Real": v, "n=1000": g1, "n=2000": g2, "n=4000": g4}, ...}``). Whiskers at 1.5 IQR
    (matplotlib default). Returns the ``Axes``."""
    return _grouped_plot(
        "box", data, ax=ax, labels=labels, colors=colors, width=width, ylabel=ylabel, title=title, legend=legend, **kw
    )
