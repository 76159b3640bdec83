"""How realistic is an image or a cohort? Contrast, noise, tagging and phenotype measurements.

The same estimators run on real data (M&Ms, UK Biobank layout) and on the phantom, so their numbers
can be compared side by side (``notebooks/00_background.ipynb``, table ``bg_realism``).

Image measurements (per 2-D plane; the first two axes of an array are the image axes, any further
axes -- slices, frames -- are looped over):

* **Blood/myocardium contrast** (:func:`tissue_contrast`): ratio of the mean intensity of the LV
  blood pool (label 1) to that of the LV myocardium (label 2), both masks eroded by ``erode_px``
  pixels to keep partial-volume pixels out; **CNR** = (blood - myocardium) / sigma.
* **Noise sigma** (:func:`noise_sigma`), the standard deviation of the Gaussian noise in each
  channel of the complex image before the magnitude is taken:

  - ``"air"``: from the background air (outside the body, inside the acquired field of view). In a
    magnitude image air is Rayleigh distributed with standard deviation ``sqrt(2 - pi/2) sigma =
    0.655 sigma``, hence ``sigma = SD_air / 0.655`` (Kaufman et al., *Radiology* 1989;173:265-267;
    NEMA MS 1). Multi-coil reconstructions and parallel imaging make air noise non-central chi
    and spatially varying, so this is an approximation there (Dietrich et al., *J Magn Reson
    Imaging* 2007;26:375-385).
  - ``"residual"``: from the image itself, when there is no air (e.g. a field of view filled by the
    body): the image is filtered with Immerkaer's kernel ``[[1,-2,1],[-2,4,-2],[1,-2,1]]`` (J. Immerkaer,
    *Comput Vis Image Underst* 1996;64:300-302), which cancels constant and linear intensity and
    multiplies white noise sd by 6; sigma is the robust sd (1.4826 x median absolute deviation) of
    the filtered bright-tissue pixels divided by 6. Edges are outliers that the median ignores.
    Spatially correlated noise (zero-filled interpolation, filtering in the reconstruction) has
    less high-frequency power, so this estimator gives a *lower* sigma (higher SNR) there than ``"air"``.
  - ``"auto"``: ``"air"`` when at least ``min_air_pixels`` air pixels are found, else ``"residual"``.

* **SNR** (:func:`snr`): myocardial signal over sigma. The Rician bias of the magnitude mean is
  removed to first order, ``A = sqrt(max(M^2 - sigma^2, 0))`` (Gudbjartsson & Patz, *Magn Reson Med*
  1995;34:910-914); at the SNRs of cine bSSFP the correction is below 1 %.
* **Tag period and contrast** (:func:`tag_period_and_contrast`): the two first-harmonic peaks of a
  grid-tagged sequence are found on the windowed, zero-padded spectrum of its first frames; the tag
  period is ``1 / |f|`` (mm). Per frame, the *tag modulation depth* is ``2 |F_t(k)| / F_t(0)``
  (the harmonic peak amplitude over the DC term, maximum within ``search_radius |k|`` of the
  frame-0 peak, mean of the two directions); for an image ``a (1 + m cos(k.x))`` it equals ``m``.
  It falls over the cycle because the tagged longitudinal magnetisation recovers with T1 (tag
  fading) and, less, because deformation spreads the harmonic peak.
  :func:`expected_tag_contrast` is the relaxation-only expectation for SPAMM (Axel & Dougherty,
  *Radiology* 1989;171:841-845): with the tag pattern ``f(X) = a0 + a1 cos(k.X) + ...`` and
  ``e = exp(-t / T1)``, ``Mz = M0 [1 + (f - 1) e]``, so a line tag has depth ``|a1| e / (1 + (a0 - 1) e)``
  and a grid (``f1 f2``) ``|a0 a1| e / (1 + (a0^2 - 1) e)``. Readout saturation multiplies ``Mz`` as a
  whole and leaves the depth unchanged.

Cohort measurement: :func:`phenotype_comparison` sets cohort phenotypes (by sex) against reference
values, by default :data:`UKB_REFERENCE`: the Petersen et al. 2017 UK Biobank reference ranges
(J Cardiovasc Magn Reson 19:18) that could be read from its abstract or checked transcriptions, plus
Hudsmith et al. 2005 (J Cardiovasc Magn Reson 7:775) for the volumes whose UK Biobank mean and sd
are in Petersen's tables 2-5, which were not available.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import ndimage

from ..clinical import MEASURED_COLUMNS
from ..labels import LV_BLOOD, LV_MYO

__all__ = [
    "RAYLEIGH_SD_FACTOR",
    "IMMERKAER_KERNEL",
    "MYOCARDIUM_T1_MS",
    "UKB_TAG_SPACING_MM",
    "UKB_TAG_FRAME_MS",
    "ReferenceValue",
    "UKB_REFERENCE",
    "reference_frame",
    "acquired_support",
    "background_mask",
    "rayleigh_check",
    "noise_sigma",
    "ContrastResult",
    "tissue_contrast",
    "SNRResult",
    "snr",
    "TagMeasurement",
    "tag_period_and_contrast",
    "spamm_profile",
    "spamm_harmonics",
    "expected_tag_contrast",
    "sex_labels",
    "phenotype_comparison",
]

#: SD of a Rayleigh variable in units of the Gaussian sigma, sqrt(2 - pi/2) (Kaufman et al. 1989)
RAYLEIGH_SD_FACTOR: float = math.sqrt(2.0 - math.pi / 2.0)
#: Immerkaer (1996) noise-estimation kernel; its L2 norm is 6
IMMERKAER_KERNEL = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
#: myocardial T1 at 1.5 T (Stanisz et al., Magn Reson Med 2005;54:507-512); tagging simulators use
#: 850-1200 ms (PyMRStrain 850 ms, Loecher's tagsim 900-1200 ms)
MYOCARDIUM_T1_MS: float = 1030.0
#: UK Biobank tagging: grid spacing 6 mm and ~41 ms between frames (thesis §4.3.1)
UKB_TAG_SPACING_MM: float = 6.0
UKB_TAG_FRAME_MS: float = 41.0


# ============================================================================ reference values
@dataclass(frozen=True)
class ReferenceValue:
    """One published reference value of a cardiac phenotype.

    ``mean``/``sd`` when the source gives them, ``lo``/``hi`` when it gives a range (a 95 % range or
    a normal zone); ``status`` says how the number was checked: ``verified`` (read in the source),
    ``transcribed`` (a third-party transcription of the source's tables), ``loose`` (normal-zone
    limits of unclear definition, sanity bounds only).
    """

    phenotype: str
    sex: str
    units: str
    source: str
    status: str
    mean: float | None = None
    sd: float | None = None
    lo: float | None = None
    hi: float | None = None

    @property
    def range(self) -> tuple[float, float] | None:
        """``(lo, hi)`` when given, else ``mean -/+ 1.96 sd``, else None."""
        if self.lo is not None and self.hi is not None:
            return (self.lo, self.hi)
        if self.mean is not None and self.sd is not None:
            return (self.mean - 1.96 * self.sd, self.mean + 1.96 * self.sd)
        return None


_P17 = "Petersen 2017 (UK Biobank, JCMR 19:18)"
_H05 = "Hudsmith 2005 (Oxford, JCMR 7:775; not UK Biobank)"


def _rv(ph: str, sex: str, units: str, source: str, status: str, **kw: float) -> ReferenceValue:
    return ReferenceValue(ph, sex, units, source, status, **kw)


#: Reference values with their sources (Petersen 2017: 804 healthy Caucasians aged 45-74, 1.5 T
#: bSSFP, papillary muscles in the LV volume; LVEF and LVM/BSA from its abstract). Petersen 2017
#: means/sd of LVEDV, LVESV, LVM and the RV are in its tables 2-5, which could not be read, so
#: Hudsmith 2005 means/sd stand in for the volumes.
UKB_REFERENCE: tuple[ReferenceValue, ...] = (
    _rv("LVEF", "male", "%", _P17, "verified", mean=58.0, sd=5.0),
    _rv("LVEF", "female", "%", _P17, "verified", mean=61.0, sd=5.0),
    _rv("LVMi", "male", "g/m²", _P17, "verified", mean=53.0, sd=9.0),
    _rv("LVMi", "female", "g/m²", _P17, "verified", mean=42.0, sd=7.0),
    _rv("LVSV", "male", "mL", _P17, "transcribed", mean=96.0, sd=20.0),
    _rv("LVSV", "female", "mL", _P17, "transcribed", mean=75.0, sd=14.0),
    _rv("LVEDV", "female", "mL", _P17 + ", 95 % range", "transcribed", lo=88.0, hi=161.0),
    _rv("LVESV", "female", "mL", _P17 + ", 95 % range", "transcribed", lo=31.0, hi=68.0),
    _rv("LVEDV", "male", "mL", _H05, "verified", mean=160.0, sd=29.0),
    _rv("LVEDV", "female", "mL", _H05, "verified", mean=135.0, sd=26.0),
    _rv("LVESV", "male", "mL", _H05, "verified", mean=50.0, sd=16.0),
    _rv("LVESV", "female", "mL", _H05, "verified", mean=42.0, sd=12.0),
    _rv("RVEDV", "male", "mL", _H05, "verified", mean=190.0, sd=33.0),
    _rv("RVEDV", "female", "mL", _H05, "verified", mean=148.0, sd=35.0),
    _rv("RVESV", "male", "mL", _H05, "verified", mean=78.0, sd=20.0),
    _rv("RVESV", "female", "mL", _H05, "verified", mean=56.0, sd=18.0),
    _rv("RVEDV", "male", "mL", _P17 + ", normal zone", "loose", lo=99.0, hi=260.0),
    _rv("RVEDV", "female", "mL", _P17 + ", normal zone", "loose", lo=83.0, hi=192.0),
)


def reference_frame(reference: Iterable[ReferenceValue] = UKB_REFERENCE) -> pd.DataFrame:
    """The reference values as a table (one row per value, with its 95 % range)."""
    rows = []
    for r in reference:
        rng = r.range
        rows.append(
            {
                "phenotype": r.phenotype,
                "sex": r.sex,
                "mean": r.mean,
                "sd": r.sd,
                "range_lo": None if rng is None else rng[0],
                "range_hi": None if rng is None else rng[1],
                "units": r.units,
                "source": r.source,
                "status": r.status,
            }
        )
    return pd.DataFrame(rows)


# ============================================================================ masks and noise
def _planes(a: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """``(H, W, ...)`` -> ``(n_planes, H, W)`` and the trailing shape."""
    if a.ndim < 2:
        raise ValueError(f"image must have at least 2 dimensions (H, W, ...), got shape {a.shape}")
    tail = a.shape[2:]
    return np.moveaxis(a.reshape(a.shape[:2] + (-1,)), -1, 0), tail


def acquired_support(image2d: np.ndarray) -> np.ndarray:
    """Pixels inside the acquired field of view: rows and columns that are not entirely zero.

    Zero-filled borders (vendor padding to a larger matrix) are excluded, isolated zero pixels of the
    noise are kept.
    """
    img = np.asarray(image2d)
    rows = np.any(img != 0, axis=1)
    cols = np.any(img != 0, axis=0)
    return rows[:, None] & cols[None, :]


def background_mask(image2d: np.ndarray, *, margin_px: int = 4) -> np.ndarray:
    """Candidate air pixels: dark (below the lower of the two three-class Otsu thresholds of the
    acquired support), in dark regions connected to the edge of the acquired field of view
    (:func:`acquired_support`), at least ``margin_px`` pixels away from any brighter pixel.

    Dark regions touching the edge may also be lung; :func:`noise_sigma` therefore accepts the mask
    only when its pixel values look like pure Rayleigh noise.
    """
    from skimage.filters import threshold_multiotsu

    img = np.asarray(image2d, dtype=float)
    if img.ndim != 2:
        raise ValueError(f"image2d must be 2-D, got shape {img.shape}")
    sup = acquired_support(img)
    vals = img[sup]
    if vals.size < 16 or np.unique(vals).size < 3:
        return np.zeros(img.shape, bool)
    dark = sup & (img <= float(threshold_multiotsu(vals, classes=3)[0]))
    dark = ndimage.binary_opening(dark, iterations=1)
    lab, n = ndimage.label(dark)
    if n == 0:
        return np.zeros(img.shape, bool)
    edge = sup & ~ndimage.binary_erosion(sup, iterations=1, border_value=0)
    touching = np.unique(lab[edge & dark])
    keep = np.isin(lab, touching[touching > 0])
    if margin_px > 0:
        keep = ndimage.binary_erosion(keep, iterations=int(margin_px), border_value=1) & keep
    return keep & ndimage.binary_erosion(sup, iterations=1, border_value=0)


def rayleigh_check(values: np.ndarray, tolerance: float = 0.15) -> tuple[bool, float, float]:
    """Do ``values`` look like pure Rayleigh noise? Compares the sigma implied by the standard
    deviation (``sd / 0.655``) with the one implied by the median (``median / sqrt(2 ln 2)``);
    structure (lung vessels, ghosting, body edge) inflates the former.

    Returns ``(ok, sigma_from_sd, sigma_from_median)``.
    """
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return False, float("nan"), float("nan")
    s_sd = float(v.std(ddof=1)) / RAYLEIGH_SD_FACTOR
    s_med = float(np.median(v)) / math.sqrt(2.0 * math.log(2.0))
    ok = s_med > 0 and abs(s_sd / s_med - 1.0) <= tolerance
    return bool(ok), s_sd, s_med


def _white(img: np.ndarray, mask: np.ndarray, tolerance: float = 0.15) -> bool:
    """Is the noise in ``mask`` spatially white? For white noise the Immerkaer residual has 6 times
    the pixel standard deviation; structure (lung) or interpolation (correlated noise) breaks that."""
    inner = ndimage.binary_erosion(mask, iterations=1)
    if inner.sum() < 32:
        return False
    r = ndimage.convolve(img, IMMERKAER_KERNEL, mode="reflect")[inner]
    sd = float(img[mask].std())
    return sd > 0 and abs(float(r.std()) / 6.0 / sd - 1.0) <= tolerance


def _clipped_sd(x: np.ndarray, k: float = 3.0) -> float:
    """Robust sd: 1.4826 x MAD, then the sd of the values within ``k`` of those of the median,
    divided by the sd of a unit normal truncated at ``+-k`` (insensitive to integer quantisation)."""
    x = np.asarray(x, dtype=float)
    med = float(np.median(x))
    s0 = 1.4826 * float(np.median(np.abs(x - med)))
    if s0 <= 0:
        s0 = float(x.std())
    if s0 <= 0:
        return 0.0
    kept = x[np.abs(x - med) <= k * s0]
    from scipy.stats import truncnorm

    return float(kept.std(ddof=1)) / float(truncnorm.std(-k, k))


def noise_sigma(
    image2d: np.ndarray, method: Literal["auto", "air", "residual"] = "auto", *, min_air_pixels: int = 300
) -> tuple[float, str, int]:
    """Gaussian noise sigma of a magnitude image (see the module docstring for the estimators).

    ``"air"`` uses :func:`background_mask` and accepts it only when it has at least
    ``min_air_pixels`` pixels whose values pass :func:`rayleigh_check` and whose noise is spatially
    white (the Immerkaer residual sd is 6 x the pixel sd within 15 %; lung structure and the
    correlated noise of interpolated reconstructions fail this); ``"auto"`` falls back to
    ``"residual"`` otherwise.

    Returns
    -------
    (sigma, method_used, n_pixels)
        ``sigma`` is NaN when the requested estimator is not applicable.
    """
    img = np.asarray(image2d, dtype=float)
    if img.ndim != 2:
        raise ValueError(f"image2d must be 2-D, got shape {img.shape}")
    if method not in ("auto", "air", "residual"):
        raise ValueError(f"method: expected 'auto', 'air' or 'residual', got {method!r}")
    if method in ("auto", "air"):
        bg = background_mask(img)
        n = int(bg.sum())
        if n >= min_air_pixels:
            ok, s_sd, _ = rayleigh_check(img[bg])
            if ok and _white(img, bg):
                return s_sd, "air", n
        if method == "air":
            return float("nan"), "air", n
    from skimage.filters import threshold_otsu

    sup = acquired_support(img)
    if sup.sum() < 64:
        return float("nan"), "residual", 0
    resid = ndimage.convolve(img, IMMERKAER_KERNEL, mode="reflect")
    bright = sup & (img > float(threshold_otsu(img[sup])))
    bright = ndimage.binary_erosion(bright, iterations=1, border_value=0)
    bright[:1, :] = bright[-1:, :] = False
    bright[:, :1] = bright[:, -1:] = False
    n = int(bright.sum())
    if n < 64:
        return float("nan"), "residual", n
    return _clipped_sd(resid[bright]) / 6.0, "residual", n


def _eroded(mask: np.ndarray, px: int) -> np.ndarray:
    if px <= 0:
        return mask
    er = ndimage.binary_erosion(mask, iterations=int(px))
    return er if er.any() else mask


# ============================================================================ contrast and SNR
@dataclass
class ContrastResult:
    """Blood/myocardium contrast per plane (arrays shaped like the image's trailing axes).

    ``blood``/``myocardium`` are mean intensities, ``ratio = blood / myocardium``,
    ``cnr = (blood - myocardium) / sigma``; NaN where a plane has fewer than ``min_pixels`` of either.
    """

    blood: np.ndarray
    myocardium: np.ndarray
    ratio: np.ndarray
    sigma: np.ndarray
    cnr: np.ndarray
    method: np.ndarray

    def summary(self) -> dict[str, float]:
        """Median over planes of ratio, CNR and sigma, and the number of valid planes."""
        ok = np.isfinite(self.ratio)
        return {
            "ratio": float(np.nanmedian(self.ratio)) if ok.any() else float("nan"),
            "cnr": float(np.nanmedian(self.cnr)) if np.isfinite(self.cnr).any() else float("nan"),
            "sigma": float(np.nanmedian(self.sigma)) if np.isfinite(self.sigma).any() else float("nan"),
            "n_planes": int(ok.sum()),
        }


def _check_image_labels(image: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    img = np.asarray(image, dtype=float)
    lab = np.asarray(labels)
    if lab.shape != img.shape:
        raise ValueError(f"labels: shape {lab.shape} differs from image shape {img.shape}")
    if img.ndim < 2:
        raise ValueError(f"image must be (H, W, ...), got shape {img.shape}")
    return img, lab


def tissue_contrast(
    image: Any,
    labels: Any,
    *,
    erode_px: int = 1,
    min_pixels: int = 10,
    noise: Literal["auto", "air", "residual"] = "auto",
    blood_label: int = LV_BLOOD,
    myo_label: int = LV_MYO,
) -> ContrastResult:
    """Blood/myocardium intensity ratio and CNR of every plane of ``image`` (H, W, ...).

    Parameters
    ----------
    image, labels
        Same shape; labels in the kit convention (1 LV blood pool, 2 LV myocardium).
    erode_px
        Erode both masks by this many pixels first (a mask that would vanish is kept uneroded).
    min_pixels
        Planes with fewer pixels of either class are NaN.
    noise
        Estimator of sigma for the CNR (:func:`noise_sigma`).
    """
    img, lab = _check_image_labels(image, labels)
    ip, tail = _planes(img)
    lp, _ = _planes(lab)
    n = ip.shape[0]
    out = {k: np.full(n, np.nan) for k in ("blood", "myocardium", "ratio", "sigma", "cnr")}
    meth = np.full(n, "", dtype=object)
    for i in range(n):
        b = _eroded(lp[i] == blood_label, erode_px)
        m = _eroded(lp[i] == myo_label, erode_px)
        if b.sum() < min_pixels or m.sum() < min_pixels:
            continue
        bm, mm = float(ip[i][b].mean()), float(ip[i][m].mean())
        sig, used, _ = noise_sigma(ip[i], noise)
        out["blood"][i], out["myocardium"][i] = bm, mm
        out["ratio"][i] = bm / mm if mm > 0 else np.nan
        out["sigma"][i] = sig
        out["cnr"][i] = (bm - mm) / sig if sig > 0 else np.nan
        meth[i] = used
    shape = tail if tail else ()
    return ContrastResult(**{k: v.reshape(shape) for k, v in out.items()}, method=meth.reshape(shape))


@dataclass
class SNRResult:
    """Myocardial SNR per plane: ``signal`` (Rician-corrected myocardial mean), ``sigma``, ``snr``,
    the estimator used and the number of noise pixels."""

    signal: np.ndarray
    sigma: np.ndarray
    snr: np.ndarray
    method: np.ndarray
    n_noise: np.ndarray

    def summary(self) -> dict[str, float]:
        ok = np.isfinite(self.snr)
        used = sorted({str(m) for m in np.ravel(self.method)[np.ravel(ok)]})
        return {
            "snr": float(np.nanmedian(self.snr)) if ok.any() else float("nan"),
            "sigma": float(np.nanmedian(self.sigma)) if np.isfinite(self.sigma).any() else float("nan"),
            "n_planes": int(ok.sum()),
            "method": "+".join(used),
        }


def snr(
    image: Any,
    labels: Any,
    *,
    method: Literal["auto", "air", "residual"] = "auto",
    erode_px: int = 1,
    min_pixels: int = 10,
    tissue_label: int = LV_MYO,
) -> SNRResult:
    """Myocardial SNR of every plane of ``image`` (H, W, ...): ``sqrt(max(M^2 - sigma^2, 0)) / sigma``.

    ``M`` is the mean magnitude of the (eroded) myocardium, ``sigma`` from :func:`noise_sigma` with
    ``method`` (see the module docstring for the estimators and their caveats).
    """
    img, lab = _check_image_labels(image, labels)
    ip, tail = _planes(img)
    lp, _ = _planes(lab)
    n = ip.shape[0]
    sig_a, sigma_a, snr_a, nn = (np.full(n, np.nan) for _ in range(4))
    meth = np.full(n, "", dtype=object)
    for i in range(n):
        m = _eroded(lp[i] == tissue_label, erode_px)
        if m.sum() < min_pixels:
            continue
        s, used, k = noise_sigma(ip[i], method)
        meth[i], nn[i], sigma_a[i] = used, k, s
        mean = float(ip[i][m].mean())
        sig_a[i] = math.sqrt(max(mean * mean - s * s, 0.0)) if np.isfinite(s) else np.nan
        snr_a[i] = sig_a[i] / s if (np.isfinite(s) and s > 0) else np.nan
    shape = tail if tail else ()
    return SNRResult(
        sig_a.reshape(shape), sigma_a.reshape(shape), snr_a.reshape(shape), meth.reshape(shape), nn.reshape(shape)
    )


# ============================================================================ tagging
@dataclass
class TagMeasurement:
    """Tag period and modulation depth of a tagged sequence.

    Attributes
    ----------
    period_mm
        Mean tag period of the detected directions (mm).
    periods_mm
        Period per direction (1 or 2 values).
    angles_deg
        Direction of each wave vector (degrees, from +x = column towards +y = row).
    contrast
        ``(T,)`` modulation depth ``2 |F_t(k)| / F_t(0)``, mean over directions.
    contrast_dirs
        ``(T, n_dirs)`` per direction.
    peak_snr
        Whitened peak magnitude over the median of the searched annulus, per direction.
    """

    period_mm: float
    periods_mm: np.ndarray
    angles_deg: np.ndarray
    contrast: np.ndarray
    contrast_dirs: np.ndarray
    peak_snr: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def fading(self) -> np.ndarray:
        """Contrast relative to frame 0."""
        return self.contrast / self.contrast[0] if self.contrast[0] > 0 else np.full_like(self.contrast, np.nan)


def _refine(lm: np.ndarray, iy: int, ix: int) -> tuple[float, float]:
    h, w = lm.shape

    def para(a: float, b: float, c: float) -> float:
        den = a - 2 * b + c
        return 0.0 if den >= 0 else float(np.clip(0.5 * (a - c) / den, -0.5, 0.5))

    return (
        iy + para(lm[(iy - 1) % h, ix], lm[iy, ix], lm[(iy + 1) % h, ix]),
        ix + para(lm[iy, (ix - 1) % w], lm[iy, ix], lm[iy, (ix + 1) % w]),
    )


def tag_period_and_contrast(
    tag_seq: Any,
    myo_mask: Any = None,
    px_mm: float = 1.0,
    *,
    ref_frames: int = 3,
    period_range_mm: tuple[float, float] = (3.0, 15.0),
    search_radius: float = 0.25,
    min_angle_deg: float = 45.0,
    peak_snr_min: float = 4.0,
    pad: int = 4,
) -> TagMeasurement:
    """Tag period (mm) from the spectral peaks and the tag modulation depth of every frame.

    Parameters
    ----------
    tag_seq
        ``(T, H, W)`` tagged frames (row = y, column = x).
    myo_mask
        Optional ``(H, W)`` or ``(T, H, W)`` weight/mask (e.g. the myocardium, so that the blood
        pool, whose tags wash out, and the background do not count); only its bounding box (plus 4
        pixels) is analysed. Default: a 2-D Hann window over the whole frame.
    px_mm
        Pixel size (mm).
    ref_frames
        Magnitude spectra of the first ``ref_frames`` frames are summed to find the peaks.
    period_range_mm
        Plausible tag periods searched.
    search_radius
        Per frame, the harmonic amplitude is the maximum within ``search_radius * |k|`` of the
        reference peak (the peak moves and spreads as the tissue deforms).
    peak_snr_min
        A peak is accepted when its whitened magnitude is this many times the annulus median; the
        second direction must also reach 5 % of the first (line tagging gives one direction).
    pad
        Zero padding factor of the FFT (spectral interpolation).

    Raises
    ------
    ValueError
        Bad shapes, or no tag peak stands out in the searched band.
    """
    seq = np.asarray(tag_seq, dtype=float)
    if seq.ndim != 3:
        raise ValueError(f"tag_seq must be (T, H, W), got shape {seq.shape}")
    T, H, W = seq.shape
    if min(H, W) < 16:
        raise ValueError(f"tag_seq frames too small for spectral analysis: {H}x{W}")
    if not px_mm > 0:
        raise ValueError(f"px_mm must be positive, got {px_mm}")
    lo_mm, hi_mm = period_range_mm
    if not 0 < lo_mm < hi_mm:
        raise ValueError(f"period_range_mm must be (lo, hi) with 0 < lo < hi, got {period_range_mm}")
    if myo_mask is None:
        win = np.broadcast_to(np.outer(np.hanning(H), np.hanning(W)), (T, H, W))
    else:
        m = np.asarray(myo_mask, dtype=float)
        if m.shape == (H, W):
            m = np.broadcast_to(m, (T, H, W))
        if m.shape != (T, H, W):
            raise ValueError(f"myo_mask must be (H, W) or (T, H, W) = {(T, H, W)}, got {np.shape(myo_mask)}")
        if not np.all(m.reshape(T, -1).sum(1) > 0):
            raise ValueError("myo_mask is empty in at least one frame")
        # analyse only the box holding the mask (plus a margin), which keeps the FFTs small
        rows = np.flatnonzero(m.any(axis=(0, 2)))
        cols = np.flatnonzero(m.any(axis=(0, 1)))
        marg = 4
        r0, r1 = max(rows[0] - marg, 0), min(rows[-1] + 1 + marg, H)
        c0, c1 = max(cols[0] - marg, 0), min(cols[-1] + 1 + marg, W)
        seq, win = seq[:, r0:r1, c0:c1], m[:, r0:r1, c0:c1]
        T, H, W = seq.shape
    n = int(2 ** math.ceil(math.log2(max(64, pad * max(H, W)))))
    f = np.fft.fftfreq(n)  # cycles / pixel, unshifted
    fy, fx = np.meshgrid(f, f, indexing="ij")
    fr = np.hypot(fx, fy)
    # spectra of the mean-removed, windowed frames (the constant anatomy leaks nothing)
    dc = np.empty(T)
    spec = np.empty((T, n, n))
    for t in range(T):
        w = win[t]
        mu = float((w * seq[t]).sum() / w.sum())
        dc[t] = float((w * seq[t]).sum())
        spec[t] = np.abs(np.fft.fft2((seq[t] - mu) * w, s=(n, n)))
    ref = spec[: max(1, min(ref_frames, T))].sum(0)
    f_lo, f_hi = px_mm / hi_mm, min(px_mm / lo_mm, 0.5)
    half = (fx > 0) | ((fx == 0) & (fy > 0))
    ann = half & (fr >= f_lo) & (fr <= f_hi)
    if not ann.any():
        raise ValueError(f"period_range_mm {period_range_mm} is outside what {px_mm} mm pixels can resolve")
    score = ref * fr
    bg = float(np.median(score[ann]))
    s1 = np.where(ann, score, -np.inf)
    i1 = np.unravel_index(int(np.argmax(s1)), s1.shape)
    snr1 = float(score[i1] / bg) if bg > 0 else float("inf")
    if snr1 < peak_snr_min:
        raise ValueError(f"no tag peak stands out between {lo_mm} and {hi_mm} mm (peak/median {snr1:.1f})")
    peaks = [i1]
    snrs = [snr1]
    v1 = np.array([fx[i1], fy[i1]])
    ang = np.arctan2(fy, fx) - math.atan2(v1[1], v1[0])
    dang = np.abs(np.degrees(np.angle(np.exp(2j * ang))) / 2.0)  # angle between lines, [0, 90]
    r1 = float(np.hypot(*v1))
    ann2 = ann & (dang >= min_angle_deg) & (fr >= 0.7 * r1) & (fr <= 1.43 * r1)
    if ann2.any():
        s2 = np.where(ann2, score, -np.inf)
        i2 = np.unravel_index(int(np.argmax(s2)), s2.shape)
        snr2 = float(score[i2] / bg) if bg > 0 else float("inf")
        if snr2 >= peak_snr_min and score[i2] >= 0.05 * score[i1]:
            peaks.append(i2)
            snrs.append(snr2)
    lref = np.log(ref + 1e-12)
    df = f[1] - f[0]
    vecs = []
    for iy, ix in peaks:
        ry, rx = _refine(lref, int(iy), int(ix))
        # fftfreq index -> frequency (indices above n/2 are negative)
        vy = (ry if ry < n / 2 else ry - n) * df
        vx = (rx if rx < n / 2 else rx - n) * df
        vecs.append((vx, vy))
    vecs_a = np.asarray(vecs)
    fnorm = np.hypot(vecs_a[:, 0], vecs_a[:, 1])
    periods = px_mm / fnorm
    angles = np.degrees(np.arctan2(vecs_a[:, 1], vecs_a[:, 0]))
    contrast_dirs = np.empty((T, len(peaks)))
    for j, (vx, vy) in enumerate(vecs_a):
        near = np.hypot(fx - vx, fy - vy) <= search_radius * fnorm[j]
        for t in range(T):
            amp = float(spec[t][near].max())
            contrast_dirs[t, j] = 2.0 * amp / abs(dc[t]) if dc[t] != 0 else np.nan
    return TagMeasurement(
        period_mm=float(periods.mean()),
        periods_mm=periods,
        angles_deg=angles,
        contrast=contrast_dirs.mean(1),
        contrast_dirs=contrast_dirs,
        peak_snr=np.asarray(snrs),
        meta={"fft_size": n, "px_mm": float(px_mm), "window": "hann" if myo_mask is None else "mask"},
    )


def spamm_profile(phase: Any, flip_total_deg: float = 90.0, order: int = 1) -> np.ndarray:
    """Fraction ``f`` of the longitudinal magnetisation left by a SPAMM block at tag phase ``phase``.

    ``order = 1`` (1-1 SPAMM, two hard pulses of ``theta / 2`` around one gradient lobe) is exact:
    ``f = cos^2(theta/2) - sin^2(theta/2) cos(phase)`` (Axel & Dougherty 1989). Higher binomial orders
    (1-2-1: ``order = 2``) use the small-tip profile ``f = cos(theta |cos(phase / 2)|^order)``, the
    model of :mod:`cmrkit.phantom.tagging`. ``f = 0`` on the tag lines (phase 0) for ``theta = 90``.
    """
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    th = math.radians(flip_total_deg)
    p = np.asarray(phase, dtype=float)
    if order == 1:
        return math.cos(th / 2) ** 2 - math.sin(th / 2) ** 2 * np.cos(p)
    return np.cos(th * np.abs(np.cos(p / 2.0)) ** order)


def spamm_harmonics(flip_total_deg: float = 90.0, order: int = 1, n: int = 4096) -> tuple[float, float]:
    """Fourier coefficients ``(a0, a1)`` of :func:`spamm_profile`, ``f = a0 + a1 cos(phase) + ...``
    (1-1 SPAMM at 90 degrees: ``(0.5, -0.5)``)."""
    p = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    fp = spamm_profile(p, flip_total_deg, order)
    return float(fp.mean()), float(2.0 * (fp * np.cos(p)).mean())


def expected_tag_contrast(
    t_ms: Any, t1_ms: float = MYOCARDIUM_T1_MS, *, flip_total_deg: float = 90.0, order: int = 1, grid: bool = True
) -> np.ndarray:
    """Relaxation-only tag modulation depth at times ``t_ms`` after the SPAMM block (module docstring).

    ``e = exp(-t / T1)``; line tags ``|a1| e / (1 + (a0 - 1) e)``, grid tags
    ``|a0 a1| e / (1 + (a0^2 - 1) e)`` with ``(a0, a1)`` from :func:`spamm_harmonics`. Motion, blood
    inflow and noise are ignored, so measured depths in the myocardium should lie at or below it.
    """
    if not t1_ms > 0:
        raise ValueError(f"t1_ms must be positive, got {t1_ms}")
    t = np.asarray(t_ms, dtype=float)
    a0, a1 = spamm_harmonics(flip_total_deg, order)
    e = np.exp(-t / t1_ms)
    if grid:
        return np.abs(a0 * a1) * e / (1.0 + (a0 * a0 - 1.0) * e)
    return np.abs(a1) * e / (1.0 + (a0 - 1.0) * e)


# ============================================================================ phenotypes
def sex_labels(values: pd.Series) -> pd.Series:
    """Map a sex column to ``"female"``/``"male"`` (UK Biobank field 31: 0 female, 1 male; or strings)."""

    def one(v: Any) -> str | None:
        if isinstance(v, str):
            s = v.strip().lower()
            if s in ("f", "female", "woman", "0"):
                return "female"
            if s in ("m", "male", "man", "1"):
                return "male"
            return None
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return None
        if v in (0, 1):
            return "male" if int(v) == 1 else "female"
        return None

    out = values.map(one)
    bad = values[out.isna() & values.notna()]
    if len(bad):
        raise ValueError(
            f"sex column: cannot read values {sorted(set(map(str, bad)))[:5]} "
            "(expected 0/1 with 1 = male, or female/male)"
        )
    return out


def phenotype_comparison(
    manifest: pd.DataFrame,
    reference: Iterable[ReferenceValue] = UKB_REFERENCE,
    *,
    columns: Mapping[str, str] | None = None,
    sex_column: str = "sex",
    subset: Any = None,
) -> pd.DataFrame:
    """Cohort phenotypes by sex against reference values.

    Parameters
    ----------
    manifest
        One row per subject with a sex column and the phenotype columns.
    reference
        :class:`ReferenceValue` entries (default :data:`UKB_REFERENCE`).
    columns
        Kit phenotype name -> column (default :data:`cmrkit.clinical.MEASURED_COLUMNS`, the phantom manifest's
        label-derived values). Without their own column, ``LVSV``/``RVSV`` are ``EDV - ESV`` and
        ``LVMi`` (LV mass / BSA) is ``LVM`` over a ``bsa`` (or ``bsa_m2``) column, else over the Mosteller
        BSA ``sqrt(height_cm * weight_kg / 3600)``. Reference phenotypes without a column are an error.
    subset
        Optional boolean mask (array or Series) selecting the subjects compared (e.g. without
        regional dysfunction, as the reference cohort is healthy).

    Returns
    -------
    pandas.DataFrame
        One row per reference value: ``phenotype, sex, units, source, status, ref_mean, ref_sd,
        range_lo, range_hi, n, cohort_mean, cohort_sd, std_diff`` (``(cohort_mean - ref_mean) /
        ref_sd`` when the reference has mean and sd, else NaN), ``frac_in_range`` (fraction of
        subjects inside the reference range, :attr:`ReferenceValue.range`).
    """
    if not isinstance(manifest, pd.DataFrame):
        raise TypeError(f"manifest must be a pandas DataFrame, got {type(manifest).__name__}")
    cols = dict(MEASURED_COLUMNS if columns is None else columns)
    df = manifest
    if subset is not None:
        mask = np.asarray(subset, dtype=bool)
        if mask.shape != (len(df),):
            raise ValueError(f"subset: expected a boolean mask of length {len(df)}, got shape {mask.shape}")
        df = df.loc[mask]
    if sex_column not in df.columns:
        raise ValueError(f"manifest has no sex column {sex_column!r} (columns: {list(df.columns)})")
    sex = sex_labels(df[sex_column])
    values: dict[str, pd.Series] = {}
    refs = list(reference)

    def column(ph: str) -> pd.Series:
        col = cols.get(ph)
        if col is None or col not in df.columns:
            raise ValueError(
                f"reference phenotype {ph!r} has no manifest column "
                f"(looked for {col!r}; pass columns={{'{ph}': '<column>'}})"
            )
        return df[col].astype(float)

    for r in refs:
        ph = r.phenotype
        if ph in values:
            continue
        if ph in cols:
            values[ph] = column(ph)
        elif ph in ("LVSV", "RVSV"):  # stroke volume = EDV - ESV
            v = ph[:2]
            values[ph] = column(f"{v}EDV") - column(f"{v}ESV")
        elif ph == "LVMi":  # LV mass / BSA
            bsa_col = next((c for c in ("bsa", "bsa_m2") if c in df.columns), None)
            if bsa_col is not None:
                bsa = df[bsa_col].astype(float)
            elif {"height_cm", "weight_kg"} <= set(df.columns):
                bsa = np.sqrt(df["height_cm"].astype(float) * df["weight_kg"].astype(float) / 3600.0)
            else:
                raise ValueError("LVMi needs a bsa (or bsa_m2) column, or height_cm and weight_kg")
            values[ph] = column("LVM") / bsa
        else:
            values[ph] = column(ph)
    rows = []
    for r in refs:
        v = values[r.phenotype][sex == r.sex].dropna().to_numpy(float)
        rng = r.range
        mean = float(v.mean()) if v.size else float("nan")
        sd = float(v.std(ddof=1)) if v.size > 1 else float("nan")
        std_diff = (mean - r.mean) / r.sd if (r.mean is not None and r.sd and v.size) else float("nan")
        frac = float(np.mean((v >= rng[0]) & (v <= rng[1]))) if (rng is not None and v.size) else float("nan")
        rows.append(
            {
                "phenotype": r.phenotype,
                "sex": r.sex,
                "units": r.units,
                "source": r.source,
                "status": r.status,
                "ref_mean": r.mean,
                "ref_sd": r.sd,
                "range_lo": None if rng is None else rng[0],
                "range_hi": None if rng is None else rng[1],
                "n": int(v.size),
                "cohort_mean": mean,
                "cohort_sd": sd,
                "std_diff": std_diff,
                "frac_in_range": frac,
            }
        )
    return pd.DataFrame(rows)
