"""Covariate sampling and the covariate -> phenotype model."""

from __future__ import annotations

import numpy as np
import pytest

from cmrkit.phantom import bsa_mosteller, load_phenotype_model, sample_cohort_params
from cmrkit.phantom.covariates import COVARIATES, phenotype_targets, sample_covariates


def test_bsa_mosteller_closed_form():
    # sqrt(180 * 80 / 3600) = 2.0 exactly
    assert bsa_mosteller(180.0, 80.0) == pytest.approx(2.0)
    assert bsa_mosteller(160.0, 57.6) == pytest.approx(np.sqrt(160 * 57.6 / 3600))


def test_model_file_has_sources_for_every_phenotype():
    m = load_phenotype_model()
    assert {"petersen2017", "jama2018"} <= set(m["sources"])
    for name, p in m["phenotypes"].items():
        assert p["min"] < p["max"], name
        assert "base" in p and "residual_sd" in p, name


def _draw(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        cov = sample_covariates(rng)
        rows.append((cov, phenotype_targets(cov, rng)))
    return rows


def test_covariate_ranges_and_codes():
    rows = _draw(400)
    covs = [c for c, _ in rows]
    for c in covs:
        assert set(COVARIATES) <= set(c)
        assert c["sex"] in (0, 1) and c["smoking"] in (0, 1, 2) and c["alcohol"] in (0, 1, 2)
        assert 45 <= c["age"] <= 80 and 147 <= c["height_cm"] <= 200
        assert c["dbp"] <= c["sbp"] - 20 + 1e-9
        assert c["bsa"] == pytest.approx(bsa_mosteller(c["height_cm"], c["weight_kg"]), abs=1e-3)
    sbp = np.array([c["sbp"] for c in covs])
    assert 125 < sbp.mean() < 145  # UK Biobank 133.75 +- 17.93 plus the age shift
    smk = np.bincount([c["smoking"] for c in covs], minlength=3) / len(covs)
    assert abs(smk[0] - 0.55) < 0.08 and abs(smk[2] - 0.10) < 0.05


def test_phenotype_model_directions():
    rows = _draw(1500, seed=1)
    sex = np.array([c["sex"] for c, _ in rows])
    bsa = np.array([c["bsa"] for c, _ in rows])
    edv = np.array([t["lvedv_ml"] for _, t in rows])
    lvm = np.array([t["lvm_g"] for _, t in rows])
    ef = np.array([t["lvef_pct"] for _, t in rows])
    # men larger, women higher EF (Petersen 2017), volumes grow with BSA within sex
    assert edv[sex == 1].mean() > 1.15 * edv[sex == 0].mean()
    assert lvm[sex == 1].mean() > 1.2 * lvm[sex == 0].mean()
    assert ef[sex == 0].mean() - ef[sex == 1].mean() > 1.5
    for s in (0, 1):
        assert np.corrcoef(bsa[sex == s], edv[sex == s])[0, 1] > 0.2
    # reference means at the reference BSA, e.g. women's LVM/BSA ~ 42 g/m2
    lvm_i = (lvm / bsa)[sex == 0]
    assert 36 < np.median(lvm_i) < 48
    for _, t in rows:
        assert t["lvesv_ml"] == pytest.approx(t["lvedv_ml"] * (1 - t["lvef_pct"] / 100))


def test_cohort_params_are_per_index_deterministic():
    a = sample_cohort_params(4, seed=3)
    b = sample_cohort_params(2, seed=3, start=2)
    assert a[2].to_dict() == b[0].to_dict() and a[3].to_dict() == b[1].to_dict()
    assert a[0].to_dict() != sample_cohort_params(1, seed=4)[0].to_dict()
    # the pathology fraction changes only the pathology, not the other draws
    c = sample_cohort_params(4, seed=3, pathology_fraction=1.0)
    assert all(x.covariates == y.covariates and x.draws == y.draws for x, y in zip(a, c))
    assert all(x.pathology is not None for x in c)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="pathology_fraction"):
        sample_cohort_params(2, seed=0, pathology_fraction=1.5)
    with pytest.raises(ValueError, match="n must be"):
        sample_cohort_params(-1)
    with pytest.raises(ValueError, match="seed"):
        sample_cohort_params(1, seed=-3)
