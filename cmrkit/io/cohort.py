"""A cohort: the subjects of a data set with their covariates and phenotypes, read on demand.

:func:`load_cohort` opens a data folder of any layout the kit reads (:data:`cmrkit.io.DATASETS`)
and returns a :class:`Cohort`: the subject ids, a table with one row per subject (covariates and
the LV/RV phenotypes), and the :class:`~cmrkit.io.Subject` records, which for the phantom are read
from disk when asked for (a demo cohort does not fit in memory at once).

For the phantom the table is the cohort's ``manifest.csv`` (the eight covariates -- age, sex,
height, weight, smoking, alcohol, systolic and diastolic blood pressure --, the covariate model's
targets and the ``*_measured`` phenotypes of the label maps). For other data sets the covariates are
those the source records (``sex``, ``height_cm``, ``weight_kg``) and the phenotypes are measured
here from the ED/ES labels with :func:`cmrkit.clinical.phenotypes` and stored under the manifest's
column names (:data:`cmrkit.clinical.MEASURED_COLUMNS`), so chapters read one table layout whatever
the data set.

:func:`load_real_mnms` reads the real M&Ms cases shown beside the phantom (the folder comes from the
run's ``realdata.mnms``) and :func:`mid_slice` picks the mid-ventricular slice of a label volume.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..labels import LV_BLOOD, LV_MYO
from ..utils import resolve_path
from .readers import iter_subjects, load_subject
from .subject import Subject

__all__ = [
    "N_MEASURE",
    "Cohort",
    "load_cohort",
    "load_real_mnms",
    "mid_slice",
]

#: subjects whose images are measured (realism, tagging); phenotype tables use every subject
N_MEASURE = 10
#: covariates copied from a real data set's subject records into the table
_COVARIATES = ("sex", "height_cm", "weight_kg")
#: subjects read from a real data set when ``max_subjects`` is not given
_DEFAULT_MAX_REAL = 50


@dataclass
class Cohort:
    """Subjects of the run (loaded on demand) and their phenotype table.

    Attributes
    ----------
    ids : list of str
        Subject ids in data-set order.
    table : pandas.DataFrame
        One row per subject (``subject_id`` first): the phantom manifest (covariates, targets,
        ``*_measured`` phenotypes), or for other data sets the phenotypes measured here with
        :func:`cmrkit.clinical.phenotypes` under the manifest's column names.
    dataset, data_dir : the run's data set.
    has_ground_truth : True for the phantom (``ground_truth.h5`` in every subject folder).

    :meth:`subject` reads a phantom subject from its folder when asked and keeps the last few in
    memory (``cache_size``); other data sets are read at load time.
    """

    ids: list[str]
    table: pd.DataFrame
    dataset: str
    data_dir: Path
    has_ground_truth: bool
    meta: dict[str, Any] = field(default_factory=dict)
    _cache: dict[str, Subject] = field(default_factory=dict, repr=False)
    _fixed: dict[str, Subject] = field(default_factory=dict, repr=False)
    cache_size: int = 4

    def subject(self, subject_id: str) -> Subject:
        """The :class:`cmrkit.io.Subject` record of ``subject_id``."""
        if subject_id in self._fixed:
            return self._fixed[subject_id]
        if subject_id in self._cache:
            self._cache[subject_id] = self._cache.pop(subject_id)  # most recently used last
            return self._cache[subject_id]
        if subject_id not in self.ids:
            raise KeyError(f"subject {subject_id!r} not in the cohort")
        subj = load_subject(self.data_dir / subject_id, self.dataset, manifest=self.data_dir / "manifest.csv")
        self._cache[subject_id] = subj
        while len(self._cache) > self.cache_size:
            self._cache.pop(next(iter(self._cache)))
        return subj

    def ground_truth(self, subject: Subject) -> dict[str, Any]:
        """The phantom ground truth of a subject (:func:`cmrkit.phantom.read_ground_truth`)."""
        if not self.has_ground_truth:
            raise ValueError(f"data set {self.dataset!r} has no ground truth (only the phantom has)")
        from ..phantom import read_ground_truth

        src = subject.sources.get("ground_truth")
        return read_ground_truth(src if src is not None else self.data_dir / subject.subject_id)

    def pathology(self, subject_id: str) -> str:
        """The manifest's pathology description (``"none"`` when healthy or unknown)."""
        if "pathology" not in self.table.columns:
            return "none"
        row = self.table.loc[self.table["subject_id"] == subject_id, "pathology"]
        return str(row.iloc[0]) if len(row) and isinstance(row.iloc[0], str) else "none"

    def healthy_ids(self) -> list[str]:
        """Subjects without a pathology (``"none"``), in data-set order."""
        return [i for i in self.ids if self.pathology(i) == "none"]

    def pathological_ids(self) -> list[str]:
        """Subjects with a pathology (regional dysfunction on the phantom), in data-set order."""
        return [i for i in self.ids if self.pathology(i) != "none"]

    def measured_ids(self, n: int = N_MEASURE) -> list[str]:
        """The first ``n`` subjects, whose images are measured."""
        return self.ids[:n]


def load_cohort(
    source: Mapping[str, Any] | str | os.PathLike[str],
    dataset: str | None = None,
    *,
    max_subjects: int | None = None,
) -> Cohort:
    """The subjects of a data folder and their phenotype table.

    Parameters
    ----------
    source
        The run configuration (:class:`cmrkit.config.Config`: its ``data_dir`` and ``dataset`` are
        used) or a data folder.
    dataset
        The folder's layout (one of :data:`cmrkit.io.DATASETS`); needed with a folder, taken from
        the configuration otherwise.
    max_subjects
        Read at most this many subjects (default: every phantom subject, 50 of a real data set).

    For the phantom the table is ``manifest.csv`` and subjects are read on demand. Other data sets are
    read at once: phenotypes are measured from the ED/ES labels (:func:`cmrkit.clinical.phenotypes`)
    and stored under the phantom's column names (:data:`cmrkit.clinical.MEASURED_COLUMNS`), with the subject
    covariates (``sex``, ``height_cm``, ``weight_kg`` where the source has them) and a ``pathology``
    column (``"unknown"`` unless the source has one).
    """
    from ..clinical import MEASURED_COLUMNS, phenotypes

    if isinstance(source, Mapping):
        data_dir = Path(source["data_dir"])
        dataset = dataset or str(source["dataset"])
    else:
        if dataset is None:
            raise ValueError(f"load_cohort({str(source)!r}): give the data set layout (dataset='phantom', 'ukbb', ...)")
        data_dir = Path(source)
    if dataset == "phantom":
        man = data_dir / "manifest.csv"
        if not man.is_file():
            raise FileNotFoundError(f"phantom manifest {man} not found (generate the cohort with cmrkit.phantom)")
        table = pd.read_csv(man)
        if max_subjects is not None:
            table = table.iloc[:max_subjects]
        ids = [str(i) for i in table["subject_id"]]
        missing = [i for i in ids if not (data_dir / i).is_dir()]
        if missing:
            raise FileNotFoundError(f"{data_dir}: subject folders missing for {missing[:5]} (listed in manifest.csv)")
        return Cohort(ids, table.reset_index(drop=True), dataset, data_dir, True)
    fixed: dict[str, Subject] = {}
    rows = []
    cap = _DEFAULT_MAX_REAL if max_subjects is None else max_subjects
    for s in iter_subjects(data_dir, dataset):
        if len(fixed) >= cap:
            break
        fixed[s.subject_id] = s
        row: dict[str, Any] = {"subject_id": s.subject_id}
        row.update({k: s.covariates.get(k) for k in _COVARIATES if k in s.covariates})
        if s.cine_labels is not None and s.ed_frame is not None and s.es_frame is not None:
            try:
                ph = phenotypes(s.label_ed, s.label_es, s.affine)
                row.update({col: ph[k] for k, col in MEASURED_COLUMNS.items()})
            except ValueError:
                pass
        rows.append(row)
    if not fixed:
        raise ValueError(f"no subjects found in {data_dir} (dataset {dataset})")
    table = pd.DataFrame(rows)
    if "pathology" not in table.columns:
        table["pathology"] = "unknown"
    return Cohort(list(fixed), table, dataset, data_dir, False, _fixed=fixed)


def load_real_mnms(folder: str | os.PathLike[str] | None) -> list[Subject]:
    """The real M&Ms cases of ``folder`` with images (labels-only cases skipped).

    ``folder`` is the run's ``realdata.mnms``; ``None``, ``""`` or a folder that does not exist give
    ``[]`` (the callers say in their tables that real data is absent).
    """
    if folder is None or str(folder) == "":
        return []
    path = resolve_path(folder)
    if not path.is_dir():
        return []
    return [s for s in iter_subjects(path, "mnms") if s.cine is not None and s.cine_labels is not None]


def mid_slice(labels_xyz: np.ndarray) -> int:
    """Mid-ventricular slice of a label volume ``(X, Y, Z)``: the middle one of the slices holding both
    LV blood pool and myocardium."""
    lab = np.asarray(labels_xyz)
    both = np.flatnonzero(np.any(lab == LV_BLOOD, axis=(0, 1)) & np.any(lab == LV_MYO, axis=(0, 1)))
    if both.size == 0:
        raise ValueError(f"labels: no slice holds both LV blood pool ({LV_BLOOD}) and myocardium ({LV_MYO})")
    return int(both[len(both) // 2])
