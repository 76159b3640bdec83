"""Export a phantom cohort's tagging in the HDF5 layout of Ferdian et al. 2020, with the true landmarks.

``cmrkit phantom --export-ferdian OUT.h5`` calls :func:`export_ferdian` so that ``cmrkit strain`` and
``cmrkit track`` can be tried on real-looking tagging without writing Python, and the tracker's result
compared with the phantom's ground truth::

    cmrkit phantom --export-ferdian phantom_tagging.h5 --export-subjects 2
    cmrkit strain phantom_tagging.h5                          # strain of the TRUE landmarks
    cmrkit track phantom_tagging.h5 --init-from-file          # HARP tracking from the true frame-0 grid

One row per tagging slice (basal, mid, apical of every exported subject), in Ferdian's layout (see
:mod:`cmrkit.io.ferdian`): ``image_seqs (n, T, H, W)`` with rows = y and columns = x, taken from
``tag_k.nii.gz (X, Y, 1, T)``; ``landmark_coords (n, T, 2, 168)``, the phantom's true material points in
those pixels (``ground_truth.h5`` ``landmarks/px``, row 0 = x, row 1 = y); ``px_spaces`` from the NIfTI
pixel size; ``ed_frame_idx = 0`` (the tagging starts at the R wave) and ``es_frame_idx`` the tagging frame
nearest in time to the cine's end-systole; ``_patients`` and ``_slices`` name the rows.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..io.ferdian import write_ferdian_h5
from ..io.nifti import load_nifti
from .subject import TAG_SLICE_NAMES
from .writer import read_ground_truth

__all__ = ["export_ferdian"]


def _subject_folders(cohort_dir: Path) -> list[Path]:
    folders = sorted(p for p in cohort_dir.iterdir() if p.is_dir() and (p / "ground_truth.h5").is_file())
    if not folders:
        raise FileNotFoundError(
            f"{cohort_dir}: no phantom subject folders (PHxxxx/ with ground_truth.h5); "
            "generate a cohort with `cmrkit phantom`"
        )
    return folders


def export_ferdian(
    cohort_dir: str | os.PathLike[str], out: str | os.PathLike[str], *, n_subjects: int | None = None
) -> Path:
    """Write the tagging slices of a phantom cohort and their true landmarks to one Ferdian HDF5 file.

    Parameters
    ----------
    cohort_dir
        A phantom cohort folder (``data/phantom/<profile>``).
    out
        The ``.h5`` file to write (atomically; an existing file is replaced, a folder is refused).
    n_subjects
        Export the first ``n_subjects`` subjects only (default: all).

    Returns
    -------
    Path
        ``out``.
    """
    cohort_dir, out = Path(cohort_dir), Path(out)
    if out.is_dir():
        raise IsADirectoryError(f"--export-ferdian {out}: is a folder; give the .h5 file to write")
    if n_subjects is not None and n_subjects < 1:
        raise ValueError(f"--export-subjects must be >= 1, got {n_subjects}")
    folders = _subject_folders(cohort_dir)[:n_subjects]
    images, landmarks, px, es, patients, slices = [], [], [], [], [], []
    for folder in folders:
        gt = read_ground_truth(folder)
        tag_ms, cine_ms = np.asarray(gt["times"]["tag_ms"]), np.asarray(gt["times"]["cine_ms"])
        es_tag = int(np.abs(tag_ms - cine_ms[int(gt["attrs"]["es_frame"])]).argmin())
        lm = np.asarray(gt["landmarks"]["px"], np.float64)  # (3, T, 2, 168), x = i, y = j of tag_k
        for k, name in enumerate(TAG_SLICE_NAMES):
            vol = load_nifti(folder / f"tag_{k + 1}.nii.gz", ndim=4, kind="image")
            img = np.asarray(vol.data[:, :, 0, :], np.float32).transpose(2, 1, 0)  # (X, Y, T) -> (T, rows=y, cols=x)
            if lm.shape[1] != img.shape[0]:
                raise ValueError(f"{folder}: {img.shape[0]} tagging frames but {lm.shape[1]} landmark frames")
            images.append(img)
            landmarks.append(lm[k])
            px.append(float(vol.spacing[0]))
            es.append(es_tag)
            patients.append(folder.name)
            slices.append(name)
    shapes = {a.shape for a in images}
    if len(shapes) != 1:
        raise ValueError(
            f"{cohort_dir}: tagging slices differ in shape {sorted(shapes)}; export one geometry at a time"
        )
    return write_ferdian_h5(
        out,
        image_seqs=np.stack(images),
        landmark_coords=np.stack(landmarks),
        px_spaces=np.asarray(px),
        ed_frame_idx=np.zeros(len(images), np.int64),
        es_frame_idx=np.asarray(es),
        extra={"_patients": np.asarray(patients, dtype=object), "_slices": np.asarray(slices, dtype=object)},
    )
