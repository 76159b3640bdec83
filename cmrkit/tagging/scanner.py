"""Where the scanner puts the tags: the SPAMM phase predicted from the image header.

SPAMM modulation is written by gradient pulses (Axel & Dougherty, *Radiology* 171:841-845, 1989), so the
tag pattern is fixed in the scanner's frame, not in the patient's: for tag direction ``d`` the
longitudinal magnetisation is modulated with the phase

    phi_d(p) = k e_d . p + c_d,        k = 2 pi / spacing,

at world position ``p`` (mm from the gradient isocentre; DICOM patient coordinates, and NIfTI world
coordinates derived from them, have their origin there), ``e_d`` the in-plane unit tag direction and
``c_d`` a constant the system may add (RF phase, gradient delays). The protocol fixes ``e_d``
relative to the slice's own image axes (angle ``theta`` from the first image axis for ``d = 1``,
``theta + 90 deg`` for ``d = 2``) and the spacing; the image affine gives ``p`` and the axes. So,
apart from ``c_d``, the tag phase of every pixel is known from the header. The grid phase is taken
where the tag *lines* are (the minima of the modulation, as for a 1-1 or binomial SPAMM block with
90 degrees in total); a pattern with bright lines at phase 0 simply gets ``c_d = pi``.

SPAMM patterns are even in ``phi`` (a block tips by ``theta_tot |cos(phi/2)|^n``), so ``e_d`` and
``-e_d`` describe the same grid with ``c_d -> -c_d``; the canonical angle is ``theta`` in [0, 90) deg.

:func:`estimate_scanner_tag_grid` estimates spacing and angle (HARP spectral peaks) and ``c_d``
(circular mean over slices of the first-harmonic phase residual) from a set of tagged frames with
their affines, and reports how well the header then predicts each slice's tags
(:attr:`TagGridFit.residual_mm`). All arrays follow NIfTI order: an image is ``(X, Y)`` indexed
``[i, j]`` and ``world = affine @ (i, j, k, 1)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .harp import detect_harmonic_peaks, wrap_phase

__all__ = [
    "ScannerTagGrid",
    "TagGridFit",
    "tag_directions",
    "tag_phase_at",
    "tag_phase_map",
    "tag_phase_residual",
    "estimate_scanner_tag_grid",
]


@dataclass(frozen=True)
class ScannerTagGrid:
    """A SPAMM grid fixed in scanner coordinates.

    Attributes
    ----------
    spacing_mm : tag period (mm).
    angle_deg : angle of the first tag direction from the tagging image's first axis towards its
        second (the second direction is at ``angle_deg + 90``).
    offsets_rad : the constants ``c_1, c_2`` (radians).
    """

    spacing_mm: float
    angle_deg: float
    offsets_rad: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.spacing_mm) and self.spacing_mm > 0):
            raise ValueError(f"ScannerTagGrid.spacing_mm must be a finite number > 0, got {self.spacing_mm!r}")
        if not math.isfinite(self.angle_deg):
            raise ValueError(f"ScannerTagGrid.angle_deg must be finite, got {self.angle_deg!r}")
        off = tuple(float(v) for v in self.offsets_rad)
        if len(off) != 2 or not all(math.isfinite(v) for v in off):
            raise ValueError(f"ScannerTagGrid.offsets_rad must be two finite numbers, got {self.offsets_rad!r}")
        object.__setattr__(self, "offsets_rad", off)

    @property
    def k(self) -> float:
        """Tag wave number ``2 pi / spacing`` (rad/mm)."""
        return 2.0 * math.pi / self.spacing_mm

    def to_dict(self) -> dict[str, float | list[float]]:
        return {"spacing_mm": self.spacing_mm, "angle_deg": self.angle_deg, "offsets_rad": list(self.offsets_rad)}


def _check_affine(affine: np.ndarray, name: str = "affine") -> np.ndarray:
    a = np.asarray(affine, float)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: expected a finite 4x4 matrix, got shape {a.shape}")
    if np.linalg.norm(a[:3, 0]) == 0 or np.linalg.norm(a[:3, 1]) == 0:
        raise ValueError(f"{name}: the in-plane axis columns must be non-zero")
    return a


def tag_directions(tag_affine: np.ndarray, angle_deg: float) -> np.ndarray:
    """World unit vectors ``(2, 3)`` of the two tag directions of a tagging image with ``tag_affine``.

    ``e_1 = cos(theta) u + sin(theta) v'`` and ``e_2 = -sin(theta) u + cos(theta) v'``, ``u`` the unit
    first image axis and ``v'`` the unit second axis made orthogonal to ``u`` (in the image plane).
    """
    a = _check_affine(tag_affine, "tag_affine")
    u = a[:3, 0] / np.linalg.norm(a[:3, 0])
    v = a[:3, 1] - (a[:3, 1] @ u) * u
    nv = np.linalg.norm(v)
    if nv < 1e-9:
        raise ValueError("tag_affine: the two in-plane axes are parallel")
    v = v / nv
    t = math.radians(float(angle_deg))
    return np.stack([math.cos(t) * u + math.sin(t) * v, -math.sin(t) * u + math.cos(t) * v])


def tag_phase_at(points: np.ndarray, tag_affine: np.ndarray, grid: ScannerTagGrid) -> np.ndarray:
    """Tag phases ``(..., 2)`` (radians, not wrapped) at world points ``(..., 3)`` (mm).

    Only the in-plane component of a point matters (``e_d`` lies in the tagging plane), so points of
    another image that are projected onto the tagging plane get the phase of their projection.
    """
    p = np.asarray(points, float)
    if p.shape[-1] != 3:
        raise ValueError(f"points must have shape (..., 3), got {p.shape}")
    e = tag_directions(tag_affine, grid.angle_deg)
    return grid.k * (p @ e.T) + np.asarray(grid.offsets_rad)


def tag_phase_map(
    affine: np.ndarray,
    shape: Sequence[int],
    tag_affine: np.ndarray,
    grid: ScannerTagGrid,
    *,
    slice_index: float = 0.0,
) -> np.ndarray:
    """Tag phase maps ``(2, X, Y)`` at the voxel centres ``(i, j, slice_index)`` of an image grid.

    ``affine`` is the grid's voxel-to-world matrix (e.g. a region of interest the tagging was resampled
    onto), ``tag_affine`` the acquired tagging image's (its axes fix the tag directions).
    """
    a = _check_affine(affine)
    nx, ny = (int(v) for v in tuple(shape)[:2])
    if nx < 1 or ny < 1:
        raise ValueError(f"shape must be two positive sizes, got {tuple(shape)}")
    gi, gj = np.meshgrid(np.arange(nx, dtype=float), np.arange(ny, dtype=float), indexing="ij")
    vox = np.stack([gi, gj, np.full_like(gi, float(slice_index)), np.ones_like(gi)], -1)
    world = vox @ a[:3].T
    return np.moveaxis(tag_phase_at(world, tag_affine, grid), -1, 0)


def tag_phase_residual(image: np.ndarray, phase: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Observed minus predicted grid phase ``(2,)`` of one tagged frame, wrapped to (-pi, pi].

    The first harmonic along direction ``d`` is demodulated with the predicted phase,
    ``z_d = sum_x w(x) (I(x) - <I>_w) exp(-j phi_d(x))``; a grid whose lines (minima) lie at
    ``phi_d + delta_d`` gives ``z_d ~ -|z_d| exp(j delta_d)``, so ``delta_d = arg(-z_d)``. ``weights``
    default to a 2-D Hann window (less spectral leakage from the image border).

    Parameters
    ----------
    image : ``(X, Y)`` tagged frame (the first frame after tagging: least motion and fading).
    phase : ``(2, X, Y)`` predicted phases (:func:`tag_phase_map` on the image's own grid).
    """
    im = np.asarray(image, float)
    ph = np.asarray(phase, float)
    if im.ndim != 2 or ph.shape != (2, *im.shape):
        raise ValueError(f"image must be (X, Y) and phase (2, X, Y); got {im.shape} and {ph.shape}")
    if weights is None:
        w = np.outer(np.hanning(im.shape[0] + 2)[1:-1], np.hanning(im.shape[1] + 2)[1:-1])
    else:
        w = np.asarray(weights, float)
        if w.shape != im.shape or np.any(w < 0) or w.sum() <= 0:
            raise ValueError("weights must be non-negative, not all zero, with the image's shape")
    c = im - (w * im).sum() / w.sum()
    z = (w * c * np.exp(-1j * ph)).sum(axis=(1, 2))
    if np.any(np.abs(z) == 0):
        raise ValueError("the frame has no modulation at the predicted tag frequency (untagged image?)")
    return np.angle(-z)


@dataclass(frozen=True)
class TagGridFit:
    """Result of :func:`estimate_scanner_tag_grid`.

    Attributes
    ----------
    grid : the fitted :class:`ScannerTagGrid` (offsets included).
    residual_rad : ``(n, 2)`` per slice, observed minus header-predicted phase after the offsets,
        wrapped to (-pi, pi] (NaN for slices without a detectable grid).
    concentration : ``(2,)`` mean resultant length of the raw residuals over slices: 1 when every
        slice has the same offset (the header predicts the tags), ~0 when the phase is random.
    used : ``(n,)`` bool, slices that entered the estimate.
    """

    grid: ScannerTagGrid
    residual_rad: np.ndarray
    concentration: np.ndarray
    used: np.ndarray

    @property
    def residual_mm(self) -> np.ndarray:
        """``|residual|`` as a tag-line position error along each direction (mm): ``|delta| / k``."""
        return np.abs(self.residual_rad) / self.grid.k


def _canonical_angle_deg(angles_deg: np.ndarray) -> float:
    """Circular mean of grid angles with period 90 degrees, in [0, 90)."""
    z = np.exp(1j * np.radians(4.0 * np.asarray(angles_deg, float))).mean()
    if abs(z) < 1e-6:
        raise ValueError("tag directions are inconsistent between slices (no common grid angle)")
    return float(np.degrees(np.angle(z)) / 4.0) % 90.0


def estimate_scanner_tag_grid(
    frames: Sequence[np.ndarray],
    tag_affines: Sequence[np.ndarray],
    *,
    spacing_mm: float | None = None,
    angle_deg: float | None = None,
) -> TagGridFit:
    """Fit the scanner-fixed tag grid of a protocol to tagged frames and their headers.

    1. Spacing and angle (unless given): the two first-harmonic peaks of every frame
       (:func:`cmrkit.tagging.detect_harmonic_peaks`), converted to cycles/mm with the affine's pixel
       sizes; median spacing, circular mean angle modulo 90 degrees.
    2. Offsets: per slice the residual of :func:`tag_phase_residual` with zero offsets; ``c_d`` is its
       circular mean over the slices.
    3. The residual of every slice after the offsets says how well the header alone predicts its tags.

    Parameters
    ----------
    frames : one ``(X, Y)`` tagged frame per slice (the first frame of each sequence).
    tag_affines : the slices' 4x4 affines (same order).
    spacing_mm, angle_deg : protocol values when known (skip their estimation).

    Raises
    ------
    ValueError
        Empty or mismatched inputs, or no slice with a detectable tag grid.
    """
    if len(frames) == 0 or len(frames) != len(tag_affines):
        raise ValueError(f"need one affine per frame and at least one frame; got {len(frames)} and {len(tag_affines)}")
    ims = [np.asarray(f, float) for f in frames]
    affs = [_check_affine(a, f"tag_affines[{i}]") for i, a in enumerate(tag_affines)]
    for i, im in enumerate(ims):
        if im.ndim != 2:
            raise ValueError(f"frames[{i}] must be a 2-D (X, Y) frame, got shape {im.shape}")
    n = len(ims)
    used = np.ones(n, bool)
    if spacing_mm is None or angle_deg is None:
        spacings, angles = [], []
        for i, (im, a) in enumerate(zip(ims, affs)):
            try:
                pk = detect_harmonic_peaks(im.T)  # (H, W) = (Y, X): k = (k_i, k_j) in rad/pixel
            except ValueError:
                used[i] = False
                continue
            px = np.linalg.norm(a[:3, :2], axis=0)
            kmm = pk.k / px[None, :]
            spacings += list(2.0 * math.pi / np.linalg.norm(kmm, axis=1))
            angles += list(np.degrees(np.arctan2(kmm[:, 1], kmm[:, 0])))
        if not used.any():
            raise ValueError("no frame shows a detectable tag grid (spectral peaks); cannot fit the scanner grid")
        spacing_mm = float(np.median(spacings)) if spacing_mm is None else float(spacing_mm)
        angle_deg = _canonical_angle_deg(np.asarray(angles)) if angle_deg is None else float(angle_deg)
    base = ScannerTagGrid(float(spacing_mm), float(angle_deg))
    raw = np.full((n, 2), np.nan)
    for i, (im, a) in enumerate(zip(ims, affs)):
        if not used[i]:
            continue
        try:
            raw[i] = tag_phase_residual(im, tag_phase_map(a, im.shape, a, base))
        except ValueError:
            used[i] = False
    if not used.any():
        raise ValueError("no frame has modulation at the tag frequency; cannot fit the scanner grid")
    zbar = np.exp(1j * raw[used]).mean(axis=0)
    offsets = np.angle(zbar)
    grid = ScannerTagGrid(base.spacing_mm, base.angle_deg, (float(offsets[0]), float(offsets[1])))
    return TagGridFit(grid=grid, residual_rad=wrap_phase(raw - offsets), concentration=np.abs(zbar), used=used)
