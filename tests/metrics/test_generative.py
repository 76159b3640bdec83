"""cmrkit.metrics.generative: Fréchet distance closed forms and MONAI, brute-force precision/recall
and MMD references, image Fréchet distance, diversity/similarity scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.linalg import sqrtm
from scipy.spatial.distance import cdist, pdist

from cmrkit.metrics import generative as gen


def _spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# --------------------------------------------------------------------------------------------
# Fréchet distance
# --------------------------------------------------------------------------------------------
def test_frechet_closed_forms():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    a, b = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    # diagonal covariances: ||dmu||^2 + sum (sqrt(a) - sqrt(b))^2
    exp = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert gen.frechet_distance_from_stats(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(exp, rel=1e-10)
    # general SPD matrices against scipy's sqrtm of the product
    s1, s2 = _spd(rng, 6), _spd(rng, 6)
    ref = np.trace(s1 + s2 - 2 * np.real(sqrtm(s1 @ s2)))
    assert gen.frechet_distance_from_stats(np.zeros(6), s1, np.zeros(6), s2) == pytest.approx(ref, rel=1e-8)
    assert gen.frechet_distance_from_stats(mu1, s1[:5, :5], mu1, s1[:5, :5]) == pytest.approx(0.0, abs=1e-10)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        gen.frechet_distance_from_stats(mu1, s1, mu2, s2)


def test_frechet_on_samples_matches_monai_and_the_population_value():
    from monai.metrics import FIDMetric

    rng = np.random.default_rng(1)
    s1, s2 = _spd(rng, 3), _spd(rng, 3)
    mu1, mu2 = np.array([0.0, 1.0, 0.0]), np.array([0.5, 0.0, -0.5])
    x = rng.multivariate_normal(mu1, s1, 20000)
    y = rng.multivariate_normal(mu2, s2, 20000)
    fd = gen.frechet_distance(x, y)
    assert fd == pytest.approx(float(FIDMetric()(torch.from_numpy(y), torch.from_numpy(x))), rel=1e-9)
    assert fd == pytest.approx(gen.frechet_distance_from_stats(mu1, s1, mu2, s2), abs=0.04)
    assert gen.frechet_distance(y, x) == pytest.approx(fd, rel=1e-10)  # symmetric
    # few samples, many features: the cross-Gram (nuclear norm) route equals the covariance route
    small_x, small_y = rng.standard_normal((30, 50)), rng.standard_normal((40, 50)) + 0.2
    via_stats = gen.frechet_distance_from_stats(
        small_x.mean(0), np.cov(small_x, rowvar=False), small_y.mean(0), np.cov(small_y, rowvar=False)
    )
    assert gen.frechet_distance(small_x, small_y) == pytest.approx(via_stats, rel=1e-7)  # singular covariances
    assert gen.frechet_distance(small_x, small_y) == pytest.approx(
        float(FIDMetric()(torch.from_numpy(small_y), torch.from_numpy(small_x))), rel=1e-6
    )
    with pytest.raises(ValueError, match="feature dimensions differ"):
        gen.frechet_distance(x, y[:, :2])
    with pytest.raises(ValueError, match=r"\(N, F\)"):
        gen.frechet_distance(x[:, 0], y[:, 0])


# --------------------------------------------------------------------------------------------
# improved precision / recall
# --------------------------------------------------------------------------------------------
def _ref_pr(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Kynkäänniemi et al.'s reference procedure with full distance matrices (np.partition incl. self)."""

    def radii(x):
        d = cdist(x, x, "sqeuclidean")
        return np.partition(d, k, axis=1)[:, k]

    rr, rf = radii(real), radii(fake)
    d = cdist(fake, real, "sqeuclidean")
    precision = np.mean((d <= rr[None, :]).any(axis=1))
    recall = np.mean((d.T <= rf[None, :]).any(axis=1))
    return float(precision), float(recall)


def test_precision_recall_matches_reference_and_closed_cases():
    rng = np.random.default_rng(2)
    real = rng.standard_normal((300, 16))
    fake = 0.6 * rng.standard_normal((250, 16)) + 0.3  # concentrated: high precision, low recall
    pr = gen.precision_recall(real, fake)
    assert (pr.precision, pr.recall) == pytest.approx(_ref_pr(real, fake), abs=1e-12)
    assert pr.precision > 0.9 and pr.recall < 0.5
    assert gen.precision_recall(real, fake, batch_size=7) == pr  # blocking does not change the result
    assert gen.precision_recall(real, real) == (1.0, 1.0)
    assert gen.precision_recall(real, real + 100.0) == (0.0, 0.0)  # disjoint manifolds
    np.testing.assert_allclose(gen.knn_radii(real, 3), np.sort(cdist(real, real), axis=1)[:, 3], rtol=1e-9)
    with pytest.raises(ValueError, match="at least 4 samples"):
        gen.precision_recall(real[:3], fake)
    bad = fake.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="fake contains 1 NaN or infinite"):
        gen.precision_recall(real, bad)


# --------------------------------------------------------------------------------------------
# MMD
# --------------------------------------------------------------------------------------------
def _ref_mmd2(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    k = lambda a, b: np.exp(-cdist(a, b, "sqeuclidean") / (2 * sigma**2))  # noqa: E731
    n, m = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    return (
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * k(x, y).mean()
    )


def test_mmd_gaussian_matches_eq_6_6_and_behaves(monkeypatch):
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((200, 8)), rng.standard_normal((150, 8))
    d = pdist(np.vstack([x, y]))
    med = np.sort(d)[(d.size - 1) // 2]  # lower median
    assert gen.median_heuristic(x, y) == pytest.approx(med, rel=1e-6)
    assert gen.mmd(x, y) == pytest.approx(_ref_mmd2(x, y, med), abs=1e-7)
    with monkeypatch.context() as mp:  # large sets: distances recomputed instead of kept from the median pass
        mp.setattr(gen, "_CACHE_BYTES", 0)
        assert gen.mmd(x, y) == pytest.approx(_ref_mmd2(x, y, med), abs=1e-7)
    assert gen.mmd(x, y, bandwidth=2.5) == pytest.approx(_ref_mmd2(x, y, 2.5), abs=1e-10)
    assert gen.mmd(x, y, bandwidth=2.5, batch_size=13) == pytest.approx(_ref_mmd2(x, y, 2.5), abs=1e-10)
    assert gen.mmd(x, y, bandwidth=2.5, squared=False) == pytest.approx(math.sqrt(max(_ref_mmd2(x, y, 2.5), 0)))
    same = gen.mmd(x, y)
    shifts = [gen.mmd(x, y + s) for s in (0.25, 0.5, 1.0)]
    assert abs(same) < 0.01
    assert same < shifts[0] < shifts[1] < shifts[2]


def test_mmd_linear_is_monais_kernel():
    from monai.metrics import MMDMetric

    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((60, 5)), rng.standard_normal((60, 5)) + 0.5
    monai_val = float(MMDMetric()(torch.from_numpy(x), torch.from_numpy(y)))
    assert gen.mmd(x, y, kernel="linear") == pytest.approx(monai_val, rel=1e-10)
    xy = x @ y.T
    exp = (
        ((x @ x.T).sum() - np.trace(x @ x.T)) / (60 * 59)
        + ((y @ y.T).sum() - np.trace(y @ y.T)) / (60 * 59)
        - 2 * xy.mean()
    )
    assert gen.mmd(x, y[:40], kernel="linear") == pytest.approx(
        ((x @ x.T).sum() - np.trace(x @ x.T)) / (60 * 59)
        + ((y[:40] @ y[:40].T).sum() - np.trace(y[:40] @ y[:40].T)) / (40 * 39)
        - 2 * (x @ y[:40].T).mean()
    )
    assert gen.mmd(x, y, kernel="linear") == pytest.approx(exp)
    with pytest.raises(ValueError, match="kernel"):
        gen.mmd(x, y, kernel="rbf")
    with pytest.raises(ValueError, match="bandwidth"):
        gen.mmd(x, y, bandwidth=-1.0)


# --------------------------------------------------------------------------------------------
# Fréchet distance of images through an extractor
# --------------------------------------------------------------------------------------------
def test_image_frechet_distance_grows_with_degradation(make_discs):
    rng = np.random.default_rng(5)
    real, real2 = make_discs(rng, 24), make_discs(rng, 24)
    ext = gen.get_extractor("offline", device="cpu")
    noisy = lambda s: np.clip(real2 + s * rng.standard_normal(real2.shape), 0, 1).astype(np.float32)  # noqa: E731
    fds = [gen.image_frechet_distance(real, x, ext).value for x in (real2, noisy(0.05), noisy(0.2))]
    assert fds[0] < fds[1] < fds[2]
    res = gen.image_frechet_distance(real, real2, ext)
    assert res.extractor == ext.name and res.n_real == 24 and res.feature_dim == 992


def test_extractor_names_stay_importable_from_generative():
    from cmrkit.metrics import features

    for name in ("FeatureExtractor", "RandomConvFeatures", "get_extractor", "FID_WEIGHTS_ENV"):
        assert getattr(gen, name) is getattr(features, name)


# --------------------------------------------------------------------------------------------
# diversity (Table 5.1) and similarity to real data (Table 6.1)
# --------------------------------------------------------------------------------------------
def test_triangular_pair_indexing():
    for n in (2, 3, 17, 1000):
        lin = np.arange(n * (n - 1) // 2)
        np.testing.assert_array_equal(gen._triu_pairs(n, lin), np.stack(np.triu_indices(n, 1), axis=1))


def test_pairwise_diversity_and_reference_similarity(make_discs):
    from cmrkit.metrics import image as im

    rng = np.random.default_rng(6)
    vols = make_discs(rng, 12).reshape(6, 1, 2, 48, 48)
    w = im.MS_SSIM_WEIGHTS[:3]
    same = np.repeat(vols[:1], 4, axis=0)
    assert gen.mean_pairwise_similarity(same, metric="ms_ssim", weights=w).mean == pytest.approx(1.0, abs=1e-5)
    div = gen.mean_pairwise_similarity(vols, metric="gr4_ssim")
    assert div.scores.shape == (15,) and div.pairs.shape == (15, 2) and div.mean < 1
    i, j = div.pairs[4]
    assert div.scores[4] == pytest.approx(im.gr4_ssim(vols[j : j + 1], vols[i : i + 1], data_range=1.0)[0])
    sub = gen.mean_pairwise_similarity(vols, metric="gr4_ssim", n_pairs=5, rng=0)
    assert (
        len(sub.scores) == 5 and len({tuple(p) for p in sub.pairs}) == 5 and np.all(sub.pairs[:, 0] < sub.pairs[:, 1])
    )
    assert np.array_equal(sub.pairs, gen.mean_pairwise_similarity(vols, metric="gr4_ssim", n_pairs=5, rng=0).pairs)
    assert float(sub) == sub.mean

    sim = gen.mean_similarity_to_reference(vols, vols, metric="ms_ssim", weights=w)
    assert sim.mean == pytest.approx(1.0, abs=1e-5) and sim.scores.shape == (6,)
    noisy = np.clip(vols + 0.1 * rng.standard_normal(vols.shape), 0, 1)
    assert gen.mean_similarity_to_reference(noisy, vols, metric="ms_ssim", weights=w).mean < sim.mean
    allp = gen.mean_similarity_to_reference(vols[:3], vols, metric="ssim", pairing="all")
    assert allp.pairs.shape == (18, 2)
    with pytest.raises(ValueError, match="as many generated"):
        gen.mean_similarity_to_reference(vols[:3], vols)
    with pytest.raises(ValueError, match="at least 2"):
        gen.mean_pairwise_similarity(vols[:1])
    with pytest.raises(ValueError, match="metric"):
        gen.mean_pairwise_similarity(vols, metric="lpips")
