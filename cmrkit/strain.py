"""Myocardial strain from Ferdian-style landmark grids (thesis §4.2.2, eq. 4.2).

Landmark layout (Ferdian et al. 2020, *Radiol Cardiothorac Imaging* 2(1):e190032, code at
github.com/EdwardFerdian/mri-tagging-strain; the kit uses it everywhere): 168 points = 24 radial
spokes x 7 transmural points, flattened index ``spoke * 7 + k``, arrays ``(frames, 2, 168)`` with
row 0 = x and row 1 = y (pixels unless stated), frame 0 = end-diastolic (ED) reference. ``k = 0`` is
the endocardial ring and ``k = 6`` the epicardial ring. (Ferdian's own code comments contradict each
other on this; the variable names there say ``endo = [::7]``, ``epi = [6::7]``, which is what we
use. Global E_cc, E_rr and the Green/linear values do not depend on the choice; only the labelling
of individual rings does.)

Strain of a line segment of length ``L_t`` at frame ``t`` and ``L_0`` at the reference frame
(thesis eq. 4.2, Ferdian ``src/PredictionResult.py``):

* Green (Green-Lagrange):  ``E = (L_t**2 - L_0**2) / (2 * L_0**2)``
* linear (engineering):    ``e = L_t / L_0 - 1``

Ferdian's definitions, reproduced exactly:

* **Radial** ``E_rr(t)``: for every spoke ``s`` the full-wall chord from the endocardial point
  ``7s`` to the epicardial point ``7s + 6``; the strain of that chord, averaged over the 24 spokes.
  (Not the strain of consecutive transmural segments.)
* **Circumferential** ``E_cc,k(t)`` for ring ``k = 0..6``: the 24 points ``k::7`` form a closed
  loop; segment ``r`` joins ring points ``r`` and ``(r + 1) % 24``; ``E_cc,k`` is the mean of the 24
  segment strains (not the strain of the perimeter). The slice's global ``E_cc`` is the mean of
  the 7 rings (Ferdian's ``cc_strains[..., 7]``).

Everything here is vectorised numpy over any leading batch dimensions; torch tensors are accepted
by :func:`segment_strain`, :func:`radial_spoke_strains`, :func:`circumferential_segment_strains`
and :func:`strain_from_landmarks` (same operations, returned as tensors) so the formulas can be used
inside a loss, as Ferdian's ``loss_util.py`` does.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = [
    "N_SPOKES",
    "N_RINGS",
    "N_LANDMARKS",
    "StrainKind",
    "StrainResult",
    "segment_strain",
    "radial_spoke_strains",
    "circumferential_segment_strains",
    "strain_from_landmarks",
    "green_strain_from_landmarks",
    "linear_strain_from_landmarks",
    "ferdian_strain_arrays",
    "regional_strain",
    "AHA_SEGMENT_NAMES",
    "AHA_LEVELS",
    "aha_segment",
    "spoke_segment_angles",
    "regional_peak_ecc",
    "peak_strain",
    "ideal_ring_grid",
    "slice_report",
    "missing_landmark_warnings",
    "cli_main",
]

#: number of radial spokes in a Ferdian landmark grid
N_SPOKES = 24
#: number of transmural points per spoke (rings), k = 0 endocardial ... 6 epicardial
N_RINGS = 7
#: total landmarks per frame
N_LANDMARKS = N_SPOKES * N_RINGS

StrainKind = Literal["green", "linear"]


# ----------------------------------------------------------------------------------------------
# array-namespace helpers (numpy or torch, without importing torch unless it is given)
# ----------------------------------------------------------------------------------------------
def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _check_landmarks(landmarks: Any, name: str = "landmarks") -> Any:
    if not _is_torch(landmarks):
        landmarks = np.asarray(landmarks, dtype=float)
    shape = tuple(landmarks.shape)
    if len(shape) < 3 or shape[-2] != 2 or shape[-1] != N_LANDMARKS:
        raise ValueError(
            f"{name} must have shape (..., frames, 2, {N_LANDMARKS}) "
            f"(24 spokes x 7 points, row 0 = x, row 1 = y); got {shape}"
        )
    if shape[-3] < 1:
        raise ValueError(f"{name} has no frames (shape {shape})")
    return landmarks


def segment_strain(length_sq: Any, ref_length_sq: Any, kind: StrainKind = "green") -> Any:
    """Strain of segments from squared lengths.

    Parameters
    ----------
    length_sq, ref_length_sq
        Squared lengths ``L_t**2`` and ``L_0**2`` (broadcastable; numpy arrays or torch tensors).
    kind
        ``"green"``: ``(L_t**2 / L_0**2 - 1) / 2``; ``"linear"``: ``L_t / L_0 - 1``.

    Notes
    -----
    A zero reference length gives ``inf``/``nan`` (numpy warnings suppressed); callers that accept
    user input check for degenerate grids first (see :func:`strain_from_landmarks`).
    """
    if kind not in ("green", "linear"):
        raise ValueError(f"kind must be 'green' or 'linear', got {kind!r}")
    if _is_torch(length_sq) or _is_torch(ref_length_sq):
        ratio = length_sq / ref_length_sq
        return (ratio - 1.0) / 2.0 if kind == "green" else ratio**0.5 - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.asarray(length_sq, dtype=float) / np.asarray(ref_length_sq, dtype=float)
        return (ratio - 1.0) / 2.0 if kind == "green" else np.sqrt(ratio) - 1.0


def _sqdist(a: Any, b: Any) -> Any:
    d = a - b
    return d[..., 0, :] ** 2 + d[..., 1, :] ** 2


def radial_spoke_strains(landmarks: Any, kind: StrainKind = "green", reference_frame: int = 0) -> Any:
    """Per-spoke radial strain of the endo→epi chord, shape ``(..., frames, 24)``.

    Spoke ``s`` joins landmark ``7s`` (k = 0, endocardium) and ``7s + 6`` (k = 6, epicardium);
    its strain is :func:`segment_strain` of that chord against ``reference_frame``.
    """
    lm = _check_landmarks(landmarks)
    endo = lm[..., 0::N_RINGS]
    epi = lm[..., N_RINGS - 1 :: N_RINGS]
    l2 = _sqdist(epi, endo)  # (..., frames, 24)
    return segment_strain(l2, l2[..., reference_frame : reference_frame + 1, :], kind)


def circumferential_segment_strains(landmarks: Any, kind: StrainKind = "green", reference_frame: int = 0) -> Any:
    """Per-segment circumferential strain, shape ``(..., frames, 7, 24)``.

    Entry ``[..., t, k, r]`` is the strain of the segment of ring ``k`` from spoke ``r`` to spoke
    ``(r + 1) % 24`` (closed loop).
    """
    lm = _check_landmarks(landmarks)
    shape = tuple(lm.shape[:-1]) + (N_SPOKES, N_RINGS)
    grid = lm.reshape(shape)  # (..., frames, 2, spoke, ring)
    if _is_torch(grid):
        nxt = grid.roll(-1, dims=-2)
        d = nxt - grid
        l2 = (d[..., 0, :, :] ** 2 + d[..., 1, :, :] ** 2).transpose(-1, -2)
    else:
        d = np.roll(grid, -1, axis=-2) - grid
        l2 = np.swapaxes(d[..., 0, :, :] ** 2 + d[..., 1, :, :] ** 2, -1, -2)
    # l2: (..., frames, ring, spoke)
    return segment_strain(l2, l2[..., reference_frame : reference_frame + 1, :, :], kind)


@dataclass(frozen=True)
class StrainResult:
    """Ferdian-style global strains of one or more landmark sequences.

    Attributes
    ----------
    Ecc
        ``(..., frames)`` global circumferential strain (mean of the 7 rings).
    Ecc_rings
        ``(..., frames, 7)`` circumferential strain per ring, k = 0 endocardial ... 6 epicardial.
    Err
        ``(..., frames)`` radial strain (mean over the 24 spokes of the endo→epi chord strain).
    kind
        ``"green"`` or ``"linear"``.
    """

    Ecc: Any
    Ecc_rings: Any
    Err: Any
    kind: str = "green"

    @property
    def cc_strains(self) -> Any:
        """Ferdian's ``cc_strains`` layout ``(..., frames, 8)``: rings 0-6 then their mean."""
        if _is_torch(self.Ecc):
            import torch

            return torch.cat([self.Ecc_rings, self.Ecc[..., None]], dim=-1)
        return np.concatenate([self.Ecc_rings, self.Ecc[..., None]], axis=-1)

    @property
    def rr_strains(self) -> Any:
        """Ferdian's ``rr_strains`` layout ``(..., frames, 1)``."""
        return self.Err[..., None]

    def at(self, frame: int) -> dict[str, Any]:
        """Strains at one frame (e.g. end-systole) as a dict of arrays over the batch dims."""
        return {"Ecc": self.Ecc[..., frame], "Ecc_rings": self.Ecc_rings[..., frame, :], "Err": self.Err[..., frame]}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (nested lists, NaN → ``None``) with keys ``Ecc``, ``Ecc_rings``, ``Err``, ``kind``."""
        return {
            "Ecc": _jsonable(self.Ecc),
            "Ecc_rings": _jsonable(self.Ecc_rings),
            "Err": _jsonable(self.Err),
            "kind": self.kind,
        }


def _jsonable(a: Any) -> Any:
    if _is_torch(a):
        a = a.detach().cpu().numpy()
    arr = np.asarray(a, dtype=float)
    obj = arr.tolist()

    def fix(v: Any) -> Any:
        if isinstance(v, list):
            return [fix(x) for x in v]
        return None if (v is None or not math.isfinite(v)) else float(v)

    return fix(obj)


def _missing_frames(lm: np.ndarray) -> np.ndarray:
    """Frames whose 168 landmarks are all exactly zero or contain NaN (Ferdian pads missing frames
    with zeros), shape ``(..., frames)``."""
    return np.all(lm == 0, axis=(-2, -1)) | np.any(~np.isfinite(lm), axis=(-2, -1))


def strain_from_landmarks(
    landmarks: Any,
    kind: StrainKind = "green",
    *,
    reference_frame: int = 0,
    missing: Literal["nan", "raise"] = "nan",
) -> StrainResult:
    """Global E_cc, per-ring E_cc and E_rr of landmark sequences, exactly as Ferdian et al. 2020.

    Parameters
    ----------
    landmarks
        ``(..., frames, 2, 168)`` landmark coordinates (any unit; strain is unit-free). numpy array
        or torch tensor (torch: no missing-frame handling, returns tensors).
    kind
        ``"green"`` (thesis eq. 4.2) or ``"linear"``.
    reference_frame
        Frame whose lengths are ``L_0`` (0 = ED, as in Ferdian's code).
    missing
        numpy only. Frames whose landmarks are all zero (Ferdian's padding of short sequences) or
        contain NaN get NaN strain (``"nan"``) or raise (``"raise"``). A missing or degenerate
        (zero-length segment) *reference* frame always raises ``ValueError``.

    Returns
    -------
    StrainResult
        ``Ecc (..., frames)``, ``Ecc_rings (..., frames, 7)``, ``Err (..., frames)``.
    """
    lm = _check_landmarks(landmarks)
    if not _is_torch(lm):
        n_frames = lm.shape[-3]
        if not -n_frames <= reference_frame < n_frames:
            raise ValueError(f"reference_frame={reference_frame} out of range for {n_frames} frames")
        miss = _missing_frames(lm)
        if np.any(miss[..., reference_frame]):
            raise ValueError(
                f"landmarks: the reference frame {reference_frame} is missing (all zeros or NaN) "
                "in at least one sequence; strain needs valid reference landmarks"
            )
        if np.any(miss) and missing == "raise":
            raise ValueError("landmarks contain missing frames (all zeros or NaN)")
    cc = circumferential_segment_strains(lm, kind, reference_frame)  # (..., T, 7, 24)
    rr = radial_spoke_strains(lm, kind, reference_frame)  # (..., T, 24)
    if not _is_torch(lm):
        if not (
            np.all(np.isfinite(cc[..., reference_frame, :, :])) and np.all(np.isfinite(rr[..., reference_frame, :]))
        ):
            raise ValueError(
                "landmarks: the reference frame has zero-length segments (coincident landmarks); "
                "check the 24x7 spoke*7+k layout"
            )
        cc = np.where(miss[..., None, None], np.nan, cc)
        rr = np.where(miss[..., None], np.nan, rr)
    rings = cc.mean(-1)  # (..., T, 7)
    return StrainResult(Ecc=rings.mean(-1), Ecc_rings=rings, Err=rr.mean(-1), kind=kind)


def green_strain_from_landmarks(landmarks: Any, *, reference_frame: int = 0) -> StrainResult:
    """Green strain (thesis eq. 4.2) of landmark grids; see :func:`strain_from_landmarks`."""
    return strain_from_landmarks(landmarks, "green", reference_frame=reference_frame)


def linear_strain_from_landmarks(landmarks: Any, *, reference_frame: int = 0) -> StrainResult:
    """Linear (engineering) strain of landmark grids; see :func:`strain_from_landmarks`."""
    return strain_from_landmarks(landmarks, "linear", reference_frame=reference_frame)


def ferdian_strain_arrays(landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """The four strain datasets of Ferdian's ``*.result.h5`` from ``(n, frames, 2, 168)`` landmarks.

    Returns ``cc_strains (n, T, 8)``, ``rr_strains (n, T, 1)``, ``cc_linear_strains``,
    ``rr_linear_strains`` (float32), column 7 of ``cc`` being the mean of the 7 rings.
    """
    g = strain_from_landmarks(landmarks, "green")
    li = strain_from_landmarks(landmarks, "linear")
    return {
        "cc_strains": np.asarray(g.cc_strains, np.float32),
        "rr_strains": np.asarray(g.rr_strains, np.float32),
        "cc_linear_strains": np.asarray(li.cc_strains, np.float32),
        "rr_linear_strains": np.asarray(li.rr_strains, np.float32),
    }


def regional_strain(
    landmarks: np.ndarray,
    n_regions: int = 6,
    *,
    kind: StrainKind = "green",
    start_spoke: int = 0,
    frame: int | None = None,
    reference_frame: int = 0,
) -> dict[str, np.ndarray]:
    """Strain per circumferential region (e.g. the 6 AHA segments of a basal/mid slice, 4 apical).

    The 24 spokes are split into ``n_regions`` consecutive groups of ``24 / n_regions`` spokes,
    starting at ``start_spoke`` (use the spoke at the anterior RV insertion for AHA numbering; the
    kit's :func:`cmrkit.tagging.init_landmarks_from_mask` documents where its spoke 0 lies).
    Circumferential segment ``r`` (spoke ``r`` → ``r+1``) belongs to the region of spoke ``r``.

    Parameters
    ----------
    landmarks
        ``(..., frames, 2, 168)``.
    n_regions
        A divisor of 24 (1, 2, 3, 4, 6, 8, 12, 24).
    frame
        If given (e.g. the ES frame), return values at that frame only.

    Returns
    -------
    dict
        ``Ecc (..., frames, n_regions)`` (mean over rings and the region's segments),
        ``Ecc_rings (..., frames, 7, n_regions)`` and ``Err (..., frames, n_regions)``; without
        the ``frames`` axis when ``frame`` is given.
    """
    if n_regions < 1 or N_SPOKES % n_regions:
        raise ValueError(f"n_regions must divide 24, got {n_regions}")
    lm = np.asarray(_check_landmarks(landmarks))
    cc = circumferential_segment_strains(lm, kind, reference_frame)
    rr = radial_spoke_strains(lm, kind, reference_frame)
    order = (np.arange(N_SPOKES) + int(start_spoke)) % N_SPOKES
    per = N_SPOKES // n_regions
    cc_r = cc[..., order].reshape(cc.shape[:-1] + (n_regions, per)).mean(-1)  # (..., T, 7, R)
    rr_r = rr[..., order].reshape(rr.shape[:-1] + (n_regions, per)).mean(-1)  # (..., T, R)
    out = {"Ecc": cc_r.mean(-2), "Ecc_rings": cc_r, "Err": rr_r}
    if frame is not None:
        out = {
            "Ecc": out["Ecc"][..., frame, :],
            "Ecc_rings": out["Ecc_rings"][..., frame, :, :],
            "Err": out["Err"][..., frame, :],
        }
    return out


# ----------------------------------------------------------------------------------------------
# AHA 17-segment model
# ----------------------------------------------------------------------------------------------
#: AHA 17-segment model (Cerqueira et al., Circulation 2002;105:539-542)
AHA_SEGMENT_NAMES: dict[int, str] = {
    1: "basal anterior",
    2: "basal anteroseptal",
    3: "basal inferoseptal",
    4: "basal inferior",
    5: "basal inferolateral",
    6: "basal anterolateral",
    7: "mid anterior",
    8: "mid anteroseptal",
    9: "mid inferoseptal",
    10: "mid inferior",
    11: "mid inferolateral",
    12: "mid anterolateral",
    13: "apical anterior",
    14: "apical septal",
    15: "apical inferior",
    16: "apical lateral",
    17: "apex",
}
#: slice levels of :func:`aha_segment`
AHA_LEVELS: tuple[str, ...] = ("basal", "mid", "apical", "apex")


def aha_segment(angle_deg: Any, level: str) -> Any:
    """AHA segment (1-17) at a bullseye angle and level (Cerqueira et al. 2002).

    ``angle_deg`` is the bullseye display angle, counter-clockwise from 3 o'clock: anterior at 90
    (top), septum at 180 (left), inferior at 270, lateral at 0. ``level`` is ``"basal"`` (segments 1-6:
    anterior, anteroseptal, inferoseptal, inferior, inferolateral, anterolateral, each 60 degrees,
    segment 1 centred at the top, numbered counter-clockwise), ``"mid"`` (7-12, same sectors),
    ``"apical"`` (13-16: anterior, septal, inferior, lateral, 90 degrees each) or ``"apex"`` (17).
    Returns an int for a scalar angle, an int array otherwise.
    """
    a = np.mod(np.asarray(angle_deg, dtype=float), 360.0)
    if level in ("basal", "mid"):
        seg = 1 + np.floor(np.mod(a - 60.0, 360.0) / 60.0).astype(int)
        seg = seg + (6 if level == "mid" else 0)
    elif level == "apical":
        seg = 13 + np.floor(np.mod(a - 45.0, 360.0) / 90.0).astype(int)
    elif level == "apex":
        seg = np.full(a.shape, 17, dtype=int)
    else:
        raise ValueError(f"level: expected one of {', '.join(map(repr, AHA_LEVELS))}, got {level!r}")
    return int(seg) if np.ndim(seg) == 0 else seg


def spoke_segment_angles(theta_rv: float, sense: float, landmark_theta0: float) -> np.ndarray:
    """Bullseye angle (degrees, :func:`aha_segment` convention) of the midpoint of each of the 24
    circumferential landmark segments (spoke ``r`` to ``r + 1``) of a slice.

    The slice's frame: ``theta_rv`` (radians) is the image angle of the septum (the direction of the
    RV from the LV centre), ``sense`` (+1 or -1) the direction of increasing image angle that points
    from the septum towards the anterior wall, and ``landmark_theta0`` the image angle of spoke 0,
    the spokes following at ``2 pi / 24`` steps of increasing angle (the phantom records all three in
    its ground truth, ``attrs["info"]``). The angle from the septum, positive towards the anterior
    wall, is mapped to the bullseye's septum at 180 and anterior at 90.
    """
    th = float(landmark_theta0) + 2 * np.pi * (np.arange(N_SPOKES) + 0.5) / N_SPOKES
    rel = np.degrees(np.angle(np.exp(1j * (th - float(theta_rv)) * float(sense))))
    return np.mod(180.0 - rel, 360.0)


def regional_peak_ecc(landmarks: np.ndarray, level: str, segment_angles_deg: np.ndarray) -> dict[int, float]:
    """Peak (most negative over frames) circumferential Green strain per AHA segment of one slice.

    ``landmarks`` ``(T, 2, 168)`` (frame 0 = ED reference); each of the 24 circumferential segments
    (spoke ``r`` to ``r + 1``, mean over the 7 rings) is assigned to the AHA segment of its midpoint
    angle ``segment_angles_deg[r]`` (bullseye convention, :func:`aha_segment`, e.g. from
    :func:`spoke_segment_angles`); a segment's curve is the mean of its circumferential segments'
    strain curves. Returns ``{AHA segment: peak E_cc}``.
    """
    cc = np.asarray(circumferential_segment_strains(np.asarray(landmarks, float), "green", 0)).mean(-2)  # (T, 24)
    seg_of = aha_segment(np.asarray(segment_angles_deg), level)
    out = {}
    for seg in np.unique(seg_of):
        curve = cc[:, seg_of == seg].mean(-1)
        out[int(seg)] = float(np.nanmin(curve))
    return out


def peak_strain(result: StrainResult) -> dict[str, np.ndarray]:
    """Peak strains as used downstream of Ferdian (``YuukiAS/Heart_Pipeline``): peak E_cc is the
    minimum over frames (most negative), peak E_rr the maximum; NaN frames are ignored.

    Returns ``Ecc``, ``Err`` (over the batch dims) and the frames where they occur
    (``Ecc_frame``, ``Err_frame``).
    """
    ecc = np.asarray(result.Ecc, float)
    err = np.asarray(result.Err, float)
    ecc_f = np.nanargmin(np.where(np.isnan(ecc), np.inf, ecc), axis=-1)
    err_f = np.nanargmax(np.where(np.isnan(err), -np.inf, err), axis=-1)
    return {"Ecc": np.nanmin(ecc, axis=-1), "Err": np.nanmax(err, axis=-1), "Ecc_frame": ecc_f, "Err_frame": err_f}


def ideal_ring_grid(
    center: Sequence[float] = (64.0, 64.0),
    r_endo: float = 20.0,
    r_epi: float = 30.0,
    *,
    start_angle: float = 0.0,
) -> np.ndarray:
    """An ideal circular 24x7 landmark grid, shape ``(2, 168)``.

    Spoke ``s`` lies at angle ``start_angle + 2*pi*s/24`` measured from +x towards +y (image rows
    grow downwards, so this runs clockwise on screen); point ``k`` is at radius
    ``r_endo + k/6 * (r_epi - r_endo)``. Useful for closed-form tests and as a template.
    """
    s = np.arange(N_SPOKES)[:, None]
    k = np.arange(N_RINGS)[None, :]
    theta = start_angle + 2 * np.pi * s / N_SPOKES
    r = r_endo + k / (N_RINGS - 1) * (r_epi - r_endo)
    x = center[0] + r * np.cos(theta)
    y = center[1] + r * np.sin(theta)
    return np.stack([x.reshape(-1), y.reshape(-1)])


# ----------------------------------------------------------------------------------------------
# CLI: cmrkit strain FILE.h5 [--json]
# ----------------------------------------------------------------------------------------------
def slice_report(res: StrainResult, ed: Any = None, es: Any = None) -> dict[str, Any]:
    """JSON-ready per-slice strain report (lists over frames)."""
    out = res.to_dict()
    pk = peak_strain(res)
    out["peak_Ecc"] = _jsonable(pk["Ecc"])
    out["peak_Err"] = _jsonable(pk["Err"])
    if ed is not None:
        out["ed_frame_idx"] = int(ed)
    if es is not None:
        es = int(es)
        out["es_frame_idx"] = es
        n = len(out["Ecc"])
        if 0 <= es < n:
            out["Ecc_es"] = out["Ecc"][es]
            out["Err_es"] = out["Err"][es]
    return out


def _print_table(rep: dict[str, Any], title: str) -> None:
    print(title)
    print(f"{'frame':>5} {'Ecc':>8} {'Err':>8}   Ecc rings 0(endo)..6(epi)")
    for t, (ecc, err, rings) in enumerate(zip(rep["Ecc"], rep["Err"], rep["Ecc_rings"])):
        f = lambda v: "     nan" if v is None else f"{v:8.4f}"  # noqa: E731
        print(f"{t:5d} {f(ecc)} {f(err)}   " + " ".join(f(v) for v in rings))


def missing_landmark_warnings(landmarks: np.ndarray, source: str = "landmarks", limit: int = 10) -> list[str]:
    """One line per landmark that is NaN/inf in ``(n, T, 2, 168)`` landmarks (naming slice, frame,
    landmark ``spoke*7 + k``, spoke and point ``k``; 0 = endocardium) and per slice whose frames are
    zero-filled (Ferdian's padding); at most ``limit`` lines plus a count of the rest. Either makes the
    strain of that frame NaN (``null`` in JSON)."""
    lm = np.asarray(landmarks, dtype=float)
    lines: list[str] = []
    bad = ~np.isfinite(lm).all(axis=-2)  # (n, T, 168)
    for i, t in zip(*np.nonzero(bad.any(axis=-1))):
        ks = np.flatnonzero(bad[i, t])
        named = ", ".join(
            f"landmark {k} (spoke {k // N_RINGS}, point {k % N_RINGS} of 0..6, 0 = endocardium)" for k in ks[:3]
        )
        more = f" and {len(ks) - 3} more" if len(ks) > 3 else ""
        verb = "are" if len(ks) > 1 else "is"
        lines.append(f"{source} slice {i} frame {t}: {named}{more} {verb} NaN; the strain of that frame is NaN")
    zero = np.all(lm == 0, axis=(-2, -1))  # (n, T)
    for i in np.flatnonzero(zero.any(axis=1)):
        frames = ", ".join(map(str, np.flatnonzero(zero[i])))
        lines.append(f"{source} slice {i}: frame(s) {frames} have no landmarks (all zeros); their strain is NaN")
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more missing landmarks or frames"]
    return lines


def cli_main(argv: list[str] | None = None) -> int:
    """``cmrkit strain FILE.h5 [--json] [--slice I] [--linear]``.

    Reads landmarks in Ferdian's HDF5 format (``landmark_coords (n, frames, 2, 168)``, see
    :mod:`cmrkit.io.ferdian`) and prints per-frame strain of every slice. With ``--json`` the
    output is one JSON object: ``Ecc``, ``Ecc_rings``, ``Err`` (lists over frames, Green strain
    unless ``--linear``) of slice ``--slice`` (default 0), plus ``slices``: the same for every slice.
    """
    parser = argparse.ArgumentParser(
        prog="cmrkit strain",
        description="Ferdian-style E_cc/E_rr from 24x7 landmark grids in a Ferdian-format HDF5 file.",
    )
    parser.add_argument("file", help="HDF5 file with landmark_coords (n, frames, 2, 168)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--slice", type=int, default=0, help="slice (row) reported at top level")
    parser.add_argument("--linear", action="store_true", help="linear instead of Green strain")
    args = parser.parse_args(argv)
    from .io.ferdian import read_ferdian_h5

    try:
        data = read_ferdian_h5(args.file, require_images=False)
        if data.landmark_coords is None:
            raise ValueError(f"{args.file}: no 'landmark_coords' dataset; strain needs landmarks")
        n = data.landmark_coords.shape[0]
        if not -n <= args.slice < n:
            raise ValueError(f"--slice {args.slice} out of range: {args.file} has {n} slice(s)")
        if data.landmark_coords.shape[1] < 2:
            raise ValueError(f"{args.file}: landmark_coords has only one frame; strain needs >= 2")
        kind: StrainKind = "linear" if args.linear else "green"
        res = strain_from_landmarks(data.landmark_coords, kind)
    except (OSError, ValueError, KeyError) as exc:
        print(f"cmrkit strain: error: {exc}", file=sys.stderr)
        return 2
    for line in missing_landmark_warnings(data.landmark_coords, str(args.file)):
        print(f"cmrkit strain: warning: {line}", file=sys.stderr)
    slices = []
    for i in range(n):
        r = StrainResult(res.Ecc[i], res.Ecc_rings[i], res.Err[i], kind)
        ed = data.ed_frame_idx[i] if data.ed_frame_idx is not None else None
        es = data.es_frame_idx[i] if data.es_frame_idx is not None else None
        slices.append(slice_report(r, ed, es))
    if args.json:
        out = {"file": str(Path(args.file)), "n_slices": n, "slice": args.slice % n, "kind": kind}
        out.update(slices[args.slice])
        out["slices"] = slices
        print(json.dumps(out, allow_nan=False))
    else:
        for i, rep in enumerate(slices):
            _print_table(rep, f"# {args.file} slice {i} ({kind} strain)")
    return 0
