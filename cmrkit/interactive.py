"""Interactive plotly views for the notebooks: curves to hover over, distributions to pick apart, and a
3-D heart to turn around.

The static matplotlib figures stay the report's artefacts (:mod:`cmrkit.figures`, PNG through
:meth:`cmrkit.report.Report.save_figure`); these views are for a person exploring a notebook in
JupyterLab (``INTERACTIVE = True``, the notebooks' default), where plotly renders through the
``jupyterlab-plotly`` extension that ships with the ``plotly`` package. Every function takes arrays
or frames and returns a ``plotly.graph_objects.Figure``; nothing reads files or trains models.

- :func:`volume_curves` -- ventricular volumes over the cycle with ED and ES marked;
- :func:`strain_curves` -- one line per slice or subject (hover names them) and the group mean;
- :func:`phenotype_distributions` -- phenotypes by group (e.g. sex) as box plots with every subject,
  beside reference ranges;
- :func:`mask_surface` and :func:`heart_mesh` -- surfaces of a label volume (marching cubes of
  scikit-image, Lorensen & Cline 1987, on the smoothed mask) as plotly ``Mesh3d``; a 4-D label volume
  gives one view per frame behind a slider. Chapters 5-6 show generated hearts with the same call.

Array layouts follow the kit: label volumes are ``labels[x, y, z]`` (``(X, Y, Z)`` or ``(X, Y, Z, T)``)
with the kit's labels (0 background, 1 LV blood pool, 2 LV myocardium, 3 RV blood pool).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "HEART_STRUCTURES",
    "volume_curves",
    "strain_curves",
    "phenotype_distributions",
    "mask_surface",
    "heart_mesh",
]

#: label -> (name, colour, opacity) of the heart structures :func:`heart_mesh` draws by default
HEART_STRUCTURES: dict[int, tuple[str, str, float]] = {
    1: ("LV blood pool", "#d62728", 0.35),
    2: ("LV myocardium", "#2ca02c", 0.6),
    3: ("RV blood pool", "#1f77b4", 0.35),
}
_PALETTE = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _go() -> Any:
    from .utils import optional_import

    return optional_import("plotly.graph_objects", extra="notebooks")


def _time_axis(n: int, frame_ms: float | None) -> tuple[np.ndarray, str]:
    if frame_ms is None:
        return np.arange(n, dtype=float), "frame"
    if not (np.isfinite(frame_ms) and frame_ms > 0):
        raise ValueError(f"frame_ms must be a positive number of milliseconds, got {frame_ms!r}")
    return np.arange(n) * float(frame_ms), "time after the R wave (ms)"


def volume_curves(
    volumes: Mapping[str, Any],
    *,
    frame_ms: float | None = None,
    ed: int | None = None,
    es: int | None = None,
    units: str = "mL",
    masses: Sequence[str] = ("LVM",),
    title: str = "",
) -> Any:
    """Volume of each structure over the cardiac cycle, with ED and ES marked.

    Parameters
    ----------
    volumes
        ``{"LV": (T,), "MYO": (T,), "RV": (T,), "LVM": (T,)}`` (any names), e.g.
        :func:`cmrkit.clinical.volume_curve`.
    frame_ms
        Time between frames; the x axis is in ms when given, in frames otherwise.
    ed, es
        Frames marked with a vertical line.
    masses
        Keys holding a mass in g rather than a volume (``LVM``): drawn dashed on a second y axis.
    """
    go = _go()
    if not volumes:
        raise ValueError("volumes: no curve to draw")
    curves = {str(k): np.asarray(v, dtype=float).reshape(-1) for k, v in volumes.items()}
    lengths = {len(v) for v in curves.values()}
    if len(lengths) != 1:
        raise ValueError(f"volumes: curves of different lengths {sorted(lengths)}")
    n = lengths.pop()
    x, xlabel = _time_axis(n, frame_ms)
    fig = go.Figure()
    has_mass = False
    for i, (name, v) in enumerate(curves.items()):
        mass = name in masses
        has_mass |= mass
        unit = "g" if mass else units
        fig.add_trace(
            go.Scatter(
                x=x,
                y=v,
                mode="lines+markers",
                name=f"{name} ({unit})",
                yaxis="y2" if mass else "y",
                line={"color": _PALETTE[i % len(_PALETTE)], "dash": "dash" if mass else "solid"},
                hovertemplate=f"{name}: %{{y:.1f}} {unit}<extra></extra>",
            )
        )
    for frame, label in ((ed, "ED"), (es, "ES")):
        if frame is None:
            continue
        if not 0 <= int(frame) < n:
            raise ValueError(f"{label} frame {frame} outside 0..{n - 1}")
        fig.add_vline(x=float(x[int(frame)]), line_dash="dot", line_color="black", annotation_text=label)
    fig.update_layout(
        title=title or None,
        xaxis_title=xlabel,
        yaxis_title=f"volume ({units})",
        yaxis_rangemode="tozero",  # from zero, as the static figure: relative changes read true
        hovermode="x unified",
        template="plotly_white",
        height=380,
        margin={"l": 60, "r": 60, "t": 50 if title else 20, "b": 50},
        legend={"x": 1.08},
    )
    if has_mass:
        fig.update_layout(
            yaxis2={"title": "mass (g)", "overlaying": "y", "side": "right", "showgrid": False, "rangemode": "tozero"}
        )
    return fig


def strain_curves(
    curves: Mapping[str, Any],
    *,
    names: Sequence[str] | None = None,
    frame_ms: float | None = None,
    es: Sequence[int] | int | None = None,
    ylabel: str = "strain",
    title: str = "",
) -> Any:
    """Strain over the cycle: a thin line per slice (hover shows its name) and a bold mean per group.

    Parameters
    ----------
    curves
        ``{group: (n, T) or (T,)}``, e.g. ``{"original": Ecc_orig, "generated": Ecc_gen, "truth": ...}``;
        NaN frames (lost landmarks) are gaps. Clicking a legend entry hides a group.
    names
        One name per row (``n``), shown on hover (e.g. ``"PH0003 mid"``).
    es
        ES frame per row (or one for all): a marker on each line.
    """
    go = _go()
    if not curves:
        raise ValueError("curves: no group to draw")
    groups = {}
    for k, v in curves.items():
        a = np.asarray(v, dtype=float)
        if a.ndim == 1:
            a = a[None]
        if a.ndim != 2:
            raise ValueError(f"curves[{k!r}]: expected (n, T) or (T,), got shape {a.shape}")
        groups[str(k)] = a
    shapes = {a.shape for a in groups.values()}
    if len(shapes) != 1:
        raise ValueError(f"curves: groups differ in shape {sorted(shapes)}")
    n, t = shapes.pop()
    if names is not None and len(names) != n:
        raise ValueError(f"names: {len(names)} names for {n} rows")
    row_names = [str(s) for s in names] if names is not None else [f"row {i}" for i in range(n)]
    es_rows = None if es is None else np.broadcast_to(np.asarray(es, dtype=int), (n,))
    x, xlabel = _time_axis(t, frame_ms)
    fig = go.Figure()
    for g, (group, a) in enumerate(groups.items()):
        colour = _PALETTE[g % len(_PALETTE)]
        for i in range(n):
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=a[i],
                    mode="lines",
                    line={"color": colour, "width": 1},
                    opacity=0.35,
                    legendgroup=group,
                    showlegend=False,
                    name=f"{group}: {row_names[i]}",
                    hovertemplate=f"{group}, {row_names[i]}<br>%{{y:.3f}} at {xlabel} %{{x:.0f}}<extra></extra>",
                )
            )
        with np.errstate(all="ignore"):
            mean = np.nanmean(a, axis=0) if np.isfinite(a).any() else np.full(t, np.nan)
        fig.add_trace(
            go.Scatter(
                x=x,
                y=mean,
                mode="lines",
                line={"color": colour, "width": 3},
                legendgroup=group,
                name=f"{group} (mean of {n})",
                hovertemplate=f"{group} mean: %{{y:.3f}}<extra></extra>",
            )
        )
        if es_rows is not None:
            ok = (es_rows >= 0) & (es_rows < t)
            fig.add_trace(
                go.Scatter(
                    x=x[es_rows[ok]],
                    y=a[np.flatnonzero(ok), es_rows[ok]],
                    mode="markers",
                    marker={"color": colour, "size": 6, "symbol": "x"},
                    legendgroup=group,
                    showlegend=False,
                    name=f"{group} at ES",
                    hovertext=[row_names[i] for i in np.flatnonzero(ok)],
                    hovertemplate=f"{group} at ES, %{{hovertext}}: %{{y:.3f}}<extra></extra>",
                )
            )
    fig.add_hline(y=0, line_color="black", line_width=0.5)
    fig.update_layout(
        title=title or None,
        xaxis_title=xlabel,
        yaxis_title=ylabel,
        template="plotly_white",
        height=400,
        margin={"l": 60, "r": 20, "t": 50 if title else 20, "b": 50},
    )
    return fig


def phenotype_distributions(
    values: Any,
    columns: Mapping[str, str] | Sequence[str],
    *,
    by: str | None = "sex",
    group_names: Mapping[Any, str] | None = None,
    reference: Any = None,
    id_column: str = "subject_id",
    n_cols: int = 3,
    title: str = "",
) -> Any:
    """Phenotypes by group as box plots showing every subject (hover: the subject), with reference ranges.

    Parameters
    ----------
    values
        A ``pandas.DataFrame``: one row per subject, one column per phenotype, the ``by`` column and
        (optionally) ``id_column``.
    columns
        The phenotype columns to show: a sequence, or ``{column: axis title}``.
    by
        Column that splits the subjects (``None``: one group).
    group_names
        Display names of the ``by`` values (e.g. ``{0: "female", 1: "male"}``); values without a name
        are shown as they are.
    reference
        Optional frame with columns ``phenotype``, the group column (``sex`` when ``by="sex"``, values
        equal to the display names), ``ref_mean``, ``ref_sd`` and/or ``range_lo``, ``range_hi``
        (:func:`cmrkit.metrics.realism.phenotype_comparison`'s table): drawn beside each group as the range
        (``range_lo``..``range_hi``, else mean ± 1.96 sd) with its mean.
    """
    import pandas as pd

    go = _go()
    from plotly.subplots import make_subplots

    df = pd.DataFrame(values)
    cols = dict(columns) if isinstance(columns, Mapping) else {c: c for c in columns}
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"values has no column(s) {missing}; it has {list(df.columns)}")
    if not cols:
        raise ValueError("columns: no phenotype to show")
    if by is not None and by not in df.columns:
        raise ValueError(f"values has no column {by!r} to split by")
    names = dict(group_names or {})
    labels = df[by].map(lambda v: names.get(v, str(v))) if by is not None else pd.Series(["all"] * len(df))
    groups = list(dict.fromkeys(labels))
    ids = df[id_column].astype(str).tolist() if id_column in df.columns else [f"row {i}" for i in range(len(df))]
    rows = -(-len(cols) // n_cols)
    fig = make_subplots(rows=rows, cols=min(n_cols, len(cols)), subplot_titles=list(cols.values()))
    ref = pd.DataFrame(reference) if reference is not None else None
    group_col = by if (ref is not None and by in ref.columns) else None
    ref_legend = True
    for p, col in enumerate(cols):
        r, c = p // n_cols + 1, p % n_cols + 1
        for g, group in enumerate(groups):
            sel = (labels == group).to_numpy()
            colour = _PALETTE[g % len(_PALETTE)]
            fig.add_trace(
                go.Box(
                    y=df.loc[sel, col].astype(float),
                    x=[group] * int(sel.sum()),
                    name=group,
                    boxpoints="all",
                    jitter=0.4,
                    pointpos=0,
                    marker={"color": colour, "size": 5},
                    line={"color": colour},
                    fillcolor="rgba(0,0,0,0)",
                    hovertext=[ids[i] for i in np.flatnonzero(sel)],
                    hovertemplate="%{hovertext}: %{y:.1f}<extra>" + f"{group}</extra>",
                    legendgroup=group,
                    showlegend=p == 0,
                ),
                row=r,
                col=c,
            )
            if ref is None:
                continue
            rr = ref[ref["phenotype"] == col]
            if group_col is not None:
                rr = rr[rr[group_col].astype(str) == group]
            for _, row in rr.iterrows():
                lo, hi = row.get("range_lo"), row.get("range_hi")
                mean, sd = row.get("ref_mean"), row.get("ref_sd")
                if (lo is None or pd.isna(lo)) and mean is not None and not pd.isna(mean) and not pd.isna(sd):
                    lo, hi = mean - 1.96 * sd, mean + 1.96 * sd
                if lo is None or pd.isna(lo) or hi is None or pd.isna(hi):
                    continue
                mid = mean if mean is not None and not pd.isna(mean) else (lo + hi) / 2
                source = str(row.get("source", "reference"))
                fig.add_trace(
                    go.Scatter(
                        x=[f"{group} ref."],
                        y=[mid],
                        mode="markers",
                        marker={"color": "black", "symbol": "line-ew-open", "size": 14},
                        error_y={"type": "data", "symmetric": False, "array": [hi - mid], "arrayminus": [mid - lo]},
                        name="reference range",
                        legendgroup="reference",
                        showlegend=ref_legend,
                        hovertemplate=f"{source}<br>{lo:.1f} .. {hi:.1f}<extra>{group}</extra>",
                    ),
                    row=r,
                    col=c,
                )
                ref_legend = False
    fig.update_layout(
        title=title or None,
        template="plotly_white",
        height=300 * rows + 60,
        boxmode="group",
        margin={"l": 50, "r": 20, "t": 60, "b": 40},
    )
    return fig


def mask_surface(
    mask: Any,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    affine: Any = None,
    resample_mm: float | None = None,
    smooth_mm: float = 0.0,
    level: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Triangulated surface of a binary 3-D mask (``mask[x, y, z]``) by marching cubes.

    The mask is padded by one empty voxel (so the surface is closed), optionally resampled to
    ``resample_mm`` voxels (linear interpolation; short-axis stacks have 8-10 mm slices, so this
    softens the staircase between slices) and smoothed with a Gaussian of ``smooth_mm``, then cut at
    ``level`` with :func:`skimage.measure.marching_cubes`.

    Returns
    -------
    verts, faces
        ``(N, 3)`` vertices in mm along the voxel axes, with the centre of voxel ``(0, 0, 0)`` at the
        origin (or in world coordinates through ``affine``, a 4x4 voxel-to-world matrix, when given),
        and ``(M, 3)`` vertex indices of the triangles. An empty mask gives empty arrays.
    """
    from scipy import ndimage
    from skimage.measure import marching_cubes

    m = np.asarray(mask)
    if m.ndim != 3:
        raise ValueError(f"mask: expected a 3-D (X, Y, Z) array, got shape {m.shape}")
    sp = np.asarray(spacing, dtype=float).reshape(-1)
    if sp.shape != (3,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"spacing: expected three positive voxel sizes in mm, got {spacing!r}")
    if not m.any():
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    vol = np.pad(m.astype(np.float32), 1)
    step = sp.copy()
    if resample_mm is not None:
        if not resample_mm > 0:
            raise ValueError(f"resample_mm must be positive, got {resample_mm!r}")
        n_old = np.array(vol.shape)
        n_new = np.maximum(np.round((n_old - 1) * sp / resample_mm).astype(int) + 1, 2)
        vol = ndimage.zoom(vol, (n_new - 1) / (n_old - 1), order=1, grid_mode=False)
        step = sp * (n_old - 1) / (np.array(vol.shape) - 1)  # exact: zoom maps the corner voxels
    if smooth_mm > 0:
        vol = ndimage.gaussian_filter(vol, smooth_mm / step)
    if not vol.max() > level:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    verts, faces, _, _ = marching_cubes(vol, level=level, spacing=tuple(step))
    verts = verts - sp  # the padding voxel
    if affine is not None:
        a = np.asarray(affine, dtype=float)
        if a.shape != (4, 4):
            raise ValueError(f"affine: expected 4x4, got {a.shape}")
        verts = (verts / sp) @ a[:3, :3].T + a[:3, 3]
    return verts, faces.astype(np.int64)


def _mesh_traces(
    labels: np.ndarray,
    spacing: Sequence[float],
    structures: Mapping[int, tuple[str, str, float]],
    resample_mm: float | None,
    smooth_mm: float,
    visible: bool = True,
) -> list[Any]:
    go = _go()
    traces = []
    for lab, (name, colour, opacity) in structures.items():
        v, f = mask_surface(labels == lab, spacing, resample_mm=resample_mm, smooth_mm=smooth_mm)
        v, f = v.astype(np.float32), f.astype(np.int32)  # half the bytes in the notebook output
        traces.append(
            go.Mesh3d(
                x=v[:, 0],
                y=v[:, 1],
                z=v[:, 2],
                i=f[:, 0],
                j=f[:, 1],
                k=f[:, 2],
                name=name,
                color=colour,
                opacity=opacity,
                showlegend=True,
                flatshading=False,
                hovertemplate=f"{name}<extra></extra>",
                lighting={"ambient": 0.5, "diffuse": 0.7, "specular": 0.2},
                visible=visible,
            )
        )
    return traces


def heart_mesh(
    labels: Any,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    frames: Sequence[int] | None = None,
    frame_names: Sequence[str] | None = None,
    structures: Mapping[int, tuple[str, str, float]] | None = None,
    resample_mm: float | None = 2.0,
    smooth_mm: float = 1.5,
    title: str = "",
) -> Any:
    """An interactive 3-D view of a heart from its label volume (rotate, zoom, hide structures).

    Parameters
    ----------
    labels
        ``(X, Y, Z)`` label volume, or ``(X, Y, Z, T)`` with ``frames`` to show (default: frame 0),
        each behind a slider. Real, phantom and generated hearts (chapters 5-6) alike.
    spacing
        Voxel size in mm along x, y, z (e.g. :attr:`cmrkit.io.NiftiVolume.spacing`).
    frames, frame_names
        Frames of a 4-D volume and their slider labels (default ``"frame t"``), e.g. ``[ed, es]`` and
        ``["ED", "ES"]``.
    structures
        ``{label: (name, colour, opacity)}``; default :data:`HEART_STRUCTURES`. A structure absent
        from a frame is an empty mesh.
    resample_mm, smooth_mm
        See :func:`mask_surface` (defaults soften the short-axis slice staircase).
    """
    go = _go()
    lab = np.asarray(labels)
    if lab.ndim not in (3, 4):
        raise ValueError(f"labels: expected (X, Y, Z) or (X, Y, Z, T), got shape {lab.shape}")
    structs = dict(structures or HEART_STRUCTURES)
    if lab.ndim == 3:
        if frames not in (None, [0], (0,)):
            raise ValueError("frames: a 3-D label volume has one frame")
        vols, picked = [lab], [0]
    else:
        picked = [0] if frames is None else [int(f) for f in frames]
        for f in picked:
            if not 0 <= f < lab.shape[3]:
                raise ValueError(f"frames: {f} outside 0..{lab.shape[3] - 1}")
        vols = [lab[..., f] for f in picked]
    if frame_names is not None and len(frame_names) != len(picked):
        raise ValueError(f"frame_names: {len(frame_names)} names for {len(picked)} frames")
    fnames = [str(s) for s in frame_names] if frame_names is not None else [f"frame {f}" for f in picked]
    per_frame = [_mesh_traces(v, spacing, structs, resample_mm, smooth_mm) for v in vols]
    fig = go.Figure(data=per_frame[0])
    sp = np.asarray(spacing, dtype=float)
    fig.update_layout(
        title=title or None,
        template="plotly_white",
        height=600 if lab.ndim == 4 and len(picked) > 1 else 520,
        margin={"l": 0, "r": 0, "t": 40 if title else 10, "b": 0},
        legend={"itemclick": "toggle", "x": 0.01, "y": 0.99, "bgcolor": "rgba(255,255,255,0.7)"},
        scene={
            "domain": {"y": [0.14, 1.0]} if lab.ndim == 4 and len(picked) > 1 else {"y": [0.0, 1.0]},
            "aspectmode": "data",
            "xaxis_title": f"x (mm, {sp[0]:g} mm voxels)",
            "yaxis_title": f"y (mm, {sp[1]:g} mm voxels)",
            "zaxis_title": f"slice axis (mm, {sp[2]:g} mm slices)",
            "zaxis": {"autorange": "reversed"},  # slice 0 (base) at the top
            "camera": {"eye": {"x": 1.4, "y": -1.4, "z": 0.9}},
        },
    )
    if len(per_frame) > 1:
        fig.frames = [go.Frame(data=tr, name=n) for tr, n in zip(per_frame, fnames)]
        fig.update_layout(
            sliders=[
                {
                    "active": 0,
                    "currentvalue": {"prefix": "frame: "},
                    "pad": {"t": 10},
                    "steps": [
                        {
                            "label": n,
                            "method": "animate",
                            "args": [[n], {"mode": "immediate", "frame": {"duration": 0, "redraw": True}}],
                        }
                        for n in fnames
                    ],
                }
            ]
        )
    return fig
