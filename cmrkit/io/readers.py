"""Dispatch to the data-set readers: one subject (:func:`load_subject`) or a folder (:func:`iter_subjects`).

Each reader module imports the :class:`~cmrkit.io.subject.Subject` record; this module imports the
readers, so the record and the readers never import each other in a loop.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cmrkit.io.ferdian import iter_ferdian_subjects, load_ferdian_h5
from cmrkit.io.nifti import MissingFileError
from cmrkit.io.subject import Subject

__all__ = ["DATASETS", "load_subject", "iter_subjects"]

#: every data-set layout the kit reads (see data/README.md); ``phantom`` is the embedded default
DATASETS: tuple[str, ...] = ("phantom", "ukbb", "acdc", "mnms", "ferdian", "dicom")


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
        yield from iter_ferdian_subjects(data_dir)
    else:
        from cmrkit.io.dicom import iter_dicom_subjects

        yield from iter_dicom_subjects(data_dir, **kwargs)
