"""A cohort: the subjects of a data set with their covariates and phenotypes, read on demand.

:func:`load_cohort` opens a data folder of any layout the kit reads (:data:`cmrkit.io.DATASETS`)
and returns a :class:`Cohort`: the subject ids, a table with one row per subject (covariates and
the LV/RV phenotypes), and the :class:`~cmrkit.io.Subject` records, which for the phantom are read
from disk when asked for (a demo cohort does not fit in memory at once).

For the phantom the table is the cohort's ``manifest.csv`` (the eight covariates -- age, sex,
height, weight, smoking, alcohol, systolic and diastolic blood pressure --, the covariate model's
targets and the ``*_measured`` phenotypes of the label maps). For other data sets the covariates are
those the source records (``sex``, ``age``, ``height_cm``, ``weight_kg``; a diagnosis as
``pathology``) and the phenotypes are measured here from the ED/ES labels with
:func:`cmrkit.clinical.phenotypes` and stored under the manifest's column names
(:data:`cmrkit.clinical.MEASURED_COLUMNS`), so chapters read one table layout whatever the data set.
A phenotype of a structure the source did not delineate (no RV contours in Sunnybrook, say) is NaN,
never 0.

Real folders are heterogeneous: a subject may have labels but no cine image, a folder may have no
covariates at all. :data:`FEATURES` names what a subject or a data set can provide;
:meth:`Cohort.select` returns the subjects that have what a step needs and, for the others, why not;
:meth:`Cohort.unmet` says in the report's words what the whole data set lacks
(``"needs tagging; this data set has none"``).

:func:`load_real_mnms` reads the real M&Ms cases shown beside the phantom (the folder comes from the
run's ``realdata.mnms``) and :func:`mid_slice` picks the mid-ventricular slice of a label volume.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
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
    "FEATURES",
    "needs_reason",
    "Cohort",
    "load_cohort",
    "load_real_mnms",
    "mid_slice",
]

#: subjects whose images are measured (realism, tagging); phenotype tables use every subject
N_MEASURE = 10
#: covariates copied from a real data set's subject records into the table
_COVARIATES = ("sex", "age", "height_cm", "weight_kg")
#: subject covariates holding a diagnosis (M&Ms ``Pathology``, ACDC ``Group``), copied as ``pathology``
_DIAGNOSIS = ("pathology", "group")
#: diagnoses that mean a normal heart (``pathology == "none"``, as in the phantom manifest)
_NORMAL = ("nor", "normal", "none", "healthy")
#: subjects read from a real data set when ``max_subjects`` is not given
_DEFAULT_MAX_REAL = 50

#: what a subject or a data set can provide, in the words of the report ("needs <this>; this data set has none")
FEATURES: dict[str, str] = {
    "cine": "cine images",
    "labels": "labels at ED and ES",
    "tagging": "tagging",
    "ground_truth": "ground truth (the phantom's true motion and strain)",
    "sex": "a 'sex' covariate",
    "height_weight": "height and weight covariates",
}
#: why one subject lacks a feature
_SUBJECT_LACKS = {
    "cine": "no cine image",
    "labels": "no labels at ED and ES",
    "tagging": "no tagging",
    "ground_truth": "no ground truth",
    "sex": "no 'sex' covariate",
    "height_weight": "no height and weight",
}
#: phenotype prefix -> structure it measures, and the frames it needs it in
_PHENOTYPE_STRUCTURES = {"LVM": ("MYO", ("ed",)), "LV": ("LV", ("ed", "es")), "RV": ("RV", ("ed", "es"))}


def needs_reason(missing: Sequence[str]) -> str:
    """The report's reason for leaving an artefact out: ``"needs tagging; this data set has none"``
    (``missing`` are :data:`FEATURES` names)."""
    unknown = [m for m in missing if m not in FEATURES]
    if unknown or not missing:
        raise ValueError(f"needs_reason: expected names from {list(FEATURES)}, got {list(missing)}")
    what = [FEATURES[m] for m in missing]
    if len(what) == 1:
        return f"needs {what[0]}; this data set has none"
    listed = ", ".join(what[:-1]) + f" and {what[-1]}"
    return f"needs {listed}; this data set has " + ("neither" if len(what) == 2 else "none of them")


def _is_set(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and np.isnan(v)) and str(v).strip() != ""


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
        """Subjects with a recorded pathology (regional dysfunction on the phantom, a diagnosis such as
        DCM in a real data set's metadata), in data-set order; ``"unknown"`` is neither healthy nor this."""
        return [i for i in self.ids if self.pathology(i) not in ("none", "unknown")]

    def measured_ids(self, n: int = N_MEASURE) -> list[str]:
        """The first ``n`` subjects with a cine and labels at ED and ES, whose images are measured."""
        return self.select("cine", "labels")[0][:n]

    # ------------------------------------------------------------------ what the data provide
    def _row(self, subject_id: str) -> Mapping[str, Any]:
        rows = self.table.loc[self.table["subject_id"].astype(str) == subject_id]
        return rows.iloc[0].to_dict() if len(rows) else {}

    def has(self, subject_id: str, feature: str) -> bool:
        """Whether ``subject_id`` provides ``feature`` (one of :data:`FEATURES`). Phantom subjects
        provide everything (and are not read to find out)."""
        if feature not in FEATURES:
            raise ValueError(f"feature: expected one of {list(FEATURES)}, got {feature!r}")
        if feature in ("sex", "height_weight"):
            row = self._row(subject_id)
            cols = ("sex",) if feature == "sex" else ("height_cm", "weight_kg")
            return all(_is_set(row.get(c)) for c in cols)
        if feature == "ground_truth" or self.dataset == "phantom":
            return self.has_ground_truth
        s = self.subject(subject_id)
        if feature == "cine":
            return s.cine is not None
        if feature == "tagging":
            return bool(s.tagging)
        return _has_ed_es_labels(s)

    def select(self, *features: str) -> tuple[list[str], dict[str, str]]:
        """The subjects that have every one of ``features``, in data-set order, and ``{subject: why
        not}`` for the others (``"no cine image"``, ``"no 'sex' covariate"``, ...)."""
        ok: list[str] = []
        skipped: dict[str, str] = {}
        for sid in self.ids:
            lacks = [_SUBJECT_LACKS[f] for f in features if not self.has(sid, f)]
            if lacks:
                skipped[sid] = ", ".join(lacks)
            else:
                ok.append(sid)
        return ok, skipped

    def provides(self) -> frozenset[str]:
        """The :data:`FEATURES` that at least one subject of the cohort has."""
        return frozenset(f for f in FEATURES if any(self.has(sid, f) for sid in self.ids))

    def unmet(self, features: Sequence[str]) -> str | None:
        """``None`` when some subject has each of ``features``; else the reason an artefact that needs
        them is left out (:func:`needs_reason`, e.g. ``"needs tagging; this data set has none"``)."""
        have = self.provides()
        missing = [f for f in features if f not in have]
        return needs_reason(missing) if missing else None

    def undelineated(self, subject_id: str) -> list[str]:
        """Structures the subject's source did not delineate at ED or ES (``["MYO at ES", "RV"]``);
        ``[]`` for full labels (the phantom, UK Biobank, ACDC, M&Ms)."""
        if self.dataset == "phantom":
            return []
        return _unlabelled(self.subject(subject_id))

    def phenotypes(self, subject_id: str) -> dict[str, float]:
        """:func:`cmrkit.clinical.phenotypes` of the subject's ED/ES labels (with cardiac output when
        the heart rate is known), NaN for structures its source did not delineate."""
        from ..clinical import phenotypes

        s = self.subject(subject_id)
        return _mask_unlabelled(phenotypes(s.label_ed, s.label_es, s.affine, heart_rate=s.heart_rate_bpm), s)

    def describe(self) -> str:
        """What the cohort holds and what it lacks, in a few lines (the notebooks print it)."""
        name = self.dataset
        lines = [f"{len(self.ids)} subjects ({name})"]
        if self.dataset == "phantom":
            lines.append("cine, labels, tagging, covariates and ground truth for every subject")
            return "\n".join(lines)
        both, skipped = self.select("cine", "labels")
        lines[0] += f": {len(both)} with a cine and labels at ED and ES"
        for sid, why in skipped.items():
            lines.append(f"  {sid}: {why}")
        have = self.provides()
        for feature in ("tagging", "sex", "height_weight"):
            n = sum(self.has(sid, feature) for sid in self.ids) if feature in have else 0
            lines.append(f"{FEATURES[feature]}: {n} of {len(self.ids)} subjects")
        lines.append(f"{FEATURES['ground_truth']}: none (only the phantom has it)")
        partial = sorted({", ".join(v) for s in self._fixed.values() if (v := _unlabelled(s))})
        if partial:
            lines.append("not delineated in the labels: " + "; ".join(partial))
        return "\n".join(lines)


def _has_ed_es_labels(s: Subject) -> bool:
    if s.cine_labels is None or s.labelled_frames is None or s.ed_frame is None or s.es_frame is None:
        return False
    return bool(s.labelled_frames[s.ed_frame] and s.labelled_frames[s.es_frame])


def _unlabelled(s: Subject) -> list[str]:
    """Structures the source did not delineate at ED or ES (``"RV"``, ``"MYO at ES"``)."""
    if not _has_ed_es_labels(s):
        return []
    out = []
    for name in ("LV", "MYO", "RV"):
        at = [ph for ph, t in (("ED", s.ed_frame), ("ES", s.es_frame)) if name not in s.labelled_structures(t)]
        if at:
            out.append(name if len(at) == 2 else f"{name} at {at[0]}")
    return out


def _mask_unlabelled(ph: dict[str, float], s: Subject) -> dict[str, float]:
    """Phenotypes of structures the source did not delineate at ED/ES set to NaN (not 0 mL)."""
    frames = {"ed": s.ed_frame, "es": s.es_frame}
    out = dict(ph)
    for key in out:
        prefix = "LVM" if key.startswith("LVM") else key[:2]
        if prefix not in _PHENOTYPE_STRUCTURES:
            continue
        structure, need = _PHENOTYPE_STRUCTURES[prefix]
        if any(structure not in s.labelled_structures(frames[f]) for f in need):
            out[key] = float("nan")
    if "CO" in out and not np.isfinite(out.get("LVSV", np.nan)):
        out["CO"] = float("nan")
    return out


def _diagnosis(covariates: Mapping[str, Any]) -> str | None:
    """The subject's diagnosis as the table's ``pathology``: ``"none"`` for a normal heart."""
    for key in _DIAGNOSIS:
        v = covariates.get(key)
        if _is_set(v):
            return "none" if str(v).strip().lower() in _NORMAL else str(v).strip()
    return None


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
        diagnosis = _diagnosis(s.covariates)
        if diagnosis is not None:
            row["pathology"] = diagnosis
        if _has_ed_es_labels(s):
            try:
                ph = _mask_unlabelled(phenotypes(s.label_ed, s.label_es, s.affine), s)
            except ValueError as exc:
                where = ", ".join(str(v) for k, v in s.sources.items() if k.startswith(("label", "cine"))) or data_dir
                raise ValueError(f"subject {s.subject_id} ({where}): phenotypes cannot be measured: {exc}") from None
            row.update({col: ph[k] for k, col in MEASURED_COLUMNS.items()})
        rows.append(row)
    if not fixed:
        raise ValueError(f"no subjects found in {data_dir} (dataset {dataset})")
    table = pd.DataFrame(rows)
    table["pathology"] = table["pathology"].fillna("unknown") if "pathology" in table.columns else "unknown"
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
