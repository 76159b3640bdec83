"""cmrkit.metrics.distribution: KL divergence and Wasserstein distance against closed forms and
scipy, empty bins, bootstrap intervals, input errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from cmrkit.metrics import distribution as dist


def _kl_normal(m1: float, s1: float, m2: float, s2: float) -> float:
    return math.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5


@pytest.fixture(scope="module")
def samples() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(0.0, 1.0, 4000), rng.normal(1.0, 1.5, 4000)


def test_kl_kde_close_to_closed_form(samples):
    p, q = samples
    est = dist.kl_divergence(p, q)
    # a Scott-rule KDE inflates each variance by (1 + f^2), f = n^(-1/5); compare with the smoothed closed form
    f2 = 4000 ** (-0.4)
    smoothed = _kl_normal(0, math.sqrt(1 + f2), 1, 1.5 * math.sqrt(1 + f2))
    assert est == pytest.approx(smoothed, abs=0.03)
    assert est == pytest.approx(_kl_normal(0, 1, 1, 1.5), abs=0.06)
    assert dist.kl_divergence(q, p) > est  # asymmetric: the wider Q covers P better than P covers Q
    assert dist.kl_divergence(p, p) == pytest.approx(0.0, abs=1e-12)


def test_kl_kde_integral_matches_scipy_quadrature(samples):
    p, q = samples[0][:300], samples[1][:300]
    kp, kq = stats.gaussian_kde(p), stats.gaussian_kde(q)
    ref = integrate.quad(lambda x: kp(x)[0] * (kp.logpdf(x)[0] - kq.logpdf(x)[0]), -12, 14, limit=400)[0]
    assert dist.kl_divergence(p, q, n_grid=4096) == pytest.approx(ref, rel=2e-3)
    assert dist.kde_bandwidth(p) == pytest.approx(math.sqrt(kp.covariance[0, 0]), rel=1e-12)


def test_kl_histogram_equals_scipy_entropy_and_handles_empty_bins(samples):
    p, q = samples
    edges = np.histogram_bin_edges(np.concatenate([p, q]), bins=30)
    cp, cq = np.histogram(p, edges)[0] + 0.5, np.histogram(q, edges)[0] + 0.5
    assert dist.kl_divergence(p, q, method="histogram", bins=30) == pytest.approx(stats.entropy(cp, cq), rel=1e-12)
    # disjoint supports: every bin is empty for one sample, the smoothed estimate stays finite and large
    far = dist.kl_divergence(p, p + 50, method="histogram", bins=40)
    assert math.isfinite(far) and far > 3
    assert dist.kl_divergence(p, p + 50) > 100  # KDE: finite, huge


def test_wasserstein_closed_forms():
    u, v = np.array([0.0, 1.0, 3.0]), np.array([5.0, 6.0, 8.0])
    assert dist.wasserstein(u, v) == pytest.approx(5.0)
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 500), rng.normal(0, 2, 500)
    assert dist.wasserstein(a, b) == pytest.approx(np.mean(np.abs(np.sort(a) - np.sort(b))), rel=1e-12)
    assert dist.wasserstein(a, a + 2.5) == pytest.approx(2.5)
    assert dist.wasserstein(a, b) == pytest.approx(dist.wasserstein(b, a))


def test_bootstrap_intervals():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, 300), rng.normal(0.5, 1, 300)
    est = dist.wasserstein(a, b, n_boot=200, rng=0)
    assert isinstance(est, dist.BootstrapEstimate) and est.n_boot == 200 and est.level == 0.95
    assert est.value == pytest.approx(dist.wasserstein(a, b))
    assert est.low < 0.5 < est.high and est.low < est.value < est.high
    assert dist.wasserstein(a, b, n_boot=200, rng=0) == est  # seeded: reproducible
    kl = dist.kl_divergence(a, b, n_boot=50, rng=1, n_grid=256)
    assert kl.low <= kl.value <= kl.high and kl.low >= 0
    hist = dist.kl_divergence(a, b, method="histogram", n_boot=50, rng=1)
    assert hist.low < hist.high


def test_bad_inputs_raise_clear_errors():
    a = np.arange(10.0)
    with pytest.raises(ValueError, match="NaN"):
        dist.kl_divergence(np.r_[a, np.nan], a)
    with pytest.raises(ValueError, match="1-D"):
        dist.wasserstein(np.ones((3, 3)), a)
    with pytest.raises(ValueError, match="at least 2"):
        dist.kl_divergence(a[:1], a)
    with pytest.raises(ValueError, match="constant"):
        dist.kl_divergence(np.ones(10), a)
    with pytest.raises(ValueError, match="method"):
        dist.kl_divergence(a, a, method="knn")
    with pytest.raises(ValueError, match="bandwidth"):
        dist.kl_divergence(a, a, bandwidth="auto")
    with pytest.raises(ValueError, match="alpha"):
        dist.kl_divergence(a, a, method="histogram", alpha=0)
