"""The kit's tag trackers behind one interface, chosen by name.

================  ==========================================================================================
name              tracker
================  ==========================================================================================
``learned``       :class:`cmrkit.tagging.learned.LearnedTracker`: a network trained by the kit on phantom
                  tagging with the variation of real acquisitions (Loecher et al. 2021), smoothed by the
                  wall model; trained once per profile and cached in ``runs/``
``harp``          :func:`cmrkit.tagging.track_landmarks` ``method="model"``: harmonic phase with the smooth
                  wall model and masked local fits (no training)
``harp-classic``  the same, ``method="classic"``: Osman's HARP on the 168 landmarks alone
================  ==========================================================================================

Every tracker maps ``(images (T, H, W), frame-0 landmarks (2, 168))`` to ``(T, 2, 168)`` landmarks (NaN
in missing, all-zero frames) and takes the tag peaks of the acquisition when known (``peaks=``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .harp import HarmonicPeaks
from .tracker import track_landmarks

__all__ = ["TRACKERS", "Tracker", "HarpTracker", "get_tracker", "track_all", "compare_trackers"]

#: names accepted by :func:`get_tracker` (``cmrkit track --tracker``, profile key ``ch4.tracker``)
TRACKERS = ("learned", "harp", "harp-classic")


class Tracker(Protocol):
    """What :func:`get_tracker` returns."""

    name: str

    def track(
        self, images: np.ndarray, init_landmarks: np.ndarray, *, peaks: HarmonicPeaks | None = None
    ) -> np.ndarray:
        """``(T, 2, 168)`` landmarks from ``images (T, H, W)`` and frame-0 ``init_landmarks (2, 168)``."""
        ...


@dataclass(frozen=True)
class HarpTracker:
    """HARP tracking (:func:`cmrkit.tagging.track_landmarks`) with fixed options."""

    method: str = "model"
    bandwidth: float = 0.3
    tag_spacing_px: float | None = None

    @property
    def name(self) -> str:
        return "harp" if self.method == "model" else f"harp-{self.method}"

    def track(
        self, images: np.ndarray, init_landmarks: np.ndarray, *, peaks: HarmonicPeaks | None = None
    ) -> np.ndarray:
        out = track_landmarks(
            images,
            init_landmarks,
            peaks=peaks,
            tag_spacing_px=self.tag_spacing_px,
            method=self.method,  # type: ignore[arg-type]
            bandwidth=self.bandwidth,
        )
        assert isinstance(out, np.ndarray)
        return out


def get_tracker(
    name: str,
    cfg: Any = None,
    *,
    tag_spacing_px: float | None = None,
    bandwidth: float = 0.3,
    progress: bool = False,
    log: Any = None,
) -> Tracker:
    """The tracker called ``name`` (:data:`TRACKERS`).

    ``learned`` needs ``cfg`` (a :class:`cmrkit.config.Config`): its ``tagging`` section holds the
    training settings, and the trained networks are cached in the run folder keyed by them
    (:func:`cmrkit.tagging.learned.ensure_learned_tracker` trains them the first time, ``log`` gets
    one line saying so).
    """
    if name not in TRACKERS:
        raise ValueError(f"unknown tracker {name!r}: choose one of {', '.join(TRACKERS)}")
    if name == "learned":
        if cfg is None:
            raise ValueError("the learned tracker needs a profile (cfg) for its training settings")
        from .learned import ensure_learned_tracker

        return ensure_learned_tracker(cfg, progress=progress, log=log, tag_spacing_px=tag_spacing_px)
    return HarpTracker("model" if name == "harp" else "classic", bandwidth, tag_spacing_px)


def _one(tracker: Tracker, images: np.ndarray, init: np.ndarray, peaks: HarmonicPeaks | None) -> np.ndarray:
    return tracker.track(images, init, peaks=peaks)


def track_all(
    tracker: Tracker,
    image_seqs: np.ndarray | list[np.ndarray],
    init_landmarks: np.ndarray,
    *,
    peaks: list[HarmonicPeaks | None] | None = None,
    n_jobs: int = 1,
) -> np.ndarray:
    """``tracker`` over rows: ``(n, T, H, W)`` images and ``(n, 2, 168)`` starts -> ``(n, T, 2, 168)``,
    rows in parallel processes (joblib) when ``n_jobs != 1``."""
    n = len(image_seqs)
    lm = np.asarray(init_landmarks, float)
    if lm.shape[0] != n:
        raise ValueError(f"{n} image sequences but {lm.shape[0]} starting grids")
    pk = list(peaks) if peaks is not None else [None] * n
    if n_jobs == 1 or n < 2:
        return np.stack([_one(tracker, image_seqs[i], lm[i], pk[i]) for i in range(n)])
    from joblib import Parallel, delayed

    return np.stack(Parallel(n_jobs=n_jobs)(delayed(_one)(tracker, image_seqs[i], lm[i], pk[i]) for i in range(n)))


def compare_trackers(
    trackers: dict[str, Tracker],
    image_seqs: np.ndarray,
    init_landmarks: np.ndarray,
    *,
    truth: np.ndarray | None = None,
    px_mm: float = 1.0,
    es: np.ndarray | None = None,
) -> tuple[Any, dict[str, np.ndarray]]:
    """Track the same sequences with several trackers from the same frame-0 grids.

    Returns a table (pandas DataFrame, one row per tracker) with the ES E_cc / E_rr means and, with
    ``truth (n, T, 2, 168)``, the mean landmark error (px and mm, frames 1..T-1) and the ES E_cc / E_rr
    bias (tracked - true landmark strain), plus the tracked landmarks per tracker ``(n, T, 2, 168)``.
    ``es`` (per sequence) defaults to the frame of peak circumferential shortening of the truth, or
    of the first tracker's result without truth.
    """
    import pandas as pd

    from ..strain import green_strain_from_landmarks
    from .tracker import landmark_error

    seqs = np.asarray(image_seqs)
    x0 = np.asarray(init_landmarks, float)
    tracked = {name: track_all(t, seqs, x0) for name, t in trackers.items()}
    if es is None:
        ref = truth if truth is not None else next(iter(tracked.values()))
        es = np.array([int(np.nanargmin(green_strain_from_landmarks(lm).Ecc)) for lm in ref])
    rows = []
    for name, lms in tracked.items():
        s = [green_strain_from_landmarks(lm) for lm in lms]
        ecc = np.array([v.Ecc[e] for v, e in zip(s, es)])
        err = np.array([v.Err[e] for v, e in zip(s, es)])
        row: dict[str, Any] = {"tracker": name, "n": len(lms), "ES E_cc": ecc.mean(), "ES E_rr": err.mean()}
        if truth is not None:
            g = [green_strain_from_landmarks(lm) for lm in truth]
            e = np.array([np.nanmean(landmark_error(a, b)[1:]) for a, b in zip(lms, truth)])
            row.update(
                {
                    "landmark error (px)": e.mean(),
                    "landmark error (mm)": e.mean() * px_mm,
                    "ES E_cc bias": (ecc - np.array([v.Ecc[k] for v, k in zip(g, es)])).mean(),
                    "ES E_rr bias": (err - np.array([v.Err[k] for v, k in zip(g, es)])).mean(),
                }
            )
        rows.append(row)
    return pd.DataFrame(rows).set_index("tracker"), tracked
