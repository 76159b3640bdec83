"""Tissue properties, bSSFP cine and FLASH tagging signal, coil shading and Rician noise.

Relaxation times at 1.5 T (values as commonly quoted from Stanisz et al., *Magn Reson Med*
2005;54:507-512 for myocardium, blood, liver and skeletal muscle, and de Bazelaire et al.,
*Radiology* 2004;230:652-659 for subcutaneous fat; lung, marrow, fluid, stomach contents and
pericardium are typical values; proton densities are relative, assumptions). They were not
re-verified against the papers, so treat them as plausible rather than exact.

Cine (UK Biobank short-axis bSSFP at 1.5 T; thesis §4.3.1 gives TE 1.1 ms and flip 55 degrees; the
RF repetition time of 2.6 ms is an assumption typical of 1.5 T cine): on-resonance balanced SSFP
steady state (e.g. Scheffler & Lehnhardt, *Eur Radiol* 2003)::

    S = PD sin(a) (1 - E1) exp(-TE/T2) / (1 - (E1 - E2) cos(a) - E1 E2),   Ei = exp(-TR/Ti)

With these values blood/myocardium is ~3.6 and fat is as bright as blood, the familiar bSSFP look.

Two effects outside this single-pool, stationary-spin formula brighten blood relative to myocardium
in real cine, and are drawn per subject (:data:`CINE_CONTRAST_RANGES`, scale factors on the formula):

* **magnetisation transfer** (``myo_scale`` 0.74-0.98): the short, high-flip RF pulses of bSSFP
  partly saturate the macromolecular pool of tissue, which exchanges with free water and lowers the
  steady state of myocardium but not of blood (Bieri & Scheffler, *Magn Reson Med*
  2006;56:1067-1074, who report tissue signal reductions of up to ~40 % at short RF pulses; the
  range here is an assumption within that);
* **flow** (``blood_scale`` 0.85-1.30): through-plane inflow of blood that has not reached the
  steady state raises its signal, intra-voxel dephasing and off-resonance lower it (assumption).

Together they put the blood/myocardium ratio of eroded masks (:func:`cmrkit.metrics.realism.tissue_contrast`,
ED, 16 subjects of seed 0) at 4.5 +- 0.6 (3.2-5.3), inside the range measured on the shared M&Ms
bSSFP cases (3.3-6.1, mean 4.7); before this model the phantom sat at 3.2 +- 0.2.

Noise is set by a drawn *myocardial* SNR (``snr_myo`` 16-27 at the coil reference point, the heart
centre): Rician ``sigma = gain S_myo / snr_myo``; measured with :func:`cmrkit.metrics.realism.snr` this
gives 17.5 +- 2.2 (13-21; before: ~9).
The M&Ms cases give ~19 (15-29) with the residual estimator, an upper bound for real data
because reconstruction filtering lowers the high-frequency noise it sees (assumption: UK Biobank
1.5 T cine sits in the same range).

Tagging (spoiled gradient echo, thesis §4.3.1: TE 3.9 ms, flip 12 degrees): the SPAMM preparation at
the R wave leaves ``Mz = f(X) M0`` (``f`` from :mod:`cmrkit.phantom.tagging`), which relaxes with T1
and is eroded by the imaging pulses (T1 recovery and readout saturation as in Loecher's tagsim,
github.com/mloecher/tag_tracking)::

    Mz(X, t_n) = M0 [1 + (f(X) - 1) exp(-t_n / T1)] * s^n,    S = PD Mz exp(-TE / T2*)

``s`` is an effective per-frame saturation (``cos`` of the flip angle accumulated over the lines of
one frame; assumption ~0.98). Blood is replaced by untagged inflowing blood, so its tag pattern
washes out with a short time constant (``tau_wash`` ~ 60-120 ms; cf. the 30-60 ms effective blood
T1 of Loecher et al.'s tagsim) and it is not saturated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = [
    "TISSUES",
    "TISSUE_INDEX",
    "Tissue",
    "CINE_SEQUENCE",
    "CINE_CONTRAST_RANGES",
    "TAG_SEQUENCE",
    "bssfp_signal",
    "cine_signals",
    "tag_relaxation",
    "smooth_field",
    "add_rician_noise",
]


@dataclass(frozen=True)
class Tissue:
    """Relative proton density and relaxation times (ms) at 1.5 T."""

    pd: float
    t1: float
    t2: float
    t2s: float


#: tissue classes used by the anatomy (index order = class index of the static background maps)
TISSUES: dict[str, Tissue] = {
    "air": Tissue(0.0, 1000.0, 10.0, 1.0),
    "lung": Tissue(0.20, 1200.0, 40.0, 2.0),
    "fat": Tissue(0.90, 343.0, 58.0, 40.0),
    "muscle": Tissue(0.75, 1008.0, 44.0, 28.0),
    "liver": Tissue(0.75, 576.0, 46.0, 25.0),
    "blood": Tissue(0.95, 1441.0, 290.0, 200.0),
    "marrow": Tissue(0.85, 550.0, 60.0, 20.0),
    "fluid": Tissue(1.00, 4000.0, 2000.0, 1000.0),
    "stomach": Tissue(0.90, 2500.0, 300.0, 60.0),
    "myocardium": Tissue(0.80, 1030.0, 45.0, 30.0),
    "pericardium": Tissue(0.30, 800.0, 30.0, 10.0),
}
TISSUE_INDEX = {name: i for i, name in enumerate(TISSUES)}

#: cine bSSFP parameters (TE, flip: thesis §4.3.1; TR: assumption)
CINE_SEQUENCE = {"tr_ms": 2.6, "te_ms": 1.1, "flip_deg": 55.0}
#: per-subject uniform ranges of the cine contrast draws (module docstring: MT, flow, myocardial SNR)
CINE_CONTRAST_RANGES: dict[str, tuple[float, float]] = {
    "blood_scale": (0.85, 1.30),
    "myo_scale": (0.74, 0.98),
    "snr_myo": (16.0, 27.0),
}
#: tagging FLASH parameters (thesis §4.3.1); saturation per frame and blood wash-out: assumptions
TAG_SEQUENCE = {"te_ms": 3.9, "flip_deg": 12.0, "flip_total_deg": 90.0, "binomial_order": 2}


def bssfp_signal(pd: float, t1: float, t2: float, *, tr_ms: float, te_ms: float, flip_deg: float) -> float:
    """On-resonance balanced SSFP steady-state magnitude (see module docstring)."""
    a = math.radians(flip_deg)
    e1, e2 = math.exp(-tr_ms / t1), math.exp(-tr_ms / t2)
    den = 1.0 - (e1 - e2) * math.cos(a) - e1 * e2
    return pd * math.sin(a) * (1.0 - e1) * math.exp(-te_ms / t2) / den


def cine_signals(
    scale: Mapping[str, float] | None = None, sequence: Mapping[str, float] | None = None
) -> dict[str, float]:
    """bSSFP signal of every tissue, normalised so that blood = 1.

    ``scale`` multiplies individual tissues (per-subject variation, e.g. inflow in blood).
    """
    seq = dict(CINE_SEQUENCE, **(sequence or {}))
    raw = {
        name: (
            0.0
            if t.pd == 0
            else bssfp_signal(t.pd, t.t1, t.t2, tr_ms=seq["tr_ms"], te_ms=seq["te_ms"], flip_deg=seq["flip_deg"])
        )
        for name, t in TISSUES.items()
    }
    for k, v in (scale or {}).items():
        raw[k] *= float(v)
    ref = raw["blood"]
    return {k: v / ref for k, v in raw.items()}


def tag_relaxation(
    tissue: str, t_ms: float, frame_index: int, *, saturation: float, tau_wash_ms: float
) -> tuple[float, float]:
    """``(base, depth)`` of the tagging signal of a tissue at time ``t_ms`` after the SPAMM pulses.

    The signal is ``base * (1 + (f - 1) * depth)`` with ``f`` the tag modulation: ``depth =
    exp(-t/T1)`` (T1 recovery; blood: ``exp(-t/tau_wash)``) and ``base = PD exp(-TE/T2*) s^n``
    (readout saturation ``s`` per frame, none for inflowing blood).
    """
    t = TISSUES[tissue]
    te = TAG_SEQUENCE["te_ms"]
    if tissue == "blood":
        return t.pd * math.exp(-te / t.t2s), math.exp(-t_ms / tau_wash_ms)
    return t.pd * math.exp(-te / t.t2s) * saturation**frame_index, math.exp(-t_ms / t.t1)


def smooth_field(
    shape: tuple[int, ...], rng: np.random.Generator, *, correlation_px: float, amplitude: float
) -> np.ndarray:
    """Zero-mean smooth Gaussian random field with unit-ish std times ``amplitude`` (float32)."""
    g = rng.standard_normal(shape).astype(np.float32)
    g = ndimage.gaussian_filter(g, sigma=correlation_px, mode="wrap")
    sd = float(g.std()) or 1.0
    return (amplitude / sd) * g


def add_rician_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of ``img + N(0, sigma^2) + i N(0, sigma^2)`` (Rician), float32."""
    if sigma <= 0:
        return img.astype(np.float32)
    re = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
    im = sigma * rng.standard_normal(img.shape, dtype=np.float32)
    return np.sqrt(re * re + im * im).astype(np.float32)
