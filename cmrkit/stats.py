"""Agreement statistics behind the thesis tables (numbers only; the plots are in :mod:`cmrkit.figures`).

* :func:`bland_altman` — bias and 95 % limits of agreement (Bland & Altman 1986, Lancet; thesis
  §4.3.8, Fig. 4.8: "mean difference ± 1.96 × SD of differences"); drawn by
  :func:`cmrkit.figures.bland_altman_plot`.
* :func:`paired_summary` — mean ± SD of each method, of the paired differences, and paired tests
  (Table 4.2 layout; thesis §4.3.8 uses SciPy statistics).
* :func:`format_mean_sd` — ``"0.86 ± 0.04"`` strings for tables.
* :func:`as_finite_vector` — the input check every function here applies (also used by the plots).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "BlandAltman",
    "bland_altman",
    "PairedSummary",
    "paired_summary",
    "format_mean_sd",
    "as_finite_vector",
]

ArrayLike = Any


def as_finite_vector(x: ArrayLike, name: str) -> np.ndarray:
    """``x`` (array, list or torch tensor) flattened to a float64 vector; ``ValueError`` naming
    ``name`` when it is empty or holds NaN or infinite values."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(arr).all():
        raise ValueError(
            f"{name} contains {int((~np.isfinite(arr)).sum())} NaN or infinite value(s); drop the pairs first"
        )
    return arr


def _pair(a: ArrayLike, b: ArrayLike, min_n: int = 2) -> tuple[np.ndarray, np.ndarray]:
    x, y = as_finite_vector(a, "a"), as_finite_vector(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"a and b must be paired measurements of equal length, got {x.size} and {y.size}")
    if x.size < min_n:
        raise ValueError(f"need at least {min_n} pairs, got {x.size}")
    return x, y


@dataclass(frozen=True)
class BlandAltman:
    """Bland-Altman agreement of method ``a`` against method ``b`` (differences are ``a - b``)."""

    n: int
    bias: float
    sd: float
    loa_low: float
    loa_high: float
    k: float
    bias_ci: tuple[float, float]
    loa_low_ci: tuple[float, float]
    loa_high_ci: tuple[float, float]
    ci_level: float
    mean: np.ndarray = field(repr=False)
    diff: np.ndarray = field(repr=False)

    @property
    def within_loa(self) -> float:
        """Fraction of pairs whose difference lies within the limits of agreement."""
        return float(np.mean((self.diff >= self.loa_low) & (self.diff <= self.loa_high)))


def bland_altman(a: ArrayLike, b: ArrayLike, *, k: float = 1.96, ci_level: float = 0.95) -> BlandAltman:
    """Bias and limits of agreement between paired measurements.

    ``d_i = a_i - b_i``, ``m_i = (a_i + b_i) / 2``; bias ``= mean(d)``; ``sd = SD(d)`` (ddof=1);
    limits of agreement ``bias ± k sd`` with ``k = 1.96`` as in the thesis (Fig. 4.8).
    Confidence intervals (Bland & Altman 1986, §"precision of estimated limits"): bias
    ``± t sd/√n``, each limit ``± t sd √(3/n)``, ``t`` the two-sided Student quantile with
    ``n - 1`` degrees of freedom at ``ci_level``.
    """
    from scipy.stats import t as student_t

    x, y = _pair(a, b)
    d, m = x - y, (x + y) / 2
    n = d.size
    bias, sd = float(d.mean()), float(d.std(ddof=1))
    tq = float(student_t.ppf((1 + ci_level) / 2, n - 1))
    se_bias, se_loa = sd / math.sqrt(n), sd * math.sqrt(3.0 / n)
    lo, hi = bias - k * sd, bias + k * sd
    return BlandAltman(
        n,
        bias,
        sd,
        lo,
        hi,
        float(k),
        (bias - tq * se_bias, bias + tq * se_bias),
        (lo - tq * se_loa, lo + tq * se_loa),
        (hi - tq * se_loa, hi + tq * se_loa),
        float(ci_level),
        m,
        d,
    )


@dataclass(frozen=True)
class PairedSummary:
    """Mean ± SD of two paired methods, of their differences (``a - b``) and paired test p-values."""

    n: int
    mean_a: float
    sd_a: float
    mean_b: float
    sd_b: float
    mean_diff: float
    sd_diff: float
    t_stat: float
    t_pvalue: float
    wilcoxon_pvalue: float

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def paired_summary(a: ArrayLike, b: ArrayLike) -> PairedSummary:
    """Paired difference summary (Table 4.2: original vs generated strain).

    Means and sample SDs (ddof=1) of ``a``, ``b`` and ``d = a - b``; paired t-test
    (``scipy.stats.ttest_rel``) and Wilcoxon signed-rank test (``scipy.stats.wilcoxon``,
    two-sided; NaN when all differences are zero).
    """
    from scipy import stats as st

    x, y = _pair(a, b)
    d = x - y
    if np.all(d == 0):
        t_stat, t_p, w_p = 0.0, 1.0, math.nan
    else:
        tt = st.ttest_rel(x, y)
        t_stat, t_p = float(tt.statistic), float(tt.pvalue)
        w_p = float(st.wilcoxon(x, y).pvalue)
    return PairedSummary(
        int(x.size),
        float(x.mean()),
        float(x.std(ddof=1)),
        float(y.mean()),
        float(y.std(ddof=1)),
        float(d.mean()),
        float(d.std(ddof=1)),
        t_stat,
        t_p,
        w_p,
    )


def format_mean_sd(mean: float, sd: float, digits: int = 2) -> str:
    """``"mean ± sd"`` with ``digits`` decimals (``"nan"`` parts stay visible)."""
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"
