"""Geometry-aware preprocessing shared by the phantom and real data.

Every function that changes the voxel grid returns the new 4 x 4 affine with the arrays, so world
coordinates (``world = affine @ [i, j, k, 1]``, mm) stay valid after each step and cine and tagging
can be paired through their affines. Arrays are ``(X, Y, ...)``: the first two axes are in-plane,
the third (when present) is the slice axis, anything after it (time) is carried along.

Pipeline used by the chapters (:func:`prepare_subject`)::

    resample_inplane (optional, to a pixel size)  ->  crop_roi (around the heart)
    ->  to_slices (optional, slice count)  ->  normalise_intensity  ->  tagging onto the cine ROI grid

Cine-to-tagging pairing (thesis §4.2, Fig. 4.3: each tagged slice is paired with the cine slice
at the same position): :func:`matching_cine_slice` picks the cine slice nearest to the tagging
plane; :func:`tagging_roi_from_cine` maps a cine ROI box to tagging pixels;
:func:`resample_tagging_to_cine_roi` resamples a tagging sequence onto the cine ROI pixel grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "Box",
    "Cropped",
    "Processed",
    "heart_center",
    "crop_roi",
    "resample_inplane",
    "to_slices",
    "normalise_intensity",
    "map_cine_to_tagging",
    "tagging_roi_from_cine",
    "matching_cine_slice",
    "resample_tagging_to_cine_roi",
    "prepare_subject",
]


class Box(NamedTuple):
    """In-plane box in pixel indices, half-open ``[x0, x1) x [y0, y1)`` (may extend past the image)."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def center(self) -> tuple[float, float]:
        """Centre in continuous pixel coordinates (pixel ``i`` covers ``[i - 0.5, i + 0.5]``)."""
        return ((self.x0 + self.x1 - 1) / 2.0, (self.y0 + self.y1 - 1) / 2.0)

    @property
    def size(self) -> tuple[float, float]:
        return (self.x1 - self.x0, self.y1 - self.y0)


class Cropped(NamedTuple):
    """Result of :func:`crop_roi`."""

    image: np.ndarray | None
    labels: np.ndarray | None
    affine: np.ndarray | None
    box: Box


class Processed(NamedTuple):
    """Result of :func:`resample_inplane` and :func:`to_slices`."""

    image: np.ndarray | None
    labels: np.ndarray | None
    affine: np.ndarray | None


# ----------------------------------------------------------------------------- helpers
def _is_subject(x: Any) -> bool:
    from cmrkit.io.subject import Subject

    return isinstance(x, Subject)


def _pair(v: int | float | Sequence[float], name: str) -> tuple[float, float]:
    if np.isscalar(v):
        return (float(v), float(v))  # type: ignore[arg-type]
    t = tuple(float(x) for x in v)  # type: ignore[union-attr]
    if len(t) != 2:
        raise ValueError(f"{name}: expected one value or two (x, y), got {v!r}")
    return t  # type: ignore[return-value]


def _check_affine(affine: np.ndarray | None) -> np.ndarray | None:
    if affine is None:
        return None
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        raise ValueError(f"affine: expected a finite 4x4 matrix, got shape {a.shape}")
    return a


def _shift_affine(affine: np.ndarray | None, offset: Sequence[float]) -> np.ndarray | None:
    """Affine of a grid whose voxel 0 sits at voxel ``offset`` of the old grid."""
    if affine is None:
        return None
    out = affine.copy()
    off = np.zeros(4)
    off[: len(offset)] = offset
    off[3] = 1.0
    out[:3, 3] = (affine @ off)[:3]
    return out


def _extract(arr: np.ndarray, starts: Sequence[int], sizes: Sequence[int], fill: float) -> np.ndarray:
    """Window of ``arr`` starting at ``starts`` with ``sizes`` along the leading axes, padded with ``fill``."""
    out_shape = tuple(sizes) + arr.shape[len(sizes) :]
    out = np.full(out_shape, fill, dtype=arr.dtype)
    src, dst = [], []
    for s, n, full in zip(starts, sizes, arr.shape):
        a0, a1 = max(s, 0), min(s + n, full)
        if a1 <= a0:
            return out
        src.append(slice(a0, a1))
        dst.append(slice(a0 - s, a1 - s))
    out[tuple(dst)] = arr[tuple(src)]
    return out


# ----------------------------------------------------------------------------- ROI
def heart_center(
    labels: np.ndarray | None = None,
    image: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
    smooth_mm: float = 4.0,
    threshold: float = 0.3,
) -> tuple[float, float]:
    """In-plane heart centre ``(x, y)`` in pixel coordinates.

    With ``labels`` (``(X, Y, ...)``, any non-zero label): the centre of the bounding box of all
    labelled voxels (LV, myocardium and RV together, so both ventricles fit in the ROI).

    Without labels, from a cine ``image`` ``(X, Y, Z, T)`` or ``(X, Y, T)`` (time last): the heart
    is what moves. The temporal standard deviation, averaged over slices, is smoothed with a
    Gaussian of ``smooth_mm`` (``spacing`` = in-plane pixel size in mm, default 1) and weighted by a
    broad prior centred on the image (sigma = half the field of view; CMR is planned with the heart
    near the centre). The result is the weighted centroid of the connected region above
    ``threshold`` x its maximum that contains the maximum. On the shared real data this lands 2-7 mm
    from the labelled heart's bounding-box centre (M&Ms, 2-frame ED/ES) and on the LV/RV pair of
    the Sunnybrook cine. Needs at least two frames.
    """
    if labels is not None:
        fg = np.asarray(labels) != 0
        if not fg.any():
            raise ValueError("labels: no labelled voxels, cannot centre the ROI on them")
        xs = np.flatnonzero(fg.any(axis=tuple(range(1, fg.ndim))))
        ys = np.flatnonzero(fg.any(axis=(0,) + tuple(range(2, fg.ndim))))
        return ((xs[0] + xs[-1]) / 2.0, (ys[0] + ys[-1]) / 2.0)
    if image is None:
        raise ValueError("heart_center: pass labels= or a cine image= (X, Y[, Z], T)")
    img = np.asarray(image, dtype=np.float32)
    if img.ndim < 3 or img.shape[-1] < 2:
        raise ValueError(
            f"image: the unlabelled heuristic needs a time axis with >= 2 frames (last axis), got shape {img.shape}; "
            "pass center= or labels="
        )
    from scipy.ndimage import center_of_mass, gaussian_filter
    from scipy.ndimage import label as connected

    sx, sy = _pair(spacing, "spacing") if spacing is not None else (1.0, 1.0)
    sd = img.std(axis=-1)
    while sd.ndim > 2:
        sd = sd.mean(axis=-1)
    sd = gaussian_filter(sd, (smooth_mm / sx, smooth_mm / sy))
    X, Y = sd.shape
    gx = np.exp(-0.5 * ((np.arange(X) - (X - 1) / 2) / (0.5 * X)) ** 2)
    gy = np.exp(-0.5 * ((np.arange(Y) - (Y - 1) / 2) / (0.5 * Y)) ** 2)
    score = sd * gx[:, None] * gy[None, :]
    if not np.any(score > 0):
        raise ValueError("image: no temporal variation, cannot locate the heart; pass center= or labels=")
    peak = np.unravel_index(int(np.argmax(score)), score.shape)
    comp, _ = connected(score > threshold * score[peak])
    w = np.where(comp == comp[peak], score, 0.0)
    cx, cy = center_of_mass(w)
    return (float(cx), float(cy))


def crop_roi(
    image: Any,
    size: int | Sequence[int],
    *,
    labels: np.ndarray | None = None,
    affine: np.ndarray | None = None,
    center: Sequence[float] | None = None,
    fill: float = 0.0,
) -> Any:
    """Crop (and zero-pad where needed) a ``size`` in-plane window around the heart.

    Parameters
    ----------
    image : numpy.ndarray or Subject or None
        ``(X, Y, ...)`` array. A :class:`~cmrkit.io.subject.Subject` is cropped whole (cine,
        labels, affine) and a new Subject is returned (``meta["roi_box"]`` records the box).
    size : int or (int, int)
        Output in-plane size in pixels.
    labels : numpy.ndarray, optional
        ``(X, Y, ...)`` label array, cropped the same way (padded with 0).
    affine : numpy.ndarray, optional
        4 x 4 affine of ``image``; the returned affine puts voxel 0 of the crop at the world
        position of voxel ``(x0, y0)`` of the input.
    center : (float, float), optional
        ``(x, y)`` centre in pixels; default :func:`heart_center` from ``labels`` or, without
        labels, from the image's temporal variation.
    fill : float
        Value for padded image pixels.

    Returns
    -------
    Cropped or Subject
        ``Cropped(image, labels, affine, box)``; ``box`` is the integer window in input pixels.
    """
    if _is_subject(image):
        subj = image
        c = center
        if c is None:
            if subj.cine_labels is not None and subj.cine_labels.any():
                c = heart_center(labels=subj.cine_labels)
            else:
                c = heart_center(image=subj.cine, spacing=subj.spacing[:2])
        res = crop_roi(subj.cine, size, labels=subj.cine_labels, affine=subj.affine, center=c, fill=fill)
        meta = dict(subj.meta)
        meta["roi_box"] = tuple(int(v) for v in res.box)
        return subj.copy_with(cine=res.image, cine_labels=res.labels, affine=res.affine, meta=meta)
    if image is None and labels is None:
        raise ValueError("crop_roi: pass an image and/or labels")
    sx, sy = (int(v) for v in _pair(size, "size"))
    if sx < 1 or sy < 1:
        raise ValueError(f"size: must be positive, got {size!r}")
    ref = image if image is not None else labels
    if ref.ndim < 2:  # type: ignore[union-attr]
        raise ValueError(f"image: expected at least 2 dimensions (X, Y, ...), got shape {ref.shape}")  # type: ignore[union-attr]
    if image is not None and labels is not None and np.shape(labels)[:2] != np.shape(image)[:2]:
        raise ValueError(f"labels: in-plane shape {np.shape(labels)[:2]} differs from image {np.shape(image)[:2]}")
    if center is None:
        if labels is not None:
            center = heart_center(labels=labels)
        else:
            sp = None if affine is None else tuple(np.linalg.norm(np.asarray(affine)[:3, :2], axis=0))
            center = heart_center(image=image, spacing=sp)
    cx, cy = _pair(center, "center")
    x0 = int(np.floor(cx + 0.5)) - sx // 2
    y0 = int(np.floor(cy + 0.5)) - sy // 2
    box = Box(x0, y0, x0 + sx, y0 + sy)
    img_c = _extract(np.asarray(image), (x0, y0), (sx, sy), fill) if image is not None else None
    lab_c = _extract(np.asarray(labels), (x0, y0), (sx, sy), 0) if labels is not None else None
    return Cropped(img_c, lab_c, _shift_affine(_check_affine(affine), (x0, y0)), box)


# ----------------------------------------------------------------------------- resampling
def resample_inplane(
    image: Any,
    affine: np.ndarray | None = None,
    *,
    size: int | Sequence[int] | None = None,
    spacing: float | Sequence[float] | None = None,
    labels: np.ndarray | None = None,
    order: int = 1,
    anti_aliasing: bool = True,
) -> Any:
    """Resample the in-plane axes to a matrix ``size`` or a pixel ``spacing`` (mm), keeping the field of view.

    The grid is edge-aligned (as :func:`skimage.transform.resize`): output pixel ``o`` is centred at
    input coordinate ``(o + 0.5) k - 0.5`` with ``k = n_in / n_out``, so the outer pixel edges and the
    image centre do not move. With ``spacing`` the output size is ``round(n_in * s_in / s_out)`` and
    the exact spacing becomes ``s_in * n_in / n_out`` (within half a pixel of the request over the FOV).
    Images use spline ``order`` (1 = linear) with Gaussian anti-aliasing when shrinking; labels use
    nearest neighbour.

    Parameters
    ----------
    image : numpy.ndarray or Subject or None
        ``(X, Y, ...)``. A Subject is resampled whole and a new Subject returned.
    affine : numpy.ndarray
        4 x 4 affine (required with ``spacing``; optional with ``size``).
    size, spacing
        Exactly one of them.

    Returns
    -------
    Processed or Subject
        ``Processed(image, labels, affine)``.
    """
    from skimage.transform import resize

    if _is_subject(image):
        subj = image
        res = resample_inplane(
            subj.cine,
            subj.affine,
            size=size,
            spacing=spacing,
            labels=subj.cine_labels,
            order=order,
            anti_aliasing=anti_aliasing,
        )
        return subj.copy_with(cine=res.image, cine_labels=res.labels, affine=res.affine)
    if (size is None) == (spacing is None):
        raise ValueError("resample_inplane: pass exactly one of size= or spacing=")
    affine = _check_affine(affine)
    ref = image if image is not None else labels
    if ref is None:
        raise ValueError("resample_inplane: pass an image and/or labels")
    nx, ny = ref.shape[:2]
    if size is not None:
        ox, oy = (int(v) for v in _pair(size, "size"))
    else:
        if affine is None:
            raise ValueError("affine: required to resample to a spacing in mm")
        tx, ty = _pair(spacing, "spacing")  # type: ignore[arg-type]
        if tx <= 0 or ty <= 0:
            raise ValueError(f"spacing: must be positive, got {spacing!r}")
        s = np.linalg.norm(affine[:3, :3], axis=0)
        ox, oy = max(1, int(round(nx * s[0] / tx))), max(1, int(round(ny * s[1] / ty)))
    if ox < 1 or oy < 1:
        raise ValueError(f"size: must be positive, got {(ox, oy)}")
    kx, ky = nx / ox, ny / oy
    img_r = lab_r = None
    if image is not None:
        img = np.asarray(image, dtype=np.float32)
        img_r = resize(
            img,
            (ox, oy) + img.shape[2:],
            order=order,
            mode="edge",
            anti_aliasing=anti_aliasing and (kx > 1 or ky > 1),
            preserve_range=True,
        ).astype(np.float32)
    if labels is not None:
        lab = np.asarray(labels)
        if lab.shape[:2] != (nx, ny):
            raise ValueError(f"labels: in-plane shape {lab.shape[:2]} differs from image {(nx, ny)}")
        lab_r = resize(
            lab, (ox, oy) + lab.shape[2:], order=0, mode="edge", anti_aliasing=False, preserve_range=True
        ).astype(lab.dtype)
    new_aff = None
    if affine is not None:
        new_aff = affine.copy()
        new_aff[:3, 0] *= kx
        new_aff[:3, 1] *= ky
        new_aff[:3, 3] = (affine @ np.array([0.5 * kx - 0.5, 0.5 * ky - 0.5, 0.0, 1.0]))[:3]
    return Processed(img_r, lab_r, new_aff)


def to_slices(
    image: Any,
    n_slices: int,
    *,
    affine: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    mode: str = "crop_pad",
    center_slice: float | None = None,
) -> Any:
    """Bring the slice axis (axis 2) to ``n_slices``.

    ``mode="crop_pad"`` keeps the original slices: a window of ``n_slices`` consecutive slices
    centred on ``center_slice`` (default: the middle of the labelled slices when ``labels`` are
    given, else the stack centre), clamped inside the stack, and zero slices added equally on both
    sides when the stack is shorter. ``mode="resample"`` interpolates along the slice axis
    (linear for images, nearest for labels, edge-aligned as in :func:`resample_inplane`), changing
    the slice spacing to ``dz * Z / n_slices``.

    Returns ``Processed(image, labels, affine)``, or a new Subject for a Subject input.
    """
    if _is_subject(image):
        subj = image
        res = to_slices(
            subj.cine, n_slices, affine=subj.affine, labels=subj.cine_labels, mode=mode, center_slice=center_slice
        )
        return subj.copy_with(cine=res.image, cine_labels=res.labels, affine=res.affine)
    n = int(n_slices)
    if n < 1:
        raise ValueError(f"n_slices: must be >= 1, got {n_slices}")
    affine = _check_affine(affine)
    ref = image if image is not None else labels
    if ref is None:
        raise ValueError("to_slices: pass an image and/or labels")
    if ref.ndim < 3:
        raise ValueError(f"image: expected (X, Y, Z, ...), got shape {ref.shape}")
    Z = ref.shape[2]
    if labels is not None and np.shape(labels)[:3] != ref.shape[:3]:
        raise ValueError(f"labels: shape {np.shape(labels)[:3]} differs from image {ref.shape[:3]}")
    if mode == "crop_pad":
        if Z >= n:
            if center_slice is None:
                if labels is not None and np.any(labels):
                    zs = np.flatnonzero(np.any(np.asarray(labels) != 0, axis=(0, 1) + tuple(range(3, np.ndim(labels)))))
                    center_slice = (zs[0] + zs[-1]) / 2.0
                else:
                    center_slice = (Z - 1) / 2.0
            z0 = int(np.floor(center_slice - (n - 1) / 2.0 + 0.5))
            z0 = min(max(z0, 0), Z - n)
        else:
            z0 = -((n - Z) // 2)

        def take(a: np.ndarray) -> np.ndarray:
            moved = np.moveaxis(np.asarray(a), 2, 0)
            return np.moveaxis(_extract(moved, (z0,), (n,), 0), 0, 2)

        img_o = take(image) if image is not None else None
        lab_o = take(labels) if labels is not None else None
        return Processed(img_o, lab_o, _shift_affine(affine, (0, 0, z0)))
    if mode == "resample":
        from skimage.transform import resize

        k = Z / n
        img_o = lab_o = None
        if image is not None:
            img = np.asarray(image, dtype=np.float32)
            shp = img.shape[:2] + (n,) + img.shape[3:]
            img_o = resize(img, shp, order=1, mode="edge", anti_aliasing=False, preserve_range=True).astype(np.float32)
        if labels is not None:
            lab = np.asarray(labels)
            shp = lab.shape[:2] + (n,) + lab.shape[3:]
            lab_o = resize(lab, shp, order=0, mode="edge", anti_aliasing=False, preserve_range=True).astype(lab.dtype)
        new_aff = None
        if affine is not None:
            new_aff = affine.copy()
            new_aff[:3, 2] *= k
            new_aff[:3, 3] = (affine @ np.array([0.0, 0.0, 0.5 * k - 0.5, 1.0]))[:3]
        return Processed(img_o, lab_o, new_aff)
    raise ValueError(f"mode: expected 'crop_pad' or 'resample', got {mode!r}")


# ----------------------------------------------------------------------------- intensity
def normalise_intensity(
    x: np.ndarray,
    percentiles: tuple[float, float] = (1.0, 99.0),
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Robust min-max scaling to [0, 1]: ``clip((x - p_lo) / (p_hi - p_lo), 0, 1)``.

    ``p_lo``, ``p_hi`` are the given percentiles of ``x`` (of ``x[mask]`` when a mask is given),
    computed over the whole array (one scaling per volume/sequence, so intensity changes over
    time are kept). A constant input gives zeros. Returns float32.
    """
    a = np.asarray(x, dtype=np.float32)
    lo_p, hi_p = (float(p) for p in percentiles)
    if not 0 <= lo_p < hi_p <= 100:
        raise ValueError(f"percentiles: expected 0 <= low < high <= 100, got {percentiles!r}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"x: contains {int(np.sum(~np.isfinite(a)))} NaN/inf values")
    vals = a if mask is None else a[np.broadcast_to(np.asarray(mask, dtype=bool), a.shape)]
    if vals.size == 0:
        raise ValueError("mask: selects no voxels")
    lo, hi = np.percentile(vals, [lo_p, hi_p])
    if hi <= lo:
        return np.zeros_like(a)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------- cine <-> tagging
def map_cine_to_tagging(
    points: np.ndarray,
    cine_affine: np.ndarray,
    tag_affine: np.ndarray,
    cine_slice: float | None = None,
) -> np.ndarray:
    """Map cine voxel coordinates to tagging voxel coordinates through world space.

    ``p_tag = inv(A_tag) @ A_cine @ p_cine``. ``points`` is ``(N, 3)`` cine ``(x, y, z)`` or
    ``(N, 2)`` ``(x, y)`` together with ``cine_slice``. Returns ``(N, 3)``: tagging ``(x, y)``
    pixel coordinates and, third, the out-of-plane offset in units of the tagging slice axis
    (0 when the point lies in the tagging plane).
    """
    p = np.atleast_2d(np.asarray(points, dtype=np.float64))
    if p.shape[1] == 2:
        if cine_slice is None:
            raise ValueError("cine_slice: required for (N, 2) points")
        p = np.column_stack([p, np.full(len(p), float(cine_slice))])
    if p.shape[1] != 3:
        raise ValueError(f"points: expected (N, 2) or (N, 3), got shape {p.shape}")
    ca, ta = _check_affine(cine_affine), _check_affine(tag_affine)
    m = np.linalg.inv(ta) @ ca  # type: ignore[arg-type]
    ph = np.column_stack([p, np.ones(len(p))])
    return (ph @ m.T)[:, :3]


def tagging_roi_from_cine(
    cine_affine: np.ndarray,
    tag_affine: np.ndarray,
    roi: Box | Sequence[float],
    cine_slice: float,
) -> Box:
    """The tagging-pixel box covering a cine ROI box on cine slice ``cine_slice``.

    The four outer corners of ``roi`` (pixel edges, ``x0 - 0.5`` ... ``x1 - 0.5``) are mapped with
    :func:`map_cine_to_tagging` (orthogonal projection onto the tagging plane) and the result is
    their bounding box, again half-open in tagging pixel indices (floats). With equal in-plane
    orientation this is the same physical field of view; crop it with
    ``crop_roi(tag_image, size=round(box.size), center=box.center)`` or use
    :func:`resample_tagging_to_cine_roi` for a pixel-aligned pair.
    """
    x0, y0, x1, y1 = (float(v) for v in roi)
    corners = np.array([[x0 - 0.5, y0 - 0.5], [x1 - 0.5, y0 - 0.5], [x0 - 0.5, y1 - 0.5], [x1 - 0.5, y1 - 0.5]])
    t = map_cine_to_tagging(corners, cine_affine, tag_affine, cine_slice=cine_slice)
    lo, hi = t[:, :2].min(axis=0), t[:, :2].max(axis=0)
    return Box(float(lo[0] + 0.5), float(lo[1] + 0.5), float(hi[0] + 0.5), float(hi[1] + 0.5))


def matching_cine_slice(
    cine_affine: np.ndarray,
    cine_shape: Sequence[int],
    tag_affine: np.ndarray,
    return_distance: bool = False,
) -> int | tuple[int, float]:
    """Index of the cine slice nearest to the tagging plane (thesis Fig. 4.3 pairing).

    For each cine slice ``z`` the in-plane centre ``A_cine @ ((X-1)/2, (Y-1)/2, z)`` is projected on
    the tagging plane normal ``n = A_tag[:3, 2] / |A_tag[:3, 2]|`` through the tagging origin; the
    slice with the smallest ``|n . (c_z - o_tag)|`` wins. ``return_distance=True`` also returns
    that distance in mm.
    """
    ca, ta = _check_affine(cine_affine), _check_affine(tag_affine)
    X, Y, Z = (int(v) for v in tuple(cine_shape)[:3])
    nrm = np.cross(ta[:3, 0], ta[:3, 1])  # type: ignore[index]
    nrm = nrm / np.linalg.norm(nrm)
    zs = np.arange(Z, dtype=float)
    pts = np.column_stack([np.full(Z, (X - 1) / 2.0), np.full(Z, (Y - 1) / 2.0), zs, np.ones(Z)])
    centers = (pts @ ca.T)[:, :3]  # type: ignore[union-attr]
    d = np.abs((centers - ta[:3, 3]) @ nrm)  # type: ignore[index]
    z = int(np.argmin(d))
    return (z, float(d[z])) if return_distance else z


def resample_tagging_to_cine_roi(
    tag_image: np.ndarray,
    tag_affine: np.ndarray,
    cine_affine: np.ndarray,
    cine_slice: int,
    out_shape: Sequence[int],
    order: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Resample a tagging sequence ``(X_t, Y_t, T)`` onto the in-plane pixel grid of cine slice
    ``cine_slice`` of a cine whose (cropped) affine is ``cine_affine`` and in-plane shape ``out_shape``.

    Each output pixel ``(x, y)`` is taken at tagging coordinates
    ``inv(A_tag) @ A_cine @ (x, y, cine_slice)`` (the out-of-plane component is dropped, i.e.
    projection onto the tagging plane) with spline ``order``; a Gaussian pre-filter with
    ``sigma = (k - 1) / 2`` tagging pixels is applied when the output pixel is ``k > 1`` times
    larger. Pixels outside the tagging image are 0. Returns ``(image (X, Y, T) float32, affine)``;
    the returned affine is the cine slice's affine moved to the slice position (third column kept).
    """
    from scipy.ndimage import gaussian_filter, map_coordinates

    img = np.asarray(tag_image, dtype=np.float32)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3:
        raise ValueError(f"tag_image: expected (X, Y, T), got shape {img.shape}")
    ox, oy = (int(v) for v in tuple(out_shape)[:2])
    gx, gy = np.meshgrid(np.arange(ox, dtype=float), np.arange(oy, dtype=float), indexing="ij")
    pts = np.column_stack([gx.ravel(), gy.ravel()])
    t = map_cine_to_tagging(pts, cine_affine, tag_affine, cine_slice=cine_slice)
    coords = t[:, :2].T
    ca, ta = np.asarray(cine_affine, float), np.asarray(tag_affine, float)
    k = np.linalg.norm(ca[:3, :2], axis=0) / np.linalg.norm(ta[:3, :2], axis=0)
    sig = np.maximum((k - 1.0) / 2.0, 0.0)
    out = np.zeros((ox, oy, img.shape[2]), dtype=np.float32)
    for f in range(img.shape[2]):
        frame = img[..., f]
        if np.any(sig > 0):
            frame = gaussian_filter(frame, sigma=tuple(sig))
        out[..., f] = map_coordinates(frame, coords, order=order, mode="constant", cval=0.0).reshape(ox, oy)
    return out, _shift_affine(ca, (0, 0, cine_slice))  # type: ignore[return-value]


# ----------------------------------------------------------------------------- pipeline
def prepare_subject(
    subject: Any,
    size: int | Sequence[int] = 128,
    *,
    n_slices: int | None = None,
    spacing: float | Sequence[float] | None = None,
    percentiles: tuple[float, float] = (1.0, 99.0),
    center: Sequence[float] | None = None,
    slice_mode: str = "crop_pad",
    tagging: bool = True,
) -> Any:
    """The one preprocessing path for phantom and real subjects; returns a new Subject.

    1. ``spacing`` given: :func:`resample_inplane` to that pixel size (mm);
    2. :func:`crop_roi` to ``size`` around the heart (labels, else temporal variation, or ``center``);
    3. ``n_slices`` given: :func:`to_slices`;
    4. :func:`normalise_intensity` of the cine over the whole sequence;
    5. ``tagging``: every tagging slice is resampled onto the cropped cine grid of its
       :func:`matching_cine_slice` (:func:`resample_tagging_to_cine_roi`, done before step 3 so the
       pairing uses the real slices) and normalised; its ``meta`` records ``cine_slice`` and
       the plane distance ``cine_plane_distance_mm``.

    Sources without a cine (Ferdian HDF5) are returned with tagging only normalised.
    """
    subj = subject
    if not _is_subject(subj):
        raise TypeError(f"subject: expected a cmrkit.io.Subject, got {type(subject).__name__}")
    if subj.cine is None and subj.cine_labels is None:
        tags = [replace(t, image=normalise_intensity(t.image, percentiles)) for t in subj.tagging]
        return subj.copy_with(tagging=tags)
    if spacing is not None:
        subj = resample_inplane(subj, spacing=spacing)
    subj = crop_roi(subj, size, center=center)
    new_tags = []
    if tagging and subj.tagging:
        for t in subj.tagging:
            z, dist = matching_cine_slice(subj.affine, subj.shape, t.affine, return_distance=True)
            img, aff = resample_tagging_to_cine_roi(t.image, t.affine, subj.affine, z, subj.shape[:2])
            meta = dict(t.meta, cine_slice=z, cine_plane_distance_mm=dist, resampled_to_cine_roi=True)
            lm = None
            if t.landmarks is not None:  # tagging pixels -> pixels of the new (cine ROI) grid
                lmk = np.asarray(t.landmarks, dtype=np.float64)
                flat = np.moveaxis(lmk, 1, 2).reshape(-1, 2)
                mapped = map_cine_to_tagging(flat, t.affine, aff, cine_slice=0)[:, :2]
                lm = np.moveaxis(mapped.reshape(lmk.shape[0], lmk.shape[2], 2), 2, 1)
            new_tags.append(
                replace(t, image=normalise_intensity(img, percentiles), affine=aff, landmarks=lm, meta=meta)
            )
    else:
        new_tags = list(subj.tagging)
    if n_slices is not None:
        old_aff = subj.affine
        subj = to_slices(subj, n_slices, mode=slice_mode)
        if slice_mode == "crop_pad":
            z0 = int(round(np.linalg.solve(old_aff[:3, :3], subj.affine[:3, 3] - old_aff[:3, 3])[2]))
            if tagging:  # the resampled tagging slices are new objects; shift their pairing index
                for t in new_tags:
                    if t.meta.get("resampled_to_cine_roi"):
                        t.meta["cine_slice"] = t.meta["cine_slice"] - z0
    cine = normalise_intensity(subj.cine, percentiles) if subj.cine is not None else None
    meta = dict(
        subj.meta,
        preprocess={
            "size": size,
            "n_slices": n_slices,
            "spacing": spacing,
            "percentiles": percentiles,
            "slice_mode": slice_mode,
        },
    )
    return subj.copy_with(cine=cine, tagging=new_tags, meta=meta)
