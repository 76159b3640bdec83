"""Harmonic phase (HARP) of SPAMM-tagged images: tag peaks, harmonic images, phase sampling.

Osman, Kerwin, McVeigh & Prince, *Magn Reson Med* 42:1048-1060 (1999). A grid-tagged image has spectral
peaks at the two tag wave vectors ``k_1``, ``k_2``; band-passing one peak gives ``I_i = A_i exp(j phi_i)``
whose phase ``phi_i = k_i . X`` (mod 2 pi) is a material property. :class:`PhaseSampler` and
:func:`newton_solve` find where a material point of known phase has moved to.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "TWO_PI",
    "wrap_phase",
    "HarmonicPeaks",
    "detect_harmonic_peaks",
    "harmonic_images",
    "harp_phase",
    "PhaseSampler",
    "newton_solve",
]


TWO_PI = 2.0 * np.pi


def wrap_phase(a: np.ndarray) -> np.ndarray:
    """Wrap angles to (-pi, pi]."""
    return np.angle(np.exp(1j * a))


# ----------------------------------------------------------------------------------------------
# 1. harmonic peaks
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HarmonicPeaks:
    """The two first-harmonic wave vectors of a grid-tagged image.

    Attributes
    ----------
    k
        ``(2, 2)`` float array, row ``i`` = wave vector ``(k_x, k_y)`` of tag direction ``i`` in
        radians per pixel (``x`` = column, ``y`` = row).
    snr
        Peak magnitude over the median magnitude at the same frequency over all directions, per
        tag direction (diagnostic; ``nan`` when the peaks were given explicitly).
    """

    k: np.ndarray
    snr: tuple[float, float] = (float("nan"), float("nan"))

    @property
    def spacing_px(self) -> np.ndarray:
        """Tag spacing (period) per direction in pixels, ``2 pi / |k_i|``."""
        return TWO_PI / np.linalg.norm(self.k, axis=1)

    @property
    def angles_deg(self) -> np.ndarray:
        """Direction of each wave vector in degrees (from +x towards +y)."""
        return np.degrees(np.arctan2(self.k[:, 1], self.k[:, 0]))

    @classmethod
    def from_spacing(
        cls, spacing_px: float | Sequence[float], angles_deg: Sequence[float] = (0.0, 90.0)
    ) -> HarmonicPeaks:
        """Peaks from a known tag spacing (pixels) and the two tag-normal directions."""
        sp = np.broadcast_to(np.asarray(spacing_px, float), (2,))
        a = np.radians(np.asarray(angles_deg, float))
        k = (TWO_PI / sp)[:, None] * np.stack([np.cos(a), np.sin(a)], axis=1)
        return cls(k=k)


def _refine_peak(mag: np.ndarray, iy: int, ix: int) -> tuple[float, float]:
    """Sub-bin peak position by a separable parabola on the log magnitude."""
    h, w = mag.shape
    lm = np.log(mag + 1e-12)

    def para(a: float, b: float, c: float) -> float:
        den = a - 2 * b + c
        return 0.0 if den >= 0 else float(np.clip(0.5 * (a - c) / den, -0.5, 0.5))

    dy = para(lm[(iy - 1) % h, ix], lm[iy, ix], lm[(iy + 1) % h, ix])
    dx = para(lm[iy, (ix - 1) % w], lm[iy, ix], lm[iy, (ix + 1) % w])
    return iy + dy, ix + dx


def detect_harmonic_peaks(
    image: np.ndarray,
    *,
    tag_spacing_px: float | None = None,
    roi: tuple[int, int, int, int] | None = None,
    min_spacing_px: float = 2.5,
    max_spacing_px: float = 32.0,
    min_angle_deg: float = 45.0,
    min_snr: float = 8.0,
) -> HarmonicPeaks:
    """Find the two first-harmonic tag peaks on the spectrum of a tagged frame (usually frame 0).

    Parameters
    ----------
    image
        ``(H, W)`` tagged image, or ``(T, H, W)`` (the magnitude spectra of the frames are summed,
        so pass the first few frames, where the tags are strongest).
    tag_spacing_px
        Known tag spacing in pixels: search only ``[0.75, 1.33]`` times its frequency.
    roi
        ``(x0, y0, x1, y1)`` sub-image to analyse (e.g. a box around the heart).
    min_spacing_px, max_spacing_px
        Annulus of plausible tag spacings when ``tag_spacing_px`` is not given.
    min_angle_deg
        The second direction must make at least this angle with the first (and at most
        ``180 - min_angle_deg``) so that the cross term ``k_1 + k_2`` is not mistaken for it.
    min_snr
        Each peak must exceed ``min_snr`` times the median magnitude at the same spatial frequency
        over all directions (tags are directional, anatomy and noise are not; noise alone reaches
        ~4-6, tag peaks are typically 20-150).

    Returns
    -------
    HarmonicPeaks

    Raises
    ------
    ValueError
        When no second tag direction stands out (line tagging, or an untagged image).
    """
    img = np.asarray(image, dtype=float)
    if img.ndim == 2:
        img = img[None]
    if img.ndim != 3:
        raise ValueError(f"image must be (H, W) or (T, H, W), got shape {np.shape(image)}")
    if roi is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in roi)
        img = img[:, max(y0, 0) : y1, max(x0, 0) : x1]
    _, h, w = img.shape
    if min(h, w) < 16:
        raise ValueError(f"image (or roi) too small for spectral tag detection: {h}x{w}")
    n = int(2 ** math.ceil(math.log2(max(256, h, w))))
    win = np.outer(np.hanning(h), np.hanning(w))
    mag = np.zeros((n, n))
    for fr in img:
        fr = fr - fr.mean()
        mag += np.abs(np.fft.fftshift(np.fft.fft2(fr * win, s=(n, n))))
    f = np.fft.fftshift(np.fft.fftfreq(n))  # cycles / pixel
    fy, fx = np.meshgrid(f, f, indexing="ij")
    fr_ = np.hypot(fx, fy)
    if tag_spacing_px is not None:
        f0 = 1.0 / float(tag_spacing_px)
        lo, hi = 0.75 * f0, 1.33 * f0
    else:
        lo, hi = 1.0 / max_spacing_px, 1.0 / min_spacing_px
    hi = min(hi, 0.5)
    ann = (fr_ >= lo) & (fr_ <= hi) & ((fx > 0) | ((fx == 0) & (fy > 0)))  # half plane
    score = mag * fr_  # whiten the ~1/f anatomy spectrum
    if not ann.any():
        raise ValueError("empty frequency annulus for tag detection (check tag_spacing_px)")
    s1 = np.where(ann, score, -np.inf)
    i1 = np.unravel_index(int(np.argmax(s1)), s1.shape)
    p1y, p1x = _refine_peak(mag, *i1)
    v1 = np.array([f[0] + p1x * (f[1] - f[0]), f[0] + p1y * (f[1] - f[0])])
    # second direction: similar frequency, clearly different angle
    ang = np.arctan2(fy, fx) - math.atan2(v1[1], v1[0])
    dang = np.abs(np.degrees(wrap_phase(2 * ang)) / 2)  # angle between lines, in [0, 90]
    r1 = float(np.hypot(*v1))
    ann2 = ann & (dang >= min(min_angle_deg, 89.0)) & (fr_ >= 0.7 * r1) & (fr_ <= 1.43 * r1)
    if tag_spacing_px is None:
        ann2 |= (
            (dang >= min(min_angle_deg, 89.0))
            & (fr_ >= 0.7 * r1)
            & (fr_ <= min(1.43 * r1, 0.5))
            & ((fx > 0) | ((fx == 0) & (fy > 0)))
        )
    s2 = np.where(ann2, score, -np.inf)
    if not np.isfinite(s2).any():
        raise ValueError("no search region for the second tag direction")
    i2 = np.unravel_index(int(np.argmax(s2)), s2.shape)
    df = float(f[1] - f[0])

    def peak_snr(idx: tuple[int, ...]) -> float:
        # against the median over all directions at the same frequency: tags are directional,
        # anatomy and noise are not
        ring = (np.abs(fr_ - fr_[idx]) <= 1.5 * df) & ((fx > 0) | ((fx == 0) & (fy > 0)))
        return float(score[idx] / max(float(np.median(score[ring])), 1e-30))

    snr1, snr2 = peak_snr(i1), peak_snr(i2)
    if snr2 < min_snr or snr1 < min_snr:
        raise ValueError(
            f"could not find two tag directions on the spectrum (peak/background {snr1:.1f}, {snr2:.1f}); "
            "HARP tracking needs grid tagging. Pass tag_spacing_px / harmonic peaks explicitly if known."
        )
    p2y, p2x = _refine_peak(mag, *i2)
    v2 = np.array([f[0] + p2x * (f[1] - f[0]), f[0] + p2y * (f[1] - f[0])])
    k = TWO_PI * np.stack([v1, v2])
    return HarmonicPeaks(k=k, snr=(snr1, snr2))


# ----------------------------------------------------------------------------------------------
# 2. harmonic images
# ----------------------------------------------------------------------------------------------
def harmonic_images(
    images: np.ndarray, peaks: HarmonicPeaks, *, bandwidth: float = 0.3, demodulate: bool = True
) -> np.ndarray:
    """Band-pass the two first-harmonic peaks of every frame.

    Parameters
    ----------
    images
        ``(T, H, W)`` (or ``(H, W)``) tagged magnitude images.
    peaks
        The wave vectors ``k_i`` (rad/pixel).
    bandwidth
        Standard deviation of the Gaussian band-pass around ``+k_i``, as a fraction of ``|k_i|``.
        Larger passes more deformation (local tag frequency changes with strain) and noise; it
        must stay well below 0.5 so the DC and the other peaks are excluded.
    demodulate
        Return the baseband ``B_i = I_i exp(-j k_i . x)`` (smooth, easy to interpolate) instead of
        the harmonic image ``I_i`` itself.

    Returns
    -------
    numpy.ndarray
        Complex ``(T, 2, H, W)``.
    """
    im = np.asarray(images, dtype=float)
    if im.ndim == 2:
        im = im[None]
    t, h, w = im.shape
    spec = np.fft.fft2(im)
    fy = np.fft.fftfreq(h)[:, None] * TWO_PI
    fx = np.fft.fftfreq(w)[None, :] * TWO_PI
    out = np.empty((t, 2, h, w), dtype=np.complex128)
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    for i in range(2):
        kx, ky = peaks.k[i]
        sig = bandwidth * math.hypot(kx, ky)
        filt = np.exp(-((fx - kx) ** 2 + (fy - ky) ** 2) / (2 * sig**2))
        hi = np.fft.ifft2(spec * filt[None])
        if demodulate:
            hi = hi * np.exp(-1j * (kx * xx + ky * yy))[None]
        out[:, i] = hi
    return out


def harp_phase(images: np.ndarray, peaks: HarmonicPeaks | None = None, *, bandwidth: float = 0.3) -> np.ndarray:
    """Wrapped harmonic phase images ``(T, 2, H, W)`` in (-pi, pi] (for display and checks)."""
    im = np.asarray(images, dtype=float)
    if im.ndim == 2:
        im = im[None]
    if peaks is None:
        peaks = detect_harmonic_peaks(im[: min(3, len(im))])
    return np.angle(harmonic_images(im, peaks, bandwidth=bandwidth, demodulate=False))


# ----------------------------------------------------------------------------------------------
# 3. tracking
# ----------------------------------------------------------------------------------------------
class PhaseSampler:
    """Bilinear sampling of the demodulated harmonic images of one frame and their gradients."""

    def __init__(self, base: np.ndarray, k: np.ndarray) -> None:
        # base: (2, H, W) complex baseband of one frame
        self.k = k
        self.b = base
        gy, gx = np.gradient(base, axis=(1, 2))
        # stack [B, dB/dx, dB/dy] as real/imag planes: (2 dirs, 3, 2 re/im, H, W)
        self.planes = np.stack(
            [np.stack([base.real, base.imag], 1), np.stack([gx.real, gx.imag], 1), np.stack([gy.real, gy.imag], 1)], 1
        )

    def __call__(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """At points ``xy (2, N)``: phase ``(2, N)``, phase gradient ``(N, 2, 2)`` (row = direction,
        column = d/dx, d/dy) and harmonic magnitude ``(2, N)``."""
        h, w = self.b.shape[1:]
        x = np.clip(xy[0], 0, w - 1.000001)
        y = np.clip(xy[1], 0, h - 1.000001)
        x0 = np.floor(x).astype(int)
        y0 = np.floor(y).astype(int)
        fx = x - x0
        fy = y - y0
        p = self.planes
        v = (
            p[..., y0, x0] * (1 - fx) * (1 - fy)
            + p[..., y0, x0 + 1] * fx * (1 - fy)
            + p[..., y0 + 1, x0] * (1 - fx) * fy
            + p[..., y0 + 1, x0 + 1] * fx * fy
        )
        c = v[:, :, 0] + 1j * v[:, :, 1]  # (2 dirs, 3, N)
        b, bx, by = c[:, 0], c[:, 1], c[:, 2]
        mag2 = np.abs(b) ** 2 + 1e-30
        phase = self.k @ np.stack([x, y]) + np.angle(b)
        gxp = self.k[:, 0:1] + np.imag(np.conj(b) * bx) / mag2
        gyp = self.k[:, 1:2] + np.imag(np.conj(b) * by) / mag2
        grad = np.stack([gxp, gyp], axis=-1).transpose(1, 0, 2)  # (N, 2, 2)
        return phase, grad, np.sqrt(mag2)


def newton_solve(
    sampler: PhaseSampler, x: np.ndarray, target: np.ndarray, n_iter: int, max_step: float, k: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Solve ``W(phi(x) - target) = 0`` from ``x (2, N)``; returns positions and final |residual|."""
    kinv = np.linalg.inv(k)
    res = np.zeros(x.shape[1])
    for _ in range(n_iter):
        ph, grad, _ = sampler(x)
        r = wrap_phase(ph - target)  # (2, N)
        det = grad[:, 0, 0] * grad[:, 1, 1] - grad[:, 0, 1] * grad[:, 1, 0]
        bad = np.abs(det) < 0.05 * abs(np.linalg.det(k))
        # Jacobian fallback: the undeformed carrier matrix
        g = np.where(bad[:, None, None], k[None], grad)
        step = np.linalg.solve(g, r.T[..., None])[..., 0].T  # (2, N)
        norm = np.sqrt((step**2).sum(0))
        scale = np.minimum(1.0, max_step / np.maximum(norm, 1e-12))
        x = x - step * scale
        res = np.sqrt((r**2).sum(0))
        if norm.max() < 1e-4:
            break
    del kinv
    return x, res
