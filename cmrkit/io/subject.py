"""One record for one subject, whatever the source layout.

:class:`Subject` is what every reader in :mod:`cmrkit.io` returns (UK Biobank / phantom, ACDC,
M&Ms, Ferdian tagging HDF5, DICOM), and what :mod:`cmrkit.preprocess` and :mod:`cmrkit.clinical`
consume. :func:`load_subject` and :func:`iter_subjects` dispatch on the data-set name.

Conventions
-----------
- ``cine`` is ``float32 (X, Y, Z, T)`` in the stored axis order; ``affine`` maps voxel
  ``(i, j, k)`` to RAS+ world mm (``world = affine @ [i, j, k, 1]``). Nothing is reoriented.
- ``cine_labels`` is ``uint8 (X, Y, Z, T)`` in the kit's label convention (0 background,
  1 LV blood pool, 2 LV myocardium, 3 RV blood pool; readers remap, e.g. ACDC's 1 RV / 3 LV).
  Frames without a manual label are all zero and marked False in ``labelled_frames``
  (e.g. ACDC and M&Ms label only ED and ES).
- Data sets that ship only the ED and ES volumes (the derived M&Ms files, a UK Biobank folder
  without ``sa.nii.gz``) give a two-frame cine ``[ED, ES]`` with ``ed_frame=0, es_frame=1`` and
  ``meta["frames"] == "ED/ES only"``.
- ``ed_frame`` / ``es_frame`` are 0-based indices into the T axis; ``meta["ed_es_source"]`` says
  where they came from.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from cmrkit.io.nifti import DataError, MissingFileError, spacing_from_affine

__all__ = [
    "DATASETS",
    "TaggingSlice",
    "Subject",
    "load_subject",
    "iter_subjects",
    "load_ferdian_h5",
    "lv_volume_per_frame",
]

#: data-set names understood by :func:`load_subject` / :func:`iter_subjects`.
DATASETS: tuple[str, ...] = ("phantom", "ukbb", "acdc", "mnms", "ferdian", "dicom")

#: names of the three UK Biobank tagging slices ``tag_1..3`` (Ferdian et al. 2020).
TAG_SLICE_NAMES: tuple[str, ...] = ("basal", "mid", "apical")


@dataclass(eq=False)
class TaggingSlice:
    """One tagged short-axis slice over time.

    Attributes
    ----------
    image : numpy.ndarray
        ``float32 (X, Y, T)``; ``image[x, y, t]``.
    affine : numpy.ndarray
        4 x 4 voxel-to-world matrix of the slice (third column: slice normal times thickness).
        For sources without geometry (Ferdian HDF5) it is ``diag(px, px, 1, 1)`` and
        ``meta["affine_is_synthetic"]`` is True.
    name : str
        ``"basal"``, ``"mid"``, ``"apical"`` or a source-specific name.
    landmarks : numpy.ndarray or None
        ``(T, 2, 168)`` landmark pixel coordinates (row 0 = x, row 1 = y; index ``spoke*7 + k``,
        k = 0 endocardial, k = 6 epicardial; Ferdian et al. 2020) when the source has them.
    ed_frame, es_frame : int or None
        0-based ED/ES frame of the tagging sequence when known.
    path : pathlib.Path or None
        Source file.
    meta : dict
        Anything else (pixel spacing, source index, ...).
    """

    image: np.ndarray
    affine: np.ndarray
    name: str = ""
    landmarks: np.ndarray | None = None
    ed_frame: int | None = None
    es_frame: int | None = None
    path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float]:
        """In-plane pixel size (mm) from the affine."""
        s = spacing_from_affine(self.affine)
        return (s[0], s[1])


@dataclass(eq=False)
class Subject:
    """One subject's cine stack, labels, tagging and metadata in the kit's conventions.

    Attributes
    ----------
    subject_id : str
    dataset : str
        One of :data:`DATASETS`.
    cine : numpy.ndarray or None
        ``float32 (X, Y, Z, T)`` short-axis cine (None when only labels exist).
    cine_labels : numpy.ndarray or None
        ``uint8 (X, Y, Z, T)`` in the kit convention; unlabelled frames are zero.
    labelled_frames : numpy.ndarray or None
        ``bool (T,)``: which frames of ``cine_labels`` carry a label (None when no labels).
    affine : numpy.ndarray
        4 x 4 voxel-to-world matrix of the cine grid.
    ed_frame, es_frame : int or None
        0-based frame indices.
    tagging : list of TaggingSlice
        Tagged slices (basal, mid, apical for UK Biobank), possibly empty.
    covariates : dict
        Per-subject covariates. Names follow the phantom manifest where the source has the
        quantity (``age``, ``sex``, ``height_cm``, ``weight_kg``, ...); for phantom/UK Biobank
        every manifest column except the id, for ACDC ``height_cm, weight_kg, group``, for M&Ms
        the metadata CSV columns, for DICOM the patient tags.
    meta : dict
        Everything else: ``frame_duration_ms``, ``heart_rate_bpm``, ``ed_es_source``, vendor, ...
    sources : dict[str, pathlib.Path]
        The files the record was read from (key: role, e.g. ``"cine"``, ``"label_ED"``).
    """

    subject_id: str
    dataset: str
    cine: np.ndarray | None
    cine_labels: np.ndarray | None
    affine: np.ndarray
    ed_frame: int | None = None
    es_frame: int | None = None
    labelled_frames: np.ndarray | None = None
    tagging: list[TaggingSlice] = field(default_factory=list)
    covariates: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, Path] = field(default_factory=dict)

    # ------------------------------------------------------------------ derived views
    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(X, Y, Z, T)`` of the cine (or of the labels when there is no cine)."""
        arr = self.cine if self.cine is not None else self.cine_labels
        if arr is None:
            raise ValueError(f"subject {self.subject_id}: has neither cine nor labels")
        return tuple(arr.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm) along X, Y, Z from the affine."""
        return spacing_from_affine(self.affine)

    @property
    def n_frames(self) -> int:
        return int(self.shape[3])

    @property
    def heart_rate_bpm(self) -> float | None:
        """``meta["heart_rate_bpm"]``, else a ``heart_rate_bpm`` or ``heart_rate`` covariate, else None."""
        hr = self.meta.get("heart_rate_bpm")
        for key in ("heart_rate_bpm", "heart_rate"):
            if hr is None:
                hr = self.covariates.get(key)
        return None if hr is None else float(hr)

    def frame(self, t: int) -> np.ndarray:
        """Cine volume ``(X, Y, Z)`` at frame ``t``."""
        if self.cine is None:
            raise ValueError(f"subject {self.subject_id}: has no cine image")
        return self.cine[..., int(t)]

    def label(self, t: int) -> np.ndarray:
        """Label volume ``(X, Y, Z)`` at frame ``t``; raises if that frame is not labelled."""
        if self.cine_labels is None or self.labelled_frames is None:
            raise ValueError(f"subject {self.subject_id}: has no labels")
        if not self.labelled_frames[int(t)]:
            labelled = np.flatnonzero(self.labelled_frames).tolist()
            raise ValueError(f"subject {self.subject_id}: frame {t} is not labelled (labelled: {labelled})")
        return self.cine_labels[..., int(t)]

    @property
    def label_ed(self) -> np.ndarray:
        """Label volume at end-diastole."""
        if self.ed_frame is None:
            raise ValueError(f"subject {self.subject_id}: ED frame unknown")
        return self.label(self.ed_frame)

    @property
    def label_es(self) -> np.ndarray:
        """Label volume at end-systole."""
        if self.es_frame is None:
            raise ValueError(f"subject {self.subject_id}: ES frame unknown")
        return self.label(self.es_frame)

    def copy_with(self, **changes: Any) -> Subject:
        """A shallow copy with some fields replaced (``dataclasses.replace``)."""
        return replace(self, **changes)

    def validate(self) -> Subject:
        """Check shapes and dtypes are consistent; returns self. Raises ValueError naming the field."""
        who = f"subject {self.subject_id}"
        a = np.asarray(self.affine)
        if a.shape != (4, 4) or not np.all(np.isfinite(a)):
            raise ValueError(f"{who}: affine must be a finite 4x4 matrix")
        if self.cine is not None and self.cine.ndim != 4:
            raise ValueError(f"{who}: cine must be (X, Y, Z, T), got shape {self.cine.shape}")
        if self.cine_labels is not None:
            if self.cine_labels.ndim != 4:
                raise ValueError(f"{who}: cine_labels must be (X, Y, Z, T), got shape {self.cine_labels.shape}")
            if self.cine is not None and self.cine_labels.shape != self.cine.shape:
                raise ValueError(f"{who}: cine_labels shape {self.cine_labels.shape} != cine shape {self.cine.shape}")
            if self.labelled_frames is None or self.labelled_frames.shape != (self.cine_labels.shape[3],):
                raise ValueError(f"{who}: labelled_frames must be a bool array of length T")
        n = self.n_frames
        for name in ("ed_frame", "es_frame"):
            v = getattr(self, name)
            if v is not None and not 0 <= v < n:
                raise ValueError(f"{who}: {name}={v} outside 0..{n - 1}")
        return self


def lv_volume_per_frame(labels: np.ndarray, lv_label: int = 1) -> np.ndarray:
    """Number of LV blood-pool voxels per frame of a ``(X, Y, Z, T)`` label array."""
    return np.sum(labels == lv_label, axis=(0, 1, 2))


# ---------------------------------------------------------------------- Ferdian HDF5
def _ferdian_groups(data: Any) -> list[tuple[str | None, list[int]]]:
    """Rows of a Ferdian file grouped by patient (``_patients`` dataset), else one row per group."""
    pats = data.extra.get("_patients")
    if pats is None or np.shape(pats) != (data.n,):
        return [(None, [i]) for i in range(data.n)]
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(pats):
        groups.setdefault(str(p), []).append(i)
    return list(groups.items())


def _ferdian_subject(data: Any, rows: list[int], subject_id: str) -> Subject:
    path = Path(data.path) if data.path is not None else None
    slices_ds = data.extra.get("_slices")
    tags: list[TaggingSlice] = []
    for i in rows:
        img = np.asarray(data.image_seqs[i], dtype=np.float32)  # (T, H, W), H = rows (y), W = columns (x)
        if not np.all(np.isfinite(img)):
            raise DataError(path, f"image_seqs[{i}] contains NaN/inf values")
        px = None if data.px_spaces is None else float(data.px_spaces[i])
        meta: dict[str, Any] = {"affine_is_synthetic": True, "h5_row": int(i), "pixel_spacing_mm": px}
        if px is None or not np.isfinite(px) or px <= 0:
            meta["pixel_spacing_missing"] = True
            px = 1.0
        if data.landmark_coords is not None:
            meta["landmark_frame_valid"] = data.landmark_frame_valid[i]
        name = str(slices_ds[i]) if slices_ds is not None and np.shape(slices_ds) == (data.n,) else f"row{i}"
        tags.append(
            TaggingSlice(
                image=np.ascontiguousarray(img.transpose(2, 1, 0)),
                affine=np.diag([px, px, 1.0, 1.0]),
                name=name,
                landmarks=None
                if data.landmark_coords is None
                else np.asarray(data.landmark_coords[i], dtype=np.float64),
                ed_frame=None if data.ed_frame_idx is None else int(data.ed_frame_idx[i]),
                es_frame=None if data.es_frame_idx is None else int(data.es_frame_idx[i]),
                path=path,
                meta=meta,
            )
        )
    first = tags[0]
    return Subject(
        subject_id=subject_id,
        dataset="ferdian",
        cine=None,
        cine_labels=None,
        affine=first.affine,
        ed_frame=first.ed_frame,
        es_frame=first.es_frame,
        tagging=tags,
        meta={"affine_is_synthetic": True, "h5_rows": list(rows)},
        sources={"tagging": path} if path is not None else {},
    )


def load_ferdian_h5(path: str | os.PathLike[str], index: int | None = None, subject_id: str | None = None) -> Subject:
    """Read a Ferdian-format tagging HDF5 file (Ferdian et al. 2020) as one Subject.

    Parsing is done by :func:`cmrkit.io.ferdian.read_ferdian_h5` (``image_seqs (n, T, H, W)``,
    ``landmark_coords (n, T, 2, 168)`` with row 0 = x = column, row 1 = y = row in pixels,
    ``px_spaces``, ``ed_frame_idx``, ``es_frame_idx``). Each row becomes a :class:`TaggingSlice`
    with its image transposed to ``(X, Y, T)`` (so ``image[x, y]`` matches the landmark
    coordinates) and affine ``diag(px, px, 1, 1)``: the format carries no world geometry
    (``meta["affine_is_synthetic"]``). There is no cine.

    Rows are grouped into subjects by the ``_patients`` dataset when present (slice names from
    ``_slices``), else each row is a subject. ``index`` selects one row; without it the file must
    hold exactly one subject (use :func:`iter_subjects` for cohorts).
    """
    from cmrkit.io.ferdian import read_ferdian_h5

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "file not found")
    data = read_ferdian_h5(path)
    if index is not None:
        if not 0 <= int(index) < data.n:
            raise DataError(path, f"index {index} outside 0..{data.n - 1}")
        pats = data.extra.get("_patients")
        sid = subject_id or (
            str(pats[index]) if pats is not None and np.shape(pats) == (data.n,) else f"{path.stem}_{index}"
        )
        return _ferdian_subject(data, [int(index)], sid)
    groups = _ferdian_groups(data)
    if len(groups) != 1:
        raise DataError(path, f"holds {len(groups)} subjects ({data.n} rows); pass index= or use iter_subjects")
    pid, rows = groups[0]
    return _ferdian_subject(data, rows, subject_id or pid or path.stem)


def _iter_ferdian(data_dir: Path) -> Iterator[Subject]:
    from cmrkit.io.ferdian import read_ferdian_h5

    files = (
        sorted(p for p in data_dir.iterdir() if p.suffix in (".h5", ".hdf5") and not p.name.endswith(".result.h5"))
        if data_dir.is_dir()
        else [data_dir]
    )
    if not files:
        raise DataError(data_dir, "no .h5/.hdf5 files found (Ferdian tagging layout)")
    for f in files:
        data = read_ferdian_h5(f)
        groups = _ferdian_groups(data)
        for pid, rows in groups:
            sid = pid if pid is not None else (f.stem if len(groups) == 1 else f"{f.stem}_{rows[0]}")
            yield _ferdian_subject(data, rows, sid)


# ---------------------------------------------------------------------- dispatch
def _check_dataset(dataset: str) -> str:
    ds = str(dataset).lower()
    if ds not in DATASETS:
        raise ValueError(f"dataset: expected one of {list(DATASETS)}, got {dataset!r}")
    return ds


def load_subject(path: str | os.PathLike[str], dataset: str, **kwargs: Any) -> Subject:
    """Read one subject.

    Parameters
    ----------
    path : path-like
        ``phantom``/``ukbb``: the subject folder (``sa.nii.gz``, ``label_sa.nii.gz``,
        ``sa_ED/ES.nii.gz``, ``label_sa_ED/ES.nii.gz``, ``tag_1..3.nii.gz``; see
        :func:`cmrkit.io.ukbb.load_ukbb_subject`). ``acdc``: the ``patientNNN`` folder.
        ``mnms``: a case folder or any one of the case's ``<CODE>_sa*.nii.gz`` files.
        ``ferdian``: an HDF5 file (``index=`` selects the entry). ``dicom``: a folder with one
        short-axis cine series.
    dataset : str
        One of :data:`DATASETS`.
    **kwargs
        Passed to the data-set reader (e.g. ``manifest=`` for ukbb/phantom, ``metadata_csv=`` for
        mnms, ``index=`` for ferdian, ``series_uid=`` for dicom).
    """
    ds = _check_dataset(dataset)
    path = Path(path)
    if not path.exists():
        raise MissingFileError(path, f"not found (dataset {ds})")
    if ds in ("ukbb", "phantom"):
        from cmrkit.io.ukbb import load_ukbb_subject

        if ds == "phantom" and "manifest" not in kwargs:
            man = path.parent / "manifest.csv"
            if not man.is_file():
                raise MissingFileError(man, "phantom cohort manifest not found next to the subject folder")
            kwargs["manifest"] = man
        return load_ukbb_subject(path, dataset=ds, **kwargs)
    if ds == "acdc":
        from cmrkit.io.acdc import load_acdc_subject

        return load_acdc_subject(path, **kwargs)
    if ds == "mnms":
        from cmrkit.io.mnms import load_mnms_subject

        return load_mnms_subject(path, **kwargs)
    if ds == "ferdian":
        return load_ferdian_h5(path, **kwargs)
    from cmrkit.io.dicom import load_dicom_subject

    return load_dicom_subject(path, **kwargs)


def iter_subjects(data_dir: str | os.PathLike[str], dataset: str, **kwargs: Any) -> Iterator[Subject]:
    """Yield every subject under ``data_dir`` in sorted order.

    ``phantom``: ``data_dir`` holds ``manifest.csv`` (required) and one folder per subject.
    ``ukbb``: one folder per subject (a ``manifest.csv`` is used when present). ``acdc``: the
    data-set root (with ``training``/``testing``) or one split folder. ``mnms``: case folders
    or a flat folder of ``<CODE>_sa_{ED,ES}[_gt].nii.gz`` files (a metadata CSV with an
    ``External code`` column is picked up when present). ``ferdian``: a folder of ``.h5`` files,
    one subject per entry. ``dicom``: one sub-folder per cine series.
    """
    ds = _check_dataset(dataset)
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise MissingFileError(data_dir, f"data folder not found (dataset {ds})")
    if ds in ("ukbb", "phantom"):
        from cmrkit.io.ukbb import iter_ukbb_subjects

        yield from iter_ukbb_subjects(data_dir, dataset=ds, **kwargs)
    elif ds == "acdc":
        from cmrkit.io.acdc import iter_acdc_subjects

        yield from iter_acdc_subjects(data_dir, **kwargs)
    elif ds == "mnms":
        from cmrkit.io.mnms import iter_mnms_subjects

        yield from iter_mnms_subjects(data_dir, **kwargs)
    elif ds == "ferdian":
        yield from _iter_ferdian(data_dir)
    else:
        from cmrkit.io.dicom import iter_dicom_subjects

        yield from iter_dicom_subjects(data_dir, **kwargs)
