"""Checked NIfTI reading and atomic NIfTI writing.

Every reader in :mod:`cmrkit.io` goes through :func:`load_nifti`, so bad input fails the same way
everywhere: one :class:`DataError` whose message starts with the file path and says what is wrong
(missing file, truncated or corrupt gzip/NIfTI, wrong dimensionality, NaN/inf intensities, label
values outside the allowed set, non-integer labels, singular affine).

Geometry follows nibabel: ``affine`` maps a voxel index ``(i, j, k, 1)`` to RAS+ world
millimetres, ``world = affine @ voxel``. Arrays are returned in the stored axis order
(``X, Y, Z[, T]``); nothing is reoriented.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cmrkit.labels import N_CLASSES

__all__ = [
    "DataError",
    "MissingFileError",
    "NiftiVolume",
    "LABEL_VALUES",
    "KIT_LABEL_LEGEND",
    "load_nifti",
    "save_nifti",
    "check_label_values",
    "check_same_geometry",
    "voxel_volume_ml",
    "spacing_from_affine",
]

#: label values allowed in a label map after reading (the kit convention of :mod:`cmrkit.labels`).
LABEL_VALUES: tuple[int, ...] = tuple(range(N_CLASSES))
#: meaning of :data:`LABEL_VALUES` in the kit convention (UK Biobank, M&Ms), quoted in error messages
KIT_LABEL_LEGEND = "0 background, 1 LV, 2 Myo, 3 RV"

_TIME_UNIT_TO_MS = {"sec": 1000.0, "msec": 1.0, "usec": 1e-3}


class DataError(ValueError):
    """Bad input data. ``str(err)`` starts with the offending path (or argument name).

    Attributes
    ----------
    path : pathlib.Path or None
        The file (or folder) the problem was found in.
    problem : str
        What is wrong, without the path.
    """

    def __init__(self, path: str | os.PathLike[str] | None, problem: str) -> None:
        self.path = Path(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)

    def __reduce__(self):  # keep pickling (multiprocessing) working with two arguments
        return (type(self), (self.path, self.problem))


class MissingFileError(DataError, FileNotFoundError):
    """A required file or folder does not exist (both a :class:`DataError` and a FileNotFoundError)."""


@dataclass
class NiftiVolume:
    """An image or label volume read by :func:`load_nifti`.

    Attributes
    ----------
    data : numpy.ndarray
        ``float32`` for ``kind="image"``, ``uint8`` for ``kind="label"``; stored axis order.
    affine : numpy.ndarray
        4 x 4 voxel-to-world (RAS+, mm) matrix, ``float64``.
    path : pathlib.Path
        Source file.
    frame_duration_ms : float or None
        ``pixdim[4]`` converted to milliseconds for 4-D files whose header gives a time unit;
        None when the file is not 4-D or the unit is unknown.
    header : Any
        The nibabel header (for anything else a caller needs).
    """

    data: np.ndarray
    affine: np.ndarray
    path: Path
    frame_duration_ms: float | None = None
    header: Any = field(default=None, repr=False)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm) along the three spatial axes, from the affine's column norms."""
        return spacing_from_affine(self.affine)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size (mm) along each voxel axis: the Euclidean norms of the affine's first 3 columns."""
    a = np.asarray(affine, dtype=float)
    if a.shape != (4, 4):
        raise ValueError(f"affine: expected a 4x4 matrix, got shape {a.shape}")
    return tuple(float(v) for v in np.linalg.norm(a[:3, :3], axis=0))  # type: ignore[return-value]


def voxel_volume_ml(spacing_or_affine: Sequence[float] | np.ndarray) -> float:
    """Volume of one voxel in millilitres.

    ``|det(A[:3, :3])| / 1000`` for a 4 x 4 affine (exact for oblique or sheared grids), or
    ``sx * sy * sz / 1000`` for three spacings in mm.
    """
    a = np.asarray(spacing_or_affine, dtype=float)
    if a.shape == (4, 4):
        v = abs(float(np.linalg.det(a[:3, :3])))
    elif a.shape == (3,):
        if np.any(a <= 0) or not np.all(np.isfinite(a)):
            raise ValueError(f"spacing: expected three positive finite values (mm), got {a.tolist()}")
        v = float(np.prod(a))
    else:
        raise ValueError(f"spacing_or_affine: expected 3 spacings (mm) or a 4x4 affine, got shape {a.shape}")
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"spacing_or_affine: voxel volume is {v}, expected a positive number")
    return v / 1000.0


def check_label_values(
    data: np.ndarray,
    path: str | os.PathLike[str] | None = None,
    allowed: Iterable[int] = LABEL_VALUES,
    legend: str = KIT_LABEL_LEGEND,
) -> np.ndarray:
    """Check that a label array holds only integer values from ``allowed`` and return it as uint8.

    ``legend`` (what each value means in the caller's convention) is quoted in the error message.

    Raises
    ------
    DataError
        On NaN/inf, non-integer values or values outside ``allowed`` (the message lists the bad values).
    """
    arr = np.asarray(data)
    allowed = tuple(int(v) for v in allowed)
    where = path if path is not None else "labels"
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise DataError(where, f"label map contains {int(np.sum(~np.isfinite(arr)))} NaN/inf values")
        if not np.all(arr == np.round(arr)):
            bad = np.unique(arr[arr != np.round(arr)])[:5]
            raise DataError(where, f"label map contains non-integer values, e.g. {bad.tolist()}")
    elif arr.dtype.kind not in "biu":
        raise DataError(where, f"label map has non-numeric dtype {arr.dtype}")
    values = np.unique(arr)
    bad = [int(v) for v in values if int(v) not in allowed]
    if bad:
        raise DataError(where, f"label values {bad[:8]} outside the allowed set {list(allowed)} ({legend})")
    return arr.astype(np.uint8)


def _parse_ndim(ndim: int | Iterable[int] | None) -> tuple[int, ...] | None:
    if ndim is None:
        return None
    if isinstance(ndim, (int, np.integer)):
        return (int(ndim),)
    return tuple(int(n) for n in ndim)


def load_nifti(
    path: str | os.PathLike[str],
    ndim: int | Iterable[int] | None = None,
    kind: str = "image",
    allowed_labels: Iterable[int] = LABEL_VALUES,
    label_legend: str = KIT_LABEL_LEGEND,
) -> NiftiVolume:
    """Read a NIfTI file and check it, raising one clear :class:`DataError` on any problem.

    Parameters
    ----------
    path : path-like
        ``.nii`` or ``.nii.gz`` file.
    ndim : int or iterable of int, optional
        Accepted dimensionalities (e.g. ``4`` for a cine, ``(3, 4)``). Trailing singleton axes
        beyond the largest accepted ``ndim`` are dropped first (``X, Y, Z, 1`` counts as 3-D).
    kind : {"image", "label"}
        ``"image"``: returned as float32, NaN/inf rejected. ``"label"``: values must be integers
        from ``allowed_labels``; returned as uint8 (no remapping happens here).
    allowed_labels : iterable of int
        Label values accepted for ``kind="label"`` (default 0, 1, 2, 3).
    label_legend : str
        What the label values mean in the file's convention, quoted when a value is refused
        (default the kit's, :data:`KIT_LABEL_LEGEND`; ACDC files: 1 RV, 2 Myo, 3 LV).

    Returns
    -------
    NiftiVolume

    Raises
    ------
    MissingFileError
        The file does not exist.
    DataError
        Unreadable/truncated/corrupt file, wrong dimensionality, empty axis, non-finite values,
        bad label values, or a singular/non-finite affine. The message starts with the path.
    """
    import nibabel as nib

    if kind not in ("image", "label"):
        raise ValueError(f"kind: expected 'image' or 'label', got {kind!r}")
    path = Path(path)
    if not path.exists():
        raise MissingFileError(path, "file not found")
    if path.is_dir():
        raise DataError(path, "is a folder, expected a NIfTI file (.nii or .nii.gz)")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises ImageFileError, gzip/zlib/EOF/OSError for corrupt files
        raise DataError(path, f"cannot read as NIfTI ({type(exc).__name__}: {exc})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataError(path, f"is a {type(img).__name__}, expected a NIfTI-1/2 image")
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # truncated gzip: EOFError, zlib.error, OSError; short file: ValueError
        raise DataError(
            path, f"file is truncated or corrupt, voxel data unreadable ({type(exc).__name__}: {exc})"
        ) from None
    data = np.asarray(data)
    accepted = _parse_ndim(ndim)
    if accepted is not None:
        while data.ndim > max(accepted) and data.shape[-1] == 1:
            data = data[..., 0]
        if data.ndim not in accepted:
            want = " or ".join(f"{n}-D" for n in accepted)
            raise DataError(path, f"expected a {want} {kind} volume, got {data.ndim}-D with shape {tuple(data.shape)}")
    if data.size == 0 or 0 in data.shape:
        raise DataError(path, f"empty volume, shape {tuple(data.shape)}")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise DataError(path, f"invalid affine (non-finite or singular): {np.round(affine, 4).tolist()}")
    if kind == "label":
        data = check_label_values(data, path, allowed_labels, label_legend)
    else:
        if data.dtype.kind not in "biuf":
            raise DataError(path, f"image has non-numeric dtype {data.dtype}")
        data = data.astype(np.float32, copy=False)
        nonfinite = int(np.sum(~np.isfinite(data)))
        if nonfinite:
            raise DataError(path, f"image contains {nonfinite} NaN/inf values")
    frame_ms = None
    if data.ndim == 4:
        try:
            _, tunit = img.header.get_xyzt_units()
            dt = float(img.header.get_zooms()[3])
        except Exception:  # pragma: no cover - exotic headers
            tunit, dt = "unknown", 0.0
        if tunit in _TIME_UNIT_TO_MS and dt > 0:
            frame_ms = dt * _TIME_UNIT_TO_MS[tunit]
    return NiftiVolume(data=data, affine=affine, path=path, frame_duration_ms=frame_ms, header=img.header)


def save_nifti(
    path: str | os.PathLike[str],
    data: np.ndarray,
    affine: np.ndarray,
    kind: str = "image",
    frame_duration_ms: float | None = None,
) -> Path:
    """Write a NIfTI-1 file atomically (temporary file renamed over ``path``).

    Labels are stored as uint8, images as float32. ``frame_duration_ms`` sets ``pixdim[4]`` (in
    ms, with the time unit recorded) for 4-D data. Spatial units are mm.
    """
    import nibabel as nib

    from cmrkit.utils import atomic_path

    if kind not in ("image", "label"):
        raise ValueError(f"kind: expected 'image' or 'label', got {kind!r}")
    arr = check_label_values(data, path) if kind == "label" else np.asarray(data, dtype=np.float32)
    img = nib.Nifti1Image(arr, np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm", "msec")
    if arr.ndim == 4 and frame_duration_ms is not None:
        zooms = list(img.header.get_zooms())
        zooms[3] = float(frame_duration_ms)
        img.header.set_zooms(zooms)
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    path = Path(path)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


def check_same_geometry(
    a: NiftiVolume,
    b: NiftiVolume,
    spatial_only: bool = True,
    atol: float = 1e-3,
) -> None:
    """Raise :class:`DataError` (naming ``b.path`` and ``a.path``) unless the two volumes share
    the spatial shape (``X, Y, Z``; all axes when ``spatial_only=False``) and the affine within ``atol`` mm."""
    sa = a.data.shape[:3] if spatial_only else a.data.shape
    sb = b.data.shape[:3] if spatial_only else b.data.shape
    if tuple(sa) != tuple(sb):
        raise DataError(b.path, f"shape {tuple(sb)} does not match {a.path.name} shape {tuple(sa)}")
    if not np.allclose(a.affine, b.affine, atol=atol, rtol=0):
        diff = float(np.max(np.abs(a.affine - b.affine)))
        raise DataError(b.path, f"affine differs from {a.path.name} by up to {diff:.4g} mm (tolerance {atol})")
