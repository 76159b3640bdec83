"""Covariate-effect regression and the phantom's true model (cmrkit.effects)."""

import math

import numpy as np
import pandas as pd
import pytest

from cmrkit.effects import (
    TERM_LABELS,
    design_matrix,
    expected_phenotypes,
    fit_effects,
    ols,
    true_counterfactual,
    true_effects,
)
from cmrkit.phantom.covariates import load_phenotype_model


def _covariates(n, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.uniform(45, 80, n),
            "sex": rng.integers(0, 2, n),
            "height_cm": rng.uniform(150, 195, n),
            "weight_kg": rng.uniform(50, 120, n),
            "smoking": rng.integers(0, 3, n),
            "alcohol": rng.integers(0, 3, n),
            "sbp": rng.uniform(100, 180, n),
            "dbp": rng.uniform(60, 100, n),
        }
    )


def test_design_matrix_terms():
    cov = _covariates(50)
    X, terms = design_matrix(cov)
    assert terms == list(TERM_LABELS)
    np.testing.assert_allclose(X[:, terms.index("log_bsa")], np.log(np.sqrt(cov.height_cm * cov.weight_kg / 3600)))
    np.testing.assert_allclose(X[:, terms.index("age_x_sex")], (cov.age - 60) / 10 * cov.sex)
    np.testing.assert_array_equal(X[:, terms.index("smoking_current")], (cov.smoking == 2).astype(float))
    X2, t2 = design_matrix(cov, terms=("sex", "log_bsa"))
    assert t2 == ["intercept", "sex", "log_bsa"] and X2.shape == (50, 3)
    X3, t3 = design_matrix(cov.assign(smoking=0))  # a level that never occurs is dropped
    assert "smoking_previous" not in t3 and "smoking_current" not in t3
    with pytest.raises(ValueError, match="unknown term"):
        design_matrix(cov, terms=("bmi",))


def test_ols_recovers_known_coefficients_with_calibrated_intervals():
    rng = np.random.default_rng(0)
    n = 400
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.integers(0, 2, n)])
    beta = np.array([2.0, -0.7, 0.3])
    covered = 0
    reps = 200
    for _ in range(reps):
        y = X @ beta + rng.normal(scale=0.5, size=n)
        fit = ols(X, y, ["intercept", "x", "d"])
        covered += fit["x"]["low"] <= -0.7 <= fit["x"]["high"]
    assert covered / reps == pytest.approx(0.95, abs=0.04)
    y = X @ beta  # noiseless: exact coefficients, zero standard errors
    fit = ols(X, y + 1e-12 * rng.normal(size=n), ["intercept", "x", "d"])
    np.testing.assert_allclose(fit.coef, beta, atol=1e-9)
    assert fit.r2 == pytest.approx(1.0)
    # closed form against numpy: b = (X'X)^-1 X'y, se = sqrt(diag(s2 (X'X)^-1))
    y = X @ beta + rng.normal(scale=0.5, size=n)
    fit = ols(X, y, ["intercept", "x", "d"])
    b = np.linalg.solve(X.T @ X, X.T @ y)
    s2 = ((y - X @ b) ** 2).sum() / (n - 3)
    np.testing.assert_allclose(fit.coef, b)
    np.testing.assert_allclose(fit.se, np.sqrt(np.diag(s2 * np.linalg.inv(X.T @ X))))


def test_ols_refuses_degenerate_designs():
    X = np.column_stack([np.ones(10), np.ones(10)])
    with pytest.raises(ValueError, match="rank 1 < 2"):
        ols(X, np.arange(10.0), ["intercept", "c"])
    with pytest.raises(ValueError, match="need more than 2"):
        ols(np.eye(2), np.ones(2), ["a", "b"])
    with pytest.raises(ValueError, match="non-finite"):
        ols(np.column_stack([np.ones(5), np.arange(5.0)]), [1, 2, np.nan, 4, 5], ["a", "b"])


def test_fit_effects_recovers_a_log_linear_model():
    cov = _covariates(3000, seed=1)
    bsa = np.sqrt(cov.height_cm * cov.weight_kg / 3600)
    rng = np.random.default_rng(2)
    lvedv = np.exp(
        np.log(120) + 0.16 * cov.sex + 0.9 * np.log(bsa) - 0.04 * (cov.age - 60) / 10 + rng.normal(0, 0.05, len(cov))
    )
    ph = pd.DataFrame({"LVEDV": lvedv, "LVEF": 60 - 3 * cov.sex + rng.normal(0, 1, len(cov))})
    fits = fit_effects(cov, ph, keys=("LVEDV", "LVEF"))
    assert fits["LVEDV"]["sex"]["coef"] == pytest.approx(0.16, abs=0.01)
    assert fits["LVEDV"]["log_bsa"]["coef"] == pytest.approx(0.9, abs=0.03)
    assert fits["LVEDV"]["age"]["coef"] == pytest.approx(-0.04, abs=0.01)
    assert abs(fits["LVEDV"]["sbp"]["coef"]) < 0.01
    assert fits["LVEF"]["sex"]["coef"] == pytest.approx(-3.0, abs=0.15)


def test_fit_effects_reports_a_phenotype_it_cannot_estimate_instead_of_failing():
    """A generator whose masks have no LV (every LVEDV 0) or an LV only in men: NaN with the reason."""
    cov = _covariates(60, seed=3)
    rng = np.random.default_rng(4)
    lvedv = np.exp(np.log(120) + 0.16 * cov.sex + rng.normal(0, 0.05, len(cov)))
    ph = pd.DataFrame(
        {
            "LVEDV": lvedv,
            "LVESV": np.zeros(len(cov)),  # empty LV at ES in every sequence
            "LVM": np.where(cov.sex == 1, lvedv, 0.0),  # a myocardium only in men: sex no longer varies
        }
    )
    fits = fit_effects(cov, ph, keys=("LVEDV", "LVESV", "LVM"))
    assert fits["LVEDV"].estimable and fits["LVEDV"].n == 60 and fits["LVEDV"].note == ""
    es = fits["LVESV"]
    assert not es.estimable and es.n == 0 and math.isnan(es["sex"]["coef"]) and math.isnan(es.r2)
    assert "LVESV valid in 0 of 60 rows" in es.note and "positive" in es.note
    m = fits["LVM"]
    assert not m.estimable and m.n == int(cov.sex.sum()) and "does not vary" in m.note
    assert math.isnan(m["log_bsa"]["se"])
    # the strict solver itself still refuses such data
    X, terms = design_matrix(cov)
    with pytest.raises(ValueError, match="observations"):
        ols(X[:3], np.ones(3), terms)


def test_true_effects_are_the_yaml_parameters():
    m = load_phenotype_model()
    lv, lvm = m["phenotypes"]["lvedv_ml"], m["phenotypes"]["lvm_g"]
    ref = m["reference_bsa_m2"]
    sex_lv = math.log(lv["base"]["male"] / lv["base"]["female"]) - lv["bsa_exponent"] * math.log(
        ref["male"] / ref["female"]
    )
    sex_lvm = math.log(lvm["base"]["male"] / lvm["base"]["female"]) - lvm["bsa_exponent"] * math.log(
        ref["male"] / ref["female"]
    )
    te = true_effects(n=6000, seed=3)
    assert te["LVEDV"]["sex"]["coef"] == pytest.approx(sex_lv, abs=0.015)
    assert te["LVEDV"]["log_bsa"]["coef"] == pytest.approx(lv["bsa_exponent"], abs=0.05)
    assert te["LVEDV"]["age"]["coef"] == pytest.approx(lv["age_per_decade"], abs=0.01)
    assert te["LVM"]["sex"]["coef"] == pytest.approx(sex_lvm, abs=0.02)
    assert te["LVM"]["log_bsa"]["coef"] == pytest.approx(lvm["bsa_exponent"], abs=0.06)
    assert te["LVM"]["sbp"]["coef"] == pytest.approx(lvm["sbp_per_10mmhg"], abs=0.01)
    assert te["LVM"]["age_x_sex"]["coef"] == pytest.approx(lvm["age_per_decade"]["male"], abs=0.012)
    assert abs(te["LVEDV"]["dbp"]["coef"]) < 0.01  # DBP is not in the model


def test_expected_phenotypes_and_true_counterfactual():
    m = load_phenotype_model()
    lv = m["phenotypes"]["lvedv_ml"]
    # a woman of reference BSA at the reference age and SBP, never smoked, never drank: the base value
    h = 163.0
    w = m["reference_bsa_m2"]["female"] ** 2 * 3600 / h
    cov = {"age": 60, "sex": 0, "height_cm": h, "weight_kg": w, "smoking": 0, "alcohol": 0, "sbp": 130, "dbp": 80}
    e = expected_phenotypes(cov)
    assert e["LVEDV"] == pytest.approx(lv["base"]["female"], rel=1e-6)
    assert e["LVEF"] == pytest.approx(m["phenotypes"]["lvef_pct"]["base"]["female"])
    assert e["LVESV"] == pytest.approx(e["LVEDV"] * (1 - e["LVEF"] / 100))
    # same residual draw: weight 60 -> 100 kg scales LVEDV by (100/60)^(b_bsa / 2)
    a, b = true_counterfactual({**cov, "weight_kg": 60.0}, {**cov, "weight_kg": 100.0}, seed=5)
    assert b["LVEDV"] / a["LVEDV"] == pytest.approx((100 / 60) ** (lv["bsa_exponent"] / 2), rel=1e-6)
    a2, _ = true_counterfactual({**cov, "weight_kg": 60.0}, {**cov, "weight_kg": 100.0}, seed=6)
    assert a2["LVEDV"] != pytest.approx(a["LVEDV"])  # another residual draw
