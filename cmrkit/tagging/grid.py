"""The 24x7 landmark grid of Ferdian et al. (2020) placed on a frame-0 myocardium mask."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ..strain import N_LANDMARKS, N_RINGS, N_SPOKES
from .harp import TWO_PI

__all__ = ["init_landmarks_from_mask"]


# ----------------------------------------------------------------------------------------------
# landmark initialisation from a mask
# ----------------------------------------------------------------------------------------------
def init_landmarks_from_mask(
    mask: np.ndarray,
    *,
    myo_label: int = 2,
    start_angle: float | None = 0.0,
    towards: Sequence[float] | None = None,
    rv_label: int | None = None,
    step: float = 0.05,
    smooth_px: float = 0.7,
) -> np.ndarray:
    """24x7 Ferdian landmark grid from a 2-D myocardium mask (e.g. the cine or phantom segmentation).

    The centre is the centroid of the LV cavity (the holes of the myocardium mask; the centroid of
    the filled myocardium if it has none). From it, 24 rays at angles
    ``theta_s = theta_0 + 2 pi s / 24`` (from +x towards +y: on screen, with rows growing downwards,
    spoke indices run clockwise) cross the myocardium; on each ray the endocardial and epicardial
    crossings (first entry into, and exit from, the first myocardial run along the ray) are found with
    sub-pixel precision on the bilinearly interpolated mask, and 7 points are spaced evenly between
    them (``k = 0`` endocardium ... ``k = 6`` epicardium).

    Spoke 0 direction ``theta_0``: ``start_angle`` (radians, default 0 = +x, image right); or the
    direction from the centre to the point ``towards = (x, y)``; or, with ``rv_label`` given and
    ``mask`` a label map, towards the centroid of the RV (septum at spoke 0).

    Parameters
    ----------
    mask
        ``(H, W)`` binary myocardium mask, or a label map (kit convention 2 = LV myocardium).
    myo_label
        Label of the myocardium in a label map (ignored for a boolean mask).
    step
        Sampling step along the rays (pixels).
    smooth_px
        Gaussian blur (pixels) of the mask before the 0.5-level crossings are located; the
        boundary then lies halfway between inside and outside pixel centres.

    Returns
    -------
    numpy.ndarray
        ``(2, 168)`` landmarks, row 0 = x (column), row 1 = y (row).
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {m.shape}")
    myo = m.astype(bool) if m.dtype == bool or m.max() <= 1 else (m == myo_label)
    if myo.sum() < 10:
        raise ValueError("mask has (almost) no myocardium pixels")
    filled = ndimage.binary_fill_holes(myo)
    cavity = filled & ~myo
    region = cavity if cavity.sum() >= 3 else filled
    cy, cx = ndimage.center_of_mass(region)
    if towards is not None:
        theta0 = math.atan2(float(towards[1]) - cy, float(towards[0]) - cx)
    elif rv_label is not None:
        rv = m == rv_label
        if not rv.any():
            raise ValueError(f"rv_label={rv_label} not present in the mask")
        ry, rx = ndimage.center_of_mass(rv)
        theta0 = math.atan2(ry - cy, rx - cx)
    else:
        theta0 = float(start_angle or 0.0)
    # a light blur turns the pixel staircase into a smooth edge whose 0.5 level follows the
    # boundary through the pixel-centre grid (less than 0.1 px off for blur << radius)
    mf = ndimage.gaussian_filter(myo.astype(float), smooth_px) if smooth_px > 0 else myo.astype(float)
    h, w = m.shape
    rmax = float(np.hypot(h, w))
    r = np.arange(0.0, rmax, step)
    pts = np.empty((2, N_SPOKES, N_RINGS))
    for s in range(N_SPOKES):
        th = theta0 + TWO_PI * s / N_SPOKES
        xs, ys = cx + r * math.cos(th), cy + r * math.sin(th)
        inside = (xs >= 0) & (xs <= w - 1) & (ys >= 0) & (ys <= h - 1)
        v = ndimage.map_coordinates(mf, [ys, xs], order=1, mode="constant", cval=0.0)
        v[~inside] = 0.0
        above = v >= 0.5
        if not above.any():
            raise ValueError(f"spoke {s} (angle {math.degrees(th):.0f} deg) never crosses the myocardium")
        i_in = int(np.argmax(above))
        after = ~above[i_in:]
        i_out = i_in + (int(np.argmax(after)) if after.any() else len(after) - 1)

        def cross(i: int) -> float:  # linear interpolation of the 0.5 crossing between i-1 and i
            if i <= 0:
                return r[0]
            a, b = v[i - 1], v[i]
            return r[i - 1] + (0.5 - a) / (b - a) * step if b != a else r[i]

        r_en, r_ep = cross(i_in), cross(i_out)
        rk = r_en + np.arange(N_RINGS) / (N_RINGS - 1) * (r_ep - r_en)
        pts[0, s] = cx + rk * math.cos(th)
        pts[1, s] = cy + rk * math.sin(th)
    return pts.reshape(2, N_LANDMARKS)
