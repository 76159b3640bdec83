"""SPAMM grid tagging in material coordinates, Ferdian landmark grids and landmark strain.

Tag pattern (Axel & Dougherty, *Radiology* 1989;172:349-350, binomial SPAMM): a binomial SPAMM block of total flip
``theta_tot`` and order ``n`` (``n`` gradient lobes; 1-1 is ``n = 1``, 1-2-1 ``n = 2``) tips
``theta(X) = theta_tot |cos(phase/2)|^n`` (small-tip profile), leaving ``f = cos(theta(X))`` of the
longitudinal magnetisation; ``phase = k e.X + psi`` with ``k = 2 pi / spacing``. A grid is two
blocks along orthogonal directions with a crusher between: ``f_grid = f(e1) f(e2)``. With
``theta_tot = 90`` degrees the tag lines are fully saturated (``f = 0``) where ``phase = 0 mod 2 pi``.
Because ``X`` is the material (ED, tag-time) position, the pattern is carried by the motion.

Landmarks follow Ferdian et al. 2020: 168 points = 24 spokes x 7 transmural points, flat index
``spoke * 7 + k``, ``k = 0`` on the endocardium and ``k = 6`` on the epicardium, spokes equally
spaced in material angle. Strains (Ferdian ``PredictionResult.py``; thesis eq. 4.2), Green:
``E = (L_t^2 / L_0^2 - 1) / 2`` per segment,

* ``E_rr``: per spoke the chord endocardium -> epicardium (points ``7s`` and ``7s + 6``), mean of 24;
* ``E_cc,k``: ring ``k`` as a closed loop of 24 segments, mean of the 24 segment strains; the
  slice value is the mean of the 7 rings.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "N_SPOKES",
    "N_RINGS",
    "N_LANDMARKS",
    "tag_phases",
    "spamm_modulation",
    "landmark_material_grid",
    "landmark_strain",
]

N_SPOKES = 24
N_RINGS = 7
N_LANDMARKS = N_SPOKES * N_RINGS


def tag_phases(
    X: np.ndarray, Y: np.ndarray, *, spacing_mm: float, angle: float, offsets: tuple[float, float] = (0.0, 0.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Tag phases ``k e_d . X + psi_d`` of the two grid directions (``e_1`` at ``angle``, ``e_2``
    at ``angle + 90 deg`` in the LV frame)."""
    k = 2.0 * math.pi / spacing_mm
    c, s = math.cos(angle), math.sin(angle)
    p1 = k * (c * X + s * Y) + offsets[0]
    p2 = k * (-s * X + c * Y) + offsets[1]
    return p1, p2


def spamm_modulation(
    X: np.ndarray,
    Y: np.ndarray,
    *,
    spacing_mm: float,
    angle: float,
    offsets: tuple[float, float] = (0.0, 0.0),
    flip_total_deg: float = 90.0,
    order: int = 2,
) -> np.ndarray:
    """Grid-tag modulation ``f(X) in [cos(theta_tot), 1]`` of the longitudinal magnetisation."""
    th = math.radians(flip_total_deg)
    out = None
    for p in tag_phases(X, Y, spacing_mm=spacing_mm, angle=angle, offsets=offsets):
        f = np.cos(th * np.abs(np.cos(0.5 * p)) ** order)
        out = f if out is None else out * f
    return out


def landmark_material_grid(r_endo: float, r_epi: float, theta0: float) -> tuple[np.ndarray, np.ndarray]:
    """Material polar coordinates ``(R, Theta)`` of the 168 landmarks, index ``spoke * 7 + k``.

    Ring ``k`` lies at ``R = r_endo + k (r_epi - r_endo) / 6``; spoke ``s`` at
    ``Theta = theta0 + 2 pi s / 24`` (increasing from the image i axis towards the j axis).
    """
    k = np.tile(np.arange(N_RINGS), N_SPOKES)
    s = np.repeat(np.arange(N_SPOKES), N_RINGS)
    R = r_endo + (r_epi - r_endo) * k / (N_RINGS - 1)
    Th = theta0 + 2.0 * math.pi * s / N_SPOKES
    return R.astype(float), Th.astype(float)


def landmark_strain(landmarks: np.ndarray, reference_frame: int = 0) -> dict[str, np.ndarray]:
    """Ferdian Green strains of landmark sequences.

    Parameters
    ----------
    landmarks : array ``(..., T, 2, 168)`` (row 0 x, row 1 y), in mm (or isotropic pixels).

    Returns
    -------
    dict with ``ecc_ring`` ``(..., T, 7)``, ``ecc`` ``(..., T)`` (mean of the rings) and ``err``
    ``(..., T)``.
    """
    lm = np.asarray(landmarks, float)
    if lm.shape[-2:] != (2, N_LANDMARKS):
        raise ValueError(f"landmarks must have shape (..., T, 2, {N_LANDMARKS}), got {lm.shape}")
    ref = np.take(lm, [reference_frame], axis=-3)
    endo, epi = lm[..., 0::N_RINGS], lm[..., N_RINGS - 1 :: N_RINGS]
    endo0, epi0 = ref[..., 0::N_RINGS], ref[..., N_RINGS - 1 :: N_RINGS]
    l2 = ((epi - endo) ** 2).sum(-2)
    l20 = ((epi0 - endo0) ** 2).sum(-2)
    err = (0.5 * (l2 / l20 - 1.0)).mean(-1)
    rings = []
    for k in range(N_RINGS):
        p, p0 = lm[..., k::N_RINGS], ref[..., k::N_RINGS]
        c2 = ((np.roll(p, -1, axis=-1) - p) ** 2).sum(-2)
        c20 = ((np.roll(p0, -1, axis=-1) - p0) ** 2).sum(-2)
        rings.append((0.5 * (c2 / c20 - 1.0)).mean(-1))
    ecc_ring = np.stack(rings, -1)
    return {"ecc_ring": ecc_ring, "ecc": ecc_ring.mean(-1), "err": err}
