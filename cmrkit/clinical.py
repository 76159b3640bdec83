"""Clinical indices of the left and right ventricle from label maps.

Definitions (as in ukbb_cardiac ``short_axis/eval_ventricular_volume.py``, Bai et al. 2018, which
also gives the 1.05 g/mL density and ED = frame 0, ES = minimum LV volume; Petersen et al. 2017 for
the UK Biobank reference ranges):

- volume of a structure = number of its voxels x voxel volume, with the voxel volume
  ``|det(A[:3, :3])|`` from the affine (or ``sx*sy*sz`` from spacings), in mL (1 mL = 1000 mm^3);
- ``LVEDV``/``LVESV``: LV blood-pool volume at ED/ES; ``LVSV = LVEDV - LVESV``;
  ``LVEF = 100 * LVSV / LVEDV`` (%); likewise ``RVEDV, RVESV, RVSV, RVEF`` for the RV blood pool;
- ``LVM`` = myocardial volume at ED x 1.05 g/mL (myocardial density);
- ``CO`` (cardiac output, L/min) = heart rate (bpm) x LVSV (mL) / 1000.

Labels: kit convention (0 background, 1 LV, 2 Myo, 3 RV; UK Biobank and M&Ms use it);
``labels="acdc"`` remaps ACDC's 1 RV / 3 LV first. An EF whose EDV is 0 is NaN (``null`` in JSON).

Command line: ``cmrkit phenotypes --ed LABEL_ED.nii.gz --es LABEL_ES.nii.gz [--labels ukbb|acdc|mnms]
[--heart-rate BPM] [--json] [--allow-swapped]``. ED is the largest LV volume of the cycle by
definition, so an ED file whose LV is smaller than the ES file's (ED and ES swapped, or mislabelled
frames) is refused unless ``--allow-swapped`` (then the numbers are printed as given, with a warning).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from cmrkit.io.nifti import (
    KIT_LABEL_LEGEND,
    DataError,
    check_label_values,
    check_same_geometry,
    load_nifti,
    voxel_volume_ml,
)
from cmrkit.labels import LV_BLOOD, LV_MYO, RV_BLOOD, remap_acdc_labels

__all__ = [
    "MYOCARDIAL_DENSITY_G_PER_ML",
    "PHENOTYPE_KEYS",
    "PHENOTYPE_UNITS",
    "MEASURED_COLUMNS",
    "LABEL_CONVENTIONS",
    "to_kit_labels",
    "phenotypes",
    "volume_curve",
    "sequence_volume_curves",
    "sequence_phenotypes",
    "wall_thickness",
    "cli_main",
]

#: myocardial density used for LV mass (g/mL), as in ukbb_cardiac.
MYOCARDIAL_DENSITY_G_PER_ML: float = 1.05
#: keys returned by :func:`phenotypes` (``CO`` is added when a heart rate is given).
PHENOTYPE_KEYS: tuple[str, ...] = ("LVEDV", "LVESV", "LVSV", "LVEF", "LVM", "RVEDV", "RVESV", "RVSV", "RVEF")
PHENOTYPE_UNITS: dict[str, str] = {
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
}
#: phenotype -> column under which cohort tables store it when measured from label maps (the phantom
#: manifest's ``*_measured`` columns; :func:`cmrkit.io.cohort.load_cohort` uses them for every data set)
MEASURED_COLUMNS: dict[str, str] = {
    "LVEDV": "lvedv_ml_measured",
    "LVESV": "lvesv_ml_measured",
    "LVEF": "lvef_pct_measured",
    "LVM": "lvm_g_measured",
    "RVEDV": "rvedv_ml_measured",
    "RVESV": "rvesv_ml_measured",
    "RVEF": "rvef_pct_measured",
}
#: accepted ``labels=`` names; all but ``acdc`` already use the kit convention.
LABEL_CONVENTIONS: tuple[str, ...] = ("ukbb", "kit", "mnms", "acdc")

#: what the label values mean in each convention (quoted when a label file is refused)
_LEGENDS = {
    "ukbb": f"UK Biobank convention: {KIT_LABEL_LEGEND}",
    "kit": f"kit convention: {KIT_LABEL_LEGEND}",
    "mnms": f"M&Ms convention: {KIT_LABEL_LEGEND}",
    "acdc": "ACDC convention: 0 background, 1 RV, 2 Myo, 3 LV",
}


def to_kit_labels(label: np.ndarray, labels: str = "ukbb") -> np.ndarray:
    """Check a label array (integer values in 0..3) and return it in the kit convention (uint8)."""
    conv = str(labels).lower()
    if conv not in LABEL_CONVENTIONS:
        raise ValueError(f"labels: expected one of {list(LABEL_CONVENTIONS)}, got {labels!r}")
    arr = check_label_values(label, None)
    if conv == "acdc":
        arr = remap_acdc_labels(arr)
    return arr


def _ef(edv: float, esv: float) -> float:
    return 100.0 * (edv - esv) / edv if edv > 0 else float("nan")


def phenotypes(
    label_ed: np.ndarray,
    label_es: np.ndarray,
    spacing_or_affine: Sequence[float] | np.ndarray,
    labels: str = "ukbb",
    heart_rate: float | None = None,
) -> dict[str, float]:
    """LV/RV volumes (mL), ejection fractions (%), LV mass (g) and optionally cardiac output.

    Parameters
    ----------
    label_ed, label_es : numpy.ndarray
        Label volumes at end-diastole and end-systole (same shape, any dimensionality).
    spacing_or_affine : sequence of 3 floats or (4, 4) array
        Voxel spacing in mm, or the NIfTI affine (the voxel volume is ``|det|`` of its 3x3 part).
    labels : {"ukbb", "kit", "mnms", "acdc"}
        Label convention of the inputs.
    heart_rate : float, optional
        Beats per minute; adds ``CO`` (L/min) = HR x LVSV / 1000.

    Returns
    -------
    dict
        Keys :data:`PHENOTYPE_KEYS` in that order (plus ``CO``); floats.
    """
    ed = to_kit_labels(label_ed, labels)
    es = to_kit_labels(label_es, labels)
    if ed.shape != es.shape:
        raise ValueError(f"label_es: shape {es.shape} differs from label_ed {ed.shape}")
    v = voxel_volume_ml(spacing_or_affine)
    lvedv = float(np.count_nonzero(ed == LV_BLOOD)) * v
    lvesv = float(np.count_nonzero(es == LV_BLOOD)) * v
    rvedv = float(np.count_nonzero(ed == RV_BLOOD)) * v
    rvesv = float(np.count_nonzero(es == RV_BLOOD)) * v
    lvm = float(np.count_nonzero(ed == LV_MYO)) * v * MYOCARDIAL_DENSITY_G_PER_ML
    out = {
        "LVEDV": lvedv,
        "LVESV": lvesv,
        "LVSV": lvedv - lvesv,
        "LVEF": _ef(lvedv, lvesv),
        "LVM": lvm,
        "RVEDV": rvedv,
        "RVESV": rvesv,
        "RVSV": rvedv - rvesv,
        "RVEF": _ef(rvedv, rvesv),
    }
    if heart_rate is not None:
        hr = float(heart_rate)
        if not math.isfinite(hr) or hr <= 0:
            raise ValueError(f"heart_rate: expected a positive number of beats per minute, got {heart_rate!r}")
        out["CO"] = hr * out["LVSV"] / 1000.0
    return out


def volume_curve(
    labels_4d: np.ndarray,
    affine: Sequence[float] | np.ndarray,
    labels: str = "ukbb",
    labelled_frames: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-frame volumes of a ``(X, Y, Z, T)`` label sequence.

    Returns ``{"LV": (T,), "MYO": (T,), "RV": (T,)}`` in mL and ``"LVM": (T,)`` in g
    (myocardial volume x 1.05). Frames marked False in ``labelled_frames`` are NaN.
    ``affine`` may also be three spacings in mm.
    """
    lab = to_kit_labels(labels_4d, labels)
    if lab.ndim != 4:
        raise ValueError(f"labels_4d: expected (X, Y, Z, T), got shape {lab.shape}")
    v = voxel_volume_ml(affine)
    out = {
        name: np.sum(lab == k, axis=(0, 1, 2)).astype(np.float64) * v
        for name, k in (("LV", LV_BLOOD), ("MYO", LV_MYO), ("RV", RV_BLOOD))
    }
    out["LVM"] = out["MYO"] * MYOCARDIAL_DENSITY_G_PER_ML
    if labelled_frames is not None:
        m = np.asarray(labelled_frames, dtype=bool)
        if m.shape != (lab.shape[3],):
            raise ValueError(f"labelled_frames: expected shape ({lab.shape[3]},), got {m.shape}")
        for k in out:
            out[k][~m] = np.nan
    return out


def sequence_volume_curves(labels: np.ndarray, spacing: Sequence[float] | np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame volumes (mL) of a batch of kit-convention label sequences ``(N, X, Y, Z, T)``.

    ``spacing`` is one voxel size ``(3,)`` in mm for all sequences or ``(N, 3)``. Returns
    ``{"LV", "Myo", "RV"}`` -> ``(N, T)`` (voxel count x voxel volume).
    """
    lab = np.asarray(labels)
    if lab.ndim != 5:
        raise ValueError(f"labels: expected (N, X, Y, Z, T), got shape {lab.shape}")
    sp = np.asarray(spacing, dtype=float)
    sp = np.broadcast_to(sp, (len(lab), 3)) if sp.ndim == 1 else sp
    if sp.shape != (len(lab), 3) or not np.all(sp > 0):
        raise ValueError(
            f"spacing: expected (3,) or ({len(lab)}, 3) positive voxel sizes in mm, got {np.shape(spacing)}"
        )
    voxel_ml = (np.prod(sp, axis=1) / 1000.0)[:, None]
    return {
        name: (lab == k).sum(axis=(1, 2, 3)) * voxel_ml
        for name, k in (("LV", LV_BLOOD), ("Myo", LV_MYO), ("RV", RV_BLOOD))
    }


def sequence_phenotypes(labels: np.ndarray, spacing: Sequence[float] | np.ndarray) -> Any:
    """Phenotypes of a batch of label sequences ``(N, X, Y, Z, T)`` (or one ``(X, Y, Z, T)``) that start at ED.

    ED = frame 0 (the sequences start at ED, as UK Biobank's); ES = the frame of minimal LV blood-pool
    volume (ukbb_cardiac's definition), also for the RV; LVM = ED myocardial volume x 1.05 g/mL.
    Returns a DataFrame with :func:`phenotypes`' ``LVEDV, LVESV, LVEF, LVM, RVEDV, RVESV, RVEF`` and
    ``ES_frame``, ``ES_phase`` (ES frame / T); an EF whose EDV is 0 is NaN.
    """
    import pandas as pd

    lab = np.asarray(labels)
    if lab.ndim == 4:
        lab = lab[None]
    curves = sequence_volume_curves(lab, spacing)
    lv, rv, myo = curves["LV"], curves["RV"], curves["Myo"]
    es = np.argmin(lv, axis=1)
    rows = np.arange(len(lab))
    lvedv, lvesv, rvedv, rvesv = lv[:, 0], lv[rows, es], rv[:, 0], rv[rows, es]
    with np.errstate(invalid="ignore", divide="ignore"):
        lvef = np.where(lvedv > 0, 100.0 * (lvedv - lvesv) / lvedv, np.nan)
        rvef = np.where(rvedv > 0, 100.0 * (rvedv - rvesv) / rvedv, np.nan)
    return pd.DataFrame(
        {
            "LVEDV": lvedv,
            "LVESV": lvesv,
            "LVEF": lvef,
            "LVM": myo[:, 0] * MYOCARDIAL_DENSITY_G_PER_ML,
            "RVEDV": rvedv,
            "RVESV": rvesv,
            "RVEF": rvef,
            "ES_frame": es,
            "ES_phase": es / lab.shape[-1],
        }
    )


def wall_thickness(
    label: np.ndarray,
    spacing: Sequence[float] | np.ndarray,
    labels: str = "ukbb",
    per_slice: bool = False,
) -> float | np.ndarray:
    """Mean LV myocardial wall thickness (mm), measured in-plane slice by slice.

    For each short-axis slice holding both myocardium and LV blood pool, the Euclidean distance
    transform (anisotropic ``sampling=(sx, sy)``) of the non-cavity region gives, at every
    myocardial pixel on the epicardial border (myocardium with a 4-neighbour outside
    myocardium-plus-cavity), the distance to the nearest cavity pixel; for a ring of ``w`` pixels
    along a ray this is exactly ``w`` pixel widths. The result is the mean over all epicardial
    border pixels of all such slices (apical slices without a cavity are skipped).

    Parameters
    ----------
    label : numpy.ndarray
        ``(X, Y)`` or ``(X, Y, Z)`` label map.
    spacing : sequence or (4, 4) array
        In-plane spacing ``(sx, sy[, sz])`` in mm, or an affine (column norms are used).
    per_slice : bool
        Return a ``(Z,)`` array (NaN for skipped slices) instead of the pooled mean.

    Returns
    -------
    float or numpy.ndarray
        NaN when no slice has both myocardium and cavity.
    """
    from scipy.ndimage import binary_dilation, distance_transform_edt

    lab = to_kit_labels(label, labels)
    if lab.ndim == 2:
        lab = lab[..., None]
    if lab.ndim != 3:
        raise ValueError(f"label: expected (X, Y) or (X, Y, Z), got shape {np.shape(label)}")
    sp = np.asarray(spacing, dtype=float)
    if sp.shape == (4, 4):
        sp = np.linalg.norm(sp[:3, :3], axis=0)
    if sp.ndim != 1 or sp.size < 2 or np.any(sp[:2] <= 0):
        raise ValueError(f"spacing: expected positive (sx, sy[, sz]) in mm or a 4x4 affine, got {spacing!r}")
    sx, sy = float(sp[0]), float(sp[1])
    cross = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)
    per = np.full(lab.shape[2], np.nan)
    total, count = 0.0, 0
    for z in range(lab.shape[2]):
        sl = lab[..., z]
        myo, cav = sl == LV_MYO, sl == LV_BLOOD
        if not myo.any() or not cav.any():
            continue
        outside = ~(myo | cav)
        border = myo & binary_dilation(outside, structure=cross)
        if not border.any():  # myocardium touching nothing outside (should not happen); skip
            continue
        d = distance_transform_edt(~cav, sampling=(sx, sy))[border]
        per[z] = float(d.mean())
        total += float(d.sum())
        count += d.size
    if per_slice:
        return per
    return total / count if count else float("nan")


# ----------------------------------------------------------------------------- CLI
def _json_safe(d: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _table(d: dict[str, float]) -> str:
    rows = ["phenotype   value  unit"]
    for k, v in d.items():
        val = "n/a" if not math.isfinite(v) else f"{v:.1f}"
        rows.append(f"{k:<9} {val:>7}  {PHENOTYPE_UNITS.get(k, '')}")
    return "\n".join(rows)


def cli_main(argv: list[str] | None = None) -> int:
    """``cmrkit phenotypes``: print LV/RV phenotypes of an ED and an ES label NIfTI.

    Prints a table (default) or JSON with keys exactly :data:`PHENOTYPE_KEYS` (plus ``CO`` with
    ``--heart-rate``; NaN as ``null``). Bad input: one line on stderr and exit code 2.
    """
    parser = argparse.ArgumentParser(
        prog="cmrkit phenotypes",
        description=(
            "LV/RV volumes (mL), ejection fractions (%) and LV mass (g, 1.05 g/mL) from ED and ES label volumes."
        ),
    )
    parser.add_argument("--ed", required=True, help="end-diastolic label volume (.nii/.nii.gz)")
    parser.add_argument("--es", required=True, help="end-systolic label volume (.nii/.nii.gz)")
    parser.add_argument(
        "--labels",
        default="ukbb",
        choices=["ukbb", "acdc", "mnms"],
        help="label convention: ukbb/mnms 1 LV 2 Myo 3 RV; acdc 1 RV 2 Myo 3 LV (default ukbb)",
    )
    parser.add_argument(
        "--heart-rate", type=float, default=None, help="heart rate (bpm): also report cardiac output CO (L/min)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--allow-swapped",
        action="store_true",
        help="print the numbers even when the ED file's LV is smaller than the ES file's (with a warning)",
    )
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its message
        return int(exc.code or 0) if exc.code in (0, None) else 2
    legend = _LEGENDS[args.labels]
    try:
        ed = load_nifti(args.ed, ndim=3, kind="label", label_legend=legend)
        es = load_nifti(args.es, ndim=3, kind="label", label_legend=legend)
        check_same_geometry(ed, es)
        res = phenotypes(ed.data, es.data, ed.affine, labels=args.labels, heart_rate=args.heart_rate)
        swapped = math.isfinite(res["LVEDV"]) and res["LVESV"] > res["LVEDV"]
        if swapped:
            msg = (
                f"the ED file {args.ed} has a smaller LV ({res['LVEDV']:.1f} mL) than the ES file {args.es} "
                f"({res['LVESV']:.1f} mL): ED and ES look swapped (ED is the largest LV volume of the cycle)"
            )
            if not args.allow_swapped:
                raise ValueError(
                    f"{msg}; pass them the other way round, or --allow-swapped to print negative SV/EF as they are"
                )
            warn = f"cmrkit phenotypes: WARNING: {msg}; numbers below are as given (negative SV and EF)"
            print(warn, file=sys.stderr)
    except (DataError, ValueError, OSError) as exc:
        msg = " ".join(str(exc).split())
        print(f"cmrkit phenotypes: error: {msg}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(_json_safe(res)))
    else:
        print(_table(res))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(cli_main())
