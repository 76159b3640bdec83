"""M&Ms 2020 challenge data (Campello et al. 2021, IEEE TMI 40:3543).

Two layouts are accepted:

- official release: ``<CODE>/<CODE>_sa.nii.gz`` (4-D cine) and ``<CODE>/<CODE>_sa_gt.nii.gz``
  (4-D, labelled at ED and ES only), plus a metadata CSV with columns ``External code, Vendor,
  Centre, ED, ES`` (ED/ES **0-based**) at the data-set root;
- derived ED/ES volumes: ``<CASE>_sa_ED.nii.gz``, ``<CASE>_sa_ES.nii.gz`` and their
  ``_gt`` label files, in case folders or all in one folder (one case may have labels only).
  These give a two-frame record ``[ED, ES]``.

Metadata columns other than ``External code``/``ED``/``ES`` become covariates in snake_case
(``Height`` -> ``height_cm``, ``Weight`` -> ``weight_kg``, ``Vendor`` -> ``vendor``, ...).

Labels are already in the kit convention (1 LV blood pool, 2 LV myocardium, 3 RV blood pool; the
LV label lies inside the myocardium ring, checked on the shared M&Ms files). The subject id is the
file prefix ``<CASE>``; the metadata row is matched on ``External code`` equal to the prefix or to
its last ``_``-separated part (so ``better_G1K1V3`` finds ``G1K1V3``).
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cmrkit.io.nifti import DataError, MissingFileError, NiftiVolume, check_same_geometry, load_nifti
from cmrkit.io.subject import Subject, lv_volume_per_frame

__all__ = ["MNMS_FILE_PATTERN", "read_mnms_metadata", "find_mnms_metadata", "load_mnms_subject", "iter_mnms_subjects"]

#: file names of an M&Ms case: ``<case>_sa[_ED|_ES][_gt].nii[.gz]``.
MNMS_FILE_PATTERN = re.compile(r"^(?P<case>.+?)_sa(?:_(?P<phase>ED|ES))?(?P<gt>_gt)?\.nii(?:\.gz)?$")


def read_mnms_metadata(path: str | os.PathLike[str]) -> Any:
    """Read the M&Ms metadata CSV into a DataFrame indexed by ``External code`` (str)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "M&Ms metadata CSV not found")
    try:
        df = pd.read_csv(path, dtype={"External code": str})
    except Exception as exc:
        raise DataError(path, f"cannot read as CSV ({type(exc).__name__}: {exc})") from None
    df.columns = [str(c).strip() for c in df.columns]
    if "External code" not in df.columns:
        raise DataError(path, f"no 'External code' column (columns: {list(df.columns)})")
    df["External code"] = df["External code"].astype(str).str.strip()
    df = df.set_index("External code")
    df.attrs["path"] = str(path)
    return df


def find_mnms_metadata(data_dir: str | os.PathLike[str]) -> Path | None:
    """The first ``*.csv`` directly in ``data_dir`` with an ``External code`` column, or None."""
    data_dir = Path(data_dir)
    for p in sorted(data_dir.glob("*.csv")):
        try:
            head = p.open("r", errors="replace").readline()
        except OSError:
            continue
        if "External code" in head:
            return p
    return None


def _metadata_row(df: Any, case: str) -> tuple[str | None, dict[str, Any]]:
    for code in (case, case.split("_")[-1]):
        if code in df.index:
            row = df.loc[code]
            if getattr(row, "ndim", 1) != 1:
                raise DataError(df.attrs.get("path"), f"External code '{code}' appears more than once")
            out = {}
            for k, v in row.items():
                if isinstance(v, np.generic):
                    v = v.item()
                if isinstance(v, float) and np.isnan(v):
                    v = None
                out[str(k)] = v
            return code, out
    return None, {}


#: metadata column (snake_case) -> covariate name used across the kit (phantom manifest names)
_COVARIATE_NAMES = {"height": "height_cm", "weight": "weight_kg"}


def _snake(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def _case_files(folder: Path, case: str) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for p in folder.iterdir():
        m = MNMS_FILE_PATTERN.match(p.name)
        if m and m.group("case") == case:
            key = (m.group("phase") or "4d") + ("_gt" if m.group("gt") else "")
            files[key] = p
    return files


def load_mnms_subject(
    path: str | os.PathLike[str],
    metadata_csv: str | os.PathLike[str] | Any | None = None,
    case: str | None = None,
) -> Subject:
    """Read one M&Ms case.

    Parameters
    ----------
    path : path-like
        A case folder, any file of the case, or a flat folder together with ``case=``.
    metadata_csv : path-like or DataFrame, optional
        Metadata CSV (see :func:`read_mnms_metadata`); defaults to one found by
        :func:`find_mnms_metadata` in the case folder or its parent. Needed for ED/ES of the 4-D
        layout; without it ED/ES are inferred from the two labelled frames (larger LV volume = ED)
        and ``meta["ed_es_source"]`` says so.
    case : str, optional
        Case prefix when ``path`` is a folder holding several cases.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(path, "M&Ms case not found")
    if path.is_file():
        m = MNMS_FILE_PATTERN.match(path.name)
        if not m:
            raise DataError(path, "file name does not match <CASE>_sa[_ED|_ES][_gt].nii.gz")
        folder, case = path.parent, case or m.group("case")
    else:
        folder = path
        if case is None:
            cases = sorted({m.group("case") for p in folder.iterdir() if (m := MNMS_FILE_PATTERN.match(p.name))})
            if not cases:
                raise DataError(folder, "no <CASE>_sa*.nii.gz files (M&Ms layout)")
            if len(cases) > 1:
                raise DataError(folder, f"holds several cases {cases[:6]}; pass case= or use iter_subjects")
            case = cases[0]
    files = _case_files(folder, case)
    if not files:
        raise DataError(folder, f"no files for case '{case}'")
    if metadata_csv is None:
        found = find_mnms_metadata(folder) or find_mnms_metadata(folder.parent)
        metadata_csv = found
    df = None
    if metadata_csv is not None:
        df = metadata_csv if hasattr(metadata_csv, "loc") else read_mnms_metadata(metadata_csv)
    code, row = _metadata_row(df, case) if df is not None else (None, {})
    sources: dict[str, Path] = {}
    if df is not None and "path" in df.attrs:
        sources["metadata"] = Path(df.attrs["path"])
    meta: dict[str, Any] = {"external_code": code or case.split("_")[-1]}
    covariates = {_COVARIATE_NAMES.get(_snake(k), _snake(k)): v for k, v in row.items() if k not in ("ED", "ES")}

    if "4d" in files:
        v4 = load_nifti(files["4d"], ndim=4)
        sources["cine"] = v4.path
        cine, affine, T = v4.data, v4.affine, v4.data.shape[3]
        labels = labelled = None
        if "4d_gt" in files:
            g = load_nifti(files["4d_gt"], ndim=4, kind="label")
            sources["labels"] = g.path
            check_same_geometry(v4, g, spatial_only=False)  # frames too
            labels = g.data
            labelled = np.any(labels != 0, axis=(0, 1, 2))
        ed = es = None
        src = None
        if row.get("ED") is not None and row.get("ES") is not None:
            ed, es = int(row["ED"]), int(row["ES"])
            src = "metadata CSV (0-based)"
            for name, fr in (("ED", ed), ("ES", es)):
                if not 0 <= fr < T:
                    raise DataError(
                        sources.get("metadata"), f"{code}: {name}={fr} outside 0..{T - 1} of {v4.path.name}"
                    )
        elif labelled is not None and labelled.sum() == 2:
            fr = np.flatnonzero(labelled)
            lv = lv_volume_per_frame(labels[..., fr])  # type: ignore[index]
            ed, es = (int(fr[0]), int(fr[1])) if lv[0] >= lv[1] else (int(fr[1]), int(fr[0]))
            src = "inferred: the two labelled frames, larger LV volume = ED"
        meta["ed_es_source"] = {"ed": src, "es": src}
        if v4.frame_duration_ms:
            meta["frame_duration_ms"] = v4.frame_duration_ms
        meta["frames"] = "full cycle"
    else:
        vols: dict[str, NiftiVolume] = {}
        for key in ("ED", "ES", "ED_gt", "ES_gt"):
            if key in files:
                kind = "label" if key.endswith("_gt") else "image"
                vols[key] = load_nifti(files[key], ndim=3, kind=kind)
                sources[("label_" if kind == "label" else "cine_") + key[:2]] = files[key]
        if not vols:
            raise DataError(folder, f"case '{case}': no ED/ES volumes")
        first = next(iter(vols.values()))
        for v in vols.values():
            check_same_geometry(first, v)
        affine = first.affine
        cine = np.stack([vols["ED"].data, vols["ES"].data], axis=-1) if "ED" in vols and "ES" in vols else None
        labels = np.zeros((*first.data.shape, 2), dtype=np.uint8)
        labelled = np.zeros(2, dtype=bool)
        for i, key in enumerate(("ED_gt", "ES_gt")):
            if key in vols:
                labels[..., i] = vols[key].data
                labelled[i] = True
        if not labelled.any():
            labels, labelled = None, None
        ed, es = 0, 1
        meta["ed_es_source"] = {"ed": "file name (_sa_ED)", "es": "file name (_sa_ES)"}
        meta["frames"] = "ED/ES only"
        if row.get("ED") is not None:
            meta["original_frames_0based"] = {"ed": row.get("ED"), "es": row.get("ES")}
    for key in ("vendor", "centre"):
        if key in covariates:
            meta[key] = covariates[key]
    return Subject(
        subject_id=case,
        dataset="mnms",
        cine=cine,
        cine_labels=labels,
        labelled_frames=labelled,
        affine=affine,
        ed_frame=ed,
        es_frame=es,
        covariates=covariates,
        meta=meta,
        sources=sources,
    ).validate()


def iter_mnms_subjects(
    data_dir: str | os.PathLike[str], metadata_csv: str | os.PathLike[str] | Any | None = None
) -> Iterator[Subject]:
    """Yield every M&Ms case in ``data_dir`` (flat files) or its sub-folders (one level, e.g.
    ``Training/Labeled/<CODE>/`` needs ``data_dir=Training/Labeled``), sorted by case."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise MissingFileError(data_dir, "M&Ms folder not found")
    if metadata_csv is None:
        metadata_csv = find_mnms_metadata(data_dir) or find_mnms_metadata(data_dir.parent)
    df = None
    if metadata_csv is not None:
        df = metadata_csv if hasattr(metadata_csv, "loc") else read_mnms_metadata(metadata_csv)
    groups: dict[tuple[Path, str], None] = defaultdict(lambda: None)
    for folder in [data_dir, *sorted(p for p in data_dir.iterdir() if p.is_dir())]:
        for p in folder.iterdir():
            m = MNMS_FILE_PATTERN.match(p.name)
            if m and p.is_file():
                groups[(folder, m.group("case"))]
    if not groups:
        raise DataError(data_dir, "no <CASE>_sa*.nii.gz files found (M&Ms layout)")
    for folder, case in sorted(groups, key=lambda fc: (fc[1], str(fc[0]))):
        yield load_mnms_subject(folder, metadata_csv=df, case=case)
