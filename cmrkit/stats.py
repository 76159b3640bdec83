"""Agreement statistics and the plot helpers behind the thesis figures.

* :func:`bland_altman` / :func:`bland_altman_plot` — bias and 95 % limits of agreement (Bland &
  Altman 1986, Lancet; thesis §4.3.8, Fig. 4.8: "mean difference ± 1.96 × SD of differences").
* :func:`paired_summary` — mean ± SD of each method, of the paired differences, and paired tests
  (Table 4.2 layout; thesis §4.3.8 uses SciPy statistics).
* :func:`violin_plot`, :func:`box_plot` — grouped violins/boxes (Fig. 4.9 strain distributions,
  Fig. 5.3 volumes of real vs generated masks).
* :func:`format_mean_sd` — ``"0.86 ± 0.04"`` strings for tables.

Plot helpers draw on a given (or new) matplotlib ``Axes`` and return it; saving figures is the
caller's business (``cmrkit.figures`` / ``cmrkit.utils.atomic_path``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "BlandAltman",
    "bland_altman",
    "bland_altman_plot",
    "PairedSummary",
    "paired_summary",
    "violin_plot",
    "box_plot",
    "format_mean_sd",
]

ArrayLike = Any


def _vector(x: ArrayLike, name: str) -> np.ndarray:
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
    x, y = _vector(a, "a"), _vector(b, "b")
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


def bland_altman_plot(
    a: ArrayLike,
    b: ArrayLike,
    *,
    ax: Any = None,
    k: float = 1.96,
    title: str | None = None,
    xlabel: str = "Mean of the two measurements",
    ylabel: str = "Difference (a - b)",
    annotate: bool = True,
    digits: int = 3,
    scatter_kw: Mapping[str, Any] | None = None,
) -> Any:
    """Scatter of differences against means with the bias (solid) and the limits of agreement
    (dashed), as thesis Fig. 4.8. Returns the ``Axes``; the :class:`BlandAltman` result is in
    ``ax.bland_altman``."""
    import matplotlib.pyplot as plt

    res = bland_altman(a, b, k=k)
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.5))
    kw = {"s": 14, "alpha": 0.7, "color": "tab:blue", "edgecolors": "none", **(scatter_kw or {})}
    ax.scatter(res.mean, res.diff, **kw)
    ax.axhline(res.bias, color="k", lw=1.2, ls="-")
    for y in (res.loa_low, res.loa_high):
        ax.axhline(y, color="tab:red", lw=1.0, ls="--")
    if annotate:
        tr = ax.get_yaxis_transform()
        ax.text(1.0, res.bias, f" bias {res.bias:.{digits}f}", transform=tr, va="bottom", ha="right", fontsize=8)
        ax.text(
            1.0,
            res.loa_high,
            f" +{k:g} SD {res.loa_high:.{digits}f}",
            transform=tr,
            va="bottom",
            ha="right",
            fontsize=8,
        )
        ax.text(
            1.0, res.loa_low, f" -{k:g} SD {res.loa_low:.{digits}f}", transform=tr, va="top", ha="right", fontsize=8
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.bland_altman = res
    return ax


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


def _groups(
    data: Mapping[str, Any] | Sequence[Any], labels: Sequence[str] | None
) -> tuple[list[str], list[str] | None, list[list[np.ndarray]]]:
    """Normalise {x: values} / {x: {hue: values}} / [values, ...] into (x labels, hue labels, arrays[x][hue])."""
    if isinstance(data, Mapping):
        xs = [str(k) for k in data]
        vals = list(data.values())
    else:
        vals = list(data)
        xs = list(labels) if labels is not None else [str(i) for i in range(len(vals))]
    if not vals:
        raise ValueError("no groups to plot")
    if len(xs) != len(vals):
        raise ValueError(f"labels has {len(xs)} entries for {len(vals)} groups")
    if all(isinstance(v, Mapping) for v in vals):
        hues = list(dict.fromkeys(str(h) for v in vals for h in v))
        arrs = [[_vector(v[h], f"{x}/{h}") if h in v else np.empty(0) for h in hues] for x, v in zip(xs, vals)]
        return xs, hues, arrs
    if any(isinstance(v, Mapping) for v in vals):
        raise ValueError("mix of grouped ({hue: values}) and plain groups")
    return xs, None, [[_vector(v, x)] for x, v in zip(xs, vals)]


def _grouped_plot(
    kind: str,
    data: Mapping[str, Any] | Sequence[Any],
    *,
    ax: Any,
    labels: Sequence[str] | None,
    colors: Sequence[str] | None,
    width: float,
    ylabel: str | None,
    title: str | None,
    legend: bool,
    **kw: Any,
) -> Any:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    xs, hues, arrs = _groups(data, labels)
    nh = 1 if hues is None else len(hues)
    cycle = list(colors) if colors is not None else plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if ax is None:
        _, ax = plt.subplots(figsize=(max(3.5, 1.2 * len(xs) * nh), 3.5))
    w = width / nh
    for h in range(nh):
        pos = [i + (h - (nh - 1) / 2) * w for i in range(len(xs))]
        data_h = [arrs[i][h] for i in range(len(xs))]
        keep = [j for j, a in enumerate(data_h) if a.size]
        if not keep:
            continue
        color = cycle[h % len(cycle)]
        pts, vals = [pos[j] for j in keep], [data_h[j] for j in keep]
        if kind == "violin":
            parts = ax.violinplot(vals, positions=pts, widths=w * 0.9, showmedians=False, showextrema=False, **kw)
            for body in parts["bodies"]:
                body.set_facecolor(color)
                body.set_edgecolor("k")
                body.set_alpha(0.6)
            for p, v in zip(pts, vals):  # Fig. 4.9 style: IQR bar and white median dot
                q1, med, q3 = np.percentile(v, [25, 50, 75])
                ax.vlines(p, q1, q3, color="k", lw=4)
                ax.scatter([p], [med], color="white", s=12, zorder=3)
        else:
            bp = ax.boxplot(vals, positions=pts, widths=w * 0.8, patch_artist=True, manage_ticks=False, **kw)
            for box in bp["boxes"]:
                box.set_facecolor(color)
                box.set_alpha(0.7)
            for med in bp["medians"]:
                med.set_color("k")
    ax.set_xticks(range(len(xs)))
    ax.set_xticklabels(xs)
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if legend and hues is not None:
        ax.legend(
            handles=[Patch(facecolor=cycle[h % len(cycle)], alpha=0.6, label=hues[h]) for h in range(nh)],
            frameon=False,
            fontsize=8,
        )
    return ax


def violin_plot(
    data: Mapping[str, Any] | Sequence[Any],
    *,
    ax: Any = None,
    labels: Sequence[str] | None = None,
    colors: Sequence[str] | None = None,
    width: float = 0.8,
    ylabel: str | None = None,
    title: str | None = None,
    legend: bool = True,
    **kw: Any,
) -> Any:
    """Violins per group, optionally split by a second factor drawn side by side.

    ``data``: ``{"Basal": values, ...}`` or ``{"Basal": {"Original": v1, "Generated": v2}, ...}``
    (Fig. 4.9), or a list of arrays with ``labels``. Each violin shows the KDE (matplotlib), the
    interquartile range (black bar) and the median (white dot). Returns the ``Axes``.
    """
    return _grouped_plot(
        "violin",
        data,
        ax=ax,
        labels=labels,
        colors=colors,
        width=width,
        ylabel=ylabel,
        title=title,
        legend=legend,
        **kw,
    )


def box_plot(
    data: Mapping[str, Any] | Sequence[Any],
    *,
    ax: Any = None,
    labels: Sequence[str] | None = None,
    colors: Sequence[str] | None = None,
    width: float = 0.8,
    ylabel: str | None = None,
    title: str | None = None,
    legend: bool = True,
    **kw: Any,
) -> Any:
    """Box plots per group, optionally split by a second factor (Fig. 5.3:
    ``{"LVV": {"Real": v, "n=1000": g1, "n=2000": g2, "n=4000": g4}, ...}``). Whiskers at 1.5 IQR
    (matplotlib default). Returns the ``Axes``."""
    return _grouped_plot(
        "box", data, ax=ax, labels=labels, colors=colors, width=width, ylabel=ylabel, title=title, legend=legend, **kw
    )
