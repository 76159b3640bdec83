"""UK Biobank (ukbb_cardiac) subject folders, also used by the embedded phantom cohort.

Layout (Bai et al. 2018, github.com/baiwenjia/ukbb_cardiac, ``common/train_network.py``), one folder
per subject::

    <subject>/sa.nii.gz               4-D short-axis cine (X, Y, Z, T); pixdim[4] = frame duration
    <subject>/label_sa.nii.gz         4-D labels (optional; ``seg_sa.nii.gz`` is the automated fallback)
    <subject>/sa_ED.nii.gz, sa_ES.nii.gz               3-D ED/ES frames
    <subject>/label_sa_ED.nii.gz, label_sa_ES.nii.gz   3-D ED/ES labels (``seg_sa_ED/ES`` fallback)
    <subject>/tag_1.nii.gz .. tag_3.nii.gz             tagged slices: basal, mid, apical
    <subject>/*.h5                                     phantom ground truth (path recorded only)
    manifest.csv                                       (cohort folder) covariates and phenotypes

Labels are already in the kit convention (1 LV, 2 Myo, 3 RV). For the phantom the cohort
``manifest.csv`` is required and its row becomes ``Subject.covariates``.

ED/ES frames, in order of preference (the choice is recorded in ``meta["ed_es_source"]``):
``ed_frame``/``es_frame`` manifest columns; the frame of ``sa.nii.gz`` identical to
``sa_ED/ES.nii.gz``; the ukbb_cardiac rule ED = frame 0, ES = frame of smallest LV volume among
labelled frames; otherwise ED = 0 and ES unknown.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cmrkit.io.nifti import DataError, MissingFileError, NiftiVolume, check_same_geometry, load_nifti
from cmrkit.io.subject import TAG_SLICE_NAMES, Subject, TaggingSlice, lv_volume_per_frame

__all__ = ["load_ukbb_subject", "iter_ukbb_subjects", "read_manifest", "load_tagging_nifti", "MANIFEST_ID_COLUMNS"]

#: accepted names (first match wins) of the subject-id column of a cohort ``manifest.csv``.
MANIFEST_ID_COLUMNS: tuple[str, ...] = ("subject_id", "subject", "eid", "id")


def read_manifest(path: str | os.PathLike[str]) -> Any:
    """Read a cohort ``manifest.csv`` into a pandas DataFrame indexed by subject id (as str).

    The id column is the first of :data:`MANIFEST_ID_COLUMNS` present.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "manifest not found")
    try:
        df = pd.read_csv(path, dtype={c: str for c in MANIFEST_ID_COLUMNS})
    except Exception as exc:
        raise DataError(path, f"cannot read as CSV ({type(exc).__name__}: {exc})") from None
    col = next((c for c in MANIFEST_ID_COLUMNS if c in df.columns), None)
    if col is None:
        raise DataError(
            path, f"no subject id column (expected one of {list(MANIFEST_ID_COLUMNS)}; columns: {list(df.columns)})"
        )
    if df[col].duplicated().any():
        dup = df[col][df[col].duplicated()].tolist()[:5]
        raise DataError(path, f"duplicate subject ids {dup}")
    df = df.set_index(col)
    df.index = df.index.astype(str)
    df.attrs["path"] = str(path)
    return df


def _row_dict(df: Any, sid: str) -> dict[str, Any]:
    if sid not in df.index:
        raise DataError(df.attrs.get("path", "manifest"), f"no row for subject '{sid}'")
    out: dict[str, Any] = {}
    for k, v in df.loc[sid].items():
        if isinstance(v, (np.generic,)):
            v = v.item()
        if isinstance(v, float) and np.isnan(v):
            v = None
        out[str(k)] = v
    return out


def load_tagging_nifti(path: str | os.PathLike[str], name: str = "") -> TaggingSlice:
    """Read one tagged slice ``tag_k.nii.gz``: 4-D ``(X, Y, 1, T)`` or 3-D ``(X, Y, T)``.

    A 3-D file is read as one slice over time (time on the third axis), the only sensible reading
    of a single tagging slice; ``meta["time_axis_from"]`` records which form was read.
    """
    vol = load_nifti(path, ndim=(3, 4), kind="image")
    data = vol.data
    if data.ndim == 4:
        if data.shape[2] != 1:
            raise DataError(vol.path, f"tagging file must hold one slice (X, Y, 1, T), got shape {data.shape}")
        data = data[:, :, 0, :]
        form = "4-D (X, Y, 1, T)"
    else:
        form = "3-D (X, Y, T)"
    meta: dict[str, Any] = {"time_axis_from": form}
    if vol.frame_duration_ms is not None:
        meta["frame_duration_ms"] = vol.frame_duration_ms
    return TaggingSlice(image=np.ascontiguousarray(data), affine=vol.affine, name=name, path=vol.path, meta=meta)


def _first(folder: Path, *names: str) -> Path | None:
    for n in names:
        p = folder / n
        if p.exists():
            return p
    return None


def _matching_frame(cine: np.ndarray, vol: np.ndarray) -> int | None:
    """Index of the cine frame equal (to float32 precision) to ``vol``, or None."""
    if vol.shape != cine.shape[:3]:
        return None
    scale = max(float(np.max(np.abs(vol))), 1e-12)
    for t in range(cine.shape[3]):
        if np.allclose(cine[..., t], vol, rtol=1e-5, atol=1e-6 * scale):
            return t
    return None


def _int_or_none(v: Any) -> int | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return int(f) if np.isfinite(f) else None


def load_ukbb_subject(
    folder: str | os.PathLike[str],
    dataset: str = "ukbb",
    manifest: str | os.PathLike[str] | Any | None = None,
    subject_id: str | None = None,
    load_tagging: bool = True,
) -> Subject:
    """Read one UK Biobank-layout subject folder (see the module docstring for the layout).

    Parameters
    ----------
    folder : path-like
        Subject folder.
    dataset : {"ukbb", "phantom"}
        Recorded in ``Subject.dataset``.
    manifest : path-like or pandas.DataFrame, optional
        Cohort manifest (see :func:`read_manifest`); its row for this subject becomes
        ``covariates`` (every column except the id). Required in practice for the phantom.
    subject_id : str, optional
        Defaults to the folder name.
    load_tagging : bool
        Read ``tag_1..3.nii.gz`` when present.

    Raises
    ------
    DataError
        Missing required files, bad files (see :func:`cmrkit.io.nifti.load_nifti`), image/label
        shape or affine mismatch, ED/ES files inconsistent with the 4-D files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(folder, "subject folder not found")
    sid = subject_id or folder.name
    sources: dict[str, Path] = {}
    meta: dict[str, Any] = {}
    covariates: dict[str, Any] = {}
    if manifest is not None:
        df = manifest if hasattr(manifest, "loc") else read_manifest(manifest)
        covariates = _row_dict(df, sid)
        if "path" in df.attrs:
            sources["manifest"] = Path(df.attrs["path"])

    p_sa = _first(folder, "sa.nii.gz", "sa.nii")
    p_lab = _first(folder, "label_sa.nii.gz", "label_sa.nii", "seg_sa.nii.gz", "seg_sa.nii")
    p_ed = _first(folder, "sa_ED.nii.gz", "sa_ED.nii")
    p_es = _first(folder, "sa_ES.nii.gz", "sa_ES.nii")
    p_led = _first(folder, "label_sa_ED.nii.gz", "label_sa_ED.nii", "seg_sa_ED.nii.gz", "seg_sa_ED.nii")
    p_les = _first(folder, "label_sa_ES.nii.gz", "label_sa_ES.nii", "seg_sa_ES.nii.gz", "seg_sa_ES.nii")
    if p_sa is None and p_ed is None and p_led is None:
        raise DataError(
            folder, "no sa.nii.gz, sa_ED.nii.gz or label_sa_ED.nii.gz: not a UK Biobank-layout subject folder"
        )
    if (p_ed is None) != (p_es is None) and p_sa is None:
        raise DataError(folder, "has only one of sa_ED.nii.gz / sa_ES.nii.gz")

    ed_vol = load_nifti(p_ed, ndim=3) if p_ed else None
    es_vol = load_nifti(p_es, ndim=3) if p_es else None
    led = load_nifti(p_led, ndim=3, kind="label") if p_led else None
    les = load_nifti(p_les, ndim=3, kind="label") if p_les else None
    for key, v in (("cine_ED", ed_vol), ("cine_ES", es_vol), ("label_ED", led), ("label_ES", les)):
        if v is not None:
            sources[key] = v.path

    cine: np.ndarray | None
    labels: np.ndarray | None = None
    labelled: np.ndarray | None = None
    ed = _int_or_none(covariates.get("ed_frame"))
    es = _int_or_none(covariates.get("es_frame"))
    ed_src = "manifest" if ed is not None else None
    es_src = "manifest" if es is not None else None

    if p_sa is not None:
        sa = load_nifti(p_sa, ndim=4)
        sources["cine"] = sa.path
        cine = sa.data
        affine = sa.affine
        T = cine.shape[3]
        for v in (ed_vol, es_vol, led, les):
            if v is not None:
                check_same_geometry(sa, v)
        if sa.frame_duration_ms:
            meta["frame_duration_ms"] = sa.frame_duration_ms
            # a UK Biobank cine covers one cardiac cycle, so cycle length = T * frame duration
            meta["heart_rate_bpm"] = 60000.0 / (T * sa.frame_duration_ms)
        if ed is None and ed_vol is not None:
            ed = _matching_frame(cine, ed_vol.data)
            ed_src = "sa_ED.nii.gz matches frame" if ed is not None else None
        if es is None and es_vol is not None:
            es = _matching_frame(cine, es_vol.data)
            es_src = "sa_ES.nii.gz matches frame" if es is not None else None
        lab4: NiftiVolume | None = None
        if p_lab is not None:
            lab4 = load_nifti(p_lab, ndim=4, kind="label")
            sources["labels"] = lab4.path
            check_same_geometry(sa, lab4, spatial_only=False)  # frames too
            labels = lab4.data
            labelled = np.any(labels != 0, axis=(0, 1, 2))
        if ed is None and labelled is not None and labelled.any():
            ed, ed_src = 0, "ukbb_cardiac rule: ED = frame 0"
        if es is None and labelled is not None and labelled.any():
            lv = lv_volume_per_frame(labels).astype(float)  # type: ignore[arg-type]
            lv[~labelled] = np.inf
            es, es_src = int(np.argmin(lv)), "ukbb_cardiac rule: ES = frame of smallest LV volume"
        if ed is None:
            ed, ed_src = 0, "default: ED = frame 0"
        if labels is None and (led is not None or les is not None):
            labels = np.zeros(cine.shape, dtype=np.uint8)
            labelled = np.zeros(T, dtype=bool)
            for fr, v, name in ((ed, led, "ED"), (es, les, "ES")):
                if v is None:
                    continue
                if fr is None:
                    raise DataError(v.path, f"cannot place the {name} label: {name} frame of {sa.path.name} unknown")
                labels[..., fr] = v.data
                labelled[fr] = True
        elif labels is not None:
            for fr, v, name in ((ed, led, "ED"), (es, les, "ES")):
                if v is not None and fr is not None and not np.array_equal(labels[..., fr], v.data):
                    raise DataError(v.path, f"differs from frame {fr} ({name}) of {lab4.path.name}")  # type: ignore[union-attr]
        for fr, name in ((ed, "ed_frame"), (es, "es_frame")):
            if fr is not None and not 0 <= fr < T:
                raise DataError(folder, f"{name}={fr} outside 0..{T - 1} of {sa.path.name}")
        meta["frames"] = "full cycle"
    else:
        # only ED/ES volumes: two-frame record [ED, ES]
        first = ed_vol or led
        assert first is not None
        affine = first.affine
        for v in (ed_vol, es_vol, led, les):
            if v is not None:
                check_same_geometry(first, v)
        if ed_vol is not None and es_vol is not None:
            cine = np.stack([ed_vol.data, es_vol.data], axis=-1)
        else:
            cine = None
        shape3 = first.data.shape
        labels = np.zeros((*shape3, 2), dtype=np.uint8)
        labelled = np.zeros(2, dtype=bool)
        for i, v in enumerate((led, les)):
            if v is not None:
                labels[..., i] = v.data
                labelled[i] = True
        if not labelled.any():
            labels, labelled = None, None
        ed, es = 0, 1
        ed_src = es_src = "ED/ES-only folder: frame 0 = ED, frame 1 = ES"
        meta["frames"] = "ED/ES only"

    meta["ed_es_source"] = {"ed": ed_src, "es": es_src}
    tagging: list[TaggingSlice] = []
    if load_tagging:
        for k, name in enumerate(TAG_SLICE_NAMES, start=1):
            p = _first(folder, f"tag_{k}.nii.gz", f"tag_{k}.nii")
            if p is not None:
                tagging.append(load_tagging_nifti(p, name=name))
                sources[f"tag_{k}"] = p
    h5 = sorted(folder.glob("*.h5")) + sorted(folder.glob("*.hdf5"))
    if len(h5) == 1:
        sources["ground_truth"] = h5[0]
    else:
        for p in h5:
            sources[f"h5:{p.name}"] = p
    subj = Subject(
        subject_id=sid,
        dataset=dataset,
        cine=cine,
        cine_labels=labels,
        labelled_frames=labelled,
        affine=affine,
        ed_frame=ed,
        es_frame=es,
        tagging=tagging,
        covariates=covariates,
        meta=meta,
        sources=sources,
    )
    return subj.validate()


def _is_subject_folder(p: Path) -> bool:
    return p.is_dir() and any(
        (p / n).exists() for n in ("sa.nii.gz", "sa.nii", "sa_ED.nii.gz", "sa_ED.nii", "label_sa_ED.nii.gz")
    )


def iter_ukbb_subjects(
    data_dir: str | os.PathLike[str],
    dataset: str = "ukbb",
    manifest: str | os.PathLike[str] | Any | None = None,
    load_tagging: bool = True,
) -> Iterator[Subject]:
    """Yield every subject folder of a UK Biobank-layout cohort, sorted by folder name.

    ``manifest`` defaults to ``data_dir/manifest.csv`` when it exists; for ``dataset="phantom"``
    it must exist and list every subject folder.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise MissingFileError(data_dir, "cohort folder not found")
    if manifest is None and (data_dir / "manifest.csv").is_file():
        manifest = data_dir / "manifest.csv"
    if manifest is None and dataset == "phantom":
        raise MissingFileError(data_dir / "manifest.csv", "phantom cohort manifest not found")
    df = None
    if manifest is not None:
        df = manifest if hasattr(manifest, "loc") else read_manifest(manifest)
    folders = sorted(p for p in data_dir.iterdir() if _is_subject_folder(p))
    if not folders:
        raise DataError(data_dir, "no subject folders (with sa.nii.gz or sa_ED.nii.gz) found")
    for f in folders:
        yield load_ukbb_subject(f, dataset=dataset, manifest=df, load_tagging=load_tagging)
