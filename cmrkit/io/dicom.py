"""Short-axis cine DICOM series -> 4-D array + affine (what scanners export).

:func:`read_dicom_series` reads a folder of single-frame MR images (one file per slice and phase),
groups them into slices by their position along the slice normal (``ImagePositionPatient``
projected on ``row x column`` of ``ImageOrientationPatient``), orders the phases of each slice by
``TriggerTime`` (``InstanceNumber`` when trigger times are absent), and returns ``float32
(X, Y, Z, T)`` with a NIfTI-style RAS+ affine, so the result is interchangeable with a NIfTI cine.

Geometry (DICOM PS3.3 C.7.6.2.1.1): the pixel ``(r, c)`` of a slice lies at
``IPP + c * dc * F_row + r * dr * F_col`` (LPS mm) with ``F_row = IOP[:3]``, ``F_col = IOP[3:]``,
``(dr, dc) = PixelSpacing``. The array is stored ``[x, y] = pixel_array[y, x]`` (x = column,
y = row), so ``affine[:3, 0] = dc F_row``, ``affine[:3, 1] = dr F_col``, ``affine[:3, 2]`` = step
between consecutive slice positions, ``affine[:3, 3]`` = IPP of the first slice; LPS is converted to
RAS by negating the first two rows. Slices are ordered by increasing position along the normal.
``SliceLocation`` is not used (it is vendor-defined and often inconsistent with IPP).

Manual contours become labels (:func:`contour_labels`): Sunnybrook-style files
``IM-SSSS-NNNN-icontour-manual.txt`` (LV endocardium) and ``...-ocontour-manual.txt`` (LV
epicardium), one ``x y`` pixel pair per line (Radau et al. 2009), where ``NNNN`` is the
``InstanceNumber`` of the image they outline. The endocardial polygon is the LV blood pool (label 1),
the epicardial minus the endocardial polygon the LV myocardium (label 2); papillary-muscle contours
(``p1``, ``p2``) are not used and there is no RV (Sunnybrook has no RV contours), which the subject
records in ``meta["labelled_structures"]`` so that no RV volume of 0 mL is ever reported.
:func:`find_contours` looks for a series' contours in ``<series>/contours/`` (or loose in the series
folder), else in ``contours/<name>/`` or ``contourfiles/<name>/`` beside the series folder or one
level up, where ``<name>`` is the folder name or the original id a ``patient_id,original_id`` CSV
there maps it to (the layout of the Sunnybrook release: ``dicoms/SCD0000301/`` with
``contourfiles/SC-HF-I-4/{i,o}-contours/`` and ``link.csv``).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cmrkit.io.nifti import DataError, MissingFileError
from cmrkit.io.subject import Subject

__all__ = [
    "DicomSeries",
    "REQUIRED_TAGS",
    "read_dicom_series",
    "load_dicom_subject",
    "iter_dicom_subjects",
    "read_contour_txt",
    "contour_mask",
    "CONTOUR_FILE_PATTERN",
    "holds_dicom",
    "find_contours",
    "contour_labels",
]

#: tags every image of a cine series must carry.
REQUIRED_TAGS: tuple[str, ...] = (
    "SeriesInstanceUID",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
)
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class DicomSeries:
    """A cine series read by :func:`read_dicom_series`.

    Attributes
    ----------
    data : numpy.ndarray
        ``float32 (X, Y, Z, T)`` after RescaleSlope/Intercept.
    affine : numpy.ndarray
        4 x 4 voxel-to-world matrix, RAS+ mm (NIfTI convention).
    files : numpy.ndarray
        ``(Z, T)`` object array of the file behind each image.
    trigger_times_ms : numpy.ndarray
        ``(Z, T)`` TriggerTime (NaN where absent).
    slice_positions_mm : numpy.ndarray
        ``(Z,)`` position of each slice along the normal.
    instance_numbers : numpy.ndarray
        ``(Z, T)`` InstanceNumber of each image (-1 where absent).
    meta : dict
        Series UID(s), description, manufacturer, heart rate, RR interval, frame duration, ...
    """

    data: np.ndarray
    affine: np.ndarray
    files: np.ndarray
    trigger_times_ms: np.ndarray
    slice_positions_mm: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    instance_numbers: np.ndarray | None = None


def _float_list(ds: Any, tag: str, n: int, path: Path) -> np.ndarray:
    try:
        v = np.asarray([float(x) for x in ds.get(tag)], dtype=float)
    except (TypeError, ValueError):
        raise DataError(path, f"DICOM tag {tag} is not numeric: {ds.get(tag)!r}") from None
    if v.shape != (n,) or not np.all(np.isfinite(v)):
        raise DataError(path, f"DICOM tag {tag} must hold {n} finite numbers, got {ds.get(tag)!r}")
    return v


def _scan(folder: Path, recursive: bool) -> tuple[list[tuple[Path, Any]], list[str]]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    it = folder.rglob("*") if recursive else folder.iterdir()
    headers, skipped = [], []
    for p in sorted(it):
        if not p.is_file() or p.name.startswith("."):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(p, stop_before_pixels=True)
        except (InvalidDicomError, EOFError):
            skipped.append(p.name)
            continue
        except Exception as exc:
            raise DataError(p, f"cannot read DICOM header ({type(exc).__name__}: {exc})") from None
        if "Rows" not in ds and "PixelSpacing" not in ds:  # DICOMDIR, reports, presentation states
            skipped.append(p.name)
            continue
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise DataError(p, "multi-frame (enhanced) DICOM is not supported; export single-frame images")
        headers.append((p, ds))
    return headers, skipped


def read_dicom_series(
    folder: str | os.PathLike[str],
    series_uid: str | None = None,
    merge_series: bool = False,
    recursive: bool = False,
    slice_tolerance_mm: float = 0.1,
) -> DicomSeries:
    """Read a short-axis cine series from a folder of DICOM files.

    Parameters
    ----------
    folder : path-like
        Folder with the images (non-DICOM files and DICOMDIR are skipped and listed in
        ``meta["skipped_files"]``).
    series_uid : str, optional
        Read only this SeriesInstanceUID (needed when the folder holds several series).
    merge_series : bool
        Accept several series and merge them; for exports with one series per slice. All must share
        orientation, pixel spacing and matrix.
    recursive : bool
        Also read sub-folders.
    slice_tolerance_mm : float
        Images whose positions along the normal differ by less than this belong to one slice.

    Raises
    ------
    DataError
        No images, several series (without ``series_uid``/``merge_series``), a missing or
        non-numeric geometry tag, mixed orientation/spacing/matrix, slices with different phase
        counts, duplicate phases, unevenly spaced slices, unreadable pixel data. The message
        starts with the offending file or folder.
    """
    import pydicom

    folder = Path(folder)
    if folder.is_file():
        raise DataError(folder, "is a file; pass the folder holding the series' DICOM files")
    if not folder.is_dir():
        raise MissingFileError(folder, "DICOM folder not found")
    headers, skipped = _scan(folder, recursive)
    if not headers:
        raise DataError(
            folder, "no DICOM images found" + (f" (skipped non-DICOM files: {skipped[:5]})" if skipped else "")
        )
    for p, ds in headers:
        for tag in REQUIRED_TAGS:
            if tag not in ds or ds.get(tag) in (None, ""):
                raise DataError(p, f"missing DICOM tag {tag}")
    by_series: dict[str, list[tuple[Path, Any]]] = {}
    for p, ds in headers:
        by_series.setdefault(str(ds.SeriesInstanceUID), []).append((p, ds))
    if series_uid is not None:
        if series_uid not in by_series:
            raise DataError(folder, f"no series with SeriesInstanceUID {series_uid} (found {sorted(by_series)})")
        by_series = {series_uid: by_series[series_uid]}
    if len(by_series) > 1 and not merge_series:
        desc = "; ".join(
            f"{uid} ({len(v)} images, #{v[0][1].get('SeriesNumber', '?')} '{v[0][1].get('SeriesDescription', '')}')"
            for uid, v in sorted(by_series.items())
        )
        raise DataError(
            folder,
            f"holds {len(by_series)} DICOM series: {desc}; pass series_uid= to pick one, or merge_series=True if "
            "each series is one slice",
        )
    items = [x for v in by_series.values() for x in v]

    p0, ds0 = items[0]
    iop0 = _float_list(ds0, "ImageOrientationPatient", 6, p0)
    ps0 = _float_list(ds0, "PixelSpacing", 2, p0)
    shape0 = (int(ds0.Rows), int(ds0.Columns))
    f_row, f_col = iop0[:3], iop0[3:]
    if abs(np.linalg.norm(f_row) - 1) > 1e-3 or abs(np.linalg.norm(f_col) - 1) > 1e-3 or abs(f_row @ f_col) > 1e-3:
        raise DataError(p0, f"ImageOrientationPatient is not two orthonormal vectors: {iop0.tolist()}")
    normal = np.cross(f_row, f_col)
    positions, ipps, times, inst = [], [], [], []
    for p, ds in items:
        iop = _float_list(ds, "ImageOrientationPatient", 6, p)
        if np.max(np.abs(iop - iop0)) > 1e-3:
            raise DataError(
                p, f"ImageOrientationPatient {iop.tolist()} differs from {p0.name} {iop0.tolist()} (mixed orientations)"
            )
        ps = _float_list(ds, "PixelSpacing", 2, p)
        if np.max(np.abs(ps - ps0)) > 1e-4:
            raise DataError(p, f"PixelSpacing {ps.tolist()} differs from {p0.name} {ps0.tolist()}")
        if (int(ds.Rows), int(ds.Columns)) != shape0:
            raise DataError(
                p, f"matrix {int(ds.Rows)}x{int(ds.Columns)} differs from {p0.name} {shape0[0]}x{shape0[1]}"
            )
        ipp = _float_list(ds, "ImagePositionPatient", 3, p)
        ipps.append(ipp)
        positions.append(float(ipp @ normal))
        tt = ds.get("TriggerTime")
        times.append(float(tt) if tt not in (None, "") else np.nan)
        inn = ds.get("InstanceNumber")
        inst.append(int(inn) if inn not in (None, "") else None)
    positions_a = np.asarray(positions)
    order = np.argsort(positions_a, kind="stable")
    slices: list[list[int]] = []
    for idx in order:
        if slices and positions_a[idx] - positions_a[slices[-1][0]] <= slice_tolerance_mm:
            slices[-1].append(int(idx))
        else:
            slices.append([int(idx)])
    counts = [len(s) for s in slices]
    if len(set(counts)) != 1:
        detail = ", ".join(f"{positions_a[s[0]]:.2f} mm: {len(s)}" for s in slices)
        raise DataError(folder, f"slices have different numbers of phases ({detail}); incomplete or mixed series")
    Z, T = len(slices), counts[0]
    use_time = all(np.isfinite(times[i]) for s in slices for i in s)
    for s in slices:
        if use_time:
            key = [times[i] for i in s]
        elif all(inst[i] is not None for i in s):
            key = [inst[i] for i in s]
        else:
            raise DataError(
                items[s[0]][0], "cannot order phases: neither TriggerTime nor InstanceNumber present on every image"
            )
        keymap = dict(zip(s, key))
        s.sort(key=keymap.__getitem__)
        ks = [keymap[i] for i in s]
        dups = [
            items[i][0].name
            for j, i in enumerate(s)
            if (j > 0 and ks[j] == ks[j - 1]) or (j + 1 < len(s) and ks[j] == ks[j + 1])
        ]
        if dups:
            what = "TriggerTime" if use_time else "InstanceNumber"
            raise DataError(
                items[s[0]][0].parent,
                f"duplicate {what} within one slice (files {dups[:6]}); repeated acquisition or mixed series?",
            )
    # slice geometry: IPP of the first phase of each slice must advance linearly
    first_ipp = np.asarray([ipps[s[0]] for s in slices])
    if Z > 1:
        step = (first_ipp[-1] - first_ipp[0]) / (Z - 1)
        resid = first_ipp - (first_ipp[0] + np.arange(Z)[:, None] * step)
        if np.max(np.linalg.norm(resid, axis=1)) > max(slice_tolerance_mm, 0.05 * np.linalg.norm(step)):
            gaps = np.round(np.diff(positions_a[[s[0] for s in slices]]), 2).tolist()
            raise DataError(
                folder,
                f"slice positions are not evenly spaced (gaps along the normal {gaps} mm); cannot represent with one "
                "affine",
            )
    else:
        thick = ds0.get("SpacingBetweenSlices") or ds0.get("SliceThickness") or 1.0
        step = normal * float(thick)
    dr, dc = ps0
    aff_lps = np.eye(4)
    aff_lps[:3, 0] = f_row * dc
    aff_lps[:3, 1] = f_col * dr
    aff_lps[:3, 2] = step
    aff_lps[:3, 3] = first_ipp[0]
    affine = _LPS_TO_RAS @ aff_lps

    data = np.zeros((shape0[1], shape0[0], Z, T), dtype=np.float32)
    files = np.empty((Z, T), dtype=object)
    ttimes = np.full((Z, T), np.nan)
    instances = np.full((Z, T), -1, dtype=np.int64)
    for z, s in enumerate(slices):
        for t, i in enumerate(s):
            p = items[i][0]
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = pydicom.dcmread(p)
                    px = ds.pixel_array
            except Exception as exc:
                raise DataError(p, f"cannot decode pixel data ({type(exc).__name__}: {exc})") from None
            if px.shape != shape0:
                raise DataError(p, f"pixel array shape {px.shape} differs from Rows x Columns {shape0}")
            slope = float(ds.get("RescaleSlope", 1) or 1)
            inter = float(ds.get("RescaleIntercept", 0) or 0)
            data[:, :, z, t] = px.T.astype(np.float32) * slope + inter
            files[z, t] = p
            ttimes[z, t] = times[i]
            instances[z, t] = -1 if inst[i] is None else inst[i]
    if not np.all(np.isfinite(data)):
        raise DataError(folder, "pixel data contain NaN/inf values")
    meta: dict[str, Any] = {
        "series_uids": sorted(by_series),
        "series_description": str(ds0.get("SeriesDescription", "")),
        "manufacturer": str(ds0.get("Manufacturer", "")),
        "patient_id": str(ds0.get("PatientID", "")),
        "slice_thickness_mm": float(ds0.SliceThickness) if ds0.get("SliceThickness") not in (None, "") else None,
        "phase_order": "TriggerTime" if use_time else "InstanceNumber",
        "skipped_files": skipped,
    }
    hr = ds0.get("HeartRate")
    rr = ds0.get("NominalInterval")
    if hr not in (None, "") and float(hr) > 0:
        meta["heart_rate_bpm"] = float(hr)
    elif rr not in (None, "") and float(rr) > 0:
        meta["heart_rate_bpm"] = 60000.0 / float(rr)
    if rr not in (None, "") and float(rr) > 0:
        meta["rr_interval_ms"] = float(rr)
    if use_time and T > 1:
        meta["frame_duration_ms"] = float(np.median(np.diff(ttimes, axis=1)))
    return DicomSeries(
        data=data,
        affine=affine,
        files=files,
        trigger_times_ms=ttimes,
        slice_positions_mm=positions_a[[s[0] for s in slices]],
        meta=meta,
        instance_numbers=instances,
    )


def _covariates(ds: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sex = str(ds.get("PatientSex", "") or "")
    if sex in ("M", "F"):
        out["sex"] = sex
    age = str(ds.get("PatientAge", "") or "")
    if len(age) == 4 and age[:3].isdigit() and age[3] == "Y":
        out["age"] = float(age[:3])
    size = ds.get("PatientSize")
    if size not in (None, "") and float(size) > 0:
        out["height_cm"] = float(size) * 100.0  # DICOM stores metres
    weight = ds.get("PatientWeight")
    if weight not in (None, "") and float(weight) > 0:
        out["weight_kg"] = float(weight)
    return out


def load_dicom_subject(
    folder: str | os.PathLike[str],
    subject_id: str | None = None,
    *,
    contours: bool | str | os.PathLike[str] = True,
    **kwargs: Any,
) -> Subject:
    """Read a cine series folder (see :func:`read_dicom_series`, which gets ``**kwargs``) as a Subject.

    Parameters
    ----------
    folder : path-like
        The series folder.
    subject_id : str, optional
        Default: the folder name.
    contours : bool or path-like
        ``True`` (default): manual contours found by :func:`find_contours` become the labels
        (:func:`contour_labels`); a folder: read the contours there; ``False``: no labels.

    Without contours the cine has no labels, ED is frame 0 (an ECG-triggered cine starts at the R
    wave) and ES is unknown (None). With contours on two or more phases, ED and ES are the contoured
    phases of the largest and the smallest LV blood pool (``meta["ed_es_source"]`` says so), and
    ``meta["labelled_structures"]`` lists what each contoured phase delineates. Covariates ``sex``
    ("M"/"F"), ``age`` (years), ``height_cm`` and ``weight_kg`` come from the patient tags when present.
    """
    import pydicom

    folder = Path(folder)
    series = read_dicom_series(folder, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds0 = pydicom.dcmread(series.files[0, 0], stop_before_pixels=True)
    meta = dict(series.meta)
    meta["ed_es_source"] = {"ed": "ECG-triggered cine: frame 0 at the R wave", "es": None}
    meta["trigger_times_ms"] = series.trigger_times_ms
    meta["frames"] = "full cycle"
    sources: dict[str, Path] = {"dicom_folder": folder}
    labels = labelled = None
    ed, es = 0, None
    files = find_contours(folder) if contours is True else (_contour_files(Path(contours)) if contours else [])
    if files:
        labels, labelled, structures = contour_labels(series, files)
        sources["contours"] = Path(os.path.commonpath([f.parent for f in files]))
        meta["contour_files"] = len(files)
        meta["labelled_structures"] = structures
        with_lv = [t for t, names in structures.items() if "LV" in names]
        if len(with_lv) >= 2:
            lv = np.sum(labels[..., with_lv] == 1, axis=(0, 1, 2))
            ed, es = with_lv[int(np.argmax(lv))], with_lv[int(np.argmin(lv))]
            src = "manual contours: the contoured phases with the largest (ED) and smallest (ES) LV blood pool"
            meta["ed_es_source"] = {"ed": src, "es": src}
    return Subject(
        subject_id=subject_id or folder.name,
        dataset="dicom",
        cine=series.data,
        cine_labels=labels,
        labelled_frames=labelled,
        affine=series.affine,
        ed_frame=ed,
        es_frame=es,
        covariates=_covariates(ds0),
        meta=meta,
        sources=sources,
    ).validate()


def holds_dicom(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` itself holds a DICOM file (``.dcm``, or the ``DICM`` mark at byte 128, as
    scanner exports without a suffix have)."""
    for p in sorted(Path(folder).iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        if p.suffix.lower() == ".dcm":
            return True
        try:
            with p.open("rb") as fh:
                fh.seek(128)
                if fh.read(4) == b"DICM":
                    return True
        except OSError:
            continue
    return False


def iter_dicom_subjects(data_dir: str | os.PathLike[str], **kwargs: Any) -> Iterator[Subject]:
    """Yield one Subject per cine series under ``data_dir``, sorted by folder name.

    ``data_dir`` is one series folder (it holds DICOM files itself) or a folder of series folders;
    its sub-folders without DICOM files (``contours/``, ``contourfiles/``, notes) are not series and
    are passed over. ``**kwargs`` go to :func:`load_dicom_subject`.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise MissingFileError(data_dir, "DICOM data folder not found")
    if holds_dicom(data_dir):
        yield load_dicom_subject(data_dir, **kwargs)
        return
    subs = sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and holds_dicom(p))
    if not subs:
        raise DataError(data_dir, "no DICOM files in it or in its sub-folders (one sub-folder per cine series)")
    for s in subs:
        yield load_dicom_subject(s, **kwargs)


#: a Sunnybrook manual contour file: ``IM-SSSS-NNNN-<kind>contour-manual.txt`` (kind ``i``
#: endocardium, ``o`` epicardium, ``p1``/``p2`` papillary muscles), NNNN the image's InstanceNumber
CONTOUR_FILE_PATTERN = re.compile(r"^IM-\d+-(?P<number>\d+)-(?P<kind>[a-z]\d*)contour-manual\.txt$", re.IGNORECASE)


def _contour_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*.txt") if p.is_file() and CONTOUR_FILE_PATTERN.match(p.name))


def _original_ids(root: Path, name: str) -> list[str]:
    """Ids ``name`` is mapped to by a ``patient_id,original_id`` CSV in ``root`` (e.g. Sunnybrook's
    ``link.csv``: SCD0000301 -> SC-HF-I-4)."""
    import csv

    out = []
    for f in sorted(root.glob("*.csv")):
        try:
            with f.open(newline="", errors="replace") as fh:
                rows = list(csv.DictReader(fh))
        except (OSError, csv.Error):
            continue
        norm = lambda k: re.sub(r"[^a-z]", "", str(k).lower())  # noqa: E731 - PatientID == patient_id
        for r in rows:
            d = {norm(k): (v or "").strip() for k, v in r.items() if k is not None}
            if d.get("patientid") == name and d.get("originalid"):
                out.append(d["originalid"])
    return out


def find_contours(series_folder: str | os.PathLike[str]) -> list[Path]:
    """The manual contour files of a series folder (see the module docstring for where they are
    looked for); ``[]`` when there are none."""
    series_folder = Path(series_folder)
    own = _contour_files(series_folder / "contours") or [
        p for p in sorted(series_folder.glob("*.txt")) if CONTOUR_FILE_PATTERN.match(p.name)
    ]
    if own:
        return own
    for root in (series_folder.parent, series_folder.parent.parent):
        for name in (series_folder.name, *_original_ids(root, series_folder.name)):
            for sub in ("contours", "contourfiles"):
                found = _contour_files(root / sub / name)
                if found:
                    return found
    return []


def contour_labels(series: DicomSeries, files: list[Path]) -> tuple[np.ndarray, np.ndarray, dict[int, tuple[str, ...]]]:
    """Labels ``uint8 (X, Y, Z, T)`` from manual contours of ``series``.

    Each file outlines the image whose ``InstanceNumber`` is its ``NNNN``. Endocardium (``i``) ->
    LV blood pool (1); epicardium (``o``) minus endocardium -> LV myocardium (2); ``p*`` files are
    not used. Returns the labels, ``labelled_frames`` (phases with any contour) and, per labelled
    phase, the structures it delineates: ``"LV"``, plus ``"MYO"`` when every slice with an
    endocardial contour there also has an epicardial one.

    Raises
    ------
    DataError
        A contour file whose number matches no image of the series (naming the file), or an
        epicardial contour without the endocardial one of the same image.
    """
    X, Y, Z, T = series.data.shape
    if series.instance_numbers is None:
        raise DataError(series.files[0, 0], "the series was read without instance numbers")
    where = {int(n): (z, t) for (z, t), n in np.ndenumerate(series.instance_numbers) if n >= 0}
    by_image: dict[tuple[int, int], dict[str, Path]] = {}
    for f in files:
        m = CONTOUR_FILE_PATTERN.match(f.name)
        if m is None:
            raise DataError(f, "not a contour file name IM-SSSS-NNNN-<i|o>contour-manual.txt")
        kind = m.group("kind").lower()
        if kind not in ("i", "o"):
            continue  # papillary muscles: inside the blood pool of the endocardial contour
        n = int(m.group("number"))
        if n not in where:
            raise DataError(f, f"no image with InstanceNumber {n} in the series ({series.files[0, 0].parent})")
        by_image.setdefault(where[n], {})[kind] = f
    labels = np.zeros((X, Y, Z, T), np.uint8)
    for (z, t), kinds in sorted(by_image.items()):
        if "i" not in kinds:
            raise DataError(kinds["o"], "epicardial contour without the endocardial contour of the same image")
        endo = contour_mask(read_contour_txt(kinds["i"]), (X, Y))
        if "o" in kinds:
            labels[:, :, z, t][contour_mask(read_contour_txt(kinds["o"]), (X, Y)) & ~endo] = 2
        labels[:, :, z, t][endo] = 1
    labelled = np.zeros(T, bool)
    structures: dict[int, tuple[str, ...]] = {}
    for t in sorted({t for _, t in by_image}):
        labelled[t] = True
        slices = [kinds for (_, tt), kinds in by_image.items() if tt == t]
        structures[t] = ("LV", "MYO") if all("o" in k for k in slices) else ("LV",)
    return labels, labelled, structures


def read_contour_txt(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a Sunnybrook manual contour file: ``(N, 2)`` float array of ``(x, y)`` pixel
    coordinates (x = column, y = row), i.e. ``(X, Y)`` indices of the cine arrays read here."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "contour file not found")
    try:
        pts = np.loadtxt(path, dtype=float, ndmin=2)
    except ValueError as exc:
        raise DataError(path, f"not a list of 'x y' pairs ({exc})") from None
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3:
        raise DataError(path, f"expected at least 3 'x y' pairs, got shape {pts.shape}")
    return pts


def contour_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean ``(X, Y)`` mask of the closed polygon ``points`` (``(N, 2)`` x, y pixel coordinates),
    using :func:`skimage.draw.polygon2mask`."""
    from skimage.draw import polygon2mask

    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points: expected (N, 2) x, y coordinates, got shape {pts.shape}")
    return polygon2mask(tuple(int(s) for s in shape), pts)
