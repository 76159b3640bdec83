"""Read and write tagged-MRI data in the HDF5 layout of Ferdian et al. 2020.

Reference: E. Ferdian et al., "Fully Automated Myocardial Strain Estimation from Cardiovascular
MRI-tagged Images Using a Deep Learning Framework in the UK Biobank", *Radiol Cardiothorac Imaging*
2020;2(1):e190032, code ``EdwardFerdian/mri-tagging-strain`` (MIT): ``src/preprocess/prepare_data.py``
writes, ``src/prediction_utils.py`` reads. One file holds ``n`` rows (one row = one tagged slice):

================================  ======================  =========================================
dataset                           shape                   meaning
================================  ======================  =========================================
``image_seqs``                    (n, 20, 256, 256)       tagged frames, zero-padded to square
``landmark_coords``               (n, 20, 2, 168)         24 spokes x 7 points, row 0 = x, 1 = y
``px_spaces``                     (n,)                    pixel spacing in mm (DICOM PixelSpacing[0])
``ed_frame_idx``, ``es_frame_idx``  (n,)                  ED / ES frame index
``bbox_corners``                  (n, 4)                  x1, y1, x2, y2 (30 % margin around ED landmarks)
``cropped_image_seqs``            (n, 20, 128, 128)       bbox crop resized to 128 (cubic)
``cropped_landmark_coords``       (n, 20, 2, 168)         landmarks in the cropped frame
``regions``                       (n, 20, 168)            AHA segment of each landmark
``_patients``/``_models``/``_slices``  (n,)               strings
================================  ======================  =========================================

Frames missing from a sequence are zero-filled in Ferdian's files (images and landmarks). Landmark
coordinates are pixel coordinates with x = column, y = row (CIM ``imageY`` flipped:
``y = H - imageY``). Ferdian's result files (``*.result.h5``) add ``landmark_predictions``,
``cc_strains (n, 20, 8)``, ``rr_strains (n, 20, 1)`` and their ``*_linear_*`` twins; the kit's
tracker writes those next to ``landmark_coords``.

Layouts accepted by :func:`read_ferdian_h5` besides the above (anything else is an error that names
the file and dataset):

* images stored frames-last, ``(n, H, W, T)`` (as NIfTI-derived pipelines such as
  ``Heart_Pipeline`` hold them): detected when the last axis is short (<= 64) and the middle two form
  a square image, or when it is the only axis matching the landmark frame count; force with
  ``image_layout="nhwt"`` / ``"nthw"``;
* a single slice without the row axis, ``(T, H, W)`` images with ``image_layout="thw"``;
* landmarks ``(n, 2, 168)`` (one frame, the ED frame only) → ``(n, 1, 2, 168)``; and ``(n, T, 168, 2)``
  (transposed) → ``(n, T, 2, 168)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..utils import atomic_path
from .nifti import DataError, MissingFileError
from .subject import Subject, TaggingSlice

__all__ = [
    "FerdianData",
    "FerdianFormatError",
    "read_ferdian_h5",
    "write_ferdian_h5",
    "KNOWN_DATASETS",
    "load_ferdian_h5",
    "iter_ferdian_subjects",
]

#: datasets with a dedicated field in :class:`FerdianData`; everything else goes to ``extra``
KNOWN_DATASETS = ("image_seqs", "landmark_coords", "px_spaces", "ed_frame_idx", "es_frame_idx")

_N_LANDMARKS = 168


class FerdianFormatError(ValueError):
    """A Ferdian-format HDF5 file lacks a dataset or holds one of the wrong shape."""


@dataclass
class FerdianData:
    """Contents of a Ferdian-format HDF5 file (one row per tagged slice).

    Attributes
    ----------
    image_seqs
        ``(n, T, H, W)`` float32 images, or ``None`` when the file has none.
    landmark_coords
        ``(n, T_l, 2, 168)`` float64 landmarks (pixels, row 0 = x, row 1 = y) with ``T_l = T``
        or ``T_l = 1`` (frame 0 only), or ``None``. Zero-filled frames are kept as in the file
        (see :attr:`landmark_frame_valid`).
    px_spaces
        ``(n,)`` pixel spacing in mm, or ``None``.
    ed_frame_idx, es_frame_idx
        ``(n,)`` int64 or ``None``.
    extra
        Every other dataset of the file by name (``bbox_corners``, ``cropped_image_seqs``,
        ``_patients`` ... strings decoded to ``str``).
    path
        The file read, if any.
    """

    image_seqs: np.ndarray | None = None
    landmark_coords: np.ndarray | None = None
    px_spaces: np.ndarray | None = None
    ed_frame_idx: np.ndarray | None = None
    es_frame_idx: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    path: Path | None = None

    @property
    def n(self) -> int:
        """Number of rows (slices)."""
        for a in (self.image_seqs, self.landmark_coords, self.px_spaces):
            if a is not None:
                return int(a.shape[0])
        return 0

    @property
    def n_frames(self) -> int | None:
        """Frames per image sequence (``None`` without images)."""
        return None if self.image_seqs is None else int(self.image_seqs.shape[1])

    @property
    def has_all_landmark_frames(self) -> bool:
        """True when landmarks exist for every image frame (not only frame 0)."""
        if self.landmark_coords is None:
            return False
        t = self.landmark_coords.shape[1]
        return t > 1 and (self.image_seqs is None or t == self.image_seqs.shape[1])

    @property
    def landmark_frame_valid(self) -> np.ndarray | None:
        """``(n, T_l)`` bool: False for frames whose landmarks are all zero (Ferdian's padding) or NaN."""
        if self.landmark_coords is None:
            return None
        lm = self.landmark_coords
        return ~(np.all(lm == 0, axis=(-2, -1)) | np.any(~np.isfinite(lm), axis=(-2, -1)))

    def write(self, path: str | Path) -> Path:
        """Write this record with :func:`write_ferdian_h5`."""
        return write_ferdian_h5(path, self)


def _decode(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind in ("O", "S"):
        return np.array([a.decode() if isinstance(a, bytes) else a for a in arr.reshape(-1)], dtype=object).reshape(
            arr.shape
        )
    return arr


def _image_layout(shape: tuple[int, ...], t_landmarks: int | None) -> str:
    """Pick ``nthw`` or ``nhwt`` for a 4-D image dataset (see module docstring)."""
    if t_landmarks is not None and t_landmarks > 1:
        m1, m3 = shape[1] == t_landmarks, shape[3] == t_landmarks
        if m1 and not m3:
            return "nthw"
        if m3 and not m1:
            return "nhwt"
    if shape[3] <= 64 and shape[3] < shape[1] and shape[1] == shape[2]:
        return "nhwt"
    return "nthw"


def _as_landmarks(arr: np.ndarray, where: str) -> np.ndarray:
    a = np.asarray(arr, dtype=np.float64)
    if a.ndim == 3 and a.shape[1:] == (2, _N_LANDMARKS):
        return a[:, None]
    if a.ndim == 4 and a.shape[2:] == (2, _N_LANDMARKS):
        return a
    if a.ndim == 4 and a.shape[2:] == (_N_LANDMARKS, 2):
        return np.swapaxes(a, 2, 3)
    raise FerdianFormatError(
        f"{where}: expected shape (n, frames, 2, 168) (or (n, 2, 168) for frame 0 only), got {a.shape}"
    )


def read_ferdian_h5(
    path: str | Path,
    *,
    require_images: bool = True,
    image_layout: Literal["auto", "nthw", "nhwt", "thw"] = "auto",
    cropped: bool = False,
    load_extra: bool = True,
) -> FerdianData:
    """Read a Ferdian-format HDF5 file.

    Parameters
    ----------
    path
        The ``.h5`` file (relative paths are taken as given, i.e. from the current directory, so
        CLI arguments behave as users expect).
    require_images
        Raise :class:`FerdianFormatError` if there is no image dataset; otherwise
        ``image_seqs`` may be ``None`` (e.g. for a landmarks-only file given to ``cmrkit strain``).
    image_layout
        ``"auto"`` (see module docstring), ``"nthw"`` (Ferdian), ``"nhwt"`` (frames last) or
        ``"thw"`` (a single slice without the row axis).
    cropped
        Read ``cropped_image_seqs`` / ``cropped_landmark_coords`` (Ferdian's 128x128 bbox crops)
        instead of the full frames. ``px_spaces`` is then divided by the crop's resize ratio
        ``128 / (ceil(y2) - floor(y1))`` from ``bbox_corners`` (as in Ferdian's ``resize_image``);
        without ``bbox_corners`` it is set to ``None``.
    load_extra
        Also load every other dataset into ``extra`` (skip for speed on big files).

    Raises
    ------
    FileNotFoundError
        No such file.
    FerdianFormatError
        Not an HDF5 file, a dataset missing or ill-shaped, or row counts that disagree. The message
        names the file and the dataset.
    """
    import h5py

    p = Path(path)
    if p.is_dir():
        raise FerdianFormatError(f"{p}: is a folder; give a Ferdian-format HDF5 file (.h5)")
    if not p.is_file():
        raise FileNotFoundError(f"Ferdian HDF5 file not found: {p}")
    try:
        fh = h5py.File(p, "r")
    except OSError as exc:
        raise FerdianFormatError(f"{p}: not a readable HDF5 file ({exc})") from exc
    img_key = "cropped_image_seqs" if cropped else "image_seqs"
    lm_key = "cropped_landmark_coords" if cropped else "landmark_coords"
    try:
        data = _read_open_file(fh, p, img_key, lm_key, require_images, image_layout, cropped, load_extra)
    except OSError as exc:  # HDF5 read errors of one dataset are re-raised by _read_dataset
        why = " ".join(str(exc).split())
        raise FerdianFormatError(f"{p}: the file is damaged and cannot be read ({why})") from None
    return data


def _read_dataset(fh: Any, p: Path, key: str) -> np.ndarray:
    """``fh[key][()]`` with HDF5's read errors (a corrupt or truncated compressed chunk: "filter
    returned failure during read", "Can't synchronously read data") turned into a message that
    names the file and the dataset."""
    ds = fh[key]
    try:
        return ds[()]
    except (OSError, RuntimeError) as exc:
        comp = getattr(ds, "compression", None)
        what = (
            f"a {comp}-compressed chunk of it is corrupt or truncated"
            if comp
            else "its data is corrupt or the file is truncated"
        )
        raise FerdianFormatError(
            f"{p}: dataset '{key}' {tuple(ds.shape)} cannot be read: {what} (HDF5: {' '.join(str(exc).split())}); "
            "copy the file again or re-export it"
        ) from None


def _read_open_file(
    fh: Any,
    p: Path,
    img_key: str,
    lm_key: str,
    require_images: bool,
    image_layout: str,
    cropped: bool,
    load_extra: bool,
) -> FerdianData:
    import h5py

    with fh:
        names = [k for k in fh.keys() if isinstance(fh[k], h5py.Dataset)]
        data = FerdianData(path=p)
        if lm_key in fh:
            data.landmark_coords = _as_landmarks(_read_dataset(fh, p, lm_key), f"{p}: dataset '{lm_key}'")
        t_lm = None if data.landmark_coords is None else data.landmark_coords.shape[1]
        if img_key in fh:
            raw = fh[img_key]
            shape = tuple(raw.shape)
            layout = image_layout
            if layout == "auto":
                if len(shape) != 4:
                    raise FerdianFormatError(
                        f"{p}: dataset '{img_key}' must be (n, frames, H, W) or (n, H, W, frames), "
                        f"got shape {shape} (pass image_layout='thw' for a single (frames, H, W) slice)"
                    )
                layout = _image_layout(shape, t_lm)
            want = 3 if layout == "thw" else 4
            if len(shape) != want:
                raise FerdianFormatError(
                    f"{p}: dataset '{img_key}' has shape {shape}, not {want}-D as image_layout={layout!r} needs"
                )
            imgs = np.asarray(_read_dataset(fh, p, img_key), dtype=np.float32)
            if layout == "nhwt":
                imgs = np.moveaxis(imgs, 3, 1)
            elif layout == "thw":
                imgs = imgs[None]
            data.image_seqs = np.ascontiguousarray(imgs)
        elif require_images:
            raise FerdianFormatError(
                f"{p}: missing dataset '{img_key}' (tagged image sequences); datasets present: {sorted(names)}"
            )
        for key in ("px_spaces", "ed_frame_idx", "es_frame_idx"):
            if key in fh:
                v = np.asarray(_read_dataset(fh, p, key))
                if v.ndim == 2 and v.shape[1] == 1:
                    v = v[:, 0]
                if v.ndim == 0:
                    v = v[None]
                if v.ndim != 1:
                    raise FerdianFormatError(f"{p}: dataset '{key}' must be 1-D (n,), got shape {v.shape}")
                setattr(data, key, v.astype(np.float64 if key == "px_spaces" else np.int64))
        if load_extra:
            for key in names:
                if key in (img_key, lm_key) or key in KNOWN_DATASETS:
                    continue
                data.extra[key] = _decode(np.asarray(_read_dataset(fh, p, key)))
        elif cropped and "bbox_corners" in fh:
            data.extra["bbox_corners"] = np.asarray(_read_dataset(fh, p, "bbox_corners"))

    # consistency checks
    n = data.n
    for key in ("image_seqs", "landmark_coords", "px_spaces", "ed_frame_idx", "es_frame_idx"):
        v = getattr(data, key)
        if v is not None and v.shape[0] != n:
            raise FerdianFormatError(f"{p}: dataset '{key}' has {v.shape[0]} rows but the file has {n}")
    if data.image_seqs is not None and data.landmark_coords is not None:
        t, tl = data.image_seqs.shape[1], data.landmark_coords.shape[1]
        if tl not in (1, t):
            raise FerdianFormatError(f"{p}: dataset '{lm_key}' has {tl} frames but '{img_key}' has {t} (need {t} or 1)")
    if cropped and data.px_spaces is not None:
        bb = data.extra.get("bbox_corners")
        if bb is None or np.shape(bb) != (n, 4):
            data.px_spaces = None
        else:
            bb = np.asarray(bb, float)
            side = np.ceil(bb[:, 3]) - np.floor(bb[:, 1])
            size = data.image_seqs.shape[-2] if data.image_seqs is not None else 128
            data.px_spaces = data.px_spaces / (size / side)
    return data


def _put(fh: Any, name: str, arr: Any, dtype: Any = None) -> None:
    import h5py

    a = np.asarray(arr)
    if a.dtype.kind in ("U", "O"):
        fh.create_dataset(
            name,
            data=np.array([str(x) for x in a.reshape(-1)], dtype=object).reshape(a.shape),
            dtype=h5py.string_dtype(),
            maxshape=(None,) + a.shape[1:],
        )
        return
    if dtype is not None:
        a = a.astype(dtype)
    elif a.dtype == np.float64:
        a = a.astype(np.float32)  # Ferdian stores float32
    maxshape = (None,) + a.shape[1:] if a.ndim >= 1 else None
    kw = {"compression": "gzip", "compression_opts": 4} if a.size > 4096 else {}
    if a.ndim >= 1:
        kw["chunks"] = True
    fh.create_dataset(name, data=a, maxshape=maxshape, **kw)


def write_ferdian_h5(
    path: str | Path,
    data: FerdianData | None = None,
    *,
    image_seqs: np.ndarray | None = None,
    landmark_coords: np.ndarray | None = None,
    px_spaces: Any = None,
    ed_frame_idx: Any = None,
    es_frame_idx: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a Ferdian-format HDF5 file atomically (temporary file renamed over ``path``).

    Either pass a :class:`FerdianData` or the arrays (keywords override fields of ``data``).
    Shapes: ``image_seqs (n, T, H, W)``, ``landmark_coords (n, T_l, 2, 168)`` or ``(n, 2, 168)``,
    ``px_spaces``, ``ed_frame_idx``, ``es_frame_idx`` ``(n,)`` (scalars broadcast to ``n``);
    ``extra`` maps further dataset names to arrays with ``n`` rows (string arrays are stored as
    variable-length UTF-8). Floats are stored as float32 and datasets are resizable along the row
    axis, like Ferdian's ``_save_to_h5``, so his code can append to them.

    Returns the written path.
    """
    import h5py

    fields: dict[str, Any] = {}
    if data is not None:
        fields.update(
            image_seqs=data.image_seqs,
            landmark_coords=data.landmark_coords,
            px_spaces=data.px_spaces,
            ed_frame_idx=data.ed_frame_idx,
            es_frame_idx=data.es_frame_idx,
        )
        ext = dict(data.extra)
    else:
        ext = {}
    for k, v in dict(
        image_seqs=image_seqs,
        landmark_coords=landmark_coords,
        px_spaces=px_spaces,
        ed_frame_idx=ed_frame_idx,
        es_frame_idx=es_frame_idx,
    ).items():
        if v is not None:
            fields[k] = v
    if extra:
        ext.update(extra)
    p = Path(path)
    imgs = fields.get("image_seqs")
    lm = fields.get("landmark_coords")
    if imgs is None and lm is None:
        raise ValueError(f"write_ferdian_h5({p}): need image_seqs and/or landmark_coords")
    n = None
    if imgs is not None:
        imgs = np.asarray(imgs)
        if imgs.ndim != 4:
            raise ValueError(f"write_ferdian_h5({p}): image_seqs must be (n, frames, H, W), got {imgs.shape}")
        n = imgs.shape[0]
    if lm is not None:
        lm = _as_landmarks(lm, f"write_ferdian_h5({p}): landmark_coords")
        if n is not None and lm.shape[0] != n:
            raise ValueError(f"write_ferdian_h5({p}): landmark_coords has {lm.shape[0]} rows, image_seqs {n}")
        if imgs is not None and lm.shape[1] not in (1, imgs.shape[1]):
            raise ValueError(
                f"write_ferdian_h5({p}): landmark_coords has {lm.shape[1]} frames, "
                f"image_seqs {imgs.shape[1]} (need equal or 1)"
            )
        n = lm.shape[0]
    assert n is not None
    scalars: dict[str, np.ndarray] = {}
    for k, dt in (("px_spaces", np.float32), ("ed_frame_idx", np.int64), ("es_frame_idx", np.int64)):
        v = fields.get(k)
        if v is None:
            continue
        v = np.asarray(v)
        if v.ndim == 0:
            v = np.full(n, v)
        if v.shape != (n,):
            raise ValueError(f"write_ferdian_h5({p}): {k} must have shape ({n},), got {v.shape}")
        scalars[k] = v.astype(dt)
    for k, v in ext.items():
        if k in KNOWN_DATASETS:
            raise ValueError(f"write_ferdian_h5({p}): extra dataset '{k}' clashes with a main field")
        if np.ndim(v) == 0 or np.shape(v)[0] != n:
            raise ValueError(f"write_ferdian_h5({p}): extra dataset '{k}' must have {n} rows, got shape {np.shape(v)}")
    with atomic_path(p) as tmp:
        with h5py.File(tmp, "w") as fh:
            if imgs is not None:
                _put(fh, "image_seqs", imgs, np.float32)
            if lm is not None:
                _put(fh, "landmark_coords", lm, np.float32)
            for k, v in scalars.items():
                _put(fh, k, v)
            for k, v in ext.items():
                _put(fh, k, v)
    return p


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


def iter_ferdian_subjects(data_dir: Path) -> Iterator[Subject]:
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
