"""cmrkit.stats: Bland-Altman against a hand computation, paired summaries against scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from cmrkit import stats

A = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
B = np.array([1.1, 1.9, 3.2, 3.8, 5.3])


def test_bland_altman_hand_computation():
    res = stats.bland_altman(A, B)
    d = [-0.1, 0.1, -0.2, 0.2, -0.3]  # a - b
    bias = -0.3 / 5
    sd = math.sqrt(sum((x - bias) ** 2 for x in d) / 4)  # = sqrt(0.172 / 4)
    assert res.n == 5
    assert res.bias == pytest.approx(-0.06)
    assert res.sd == pytest.approx(sd) and res.sd == pytest.approx(math.sqrt(0.043))
    assert (res.loa_low, res.loa_high) == pytest.approx((bias - 1.96 * sd, bias + 1.96 * sd))
    t4 = 2.7764451051977987  # two-sided 95 % Student t with 4 degrees of freedom
    assert res.bias_ci == pytest.approx((bias - t4 * sd / math.sqrt(5), bias + t4 * sd / math.sqrt(5)))
    assert res.loa_high_ci[1] - res.loa_high_ci[0] == pytest.approx(2 * t4 * sd * math.sqrt(3 / 5))
    np.testing.assert_allclose(res.mean, (A + B) / 2)
    np.testing.assert_allclose(res.diff, d)
    assert res.within_loa == 1.0


def test_paired_summary_matches_scipy():
    rng = np.random.default_rng(0)
    a = rng.normal(-0.2, 0.03, 40)
    b = a + rng.normal(0.01, 0.01, 40)
    s = stats.paired_summary(a, b)
    assert s.n == 40 and s.mean_a == pytest.approx(a.mean()) and s.sd_b == pytest.approx(b.std(ddof=1))
    assert s.mean_diff == pytest.approx((a - b).mean()) and s.sd_diff == pytest.approx((a - b).std(ddof=1))
    assert s.t_pvalue == pytest.approx(st.ttest_rel(a, b).pvalue)
    assert s.wilcoxon_pvalue == pytest.approx(st.wilcoxon(a, b).pvalue)
    same = stats.paired_summary(a, a)
    assert same.t_pvalue == 1.0 and math.isnan(same.wilcoxon_pvalue)
    assert stats.format_mean_sd(0.8612, 0.0391) == "0.86 ± 0.04"


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="equal length"):
        stats.bland_altman(A, B[:4])
    with pytest.raises(ValueError, match="NaN"):
        stats.bland_altman(np.r_[A, np.nan], np.r_[B, 1.0])
    with pytest.raises(ValueError, match="at least 2 pairs"):
        stats.paired_summary([1.0], [2.0])
    with pytest.raises(ValueError, match="x contains 1 NaN"):
        stats.as_finite_vector([1.0, np.nan], "x")
    with pytest.raises(ValueError, match="x is empty"):
        stats.as_finite_vector([], "x")
