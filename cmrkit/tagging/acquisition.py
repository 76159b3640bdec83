"""Phantom tagging with the variation of real acquisitions: training data and stress tests for tag trackers.

The kit's phantom (:mod:`cmrkit.phantom`) renders SPAMM tagging whose tags fade with T1 only, with a
mild coil shading, its own noise level and UK Biobank-like geometry. Real tagged slices differ in ways
that break trackers tuned on it (see ``benchmarks/README.md``): on a UK Biobank slice in Ferdian's
format the kit's :func:`cmrkit.metrics.realism.tag_period_and_contrast` falls from ED to ES to 0.12 of its ED
value against 0.22 on the phantom. This module renders phantom subjects again, noise-free and in two
parts (the untagged anatomy ``U_t`` and the tag modulation ``D_t = I_t - U_t``, both from
:func:`cmrkit.phantom.render.render_tagging`, the second with the tagging pulses switched off), and
recombines them under an :class:`Acquisition`:

``I_t = PSF * [ h(U_t) + lambda^t D_t h(U_t) / U_t ]`` (temporally blurred), scaled, Rician noise,
zero-padding, missing trailing frames, where

* ``lambda`` (``rf_fade``) is the extra tag fading per frame of a segmented FLASH readout: every
  imaging RF pulse of flip ``alpha`` multiplies the tagged part of the longitudinal magnetisation by
  ``cos(alpha)``, on top of T1 recovery (Fischer, McKinnon, Maier & Boesiger, *Magn Reson Med*
  30:191-200, 1993, who introduced CSPAMM against exactly this fading). UK Biobank tagging uses a
  12 degree flip with several lines per segment (thesis §4.3.1), hence strong fading by ES;
* ``h`` is a random monotone intensity map (MONAI ``RandHistogramShift`` control points): other
  tissue contrasts (bright fat and blood, darker myocardium) than the phantom's fixed T2* weighting,
  the tag modulation staying proportional to the local signal;
* the surface-coil sensitivity depth (``coil_depth_mm``, the phantom's own coil model) sets how much
  brighter the chest wall is than the heart;
* a Gaussian point spread (``psf_px``) and a 3-frame temporal blur (``temporal_blur``, the heart
  moving during the ~40 ms acquisition window of each frame) blur the tag lines, most at the fast
  phases;
* ``snr`` is the myocardial SNR of frame 0 (Rician noise), ``matrix``/``fov_fraction`` the square
  zero-padded frame and the acquired part of it (UK Biobank: FOV 350 x 241 mm, 1.4 mm pixels,
  zero-padded to 256 x 256 by Ferdian et al. 2020), ``missing_frames`` trailing frames set to zero
  (Ferdian's files zero-fill short sequences);
* tag spacing and angle, pixel size: rendered by the phantom itself (Geometry / scene parameters).

Static tissue (chest wall, liver, spine) keeps its tags as in real images; blood loses them (phantom
wash-out). Ground truth is the phantom's: the 24x7 landmarks (Ferdian layout) of every frame,
computed exactly as the phantom's ``ground_truth.h5`` (checked in the tests).

Two sets of ranges: :data:`TRAIN_RANGES` (what a learned tracker may see in training) and
:data:`STRESS_RANGES` (stronger fading, lower SNR, other tag spacings and pixel sizes, stronger
shading and blur; used only to test). :func:`tag_contrast_ratio` measures the fading exactly as the
issue measured the real slice, so a set can be checked against the real value.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
from scipy import ndimage

from ..strain import N_LANDMARKS, N_RINGS, N_SPOKES, green_strain_from_landmarks

__all__ = [
    "Acquisition",
    "AcquisitionRanges",
    "TRAIN_RANGES",
    "STRESS_RANGES",
    "TaggedSlice",
    "sample_acquisition",
    "phantom_tagged_slices",
    "degrade",
    "wall_mask",
    "tag_contrast_ratio",
]


@dataclass(frozen=True)
class Acquisition:
    """One tagged acquisition's settings (see the module docstring for each effect).

    Attributes
    ----------
    pixel_mm, tag_spacing_mm
        In-plane pixel size and tag period (rendered by the phantom).
    tag_angle_deg
        Angle of the first tag direction (degrees); ``None`` keeps the phantom subject's random angle.
    rf_fade
        Extra per-frame factor on the tag modulation (1 = T1 fading only, as the phantom).
    snr
        Myocardial SNR of frame 0 (mean myocardial signal / Rician sigma).
    psf_px
        Gaussian point-spread sigma in pixels (added to the phantom's 0.5 px).
    temporal_blur
        Weight of each neighbouring frame in a 3-frame temporal blur (0 = none).
    coil_depth_mm
        Surface-coil sensitivity depth of the phantom's coil model; ``None`` keeps the subject's draw.
    contrast_points
        Control points of the random monotone intensity map (0 = the phantom's contrast).
    matrix
        Square frame size in pixels (the phantom renders this many pixels; zero padding outside
        ``fov_fraction``).
    fov_fraction
        Fraction of the rows or columns (random axis) that were acquired; the rest is zero.
    missing_frames
        Trailing frames set to zero (missing).
    gain
        Intensity scale of the result (before rounding to integers, as scanner magnitude data).
    """

    pixel_mm: float = 1.4
    tag_spacing_mm: float = 6.0
    tag_angle_deg: float | None = None
    rf_fade: float = 1.0
    snr: float = 18.0
    psf_px: float = 0.0
    temporal_blur: float = 0.0
    coil_depth_mm: float | None = None
    contrast_points: int = 0
    matrix: int = 0
    fov_fraction: float = 1.0
    missing_frames: int = 0
    gain: float = 500.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AcquisitionRanges:
    """Uniform ranges ``(lo, hi)`` from which :func:`sample_acquisition` draws an :class:`Acquisition`
    (``snr`` and ``coil_depth_mm`` log-uniformly; integers inclusive; ``tag_angle_deg`` ``None`` keeps
    the phantom's random angle)."""

    pixel_mm: tuple[float, float]
    tag_spacing_mm: tuple[float, float]
    rf_fade: tuple[float, float]
    snr: tuple[float, float]
    psf_px: tuple[float, float]
    temporal_blur: tuple[float, float]
    coil_depth_mm: tuple[float, float]
    contrast_points: tuple[int, int]
    fov_fraction: tuple[float, float]
    missing_frames: tuple[int, int]
    matrix: int = 256
    tag_angle_deg: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: what a learned tracker may be trained on: around the UK Biobank acquisition (1.37-1.4 mm pixels,
#: ~6 mm tags, FOV 350 x 241 mm zero-padded to 256^2) with tag fading from the phantom's (T1 only) to
#: beyond the real slice's (ES/ED tag contrast 0.12), SNR 8-30
TRAIN_RANGES = AcquisitionRanges(
    pixel_mm=(1.25, 1.6),
    tag_spacing_mm=(5.5, 7.0),
    rf_fade=(0.86, 1.0),
    snr=(8.0, 30.0),
    psf_px=(0.0, 0.6),
    temporal_blur=(0.0, 0.2),
    coil_depth_mm=(80.0, 250.0),
    contrast_points=(0, 6),
    fov_fraction=(0.6, 1.0),
    missing_frames=(0, 2),
)

#: never used for training: stronger fading, lower SNR, tag spacings and pixel sizes outside the
#: training ranges, stronger shading and blur
STRESS_RANGES = AcquisitionRanges(
    pixel_mm=(1.15, 1.8),
    tag_spacing_mm=(5.0, 8.0),
    rf_fade=(0.80, 0.88),
    snr=(5.0, 10.0),
    psf_px=(0.4, 0.9),
    temporal_blur=(0.15, 0.3),
    coil_depth_mm=(50.0, 90.0),
    contrast_points=(4, 8),
    fov_fraction=(0.55, 0.75),
    missing_frames=(0, 4),
)


def sample_acquisition(ranges: AcquisitionRanges, rng: np.random.Generator | int | None = None) -> Acquisition:
    """Draw one :class:`Acquisition` from ``ranges``."""
    gen = np.random.default_rng(rng)

    def uni(lo_hi: tuple[float, float]) -> float:
        return float(gen.uniform(*lo_hi))

    def log_uni(lo_hi: tuple[float, float]) -> float:
        return float(math.exp(gen.uniform(math.log(lo_hi[0]), math.log(lo_hi[1]))))

    def integer(lo_hi: tuple[int, int]) -> int:
        return int(gen.integers(int(lo_hi[0]), int(lo_hi[1]) + 1))

    return Acquisition(
        pixel_mm=uni(ranges.pixel_mm),
        tag_spacing_mm=uni(ranges.tag_spacing_mm),
        tag_angle_deg=None if ranges.tag_angle_deg is None else uni(ranges.tag_angle_deg),
        rf_fade=uni(ranges.rf_fade),
        snr=log_uni(ranges.snr),
        psf_px=uni(ranges.psf_px),
        temporal_blur=uni(ranges.temporal_blur),
        coil_depth_mm=log_uni(ranges.coil_depth_mm),
        contrast_points=integer(ranges.contrast_points),
        matrix=int(ranges.matrix),
        fov_fraction=uni(ranges.fov_fraction),
        missing_frames=integer(ranges.missing_frames),
        gain=float(gen.uniform(200.0, 1500.0)),
    )


@dataclass
class TaggedSlice:
    """One tagged short-axis slice with ground truth.

    Attributes
    ----------
    images
        ``(T, H, W)`` float32 frames (row = y, column = x), missing frames all zero.
    landmarks
        ``(T, 2, 168)`` true landmarks in pixels (row 0 = x, row 1 = y; NaN in missing frames).
    px_mm
        Pixel size (mm).
    tag_spacing_px
        Tag period in pixels.
    es_frame
        Frame of peak circumferential shortening of the true landmarks.
    subject, region
        Phantom subject id and ``basal``/``mid``/``apical``.
    acquisition
        The :class:`Acquisition` it was rendered with.
    """

    images: np.ndarray
    landmarks: np.ndarray
    px_mm: float
    tag_spacing_px: float
    es_frame: int
    subject: str
    region: str
    acquisition: Acquisition
    extra: dict[str, Any] = field(default_factory=dict)


def _truth_points(
    scene: Any, theta0: float, extra_points: int = 0, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """True pixel positions ``(i, j)`` of the tagging slices' material points in every frame: the 168
    landmarks ``(3, T, 2, 168)`` (as the phantom's ground truth) and ``extra_points`` random material
    points of the wall and a band of 15 % of its thickness on either side ``(3, T, 2, extra_points)``."""
    from ..phantom.tagging import landmark_material_grid

    heart, grid = scene.heart, scene.tag_grid
    states = [heart.state(float(t)) for t in scene.tag_times_ms]
    n_s, n_t = len(scene.tag_levels), len(states)
    lms = np.empty((n_s, n_t, 2, N_LANDMARKS))
    extra = np.empty((n_s, n_t, 2, int(extra_points)))
    gen = np.random.default_rng(rng)
    for s, z in enumerate(scene.tag_levels):
        r_en, r_ep = heart.lv.shape.radii(np.asarray(z))
        R, Th = landmark_material_grid(float(r_en), float(r_ep), theta0)
        if extra_points:
            wall = float(r_ep - r_en)
            R = np.r_[R, gen.uniform(float(r_en) - 0.15 * wall, float(r_ep) + 0.15 * wall, int(extra_points))]
            Th = np.r_[Th, gen.uniform(-np.pi, np.pi, int(extra_points))]
        X, Y = R * np.cos(Th), R * np.sin(Th)
        for t, st in enumerate(states):
            x, y, _ = heart.forward_apparent(X, Y, float(z), st)
            p = np.stack(grid.to_pixel(x, y))
            lms[s, t], extra[s, t] = p[:, :N_LANDMARKS], p[:, N_LANDMARKS:]
    return lms, extra


def wall_mask(landmarks0: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean ``(H, W)`` mask of the wall between the endocardial and epicardial landmark rings."""
    from skimage.draw import polygon2mask

    g = np.asarray(landmarks0, float).reshape(2, N_SPOKES, N_RINGS)
    outer = polygon2mask(shape, np.stack([g[1, :, -1], g[0, :, -1]], 1))
    inner = polygon2mask(shape, np.stack([g[1, :, 0], g[0, :, 0]], 1))
    return outer & ~inner


def _monotone_map(u: np.ndarray, n_points: int, rng: np.random.Generator) -> np.ndarray:
    """MONAI ``RandHistogramShift`` (random monotone piecewise-linear intensity map) of ``u``."""
    from monai.transforms import RandHistogramShift

    tr = RandHistogramShift(num_control_points=max(int(n_points), 3), prob=1.0)
    tr.set_random_state(seed=int(rng.integers(2**31 - 1)))
    out = tr(u[None].astype(np.float32))
    return np.asarray(out)[0].astype(np.float64)


def degrade(
    anatomy: np.ndarray,
    modulation: np.ndarray,
    acq: Acquisition,
    myo_mask: np.ndarray,
    rng: np.random.Generator | int | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Recombine noise-free anatomy ``U (T, H, W)`` and tag modulation ``D (T, H, W)`` under ``acq``.

    Steps (module docstring): intensity map ``h`` and fading ``rf_fade^t``, temporal blur, point
    spread, scaling to ``gain`` (mean frame-0 myocardium), Rician noise at ``snr``, the acquired
    field of view (zero outside), missing trailing frames, rounding. The frame size is kept (the
    phantom renders ``acq.matrix`` pixels).

    Returns the images ``(T, H, W)`` float32 and a dict with the noise ``sigma``, the acquired box
    ``(y0, y1, x0, x1)`` and the ``missing`` frame flags.
    """
    gen = np.random.default_rng(rng)
    U = np.asarray(anatomy, np.float64)
    D = np.asarray(modulation, np.float64)
    if U.shape != D.shape or U.ndim != 3:
        raise ValueError(f"anatomy and modulation must both be (T, H, W), got {U.shape} and {D.shape}")
    t_n, h, w = U.shape
    if myo_mask.shape != (h, w) or not myo_mask.any():
        raise ValueError("myo_mask must be a non-empty (H, W) mask")
    if acq.contrast_points > 0:
        scale = float(U.max()) or 1.0
        Um = _monotone_map(U / scale, acq.contrast_points, gen) * scale
        ratio = np.where(U > 1e-3 * scale, Um / np.maximum(U, 1e-12), 1.0)
    else:
        Um, ratio = U, np.ones_like(U)
    fade = float(acq.rf_fade) ** np.arange(t_n, dtype=float)
    img = Um + fade[:, None, None] * D * ratio
    if acq.temporal_blur > 0:
        wb = float(acq.temporal_blur)
        prev = np.concatenate([img[:1], img[:-1]])
        nxt = np.concatenate([img[1:], img[-1:]])
        img = (1 - 2 * wb) * img + wb * (prev + nxt)
    if acq.psf_px > 0:
        img = ndimage.gaussian_filter(img, sigma=(0, acq.psf_px, acq.psf_px), mode="nearest")
    s_myo = float(img[0][myo_mask].mean())
    img = img * (float(acq.gain) / max(s_myo, 1e-12))
    sigma = float(acq.gain) / float(acq.snr)
    re = img + sigma * gen.standard_normal(img.shape)
    im = sigma * gen.standard_normal(img.shape)
    img = np.sqrt(re * re + im * im)
    # acquired field of view: a band of rows or of columns, placed at random, zero elsewhere
    y0, y1, x0, x1 = 0, h, 0, w
    if acq.fov_fraction < 1.0:
        if gen.random() < 0.5:
            n_keep = max(16, int(round(acq.fov_fraction * h)))
            y0 = int(gen.integers(0, h - n_keep + 1))
            y1 = y0 + n_keep
        else:
            n_keep = max(16, int(round(acq.fov_fraction * w)))
            x0 = int(gen.integers(0, w - n_keep + 1))
            x1 = x0 + n_keep
    out = np.zeros_like(img)
    out[:, y0:y1, x0:x1] = img[:, y0:y1, x0:x1]
    missing = np.zeros(t_n, bool)
    if acq.missing_frames > 0:
        missing[t_n - int(acq.missing_frames) :] = True
        out[missing] = 0.0
    return np.round(out).astype(np.float32), {"sigma": sigma, "box": (y0, y1, x0, x1), "missing": missing}


def _render_parts(
    params: Any, acq: Acquisition, *, tag_frames: int, seed: int, extra_points: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Noise-free tagged and untagged renders ``(3, T, H, W)`` (row = y), true landmarks ``(3, T, 2, 168)``
    and (``info["points"]``) the trajectories of ``extra_points`` random wall points per slice."""
    from ..phantom import Geometry, build_scene
    from ..phantom.render import render_tagging

    geo = Geometry(
        matrix=128,
        pixel_mm=1.8,
        slices=10,
        cine_frames=tag_frames,
        tag_frames=tag_frames,
        tag_spacing_mm=float(acq.tag_spacing_mm),
        tag_pixel_mm=float(acq.pixel_mm),
        tag_matrix=int(acq.matrix),
        noise=False,
    )
    scene, _, info = build_scene(params, geo)
    tag = dict(scene.tag)
    if acq.tag_angle_deg is not None:
        tag["angle"] = math.radians(float(acq.tag_angle_deg))
    contrast = dict(scene.contrast)
    if acq.coil_depth_mm is not None:
        contrast["coil_depth_mm"] = float(acq.coil_depth_mm)
    scene = replace(scene, tag=tag, contrast=contrast)
    tagged = render_tagging(scene, geo, np.random.default_rng(seed))
    untagged = render_tagging(replace(scene, tag=dict(tag, flip_total_deg=0.0)), geo, np.random.default_rng(seed))
    lm, pts = _truth_points(scene, float(info["landmark_theta0"]), extra_points, np.random.default_rng(seed))
    # (3, n_i, n_j, T) -> (3, T, rows = j, cols = i); landmarks (i, j) = (x, y)
    return (
        np.transpose(tagged, (0, 3, 2, 1)),
        np.transpose(untagged, (0, 3, 2, 1)),
        lm,
        {"tag_angle_deg": math.degrees(float(tag["angle"])), "times_ms": scene.tag_times_ms.copy(), "points": pts},
    )


def phantom_tagged_slices(
    index: int,
    *,
    seed: int = 0,
    acquisition: Acquisition | AcquisitionRanges | None = None,
    pathology_fraction: float = 0.2,
    tag_frames: int = 20,
    extra_points: int = 0,
    rng: np.random.Generator | int | None = None,
) -> list[TaggedSlice]:
    """The three tagging slices of phantom subject ``index`` (cohort ``seed``) under one acquisition.

    Parameters
    ----------
    index, seed
        The phantom subject (:func:`cmrkit.phantom.sample_subject_params`); use a seed no evaluation
        cohort uses for training data.
    acquisition
        Fixed settings, or ranges to draw them from (one draw for the subject's three slices);
        default :class:`Acquisition` () (the phantom's look at a square frame of its own size).
    pathology_fraction
        Probability of regional dysfunction (as the cohort's ``pathology_fraction``).
    extra_points
        Also give the trajectories of this many random material points of each slice's wall (and a
        band of 15 % of the wall thickness either side) in ``extra["points"]`` ``(T, 2, M)`` (pixels,
        NaN in missing frames): training targets beyond the 168 landmarks.
    rng
        Draws of the acquisition, the intensity map and the noise (default: from ``seed, index``).
    """
    from ..phantom import sample_subject_params

    gen = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 7]) if rng is None else rng)
    params = sample_subject_params(int(index), seed=int(seed), pathology_fraction=float(pathology_fraction))
    if acquisition is None:
        acq = Acquisition()
    elif isinstance(acquisition, AcquisitionRanges):
        acq = sample_acquisition(acquisition, gen)
    else:
        acq = acquisition
    tagged, untagged, lms, info = _render_parts(
        params, acq, tag_frames=tag_frames, seed=int(gen.integers(2**31)), extra_points=extra_points
    )
    points = info.pop("points")
    out = []
    for s, region in enumerate(("basal", "mid", "apical")):
        lm = lms[s]
        myo = wall_mask(lm[0], tagged.shape[2:])
        imgs, dinfo = degrade(untagged[s], tagged[s] - untagged[s], acq, myo, gen)
        lm = lm.copy()
        lm[dinfo["missing"]] = np.nan
        pts = points[s].copy()
        pts[dinfo["missing"]] = np.nan
        ecc = np.asarray(green_strain_from_landmarks(lm).Ecc)
        out.append(
            TaggedSlice(
                images=imgs,
                landmarks=lm,
                px_mm=float(acq.pixel_mm),
                tag_spacing_px=float(acq.tag_spacing_mm) / float(acq.pixel_mm),
                es_frame=int(np.nanargmin(ecc)),
                subject=params.subject_id,
                region=region,
                acquisition=acq,
                extra={**dinfo, **info, "points": pts},
            )
        )
    return out


def tag_contrast_ratio(ts: TaggedSlice) -> float:
    """ES / ED tag modulation of the frame-0 myocardium, :func:`cmrkit.metrics.realism.tag_period_and_contrast`
    (the measurement the issue made on a real UK Biobank slice: 0.12; the phantom's own: ~0.22)."""
    from ..metrics.realism import tag_period_and_contrast

    m = wall_mask(ts.landmarks[0], ts.images.shape[1:])
    meas = tag_period_and_contrast(ts.images, m, ts.px_mm)
    c = np.asarray(meas.contrast, float)
    return float(c[ts.es_frame] / c[0])


def _check_fields() -> None:  # pragma: no cover - import-time consistency guard
    names = {f.name for f in fields(Acquisition)}
    for f in fields(AcquisitionRanges):
        if f.name not in names:
            raise AssertionError(f"AcquisitionRanges.{f.name} has no Acquisition field")


_check_fields()
