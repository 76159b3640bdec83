"""Chapter 4 tracking and strain: tag tracking of original and generated tagging from the same frame-0 grid, Ferdian
strain, Table 4.2, Figs 4.8-4.11 and the comparison with the phantom's truth, tracking from the LV wall located on
the tagging alone, and several trackers side by side."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ...io.cohort import needs_reason
from ...report import Report, TableRow
from .data import REGIONS, PairData
from .synthesis import GEOMETRY


# --------------------------------------------------------------------------------------------- strain
def init_landmarks(data: PairData, i: int) -> np.ndarray:
    """Frame-0 landmarks: ground truth when the data set has it, else from the ED cine segmentation,
    else located on the original tagging itself (:func:`cmrkit.tagging.auto_init_landmarks`)."""
    if data.landmarks is not None:
        return data.landmarks[i, 0]
    from ...tagging import init_landmarks_from_mask

    if data.labelled[i, 0] and (data.labels[i, 0] == 2).any():
        return init_landmarks_from_mask(data.labels[i, 0], rv_label=3 if (data.labels[i, 0] == 3).any() else None)
    from ...tagging import auto_init_landmarks

    try:
        return auto_init_landmarks(data.tagging[i])
    except ValueError as exc:
        raise ValueError(
            f"slice {data.subject[i]}/{data.region[i]}: no landmarks, no ED myocardium label, and "
            f"the LV wall could not be located on the tagging ({exc})"
        ) from None


def track_and_strain(
    data: PairData,
    generated: np.ndarray | Mapping[str, np.ndarray],
    split: str = "test",
    *,
    n_jobs: int = 1,
    tracker: Any = None,
) -> dict[str, Any]:
    """Track original and generated tagging of a split from the same frame-0 grid; Ferdian strain.

    ``generated`` is one array (named ``"generated"``) or ``{name: array}`` for several models (e.g.
    ``{"generated": thesis model, "geometry_aware": ...}``), each (n, F, H, W) for the split's slices.
    Returns landmarks ``{"original", <names>}`` (n, F, 2, 168), strain curves ``Ecc``/``Err`` per source
    (n, F) (``truth`` too when known), the landmark error in mm against the truth, the tag contrast of
    each generated source relative to the original (``tag_contrast_ratio[name]``, (n,)), the list of
    generated sources (``generated``), the ES frame per slice and the tracker's name. ``tracker`` comes from
    :func:`cmrkit.tagging.trackers.get_tracker` (the profile's ``ch4.tracker``; default HARP). ``n_jobs``
    tracks slices in parallel processes (joblib; -1 = all cores).
    """
    from ...strain import green_strain_from_landmarks
    from ...tagging import detect_harmonic_peaks, landmark_error
    from ...tagging.trackers import HarpTracker, track_all

    trk = tracker if tracker is not None else HarpTracker()
    gen = {"generated": generated} if isinstance(generated, np.ndarray) else dict(generated)
    idx = data.index(split)
    out: dict[str, Any] = {
        "idx": idx,
        "generated": list(gen),
        "tracker": trk.name,
        "landmarks": {},
        "Ecc": {},
        "Err": {},
        "landmark_error_mm": {},
        "tag_contrast_ratio": {},
    }
    # the tag pattern (spacing, orientation) is a property of the acquisition: detect it on the
    # original tagging of each slice and use it for the generated tagging of the same slice too
    peaks = [detect_harmonic_peaks(data.tagging[i, :2]) for i in idx]
    starts = np.stack([init_landmarks(data, i) for i in idx])
    for src, seqs in (("original", data.tagging[idx]), *gen.items()):
        lms = list(track_all(trk, seqs, starts, peaks=peaks, n_jobs=n_jobs))
        ecc, err = [], []
        for lm in lms:
            s = green_strain_from_landmarks(lm)
            ecc.append(np.asarray(s.Ecc))
            err.append(np.asarray(s.Err))
        out["landmarks"][src] = np.stack(lms)
        out["Ecc"][src], out["Err"][src] = np.stack(ecc), np.stack(err)
        if data.landmarks is not None:
            out["landmark_error_mm"][src] = np.stack(
                [landmark_error(lm, data.landmarks[i], data.px_mm) for lm, i in zip(lms, idx)]
            )
    # tag contrast of each generated tagging relative to the original, on the heart (frames 0..7):
    # a ratio near 0 means the synthesis produced no tag pattern there and its "strain" is not a measurement
    ref = [tag_contrast(data.tagging[i], peaks[j], out["landmarks"]["original"][j, 0]) for j, i in enumerate(idx)]
    for src, seqs in gen.items():
        out["tag_contrast_ratio"][src] = np.array(
            [
                tag_contrast(seqs[j], peaks[j], out["landmarks"]["original"][j, 0]) / max(ref[j], 1e-12)
                for j in range(len(idx))
            ]
        )
    if data.true_strain is not None:
        out["Ecc"]["truth"] = data.true_strain["Ecc"][idx]
        out["Err"]["truth"] = data.true_strain["Err"][idx]
        out["exact"] = {"Ecc": data.true_strain["Ecc_exact"][idx], "Err": data.true_strain["Err_exact"][idx]}
    es = data.es_frame[idx].copy()
    unknown = es < 0  # no ES in the data: the frame of peak circumferential shortening of the original
    es[unknown] = np.argmin(out["Ecc"]["original"][unknown], axis=1)
    out["es"] = es
    return out


def tag_contrast(images: np.ndarray, peaks: Any, lm0: np.ndarray, n_frames: int = 8) -> float:
    """Mean first-harmonic magnitude over the box around the frame-0 landmarks, first ``n_frames``
    frames, relative to the mean intensity there (a tag modulation depth)."""
    from ...tagging import harmonic_images

    im = np.asarray(images[:n_frames], float)
    b = np.abs(harmonic_images(im, peaks))  # (T, 2, H, W)
    h, w = im.shape[1:]
    x0, y0 = np.clip(np.floor(lm0.min(1)).astype(int), 0, [w - 1, h - 1])
    x1, y1 = np.clip(np.ceil(lm0.max(1)).astype(int) + 1, 1, [w, h])
    return float(b[:, :, y0:y1, x0:x1].mean() / max(float(im[:, y0:y1, x0:x1].mean()), 1e-12))


def _finite(v: np.ndarray) -> np.ndarray:
    return v[np.isfinite(v)]


def at_es(curves: np.ndarray, es: np.ndarray) -> np.ndarray:
    """Each curve's value at its ES frame: ``curves[k, es[k]]`` for curves (n, F) and ES frames (n,)."""
    return curves[np.arange(len(es)), es]


def _generated_sources(tr: Mapping[str, Any]) -> list[str]:
    return list(tr.get("generated", ["generated"]))


def strain_tables(rep: Report, data: PairData, tr: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """Table 4.2 (ES E_c, E_r by region, original vs generated) and the ground-truth comparison."""
    from ...stats import bland_altman

    idx, es = tr["idx"], tr["es"]
    regions = data.region[idx]
    gens = _generated_sources(tr)
    rows42 = []
    for region in REGIONS:
        sel = regions == region
        if not sel.any():
            continue
        for metric, key in (("Ec", "Ecc"), ("Er", "Err")):
            for src in ("original", *gens):
                v = at_es(tr[key][src], es)[sel]
                thesis = (region, metric, src) if src in ("original", "generated") else ("-",)
                rows42.append(TableRow.summary(f"{region}/{src}", metric, v, thesis_key=thesis))
    notes42 = [
        f"Green strain at the ES frame from landmarks tracked with the {tr.get('tracker', 'harp')} tracker "
        "(cmrkit.tagging) on original tagging and on "
        "tagging generated from cine only; all tracked from the same frame-0 landmark grid.",
        "Thesis landmarks came from a CNN+RNN tracker trained on UK Biobank annotations (not public).",
    ]
    if GEOMETRY in gens:
        notes42.append(
            f"'generated' is the thesis model (synthesis from the cine images alone); '{GEOMETRY}' the kit's "
            "geometry-aware model, whose tagging decoder also knows the tag phase from the header and moves the "
            "SPAMM grid with a decoded displacement field."
        )
    t42 = rep.save_table("table_4_2", rows42, notes=notes42)
    rows = []
    comparisons = [(f"{g}_vs_original", g, "original") for g in gens]
    if "truth" in tr["Ecc"]:
        comparisons += [("original_vs_truth", "original", "truth")] + [(f"{g}_vs_truth", g, "truth") for g in gens]
    for region in (*REGIONS, "all"):
        sel = np.ones(len(idx), bool) if region == "all" else regions == region
        if sel.sum() < 2:
            continue
        for name, a, b in comparisons:
            for metric in ("Ecc", "Err"):
                ba = bland_altman(at_es(tr[metric][a], es)[sel], at_es(tr[metric][b], es)[sel])
                for stat, val in (("bias", ba.bias), ("loa_low", ba.loa_low), ("loa_high", ba.loa_high)):
                    rows.append(TableRow(f"{name}/{region}", f"{metric} ES {stat}", float(val), n=ba.n, units="strain"))
                d = np.abs(tr[metric][a][sel] - tr[metric][b][sel])
                rows.append(
                    TableRow(
                        f"{name}/{region}",
                        f"{metric} |diff| all frames",
                        float(d.mean()),
                        float(d.std(ddof=1)),
                        n=int(sel.sum()),
                        units="strain",
                    )
                )
        if "exact" in tr:
            for metric in ("Ecc", "Err"):
                d = at_es(tr[metric]["truth"], es)[sel] - at_es(tr["exact"][metric], es)[sel]
                rows.append(
                    TableRow(
                        f"truth_vs_exact/{region}",
                        f"{metric} ES mean diff",
                        float(d.mean()),
                        float(d.std(ddof=1)),
                        n=int(sel.sum()),
                        units="strain",
                    )
                )
        for g in gens:
            if g not in tr.get("tag_contrast_ratio", {}):
                continue
            v = tr["tag_contrast_ratio"][g][sel]
            rows.append(TableRow.summary(f"tag_contrast/{region}", f"{g} / original", v, units="ratio"))
        for src, err in tr["landmark_error_mm"].items():
            e = err[sel]
            rows.append(
                TableRow(
                    f"landmarks_{src}_vs_truth/{region}",
                    "error (mm)",
                    float(e.mean()),
                    float(e.mean(axis=1).std(ddof=1)),
                    n=int(sel.sum()),
                    units="mm",
                )
            )
            rows.append(
                TableRow(
                    f"landmarks_{src}_vs_truth/{region}",
                    "error (px)",
                    float(e.mean() / data.px_mm),
                    n=int(sel.sum()),
                    units="px",
                )
            )
    notes = [
        "Bland-Altman bias and 95% limits of agreement (1.96 SD) of ES Green strain; '|diff| all frames' is the "
        "mean absolute difference over every frame of every slice.",
        "'truth' applies Ferdian's definitions to the phantom's true landmarks (material points of the analytic "
        "motion), so differences are tracking/synthesis error; 'exact' rows compare the truth with the analytic "
        "strain of the motion (E_rr there is the wall mean, not the endo-epi chord). Not available for real data.",
        f"Pixel size of the tracking grid: {data.px_mm:.3f} mm.",
        "'tag_contrast' is the first-harmonic (tag) modulation depth of the generated tagging over the heart, "
        "frames 0-7, relative to the original's: well below 1 means the synthesis has (almost) no tags there, and "
        "strain tracked on it measures the tracker's failure, not the heart.",
    ]
    if GEOMETRY in gens:
        notes.append(
            f"'generated' = thesis model (cine only); '{GEOMETRY}' = geometry-aware model (cine + tag phase from "
            "the header)."
        )
    tgt = rep.save_table("ch4_strain_vs_truth", rows, notes=notes)
    return {"table_4_2": t42, "ch4_strain_vs_truth": tgt}


def strain_figures(rep: Report, data: PairData, tr: Mapping[str, Any]) -> None:
    """Figs 4.8 (Bland-Altman), 4.9 (violins), 4.10 (curves), 4.11 (against ground truth)."""
    import matplotlib.pyplot as plt

    from ...figures import bland_altman_plot, show, strain_curves, violin_plot

    es, regions = tr["es"], data.region[tr["idx"]]
    gens = _generated_sources(tr)
    fig, axes = plt.subplots(len(gens), 2, figsize=(9, 3.6 * len(gens)), squeeze=False)
    for r, g in enumerate(gens):
        for ax, metric, label in ((axes[r, 0], "Ecc", "E_cc"), (axes[r, 1], "Err", "E_rr")):
            bland_altman_plot(
                at_es(tr[metric][g], es),
                at_es(tr[metric]["original"], es),
                ax=ax,
                title=f"ES {label}: {g} - original",
                xlabel="mean",
                ylabel="difference",
            )
    fig.tight_layout()
    rep.save_figure(fig, "fig_4_8", caption="Bland-Altman of ES strain, generated vs original tagging (test split)")
    show(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, metric, label in ((axes[0], "Ecc", "E_cc"), (axes[1], "Err", "E_rr")):
        groups = {
            r: {s: _finite(at_es(tr[metric][s], es)[regions == r]) for s in tr[metric]}
            for r in REGIONS
            if (regions == r).any()
        }
        violin_plot(groups, ylabel=f"ES {label}", title=f"ES {label} by region", ax=ax)
    fig.tight_layout()
    rep.save_figure(fig, "fig_4_9", caption="ES circumferential and radial strain by region and source")
    show(fig)

    fig, axes = plt.subplots(2, len(REGIONS), figsize=(4 * len(REGIONS), 6), squeeze=False)
    for j, r in enumerate(REGIONS):
        sel = regions == r
        for i, (metric, label) in enumerate((("Ecc", "E_cc"), ("Err", "E_rr"))):
            if sel.any():
                strain_curves({s: tr[metric][s][sel] for s in tr[metric]}, ylabel=label, title=f"{r}", ax=axes[i, j])
    fig.tight_layout()
    rep.save_figure(fig, "fig_4_10", caption="Strain curves over the cycle, mean ± 1 sd, by region and source")
    show(fig)

    if "truth" in tr["Ecc"]:
        srcs = ["original", *gens]
        fig, axes = plt.subplots(1, len(srcs), figsize=(4.5 * len(srcs), 3.6), squeeze=False)
        for ax, src in zip(axes[0], srcs):
            bland_altman_plot(
                at_es(tr["Ecc"][src], es),
                at_es(tr["Ecc"]["truth"], es),
                ax=ax,
                title=f"ES E_cc: tracked {src} - truth",
                xlabel="mean",
                ylabel="difference",
            )
        fig.tight_layout()
        rep.save_figure(
            fig,
            "fig_4_11",
            caption="Bland-Altman of ES E_cc against the phantom's exact strain "
            "(the kit's replacement for the thesis' UK Biobank reference comparison)",
        )
        show(fig)
    else:
        rep.skip("fig_4_11", needs_reason(["ground_truth"]))


def tracking_without_annotations(
    data: PairData, tr: Mapping[str, Any], j: int = 0, *, tracker: Any = None
) -> tuple[pd.DataFrame, Any]:
    """Track one test slice from the LV wall located on its tagging alone, beside the start used by
    :func:`track_and_strain`.

    :func:`cmrkit.tagging.localise_lv_wall` finds the LV myocardium on the original tagging of test
    slice ``j`` (no landmarks, no labels: blood loses its tags within a few frames while myocardium
    keeps them, and in systole the wall moves towards one point); ``tracker`` (default HARP,
    :mod:`cmrkit.tagging.trackers`) starts from it. Returns the ES Green strain of that
    automatic start, of the start used above and, on the phantom, of the truth (rows; columns
    ``ES E_cc``, ``ES E_rr``), and the landmark overlay of frame 0 and ES (open; show it with
    :func:`cmrkit.figures.show`).
    """
    from ...figures import landmark_overlay
    from ...strain import green_strain_from_landmarks
    from ...tagging import localise_lv_wall
    from ...tagging.trackers import HarpTracker

    trk = tracker if tracker is not None else HarpTracker()
    i = int(tr["idx"][j])
    wall = localise_lv_wall(data.tagging[i])
    auto = trk.track(data.tagging[i], wall.landmarks)
    es = int(tr["es"][j])
    curves = {
        "automatic start": green_strain_from_landmarks(auto),
        "start used above": green_strain_from_landmarks(tr["landmarks"]["original"][j]),
    }
    summary = {k: {"ES E_cc": float(v.Ecc[es]), "ES E_rr": float(v.Err[es])} for k, v in curves.items()}
    if data.true_strain is not None:
        summary["truth"] = {
            "ES E_cc": float(data.true_strain["Ecc"][i, es]),
            "ES E_rr": float(data.true_strain["Err"][i, es]),
        }
    fig = landmark_overlay(
        {"automatic start": data.tagging[i]},
        {"automatic start": auto},
        [0, es],
        title=f"{data.subject[i]} {data.region[i]}: LV wall located on the tagging",
    )
    return pd.DataFrame(summary).T, fig


def trackers_on_test(
    data: PairData, tr: Mapping[str, Any], trackers: Mapping[str, Any], n: int = 6
) -> tuple[pd.DataFrame, Any]:
    """Several trackers (``{name: tracker}``, :mod:`cmrkit.tagging.trackers`) on the first ``n`` test
    slices of :func:`track_and_strain`'s result, from the same frame-0 grids: the table of
    :func:`cmrkit.tagging.trackers.compare_trackers` (ES strain means and, on the phantom, landmark error
    and ES strain bias against the truth) and the E_cc curves of the first slice per tracker (beside
    the truth when known; open, show it with :func:`cmrkit.figures.show`)."""
    from ...figures import strain_curves
    from ...strain import green_strain_from_landmarks
    from ...tagging.trackers import compare_trackers

    sel = np.asarray(tr["idx"][: min(n, len(tr["idx"]))])
    table, tracked = compare_trackers(
        dict(trackers),
        data.tagging[sel],
        tr["landmarks"]["original"][: len(sel), 0],
        truth=None if data.landmarks is None else data.landmarks[sel],
        px_mm=data.px_mm,
        es=tr["es"][: len(sel)],
    )
    curves = {name: green_strain_from_landmarks(lms[0]).Ecc[None] for name, lms in tracked.items()}
    if data.true_strain is not None:
        curves["truth"] = data.true_strain["Ecc"][sel[:1]]
    title = f"{data.subject[sel[0]]} {data.region[sel[0]]}: trackers vs truth"
    return table, strain_curves(curves, ylabel="E_cc", title=title)
