"""The clinical background (thesis chapter 2) told with computed material, and the phantom's realism.

The steps, in the order ``notebooks/00_background.ipynb`` walks through them (``run_all`` runs them
all without Jupyter). Each writes its registered artefacts through a :class:`cmrkit.report.Report`
and returns what the notebook displays (figures are returned open; show them with
:func:`cmrkit.figures.show`):

1. :func:`load_cohort` -- the subjects of the run's data set (phantom by default) and a phenotype
   table (the phantom manifest, or phenotypes measured from the labels for other data sets).
2. :func:`cardiac_cycle` -- LV/RV/myocardial volume over one cycle with ED and ES marked
   (thesis §2.1, Wiggers diagram Fig. 2.2) -> ``bg_cardiac_cycle``.
3. :func:`indices_table` -- EDV, ESV, SV, EF, mass, CO, wall thickness of a few subjects with
   :mod:`cmrkit.clinical` (thesis §2.2) -> ``bg_indices``.
4. :func:`cine_viewer` -- slice x frame montage (static view of :mod:`cmrkit.widgets`' viewer;
   thesis §2.3.4) -> ``bg_cine_viewer``.
5. :func:`real_vs_phantom` and :func:`realism_table` -- real M&Ms and phantom slices side by side;
   blood/myocardium contrast, CNR and SNR of both, tag period and fading of the phantom against
   UK Biobank acquisition values and the SPAMM relaxation model (:mod:`cmrkit.metrics.realism`)
   -> ``bg_real_vs_phantom``, ``bg_realism``.
6. :func:`tagging_physics` -- SPAMM tag pattern, harmonic spectrum, tags deforming with the heart and
   fading with T1 (thesis §2.3.5) -> ``bg_tagging_physics``.
7. :func:`strain_bullseye` -- Green-Lagrange vs linear strain (thesis eq. 2.1/4.2) on a worked
   example and on one phantom slice, and the AHA 17-segment bullseye of regional peak E_cc
   (Cerqueira et al. 2002; thesis Fig. 2.3) for a normal and a dysfunctional heart
   -> ``bg_strain_bullseye``.
8. :func:`phenotype_distributions` -- cohort phenotypes by sex against UK Biobank reference values
   (Petersen et al. 2017) -> ``bg_phenotypes_vs_reference``, ``bg_phenotype_distributions``.

Image arrays of :class:`cmrkit.io.Subject` are ``(X, Y, Z, T)``; figures show ``image[x, y].T`` (row = y,
column = x), the landmark convention of :mod:`cmrkit.strain`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..clinical import MEASURED_COLUMNS
from ..config import Config
from ..figures import bullseye_plot, label_contours
from ..io import Subject, TaggingSlice
from ..io.cohort import N_MEASURE, Cohort, load_cohort, load_real_mnms, mid_slice
from ..labels import LABEL_COLOURS, LABEL_NAMES, LV_BLOOD, LV_MYO, RV_BLOOD
from ..metrics import realism
from ..report import Report, TableRow
from ..strain import regional_peak_ecc, spoke_segment_angles

__all__ = [
    "NOTEBOOK",
    "STEPS",
    "PHENOTYPE_COMPARISON_COLUMNS",
    "load_cohort",
    "cardiac_cycle",
    "indices_table",
    "cine_viewer",
    "real_vs_phantom",
    "measure_tagging",
    "measure_cohort_tagging",
    "realism_table",
    "tagging_physics",
    "green_lagrange_example",
    "strain_bullseye",
    "strain_summary",
    "phenotype_distributions",
    "run_all",
]

NOTEBOOK = "00_background"
#: the step functions in the order the notebook calls them
STEPS = (
    "load_cohort",
    "cardiac_cycle",
    "indices_table",
    "cine_viewer",
    "real_vs_phantom",
    "measure_cohort_tagging",
    "tagging_physics",
    "realism_table",
    "strain_bullseye",
    "strain_summary",
    "phenotype_distributions",
)
#: columns of :func:`phenotype_distributions`' comparison table that the notebook shows
PHENOTYPE_COMPARISON_COLUMNS = (
    "phenotype",
    "sex",
    "source",
    "n",
    "cohort_mean",
    "cohort_sd",
    "ref_mean",
    "ref_sd",
    "range_lo",
    "range_hi",
    "std_diff",
    "frac_in_range",
)


def _frame_ms(subject: Subject) -> float | None:
    v = subject.meta.get("frame_duration_ms")
    return float(v) if v else None


def _pick_subject(cohort: Cohort, healthy: bool = True) -> Subject:
    ids = cohort.healthy_ids() if healthy else cohort.pathological_ids()
    return cohort.subject(ids[0] if ids else cohort.ids[0])


def _display(img_xy: np.ndarray) -> np.ndarray:
    """``image[x, y]`` -> display ``(row = y, column = x)``."""
    return np.asarray(img_xy).T


def _crop_box(lab_disp: np.ndarray, spacing: Sequence[float], fov_mm: float) -> tuple[slice, slice]:
    """Square crop of ``fov_mm`` around the centroid of the LV (blood pool and myocardium) in display layout."""
    rr, cc = np.nonzero(np.isin(lab_disp, (LV_BLOOD, LV_MYO)))
    h, w = lab_disp.shape
    if rr.size == 0:
        rc, cc0 = h / 2.0, w / 2.0
    else:
        rc, cc0 = float(rr.mean()), float(cc.mean())
    hr, hc = fov_mm / 2.0 / float(spacing[1]), fov_mm / 2.0 / float(spacing[0])
    r0, r1 = int(round(max(rc - hr, 0))), int(round(min(rc + hr, h)))
    c0, c1 = int(round(max(cc0 - hc, 0))), int(round(min(cc0 + hc, w)))
    return slice(r0, r1), slice(c0, c1)


def _no_ticks(ax: Any) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _panel_letter(ax: Any, letter: str) -> None:
    ax.text(-0.02, 1.02, f"({letter})", transform=ax.transAxes, fontsize=9, fontweight="bold", va="bottom", ha="right")


# ================================================================================ 2. cardiac cycle
def cardiac_cycle(
    cohort: Cohort, rep: Report | None = None, subject_id: str | None = None
) -> tuple[plt.Figure, dict[str, Any]]:
    """Volume curves of one subject over the cycle with ED/ES, systole and diastole marked.

    Returns the figure and ``{"subject", "ed", "es", "frame_ms", "volumes"}`` (volumes from
    :func:`cmrkit.clinical.volume_curve`). Needs a full-cycle cine with labels on every frame
    (phantom, or UK Biobank with ``label_sa.nii.gz``).
    """
    from ..clinical import volume_curve

    subj = cohort.subject(subject_id) if subject_id else _pick_subject(cohort)
    if subj.cine_labels is None or subj.labelled_frames is None or subj.cine is None:
        raise ValueError(f"subject {subj.subject_id}: the cardiac cycle needs a cine with labels")
    vol = volume_curve(subj.cine_labels, subj.affine, labelled_frames=subj.labelled_frames)
    ed = int(subj.ed_frame or 0)
    es = int(subj.es_frame) if subj.es_frame is not None else int(np.argmin(vol["LV"]))
    fms = _frame_ms(subj)
    T = len(vol["LV"])
    t = np.arange(T + 1) * (fms or 1.0)
    wrap = lambda v: np.append(v, v[0])  # noqa: E731 - one cycle closes on the next ED
    fig = plt.figure(figsize=(9.2, 3.6))
    gs = fig.add_gridspec(2, 3, width_ratios=[2.6, 1, 1], wspace=0.08, hspace=0.12)
    ax = fig.add_subplot(gs[:, 0])
    ax.axvspan(t[ed], t[es], color="0.92", zorder=0)
    ax.text(
        (t[ed] + t[es]) / 2, 0.02, "systole", transform=ax.get_xaxis_transform(), ha="center", fontsize=8, color="0.35"
    )
    ax.text(
        (t[es] + t[-1]) / 2, 0.02, "diastole", transform=ax.get_xaxis_transform(), ha="center", fontsize=8, color="0.35"
    )
    for key, name, col in (
        ("LV", LABEL_NAMES[LV_BLOOD], LABEL_COLOURS[LV_BLOOD]),
        ("RV", LABEL_NAMES[RV_BLOOD], LABEL_COLOURS[RV_BLOOD]),
        ("MYO", LABEL_NAMES[LV_MYO], LABEL_COLOURS[LV_MYO]),
    ):
        ax.plot(t, wrap(vol[key]), marker=".", ms=4, color=col, label=name, lw=1.4)
    lvedv, lvesv = float(vol["LV"][ed]), float(vol["LV"][es])
    for fr, name in ((ed, "ED"), (es, "ES")):
        ax.axvline(t[fr], color="k", ls="--" if name == "ED" else ":", lw=0.8)
        ax.text(t[fr], 1.01, name, transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=8)
    x_sv = t[es] + 0.35 * (t[-1] - t[es])
    ax.annotate("", xy=(x_sv, lvesv), xytext=(x_sv, lvedv), arrowprops=dict(arrowstyle="<->", color="0.2", lw=0.8))
    ax.hlines([lvedv, lvesv], t[ed], x_sv, colors="0.5", lw=0.5, linestyles="-")
    ax.text(
        x_sv,
        (lvedv + lvesv) / 2,
        f"  SV = {lvedv - lvesv:.0f} mL\n  EF = {100 * (lvedv - lvesv) / lvedv:.0f} %",
        va="center",
        fontsize=8,
    )
    ax.set_xlabel("time after the R wave (ms)" if fms else "frame")
    ax.set_ylabel("volume (mL)")
    ax.set_xlim(t[0], t[-1])
    ax.set_ylim(0, float(np.nanmax(np.concatenate([vol["RV"], vol["LV"]]))) * 1.12)
    ax.legend(fontsize=7, loc="lower right", frameon=False, ncol=1, bbox_to_anchor=(1.0, 0.07))
    ax.set_title(f"(a) volumes over one cycle, {subj.subject_id}", fontsize=9, loc="left", pad=14)
    z = mid_slice(subj.cine_labels[..., ed])
    zs = [max(z - 2, 0), z]
    window = np.percentile(subj.cine[..., ed], [0.5, 99.5])
    for i, zz in enumerate(zs):
        for j, (fr, name) in enumerate(((ed, "ED"), (es, "ES"))):
            a = fig.add_subplot(gs[i, 1 + j])
            img, lab = _display(subj.cine[:, :, zz, fr]), _display(subj.cine_labels[:, :, zz, fr])
            rs, cs = _crop_box(_display(subj.cine_labels[:, :, zz, ed]), subj.spacing, 130.0)
            a.imshow(img[rs, cs], cmap="gray", vmin=window[0], vmax=window[1])
            label_contours(a, lab[rs, cs], lw=0.6)
            _no_ticks(a)
            if i == 0:
                a.set_title(f"(b) {name}" if j == 0 else name, fontsize=9, loc="left" if j == 0 else "center", pad=14)
            if j == 0:
                a.set_ylabel(f"slice {zz}", fontsize=7)
    fig.subplots_adjust(left=0.07, right=0.99, top=0.9, bottom=0.13)
    if rep is not None:
        rep.save_figure(
            fig,
            "bg_cardiac_cycle",
            caption=f"LV, RV and myocardial volume of {subj.subject_id} over one cardiac cycle from its label "
            f"maps (cmrkit.clinical.volume_curve); ED (frame {ed}) and ES (frame {es}, minimum LV "
            "volume) marked. The myocardial volume stays nearly constant (the wall is incompressible; what "
            "changes is through-plane motion and partial volume in the slice stack). Right: "
            "basal and mid-ventricular slices at ED and ES with the labels.",
        )
    return fig, {"subject": subj.subject_id, "ed": ed, "es": es, "frame_ms": fms, "volumes": vol}


# ================================================================================ 3. indices
_INDEX_UNITS = {
    "LVEDV": "mL",
    "LVESV": "mL",
    "LVSV": "mL",
    "LVEF": "%",
    "LVM": "g",
    "RVEDV": "mL",
    "RVESV": "mL",
    "RVSV": "mL",
    "RVEF": "%",
    "CO": "L/min",
    "WT": "mm",
}
_TARGET_COLUMNS = {
    "LVEDV": "lvedv_ml",
    "LVESV": "lvesv_ml",
    "LVEF": "lvef_pct",
    "LVM": "lvm_g",
    "RVEDV": "rvedv_ml",
    "RVESV": "rvesv_ml",
    "RVEF": "rvef_pct",
}


def indices_table(cohort: Cohort, rep: Report | None = None, n: int = 4) -> pd.DataFrame:
    """Functional indices of ``n`` subjects (a dysfunctional one included when there is one).

    EDV/ESV/SV/EF of both ventricles, LV mass (1.05 g/mL), cardiac output (heart rate x SV) and the
    mean ED wall thickness, all from the label maps with :mod:`cmrkit.clinical`; for the phantom the
    manifest's target values are listed beside them. Returns a wide table (one row per subject).
    """
    from ..clinical import phenotypes, wall_thickness

    ids = cohort.healthy_ids()[: max(n - 1, 1)] + cohort.pathological_ids()[:1]
    ids = (ids + [i for i in cohort.ids if i not in ids])[:n]
    rows: list[TableRow] = []
    wide = []
    for sid in ids:
        s = cohort.subject(sid)
        if s.cine_labels is None:
            continue
        ph = phenotypes(s.label_ed, s.label_es, s.affine, heart_rate=s.heart_rate_bpm)
        ph["WT"] = float(wall_thickness(s.label_ed, s.affine))
        patho = cohort.pathology(sid)
        rec: dict[str, Any] = {"subject": sid, "pathology": patho}
        for k, v in ph.items():
            rows.append(TableRow(sid, k, v, units=_INDEX_UNITS.get(k, "")))
            rec[k] = v
        if cohort.dataset == "phantom":
            tr = cohort.table.loc[cohort.table["subject_id"] == sid].iloc[0]
            for k, col in _TARGET_COLUMNS.items():
                rows.append(TableRow(f"{sid}/target", k, float(tr[col]), units=_INDEX_UNITS[k]))
                rec[f"{k} target"] = float(tr[col])
        wide.append(rec)
    if rep is not None:
        rep.save_table(
            "bg_indices",
            rows,
            notes=[
                "Measured from the ED/ES label maps with cmrkit.clinical (voxel count x voxel volume; LV mass = "
                "myocardial volume x 1.05 g/mL; CO = heart rate x LVSV; WT = mean ED wall thickness).",
                "Rows '<subject>/target' are the phantom's covariate-model targets (manifest.csv) the anatomy was "
                "built to.",
                "Pathology: " + "; ".join(f"{r['subject']}: {r['pathology']}" for r in wide),
            ],
        )
    return pd.DataFrame(wide)


# ================================================================================ 4. cine viewer
def cine_viewer(
    cohort: Cohort, rep: Report | None = None, *, interactive: bool = False, subject_id: str | None = None
) -> tuple[plt.Figure, Any]:
    """Slice x frame montage of one cine (ED, mid-systole, ES, mid-diastole) and, with
    ``interactive=True``, the ipywidgets viewer (:func:`cmrkit.widgets.slice_frame_viewer`).

    Returns ``(figure, viewer_or_None)``; the figure is the static view saved as ``bg_cine_viewer``.
    """
    from ..widgets import slice_frame_viewer

    subj = cohort.subject(subject_id) if subject_id else _pick_subject(cohort)
    T = subj.n_frames
    ed = int(subj.ed_frame or 0)
    es = int(subj.es_frame) if subj.es_frame is not None else T // 3
    frames = [ed, (ed + es) // 2, es, (es + T) // 2]
    names = ["ED", "mid-systole", "ES", "mid-diastole"]
    if len(set(frames)) < 4:
        frames, names = [ed, es], ["ED", "ES"]
    fig = slice_frame_viewer(
        subj.cine,
        subj.cine_labels,
        interactive=False,
        frames=frames,
        frame_names=names,
        max_slices=6,
        crop=True,
        title=f"{subj.subject_id}: short-axis slices (base at the top) x cardiac phases",
    )
    viewer = slice_frame_viewer(subj.cine, subj.cine_labels, interactive=True) if interactive else None
    if rep is not None:
        rep.save_figure(
            fig,
            "bg_cine_viewer",
            caption=f"Static view of the slice x frame viewer: {subj.subject_id}, six short-axis slices from "
            f"base to apex at ED, mid-systole, ES and mid-diastole (frames {frames}), labels overlaid "
            "(LV red, myocardium green, RV blue). Set INTERACTIVE = True for sliders.",
        )
    return fig, viewer


# ================================================================================ 5. realism
def _no_real_data(real_dir: str | Path | None) -> str:
    """Why there is no real M&Ms data: the configured folder is absent, or none is configured."""
    if real_dir in (None, ""):
        return "no real M&Ms folder configured (realdata.mnms is empty)"
    return f"real M&Ms folder {real_dir} absent"


def _ed_measurements(subj: Subject) -> dict[str, float]:
    img, lab = subj.frame(subj.ed_frame), subj.label_ed
    c = realism.tissue_contrast(img, lab, noise="residual")
    s_res = realism.snr(img, lab, method="residual")
    s_air = realism.snr(img, lab, method="air")
    return {
        "ratio": c.summary()["ratio"],
        "cnr": c.summary()["cnr"],
        "snr_residual": s_res.summary()["snr"],
        "snr_air": s_air.summary()["snr"],
        "n_air_planes": s_air.summary()["n_planes"],
        "ratio_planes": c.ratio,
        "snr_planes": s_res.snr,
    }


def real_vs_phantom(
    cohort: Cohort,
    rep: Report | None = None,
    *,
    real: Sequence[Subject] | None = None,
    real_dir: str | Path | None = None,
    n: int = 3,
    fov_mm: float = 150.0,
    n_measure: int = N_MEASURE,
) -> tuple[plt.Figure, dict[str, Any]]:
    """Mid-ventricular ED slices of real M&Ms cases (top) and phantom subjects (bottom) at one
    physical scale (``fov_mm`` square around the LV), labels as contours, and per-slice contrast and
    SNR of both (right; the first ``n_measure`` subjects of the cohort). With no real data the top
    row says so.

    The real cases are ``real`` or else read from ``real_dir`` (the run's ``cfg.realdata.mnms``;
    ``None``/``""`` = no real data). Returns the figure and the per-subject measurements
    (``{"real": {...}, "phantom": {...}}``).
    """
    real = list(real) if real is not None else load_real_mnms(real_dir)
    pick = cohort.healthy_ids()[:n]
    pick += [i for i in cohort.ids if i not in pick][: n - len(pick)]
    phan = [cohort.subject(i) for i in pick]
    fig = plt.figure(figsize=(10.0, 5.2))
    gs = fig.add_gridspec(2, n + 1, width_ratios=[1] * n + [1.35], wspace=0.06, hspace=0.3)
    meas: dict[str, dict[str, Any]] = {"real": {}, "phantom": {}}
    for row, (group, subs) in enumerate((("real", real[:n]), ("phantom", phan))):
        for j in range(n):
            ax = fig.add_subplot(gs[row, j])
            _no_ticks(ax)
            if j >= len(subs):
                ax.axis("off")
                if group == "real" and not real and j == 0:
                    why = (
                        "no real M&Ms folder configured\n(realdata.mnms is empty)"
                        if real_dir in (None, "")
                        else f"real M&Ms data absent\n(expected in {real_dir})"
                    )
                    ax.text(
                        0.0,
                        0.5,
                        f"{why}\nno real-data panel",
                        transform=ax.transAxes,
                        fontsize=8,
                        va="center",
                    )
                continue
            s = subs[j]
            lab3 = s.label_ed
            z = mid_slice(lab3)
            img, lab = _display(s.frame(s.ed_frame)[:, :, z]), _display(lab3[:, :, z])
            rs, cs = _crop_box(lab, s.spacing, fov_mm)
            crop = img[rs, cs]
            lo, hi = np.percentile(crop, [0.5, 99.5])
            ny, nx = crop.shape
            ext = [0, nx * s.spacing[0], ny * s.spacing[1], 0]
            ax.imshow(crop, cmap="gray", vmin=lo, vmax=hi, extent=ext)
            m = lab[rs, cs]
            for k, col in LABEL_COLOURS.items():
                if (m == k).any():
                    ax.contour(
                        np.linspace(0, ext[1], nx),
                        np.linspace(0, ext[2], ny),
                        (m == k).astype(float),
                        levels=[0.5],
                        colors=[col],
                        linewidths=0.6,
                    )
            ax.set_xlim(0, fov_mm)
            ax.set_ylim(fov_mm, 0)
            vendor = s.covariates.get("vendor")
            name = s.subject_id.replace("better_", "").replace("worse_", "")
            ax.set_title(
                f"{'M&Ms' if group == 'real' else 'phantom'} {name}" + (f" (vendor {vendor})" if vendor else ""),
                fontsize=8,
            )
            if j == 0:
                ax.set_ylabel("real (M&Ms)" if group == "real" else "phantom", fontsize=9)
                ax.plot([8, 58], [fov_mm - 8] * 2, color="w", lw=2)
                ax.text(33, fov_mm - 12, "50 mm", color="w", ha="center", fontsize=7)
    for s in real:
        meas["real"][s.subject_id] = _ed_measurements(s)
    for sid in cohort.measured_ids(n_measure):
        meas["phantom"][sid] = _ed_measurements(cohort.subject(sid))
    axr = fig.add_subplot(gs[0, n])
    axs = fig.add_subplot(gs[1, n])
    for i, (group, col) in enumerate((("real", "C1"), ("phantom", "C0"))):
        ratios = np.concatenate([np.ravel(v["ratio_planes"]) for v in meas[group].values()] or [np.array([])])
        snrs = np.concatenate([np.ravel(v["snr_planes"]) for v in meas[group].values()] or [np.array([])])
        for ax, vals in ((axr, ratios), (axs, snrs)):
            vals = vals[np.isfinite(vals)]
            if vals.size >= 2:
                bp = ax.boxplot([vals], positions=[i], widths=0.5, patch_artist=True, showfliers=False)
                bp["boxes"][0].set_facecolor(col)
                bp["boxes"][0].set_alpha(0.5)
                jit = np.random.default_rng(0).uniform(-0.15, 0.15, vals.size)
                ax.scatter(i + jit, vals, s=5, color=col, zorder=3)
            else:
                ax.text(i, 0.5, "n/a", transform=ax.get_xaxis_transform(), ha="center", fontsize=8)
    for ax, yl in ((axr, "blood / myocardium ratio"), (axs, "myocardial SNR\n(M&Ms: upper bound)")):
        ax.set_xticks(
            [0, 1],
            [
                f"M&Ms\n({len(real)} cases)",
                f"{'phantom' if cohort.dataset == 'phantom' else cohort.dataset}\n({len(meas['phantom'])})",
            ],
            fontsize=7,
        )
        ax.set_xlim(-0.6, 1.6)
        ax.yaxis.tick_right()
        ax.yaxis.set_label_position("right")
        ax.set_ylabel(yl, fontsize=8)
        ax.tick_params(labelsize=7)
    axr.set_title("per ED slice", fontsize=8)
    fig.subplots_adjust(left=0.04, right=0.93, top=0.93, bottom=0.08)
    if rep is not None:
        rep.save_figure(
            fig,
            "bg_real_vs_phantom",
            caption="Mid-ventricular end-diastolic short-axis slices of real M&Ms cases (top; Campello et al. 2021) "
            f"and phantom subjects (bottom), each a {fov_mm:.0f} mm square around the LV, with the "
            "labels (LV red, myocardium green, RV blue). Right: blood/myocardium intensity ratio and "
            "myocardial SNR per ED slice (cmrkit.metrics.realism; residual noise estimator, which overestimates "
            "the SNR of interpolated real images)." + ("" if real else " Real data absent: top row empty."),
        )
    return fig, meas


def _stat(vals: Sequence[float]) -> tuple[float, float | None, int]:
    v = np.asarray([x for x in vals if x is not None and np.isfinite(x)], float)
    if v.size == 0:
        return float("nan"), None, 0
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else None), int(v.size)


def _tag_display(tag: TaggingSlice) -> np.ndarray:
    """TaggingSlice ``(X, Y, T)`` -> ``(T, H, W)`` display frames."""
    return np.asarray(tag.image, float).transpose(2, 1, 0)


def _landmark_masks(lm_px: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(T, H, W)`` myocardium masks between the endocardial (k=0) and epicardial (k=6) landmark rings."""
    from skimage.draw import polygon2mask

    out = np.zeros((lm_px.shape[0],) + shape, bool)
    for t, lm in enumerate(lm_px):
        pts = lm.reshape(2, 24, 7)
        endo = np.stack([pts[1, :, 0], pts[0, :, 0]], 1)  # (row, col) = (y, x)
        epi = np.stack([pts[1, :, 6], pts[0, :, 6]], 1)
        out[t] = polygon2mask(shape, epi) & ~polygon2mask(shape, endo)
    return out


def _material_frame(seq: np.ndarray, disp: np.ndarray, px_mm: float, stride: int = 1) -> np.ndarray:
    """Resample tagged frames ``(T, H, W)`` at the current positions of the ED pixels, which removes the
    motion. ``disp`` is the phantom's ground-truth Lagrangian displacement ``(T, 2, Xs, Ys)`` in mm
    along image i, j at the tagging pixels ``(stride * a, stride * b)`` (bilinearly interpolated to
    every pixel)."""
    from scipy.ndimage import map_coordinates

    T, H, W = seq.shape
    rows, cols = np.mgrid[0:H, 0:W].astype(float)
    out = np.empty_like(seq)
    for t in range(T):
        # displacement components on the display grid (row = j, col = i), sampled at pixel / stride
        u = [
            map_coordinates(np.asarray(disp[t, c], float).T, [rows / stride, cols / stride], order=1, mode="nearest")
            / px_mm
            for c in (0, 1)
        ]
        out[t] = map_coordinates(seq[t], [rows + u[1], cols + u[0]], order=3, mode="nearest")
    return out


def measure_tagging(cohort: Cohort, subject: Subject, slices: Sequence[int] = (1,)) -> list[dict[str, Any]]:
    """Tag period and modulation depth of the phantom's tagging slices in the myocardium, two ways:

    - ``measurement``: in the image, within myocardium masks drawn from the ground-truth landmarks of
      every frame (what a measurement on real images sees: relaxation *and* deformation, which
      spreads the harmonic peak);
    - ``material``: after resampling every frame at the current positions of the ED pixels (the
      ground-truth motion removed), within the ED myocardium mask (relaxation only).

    Returns one dict per slice.
    """
    gt = cohort.ground_truth(subject)
    out = []
    for k in slices:
        tag = subject.tagging[k]
        seq = _tag_display(tag)
        px = tag.spacing[0]
        masks = _landmark_masks(gt["landmarks"]["px"][k], seq.shape[1:])
        m = realism.tag_period_and_contrast(seq, masks, px_mm=px)
        field_k = np.asarray(gt["displacement"]["field"][k], float)
        stride = int(np.asarray(gt["displacement"].get("stride", round(seq.shape[2] / field_k.shape[-2]))))
        mat = _material_frame(seq, field_k, px, stride)
        mm = realism.tag_period_and_contrast(mat, masks[0], px_mm=px)
        out.append(
            {
                "subject": subject.subject_id,
                "slice": tag.name,
                "measurement": m,
                "material": mm,
                "times_ms": np.asarray(gt["times"]["tag_ms"], float),
                "es_frame": int(np.argmin(gt["strain"]["exact"]["ecc"][k])),
            }
        )
    return out


def measure_cohort_tagging(cohort: Cohort, slices: Sequence[int] = (1,), n: int = N_MEASURE) -> list[dict[str, Any]]:
    """:func:`measure_tagging` of the given tagging slices (default the mid slice) of the first ``n``
    subjects (:meth:`Cohort.measured_ids`); ``[]`` for a data set without ground truth."""
    if not cohort.has_ground_truth:
        return []
    out: list[dict[str, Any]] = []
    for sid in cohort.measured_ids(n):
        out += measure_tagging(cohort, cohort.subject(sid), slices=slices)
    return out


def realism_table(
    cohort: Cohort,
    rep: Report | None = None,
    *,
    real_measurements: Mapping[str, Mapping[str, Any]] | None = None,
    phantom_measurements: Mapping[str, Mapping[str, Any]] | None = None,
    real_dir: str | Path | None = None,
    tagging: Sequence[Mapping[str, Any]] | None = None,
) -> pd.DataFrame:
    """Table ``bg_realism``: contrast, CNR and SNR of real M&Ms and phantom ED volumes; phantom tag
    period and fading against UK Biobank acquisition values and the SPAMM relaxation model.

    Measurements from :func:`real_vs_phantom` and :func:`measure_cohort_tagging` are reused when
    given; otherwise the real cases are read from ``real_dir`` (the run's ``cfg.realdata.mnms``).
    """
    if real_measurements is None:
        real_measurements = {s.subject_id: _ed_measurements(s) for s in load_real_mnms(real_dir)}
    if phantom_measurements is None:
        phantom_measurements = {i: _ed_measurements(cohort.subject(i)) for i in cohort.measured_ids()}
    rows: list[TableRow] = []
    metrics = (
        ("ratio", "blood/myocardium ratio", ""),
        ("cnr", "CNR", ""),
        ("snr_residual", "SNR (residual noise)", ""),
        ("snr_air", "SNR (air noise)", ""),
    )
    for sid, m in real_measurements.items():
        for key, name, units in metrics:
            rows.append(
                TableRow(
                    f"cine/M&Ms/{sid}",
                    name,
                    m[key],
                    units=units,
                    note=""
                    if np.isfinite(m["snr_air"]) or key != "snr_air"
                    else (
                        "M&Ms: no pure-noise air region (cropped field of view, suppressed or interpolated "
                        "background noise), so SNR (air noise) is n/a"
                    ),
                )
            )
    for group, meas in (("M&Ms", real_measurements), ("phantom", phantom_measurements)):
        if not meas:
            rows.append(
                TableRow(f"cine/{group}/all", "cases", 0.0, note=f"{_no_real_data(real_dir)}: no real-data comparison")
            )
            continue
        for key, name, units in metrics:
            mean, sd, k = _stat([v[key] for v in meas.values()])
            rows.append(TableRow(f"cine/{group}/all", name, mean, sd=sd, n=k, units=units))
    # tagging
    if tagging:
        per: dict[str, list[float]] = {}
        for rec in tagging:
            es = rec["es_frame"]
            for frame_kind in ("measurement", "material"):
                m: realism.TagMeasurement = rec[frame_kind]
                for key, v in (
                    ("period", m.period_mm),
                    ("c0", m.contrast[0]),
                    ("ces", m.contrast[es]),
                    ("clast", m.contrast[-1]),
                    ("fes", m.fading[es]),
                    ("flast", m.fading[-1]),
                ):
                    per.setdefault(f"{frame_kind}/{key}", []).append(float(v))
            for key, idx in (("t0", 0), ("tes", es), ("tlast", -1)):
                per.setdefault(key, []).append(float(rec["times_ms"][idx]))
        names = {
            "period": ("tag period", "mm"),
            "c0": ("modulation depth, first frame", ""),
            "ces": ("modulation depth, ES", ""),
            "clast": ("modulation depth, last frame", ""),
            "fes": ("fading ES / first frame", ""),
            "flast": ("fading last / first frame", ""),
        }
        for frame_kind, row in (
            ("measurement", "tagging/phantom mid slice, image (moving myocardium)"),
            ("material", "tagging/phantom mid slice, motion removed (ground-truth warp)"),
        ):
            for key, (name, units) in names.items():
                if frame_kind == "material" and key == "period":
                    continue
                mean, sd, k = _stat(per[f"{frame_kind}/{key}"])
                rows.append(TableRow(row, name, mean, sd=sd, n=k, units=units))
        t0, tes, tl = (float(np.mean(per[k])) for k in ("t0", "tes", "tlast"))
        rows.append(
            TableRow(
                "tagging/UK Biobank (thesis §4.3.1)",
                "tag period",
                realism.UKB_TAG_SPACING_MM,
                units="mm",
                note="UK Biobank tag grid spacing 6 mm (thesis §4.3.1); the FFT of Ferdian et al.'s real UK "
                "Biobank example (EdwardFerdian/mri-tagging-strain) gives 5.9 mm. No real tagging file is "
                "available here, so fading is compared with the SPAMM relaxation model only.",
            )
        )
        for t1 in (850.0, realism.MYOCARDIUM_T1_MS, 1200.0):
            e0, ees, el = realism.expected_tag_contrast([t0, tes, tl], t1, order=2)
            row = f"tagging/SPAMM relaxation model (T1 {t1:.0f} ms)"
            rows.append(
                TableRow(
                    row,
                    "fading ES / first frame",
                    float(ees / e0),
                    note="Relaxation-only modulation depth of a 1-2-1 SPAMM grid, 90 degrees (the phantom's "
                    "tagging), myocardial T1 850-1200 ms (Stanisz 2005: 1030 ms), at the phantom's mean "
                    f"frame times {t0:.0f}, {tes:.0f}, {tl:.0f} ms after the R wave; motion, blur and "
                    "noise ignored, so measured values lie at or below it.",
                )
            )
            rows.append(TableRow(row, "fading last / first frame", float(el / e0)))
    if rep is not None:
        rep.save_table(
            "bg_realism",
            rows,
            notes=[
                "Cine: end-diastolic volumes; per slice, blood (label 1) and myocardium (label 2) masks eroded by 1 "
                "pixel; "
                "values are medians over slices, then mean ± sd over subjects.",
                "Noise sigma: 'residual' = Immerkaer (1996) Laplacian-difference residual of bright tissue, robust "
                "sd / 6; "
                "'air' = sd of air / 0.655 (Rayleigh; Kaufman 1989), only where a dark region passes Rayleigh and "
                "whiteness checks. SNR = sqrt(M^2 - sigma^2) / sigma of the myocardium (Gudbjartsson & Patz 1995).",
                "M&Ms noise is spatially correlated (in G1K1V3's air the Immerkaer residual sd is 0.4 x 6 x the "
                "pixel sd, "
                "1.0 for white noise; interpolated reconstruction), so their residual-noise SNR and CNR are upper "
                "bounds. The phantom's noise is white Rician; its field of view holds no air outside the body, and "
                "the dark regions accepted as 'air' are mostly lung (low signal), so its SNR (air noise) is biased "
                "low.",
                "Tagging: modulation depth = 2|F(k)|/F(0) of the first harmonic within the myocardium, mean of the "
                "two tag "
                "directions. 'image': masks from the ground-truth landmarks of every frame, so deformation (which "
                "spreads "
                "the harmonic peak) lowers it in systole as on real images; 'motion removed': every frame resampled "
                "(cubic) at the ground-truth positions of the ED pixels, ED mask, so only relaxation (and slight "
                "interpolation blur) remains.",
            ],
        )
    return pd.DataFrame([r.__dict__ for r in rows])[["row", "metric", "value", "sd", "n", "units"]]


# ================================================================================ 6. tagging physics
def tagging_physics(
    cohort: Cohort,
    rep: Report | None = None,
    *,
    subject_id: str | None = None,
    tagging: Sequence[Mapping[str, Any]] | None = None,
) -> tuple[plt.Figure, list[dict[str, Any]]]:
    """SPAMM tag pattern, harmonic spectrum, tags deforming with the heart and fading with T1.

    Needs the phantom (ground-truth landmarks). Returns the figure and the per-slice tag
    measurements of the chosen subject (:func:`measure_tagging`).
    """
    if not cohort.has_ground_truth:
        return _physics_without_truth(rep, "bg_tagging_physics"), []
    subj = cohort.subject(subject_id) if subject_id else _pick_subject(cohort)
    if len(subj.tagging) < 2:
        raise ValueError(f"subject {subj.subject_id} has no tagging slices")
    gt = cohort.ground_truth(subj)
    recs = list(tagging) if tagging is not None else measure_tagging(cohort, subj, slices=range(len(subj.tagging)))
    k = 1
    tag = subj.tagging[k]
    seq = _tag_display(tag)
    lm = np.asarray(gt["landmarks"]["px"][k])
    times = np.asarray(gt["times"]["tag_ms"], float)
    es = int(np.argmin(gt["strain"]["exact"]["ecc"][k]))
    last = len(times) - 1
    frames = [0, es, last] if 0 < es < last else [0, last // 2, last]
    names = (
        {0: "first frame", es: "ES", last: "last frame"}
        if 0 < es < last
        else {0: "first frame", last // 2: "mid", last: "last frame"}
    )
    px = tag.spacing[0]
    fig = plt.figure(figsize=(10.0, 6.0))
    gs = fig.add_gridspec(2, 4, wspace=0.28, hspace=0.38)
    # (a) tag profile
    ax = fig.add_subplot(gs[0, 0])
    x = np.linspace(0, 2 * realism.UKB_TAG_SPACING_MM, 400)
    ph = 2 * np.pi * x / realism.UKB_TAG_SPACING_MM
    for order, name, ls in ((1, "1-1 SPAMM", "--"), (2, "1-2-1 SPAMM", "-")):
        ax.plot(x, realism.spamm_profile(ph, 90.0, order), ls=ls, label=name, color="k" if order == 2 else "0.5")
    ax.set_xlabel("position across the tags (mm)", fontsize=8)
    ax.set_ylabel("Mz after tagging / M0", fontsize=8)
    ax.set_ylim(-0.05, 1.3)
    ax.legend(fontsize=7, frameon=False, loc="upper center", ncol=2)
    ax.tick_params(labelsize=7)
    ax.set_title("(a) tag profile, 90°, 6 mm", fontsize=9, loc="left")
    # (b) frames with landmarks
    allpts = lm.reshape(len(times), 2, -1)
    c0 = np.array([allpts[:, 0].min(), allpts[:, 0].max()])
    r0 = np.array([allpts[:, 1].min(), allpts[:, 1].max()])
    half = 0.5 * max(np.ptp(c0), np.ptp(r0)) + 14
    cc, rc = c0.mean(), r0.mean()
    cs = slice(int(max(cc - half, 0)), int(min(cc + half, seq.shape[2])))
    rs = slice(int(max(rc - half, 0)), int(min(rc + half, seq.shape[1])))
    for j, fr in enumerate(frames):
        a = fig.add_subplot(gs[0, 1 + j])
        a.imshow(seq[fr][rs, cs], cmap="gray", vmin=0, vmax=np.percentile(seq[fr][rs, cs], 99.5))
        pts = lm[fr].reshape(2, 24, 7)
        a.plot(pts[0, :, 0] - cs.start, pts[1, :, 0] - rs.start, ".", color="#ff5050", ms=2)
        a.plot(pts[0, :, 6] - cs.start, pts[1, :, 6] - rs.start, ".", color="#ffd700", ms=2)
        _no_ticks(a)
        lab = names[fr] + (" (ES)" if fr == es and names[fr] != "ES" else "")
        a.set_title(
            ("(b) " if j == 0 else "") + f"{lab}, {times[fr]:.0f} ms", fontsize=9, loc="left" if j == 0 else "center"
        )
    # (c) spectrum
    a = fig.add_subplot(gs[1, 0])
    roi = seq[0][rs, cs]
    win = np.outer(np.hanning(roi.shape[0]), np.hanning(roi.shape[1]))
    n = 256
    spec = np.abs(np.fft.fftshift(np.fft.fft2((roi - roi.mean()) * win, s=(n, n))))
    f_mm = np.fft.fftshift(np.fft.fftfreq(n, d=px))
    a.imshow(np.log1p(spec), cmap="magma", extent=[f_mm[0], f_mm[-1], f_mm[-1], f_mm[0]])
    m0 = recs[k]["measurement"] if len(recs) > k else recs[0]["measurement"]
    lim = 1.6 / realism.UKB_TAG_SPACING_MM
    circ = plt.Circle((0, 0), 1 / m0.period_mm, fill=False, color="w", ls=":", lw=0.8)
    a.add_patch(circ)
    a.set_xlim(-lim, lim)
    a.set_ylim(lim, -lim)
    a.set_xlabel("cycles / mm", fontsize=8)
    a.tick_params(labelsize=7)
    a.set_title(f"(c) spectrum: period {m0.period_mm:.2f} mm", fontsize=9, loc="left")
    # (d) fading, normalised to the first frame
    a = fig.add_subplot(gs[1, 1:3])
    tt = np.linspace(times[0], times[-1] + 20, 200)
    ref0 = {
        t1: float(realism.expected_tag_contrast(times[0], t1, order=2))
        for t1 in (850.0, realism.MYOCARDIUM_T1_MS, 1200.0)
    }
    lo, mid, hi = (
        realism.expected_tag_contrast(tt, t1, order=2) / ref0[t1] for t1 in (850.0, realism.MYOCARDIUM_T1_MS, 1200.0)
    )
    a.fill_between(tt, lo, hi, color="0.85", label="SPAMM relaxation model, T1 850-1200 ms")
    a.plot(tt, mid, color="0.4", lw=1, label=f"relaxation model, T1 {realism.MYOCARDIUM_T1_MS:.0f} ms")
    for rec, col in zip(recs, ("C0", "C1", "C2")):
        a.plot(
            rec["times_ms"],
            rec["material"].fading,
            marker=".",
            ms=4,
            color=col,
            label=f"{rec['slice']}, motion removed",
        )
        a.plot(rec["times_ms"], rec["measurement"].fading, ls="--", lw=1, color=col, label=f"{rec['slice']}, image")
    a.axvline(times[es], color="k", ls=":", lw=0.8)
    a.text(times[es], 0.02, " ES", transform=a.get_xaxis_transform(), ha="left", fontsize=8)
    a.set_xlabel("time after tagging at the R wave (ms)", fontsize=8)
    a.set_ylabel("tag modulation depth / first frame", fontsize=8)
    a.set_ylim(0, 1.45)
    a.set_yticks(np.arange(0, 1.01, 0.2))
    a.tick_params(labelsize=7)
    a.legend(fontsize=6.5, frameon=False, loc="upper right", ncol=2)
    a.set_title("(d) tag fading in the myocardium", fontsize=9, loc="left")
    # (e) strain from the deforming tags
    a = fig.add_subplot(gs[1, 3])
    for key, name, col in (("ecc", "E$_{cc}$", "C3"), ("err", "E$_{rr}$", "C0")):
        a.plot(times, gt["strain"]["exact"][key][k], color=col, label=f"{name} exact")
        a.plot(
            times, gt["strain"]["landmark"][key][k], color=col, ls="none", marker="o", ms=2.5, label=f"{name} landmarks"
        )
    a.axhline(0, color="k", lw=0.5)
    a.set_ylim(None, float(np.max(gt["strain"]["exact"]["err"][k])) * 1.6 + 0.05)
    a.set_xlabel("time (ms)", fontsize=8)
    a.set_ylabel("Green strain", fontsize=8)
    a.tick_params(labelsize=7)
    a.legend(fontsize=6.5, frameon=False)
    a.set_title("(e) strain, mid slice", fontsize=9, loc="left")
    fig.subplots_adjust(left=0.06, right=0.99, top=0.94, bottom=0.09)
    if rep is not None:
        rep.save_figure(
            fig,
            "bg_tagging_physics",
            caption=f"SPAMM tagging on the phantom ({subj.subject_id}, mid slice). (a) Longitudinal magnetisation "
            "left by a 90° SPAMM block (Axel & Dougherty 1989): 1-1 and 1-2-1 profiles. (b) Tagged "
            "frames with the ground-truth endocardial (red) and epicardial (yellow) landmarks: the "
            "grid deforms with the myocardium and fades. (c) Spectrum of the first frame: the "
            "first-harmonic peaks on the circle of the measured tag period. (d) First-harmonic modulation "
            "depth in the myocardium relative to the first frame, in the image (dashed: relaxation and "
            "deformation) and with the ground-truth motion removed (solid: relaxation), against the "
            "relaxation-only SPAMM model. (e) Exact Green strain of "
            "the analytic motion and Ferdian landmark strain.",
        )
    return fig, recs


def _physics_without_truth(rep: Report | None, artefact: str, example: Mapping[str, float] | None = None) -> plt.Figure:
    """The parts of the tagging / strain figures that need no ground truth, and a panel saying what is missing."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(8.0, 3.2))
    if example is None:
        t = np.linspace(0, 800, 200)
        for t1 in (850.0, realism.MYOCARDIUM_T1_MS, 1200.0):
            a.plot(t, realism.expected_tag_contrast(t, t1, order=2), label=f"T1 {t1:.0f} ms")
        a.set_xlabel("time after tagging (ms)", fontsize=8)
        a.set_ylabel("modulation depth (relaxation model)", fontsize=8)
        a.set_title("(a) SPAMM tag fading, 1-2-1, 90°", fontsize=9, loc="left")
    else:
        lam = np.linspace(0.6, 1.4, 200)
        a.plot(lam, (lam**2 - 1) / 2, color="C3", label="Green-Lagrange")
        a.plot(lam, lam - 1, "--", color="0.3", label="linear")
        a.plot([example["stretch"]] * 2, [example["green"], example["linear"]], "ko", ms=4)
        a.set_xlabel("stretch L / L0", fontsize=8)
        a.set_ylabel("strain", fontsize=8)
        a.set_title("(a) Green-Lagrange vs linear strain", fontsize=9, loc="left")
    a.legend(fontsize=7, frameon=False)
    a.tick_params(labelsize=7)
    b.axis("off")
    b.text(
        0.5,
        0.5,
        "This panel needs ground-truth motion (landmarks,\ndisplacements): run with DATASET = 'phantom'.",
        ha="center",
        va="center",
        fontsize=8,
        transform=b.transAxes,
    )
    fig.tight_layout()
    if rep is not None:
        rep.save_figure(
            fig,
            artefact,
            caption="Only the parts without ground truth: this data set has no phantom ground "
            "truth (landmarks, displacements).",
        )
    return fig


# ================================================================================ 7. strain, bullseye
def green_lagrange_example(l0: float = 10.0, l: float = 8.0) -> dict[str, float]:
    """Green-Lagrange vs linear strain of a segment of length ``l0`` deformed to ``l`` (thesis eq. 4.2):
    ``E = (l^2 - l0^2) / (2 l0^2)``, ``e = (l - l0) / l0``. Returns both, the stretch ``l / l0`` and the
    identity ``E = e + e^2 / 2``."""
    if not (l0 > 0 and l >= 0):
        raise ValueError(f"need l0 > 0 and l >= 0, got l0={l0}, l={l}")
    from ..strain import segment_strain

    green = float(segment_strain(l * l, l0 * l0, "green"))
    linear = float(segment_strain(l * l, l0 * l0, "linear"))
    return {
        "l0": float(l0),
        "l": float(l),
        "stretch": l / l0,
        "green": green,
        "linear": linear,
        "green_from_linear": linear + 0.5 * linear * linear,
    }


def _subject_bullseye(cohort: Cohort, subj: Subject) -> dict[int, float]:
    """Regional peak E_cc per AHA segment from the ground-truth landmarks of the basal, mid and apical
    tagging slices (the slice frame -- septum direction, sense, first spoke -- from the ground truth)."""
    gt = cohort.ground_truth(subj)
    info = gt["attrs"]["info"]
    angles = spoke_segment_angles(info["theta_rv"], info["sense"], info["landmark_theta0"])
    vals: dict[int, float] = {}
    for k, level in enumerate(("basal", "mid", "apical")):
        vals.update(regional_peak_ecc(gt["landmarks"]["mm"][k], level, angles))
    return vals


def strain_bullseye(
    cohort: Cohort, rep: Report | None = None, *, example: tuple[float, float] = (10.0, 8.0)
) -> tuple[plt.Figure, dict[str, Any]]:
    """Green-Lagrange strain: (a) worked example and curves, (b) one phantom slice with cmrkit.strain,
    (c, d) AHA bullseyes of regional peak E_cc of a normal and a dysfunctional phantom heart.

    Returns the figure and ``{"example", "slice", "bullseye"}`` (numbers printed by the notebook).
    """
    from ..strain import strain_from_landmarks

    ex = green_lagrange_example(*example)
    if not cohort.has_ground_truth:
        return _physics_without_truth(rep, "bg_strain_bullseye", ex), {"example": ex, "slice": None, "bullseye": {}}
    healthy = _pick_subject(cohort, healthy=True)
    sick_ids = cohort.pathological_ids()
    sick = cohort.subject(sick_ids[0]) if sick_ids else None
    gt = cohort.ground_truth(healthy)
    lm = np.asarray(gt["landmarks"]["mm"][1], float)
    times = np.asarray(gt["times"]["tag_ms"], float)
    g = strain_from_landmarks(lm, "green")
    li = strain_from_landmarks(lm, "linear")
    fig = plt.figure(figsize=(10.0, 6.4))
    gs = fig.add_gridspec(2, 2, wspace=0.25, hspace=0.3)
    # (a) worked example
    ax = fig.add_subplot(gs[0, 0])
    lam = np.linspace(0.6, 1.4, 200)
    ax.plot(lam, (lam**2 - 1) / 2, color="C3", label="Green-Lagrange  E = (L² − L₀²) / 2L₀²")
    ax.plot(lam, lam - 1, color="0.3", ls="--", label="linear  e = (L − L₀) / L₀")
    ax.axhline(0, color="k", lw=0.5)
    ax.axvline(1, color="k", lw=0.5)
    ax.plot([ex["stretch"]] * 2, [ex["green"], ex["linear"]], "o", color="k", ms=4)
    ax.annotate(
        f"L₀ = {ex['l0']:g} mm → L = {ex['l']:g} mm\nE = {ex['green']:.3f}, e = {ex['linear']:.3f}",
        xy=(ex["stretch"], ex["green"]),
        xytext=(ex["stretch"] + 0.1, -0.3),
        fontsize=7.5,
        arrowprops=dict(arrowstyle="->", lw=0.6),
    )
    ax.set_xlabel("stretch L / L₀", fontsize=8)
    ax.set_ylabel("strain", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    ax.set_title("(a) Green-Lagrange vs linear strain", fontsize=9, loc="left")
    # (b) one phantom slice
    ax = fig.add_subplot(gs[0, 1])
    ax.plot(times, g.Ecc, color="C3", label="E$_{cc}$ Green (landmarks)")
    ax.plot(times, li.Ecc, color="C3", ls="--", label="e$_{cc}$ linear")
    ax.plot(times, g.Err, color="C0", label="E$_{rr}$ Green (landmarks)")
    ax.plot(times, li.Err, color="C0", ls="--", label="e$_{rr}$ linear")
    ax.plot(times, gt["strain"]["exact"]["ecc"][1], "k:", lw=1, label="E$_{cc}$ exact (analytic motion)")
    ax.axhline(0, color="k", lw=0.5)
    es = int(np.argmin(g.Ecc))
    ax.axvline(times[es], color="k", ls=":", lw=0.6)
    ax.set_xlabel("time after the R wave (ms)", fontsize=8)
    ax.set_ylabel("strain", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_ylim(min(float(li.Ecc.min()), -0.05) * 1.25, max(float(g.Err.max()), 0.1) * 1.6)
    ax.legend(fontsize=6.5, frameon=False, ncol=2, loc="upper right")
    ax.set_title(
        f"(b) {healthy.subject_id}, mid slice: cmrkit.strain on ground-truth landmarks", fontsize=9, loc="left"
    )
    # (c, d) bullseyes
    be = {healthy.subject_id: _subject_bullseye(cohort, healthy)}
    if sick is not None:
        be[sick.subject_id] = _subject_bullseye(cohort, sick)
    for j, subj in enumerate([healthy] + ([sick] if sick is not None else [])):
        ax = fig.add_subplot(gs[1, j])
        hl: Sequence[int] = ()
        patho = cohort.pathology(subj.subject_id)
        if patho != "none":
            gtp = cohort.ground_truth(subj)["attrs"]["params"].get("pathology") or {}
            hl = [int(s) for s in gtp.get("segments", [])]
        bullseye_plot(
            be[subj.subject_id],
            ax=ax,
            vmin=-0.30,
            vmax=0.0,
            cmap="viridis",
            label="peak E$_{cc}$",
            highlight=hl,
            title="",
        )
        letter = "c" if j == 0 else "d"
        desc = "normal" if patho == "none" else patho
        ax.set_title(f"({letter}) {subj.subject_id}: {desc}", fontsize=9, loc="left")
    if sick is None:
        ax = fig.add_subplot(gs[1, 1])
        ax.axis("off")
        ax.text(
            0.5,
            0.5,
            "no subject with regional dysfunction in this cohort",
            ha="center",
            fontsize=8,
            transform=ax.transAxes,
        )
    fig.subplots_adjust(left=0.07, right=0.97, top=0.94, bottom=0.06)
    if rep is not None:
        rep.save_figure(
            fig,
            "bg_strain_bullseye",
            caption="(a) Green-Lagrange strain E = (L²−L₀²)/(2L₀²) against linear strain e = (L−L₀)/L₀ "
            f"(E = e + e²/2); worked example L₀ = {ex['l0']:g} mm, L = {ex['l']:g} mm. (b) Circumferential "
            "and radial strain of a phantom mid slice from its ground-truth landmarks (Ferdian et al. "
            "2020 definitions, cmrkit.strain), with the exact analytic E_cc. (c, d) AHA 17-segment "
            "bullseye (Cerqueira et al. 2002; basal outer ring, segment 1 anterior at the top, "
            "counter-clockwise; apex 17 has no tagging slice) of regional peak E_cc from the "
            "ground-truth landmarks of the basal, mid and apical tagging slices; outlined: the "
            "phantom's dysfunctional segments.",
        )
    return fig, {
        "example": ex,
        "slice": {
            "subject": healthy.subject_id,
            "peak_Ecc_green": float(g.Ecc.min()),
            "peak_Ecc_linear": float(li.Ecc.min()),
            "peak_Err_green": float(g.Err.max()),
            "peak_Err_linear": float(li.Err.max()),
            "peak_Ecc_exact": float(np.min(gt["strain"]["exact"]["ecc"][1])),
        },
        "bullseye": be,
    }


def strain_summary(strain: Mapping[str, Any]) -> str:
    """The numbers behind :func:`strain_bullseye`'s panels (a) and (b) as text: the worked example
    (Green vs linear strain and ``E = e + e^2/2``) and the peak strains of the mid slice."""
    ex = strain["example"]
    lines = [
        f"worked example: L0 = {ex['l0']:g} mm -> L = {ex['l']:g} mm: Green E = {ex['green']:.3f}, "
        f"linear e = {ex['linear']:.3f}, e + e^2/2 = {ex['green_from_linear']:.3f}"
    ]
    sl = strain.get("slice")
    if sl:
        lines.append(
            f"{sl['subject']} mid slice: peak Ecc Green {sl['peak_Ecc_green']:.3f} (exact {sl['peak_Ecc_exact']:.3f}), "
            f"linear {sl['peak_Ecc_linear']:.3f}; peak Err Green {sl['peak_Err_green']:.3f}, "
            f"linear {sl['peak_Err_linear']:.3f}"
        )
    return "\n".join(lines)


# ================================================================================ 8. phenotypes
_DIST_PANELS = (
    ("LVEDV", "LVEDV (mL)"),
    ("LVESV", "LVESV (mL)"),
    ("LVSV", "LVSV (mL)"),
    ("LVEF", "LVEF (%)"),
    ("LVMi", "LV mass / BSA (g/m²)"),
    ("RVEDV", "RVEDV (mL)"),
)


def _phenotype_values(table: pd.DataFrame) -> pd.DataFrame:
    """Kit phenotype columns (LVEDV ... LVMi) from the manifest's measured columns."""
    out = pd.DataFrame({"subject_id": table["subject_id"]})
    for k, col in MEASURED_COLUMNS.items():
        if col in table.columns:
            out[k] = table[col].astype(float)
    if {"LVEDV", "LVESV"} <= set(out.columns):
        out["LVSV"] = out["LVEDV"] - out["LVESV"]
    if "LVM" in out.columns:
        if "bsa" in table.columns:
            out["LVMi"] = out["LVM"] / table["bsa"].astype(float)
        elif {"height_cm", "weight_kg"} <= set(table.columns):
            out["LVMi"] = out["LVM"] / np.sqrt(
                table["height_cm"].astype(float) * table["weight_kg"].astype(float) / 3600
            )
    return out


def phenotype_distributions(cohort: Cohort, rep: Report | None = None) -> tuple[plt.Figure, pd.DataFrame]:
    """Cohort phenotypes by sex against the reference values (:data:`cmrkit.metrics.realism.UKB_REFERENCE`).

    Subjects with regional dysfunction are left out (the reference cohorts are healthy). Writes the
    table ``bg_phenotypes_vs_reference`` and the figure ``bg_phenotype_distributions``; returns the
    figure and :func:`cmrkit.metrics.realism.phenotype_comparison`'s table.
    """
    table = cohort.table
    if "sex" not in table.columns:
        raise ValueError("the cohort table has no 'sex' column; phenotypes are compared by sex")
    healthy = (table["pathology"].astype(str) == "none") if "pathology" in table.columns else np.ones(len(table), bool)
    if cohort.dataset != "phantom" and not np.any(healthy):
        healthy = np.ones(len(table), bool)
    cmp = realism.phenotype_comparison(table, subset=np.asarray(healthy))
    rows: list[TableRow] = []
    for r in cmp.itertuples(index=False):
        src = "Petersen 2017" if r.source.startswith("Petersen") else "Hudsmith 2005"
        kind = " range" if r.status == "loose" or "range" in r.source else ""
        row = f"{r.phenotype}/{r.sex}/{src}{kind}"
        rows.append(
            TableRow(
                row, "cohort", r.cohort_mean, sd=None if np.isnan(r.cohort_sd) else r.cohort_sd, n=r.n, units=r.units
            )
        )
        if r.ref_mean is not None and not pd.isna(r.ref_mean):
            rows.append(
                TableRow(
                    row,
                    "reference",
                    r.ref_mean,
                    sd=r.ref_sd,
                    units=r.units,
                    note=f"{r.source} [{r.status}]" if r.status != "verified" else "",
                )
            )
            rows.append(TableRow(row, "standardised difference", r.std_diff, units="sd"))
        else:
            rows.append(
                TableRow(row, "reference range low", r.range_lo, units=r.units, note=f"{r.source} [{r.status}]")
            )
            rows.append(TableRow(row, "reference range high", r.range_hi, units=r.units))
        rows.append(TableRow(row, "fraction within reference range", r.frac_in_range))
    n_h = int(np.sum(healthy))
    if rep is not None:
        rep.save_table(
            "bg_phenotypes_vs_reference",
            rows,
            notes=[
                f"Cohort: {n_h} of {len(table)} subjects without regional dysfunction, phenotypes measured from the "
                "phantom's label maps (manifest *_measured columns); LVSV = EDV − ESV, LVMi = LVM / BSA (Mosteller).",
                "References: Petersen et al. 2017 UK Biobank reference ranges (healthy "
                "Caucasians 45-74 y; LVEF and LVM/BSA verified, LVSV and the female 95 % ranges third-party "
                "transcriptions); "
                "Petersen's LVEDV/LVESV/RV mean ± sd could not be read, so Hudsmith et al. 2005 (SSFP, Oxford, not UK "
                "Biobank) stands in; RVEDV normal-zone limits are loose sanity bounds.",
                "Reference range: the published range where given, else mean ± 1.96 sd. Standardised difference = "
                "(cohort mean − reference mean) / reference sd.",
                "The reference cohorts exclude smokers, hypertension and BMI ≥ 30, the phantom cohort does not.",
            ],
        )
    vals = _phenotype_values(table.loc[np.asarray(healthy)].reset_index(drop=True))
    sexes = realism.sex_labels(table.loc[np.asarray(healthy), "sex"].reset_index(drop=True))
    fig, axes = plt.subplots(2, 3, figsize=(9.6, 5.6))
    rng = np.random.default_rng(0)
    for ax, (ph, name) in zip(axes.ravel(), _DIST_PANELS):
        for i, sex in enumerate(("female", "male")):
            x0 = 2.0 * i
            v = vals.loc[sexes == sex, ph].dropna().to_numpy(float) if ph in vals.columns else np.array([])
            col = "C3" if sex == "female" else "C0"
            if v.size:
                ax.scatter(
                    x0 + rng.uniform(-0.18, 0.18, v.size), v, s=12, color=col, alpha=0.8, zorder=3, edgecolor="none"
                )
                if v.size >= 3:
                    bp = ax.boxplot([v], positions=[x0], widths=0.5, showfliers=False, patch_artist=True)
                    bp["boxes"][0].set_facecolor("none")
            refs = [r for r in realism.UKB_REFERENCE if r.phenotype == ph and r.sex == sex]
            for jj, r in enumerate(refs):
                xr = x0 + 0.55 + 0.22 * jj
                rg = r.range
                style = {"verified": "k", "transcribed": "0.45", "loose": "0.7"}[r.status]
                if rg is not None:
                    ax.plot([xr, xr], rg, color=style, lw=2.2 if r.status != "loose" else 1.2, solid_capstyle="butt")
                if r.mean is not None:
                    ax.plot([xr - 0.08, xr + 0.08], [r.mean] * 2, color=style, lw=2)
                ax.text(
                    xr,
                    rg[1] if rg else (r.mean or 0),
                    "P" if r.source.startswith("Petersen") else "H",
                    fontsize=6,
                    ha="center",
                    va="bottom",
                    color=style,
                )
        ax.set_xticks([0.2, 2.2], ["women", "men"], fontsize=8)
        ax.set_xlim(-0.7, 3.3)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color="C3", marker="o", ls="none", ms=4, label="phantom, women"),
        Line2D([], [], color="C0", marker="o", ls="none", ms=4, label="phantom, men"),
        Line2D([], [], color="k", lw=2, label="reference 95 % range (verified)"),
        Line2D([], [], color="0.45", lw=2, label="(transcribed)"),
        Line2D([], [], color="0.7", lw=1.2, label="(normal zone, loose)"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=7, frameon=False)
    fig.suptitle(
        f"Phantom phenotypes ({n_h} subjects without regional dysfunction) vs reference values "
        "(P: Petersen 2017 UK Biobank; H: Hudsmith 2005)",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    if rep is not None:
        rep.save_figure(
            fig,
            "bg_phenotype_distributions",
            caption="Phenotypes of the phantom cohort (subjects without regional dysfunction, measured from "
            "the label maps) by sex, against reference ranges (bars: mean ± 1.96 sd or the published "
            "range; tick: mean) from Petersen et al. 2017 (UK Biobank) and Hudsmith et al. 2005.",
        )
    return fig, cmp


# ================================================================================ all
def run_all(cfg: Config, rep: Report, *, interactive: bool = False, progress: bool = False) -> dict[str, Any]:
    """Every step in notebook order (``cmrkit run background`` without Jupyter); figures are closed.

    The real M&Ms cases come from ``cfg.realdata.mnms`` (empty or absent: the real-data parts say so).
    """
    cohort = load_cohort(cfg)
    rep.dataset = f"{rep.dataset.rstrip(')')}, {len(cohort.ids)} subjects)"  # as the notebook labels it
    real_dir = cfg.realdata.mnms
    out: dict[str, Any] = {}
    figs = []
    f, out["cycle"] = cardiac_cycle(cohort, rep)
    figs.append(f)
    out["indices"] = indices_table(cohort, rep)
    f, _ = cine_viewer(cohort, rep, interactive=interactive)
    figs.append(f)
    f, meas = real_vs_phantom(cohort, rep, real_dir=real_dir)
    figs.append(f)
    tag = measure_cohort_tagging(cohort)
    f, out["tagging"] = tagging_physics(cohort, rep)
    figs.append(f)
    out["realism"] = realism_table(
        cohort,
        rep,
        real_measurements=meas["real"],
        phantom_measurements=meas["phantom"],
        real_dir=real_dir,
        tagging=tag,
    )
    f, out["strain"] = strain_bullseye(cohort, rep)
    figs.append(f)
    out["strain_summary"] = strain_summary(out["strain"])
    f, out["phenotypes"] = phenotype_distributions(cohort, rep)
    figs.append(f)
    for f in figs:
        plt.close(f)
    return out
