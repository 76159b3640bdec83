"""Covariate effects on cardiac phenotypes: regression with confidence intervals, and the phantom's truth.

Chapter 6 asks whether a conditional generator learned *how* age, sex, body size, blood pressure,
smoking and alcohol shape the heart. The phantom cohort was drawn from a known log-linear model
(:mod:`cmrkit.phantom.covariates`, ``phenotype_model.yaml``)::

    log y = log base[sex] + b_bsa log(BSA / BSA_ref[sex]) + b_age (age - 60) / 10 + b_sbp (SBP - 130) / 10
            + b_smk[smoking] + b_alc[alcohol] + eps

so the same regression fitted to real subjects, to generated sequences and to a large Monte Carlo
draw of the model itself gives three comparable sets of coefficients:

* :func:`design_matrix` -- the model's terms for a table of covariates: intercept, ``sex`` (male = 1),
  ``log BSA`` (Mosteller, from height and weight), ``age /10 y`` and ``age x sex /10 y`` (the model's
  LV-mass age slope differs by sex), ``SBP /10 mmHg``, ``DBP /10 mmHg`` (absent from the model: its true
  coefficient is 0, a check), and dummies for previous/current smoking and alcohol;
* :func:`ols` -- ordinary least squares with classical standard errors and Student-t intervals;
* :func:`fit_effects` -- one regression per phenotype: ``log`` of volumes and mass (coefficients are
  relative effects: 0.1 = +10.5 %), EF on its own scale (percentage points);
* :func:`true_effects` -- the same regressions on ``n`` subjects drawn from the phantom's covariate and
  phenotype model (:func:`~cmrkit.phantom.covariates.sample_covariates`,
  :func:`~cmrkit.phantom.covariates.phenotype_targets`): the model's own coefficients including its
  clipping and the derived ESVs, with Monte Carlo error far below the generated sets' (for LVEDV and
  LVM they equal the yaml's parameters, e.g. the LVEDV sex coefficient at equal BSA is
  ``log(165/124) - 0.9 log(1.98/1.72) = 0.159``);
* :func:`expected_phenotypes` and :func:`true_counterfactual` -- the model's phenotypes for given
  covariates with the residual set to 0 (the median heart), or with the same residual draw under two
  covariate sets (the model's own counterfactual).

The phantom's regional-dysfunction cases (``pathology_fraction``) lower EF and raise ESV beyond this
model; they are part of the real cohort, not of :func:`true_effects`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "PHENOTYPE_SCALE",
    "TARGETS",
    "TERM_LABELS",
    "design_matrix",
    "OLSFit",
    "ols",
    "fit_effects",
    "true_effects",
    "expected_phenotypes",
    "true_counterfactual",
]

#: phenotype -> scale of the regression (log: relative effects; linear: units of the phenotype)
PHENOTYPE_SCALE = {"LVEDV": "log", "LVESV": "log", "RVEDV": "log", "RVESV": "log", "LVM": "log", "LVEF": "linear"}
#: kit phenotype -> phantom target key (phenotype_targets / manifest column)
TARGETS = {
    "LVEDV": "lvedv_ml",
    "LVESV": "lvesv_ml",
    "RVEDV": "rvedv_ml",
    "RVESV": "rvesv_ml",
    "LVM": "lvm_g",
    "LVEF": "lvef_pct",
}
#: design term -> human label
TERM_LABELS = {
    "intercept": "intercept",
    "sex": "sex (male vs female)",
    "log_bsa": "log BSA",
    "age": "age per 10 y",
    "age_x_sex": "age x male per 10 y",
    "sbp": "SBP per 10 mmHg",
    "dbp": "DBP per 10 mmHg",
    "smoking_previous": "smoking previous",
    "smoking_current": "smoking current",
    "alcohol_previous": "alcohol previous",
    "alcohol_current": "alcohol current",
}


def design_matrix(
    covariates: pd.DataFrame, names: Sequence[str] | None = None, terms: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """The regression design of the phantom's phenotype model for a table of covariates.

    Parameters
    ----------
    covariates
        Columns ``age, sex, height_cm, weight_kg, smoking, alcohol, sbp, dbp`` (codes as in the manifest).
    names
        The covariates to use (default: every one present); a term is dropped when its covariate is
        not used, and a smoking/alcohol level that never occurs is dropped (it would be all zeros).
    terms
        Keep only these terms (and the intercept), e.g. the main effects for a small sample.

    Returns
    -------
    X, terms
        ``(n, p)`` float64 design with an intercept, and the term keys of :data:`TERM_LABELS`.
    """
    cov = covariates
    use = set(names if names is not None else cov.columns)
    n = len(cov)
    cols: dict[str, np.ndarray] = {"intercept": np.ones(n)}

    def col(name: str) -> np.ndarray:
        v = np.asarray(cov[name], dtype=float)
        if not np.all(np.isfinite(v)):
            raise ValueError(f"design_matrix: covariate {name!r} has missing values")
        return v

    if "sex" in use:
        cols["sex"] = col("sex")
    if {"height_cm", "weight_kg"} <= use:
        bsa = np.sqrt(col("height_cm") * col("weight_kg") / 3600.0)
        cols["log_bsa"] = np.log(bsa)
    if "age" in use:
        cols["age"] = (col("age") - 60.0) / 10.0
        if "sex" in use:
            cols["age_x_sex"] = cols["age"] * cols["sex"]
    if "sbp" in use:
        cols["sbp"] = (col("sbp") - 130.0) / 10.0
    if "dbp" in use:
        cols["dbp"] = (col("dbp") - 80.0) / 10.0
    for cat in ("smoking", "alcohol"):
        if cat in use:
            v = col(cat)
            for code, level in ((1, "previous"), (2, "current")):
                d = (v == code).astype(float)
                if d.any() and not d.all():
                    cols[f"{cat}_{level}"] = d
    if terms is not None:
        unknown = set(terms) - set(TERM_LABELS)
        if unknown:
            raise ValueError(f"design_matrix: unknown term(s) {sorted(unknown)}; known: {list(TERM_LABELS)}")
        cols = {t: v for t, v in cols.items() if t == "intercept" or t in terms}
    keys = list(cols)
    return np.column_stack([cols[t] for t in keys]), keys


@dataclass(frozen=True)
class OLSFit:
    """Least-squares coefficients with standard errors and ``level`` Student-t intervals."""

    terms: tuple[str, ...]
    coef: np.ndarray
    se: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: int
    r2: float
    level: float
    #: why the coefficients are NaN (a fit that could not be estimated), else empty
    note: str = ""

    @property
    def estimable(self) -> bool:
        return not self.note

    def __getitem__(self, term: str) -> dict[str, float]:
        if term not in self.terms:
            raise KeyError(f"term {term!r} not in the fit ({', '.join(self.terms)})")
        i = self.terms.index(term)
        return {
            "coef": float(self.coef[i]),
            "se": float(self.se[i]),
            "low": float(self.low[i]),
            "high": float(self.high[i]),
        }


def _design_problem(X: np.ndarray, terms: Sequence[str]) -> str:
    """Why the design ``X`` ``(n, p)`` cannot be fitted (too few rows, or rank < p), else ``""``."""
    n, p = X.shape
    if n <= p:
        return f"{n} observations for {p} terms ({', '.join(terms)}); need more than {p}"
    rank = np.linalg.matrix_rank(X)
    if rank < p:
        return f"the design of terms {list(terms)} has rank {rank} < {p} (a term does not vary or duplicates another)"
    return ""


def ols(X: np.ndarray, y: np.ndarray, terms: Sequence[str], *, level: float = 0.95) -> OLSFit:
    """Ordinary least squares ``y = X b + e``.

    ``b = (X'X)^-1 X'y`` (via ``lstsq``), ``s^2 = RSS / (n - p)``, ``se = sqrt(diag(s^2 (X'X)^-1))`` and
    the interval ``b ± t_{(1+level)/2, n-p} se``. Rows with a non-finite ``y`` are an error; a design
    of rank < p (e.g. a covariate that does not vary) is an error naming the terms.
    """
    from scipy import stats

    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float).ravel()
    n, p = X.shape
    if len(y) != n:
        raise ValueError(f"ols: {n} design rows but {len(y)} responses")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"ols: {int((~np.isfinite(y)).sum())} non-finite response value(s)")
    problem = _design_problem(X, terms)
    if problem:
        raise ValueError(f"ols: {problem}")
    b, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ b
    dof = n - p
    s2 = float(resid @ resid) / dof
    cov = s2 * np.linalg.inv(X.T @ X)
    se = np.sqrt(np.clip(np.diag(cov), 0, None))
    tq = float(stats.t.ppf((1 + level) / 2, dof))
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(resid @ resid) / ss_tot if ss_tot > 0 else math.nan
    return OLSFit(tuple(terms), b, se, b - tq * se, b + tq * se, n, r2, level)


def _response(values: Any, key: str) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    if PHENOTYPE_SCALE.get(key, "linear") == "log":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(np.where(v > 0, v, np.nan))
    return v


def fit_effects(
    covariates: pd.DataFrame,
    phenotypes: pd.DataFrame,
    *,
    names: Sequence[str] | None = None,
    keys: Sequence[str] = tuple(PHENOTYPE_SCALE),
    terms: Sequence[str] | None = None,
    level: float = 0.95,
) -> dict[str, OLSFit]:
    """One :func:`ols` per phenotype of :data:`PHENOTYPE_SCALE` (log or linear) on :func:`design_matrix`.

    Rows whose phenotype is not finite (or not positive on the log scale, e.g. an empty LV) are left
    out of that phenotype's regression; ``n`` of each fit says how many remained. When too few remain
    for the design (``n`` not above the number of terms, or a term that no longer varies), that
    phenotype's fit is not estimable: NaN coefficients and the reason in :attr:`OLSFit.note` (a
    generator whose masks have no LV must be reported as such, not stop the analysis).
    """
    if len(covariates) != len(phenotypes):
        raise ValueError(f"fit_effects: {len(covariates)} covariate rows but {len(phenotypes)} phenotype rows")
    X, used = design_matrix(covariates.reset_index(drop=True), names, terms)
    out = {}
    for key in keys:
        y = _response(phenotypes[key], key)
        ok = np.isfinite(y)
        problem = _design_problem(X[ok], used)
        if problem:
            valid = f"{key} is finite{' and positive' if PHENOTYPE_SCALE.get(key) == 'log' else ''}"
            why = f"not estimable: {key} valid in {int(ok.sum())} of {len(y)} rows ({valid}); {problem}"
            nan = np.full(len(used), math.nan)
            out[key] = OLSFit(tuple(used), nan, nan, nan, nan, int(ok.sum()), math.nan, level, note=why)
        else:
            out[key] = ols(X[ok], y[ok], used, level=level)
    return out


def _draw_population(n: int, seed: int, model: Mapping[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    from .phantom.covariates import phenotype_targets, sample_covariates

    rng = np.random.default_rng([int(seed), 64])
    covs, phen = [], []
    for _ in range(int(n)):
        c = sample_covariates(rng, model)
        t = phenotype_targets(c, rng, model)
        covs.append(c)
        phen.append({k: t[v] for k, v in TARGETS.items()})
    return pd.DataFrame(covs), pd.DataFrame(phen)


def true_effects(
    *,
    names: Sequence[str] | None = None,
    terms: Sequence[str] | None = None,
    n: int = 20000,
    seed: int = 0,
    level: float = 0.95,
    model: Mapping[str, Any] | None = None,
) -> dict[str, OLSFit]:
    """:func:`fit_effects` on ``n`` subjects drawn from the phantom's covariate and phenotype model (its
    targets, i.e. the healthy hearts the anatomy realises). Deterministic for a given ``seed``."""
    from .phantom.covariates import load_phenotype_model

    cov, ph = _draw_population(n, seed, model or load_phenotype_model())
    return fit_effects(cov, ph, names=names, terms=terms, level=level)


class _NoResidual:
    """Stands in for a numpy Generator in :func:`cmrkit.phantom.covariates.phenotype_targets`: every
    residual draw is 0, so the result is the model's median (log scale) or mean (linear) heart."""

    def standard_normal(self) -> float:
        return 0.0


def _with_bsa(cov: Mapping[str, Any]) -> dict[str, float]:
    from .phantom.covariates import bsa_mosteller

    c = {k: float(v) for k, v in cov.items()}
    c["bsa"] = float(bsa_mosteller(c["height_cm"], c["weight_kg"]))
    return c


def expected_phenotypes(covariates: Mapping[str, Any], model: Mapping[str, Any] | None = None) -> dict[str, float]:
    """The phantom model's phenotypes (kit keys of :data:`TARGETS`) for one covariate set, residuals 0."""
    from .phantom.covariates import load_phenotype_model, phenotype_targets

    t = phenotype_targets(_with_bsa(covariates), _NoResidual(), model or load_phenotype_model())  # type: ignore[arg-type]
    return {k: float(t[v]) for k, v in TARGETS.items()}


def true_counterfactual(
    before: Mapping[str, Any], after: Mapping[str, Any], *, seed: int, model: Mapping[str, Any] | None = None
) -> tuple[dict[str, float], dict[str, float]]:
    """The phantom model's phenotypes of one subject (residuals drawn from ``seed``) under two covariate
    sets: the same residuals, only the covariates changed -- the model's own counterfactual."""
    from .phantom.covariates import load_phenotype_model, phenotype_targets

    mdl = model or load_phenotype_model()
    a = phenotype_targets(_with_bsa(before), np.random.default_rng([int(seed), 65]), mdl)
    b = phenotype_targets(_with_bsa(after), np.random.default_rng([int(seed), 65]), mdl)
    return {k: float(a[v]) for k, v in TARGETS.items()}, {k: float(b[v]) for k, v in TARGETS.items()}
