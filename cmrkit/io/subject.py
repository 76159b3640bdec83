"""One record for one subject, whatever the source layout.

:class:`Subject` is what every reader in :mod:`cmrkit.io` returns (UK Biobank / phantom, ACDC,
M&Ms, Ferdian tagging HDF5, DICOM), and what :mod:`cmrkit.preprocess` and :mod:`cmrkit.clinical`
consume. The readers import this module; :mod:`cmrkit.io.readers` dispatches to them by data-set name.

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
- A labelled frame delineates the LV blood pool, the LV myocardium and the RV blood pool unless the
  source labels fewer: ``meta["labelled_structures"]`` then maps the frame to the names it has
  (Sunnybrook contours: ``{ED: ("LV", "MYO"), ES: ("LV",)}``, no RV); see
  :meth:`Subject.labelled_structures`. Background there means "not delineated", not "absent".
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from cmrkit.io.nifti import spacing_from_affine

__all__ = ["TAG_SLICE_NAMES", "STRUCTURES", "TaggingSlice", "Subject", "lv_volume_per_frame"]

#: names of the three UK Biobank tagging slices ``tag_1..3`` (Ferdian et al. 2020).
TAG_SLICE_NAMES: tuple[str, ...] = ("basal", "mid", "apical")
#: the structures of the label convention: LV blood pool (1), LV myocardium (2), RV blood pool (3)
STRUCTURES: tuple[str, ...] = ("LV", "MYO", "RV")


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

    def labelled_structures(self, t: int | None) -> tuple[str, ...]:
        """The structures (of :data:`STRUCTURES`) delineated in frame ``t``: all three in a labelled
        frame unless ``meta["labelled_structures"]`` lists fewer for it; ``()`` in an unlabelled frame,
        for ``t=None`` and without labels."""
        if t is None or self.labelled_frames is None or not self.labelled_frames[int(t)]:
            return ()
        partial = self.meta.get("labelled_structures")
        if partial is None:
            return STRUCTURES
        return tuple(s for s in STRUCTURES if s in partial.get(int(t), ()))

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
