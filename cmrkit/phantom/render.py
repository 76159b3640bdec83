"""Vectorised rendering of cine (bSSFP) and tagging (SPAMM + FLASH) images on the pixel grid.

Each frame is drawn from the inside out (:class:`cmrkit.phantom.anatomy.HeartModel`): the signal is
``S_0 + sum_k (S_k - S_{k-1}) ramp(r - b_k)`` with ``ramp(d) = clip(1/2 + d / pixel, 0, 1)``, the
area fraction of a pixel beyond a straight edge (in-plane partial volume without supersampling),
averaged over ``slice_samples`` sub-planes across the slice thickness (a rectangular slice
profile; through-plane partial volume). The static torso is supersampled once per slice. Only a
box around the heart is recomputed per frame. Tagging uses the same layers with every tissue's
signal modulated by the SPAMM pattern at its *material* coordinates (analytic inverse map inside
the LV; see :meth:`HeartModel.material_xy`). Coil shading multiplies, Rician noise is added last.
Labels come from the centre sub-plane at pixel centres with hard boundaries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from .anatomy import HeartModel, Layers
from .contrast import TISSUE_INDEX, TISSUES, add_rician_noise, cine_signals, smooth_field, tag_relaxation
from .geometry import Geometry, PatientFrame, PlaneGrid
from .tagging import spamm_modulation
from .torso import Torso

__all__ = [
    "Scene",
    "render_cine",
    "render_labels",
    "render_tagging",
    "slice_offsets",
    "heart_box",
    "myocardial_tag_depth",
]


@dataclass
class Scene:
    """Everything needed to render one subject (built by :func:`cmrkit.phantom.subject.generate_subject`)."""

    heart: HeartModel
    torso: Torso
    frame: PatientFrame
    cine_grid: PlaneGrid
    tag_grid: PlaneGrid
    z_slices: np.ndarray
    tag_slices: tuple[int, int, int]
    cine_times_ms: np.ndarray
    tag_times_ms: np.ndarray
    contrast: dict[str, Any] = field(default_factory=dict)
    tag: dict[str, Any] = field(default_factory=dict)

    @property
    def tag_levels(self) -> np.ndarray:
        return np.asarray([self.z_slices[k] for k in self.tag_slices], float)


def slice_offsets(n: int, thickness: float) -> np.ndarray:
    """Sub-plane offsets (mm) sampling a rectangular slice profile by the midpoint rule."""
    return thickness * ((np.arange(n) + 0.5) / n - 0.5)


def _ramp(d: np.ndarray, edge: float) -> np.ndarray:
    return np.clip(0.5 + d * (1.0 / edge), 0.0, 1.0)


def heart_box(
    heart: HeartModel, grid: PlaneGrid, z_planes: np.ndarray, times_ms: np.ndarray, margin_px: int = 3
) -> tuple[int, int, int, int]:
    """Pixel index box ``(i0, i1, j0, j1)`` containing the heart (all layers) at the given times."""
    th = np.linspace(-np.pi, np.pi, 360, endpoint=False)
    ang = heart.angular_terms(th)
    r0 = np.zeros_like(th)
    rmax = np.zeros_like(th)
    for t in times_ms:
        lay = heart.layers(r0, th, ang, z_planes, heart.state(float(t)), grid.pixel)
        rmax = np.maximum(rmax, np.broadcast_to(lay.b[5], (z_planes.shape[0], th.size)).max(axis=0))
    rmax = rmax + margin_px * grid.pixel
    i, j = grid.to_pixel(rmax * np.cos(th), rmax * np.sin(th))
    i0 = int(np.clip(np.floor(i.min()), 0, grid.n))
    i1 = int(np.clip(np.ceil(i.max()) + 1, 0, grid.n))
    j0 = int(np.clip(np.floor(j.min()), 0, grid.n))
    j1 = int(np.clip(np.ceil(j.max()) + 1, 0, grid.n))
    if i1 <= i0 or j1 <= j0:
        raise ValueError("the heart lies outside the image grid; increase the matrix or pixel size")
    return i0, i1, j0, j1


def _box_coords(grid: PlaneGrid, box: tuple[int, int, int, int]) -> tuple[np.ndarray, ...]:
    x, y = grid.xy()
    i0, i1, j0, j1 = box
    xb = x[i0:i1, j0:j1].astype(np.float32).ravel()
    yb = y[i0:i1, j0:j1].astype(np.float32).ravel()
    return xb, yb, np.hypot(xb, yb), np.arctan2(yb, xb)


def _composite(S: list[np.ndarray], lay: Layers, r: np.ndarray, edge: float) -> np.ndarray:
    """``S[0] + sum_k (S[k] - S[k-1]) ramp(r - b_k)`` over the six boundaries."""
    out = S[0] + (S[1] - S[0]) * _ramp(r - lay.b[0], edge)
    for k in range(1, 6):
        out = out + (S[k + 1] - S[k]) * _ramp(r - lay.b[k], edge)
    return out


def _static_background(torso: Torso, grid: PlaneGrid, levels: np.ndarray, sub: int) -> np.ndarray:
    """Tissue fractions ``(n_slices, n_classes, n, n)`` of the static torso."""
    xs, ys = grid.xy(sub)
    xs, ys = xs.astype(np.float32), ys.astype(np.float32)
    return np.stack([torso.fractions(xs, ys, float(z), sub) for z in levels])


def render_labels(scene: Scene, times_ms: np.ndarray, *, levels: np.ndarray | None = None) -> np.ndarray:
    """Label volumes ``(n, n, n_slices, len(times))`` (uint8) on the cine grid, without images."""
    heart, grid = scene.heart, scene.cine_grid
    z = np.asarray(scene.z_slices if levels is None else levels, np.float32)[:, None]
    x, y = grid.xy()
    x, y = x.astype(np.float32).ravel(), y.astype(np.float32).ravel()
    r, th = np.hypot(x, y), np.arctan2(y, x)
    ang = heart.angular_terms(th)
    out = np.zeros((grid.n, grid.n, z.shape[0], len(times_ms)), np.uint8)
    for t_idx, t in enumerate(times_ms):
        lay = heart.layers(r, th, ang, z, heart.state(float(t)), grid.pixel)
        lab = heart.labels(r, lay)
        out[:, :, :, t_idx] = lab.reshape(z.shape[0], grid.n, grid.n).transpose(1, 2, 0)
    return out


def render_cine(scene: Scene, geometry: Geometry, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Render the 4-D cine ``(n, n, slices, frames)`` float32 and labels (uint8).

    Intensities: tissue bSSFP signals (blood = 1) x smooth texture x coil shading x ``gain``, then
    Rician noise with ``sigma = gain S_myo / snr_myo`` (myocardial SNR ``snr_myo`` where the coil
    shading is 1, at the heart centre; parameters drawn before this model carry ``snr_blood`` and get
    ``sigma = gain / snr_blood``); rounded to integers like scanner magnitude data.
    """
    heart, grid, torso = scene.heart, scene.cine_grid, scene.torso
    c = scene.contrast
    n, S = grid.n, len(scene.z_slices)
    ns = geometry.slice_samples
    edge = grid.pixel
    sig = cine_signals(
        {"blood": c.get("blood_scale", 1.0), "myocardium": c.get("myo_scale", 1.0), "fat": c.get("fat_scale", 1.0)}
    )
    sig_vec = np.array([sig[k] for k in TISSUES], np.float32)

    fr = _static_background(torso, grid, scene.z_slices, geometry.supersample)
    bg = np.einsum("sc,scij->sij", np.broadcast_to(sig_vec, (S, sig_vec.size)), fr)
    tex = smooth_field((S, n, n), rng, correlation_px=max(2.0, 6.0 / grid.pixel), amplitude=c.get("texture", 0.05))
    bg = bg * (1.0 + tex)

    z = np.asarray(scene.z_slices, np.float32)
    z_planes = (z[:, None] + slice_offsets(ns, geometry.slice_thickness_mm)[None, :]).reshape(-1, 1).astype(np.float32)
    box = heart_box(heart, grid, z_planes, _box_times(heart))
    i0, i1, j0, j1 = box
    bi, bj = i1 - i0, j1 - j0
    xb, yb, r, th = _box_coords(grid, box)
    ang = heart.angular_terms(th)
    bg_box = np.repeat(bg[:, i0:i1, j0:j1].reshape(S, -1), ns, axis=0)
    centre_rows = np.arange(S) * ns + ns // 2

    S_bl, S_my, S_fat, S_per = (np.float32(sig[k]) for k in ("blood", "myocardium", "fat", "pericardium"))
    T = len(scene.cine_times_ms)
    img = np.repeat(bg.transpose(1, 2, 0)[..., None], T, axis=3).astype(np.float32)
    lab = np.zeros((n, n, S, T), np.uint8)
    for t_idx, t in enumerate(scene.cine_times_ms):
        st = heart.state(float(t))
        lay = heart.layers(r, th, ang, z_planes, st, edge)
        S0 = S_bl if lay.papillary is None else S_bl + (S_my - S_bl) * _ramp(lay.papillary, edge)
        I = _composite([S0, S_my, S_bl, S_my, S_fat, S_per, bg_box], lay, r, edge)
        I = I.reshape(S, ns, -1).mean(axis=1)
        img[i0:i1, j0:j1, :, t_idx] = I.reshape(S, bi, bj).transpose(1, 2, 0)
        lay_c = Layers(
            [np.broadcast_to(b, (z_planes.shape[0], r.size))[centre_rows] for b in lay.b],
            np.broadcast_to(lay.lv_present, (z_planes.shape[0], 1))[centre_rows],
            np.broadcast_to(lay.rv_present, (z_planes.shape[0], 1))[centre_rows],
        )
        lab[i0:i1, j0:j1, :, t_idx] = heart.labels(r, lay_c).reshape(S, bi, bj).transpose(1, 2, 0)

    x, y = grid.xy()
    hc = torso.heart_center
    shade = np.stack(
        [
            torso.coil_gain(
                x.astype(np.float32), y.astype(np.float32), np.float32(zk), c.get("coil_depth_mm", 150.0), hc
            )
            for zk in z
        ],
        axis=-1,
    )
    gain = float(c.get("gain", 700.0))
    img *= (gain * shade)[..., None]
    if geometry.noise:
        if "snr_myo" in c:
            sigma = gain * float(S_my) / float(c["snr_myo"])
        else:
            sigma = gain / float(c.get("snr_blood", 35.0))
        img = add_rician_noise(img, sigma, rng)
    return np.round(img).astype(np.float32), lab


def _box_times(heart: HeartModel) -> np.ndarray:
    cyc = heart.cycle
    return np.array([0.0, cyc.t_es_ms, cyc.t_es_ms + cyc.ivr_ms + cyc.rapid_ms])


def render_tagging(scene: Scene, geometry: Geometry, rng: np.random.Generator) -> np.ndarray:
    """Render the three tagging slices, array ``(3, n_t, n_t, tag_frames)`` float32.

    FLASH-like anatomical contrast (proton density, T2* at TE 3.9 ms) times the relaxing SPAMM
    modulation (:func:`cmrkit.phantom.contrast.tag_relaxation`); blood tags wash out; a Gaussian
    point-spread (sigma 0.5 px) stands in for the k-space window; shading and Rician noise.
    """
    heart, grid, torso = scene.heart, scene.tag_grid, scene.torso
    c, tg = scene.contrast, scene.tag
    n = grid.n
    ns = geometry.slice_samples
    edge = grid.pixel
    levels = scene.tag_levels
    names = list(TISSUES)
    kw = dict(
        spacing_mm=geometry.tag_spacing_mm,
        angle=float(tg["angle"]),
        offsets=tuple(tg["offsets"]),
        flip_total_deg=float(tg.get("flip_total_deg", 90.0)),
        order=int(tg.get("order", 2)),
    )

    fr = _static_background(torso, grid, levels, geometry.supersample)  # (3, C, n, n)
    tex = 1.0 + smooth_field(
        (3, n, n), rng, correlation_px=max(2.0, 6.0 / grid.pixel), amplitude=c.get("texture", 0.05)
    )
    xg, yg = grid.xy()
    f_static = spamm_modulation(xg.astype(np.float32), yg.astype(np.float32), **kw).astype(np.float32)

    z = levels.astype(np.float32)
    z_planes = (
        (z[:, None] + slice_offsets(ns, geometry.tag_slice_thickness_mm)[None, :]).reshape(-1, 1).astype(np.float32)
    )
    box = heart_box(heart, grid, z_planes, _box_times(heart))
    i0, i1, j0, j1 = box
    bi, bj = i1 - i0, j1 - j0
    xb, yb, r, th = _box_coords(grid, box)
    ang = heart.angular_terms(th)
    sat, tau_wash = float(tg.get("saturation", 0.98)), float(tg.get("tau_wash_ms", 90.0))
    blood_scale = float(c.get("tag_blood_scale", 1.0))

    T = len(scene.tag_times_ms)
    out = np.zeros((3, n, n, T), np.float32)
    for t_idx, t in enumerate(scene.tag_times_ms):
        rel = {nm: tag_relaxation(nm, float(t), t_idx, saturation=sat, tau_wash_ms=tau_wash) for nm in names}
        base = np.array([rel[nm][0] for nm in names], np.float32)
        depth = np.array([rel[nm][1] for nm in names], np.float32)
        base[TISSUE_INDEX["blood"]] *= blood_scale
        # static torso: sum_c frac_c base_c (1 + (f - 1) depth_c)
        A = np.einsum("c,scij->sij", base, fr)
        B = np.einsum("c,scij->sij", base * depth, fr)
        bg = (A + (f_static[None] - 1.0) * B) * tex
        st = heart.state(float(t))
        lay = heart.layers(r, th, ang, z_planes, st, edge)
        X, Y = heart.material_xy(xb, yb, r, th, z_planes, st)
        f = spamm_modulation(X, Y, **kw).astype(np.float32)

        def tissue(nm: str) -> np.ndarray:
            k = TISSUE_INDEX[nm]
            return base[k] * (1.0 + (f - 1.0) * depth[k])

        S_bl, S_my, S_fat, S_per = tissue("blood"), tissue("myocardium"), tissue("fat"), tissue("pericardium")
        S0 = S_bl if lay.papillary is None else S_bl + (S_my - S_bl) * _ramp(lay.papillary, edge)
        bg_box = np.repeat(bg[:, i0:i1, j0:j1].reshape(3, -1), ns, axis=0)
        I = _composite([S0, S_my, S_bl, S_my, S_fat, S_per, bg_box], lay, r, edge)
        I = I.reshape(3, ns, -1).mean(axis=1)
        frame_img = bg.copy()
        frame_img[:, i0:i1, j0:j1] = I.reshape(3, bi, bj)
        out[..., t_idx] = frame_img
    out = ndimage.gaussian_filter(out, sigma=(0, 0.5, 0.5, 0), mode="nearest")
    shade = np.stack(
        [
            torso.coil_gain(
                xg.astype(np.float32),
                yg.astype(np.float32),
                np.float32(zk),
                c.get("coil_depth_mm", 150.0),
                torso.heart_center,
            )
            for zk in z
        ]
    )
    gain = float(c.get("tag_gain", 600.0))
    out *= (gain * shade)[..., None]
    if geometry.noise:
        myo = TISSUES["myocardium"]
        sigma = gain * myo.pd * math.exp(-3.9 / myo.t2s) / float(c.get("tag_snr", 18.0))
        out = add_rician_noise(out, sigma, rng)
    return np.round(out).astype(np.float32)


def myocardial_tag_depth(scene: Scene, tagging: np.ndarray, slice_index: int = 1, *, erode_px: int = 1) -> np.ndarray:
    """Tag modulation depth of the myocardium in every frame of one tagging slice, fitted to the known pattern.

    Per frame, the intensities ``I`` of the (eroded) centre-plane myocardium are regressed on the
    SPAMM pattern at their material coordinates, ``I = a + b f(X)``; the depth is ``b / (a + b)``,
    which for the relaxation model of :func:`cmrkit.phantom.contrast.tag_relaxation` equals
    ``exp(-t / T1)`` (1 right after an ideal SPAMM block). Unlike the spectral peak of
    :func:`cmrkit.metrics.realism.tag_period_and_contrast`, it does not fall when deformation spreads the tag
    frequencies, so ``depth[t] / depth[0]`` against ``exp(-(t - t0) / T1)`` isolates what rendering
    (slice profile, point spread, partial volume) does to the tags.

    Parameters
    ----------
    scene : the subject's :class:`Scene`; tagging : ``(3, n, n, T)`` from :func:`render_tagging`.
    """
    tagging = np.asarray(tagging)
    if tagging.ndim != 4 or tagging.shape[0] != 3 or tagging.shape[-1] != len(scene.tag_times_ms):
        raise ValueError(f"tagging must be (3, n, n, {len(scene.tag_times_ms)}), got {tagging.shape}")
    heart, grid, tg = scene.heart, scene.tag_grid, scene.tag
    x, y = grid.xy()
    x, y = x.astype(np.float32).ravel(), y.astype(np.float32).ravel()
    r, th = np.hypot(x, y), np.arctan2(y, x)
    ang = heart.angular_terms(th)
    z = np.asarray([[scene.tag_levels[slice_index]]], np.float32)
    if "spacing_mm" not in tg:
        raise ValueError("scene.tag has no spacing_mm; build the scene with cmrkit.phantom.build_scene")
    out = np.full(len(scene.tag_times_ms), np.nan)
    for t_idx, t in enumerate(scene.tag_times_ms):
        st = heart.state(float(t))
        lay = heart.layers(r, th, ang, z, st, grid.pixel)
        m = (heart.labels(r, lay) == 2).reshape(grid.n, grid.n)
        if erode_px > 0:
            m = ndimage.binary_erosion(m, iterations=erode_px)
        if m.sum() < 10:
            continue
        X, Y = heart.material_xy(x, y, r, th, z, st)
        f = spamm_modulation(
            X,
            Y,
            spacing_mm=float(tg["spacing_mm"]),
            angle=float(tg["angle"]),
            offsets=tuple(tg["offsets"]),
            flip_total_deg=float(tg.get("flip_total_deg", 90.0)),
            order=int(tg.get("order", 2)),
        ).reshape(grid.n, grid.n)
        A = np.stack([np.ones(int(m.sum())), f[m]], axis=1)
        a, b = np.linalg.lstsq(A, tagging[slice_index, :, :, t_idx][m].astype(float), rcond=None)[0]
        out[t_idx] = b / (a + b) if (a + b) != 0 else np.nan
    return out
