"""Find the LV wall on a tagged sequence alone: automatic frame-0 landmarks for :mod:`cmrkit.tagging`.

Ferdian et al. (2020) localise the LV with a CNN trained on UK Biobank; the kit has no such
annotations, so it uses two physical cues that hold on every SPAMM acquisition and need no training:

1. **Tag persistence.** Tags are written into the magnetisation of all tissue at ED. Blood flows
   and mixes, so its tags vanish within a few frames; myocardium keeps them until they fade with T1
   (the harmonic magnitude normalised by frame 0 stays high).
2. **Contraction.** Harmonic phase is a material property, so HARP tracks every tagged pixel
   (:func:`cmrkit.tagging.harmonic_images`, Newton steps on the wrapped phase; Osman et al. 1999).
   In systole the LV myocardium moves towards one point, the LV centre; static tissue (chest wall,
   liver, spine) does not move at all.

:func:`localise_lv_wall` HARP-tracks a lattice of frame-0 tissue pixels through early systole (the
first 35 % of the frames, where even strongly fading real tags are still visible), keeps the points
whose tags persist (harmonic magnitude above the noise floor, relative to frame 0 and to the tissue
that keeps its tags best in the same frame: imaging pulses fade all tissue alike, blood washes out),
removes the heart's translation, and finds the point the systolic displacements converge to (a Hough
vote along the displacement lines, refined by their robust least-squares intersection). On 72 rays
from that centre the first run of persistent, inward-moving tissue is the LV wall (endocardium at the
half-level of tag persistence, refined, like the epicardium, to the strongest edge of the tag-free ED
image); the search is repeated from the centroid of the cavity it found. Smooth endo- and epicardial
radius curves (low-order Fourier series, fitted robustly) give a frame-0 myocardium mask, from which
:func:`cmrkit.tagging.grid.init_landmarks_from_mask` places the 24x7 grid; spoke 0 points at the RV (the
washed-out blood next to the septum) when it can be found.

Measured on phantom tagging (``benchmarks/tag_localise.py``): see the numbers quoted in
``benchmarks/README.md``. Limits: the heart must contract (a sequence with no systolic motion has no
contraction centre); a slice whose LV cavity is obliterated at ES (apical slices of small hearts)
gives a less precise endocardium; the result is a starting grid for tracking, not a segmentation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from ..strain import N_LANDMARKS
from .grid import init_landmarks_from_mask
from .harp import PhaseSampler, detect_harmonic_peaks, harmonic_images, newton_solve

__all__ = ["LVWall", "localise_lv_wall", "locate_wall", "auto_init_landmarks"]

TWO_PI = 2.0 * np.pi
#: frames 0 .. this fraction of the sequence are analysed (early systole: tags still strong, motion clear)
SYSTOLE_FRACTION = 0.35


@dataclass
class LVWall:
    """Result of :func:`localise_lv_wall` (pixel coordinates of the full image, x = column, y = row).

    Attributes
    ----------
    center : (2,) contraction centre, the origin of the rays (the landmark grid is centred on the
        cavity centroid of ``myo_mask``, :func:`cmrkit.tagging.grid.init_landmarks_from_mask`)
    r_endo, r_epi : (n_rays,) smooth endo- and epicardial radii on the rays ``theta``
    theta : (n_rays,) ray angles (radians, from +x towards +y)
    myo_mask : (H, W) frame-0 myocardium mask
    landmarks : (2, 168) frame-0 landmark grid (k = 0 endocardium ... 6 epicardium)
    rv_direction : angle of spoke 0 (towards the RV) or None when no RV cavity was found
    es_frame : frame of maximal contraction used for the wall detection
    diagnostics : persistence and displacement maps on the tracking lattice, for display/checks
    """

    center: np.ndarray
    r_endo: np.ndarray
    r_epi: np.ndarray
    theta: np.ndarray
    myo_mask: np.ndarray
    landmarks: np.ndarray
    rv_direction: float | None
    es_frame: int
    diagnostics: dict[str, Any] = field(default_factory=dict)


def _content_box(im: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box ``(y0, y1, x0, x1)`` of the non-padded part (Ferdian zero-pads to square)."""
    nz = np.abs(im).max(axis=0) > 0
    rows, cols = np.flatnonzero(nz.any(1)), np.flatnonzero(nz.any(0))
    if not len(rows):
        raise ValueError("images are all zero")
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _track_lattice(
    base: np.ndarray,
    k: np.ndarray,
    pts: np.ndarray,
    t_end: int,
    period: float,
    shape: tuple[int, int],
    active: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """HARP-track lattice points ``pts (2, N)`` through frames ``1..t_end``; returns positions
    ``(t_end + 1, 2, N)`` and the harmonic magnitude at them ``(t_end + 1, N)``.

    Only the ``active`` points (default all) are tracked; the others stay put with magnitude 0.
    Tag jumps are repaired against the median displacement of the 3x3 lattice neighbours.
    """

    gh, gw = shape
    n = pts.shape[1]
    act = np.ones(n, bool) if active is None else np.asarray(active, bool)
    xs = np.repeat(pts[None], t_end + 1, axis=0)
    mags = np.zeros((t_end + 1, n))
    pa = pts[:, act]
    st0 = PhaseSampler(base[0], k)
    target, _, m0 = st0(pa)
    mags[0, act] = m0.mean(0)
    max_step = 0.3 * period
    prev, prev2 = pa, pa
    for t in range(1, t_end + 1):
        st = PhaseSampler(base[t], k)
        start = prev + 0.5 * (prev - prev2)
        x, _ = newton_solve(st, start, target, 10, max_step, k)
        for _ in range(2):  # jump repair on the lattice
            u = np.zeros((2, n))
            u[:, act] = x - pa
            u = u.reshape(2, gh, gw)
            med = np.stack([ndimage.median_filter(c, size=3, mode="nearest") for c in u]).reshape(2, -1)[:, act]
            bad = np.sqrt(((x - pa - med) ** 2).sum(0)) > 0.4 * period
            if not bad.any():
                break
            x[:, bad], _ = newton_solve(st, (pa + med)[:, bad], target[:, bad], 10, max_step, k)
        _, _, mg = st(x)
        xs[t][:, act], mags[t, act] = x, mg.mean(0)
        prev2, prev = prev, x
    return xs, mags


def _convergence_point(X: np.ndarray, u: np.ndarray, w: np.ndarray, n_iter: int = 8) -> np.ndarray:
    """Point ``c`` the displacement lines ``X + s u`` pass closest to (weighted, Huber-reweighted):
    minimises ``sum w (n . (c - X))^2`` with ``n`` the unit normal of ``u``."""
    un = u / np.maximum(np.linalg.norm(u, axis=0), 1e-9)
    nrm = np.stack([-un[1], un[0]])  # (2, N)
    ww = w.copy()
    c = np.average(X, axis=1, weights=w)
    for _ in range(n_iter):
        a = nrm.T * ww[:, None]
        m = a.T @ nrm.T
        b = a.T @ (nrm * X).sum(0)
        c = np.linalg.solve(m + 1e-9 * np.eye(2), b)
        r = np.abs((nrm * (c[:, None] - X)).sum(0))
        # only points that move towards c count (a line through c is also hit by outward motion)
        inward = ((c[:, None] - X) * un).sum(0) > 0
        scale = max(float(np.median(r[inward])) if inward.any() else 1.0, 0.5)
        ww = w * np.minimum(1.0, 2.0 * scale / np.maximum(r, 1e-9)) * np.where(inward, 1.0, 0.1)
    return c


def _vote_centre(
    X: np.ndarray, u: np.ndarray, w: np.ndarray, shape: tuple[int, int], r_max: float, smooth: float
) -> np.ndarray:
    """Point ``(x, y)`` most displacement lines ``X + s u / |u|`` (``0 < s < r_max``) pass through,
    votes weighted by ``w`` and accumulated on the pixel grid of ``shape``, Gaussian-smoothed."""
    h, w_ = shape
    un = u / np.maximum(np.linalg.norm(u, axis=0), 1e-9)
    s = np.arange(1.0, max(r_max, 2.0), 1.0)
    xs = X[0][:, None] + un[0][:, None] * s[None]
    ys = X[1][:, None] + un[1][:, None] * s[None]
    ix, iy = np.round(xs).astype(int), np.round(ys).astype(int)
    ok = (ix >= 0) & (ix < w_) & (iy >= 0) & (iy < h)
    acc = np.zeros((h, w_))
    np.add.at(acc, (iy[ok], ix[ok]), np.broadcast_to(w[:, None], ix.shape)[ok])
    acc = ndimage.gaussian_filter(acc, smooth)
    iy0, ix0 = np.unravel_index(int(np.argmax(acc)), acc.shape)
    return np.array([float(ix0), float(iy0)])


def _fourier_fit(theta: np.ndarray, r: np.ndarray, ok: np.ndarray, order: int, n_iter: int = 6) -> np.ndarray:
    """Robust (Tukey-reweighted) low-order Fourier fit of ``r(theta)`` over the ``ok`` rays."""
    cols = [np.ones_like(theta)]
    for m in range(1, order + 1):
        cols += [np.cos(m * theta), np.sin(m * theta)]
    a = np.stack(cols, 1)
    w = ok.astype(float)
    if w.sum() < a.shape[1] + 2:
        raise ValueError("too few rays cross the LV wall")
    rr = np.where(ok, r, 0.0)
    for _ in range(n_iter):
        aw = a * w[:, None]
        coef = np.linalg.lstsq(aw.T @ a + 1e-6 * np.eye(a.shape[1]), aw.T @ rr, rcond=None)[0]
        res = np.abs(a @ coef - rr)
        s = max(1.4826 * float(np.median(res[ok])), 0.5)
        w = ok * np.clip(1 - (res / (4 * s)) ** 2, 0, None) ** 2
    return a @ coef


def localise_lv_wall(images: np.ndarray, *, persistence_min: float = 0.35, **kwargs: Any) -> LVWall:
    """Locate the LV myocardium at frame 0 of a grid-tagged short-axis sequence (no mask, no model).

    :func:`locate_wall` with ``persistence_min``; when no ring of persistent tissue is found, once
    more with ``0.6 x persistence_min`` (strongly fading tags, low SNR), and the first error is
    raised if that fails too. Arguments and result as :func:`locate_wall`.
    """
    try:
        return locate_wall(images, persistence_min=persistence_min, **kwargs)
    except ValueError as exc:
        if not str(exc).startswith("no ring"):
            raise
        try:
            return locate_wall(images, persistence_min=0.6 * persistence_min, **kwargs)
        except ValueError:
            raise exc from None


def locate_wall(
    images: np.ndarray,
    *,
    peaks: Any = None,
    tag_spacing_px: float | None = None,
    lattice_step: int | None = None,
    persistence_min: float = 0.35,
    motion_min: float = 0.12,
    n_rays: int = 72,
    order: int = 3,
    bandwidth: float = 0.3,
    refine_endo: bool = True,
    recentre: int = 2,
) -> LVWall:
    """One attempt of :func:`localise_lv_wall` at a given ``persistence_min``.

    Parameters
    ----------
    images
        ``(T, H, W)`` tagged frames, frame 0 = ED (tags freshly applied); zero-padded borders and
        constant (missing) trailing frames are allowed.
    peaks, tag_spacing_px
        Harmonic peaks or tag spacing, as for :func:`cmrkit.tagging.track_landmarks` (default:
        detected on the first two frames of the non-padded region).
    lattice_step
        Spacing of the tracked lattice in pixels (default: a third of the tag period, at least 1).
    persistence_min
        A point is tissue that keeps its tags when its harmonic magnitude over frames 2..ES, less
        the noise floor (median harmonic magnitude of the signal-free region) and relative to its
        frame-0 value, stays above this fraction of that of the best-persisting tissue of the same
        frame (median over those frames; fading by T1 and imaging pulses affects all tissue alike,
        blood loses its tags by wash-out). ES is searched in the first 35 % of the frames.
    motion_min
        Minimal inward (towards the centre) systolic displacement of wall points, in tag periods.
    n_rays, order
        Rays for the wall search and the Fourier order of the smooth radius curves.
    bandwidth
        HARP band-pass width (:func:`cmrkit.tagging.harmonic_images`).
    refine_endo
        Move the endocardium to the strongest anatomy edge within half a tag period.
    recentre
        Times the ray search is repeated from the centroid of the cavity it found (the contraction
        centre, a Hough vote of the systolic displacement lines after the heart's translation is
        removed, need not be the cavity's centre).

    Returns
    -------
    LVWall

    Raises
    ------
    ValueError
        When the sequence has no two tag directions, no systolic contraction, or no ring of
        persistent contracting tissue (the message says which).
    """

    im = np.asarray(images, dtype=float)
    if im.ndim != 3 or im.shape[0] < 4:
        raise ValueError(f"images must be (T >= 4, H, W), got shape {im.shape}")
    present = im.reshape(len(im), -1).std(axis=1) > 0
    if not present[0]:
        raise ValueError("images: frame 0 is empty; the tagged ED frame is needed")
    t_n = len(im) if present.all() else int(np.argmin(present))  # leading non-empty frames
    if t_n < 4:
        raise ValueError(f"images: only {t_n} non-empty leading frames; need at least 4 to see contraction")
    y0, y1, x0, x1 = _content_box(im[:t_n])
    sub = im[:t_n, y0:y1, x0:x1]
    h, w = sub.shape[1:]
    if peaks is None:
        peaks = detect_harmonic_peaks(sub[:2], tag_spacing_px=tag_spacing_px)
    k = np.asarray(peaks.k, float)
    period = float(np.min(peaks.spacing_px))
    step = int(lattice_step or max(1, round(period / 3)))
    # systole lies in the first ~third of the cycle (frame 0 = ED); later frames have faded tags
    t_end = max(3, min(t_n - 1, int(math.ceil(SYSTOLE_FRACTION * t_n))))
    base = harmonic_images(sub[: t_end + 1], peaks, bandwidth=bandwidth)
    gy, gx = np.mgrid[0:h:step, 0:w:step]
    pts = np.stack([gx.ravel(), gy.ravel()]).astype(float)
    # tissue with signal at ED: smoothed frame-0 intensity above the air/noise level (Otsu on the
    # content region, halved so that the darker myocardium of gradient-echo tagging stays in); only
    # the lattice points on it (and two lattice steps around) are tracked
    from skimage.filters import threshold_otsu

    smooth0 = ndimage.gaussian_filter(sub[0], period / 2)
    signal = smooth0 > 0.5 * threshold_otsu(smooth0)
    signal_pts = signal[pts[1].astype(int), pts[0].astype(int)]
    active = ndimage.binary_dilation(signal_pts.reshape(gx.shape), iterations=2).ravel()
    xs, mags = _track_lattice(base, k, pts, t_end, period, gx.shape, active)
    u = xs - pts[None]
    m0 = np.maximum(mags[0], 1e-12)
    tagged0 = signal_pts & (mags[0] > 0.1 * np.percentile(mags[0][active], 95))
    # persistence: harmonic magnitude relative to frame 0, and relative to the tissue that keeps its
    # tags best at the same frame (the imaging RF pulses and T1 fade the tags of all tissue alike,
    # strongly in real FLASH tagging; blood loses them faster by wash-out)
    # the harmonic magnitude of noise alone (median over the content region without signal: lung,
    # air) is removed first, so that noisy, faded frames do not make blood look tagged
    mag_img = np.abs(base).mean(axis=1)  # (t, H, W)
    air = ~ndimage.binary_dilation(signal, iterations=int(math.ceil(period)))
    floor = np.array([float(np.median(m[air])) if air.sum() > 50 else 0.0 for m in mag_img])
    persist_t = np.maximum(mags - floor[:, None], 0.0) / np.maximum(m0 - floor[0], 1e-12)[None]
    ref = np.array([np.percentile(p[tagged0], 90) if tagged0.sum() > 10 else 1.0 for p in persist_t])
    persist_t = persist_t / np.maximum(ref, 1e-6)[:, None]
    disp = np.sqrt((u**2).sum(1))  # (t, N)
    score = []
    for t in range(1, t_end + 1):
        ok = tagged0 & (np.median(persist_t[1 : t + 1], axis=0) > persistence_min)
        score.append(float(np.percentile(disp[t][ok], 90)) if ok.sum() > 10 else 0.0)
    es = int(np.argmax(score)) + 1
    persist = np.median(persist_t[min(2, es) : es + 1], axis=0)
    tissue = tagged0 & (persist > persistence_min)
    moving = tissue & (disp[es] > motion_min * period)
    if moving.sum() < 20:
        raise ValueError(
            "no systolic contraction found: fewer than 20 tagged points move by more than "
            f"{motion_min:.2f} tag periods (is this a cine-like or static sequence?)"
        )
    # contraction about the LV centre plus a translation of the whole heart (breathing position,
    # through-plane motion of a tilted long axis): remove the median motion of the moving tissue
    u_es = u[es] - np.median(u[es][:, moving], axis=1)[:, None]
    wts = np.minimum(disp[es][moving] / period, 1.0)
    # every moving point votes along its displacement line (a Hough transform for the point they
    # converge to), robust to the noisy displacements of faded, noisy tags; the least-squares
    # intersection is then taken over the points around the winning vote
    c0 = _vote_centre(pts[:, moving], u_es[:, moving], wts, (h, w), r_max=0.25 * min(h, w), smooth=period / 2)
    near = np.hypot(*(pts[:, moving] - c0[:, None])) < 12.0 * period
    c = _convergence_point(pts[:, moving][:, near], u_es[:, moving][:, near], wts[near]) if near.sum() >= 10 else c0
    if np.hypot(*(c - c0)) > 2.0 * period:  # the fit left the vote's neighbourhood: keep the vote
        c = c0
    anat = ndimage.gaussian_filter(sub[0], period / 2.5)  # tag-free anatomy at ED
    anat_dr = np.stack([ndimage.sobel(anat, axis=1), ndimage.sobel(anat, axis=0)]) / 8.0  # d/dx, d/dy
    q_img = (np.clip(persist, 0.0, 1.0) * signal_pts).reshape(gx.shape)
    blood_img = (~tissue).reshape(gx.shape).astype(float)  # tags gone (or never there)
    theta = TWO_PI * np.arange(n_rays) / n_rays
    rmax = 0.5 * min(h, w)
    dr = 0.25
    r = np.arange(0.0, rmax, dr)

    def ray_search(c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[float], list[float]]:
        """Wall (inward-moving tissue about ``c``) and its endo/epicardial radii on the rays from ``c``."""
        # inward radial displacement at ES of every lattice point
        d = c[:, None] - pts
        dist = np.maximum(np.linalg.norm(d, axis=0), 1e-9)
        inward = (u_es * d).sum(0) / dist
        wall = tissue & (inward > motion_min * period)
        # rays from the centre through the lattice maps (frame-0 positions). On each ray the wall is
        # the first run of contracting tissue; the endocardium is the half-level crossing of the tag
        # persistence (blood loses it) moved to the strongest anatomy edge within half a period, the
        # epicardium the strongest anatomy edge further out
        wall_img = wall.reshape(gx.shape).astype(float)
        r_en = np.full(n_rays, np.nan)
        r_ep = np.full(n_rays, np.nan)
        cav_levels: list[float] = []
        wall_levels: list[float] = []
        for i, th in enumerate(theta):
            xx, yy = c[0] + r * math.cos(th), c[1] + r * math.sin(th)
            inside = (xx >= 0) & (xx <= w - 1) & (yy >= 0) & (yy <= h - 1)
            vw = ndimage.map_coordinates(wall_img, [yy / step, xx / step], order=1, mode="nearest") > 0.5
            vw &= inside
            if not vw.any():
                continue
            a = int(np.argmax(vw))
            rest = ~vw[a:]
            b = a + (int(np.argmax(rest)) if rest.any() else len(rest) - 1)
            q = ndimage.map_coordinates(q_img, [yy / step, xx / step], order=1, mode="nearest")
            q[~inside] = 0.0
            cav = float(np.median(q[: max(a // 2, 1)]))  # cavity level (central half of the run-up)
            hi_end = min(len(r) - 1, b + int(round(period / dr)))
            peak_i = a + int(np.argmax(q[a : hi_end + 1]))
            lvl = 0.5 * (cav + q[peak_i])
            if q[peak_i] - cav < 0.15:
                continue  # no persistence contrast between cavity and wall on this ray
            cav_levels.append(cav)
            wall_levels.append(float(q[peak_i]))
            j = peak_i
            while j > 0 and q[j] > lvl:
                j -= 1
            # refine to the strongest anatomy edge within half a period (blood-myocardium contrast)
            av = ndimage.map_coordinates(anat_dr[0], [yy, xx], order=1, mode="nearest") * math.cos(
                th
            ) + ndimage.map_coordinates(anat_dr[1], [yy, xx], order=1, mode="nearest") * math.sin(th)
            e0, e1 = max(1, j - int(round(0.5 * period / dr))), min(len(r) - 1, j + int(round(0.5 * period / dr)))
            if refine_endo and inside[e0 : e1 + 1].all():
                j = e0 + int(np.argmax(np.abs(av[e0 : e1 + 1])))
            r_en[i] = r[j]
            # epicardium: the strongest anatomy edge (tags low-passed away) between half a tag period
            # and two periods outside the endocardium (fat is brighter, lung and RV blood differ too)
            lo_i = j + int(round(0.5 * period / dr))
            hi_i = min(len(r) - 2, j + int(round(2 * period / dr)))
            if hi_i > lo_i:
                seg = np.abs(av[lo_i : hi_i + 1])
                if inside[lo_i : hi_i + 1].all() and seg.max() > 0:
                    r_ep[i] = r[lo_i + int(np.argmax(seg))]
        return inward, wall, r_en, r_ep, cav_levels, wall_levels

    # rays from the contraction centre first; then, twice at most, from the centroid of the cavity
    # the first search found (whole-heart translation moves the contraction centre off the cavity)
    found = ray_search(c)
    for _ in range(recentre):
        ok = np.isfinite(found[2])
        if ok.sum() < n_rays // 3:
            break
        r_en = found[2]
        ren0 = np.clip(_fourier_fit(theta, np.nan_to_num(r_en), ok, order), 1.0, rmax)
        cav_x, cav_y = c[0] + ren0 * np.cos(theta), c[1] + ren0 * np.sin(theta)
        # centroid of the closed endocardial polygon (shoelace formula)
        cross = cav_x * np.roll(cav_y, -1) - np.roll(cav_x, -1) * cav_y
        area = 0.5 * cross.sum()
        new = np.array([((cav_x + np.roll(cav_x, -1)) * cross).sum(), ((cav_y + np.roll(cav_y, -1)) * cross).sum()])
        new = new / (6.0 * area) if abs(area) > 1e-6 else c
        if np.hypot(*(new - c)) < 0.5:
            break
        again = ray_search(new)
        if np.isfinite(again[2]).sum() < n_rays // 3:
            break  # keep the search that found a ring
        c, found = new, again
    inward, wall, r_en, r_ep, cav_levels, wall_levels = found
    ok = np.isfinite(r_en)
    if ok.sum() >= n_rays // 3 and np.median(cav_levels) > 0.5 * np.median(wall_levels):
        raise ValueError(
            "no blood pool: inside the contracting ring the tags persist as much as in the wall "
            f"(median persistence {np.median(cav_levels):.2f} vs {np.median(wall_levels):.2f})"
        )
    if ok.sum() < n_rays // 3:
        raise ValueError(
            f"no ring of persistent, contracting tissue around the contraction centre "
            f"({int(ok.sum())} of {n_rays} rays cross one)"
        )
    ren = np.clip(_fourier_fit(theta, np.nan_to_num(r_en), ok, order), 1.0, rmax)
    thick = r_ep - ren
    ok_ep = np.isfinite(thick) & (thick >= 0.4 * period) & (thick <= 3 * period)
    if ok_ep.sum() >= n_rays // 4:
        rep = _fourier_fit(theta, np.nan_to_num(r_ep), ok_ep, order)
    else:  # the wall borders static tissue nearly everywhere: median thickness of the clear rays
        t_med = float(np.median(thick[ok_ep])) if ok_ep.any() else period
        rep = ren + t_med
    rep = np.clip(rep, ren + 0.5 * period, rmax)
    # myocardium mask on the sub-image from the smooth radius curves
    yy, xx = np.mgrid[0:h, 0:w]
    ang = np.mod(np.arctan2(yy - c[1], xx - c[0]), TWO_PI)
    rad = np.hypot(xx - c[0], yy - c[1])
    myo = (rad >= _radius_at(ang, theta, ren)) & (rad <= _radius_at(ang, theta, rep))
    # spoke 0 towards the RV: the largest untagged (blood) region touching the outside of the septum
    rv_dir = _rv_direction(blood_img, c, ren, rep, theta, step, (h, w))
    towards = None if rv_dir is None else (c[0] + 10 * math.cos(rv_dir), c[1] + 10 * math.sin(rv_dir))
    lm_sub = init_landmarks_from_mask(myo, towards=towards)
    full_mask = np.zeros(im.shape[1:], bool)
    full_mask[y0:y1, x0:x1] = myo
    off = np.array([x0, y0], float)
    diag = {
        "persistence": persist.reshape(gx.shape),
        "inward_es": inward.reshape(gx.shape),
        "tissue": tissue.reshape(gx.shape),
        "wall": wall.reshape(gx.shape),
        "lattice_step": step,
        "offset_xy": off,
        "rays_ok": int(ok.sum()),
        "rays_epi_ok": int(ok_ep.sum()),
        "period_px": period,
    }
    return LVWall(
        center=c + off,
        r_endo=ren,
        r_epi=rep,
        theta=theta,
        myo_mask=full_mask,
        landmarks=lm_sub + off[:, None],
        rv_direction=rv_dir,
        es_frame=es,
        diagnostics=diag,
    )


def _radius_at(ang: np.ndarray, theta: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """A closed radius curve ``radius(theta)`` (rays ``theta`` from 0 to 2 pi) interpolated at angles
    ``ang`` in [0, 2 pi)."""
    return np.interp(ang, np.r_[theta, TWO_PI], np.r_[radius, radius[:1]])


def _rv_direction(
    blood: np.ndarray,
    c: np.ndarray,
    ren: np.ndarray,
    rep: np.ndarray,
    theta: np.ndarray,
    step: int,
    shape: tuple[int, int],
) -> float | None:
    """Direction (radians) from the LV centre to the blood region just outside the epicardium that
    is largest within one wall thickness plus one LV radius (the RV cavity), or None."""
    h, w = shape
    lab, n = ndimage.label(blood > 0.5)
    if n == 0:
        return None
    gy, gx = np.mgrid[0 : blood.shape[0], 0 : blood.shape[1]]
    px, py = gx * step, gy * step
    ang = np.mod(np.arctan2(py - c[1], px - c[0]), TWO_PI)
    rad = np.hypot(px - c[0], py - c[1])
    r_ep = _radius_at(ang, theta, rep)
    r_en = _radius_at(ang, theta, ren)
    band = (rad > r_ep) & (rad < r_ep + float(np.mean(ren)) + float(np.mean(rep - ren)))
    inside_img = (px > 1) & (px < w - 2) & (py > 1) & (py < h - 2)
    best, best_n = 0, 0
    for j in range(1, n + 1):
        comp = lab == j
        cnt = int((comp & band & inside_img).sum())
        # the RV cavity touches the band close to the wall and does not wrap around the LV
        if cnt > best_n and (comp & (rad < r_ep + 2 * step)).any() and not (comp & (rad < r_en)).any():
            best, best_n = j, cnt
    if best_n < 4:
        return None
    sel = (lab == best) & band
    vx, vy = (px[sel] - c[0]).mean(), (py[sel] - c[1]).mean()
    return float(math.atan2(vy, vx))


def auto_init_landmarks(images: np.ndarray, **kwargs: Any) -> np.ndarray:
    """Frame-0 ``(2, 168)`` landmarks from a tagged sequence alone (:func:`localise_lv_wall`)."""
    lm = localise_lv_wall(images, **kwargs).landmarks
    assert lm.shape == (2, N_LANDMARKS)
    return lm
