"""ACDC (Bernard et al. 2018, IEEE TMI 37:2514) patient folders.

Layout ``{training,testing}/patientNNN/``::

    Info.cfg                          "ED: 1", "ES: 12", "Group: DCM", "Height: 184.0", "NbFrame: 30", "Weight: 95.0"
    patientNNN_4d.nii.gz              4-D cine (X, Y, Z, T)
    patientNNN_frameMM.nii.gz         3-D frame MM (1-based, zero-padded), MM in {ED, ES}
    patientNNN_frameMM_gt.nii.gz      its labels: 0 background, 1 RV, 2 Myo, 3 LV

``ED``/``ES`` in Info.cfg are **1-based**; the Subject stores them 0-based. Labels are remapped to
the kit convention (1 LV, 2 Myo, 3 RV) with :func:`cmrkit.labels.remap_acdc_labels`. Height (cm),
weight (kg) and group (NOR, MINF, DCM, HCM, RV) become covariates ``height_cm``, ``weight_kg``,
``group`` (the phantom manifest's names).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cmrkit.io.nifti import DataError, MissingFileError, check_same_geometry, load_nifti
from cmrkit.io.subject import Subject
from cmrkit.labels import remap_acdc_labels

__all__ = [
    "INFO_REQUIRED",
    "read_info_cfg",
    "load_acdc_subject",
    "iter_acdc_subjects",
]

#: Info.cfg fields a patient folder must have.
INFO_REQUIRED: tuple[str, ...] = ("ED", "ES")


def read_info_cfg(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse an ACDC ``Info.cfg`` into a dict (``ED``/``ES``/``NbFrame`` as int, ``Height``/``Weight``
    as float, ``Group`` as str). Raises :class:`DataError` naming the file when it is missing,
    malformed, or lacks a field of :data:`INFO_REQUIRED`, or when ED/ES are not positive integers."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "Info.cfg not found")
    raw: dict[str, str] = {}
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if ":" not in line:
            raise DataError(path, f"line {n} is not 'Key: value': {line!r}")
        k, v = line.split(":", 1)
        raw[k.strip()] = v.strip()
    missing = [k for k in INFO_REQUIRED if k not in raw or raw[k] == ""]
    if missing:
        raise DataError(path, f"missing field(s) {missing} (has {sorted(raw)})")
    out: dict[str, Any] = dict(raw)
    for k in ("ED", "ES", "NbFrame"):
        if k in raw:
            try:
                f = float(raw[k])
            except ValueError:
                raise DataError(path, f"field {k} must be an integer, got {raw[k]!r}") from None
            if f != int(f) or f < 1:
                raise DataError(path, f"field {k} must be a positive integer (1-based frame number), got {raw[k]!r}")
            out[k] = int(f)
    for k in ("Height", "Weight"):
        if k in raw:
            try:
                out[k] = float(raw[k])
            except ValueError:
                raise DataError(path, f"field {k} must be a number, got {raw[k]!r}") from None
    return out


def load_acdc_subject(folder: str | os.PathLike[str]) -> Subject:
    """Read one ACDC ``patientNNN`` folder into a :class:`Subject` (labels at ED and ES, remapped).

    Without ``patientNNN_4d.nii.gz`` the cine is the two frames ``[ED, ES]``
    (``meta["frames"] == "ED/ES only"``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(folder, "patient folder not found")
    pid = folder.name
    info = read_info_cfg(folder / "Info.cfg")
    ed1, es1 = info["ED"], info["ES"]
    sources: dict[str, Path] = {"info": folder / "Info.cfg"}
    meta: dict[str, Any] = {"info_cfg": info, "ed_es_source": {"ed": "Info.cfg (1-based)", "es": "Info.cfg (1-based)"}}
    warnings: list[str] = []

    def _frame_files(fr1: int) -> tuple[Path, Path]:
        img = folder / f"{pid}_frame{fr1:02d}.nii.gz"
        gt = folder / f"{pid}_frame{fr1:02d}_gt.nii.gz"
        return img, gt

    gts = {}
    imgs = {}
    for name, fr1 in (("ED", ed1), ("ES", es1)):
        p_img, p_gt = _frame_files(fr1)
        if p_gt.exists():
            v = load_nifti(p_gt, ndim=3, kind="label")
            v.data = remap_acdc_labels(v.data)
            gts[name] = v
            sources[f"label_{name}"] = p_gt
        if p_img.exists():
            imgs[name] = load_nifti(p_img, ndim=3)
            sources[f"cine_{name}"] = p_img
    p4 = folder / f"{pid}_4d.nii.gz"
    if p4.exists():
        v4 = load_nifti(p4, ndim=4)
        sources["cine"] = p4
        T = v4.data.shape[3]
        for name, fr1 in (("ED", ed1), ("ES", es1)):
            if not 1 <= fr1 <= T:
                raise DataError(folder / "Info.cfg", f"{name}: {fr1} outside the {T} frames of {p4.name} (1-based)")
        if "NbFrame" in info and info["NbFrame"] != T:
            warnings.append(f"Info.cfg NbFrame={info['NbFrame']} but {p4.name} has {T} frames")
        for v in (*imgs.values(), *gts.values()):
            check_same_geometry(v4, v)
        cine = v4.data
        affine = v4.affine
        ed, es = ed1 - 1, es1 - 1
        labels = np.zeros(cine.shape, dtype=np.uint8)
        labelled = np.zeros(T, dtype=bool)
        for name, fr in (("ED", ed), ("ES", es)):
            if name in gts:
                labels[..., fr] = gts[name].data
                labelled[fr] = True
        if v4.frame_duration_ms:
            meta["frame_duration_ms"] = v4.frame_duration_ms
        meta["frames"] = "full cycle"
    else:
        if not imgs and not gts:
            raise DataError(folder, f"no {pid}_4d.nii.gz and no {pid}_frameMM[_gt].nii.gz files")
        first = next(iter({**imgs, **gts}.values()))
        for v in (*imgs.values(), *gts.values()):
            check_same_geometry(first, v)
        affine = first.affine
        cine = np.stack([imgs["ED"].data, imgs["ES"].data], axis=-1) if len(imgs) == 2 else None
        labels = np.zeros((*first.data.shape, 2), dtype=np.uint8)
        labelled = np.zeros(2, dtype=bool)
        for i, name in enumerate(("ED", "ES")):
            if name in gts:
                labels[..., i] = gts[name].data
                labelled[i] = True
        ed, es = 0, 1
        meta["frames"] = "ED/ES only"
        meta["original_frames_0based"] = {"ed": ed1 - 1, "es": es1 - 1}
    if not labelled.any():
        labels, labelled = None, None  # type: ignore[assignment]
    if warnings:
        meta["warnings"] = warnings
    covariates = {
        "height_cm": info.get("Height"),
        "weight_kg": info.get("Weight"),
        "group": info.get("Group"),
    }
    return Subject(
        subject_id=pid,
        dataset="acdc",
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


def iter_acdc_subjects(data_dir: str | os.PathLike[str]) -> Iterator[Subject]:
    """Yield every ``patientNNN`` folder (one holding ``Info.cfg``) found directly in ``data_dir``
    or one level below it (``training/``, ``testing/``), sorted by path."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise MissingFileError(data_dir, "ACDC folder not found")
    pat = re.compile(r"^patient\d+$")
    folders = [p for p in data_dir.iterdir() if p.is_dir() and pat.match(p.name)]
    for sub in sorted(p for p in data_dir.iterdir() if p.is_dir() and not pat.match(p.name)):
        folders += [p for p in sub.iterdir() if p.is_dir() and pat.match(p.name)]
    if not folders:
        raise DataError(data_dir, "no patientNNN folders found (ACDC layout)")
    for f in sorted(folders):
        yield load_acdc_subject(f)
