"""Rule-based anatomical plausibility of short-axis segmentations (stacks of LV / Myo / RV masks).

A generated mask can overlap a real one well and still be an impossible heart. Painchaud et al.
2020 ("Cardiac segmentation with strong anatomical guarantees", IEEE TMI 39:3703) list rules a
short-axis segmentation of a normal heart satisfies (no holes, no fragments, the LV cavity enclosed
by the myocardium, the RV attached to the myocardium, ...) and count a segmentation as
anatomically valid when it breaks none. This module checks rules in that spirit on every slice of a
stack and adds rules about the stack itself.

Label convention: 0 background, 1 LV blood pool, 2 LV myocardium, 3 RV blood pool. A volume is
``(X, Y, Z)`` with the slice axis last (``slice_axis`` to change), slices ordered from base to apex
(``apex_last=True``) or the other way round.

Slice rules (checked on every slice that holds any label; 8-connectivity for components, the
image border counts as background)
------------------------------------------------------------------------------------------------
``one_component``
    LV, Myo and RV each form at most one connected component (no fragments). Components smaller
    than ``min_fragment_px`` pixels (default 2, i.e. single pixels) are not counted: they are below
    the resolution, and the phantom's own ground truth has them where the thin RV tip is cut.
``no_holes``
    The LV and the RV have no holes, and the myocardium together with the LV has none (the only hole
    the myocardium may have is filled by the LV cavity).
``myo_closes_lv``
    On a slice with LV cavity, every pixel 4-adjacent to the cavity from outside is myocardium: the
    cavity touches neither background nor RV (Painchaud's "LV touching background/RV").
``rv_beside_lv``
    On a slice with RV, the RV touches the myocardium (8-adjacency) and the slice has myocardium:
    the RV lies beside the LV, not on its own.

Stack rules
-----------
``contiguous``
    The labelled slices form one run (no empty slice between two labelled ones), and so do the LV
    slices.
``base_to_apex``
    The LV cavity area over the stack has a single peak: from the largest slice it shrinks towards
    the apex and (in real stacks cut through the outflow tract) may shrink towards the base, never
    growing again by more than ``area_tol`` x the peak area from one slice to the next; the peak
    lies in the basal half of the cavity slices (a stack flipped end to end fails); slices with
    myocardium but no cavity (the apical cap) lie apical to every cavity slice; and the RV does not
    extend apically beyond the myocardium.

``valid`` is True when every rule holds. :func:`validity_summary` gives the share of valid volumes
and of volumes passing each rule.

Tolerance ``area_tol = 0.1`` absorbs the slice-to-slice jitter of real annotations; the slice rules
are exact apart from single-pixel fragments. On the M&Ms ED/ES annotations in the kit's test data
the stack rules hold; the open myocardium of an annotated basal slice through the outflow tract
breaks ``myo_closes_lv``, as Painchaud's rule intends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["RULES", "AnatomyReport", "check_volume", "check_volumes", "validity_summary"]

LV, MYO, RV = 1, 2, 3
#: rule names in report order
RULES: tuple[str, ...] = ("one_component", "no_holes", "myo_closes_lv", "rv_beside_lv", "contiguous", "base_to_apex")
_EIGHT = np.ones((3, 3), dtype=bool)
_FOUR = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)


@dataclass
class AnatomyReport:
    """Outcome of :func:`check_volume`.

    Attributes
    ----------
    rules
        Rule name -> passed.
    failures
        Human-readable reasons (slice indices count from the base).
    """

    rules: dict[str, bool]
    failures: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return all(self.rules.values())


def _components(mask: np.ndarray, min_px: int = 1) -> int:
    """Number of 8-connected components of ``mask`` with at least ``min_px`` pixels."""
    from scipy.ndimage import label

    if not mask.any():
        return 0
    lab, n = label(mask, structure=_EIGHT)
    sizes = np.bincount(lab.ravel())[1:]
    return int(np.count_nonzero(sizes >= max(int(min_px), 1)))


def _holes(mask: np.ndarray) -> bool:
    """True when ``mask`` encloses background (4-connected background not reaching the border)."""
    from scipy.ndimage import binary_fill_holes

    if not mask.any():
        return False
    return bool((binary_fill_holes(mask, structure=_FOUR) & ~mask).any())


def _outer_ring(mask: np.ndarray) -> np.ndarray:
    """Pixels 4-adjacent to ``mask`` and outside it; pixels beyond the border count as outside."""
    from scipy.ndimage import binary_dilation

    padded = np.pad(mask, 1)
    return binary_dilation(padded, structure=_FOUR) & ~padded


def _slice_rules(lab: np.ndarray, z: int, min_fragment_px: int) -> tuple[dict[str, bool], list[str]]:
    from scipy.ndimage import binary_dilation

    ok = {"one_component": True, "no_holes": True, "myo_closes_lv": True, "rv_beside_lv": True}
    why: list[str] = []
    masks = {k: lab == k for k in (LV, MYO, RV)}
    names = {LV: "LV", MYO: "Myo", RV: "RV"}
    for k, m in masks.items():
        n = _components(m, min_fragment_px)
        if n > 1:
            ok["one_component"] = False
            why.append(f"slice {z}: {names[k]} in {n} pieces")
    for k in (LV, RV):
        if _holes(masks[k]):
            ok["no_holes"] = False
            why.append(f"slice {z}: hole in the {names[k]}")
    if _holes(masks[MYO] | masks[LV]):
        ok["no_holes"] = False
        why.append(f"slice {z}: hole in the myocardium outside the LV cavity")
    if masks[LV].any():
        ring = _outer_ring(masks[LV])
        padded_myo = np.pad(masks[MYO], 1)
        if not padded_myo[ring].all():
            ok["myo_closes_lv"] = False
            why.append(f"slice {z}: LV cavity not enclosed by myocardium ({int((~padded_myo[ring]).sum())} px)")
    if masks[RV].any():
        touches = (binary_dilation(masks[RV], structure=_EIGHT) & masks[MYO]).any()
        if not touches:
            ok["rv_beside_lv"] = False
            why.append(f"slice {z}: RV does not touch the myocardium")
    return ok, why


def _runs(flags: np.ndarray) -> int:
    """Number of runs of True in a 1-D boolean array."""
    f = np.asarray(flags, dtype=np.int8)
    return int(np.count_nonzero(np.diff(np.concatenate([[0], f])) == 1))


def check_volume(
    labels: Any, *, slice_axis: int = -1, apex_last: bool = True, area_tol: float = 0.1, min_fragment_px: int = 2
) -> AnatomyReport:
    """Check one label volume against the rules of the module docstring.

    Parameters
    ----------
    labels
        Integer label volume in the kit convention; one axis is the slice axis.
    slice_axis
        Axis of the slices (default last, the kit's ``(X, Y, Z)``).
    apex_last
        Slices run base -> apex along the axis (True) or apex -> base (False).
    area_tol
        Allowed growth of the LV cavity area between consecutive slices away from its peak, as a
        fraction of the peak area.
    min_fragment_px
        Components smaller than this are not counted as fragments.
    """
    lab = np.asarray(labels)
    if lab.ndim != 3:
        raise ValueError(f"labels must be a 3-D volume, got shape {lab.shape}")
    if not np.issubdtype(lab.dtype, np.integer):
        if not np.all(np.equal(np.mod(lab, 1), 0)):
            raise ValueError("labels must hold integer values")
        lab = lab.astype(np.int64)
    bad = np.setdiff1d(np.unique(lab), [0, LV, MYO, RV])
    if bad.size:
        raise ValueError(f"labels hold values {bad.tolist()} outside 0..3 (kit convention)")
    if not 0 <= area_tol:
        raise ValueError(f"area_tol must be >= 0, got {area_tol}")
    stack = np.moveaxis(lab, slice_axis, 0)
    if not apex_last:
        stack = stack[::-1]
    rules = dict.fromkeys(RULES, True)
    why: list[str] = []
    present = stack.reshape(len(stack), -1).any(axis=1)
    if not present.any():
        return AnatomyReport(dict.fromkeys(RULES, False), ["no labelled slice"])
    for z in np.flatnonzero(present):
        ok, w = _slice_rules(stack[z], int(z), min_fragment_px)
        for k, v in ok.items():
            rules[k] = rules[k] and v
        why += w
    # ----- stack rules
    lv_area = (stack == LV).reshape(len(stack), -1).sum(axis=1).astype(float)
    myo_any = (stack == MYO).reshape(len(stack), -1).any(axis=1)
    rv_any = (stack == RV).reshape(len(stack), -1).any(axis=1)
    if _runs(present) > 1 or _runs(lv_area > 0) > 1:
        rules["contiguous"] = False
        why.append("labelled slices (or LV slices) are not contiguous")
    ordered = True
    lv_slices = np.flatnonzero(lv_area > 0)
    if lv_slices.size:
        area = lv_area[lv_slices[0] : lv_slices[-1] + 1]
        peak = int(np.argmax(area))
        tol = area_tol * area.max()
        apical_growth = np.flatnonzero(np.diff(area[peak:]) > tol)
        basal_growth = np.flatnonzero(np.diff(area[: peak + 1][::-1]) > tol)
        if apical_growth.size or basal_growth.size:
            ordered = False
            why.append("LV cavity area has more than one peak along the stack")
        if peak > (len(area) - 1) / 2.0:
            ordered = False
            why.append(f"largest LV cavity slice ({int(lv_slices[0] + peak)}) lies in the apical half")
    cap = np.flatnonzero(myo_any & (lv_area == 0))
    if lv_slices.size and cap.size and cap.min() < lv_slices.max():
        ordered = False
        why.append(f"myocardium without cavity at slice {int(cap.min())}, basal to LV cavity slices")
    if rv_any.any() and (not myo_any.any() or np.flatnonzero(rv_any).max() > np.flatnonzero(myo_any).max()):
        ordered = False
        why.append("RV extends apically beyond the myocardium")
    rules["base_to_apex"] = ordered
    return AnatomyReport(rules, why)


def check_volumes(labels: Any, **kwargs: Any) -> list[AnatomyReport]:
    """:func:`check_volume` for every volume of an ``(N, X, Y, Z)`` array (keyword arguments passed on)."""
    arr = np.asarray(labels)
    if arr.ndim != 4:
        raise ValueError(f"labels must be (N, X, Y, Z), got shape {arr.shape}")
    return [check_volume(v, **kwargs) for v in arr]


def validity_summary(reports: Sequence[AnatomyReport]) -> dict[str, float]:
    """Share (0..1) of volumes that are valid (``"valid"``) and that pass each rule."""
    if not reports:
        raise ValueError("validity_summary: no reports")
    out = {"valid": float(np.mean([r.valid for r in reports]))}
    for rule in RULES:
        out[rule] = float(np.mean([r.rules[rule] for r in reports]))
    return out
