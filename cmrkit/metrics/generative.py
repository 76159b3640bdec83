"""Set-level metrics of generative models: Fréchet distance (FID/FRD), improved precision/recall,
MMD, and MS-SSIM / 4-G-r* diversity and similarity scores (thesis Tables 5.1 and 6.1).

Features
--------
Fréchet distance, precision/recall and MMD compare two sets of feature vectors ``(N, F)`` from a
:class:`~cmrkit.metrics.features.FeatureExtractor` (:mod:`cmrkit.metrics.features`: Inception-V3
for FID, ResNet50 for FRD, a seeded random CNN offline); tables print the extractor's ``name`` next
to the numbers, because values from different extractors are not comparable. Images are
``(N, C, *extra, H, W)`` and every 2D slice is one sample (see :mod:`cmrkit.metrics.features`).
The extractor names are also importable from here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

from ..utils import resolve_device
from .features import (
    FID_WEIGHTS_ENV,
    FRD_WEIGHTS_ENV,
    FeatureExtractor,
    InceptionV3Features,
    RandomConvFeatures,
    ResNet50Features,
    extract_features,
    get_extractor,
)
from .image import gr4_ssim, ms_ssim, ssim
from .inputs import as_tensor, check_data_range

__all__ = [
    "frechet_distance",
    "frechet_distance_from_stats",
    "FrechetResult",
    "image_frechet_distance",
    "PrecisionRecall",
    "precision_recall",
    "knn_radii",
    "mmd",
    "median_heuristic",
    "SimilarityScores",
    "mean_pairwise_similarity",
    "mean_similarity_to_reference",
    # feature extractors, defined in cmrkit.metrics.features and importable from here as before
    "FeatureExtractor",
    "RandomConvFeatures",
    "InceptionV3Features",
    "ResNet50Features",
    "get_extractor",
    "extract_features",
    "FID_WEIGHTS_ENV",
    "FRD_WEIGHTS_ENV",
]

ArrayLike = Any


# =============================================================================================
# Fréchet distance
# =============================================================================================
def _features(x: ArrayLike, name: str, device: torch.device, dtype: torch.dtype, min_rows: int = 2) -> torch.Tensor:
    t = as_tensor(x, name, device, dtype)
    if t.ndim != 2:
        raise ValueError(f"{name} must be a (N, F) feature matrix, got shape {tuple(t.shape)}")
    if t.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} samples, got {t.shape[0]}")
    if t.shape[1] < 1:
        raise ValueError(f"{name} has no feature columns")
    return t


def _default_dtype(device: torch.device, dtype: torch.dtype | None) -> torch.dtype:
    if dtype is not None:
        return dtype
    return torch.float64 if device.type == "cpu" else torch.float32


def _trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """``tr((S1 S2)^{1/2})`` for symmetric PSD ``S1``, ``S2``: the eigenvalues of ``S1 S2`` equal
    those of the symmetric PSD ``L^T S2 L`` (``S1 = L L^T``; Cholesky, or the symmetric square
    root when ``S1`` is singular), whose square roots are summed (round-off negatives -> 0)."""
    try:
        root = np.linalg.cholesky(s1)
    except np.linalg.LinAlgError:  # singular S1 (fewer samples than features): symmetric root
        w1, v1 = np.linalg.eigh(s1)
        root = v1 * np.sqrt(np.clip(w1, 0, None))
    m = root.T @ s2 @ root
    w = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(w, 0, None)).sum())


def frechet_distance_from_stats(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2) (thesis eq. 5.6):

    ``||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^{1/2})``.

    The trace term is ``sum sqrt(eig(L^T sigma2 L))`` with ``sigma1 = L L^T`` (float64 symmetric
    eigenvalues, exact for PSD matrices and more stable than ``scipy.linalg.sqrtm(S1 @ S2)``,
    which pytorch-fid and MONAI use). Returns the squared distance, as FID does.
    """
    m1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    m2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    s1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    s2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    d = m1.shape[0]
    if m1.shape != (d,) or m2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"inconsistent shapes: mu1 {m1.shape}, sigma1 {s1.shape}, mu2 {m2.shape}, sigma2 {s2.shape}")
    for name, a in (("mu1", m1), ("mu2", m2), ("sigma1", s1), ("sigma2", s2)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    for name, a in (("sigma1", s1), ("sigma2", s2)):
        w = np.linalg.eigvalsh(a) if d <= 64 else None  # cheap PSD check for small matrices
        if w is not None and w.min() < -1e-8 * max(1.0, float(np.abs(w).max())):
            raise ValueError(f"{name} is not positive semi-definite")
    diff = m1 - m2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * _trace_sqrt_product(s1, s2))


def frechet_distance(feats_a: ArrayLike, feats_b: ArrayLike, *, device: str | torch.device | None = None) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(N, F)`` and ``(M, F)``.

    Means and unbiased covariances (``N - 1``, as pytorch-fid and MONAI's ``FIDMetric``) in
    float64 on ``device`` (default: the inputs' device, else CUDA), then
    :func:`frechet_distance_from_stats`. When the sets are small compared with ``F`` (``N M
    min(N, M) < F^3``, e.g. 1,000-2,000 samples of 2,048-d features) the trace term is computed
    exactly from the ``N x M`` cross-Gram matrix instead: with centred features ``A``, ``B``,
    ``tr((S_A S_B)^{1/2}) = ||A B^T||_* / sqrt((N-1)(M-1))`` (nuclear norm), which is faster and
    avoids ``F x F`` eigenproblems on rank-deficient covariances. Symmetric in its arguments.
    With Inception features this is FID, with ResNet50 features FRD (see the module docstring).
    """
    dev = resolve_device(device, feats_a, feats_b)
    a = _features(feats_a, "feats_a", dev, torch.float64)
    b = _features(feats_b, "feats_b", dev, torch.float64)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    (n, f), m = a.shape, b.shape[0]
    mu_a, mu_b = a.mean(0), b.mean(0)
    ac, bc = a - mu_a, b - mu_b
    if n * m * min(n, m) < f**3:
        diff = mu_a - mu_b
        tr_a, tr_b = (ac * ac).sum() / (n - 1), (bc * bc).sum() / (m - 1)
        nuc = torch.linalg.svdvals(ac @ bc.T).sum() / math.sqrt((n - 1) * (m - 1))
        return float(diff @ diff + tr_a + tr_b - 2.0 * nuc)
    return frechet_distance_from_stats(
        mu_a.cpu().numpy(), (ac.T @ ac / (n - 1)).cpu().numpy(), mu_b.cpu().numpy(), (bc.T @ bc / (m - 1)).cpu().numpy()
    )


@dataclass(frozen=True)
class FrechetResult:
    """A Fréchet distance with the extractor that produced it (print ``extractor`` in tables)."""

    value: float
    extractor: str
    n_real: int
    n_fake: int
    feature_dim: int

    def __float__(self) -> float:
        return self.value


def image_frechet_distance(
    real: ArrayLike, fake: ArrayLike, extractor: FeatureExtractor, *, data_range: float = 1.0, batch_size: int = 64
) -> FrechetResult:
    """FID/FRD-style distance between two image sets through ``extractor``.

    Images ``(N, C, *extra, H, W)``; every 2D slice is one sample (see module docstring).
    ``n_real``/``n_fake`` count slices.
    """
    fr = extractor.extract(real, data_range=data_range, batch_size=batch_size)
    ff = extractor.extract(fake, data_range=data_range, batch_size=batch_size)
    return FrechetResult(frechet_distance(fr, ff), extractor.name, fr.shape[0], ff.shape[0], fr.shape[1])


# =============================================================================================
# chunked pairwise distances
# =============================================================================================
def _sqdist(a: torch.Tensor, b: torch.Tensor, a2: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``(len(a), len(b))`` from norms and one matrix product."""
    return (a2[:, None] + b2[None, :] - 2.0 * (a @ b.T)).clamp_min_(0.0)


def _knn_sq_radii(x: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    x2 = (x * x).sum(1)
    out = []
    for i in range(0, x.shape[0], batch_size):
        d = _sqdist(x[i : i + batch_size], x, x2[i : i + batch_size], x2)
        out.append(torch.kthvalue(d, k + 1, dim=1).values)  # index 0 is the point itself
    return torch.cat(out)


def knn_radii(
    feats: ArrayLike,
    k: int = 3,
    *,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> np.ndarray:
    """Distance from each feature vector to its ``k``-th nearest neighbour in its own set.

    Sorting each row of the distance matrix *including the point itself* (distance 0 at index 0)
    and taking index ``k``, as Kynkäänniemi et al.'s reference code does (so ``k=3`` is the third
    neighbour other than the point).
    """
    dev = resolve_device(device, feats)
    x = _features(feats, "feats", dev, _default_dtype(dev, dtype), min_rows=k + 1)
    return _knn_sq_radii(_centre(x), int(k), batch_size).sqrt().cpu().numpy()


def _centre(*xs: torch.Tensor) -> Any:
    """Subtract the pooled mean (distances unchanged, less cancellation in ``|a|^2 + |b|^2 - 2ab``)."""
    mu = torch.cat([x for x in xs]).mean(0, keepdim=True)
    out = tuple(x - mu for x in xs)
    return out[0] if len(out) == 1 else out


class PrecisionRecall(NamedTuple):
    precision: float
    recall: float


def precision_recall(
    real: ArrayLike,
    fake: ArrayLike,
    *,
    k: int = 3,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> PrecisionRecall:
    """Improved precision and recall (Kynkäänniemi et al. 2019, NeurIPS) of feature sets.

    With ``r_k(phi)`` the distance from ``phi`` to its ``k``-th nearest neighbour within its own
    set (self included at rank 0, :func:`knn_radii`) and ``f(phi, S) = 1`` iff some ``phi' in S``
    has ``||phi - phi'|| <= r_k(phi')`` (inclusive, as the reference code):
    ``precision = mean_{g in fake} f(g, real)``, ``recall = mean_{r in real} f(r, fake)``.
    ``k = 3`` as in the paper and the thesis (Tables 5.1/6.1 "IP"/"IR").

    Distances are computed block-wise (``batch_size`` rows at a time; memory
    ``O(batch_size * max(N, M))``) on ``device`` (default: inputs' device, else CUDA) in ``dtype``
    (default float64 on CPU, float32 on GPU). 4,000 x 4,000 sets of 2,048-d features need a few
    hundred MB.
    """
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = resolve_device(device, real, fake)
    dt = _default_dtype(dev, dtype)
    r = _features(real, "real", dev, dt, min_rows=k + 1)
    g = _features(fake, "fake", dev, dt, min_rows=k + 1)
    if r.shape[1] != g.shape[1]:
        raise ValueError(f"feature dimensions differ: real {r.shape[1]} vs fake {g.shape[1]}")
    r, g = _centre(r, g)
    rad_r = _knn_sq_radii(r, k, batch_size)
    rad_g = _knn_sq_radii(g, k, batch_size)
    r2, g2 = (r * r).sum(1), (g * g).sum(1)
    prec_hits = torch.zeros(g.shape[0], dtype=torch.bool, device=dev)
    rec_hits = torch.zeros(r.shape[0], dtype=torch.bool, device=dev)
    for i in range(0, g.shape[0], batch_size):
        d = _sqdist(g[i : i + batch_size], r, g2[i : i + batch_size], r2)  # (chunk of fake, real)
        prec_hits[i : i + batch_size] = (d <= rad_r[None, :]).any(dim=1)
        rec_hits |= (d <= rad_g[i : i + batch_size, None]).any(dim=0)
    return PrecisionRecall(float(prec_hits.double().mean()), float(rec_hits.double().mean()))


# =============================================================================================
# MMD
# =============================================================================================
_CACHE_BYTES = 1 << 30  # keep the pooled float32 distance matrix for MMD when it fits in 1 GiB


def _median_sq_dist(
    z: torch.Tensor, batch_size: int, keep: bool = False
) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """Lower median of the squared pairwise distances ``i < j`` of ``z``; with ``keep`` also the
    row blocks of the distance matrix (float32) so a caller can reuse them."""
    z2 = (z * z).sum(1)
    vals, blocks = [], ([] if keep else None)
    cols = torch.arange(z.shape[0], device=z.device)
    for i in range(0, z.shape[0], batch_size):
        d = _sqdist(z[i : i + batch_size], z, z2[i : i + batch_size], z2)
        rows = torch.arange(i, i + d.shape[0], device=z.device)
        vals.append(d[cols[None, :] > rows[:, None]].to(torch.float32))
        if blocks is not None:
            blocks.append(d.to(torch.float32))
    return torch.cat(vals).median().to(z.dtype), blocks


def median_heuristic(
    x: ArrayLike,
    y: ArrayLike,
    *,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> float:
    """Median-heuristic Gaussian bandwidth (Gretton et al. 2012): ``sigma = median ||z_i - z_j||``
    over all unordered pairs ``i < j`` of the pooled sample ``z = x ∪ y`` (lower median)."""
    dev = resolve_device(device, x, y)
    dt = _default_dtype(dev, dtype)
    a, b = _features(x, "x", dev, dt), _features(y, "y", dev, dt)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    a, b = _centre(a, b)
    return float(_median_sq_dist(torch.cat([a, b]), batch_size)[0].sqrt())


def mmd(
    x: ArrayLike,
    y: ArrayLike,
    *,
    kernel: Literal["gaussian", "linear"] = "gaussian",
    bandwidth: float | Literal["median"] = "median",
    squared: bool = True,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> float:
    """Unbiased maximum mean discrepancy between samples ``x (n, F)`` and ``y (m, F)`` (thesis eq. 6.6).

    ``MMD^2 = 1/(n(n-1)) sum_{i!=j} k(x_i, x_j) + 1/(m(m-1)) sum_{i!=j} k(y_i, y_j)
    - 2/(nm) sum_{i,j} k(x_i, y_j)`` (Gretton et al. 2012, eq. 3). The unbiased estimate can be
    slightly negative when the distributions agree.

    Kernels
    -------
    ``"gaussian"`` (default, the thesis's kernel): ``k(a, b) = exp(-||a - b||^2 / (2 sigma^2))``
    with ``sigma = bandwidth``, or with ``bandwidth="median"`` the median heuristic
    (:func:`median_heuristic`: median pairwise distance of the pooled sample, computed on the same
    blocks). ``"linear"``: ``k(a, b) = a . b``, the kernel of MONAI's ``MMDMetric`` (unbiased,
    close to ``||mean(x) - mean(y)||^2``); computed in closed form, any ``n``/``m``.

    ``squared=True`` returns MMD^2 as eq. 6.6 defines it; ``False`` returns
    ``sqrt(max(MMD^2, 0))``. Distances are computed in blocks of ``batch_size`` rows on
    ``device`` in ``dtype`` (default float64 on CPU, float32 on GPU). The median needs the
    ``(n+m)(n+m-1)/2`` pair distances (float32, 128 MB for 4,000 + 4,000 samples); when the
    whole ``(n+m)^2`` float32 matrix fits in 1 GiB (n + m <= 16,384) it is kept from the median
    pass and reused for the kernel sums, otherwise the distances are recomputed block-wise.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = resolve_device(device, x, y)
    dt = _default_dtype(dev, dtype)
    a, b = _features(x, "x", dev, dt), _features(y, "y", dev, dt)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    n, m = a.shape[0], b.shape[0]
    if kernel == "linear":
        a64, b64 = a.double(), b.double()
        sa, sb = a64.sum(0), b64.sum(0)
        kxx = (sa @ sa - (a64 * a64).sum()) / (n * (n - 1))
        kyy = (sb @ sb - (b64 * b64).sum()) / (m * (m - 1))
        val = float(kxx + kyy - 2.0 * (sa @ sb) / (n * m))
    elif kernel == "gaussian":
        a, b = _centre(a, b)
        z = torch.cat([a, b])
        blocks: list[torch.Tensor] | None = None
        if isinstance(bandwidth, str):
            if bandwidth != "median":
                raise ValueError(f"bandwidth must be a positive number or 'median', got {bandwidth!r}")
            keep = 4 * (n + m) ** 2 <= _CACHE_BYTES  # reuse the distances of the median pass
            med, blocks = _median_sq_dist(z, batch_size, keep=keep)
            sigma2 = float(med)
            if sigma2 <= 0:
                raise ValueError("median pairwise distance is 0 (most samples identical); pass an explicit bandwidth")
        else:
            if not (np.isfinite(bandwidth) and bandwidth > 0):
                raise ValueError(f"bandwidth must be a positive number or 'median', got {bandwidth!r}")
            sigma2 = float(bandwidth) ** 2
        z2 = (z * z).sum(1)
        s_xx = s_yy = s_xy = 0.0
        for blk, i in enumerate(range(0, n + m, batch_size)):
            d = (
                blocks[blk].to(z.dtype)
                if blocks is not None
                else _sqdist(z[i : i + batch_size], z, z2[i : i + batch_size], z2)
            )
            kb = torch.exp(-d / (2.0 * sigma2)).double()
            rows = torch.arange(i, i + kb.shape[0], device=dev)
            kb[torch.arange(kb.shape[0], device=dev), rows] = 0.0  # drop i == j terms
            in_x = rows < n
            s_xx += float(kb[in_x, :n].sum())
            s_yy += float(kb[~in_x, n:].sum())
            s_xy += float(kb[in_x, n:].sum())
            if blocks is not None:
                blocks[blk] = None  # type: ignore[call-overload]  # free as we go
        val = s_xx / (n * (n - 1)) + s_yy / (m * (m - 1)) - 2.0 * s_xy / (n * m)
    else:
        raise ValueError(f"kernel must be 'gaussian' or 'linear', got {kernel!r}")
    return val if squared else math.sqrt(max(val, 0.0))


# =============================================================================================
# MS-SSIM / 4-G-r* diversity (Table 5.1) and similarity to real data (Table 6.1)
# =============================================================================================
@dataclass(frozen=True)
class SimilarityScores:
    """Per-pair similarity scores and their summary; ``float(obj)`` is the mean."""

    metric: str
    mean: float
    sd: float
    scores: np.ndarray = field(repr=False)
    pairs: np.ndarray = field(repr=False)

    def __float__(self) -> float:
        return self.mean


_PAIR_METRICS: dict[str, Callable[..., Any]] = {"ms_ssim": ms_ssim, "gr4_ssim": gr4_ssim, "ssim": ssim}


def _pair_metric(metric: str | Callable[..., Any]) -> tuple[str, Callable[..., Any]]:
    if callable(metric):
        return getattr(metric, "__name__", "custom"), metric
    if metric not in _PAIR_METRICS:
        raise ValueError(f"metric must be one of {sorted(_PAIR_METRICS)} or a callable, got {metric!r}")
    return metric, _PAIR_METRICS[metric]


def _triu_pairs(n: int, idx: np.ndarray) -> np.ndarray:
    """Map linear indices of the strict upper triangle (row-major) of an n x n matrix to (i, j)."""
    idx = idx.astype(np.int64)
    start = lambda i: i * (2 * n - i - 1) // 2  # noqa: E731 - first linear index of row i
    i = np.floor(((2 * n - 1) - np.sqrt((2 * n - 1) ** 2 - 8.0 * idx)) / 2).astype(np.int64)
    i = np.clip(i, 0, n - 2)
    for _ in range(3):  # fix float rounding at row boundaries
        i = np.where(start(i) > idx, i - 1, i)
        i = np.where(start(i + 1) <= idx, i + 1, i)
    j = idx - start(i) + i + 1
    return np.stack([i, j], axis=1)


def _choose(total: int, n_pairs: int | None, rng: np.random.Generator | int | None) -> np.ndarray:
    if n_pairs is None or n_pairs >= total:
        return np.arange(total, dtype=np.int64)
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1 or None, got {n_pairs}")
    gen = np.random.default_rng(rng)
    return np.sort(gen.choice(total, size=int(n_pairs), replace=False)).astype(np.int64)


def _score_pairs(
    a: Any,
    b: Any,
    pairs: np.ndarray,
    fn: Callable[..., Any],
    data_range: float,
    batch_size: int,
    device: str | torch.device | None,
    kwargs: dict[str, Any],
) -> np.ndarray:
    """fn(pred=a[pairs[:,0]], ref=b[pairs[:,1]]) in chunks of pairs."""
    dev = resolve_device(device, a, b)
    ta = as_tensor(a, "samples", dev)
    tb = ta if b is a else as_tensor(b, "reference", dev)
    out = []
    for s in range(0, len(pairs), batch_size):
        p = torch.from_numpy(pairs[s : s + batch_size]).to(dev)
        out.append(
            np.asarray(
                fn(ta[p[:, 0]], tb[p[:, 1]], data_range=data_range, reduction="none", device=dev, **kwargs),
                dtype=np.float64,
            )
        )
    return np.concatenate(out) if out else np.empty(0)


def _summary(name: str, scores: np.ndarray, pairs: np.ndarray) -> SimilarityScores:
    sd = float(np.std(scores, ddof=1)) if scores.size > 1 else math.nan
    return SimilarityScores(name, float(np.mean(scores)), sd, scores, pairs)


def mean_pairwise_similarity(
    samples: ArrayLike,
    *,
    metric: str | Callable[..., Any] = "ms_ssim",
    data_range: float = 1.0,
    n_pairs: int | None = None,
    rng: np.random.Generator | int | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    **metric_kwargs: Any,
) -> SimilarityScores:
    """Diversity of generated samples: mean similarity over pairs of distinct samples (Table 5.1).

    For unordered pairs ``i < j`` of ``samples`` ``(N, C, *extra, H, W)``, the score is
    ``metric(samples[j], samples[i])`` (``samples[i]`` plays the reference; this matters only for
    the asymmetric 4-G-r*), each computed per 2D slice and averaged over slices/frames as in
    :func:`cmrkit.metrics.image.ms_ssim` / :func:`~cmrkit.metrics.image.gr4_ssim`. **Lower means
    more diverse.** ``metric`` is ``"ms_ssim"``, ``"gr4_ssim"``, ``"ssim"`` or a callable
    ``f(pred, ref, *, data_range, reduction, device, **metric_kwargs) -> (B,)`` like those.
    ``n_pairs=None`` uses all ``N(N-1)/2`` pairs; an integer draws that many
    distinct pairs uniformly without replacement with ``rng`` (e.g. 1,000 pairs for N = 1,000).
    ``metric_kwargs`` go to the metric (e.g. ``kernel_size``, ``weights`` for MS-SSIM).
    """
    name, fn = _pair_metric(metric)
    n = len(samples)
    if n < 2:
        raise ValueError(f"samples must hold at least 2 items, got {n}")
    L = check_data_range(data_range)
    lin = _choose(n * (n - 1) // 2, n_pairs, rng)
    pairs = _triu_pairs(n, lin)
    scores = _score_pairs(samples, samples, pairs[:, ::-1].copy(), fn, L, batch_size, device, metric_kwargs)
    return _summary(name, scores, pairs)


def mean_similarity_to_reference(
    generated: ArrayLike,
    reference: ArrayLike,
    *,
    metric: str | Callable[..., Any] = "ms_ssim",
    data_range: float = 1.0,
    pairing: Literal["paired", "all"] = "paired",
    n_pairs: int | None = None,
    rng: np.random.Generator | int | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    **metric_kwargs: Any,
) -> SimilarityScores:
    """Fidelity to real data: mean similarity of generated samples to real reference samples (Table 6.1).

    ``metric(generated[i], reference[j])`` (real image as the reference) per 2D slice, averaged
    over slices/frames. ``pairing="paired"`` compares ``generated[i]`` with ``reference[i]`` (e.g.
    a sample generated with the covariates of real subject ``i``; equal lengths required);
    ``pairing="all"`` uses every (generated, real) combination, or ``n_pairs`` of them drawn
    without replacement with ``rng``. **Higher means more similar.**
    """
    name, fn = _pair_metric(metric)
    L = check_data_range(data_range)
    ng, nr = len(generated), len(reference)
    if ng < 1 or nr < 1:
        raise ValueError(f"generated and reference must be non-empty, got {ng} and {nr}")
    if pairing == "paired":
        if ng != nr:
            raise ValueError(f"pairing='paired' needs as many generated as reference samples, got {ng} and {nr}")
        lin = _choose(ng, n_pairs, rng)
        pairs = np.stack([lin, lin], axis=1)
    elif pairing == "all":
        lin = _choose(ng * nr, n_pairs, rng)
        pairs = np.stack([lin // nr, lin % nr], axis=1)
    else:
        raise ValueError(f"pairing must be 'paired' or 'all', got {pairing!r}")
    scores = _score_pairs(generated, reference, pairs, fn, L, batch_size, device, metric_kwargs)
    return _summary(name, scores, pairs)
