"""Overlap and surface-distance metrics of label maps, per label, distances in mm.

Label convention (:mod:`cmrkit.labels`): 0 background, 1 LV blood pool, 2 LV myocardium, 3 RV blood pool.

Input layout
------------
``pred`` and ``ref`` are label maps of equal shape ``(*batch, *spatial)``: integer (or integral
float) arrays, or booleans for a single structure. ``spatial`` has ``len(spacing)`` axes for the
distance metrics (``spacing`` in mm, one value per spatial axis, in array-axis order, e.g.
``(10.0, 1.8, 1.8)`` for a ``(D, H, W)`` stack; anisotropy is honoured), and ``spatial_dims`` axes
for :func:`dice` (default: every axis is spatial, i.e. one item). Leading axes are items: a
``(S, H, W)`` stack with a 2-value spacing is scored slice by slice.

``labels`` chooses the structures: ``None`` means a binary mask (values must be 0/1 or bool; the
structure is ``!= 0``), an ``int`` one label, a sequence several labels. Values present in the
inputs that are neither background (0) nor in ``labels`` raise ``ValueError`` unless
``strict=False`` (then they are simply not scored).

Output: a float when there is a single item and ``labels`` is ``None``/an int; otherwise a float64
array of shape ``(*batch)`` (single label) or ``(*batch, n_labels)``.

Definitions (thesis eqs. 4.8-4.9, 5.5; §6.2.3)
----------------------------------------------
* ``dice`` = 2|P ∩ R| / (|P| + |R|).
* Surfaces are the boundary voxels of each mask (voxels of the mask with a 6-/4-connected
  neighbour outside it; the volume border counts as outside), from MONAI's ``get_mask_edges``;
  distances are Euclidean between voxel centres scaled by ``spacing`` (MONAI
  ``get_edge_surface_distance``). ``d(P->R)`` are the distances from each surface voxel of P to
  the nearest surface voxel of R.
* ``hausdorff`` = max(max d(P->R), max d(R->P)) (eq. 4.8); with ``percentile=95`` the HD95 of
  MONAI's ``compute_hausdorff_distance``: max of the two directed 95th percentiles (linear
  interpolation).
* ``assd`` = (sum d(P->R) + sum d(R->P)) / (n_P + n_R), the mean of all surface distances in both
  directions (MONAI ``compute_average_surface_distance(symmetric=True)``).

Empty structures (documented values, never silent): Dice is NaN when the label is absent from
both maps and 0 when it is absent from one. HD/HD95/ASSD are NaN when absent from both and
``one_empty`` (default ``+inf``: the distance to an empty set is unbounded) when absent from one.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..labels import LABELS

__all__ = ["dice", "hausdorff", "assd", "surface_distances", "segmentation_scores"]

ArrayLike = Any


def _as_labels(x: ArrayLike, name: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64, copy=False)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN or infinite values; label maps must be finite integers")
        if not np.all(arr == np.round(arr)):
            raise ValueError(
                f"{name} has non-integer values; pass label maps (e.g. argmax of probabilities), not soft masks"
            )
        return arr.astype(np.int64)
    raise TypeError(f"{name} must be an integer, boolean or integral float array, got dtype {arr.dtype}")


def _prepare(
    pred: ArrayLike, ref: ArrayLike, labels: int | Sequence[int] | None, n_spatial: int | None, strict: bool
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...], bool, tuple[int, ...]]:
    """Validate inputs; return (pred, ref) reshaped to (N, *spatial), label tuple, scalar-label flag, batch shape."""
    p, r = _as_labels(pred, "pred"), _as_labels(ref, "ref")
    if p.shape != r.shape:
        raise ValueError(f"pred and ref must have the same shape, got {p.shape} and {r.shape}")
    if p.ndim == 0 or p.size == 0:
        raise ValueError(f"pred/ref must be non-empty label maps, got shape {p.shape}")
    ns = p.ndim if n_spatial is None else int(n_spatial)
    if not 1 <= ns <= p.ndim:
        raise ValueError(f"the label maps of shape {p.shape} cannot have {ns} spatial axes")
    batch = p.shape[: p.ndim - ns]
    present = np.union1d(np.unique(p), np.unique(r))
    if labels is None:
        bad = present[(present != 0) & (present != 1)]
        if bad.size:
            raise ValueError(
                f"labels=None expects binary masks (0/1), but the inputs contain label values "
                f"{bad.tolist()}; pass labels=(1, 2, 3) (or the labels to score)"
            )
        labs, scalar = (1,), True
    else:
        scalar = isinstance(labels, (int, np.integer))
        labs = (int(labels),) if scalar else tuple(int(v) for v in labels)  # type: ignore[union-attr]
        if not labs:
            raise ValueError("labels must not be empty")
        if any(v <= 0 for v in labs):
            raise ValueError(f"labels must be positive (0 is background), got {labs}")
        if len(set(labs)) != len(labs):
            raise ValueError(f"labels must be distinct, got {labs}")
        if strict:
            unknown = sorted(set(present.tolist()) - {0, *labs})
            if unknown:
                raise ValueError(
                    f"the inputs contain label values {unknown} that are neither background (0) nor in "
                    f"labels={labs}; fix the label maps or pass strict=False to ignore them"
                )
    if (present < 0).any():
        raise ValueError(f"label maps must be non-negative, found {present[present < 0].tolist()}")
    n = int(np.prod(batch)) if batch else 1
    return p.reshape(n, *p.shape[p.ndim - ns :]), r.reshape(n, *r.shape[r.ndim - ns :]), labs, scalar, batch


def _shape_out(vals: np.ndarray, batch: tuple[int, ...], scalar: bool) -> np.ndarray | float:
    """(N, L) -> float | (*batch) | (*batch, L)."""
    if scalar:
        out = vals[:, 0].reshape(batch)
        return float(out) if out.ndim == 0 else out
    return vals.reshape(*batch, vals.shape[1])


def _check_spacing(spacing: Sequence[float], what: str) -> tuple[float, ...]:
    if spacing is None:
        raise ValueError(f"{what} needs spacing: the voxel size in mm for each spatial axis, e.g. (10.0, 1.8, 1.8)")
    if np.isscalar(spacing):
        raise ValueError(
            f"spacing must give one value per spatial axis (e.g. (10.0, 1.8, 1.8)), got the scalar {spacing!r}"
        )
    sp = tuple(float(s) for s in spacing)
    if not sp or any((not math.isfinite(s)) or s <= 0 for s in sp):
        raise ValueError(f"spacing must hold finite positive voxel sizes in mm, got {spacing!r}")
    return sp


def dice(
    pred: ArrayLike,
    ref: ArrayLike,
    *,
    labels: int | Sequence[int] | None = None,
    spatial_dims: int | None = None,
    strict: bool = True,
) -> np.ndarray | float:
    """Dice similarity coefficient ``2|P ∩ R| / (|P| + |R|)`` per item and label (thesis eq. 4.9).

    ``spatial_dims`` says how many trailing axes form one item (default: all of them); e.g.
    ``spatial_dims=2`` on a ``(S, H, W)`` stack gives per-slice Dice. A label absent from both maps
    gives NaN, absent from one gives 0. See the module docstring for layouts and label checks.
    """
    p, r, labs, scalar, batch = _prepare(pred, ref, labels, spatial_dims, strict)
    out = np.empty((p.shape[0], len(labs)), dtype=np.float64)
    pf, rf = p.reshape(p.shape[0], -1), r.reshape(r.shape[0], -1)
    for j, lab in enumerate(labs):
        a, b = pf == lab, rf == lab
        inter = np.count_nonzero(a & b, axis=1)
        denom = np.count_nonzero(a, axis=1) + np.count_nonzero(b, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, j] = np.where(denom > 0, 2.0 * inter / np.maximum(denom, 1), np.nan)
    return _shape_out(out, batch, scalar)


def _directed_distances(
    a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Surface distances a->b and b->a (mm) of two non-empty boolean masks (MONAI edges + KD-tree)."""
    from monai.metrics.utils import get_edge_surface_distance

    with warnings.catch_warnings():  # MONAI 1.5+ warns about its own use of a deprecated argument
        warnings.simplefilter("ignore", FutureWarning)
        _, dists, _ = get_edge_surface_distance(
            torch.from_numpy(a),
            torch.from_numpy(b),
            distance_metric="euclidean",
            spacing=list(spacing),
            symmetric=True,
            warn_empty=False,
        )
    d_ab, d_ba = (
        np.asarray(d.detach().cpu().numpy() if isinstance(d, torch.Tensor) else d, dtype=np.float64) for d in dists
    )
    return d_ab, d_ba


def surface_distances(
    pred: ArrayLike,
    ref: ArrayLike,
    *,
    spacing: Sequence[float],
    labels: int | Sequence[int] | None = None,
    strict: bool = True,
) -> list[list[tuple[np.ndarray, np.ndarray] | None]]:
    """Directed surface distances per item and label: ``[item][label] -> (d(P->R), d(R->P))`` in mm.

    ``None`` when the label is absent from either map. The building block of :func:`hausdorff`
    and :func:`assd`; items are flattened in C order over the batch axes.
    """
    sp = _check_spacing(spacing, "surface_distances")
    p, r, labs, _, _ = _prepare(pred, ref, labels, len(sp), strict)
    if p.ndim - 1 not in (2, 3):
        raise ValueError(f"surface distances need 2D or 3D masks; spacing has {len(sp)} values")
    out: list[list[tuple[np.ndarray, np.ndarray] | None]] = []
    for i in range(p.shape[0]):
        row = []
        for lab in labs:
            a, b = p[i] == lab, r[i] == lab
            row.append(_directed_distances(a, b, sp) if (a.any() and b.any()) else None)
        out.append(row)
    return out


def _empty_value(a_any: bool, b_any: bool, one_empty: float) -> float:
    return math.nan if not (a_any or b_any) else float(one_empty)


def _surface_stat(
    pred: ArrayLike,
    ref: ArrayLike,
    spacing: Sequence[float],
    labels: int | Sequence[int] | None,
    strict: bool,
    one_empty: float,
    stat,
    what: str,
) -> np.ndarray | float:
    sp = _check_spacing(spacing, what)
    p, r, labs, scalar, batch = _prepare(pred, ref, labels, len(sp), strict)
    if p.ndim - 1 not in (2, 3):
        raise ValueError(f"{what} needs 2D or 3D masks; spacing has {len(sp)} values")
    out = np.empty((p.shape[0], len(labs)), dtype=np.float64)
    for i in range(p.shape[0]):
        for j, lab in enumerate(labs):
            a, b = p[i] == lab, r[i] == lab
            a_any, b_any = bool(a.any()), bool(b.any())
            if a_any and b_any:
                out[i, j] = stat(*_directed_distances(a, b, sp))
            else:
                out[i, j] = _empty_value(a_any, b_any, one_empty)
    return _shape_out(out, batch, scalar)


def _percentile(d: np.ndarray, q: float | None) -> float:
    if q is None:
        return float(d.max())
    # the same estimator as MONAI (torch.quantile, linear interpolation)
    return float(torch.quantile(torch.from_numpy(d), q / 100.0))


def hausdorff(
    pred: ArrayLike,
    ref: ArrayLike,
    *,
    spacing: Sequence[float],
    labels: int | Sequence[int] | None = None,
    percentile: float | None = None,
    one_empty: float = math.inf,
    strict: bool = True,
) -> np.ndarray | float:
    """Symmetric Hausdorff distance in mm per item and label (thesis eq. 4.8).

    ``percentile=None``: ``max(max d(P->R), max d(R->P))``. ``percentile=95``: HD95, the larger of
    the two directed 95th percentiles (MONAI convention). Empty structures: NaN if absent from
    both maps, ``one_empty`` (default ``inf``) if absent from one.
    """
    if percentile is not None and not 0 <= float(percentile) <= 100:
        raise ValueError(f"percentile must be in [0, 100] or None, got {percentile!r}")
    q = None if percentile is None else float(percentile)
    return _surface_stat(
        pred,
        ref,
        spacing,
        labels,
        strict,
        one_empty,
        lambda d1, d2: max(_percentile(d1, q), _percentile(d2, q)),
        "hausdorff",
    )


def assd(
    pred: ArrayLike,
    ref: ArrayLike,
    *,
    spacing: Sequence[float],
    labels: int | Sequence[int] | None = None,
    one_empty: float = math.inf,
    strict: bool = True,
) -> np.ndarray | float:
    """Average symmetric surface distance in mm per item and label:
    ``(sum d(P->R) + sum d(R->P)) / (n_P + n_R)``. Empty structures as in :func:`hausdorff`."""
    return _surface_stat(
        pred,
        ref,
        spacing,
        labels,
        strict,
        one_empty,
        lambda d1, d2: float((d1.sum() + d2.sum()) / (d1.size + d2.size)),
        "assd",
    )


def segmentation_scores(
    pred: ArrayLike,
    ref: ArrayLike,
    *,
    spacing: Sequence[float],
    labels: Sequence[int] = tuple(LABELS),
    names: Sequence[str] | None = None,
    one_empty: float = math.inf,
    strict: bool = True,
):
    """Dice, HD, HD95 and ASSD for every item and label in one pass (surfaces computed once).

    Returns a long ``pandas.DataFrame`` with columns ``item, label, structure, dice, hd_mm,
    hd95_mm, assd_mm, pred_voxels, ref_voxels`` (``item`` is the flat C-order index over the batch
    axes). ``names`` defaults to :data:`cmrkit.labels.LABELS` (LV / Myo / RV for labels 1 / 2 / 3).
    """
    import pandas as pd

    sp = _check_spacing(spacing, "segmentation_scores")
    p, r, labs, _, _ = _prepare(pred, ref, tuple(labels), len(sp), strict)
    nm = list(names) if names is not None else [LABELS.get(v, f"label{v}") for v in labs]
    if len(nm) != len(labs):
        raise ValueError(f"names must have one entry per label ({len(labs)}), got {len(nm)}")
    rows = []
    for i in range(p.shape[0]):
        for lab, name in zip(labs, nm):
            a, b = p[i] == lab, r[i] == lab
            na, nb = int(a.sum()), int(b.sum())
            dsc = 2.0 * int((a & b).sum()) / (na + nb) if (na + nb) else math.nan
            if na and nb:
                d1, d2 = _directed_distances(a, b, sp)
                hd, hd95 = max(d1.max(), d2.max()), max(_percentile(d1, 95.0), _percentile(d2, 95.0))
                asd = float((d1.sum() + d2.sum()) / (d1.size + d2.size))
            else:
                hd = hd95 = asd = _empty_value(bool(na), bool(nb), one_empty)
            rows.append(
                {
                    "item": i,
                    "label": lab,
                    "structure": name,
                    "dice": dsc,
                    "hd_mm": float(hd),
                    "hd95_mm": float(hd95),
                    "assd_mm": asd,
                    "pred_voxels": na,
                    "ref_voxels": nb,
                }
            )
    return pd.DataFrame(rows)
