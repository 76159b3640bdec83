"""Thesis-style figures built from arrays (matplotlib; every function returns a ``Figure``).

Images are in display layout: ``(H, W)`` with row = y and column = x (the landmark convention of
:mod:`cmrkit.strain`), shown with the origin at the top left.

The notebooks and the chapter CLIs call these and hand the figure to
:meth:`cmrkit.report.Report.save_figure`; nothing here reads files or trains models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap

__all__ = [
    "LABEL_CMAP",
    "show",
    "image_grid",
    "landmark_overlay",
    "segmentation_overlay",
    "strain_curves",
    "volume_montage",
]

#: colours for labels 0..3 (transparent background, LV red, myocardium green, RV blue)
LABEL_CMAP = ListedColormap([(0, 0, 0, 0), (0.9, 0.2, 0.2, 0.45), (0.2, 0.8, 0.3, 0.45), (0.2, 0.4, 0.95, 0.45)])


def show(fig: plt.Figure) -> None:
    """Display a figure in the notebook outputs when running in a kernel (papermill included), then
    close it; outside IPython (CLI runs) it only closes it."""
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
    """Tagged frames with Ferdian landmark grids (frames, 2, 168) drawn on top; endocardial ring in red."""
    fig, axes = _axes_grid(len(sequences), len(frames), size=2.0)
    for r, (name, seq) in enumerate(sequences.items()):
        lm = np.asarray(landmarks[name])
        for c, f in enumerate(frames):
            ax = axes[r, c]
            ax.imshow(np.asarray(seq)[f], cmap="gray")
            pts = lm[f].reshape(2, 24, 7)
            ax.scatter(pts[0, :, 1:].ravel(), pts[1, :, 1:].ravel(), s=2, c="yellow")
            ax.scatter(pts[0, :, 0], pts[1, :, 0], s=3, c="red")
            if r == 0:
                ax.set_title(f"frame {f}", fontsize=8)
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
