"""A small analytic SPAMM sequence (contracting ring) with exact landmark and strain ground truth,
for tests, benchmarks and documentation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..strain import N_LANDMARKS, N_RINGS, N_SPOKES
from .harp import TWO_PI

__all__ = ["SyntheticTagged", "synthetic_tagged_ring"]


# ----------------------------------------------------------------------------------------------
# a small analytic SPAMM sequence with exact ground truth (tests, benchmarks, docs)
# ----------------------------------------------------------------------------------------------
@dataclass
class SyntheticTagged:
    """Output of :func:`synthetic_tagged_ring`."""

    images: np.ndarray  # (T, H, W)
    landmarks: np.ndarray  # (T, 2, 168) ground truth
    ecc_rings: np.ndarray  # (T, 7) analytic Green E_cc per ring
    err: np.ndarray  # (T,) analytic Green E_rr (Ferdian's chord definition)
    myo_mask: np.ndarray  # (H, W) frame-0 myocardium mask
    tag_spacing_px: float


def synthetic_tagged_ring(
    *,
    size: int = 96,
    n_frames: int = 20,
    center: tuple[float, float] | None = None,
    r_endo: float = 14.0,
    r_epi: float = 22.0,
    endo_scale_es: float = 0.7,
    twist_deg: float = 8.0,
    es_frame: int = 7,
    tag_spacing_px: float = 5.0,
    tag_angle_deg: float = 45.0,
    frame_ms: float = 40.0,
    t1_ms: float = 850.0,
    t1_blood_ms: float = 150.0,
    noise: float = 0.03,
    rng: np.random.Generator | int | None = None,
) -> SyntheticTagged:
    """An analytic grid-tagged short-axis ring with known motion (a test fixture, not the phantom).

    Geometry and motion (after PyMRStrain's analytical LV, github.com/hmella/pymrstrain): material polar coordinates
    ``(R, Theta)`` about ``center`` move to ``(rho(R, t), Theta + psi(R, t))`` with
    ``rho = R + g(t) (rho_ES(R) - R)`` and ``psi = g(t) psi_ES(R)``; at ES the endocardium is at
    ``endo_scale_es * r_endo``, the wall is incompressible (``rho_ES^2 = R^2 - r_endo^2 + rho_en^2``),
    the blood pool scales uniformly, displacement outside the epicardium decays over 6 pixels, and
    the twist falls linearly from ``twist_deg`` at the endocardium to 0 at the epicardium. ``g`` rises
    as ``sin^2`` to 1 at ``es_frame`` and relaxes back as a cosine by the last frame.

    Image (SPAMM, Axel & Dougherty 1989): anatomy ``a(x)`` (myocardium 1, blood 1.3, static background 0.6) times a 1-1
    SPAMM grid ``f(X) = prod_i (1 - cos(k_i . X)) / 2`` evaluated at the material position (two
    directions ``tag_angle_deg`` and ``tag_angle_deg + 90``), with T1 fading
    ``f e^{-t/T1} + 1 - e^{-t/T1}`` (blood with the short ``t1_blood_ms``), plus Gaussian noise of
    standard deviation ``noise``.

    Ground-truth strain: ring ``k`` keeps its shape, so its Green E_cc is exactly
    ``((rho/R)^2 - 1)/2``; E_rr is that of the endo→epi chord, whose length follows from the law of
    cosines with the twist difference.
    """
    gen = np.random.default_rng(rng)
    c = (size / 2.0, size / 2.0) if center is None else center
    t_idx = np.arange(n_frames, dtype=float)
    g = np.where(
        t_idx <= es_frame,
        np.sin(0.5 * np.pi * t_idx / max(es_frame, 1)) ** 2,
        0.5 * (1 + np.cos(np.pi * (t_idx - es_frame) / max(n_frames - 1 - es_frame, 1))),
    )
    rho_en = endo_scale_es * r_endo
    decay = 6.0
    psi_en = math.radians(twist_deg)

    def rho_es(rr: np.ndarray) -> np.ndarray:
        wall = np.sqrt(np.maximum(rr**2 - r_endo**2 + rho_en**2, 0.0))
        rho_ep = math.sqrt(r_epi**2 - r_endo**2 + rho_en**2)
        out = np.where(rr < r_endo, rr * rho_en / r_endo, wall)
        return np.where(rr > r_epi, rr + (rho_ep - r_epi) * np.exp(-(rr - r_epi) / decay), out)

    def psi_es(rr: np.ndarray) -> np.ndarray:
        wgt = np.clip((r_epi - rr) / (r_epi - r_endo), 0.0, 1.0)
        return psi_en * wgt

    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    dx, dy = xx - c[0], yy - c[1]
    rcur = np.hypot(dx, dy)
    thcur = np.arctan2(dy, dx)
    r_tab = np.linspace(0.0, float(rcur.max()) + 20.0, 4000)
    ang = math.radians(tag_angle_deg)
    kmag = TWO_PI / tag_spacing_px
    k1 = kmag * np.array([math.cos(ang), math.sin(ang)])
    k2 = kmag * np.array([-math.sin(ang), math.cos(ang)])
    bg_tex = ndimage.gaussian_filter(gen.standard_normal((size, size)), 4.0)
    bg_tex = 0.6 + 0.15 * bg_tex / (np.abs(bg_tex).max() + 1e-12)
    images = np.empty((n_frames, size, size))
    s = np.arange(N_SPOKES)[:, None]
    kk = np.arange(N_RINGS)[None, :]
    th_l = TWO_PI * s / N_SPOKES + 0 * kk
    r_l = (r_endo + kk / (N_RINGS - 1) * (r_epi - r_endo)) + 0 * s
    lms = np.empty((n_frames, 2, N_LANDMARKS))
    ecc = np.empty((n_frames, N_RINGS))
    err = np.empty(n_frames)
    for t in range(n_frames):
        rho_tab = r_tab + g[t] * (rho_es(r_tab) - r_tab)
        rmat = np.interp(rcur, rho_tab, r_tab)  # inverse radial map
        thmat = thcur - g[t] * psi_es(rmat)
        xm = c[0] + rmat * np.cos(thmat)
        ym = c[1] + rmat * np.sin(thmat)
        f = 0.25 * (1 - np.cos(k1[0] * xm + k1[1] * ym)) * (1 - np.cos(k2[0] * xm + k2[1] * ym))
        # soft-edged anatomy in material coordinates (edge width ~0.5 px)
        in_myo = 1 / (1 + np.exp(-(rmat - r_endo) / 0.3)) * 1 / (1 + np.exp((rmat - r_epi) / 0.3))
        in_blood = 1 / (1 + np.exp((rmat - r_endo) / 0.3))
        in_bg = 1 - in_myo - in_blood
        tm = t * frame_ms + 20.0
        e_m = math.exp(-tm / t1_ms)
        e_b = math.exp(-tm / t1_blood_ms)
        img = (
            in_myo * 1.0 * (f * e_m + 1 - e_m)
            + in_blood * 1.3 * (f * e_b + 1 - e_b)
            + in_bg * bg_tex * (f * e_m + 1 - e_m)
        )
        images[t] = img + noise * gen.standard_normal(img.shape)
        rho_l = r_l + g[t] * (rho_es(r_l) - r_l)
        th_t = th_l + g[t] * psi_es(r_l)
        lms[t, 0] = (c[0] + rho_l * np.cos(th_t)).reshape(-1)
        lms[t, 1] = (c[1] + rho_l * np.sin(th_t)).reshape(-1)
        ecc[t] = 0.5 * ((rho_l[0] / r_l[0]) ** 2 - 1)
        ren, rep = rho_l[0, 0], rho_l[0, -1]
        dpsi = g[t] * (psi_es(np.array(r_epi)) - psi_es(np.array(r_endo)))
        l2 = ren**2 + rep**2 - 2 * ren * rep * math.cos(float(dpsi))
        err[t] = 0.5 * (l2 / (r_epi - r_endo) ** 2 - 1)
    mask0 = (rcur >= r_endo) & (rcur <= r_epi)
    return SyntheticTagged(
        images=images, landmarks=lms, ecc_rings=ecc, err=err, myo_mask=mask0, tag_spacing_px=tag_spacing_px
    )
