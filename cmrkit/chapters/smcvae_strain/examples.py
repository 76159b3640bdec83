"""Chapter 4 examples: one test slice through the four scenarios and its tracking (Figs 4.4-4.5), generated tagging
beside the original over the cycle (``ch4_tagging_cycle``) and the test-set viewer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ...report import Report
from .data import REGIONS, PairData
from .synthesis import GEOMETRY, SCENARIOS


# --------------------------------------------------------------------------------------------- figures
def _example_slice(data: PairData, tr: Mapping[str, Any] | None) -> tuple[int, list[int]]:
    """Index (into the test split) of the mid-ventricular example slice and frames ED, mid-systole, ES, diastole."""
    idx = data.index("test")
    picks = [int(np.flatnonzero(data.region[idx] == r)[0]) for r in REGIONS if (data.region[idx] == r).any()]
    j = picks[len(picks) // 2] if picks else 0
    es = int(tr["es"][j]) if tr is not None else data.cine.shape[1] // 3
    frames = sorted({0, es // 2, es, min(data.cine.shape[1] - 1, es + (data.cine.shape[1] - es) // 2)})
    return j, frames


def figure_examples(
    rep: Report,
    data: PairData,
    outputs: Mapping[str, np.ndarray],
    tr: Mapping[str, Any] | None = None,
    outputs_geometry: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Fig 4.4 (one test slice through the four scenarios) and Fig 4.5 (tracking), with the geometry-aware
    model's tagging from cine as an extra row when given."""
    from ...figures import image_grid, landmark_overlay, show

    idx = data.index("test")
    j, frames = _example_slice(data, tr)
    rows = {"cine": data.cine[idx[j]], "tagging": data.tagging[idx[j]]}
    rows.update({name.replace("_", " "): outputs[name][j] for name, _, _ in SCENARIOS})
    if outputs_geometry is not None:
        rows["cine to tagging, geometry-aware"] = outputs_geometry["only_cine_to_tagging"][j]
    fig = image_grid(rows, frames, title=f"{data.subject[idx[j]]} {data.region[idx[j]]} (test)")
    rep.save_figure(fig, "fig_4_4", caption="Original cine and tagging, reconstructions and cross-syntheses")
    show(fig)
    if tr is not None:
        seqs = {"original tagging": data.tagging[idx[j]], "generated tagging": outputs["only_cine_to_tagging"][j]}
        lms = {"original tagging": tr["landmarks"]["original"][j], "generated tagging": tr["landmarks"]["generated"][j]}
        if outputs_geometry is not None and GEOMETRY in tr["landmarks"]:
            seqs["geometry-aware"] = outputs_geometry["only_cine_to_tagging"][j]
            lms["geometry-aware"] = tr["landmarks"][GEOMETRY][j]
        fig = landmark_overlay(
            seqs, lms, frames, title=f"{tr.get('tracker', 'harp')} tracking from the same frame-0 grid"
        )
        rep.save_figure(
            fig, "fig_4_5", caption="Tracked landmarks on original and generated tagging (red: endocardial ring)"
        )
        show(fig)


def browse_test_set(
    data: PairData,
    outputs: Mapping[str, np.ndarray],
    *,
    outputs_geometry: Mapping[str, np.ndarray] | None = None,
    interactive: bool = False,
    item: int = 0,
    frame: int = 0,
    split: str = "test",
) -> tuple[Any, Any]:
    """Cine, tagging and the two cross-syntheses of one slice of ``split`` at one frame.

    Returns ``(figure, viewer_or_None)``: the static panels of slice ``item`` at ``frame`` and, with
    ``interactive=True``, an ipywidgets viewer whose sliders choose the slice and the frame
    (:class:`cmrkit.widgets.IndexFrameViewer`; display ``viewer.ui``). ``outputs`` are
    :func:`synthesis_scenarios`' outputs of the same split; ``outputs_geometry`` (the geometry-aware
    model's) add its tagging from cine as a fifth row.
    """
    from ...figures import image_grid

    idx = data.index(split)

    def render(j: int, t: int) -> Any:
        j = int(j)
        rows = {
            "cine": data.cine[idx[j]],
            "tagging": data.tagging[idx[j]],
            "tagging from cine": outputs["only_cine_to_tagging"][j],
            "cine from tagging": outputs["only_tagging_to_cine"][j],
        }
        if outputs_geometry is not None:
            rows["tagging from cine, geometry-aware"] = outputs_geometry["only_cine_to_tagging"][j]
        return image_grid(rows, [int(t)], title=f"{data.subject[idx[j]]} {data.region[idx[j]]}")

    viewer = None
    if interactive:
        from ...widgets import IndexFrameViewer

        viewer = IndexFrameViewer(
            render, len(idx), data.cine.shape[1], item=item, frame=frame, labels=(f"{split} slice", "frame")
        )
    return render(item, frame), viewer


def tagging_cycle(
    rep: Report,
    data: PairData,
    generated: Mapping[str, np.ndarray],
    tr: Mapping[str, Any] | None = None,
    *,
    interactive: bool = False,
    n_frames: int = 6,
    item: int | None = None,
) -> tuple[Any, Any]:
    """Generated tagging beside the original over the cardiac cycle (kit figure ``ch4_tagging_cycle``).

    The montage: test slice ``item`` (default the mid-ventricular example of Fig 4.4), ``n_frames`` frames
    spread over the sequence (ED and ES included), one row for the original and one per generated source
    (``{name: (n_test, F, H, W)}``), cropped to the heart, saved and returned open (show it with
    :func:`cmrkit.figures.show`). With ``interactive=True`` also an ipywidgets viewer whose sliders choose
    the test slice and the frame (:class:`cmrkit.widgets.IndexFrameViewer`; display ``viewer.ui``).
    Returns ``(figure, viewer_or_None)``.
    """
    from ...figures import image_grid

    idx = data.index("test")
    if item is None:
        item, _ = _example_slice(data, tr)
    F = data.tagging.shape[1]

    def es_of(j: int) -> int:
        return int(tr["es"][j]) if tr is not None else F // 3

    def rows(j: int) -> dict[str, np.ndarray]:
        seqs = {"original": data.tagging[idx[j]], **{k.replace("_", " "): v[j] for k, v in generated.items()}}
        r0, r1, c0, c1 = _heart_box(data, int(idx[j]))
        return {k: np.asarray(v)[:, r0:r1, c0:c1] for k, v in seqs.items()}

    es = es_of(item)
    frames = sorted({*np.linspace(0, F - 1, n_frames).round().astype(int).tolist(), es})
    title = f"{data.subject[idx[item]]} {data.region[idx[item]]} (test): tagging over the cycle, ES = frame {es}"
    fig = image_grid(rows(item), frames, title=title)
    rep.save_figure(
        fig,
        "ch4_tagging_cycle",
        caption="Original tagging and tagging generated from cine over the cardiac cycle, cropped to the heart",
    )
    viewer = None
    if interactive:
        from ...widgets import IndexFrameViewer

        def render(j: int, t: int) -> Any:
            j = int(j)
            name = f"{data.subject[idx[j]]} {data.region[idx[j]]}"
            return image_grid(rows(j), [int(t)], title=f"{name}: frame {int(t)} of {F} (ES {es_of(j)})")

        viewer = IndexFrameViewer(render, len(idx), F, item=item, frame=es, labels=("test slice", "frame"))
    return fig, viewer


def _heart_box(data: PairData, i: int, margin: int = 6) -> tuple[int, int, int, int]:
    """Row/column window ``(r0, r1, c0, c1)`` around the frame-0 landmarks (or the whole image)."""
    H, W = data.tagging.shape[2:]
    if data.landmarks is None:
        return 0, H, 0, W
    lm = data.landmarks[i, 0]
    c0, r0 = np.floor(lm.min(axis=1)).astype(int) - margin
    c1, r1 = np.ceil(lm.max(axis=1)).astype(int) + margin + 1
    return max(r0, 0), min(r1, H), max(c0, 0), min(c1, W)
