"""Full-reference image similarity: SSIM, PSNR, RMSE, MAE, MS-SSIM and 4-G-r* SSIM.

Every function compares a synthesised/test image ``pred`` with a reference image ``ref``. Given
**one image pair** -- two arrays with exactly ``spatial_dims`` axes, e.g. two ``(H, W)`` slices -- it
returns a float, as scikit-image's ``structural_similarity`` / ``peak_signal_noise_ratio`` do. Given
**a batch** (layout below) it returns one value per item (``reduction="none"``, the default: a
float64 array of shape ``(B,)``) or their mean (``reduction="mean"``: a float).

Input layout
------------
One pair: ``(*spatial)``, i.e. ``(H, W)`` (``spatial_dims=2``, the default) or ``(D, H, W)``
(``spatial_dims=3``); it is scored as the batch ``(1, 1, *spatial)``. A batch:
``(B, C, *extra, *spatial)``: axis 0 indexes items, axis 1 channels, the last ``spatial_dims``
axes are the image grid and any axes in between (slices of a stack, frames of a cine) are extra
axes over which the per-item score is averaged. Examples with ``spatial_dims=2`` (the default):
``(B, 1, H, W)`` 2D slices; ``(B, 1, S, H, W)`` a short-axis stack scored slice by slice;
``(B, 1, T, S, H, W)`` 2D+t cine. With ``spatial_dims=3``, ``(B, 1, D, H, W)`` is scored as a 3D
volume (``(B, 1, T, D, H, W)`` frame by frame). NumPy arrays and torch tensors are accepted; the
computation runs in torch on ``device`` (default: the tensor's device, else CUDA when available)
in chunks of ``batch_size`` images, so that thousands of slices fit on a GPU.

Intensities must lie on a known scale: ``data_range`` (the dynamic range ``L``, 1.0 for images
normalised to [0, 1] as in the thesis, §5.3.1 and §6.3.1) is a required argument wherever it
enters a formula. Inputs containing NaN or infinity, or of different shapes, raise ``ValueError``.

Definitions (thesis §4.3.5, eqs. 4.3-4.7; §5.3.4, eq. 5.7)
-----------------------------------------------------------
* ``rmse`` = sqrt(mean((pred - ref)^2)), ``mae`` = mean(|pred - ref|) over all voxels and channels
  of an item.
* ``psnr`` = 10 log10(L^2 / MSE) with the MSE over all voxels of an item; identical items give
  ``+inf`` (documented, not an error).
* ``ssim``: Wang et al. 2004 (IEEE TIP 13:600), Gaussian window (11 taps, sigma 1.5),
  K1 = 0.01, K2 = 0.03, C1 = (K1 L)^2, C2 = (K2 L)^2, C3 = C2/2, population (biased) local
  moments, mean of the SSIM map over the 'valid' region (no padding); computed with MONAI's
  :class:`monai.metrics.SSIMMetric`. This equals scikit-image's ``structural_similarity(...,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=L)``.
* ``ms_ssim``: Wang, Simoncelli & Bovik 2003 (Asilomar), 5 scales with weights
  (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), 2x2 average-pool down-sampling, contrast-structure
  terms of scales 1..M-1 and the full SSIM of scale M, negative terms clipped at 0 (MONAI's
  :class:`monai.metrics.MultiScaleSSIMMetric`), per 2D slice. The default window is 7 taps
  (sigma 1.5) because an 11-tap window does not fit the coarsest scale of a 128 x 128 slice
  (MONAI needs ``H // (M - 1)^2 > kernel_size - 1``: 128 // 16 = 8 > 6). The thesis's eq. 5.7
  (geometric mean of per-scale SSIM) is a simplification of this standard definition; the
  standard one is used.
* ``gr4_ssim``: the "4-G-R SSIM" of Table 5.1/6.1, i.e. the 4-G-r* index of Renieblas et al. 2017
  (J. Med. Imaging 4(3):035501): the structural term r* of Rouse & Hemami 2008 computed between
  Sobel gradient-magnitude images, pooled over the four content regions of Li & Bovik 2010
  (Signal Process. Image Commun. 25:517). See :func:`gr4_ssim` for the exact constants.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..utils import resolve_device
from .inputs import ArrayLike, as_tensor, check_data_range

__all__ = [
    "ssim",
    "psnr",
    "rmse",
    "mae",
    "ms_ssim",
    "gr4_ssim",
    "GR4_THRESHOLDS",
    "GR4_WEIGHTS",
    "MS_SSIM_WEIGHTS",
    "per_slice",
    "slice_regions",
    "mean_sd_by_region",
    "REGIONS",
]

Reduction = Literal["none", "mean"]

#: Wang et al. 2003 scale weights (coarsest last).
MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
#: Li & Bovik 2010 edge thresholds as fractions of the reference's maximum gradient magnitude.
GR4_THRESHOLDS: tuple[float, float] = (0.12, 0.06)
#: Region weights (preserved edge, changed edge, smooth, texture); equal weights, see gr4_ssim.
GR4_WEIGHTS: tuple[float, float, float, float] = (0.25, 0.25, 0.25, 0.25)
#: Canonical order of short-axis regions in tables (Table 4.1 lists apical, mid, basal).
REGIONS: tuple[str, ...] = ("basal", "mid", "apical")


# ---------------------------------------------------------------------------------------------
# pairs and batches
# ---------------------------------------------------------------------------------------------
def _prepare_pair(
    pred: ArrayLike,
    ref: ArrayLike,
    spatial_dims: int,
    device: str | torch.device | None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Validate a (pred, ref) pair and reshape both to ``(B * n_extra, C, *spatial)``.

    Returns the reshaped tensors and ``B``.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    dev = resolve_device(device, pred, ref)
    p = as_tensor(pred, "pred", dev)
    r = as_tensor(ref, "ref", dev)
    if p.shape != r.shape:
        raise ValueError(f"pred and ref must have the same shape, got {tuple(p.shape)} and {tuple(r.shape)}")
    need = 2 + spatial_dims
    if p.ndim < need:
        raise ValueError(
            f"pred/ref must be one image pair with exactly {spatial_dims} axes, or a batch laid out "
            f"(B, C, *extra, *spatial) with {spatial_dims} spatial axes, i.e. at least {need} dimensions; got "
            f"shape {tuple(p.shape)}"
        )
    if p.shape[0] == 0 or any(s == 0 for s in p.shape):
        raise ValueError(f"pred/ref must not be empty, got shape {tuple(p.shape)}")
    dtype = torch.promote_types(p.dtype, r.dtype)
    p, r = p.to(dtype), r.to(dtype)
    b, c = p.shape[:2]
    spatial = p.shape[p.ndim - spatial_dims :]
    extra = p.shape[2 : p.ndim - spatial_dims]
    # (B, C, *extra, *spatial) -> (B, *extra, C, *spatial) -> (B*n_extra, C, *spatial)
    n_extra = int(np.prod(extra)) if len(extra) else 1
    perm = (0, *range(2, 2 + len(extra)), 1, *range(p.ndim - spatial_dims, p.ndim))
    p = p.permute(perm).reshape(b * n_extra, c, *spatial)
    r = r.permute(perm).reshape(b * n_extra, c, *spatial)
    return p, r, b


def _one_pair(pred: ArrayLike, ref: ArrayLike, spatial_dims: int) -> tuple[ArrayLike, ArrayLike, bool]:
    """Two arrays with exactly ``spatial_dims`` axes are one image pair: return them as the batch
    ``(1, 1, *spatial)`` and True. Anything else is returned unchanged with False (a batch)."""

    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")

    def ndim(x: ArrayLike) -> int:
        return x.ndim if isinstance(x, (np.ndarray, torch.Tensor)) else np.ndim(x)

    if ndim(pred) == spatial_dims and ndim(ref) == spatial_dims:
        add = lambda x: x[None, None] if isinstance(x, (np.ndarray, torch.Tensor)) else np.asarray(x)[None, None]
        return add(pred), add(ref), True
    return pred, ref, False


def _reduce(values: np.ndarray, reduction: Reduction, single: bool = False) -> np.ndarray | float:
    if reduction not in ("none", "mean"):
        raise ValueError(f"reduction must be 'none' or 'mean', got {reduction!r}")
    if single:
        return float(values[0])
    return values if reduction == "none" else float(np.mean(values))


def _per_item(slice_values: torch.Tensor, b: int) -> np.ndarray:
    """Average per-slice values ``(B*n_extra,)`` back to per-item values ``(B,)``."""
    return slice_values.reshape(b, -1).to(torch.float64).mean(dim=1).cpu().numpy()


def _chunked(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], p: torch.Tensor, r: torch.Tensor, batch_size: int
) -> torch.Tensor:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    outs = [fn(p[i : i + batch_size], r[i : i + batch_size]).reshape(-1) for i in range(0, p.shape[0], batch_size)]
    return torch.cat(outs)


def _tuple(v: int | float | Sequence[int | float], n: int, name: str) -> tuple:
    if isinstance(v, (int, float)):
        return (v,) * n
    v = tuple(v)
    if len(v) != n:
        raise ValueError(f"{name} must be a number or a sequence of {n} numbers, got {v!r}")
    return v


def _check_window(spatial: Sequence[int], win: Sequence[int], what: str) -> None:
    for ax, (s, w) in enumerate(zip(spatial, win)):
        if w < 1 or w % 2 == 0:
            raise ValueError(f"{what}: window sizes must be odd positive integers, got {tuple(win)}")
        if s < w:
            raise ValueError(
                f"{what}: spatial axis {ax} has {s} samples, fewer than the window ({w}); pass a smaller win_size, "
                f"e.g. win_size={tuple(min(w, s if s % 2 else s - 1) for s, w in zip(spatial, win))}, or use "
                "spatial_dims=2"
            )


# ---------------------------------------------------------------------------------------------
# voxel-wise errors
# ---------------------------------------------------------------------------------------------
def _mean_error(
    pred: ArrayLike, ref: ArrayLike, fn: Callable[[torch.Tensor], torch.Tensor], device: str | torch.device | None
) -> np.ndarray:
    dev = resolve_device(device, pred, ref)
    p = as_tensor(pred, "pred", dev, torch.float64 if dev.type == "cpu" else None)
    r = as_tensor(ref, "ref", dev, p.dtype)
    if p.shape != r.shape:
        raise ValueError(f"pred and ref must have the same shape, got {tuple(p.shape)} and {tuple(r.shape)}")
    if p.ndim < 2 or p.numel() == 0:
        raise ValueError(f"pred/ref must be laid out (B, ...) with at least one value per item, got {tuple(p.shape)}")
    return fn(p - r).reshape(p.shape[0], -1).mean(dim=1).to(torch.float64).cpu().numpy()


def rmse(
    pred: ArrayLike,
    ref: ArrayLike,
    *,
    reduction: Reduction = "none",
    spatial_dims: int = 2,
    device: str | torch.device | None = None,
) -> np.ndarray | float:
    """Root-mean-square error (thesis eq. 4.3) of one image pair (a float) or per item of a batch.

    ``RMSE_b = sqrt(mean_v (pred[b, v] - ref[b, v])^2)`` over every channel/voxel ``v`` of item
    ``b``; a batch is ``(B, ...)``, one pair two arrays with ``spatial_dims`` axes. In the intensity
    units of the inputs (no ``data_range``).
    """
    pred, ref, single = _one_pair(pred, ref, spatial_dims)
    mse = _mean_error(pred, ref, torch.square, device)
    return _reduce(np.sqrt(mse), reduction, single)


def mae(
    pred: ArrayLike,
    ref: ArrayLike,
    *,
    reduction: Reduction = "none",
    spatial_dims: int = 2,
    device: str | torch.device | None = None,
) -> np.ndarray | float:
    """Mean absolute error (thesis eq. 4.4), ``mean_v |pred[b, v] - ref[b, v]|``, of one image pair
    (a float) or per item of a batch ``(B, ...)``."""
    pred, ref, single = _one_pair(pred, ref, spatial_dims)
    return _reduce(_mean_error(pred, ref, torch.abs, device), reduction, single)


def psnr(
    pred: ArrayLike,
    ref: ArrayLike,
    *,
    data_range: float,
    reduction: Reduction = "none",
    spatial_dims: int = 2,
    device: str | torch.device | None = None,
) -> np.ndarray | float:
    """Peak signal-to-noise ratio in dB (thesis eqs. 4.6-4.7) of one image pair (a float, as
    scikit-image's ``peak_signal_noise_ratio(ref, pred, data_range=L)``) or per item of a batch.

    ``PSNR_b = 10 log10(L^2 / MSE_b)`` with ``L = data_range`` and the MSE over all voxels of item
    ``b`` (a batch is ``(B, ...)``). An item identical to its reference has MSE 0 and PSNR ``+inf``;
    ``reduction="mean"`` then returns ``inf`` too (use :func:`per_slice` + a finite cap, or report
    the count of perfect items, if that matters).
    """
    L = check_data_range(data_range)
    pred, ref, single = _one_pair(pred, ref, spatial_dims)
    mse = _mean_error(pred, ref, torch.square, device)
    with np.errstate(divide="ignore"):
        out = np.where(mse > 0, 10.0 * np.log10(L * L / np.where(mse > 0, mse, 1.0)), np.inf)
    return _reduce(out, reduction, single)


# ---------------------------------------------------------------------------------------------
# SSIM family
# ---------------------------------------------------------------------------------------------
def ssim(
    pred: ArrayLike,
    ref: ArrayLike,
    *,
    data_range: float,
    spatial_dims: int = 2,
    win_size: int | Sequence[int] = 11,
    sigma: float | Sequence[float] = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    reduction: Reduction = "none",
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> np.ndarray | float:
    """Structural similarity (Wang et al. 2004; thesis eq. 4.5) of one image pair or per item.

    SSIM map ``((2 mu_x mu_y + C1)(2 sigma_xy + C2)) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 +
    sigma_y^2 + C2))`` with Gaussian-weighted local moments (window ``win_size`` taps,
    ``sigma``), ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2``, ``L = data_range``; averaged over the valid
    (unpadded) region, the channels, and the extra axes (slices/frames) of each item. Computed with
    MONAI's ``SSIMMetric``; agrees with scikit-image (Gaussian weights, population covariance).

    Parameters
    ----------
    pred, ref : array or tensor, ``(*spatial)`` or ``(B, C, *extra, *spatial)``
        Test and reference images: one pair (a float is returned, as scikit-image's
        ``structural_similarity(pred, ref, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=L)``) or a batch (see the module docstring).
    data_range : float
        Dynamic range ``L`` of the intensities (1.0 for [0, 1] images).
    spatial_dims : {2, 3}
        2: per 2D slice (the default, as in the thesis); 3: 3D windows over ``(D, H, W)``. A 3D
        window must fit the depth: with 10 slices pass e.g. ``win_size=(3, 11, 11)``.
    win_size, sigma, k1, k2 : window taps, Gaussian sigma and constants (Wang et al. 2004 values).
    reduction : ``"none"`` -> ``(B,)`` array, ``"mean"`` -> float.
    batch_size : int
        Images per MONAI call (memory bound).
    device : torch device; default the inputs' device, else CUDA when available.
    """
    from monai.metrics import SSIMMetric

    L = check_data_range(data_range)
    pred, ref, single = _one_pair(pred, ref, spatial_dims)
    p, r, b = _prepare_pair(pred, ref, spatial_dims, device)
    win = _tuple(win_size, spatial_dims, "win_size")
    sig = _tuple(sigma, spatial_dims, "sigma")
    _check_window(p.shape[2:], win, "ssim")
    metric = SSIMMetric(
        spatial_dims=spatial_dims,
        data_range=L,
        kernel_type="gaussian",
        win_size=win,
        kernel_sigma=sig,
        k1=k1,
        k2=k2,
        reduction="none",
    )
    vals = _chunked(lambda a, c: metric(a, c), p, r, batch_size)
    return _reduce(_per_item(vals, b), reduction, single)


def ms_ssim(
    pred: ArrayLike,
    ref: ArrayLike,
    *,
    data_range: float,
    kernel_size: int = 7,
    sigma: float = 1.5,
    weights: Sequence[float] = MS_SSIM_WEIGHTS,
    k1: float = 0.01,
    k2: float = 0.03,
    reduction: Reduction = "none",
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> np.ndarray | float:
    """Multi-scale SSIM (Wang, Simoncelli & Bovik 2003) of one ``(H, W)`` pair (a float) or per item
    of a batch, computed on 2D slices.

    ``MS-SSIM = prod_{j<M} cs_j^{w_j} * ssim_M^{w_M}``, with ``cs_j`` the mean contrast-structure
    term at scale ``j`` (clipped at 0), ``ssim_M`` the SSIM at the coarsest scale, 2x2 average
    pooling between scales and ``M = len(weights)`` (default 5, Wang et al. weights). Uses MONAI's
    ``MultiScaleSSIMMetric(spatial_dims=2)`` slice by slice and averages over the extra axes
    (slices/frames) and channels of each item (Table 5.1/6.1 protocol: per XY slice).

    MONAI requires ``H // (M-1)^2 > kernel_size - 1`` on every in-plane axis; for 128 x 128 with
    5 scales the largest window is 7 (the default), for 64 x 64 use 4 scales
    (``weights=MS_SSIM_WEIGHTS[:4]``) with ``kernel_size=7`` or keep 5 scales with ``kernel_size=3``.
    """
    from monai.metrics import MultiScaleSSIMMetric

    L = check_data_range(data_range)
    pred, ref, single = _one_pair(pred, ref, 2)
    p, r, b = _prepare_pair(pred, ref, 2, device)
    weights = tuple(float(w) for w in weights)
    if len(weights) < 1 or any(w < 0 for w in weights):
        raise ValueError(f"weights must be a non-empty sequence of non-negative numbers, got {weights!r}")
    div = max(1, len(weights) - 1) ** 2
    for ax, s in enumerate(p.shape[2:]):
        if s // div <= kernel_size - 1:
            raise ValueError(
                f"ms_ssim: in-plane axis {ax} has {s} pixels, too small for {len(weights)} scales with kernel_size="
                f"{kernel_size} (MONAI needs {s} // {div} > {kernel_size - 1}); use fewer scales "
                f"(weights=MS_SSIM_WEIGHTS[:{max(1, len(weights) - 1)}]) or a smaller kernel_size"
            )
    metric = MultiScaleSSIMMetric(
        spatial_dims=2,
        data_range=L,
        kernel_type="gaussian",
        kernel_size=kernel_size,
        kernel_sigma=sigma,
        k1=k1,
        k2=k2,
        weights=weights,
        reduction="none",
    )
    vals = _chunked(lambda a, c: metric(a, c), p, r, batch_size)
    return _reduce(_per_item(vals, b), reduction, single)


def _gauss1d(win: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    x = torch.arange(win, dtype=torch.float64) - (win - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def _filter_valid(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of ``(N, 1, H, W)`` without padding ('valid' region)."""
    w = g.numel()
    x = F.conv2d(x, g.view(1, 1, w, 1))
    return F.conv2d(x, g.view(1, 1, 1, w))


def _sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of ``(N, 1, H, W)``, kernels scaled by 1/8 (intensity per pixel),
    edge-replicated borders; equals ``hypot(ndimage.sobel(x, 0), ndimage.sobel(x, 1)) / 8`` with
    ``mode='nearest'``."""
    k = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]], dtype=x.dtype, device=x.device) / 8.0
    xp = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(xp, k.view(1, 1, 3, 3))
    gy = F.conv2d(xp, k.t().contiguous().view(1, 1, 3, 3))
    return torch.sqrt(gx * gx + gy * gy)


def _local_moments(
    a: torch.Tensor, b: torch.Tensor, g: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    # centre each image on its global mean first: same moments, far less cancellation in float32
    a = a - a.mean(dim=(-2, -1), keepdim=True)
    b = b - b.mean(dim=(-2, -1), keepdim=True)
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    var_a = (_filter_valid(a * a, g) - mu_a * mu_a).clamp_min(0)
    var_b = (_filter_valid(b * b, g) - mu_b * mu_b).clamp_min(0)
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    return mu_a, mu_b, var_a, var_b, cov


def _gr4_slices(
    p: torch.Tensor,
    r: torch.Tensor,
    *,
    L: float,
    variant: str,
    win: int,
    sigma: float,
    k1: float,
    k2: float,
    thresholds: tuple[float, float],
    weights: torch.Tensor,
    flat_tol: float,
) -> torch.Tensor:
    """4-component pooled gradient similarity of ``(N, 1, H, W)`` slices -> ``(N,)``."""
    g = _gauss1d(win, sigma, p.dtype, p.device)
    gp, gr = _sobel_magnitude(p), _sobel_magnitude(r)
    _, _, var_p, var_r, cov = _local_moments(gp, gr, g)
    if variant == "4-G-r*":
        # r* (Rouse & Hemami 2008): the structure term without stabilising constant; 1 where both
        # local gradient patches are flat, 0 where exactly one is.
        tol2 = (flat_tol * L) ** 2
        flat_p, flat_r = var_p <= tol2, var_r <= tol2
        denom = torch.sqrt(var_p * var_r)
        q = torch.where(
            flat_p | flat_r, torch.zeros_like(denom), cov / torch.where(denom > 0, denom, torch.ones_like(denom))
        )
        q = torch.where(flat_p & flat_r, torch.ones_like(q), q).clamp(-1.0, 1.0)
    else:  # "4-G-SSIM": luminance from the images, contrast*structure from the gradient images
        c1, c2 = (k1 * L) ** 2, (k2 * L) ** 2
        mu_x, mu_y = _filter_valid(p, g), _filter_valid(r, g)
        lum = (2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
        q = lum * (2 * cov + c2) / (var_p + var_r + c2)
    # content regions from the full-resolution gradient magnitudes, cropped to the valid region
    c = win // 2
    po = gr[..., c : gr.shape[-2] - c, c : gr.shape[-1] - c]  # reference ("original") gradients
    pd = gp[..., c : gp.shape[-2] - c, c : gp.shape[-1] - c]  # test ("distorted") gradients
    gmax = gr.amax(dim=(-2, -1), keepdim=True)
    th1, th2 = thresholds[0] * gmax, thresholds[1] * gmax
    r1 = (po > th1) & (pd > th1)  # preserved edges
    r2 = ((po > th1) & (pd <= th1)) | ((po <= th1) & (pd > th1))  # changed edges
    r3 = (po < th2) & (pd <= th1)  # smooth
    r4 = ~(r1 | r2 | r3)  # texture
    masks = torch.stack([r1, r2, r3, r4], dim=1).squeeze(2).to(q.dtype)  # (N, 4, h, w)
    counts = masks.sum(dim=(-2, -1))
    sums = (masks * q).sum(dim=(-2, -1))
    means = sums / counts.clamp_min(1)
    w = weights.to(q.dtype).view(1, 4) * (counts > 0).to(q.dtype)
    return (w * means).sum(dim=1) / w.sum(dim=1)


def gr4_ssim(
    pred: ArrayLike,
    ref: ArrayLike,
    *,
    data_range: float,
    variant: Literal["4-G-r*", "4-G-SSIM"] = "4-G-r*",
    win_size: int = 11,
    sigma: float = 1.5,
    thresholds: tuple[float, float] = GR4_THRESHOLDS,
    weights: Sequence[float] = GR4_WEIGHTS,
    k1: float = 0.01,
    k2: float = 0.03,
    flat_tol: float = 1e-3,
    reduction: Reduction = "none",
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> np.ndarray | float:
    """Four-component gradient SSIM, "4-G-R SSIM" of thesis Tables 5.1 and 6.1, of one ``(H, W)``
    pair (a float) or per item of a batch.

    The thesis (§5.3.4) names the metric without a formula; Pinaya et al. 2022 (brain LDM) report
    "4-G-R-SSIM" for the same purpose. The SSIM family of Renieblas et al. 2017 (J. Med. Imaging
    4(3):035501; ImageJ "SSIM family" plugin) defines **4-G-r*** as Li & Bovik's four-component
    pooling of the r* map computed on gradient images. That is what the default computes, on each
    2D slice (axes ``(H, W)``; channels and extra axes are averaged):

    1. Gradient magnitudes ``g_o = |Sobel(ref)|``, ``g_d = |Sobel(pred)|`` (3x3 Sobel / 8,
       replicated borders).
    2. Local moments of ``g_o`` and ``g_d`` in a Gaussian window (``win_size`` = 11 taps,
       ``sigma`` = 1.5, valid region as in SSIM).
    3. Quality map ``r*`` (Rouse & Hemami 2008, "Understanding and simplifying the structural
       similarity metric", ICIP): ``sigma_od / (sigma_o sigma_d)``; 1 where both local standard
       deviations are <= ``flat_tol * data_range`` (both patches flat), 0 where exactly one is
       (the stabilising constant C3 is dropped, as r* prescribes; ``flat_tol`` = 1e-3 replaces the
       exact zero test so float round-off is not read as texture).
    4. Regions (Li & Bovik 2010, "Content-partitioned structural similarity index for image
       quality assessment", Signal Process. Image Commun. 25:517), from the gradient magnitudes
       at each map pixel with ``TH1 = 0.12 g_max``, ``TH2 = 0.06 g_max``, ``g_max = max(g_o)``
       over the reference slice: R1 preserved edge ``g_o > TH1 and g_d > TH1``; R2 changed edge
       ``(g_o > TH1 and g_d <= TH1) or (g_o <= TH1 and g_d > TH1)``; R3 smooth
       ``g_o < TH2 and g_d <= TH1``; R4 texture: the rest.
    5. Score ``sum_k w_k mean_{R_k}(r*) / sum_{k: R_k non-empty} w_k`` with equal weights
       ``w = (0.25, 0.25, 0.25, 0.25)`` (empty regions drop out and the weights are renormalised).

    ``variant="4-G-SSIM"`` replaces r* by the G-SSIM map of Chen, Yang & Xie 2006 (luminance from
    the images, contrast-structure ``(2 sigma_od + C2) / (sigma_o^2 + sigma_d^2 + C2)`` from the
    gradient images, ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2``).

    Properties: 1 for identical images; invariant to a positive gain and an offset of ``pred``
    (r* is a correlation of gradient magnitudes); range [-1, 1]. The index is asymmetric:
    ``ref`` sets the region thresholds. A constant reference slice (``g_max = 0``) scores 1
    against a constant test slice and 0 against a test slice with structure everywhere.

    Caveats: the region weights are a documented choice (equal weights; Li & Bovik also explored
    unequal ones) and the Renieblas/Pinaya code was not available to check against, so absolute
    values may differ from the thesis's implementation; relative comparisons between methods
    computed with this function are consistent.

    Parameters
    ----------
    pred, ref : ``(H, W)`` or ``(B, C, *extra, H, W)`` test and reference images.
    data_range : float
        Intensity range ``L`` (scales ``flat_tol`` and the G-SSIM constants).
    variant : ``"4-G-r*"`` (default) or ``"4-G-SSIM"``.
    thresholds : (TH1, TH2) fractions of ``g_max``.
    weights : four region weights (preserved edge, changed edge, smooth, texture).
    """
    L = check_data_range(data_range)
    if variant not in ("4-G-r*", "4-G-SSIM"):
        raise ValueError(f"variant must be '4-G-r*' or '4-G-SSIM', got {variant!r}")
    w = tuple(float(v) for v in weights)
    if len(w) != 4 or any(v < 0 for v in w) or sum(w) <= 0:
        raise ValueError(f"weights must be four non-negative numbers with a positive sum, got {weights!r}")
    if not (0 < thresholds[1] <= thresholds[0]):
        raise ValueError(f"thresholds must satisfy 0 < TH2 <= TH1, got {thresholds!r}")
    pred, ref, single = _one_pair(pred, ref, 2)
    p, r, b = _prepare_pair(pred, ref, 2, device)
    n, c = p.shape[:2]
    _check_window(p.shape[2:], (win_size, win_size), "gr4_ssim")
    p = p.reshape(n * c, 1, *p.shape[2:])
    r = r.reshape(n * c, 1, *r.shape[2:])
    wt = torch.tensor(w, device=p.device)
    fn = lambda a, d: _gr4_slices(
        a,
        d,
        L=L,
        variant=variant,
        win=win_size,
        sigma=sigma,
        k1=k1,
        k2=k2,  # noqa: E731
        thresholds=(float(thresholds[0]), float(thresholds[1])),
        weights=wt,
        flat_tol=flat_tol,
    )
    vals = _chunked(fn, p, r, batch_size)
    return _reduce(_per_item(vals, b), reduction, single)


# ---------------------------------------------------------------------------------------------
# per-slice evaluation and regional aggregation (Table 4.1)
# ---------------------------------------------------------------------------------------------
_METRICS: dict[str, Callable[..., Any]] = {
    "ssim": ssim,
    "psnr": psnr,
    "rmse": rmse,
    "mae": mae,
    "ms_ssim": ms_ssim,
    "gr4_ssim": gr4_ssim,
}


def per_slice(
    metric: str | Callable[..., Any], pred: ArrayLike, ref: ArrayLike, *, slice_axis: int = 2, **kwargs: Any
) -> np.ndarray:
    """Evaluate an image metric separately on every slice (or frame) of each item.

    ``pred`` and ``ref`` are ``(B, C, ..., H, W)``; ``slice_axis`` (default 2, i.e. S in
    ``(B, C, S, H, W)``; use the frame axis for per-frame scores) is moved next to the batch axis
    and folded into it, the metric is called with ``reduction="none"`` and ``kwargs`` (e.g.
    ``data_range=1.0``), and the result is returned as ``(B, n_slices)``. Other extra axes (e.g.
    frames when slicing by S) are averaged inside each slice's score.

    ``metric`` is one of ``"ssim", "psnr", "rmse", "mae", "ms_ssim", "gr4_ssim"`` or a callable
    with the same ``(pred, ref, *, reduction, **kw) -> (B,)`` contract.
    """
    fn = _METRICS.get(metric) if isinstance(metric, str) else metric
    if fn is None:
        raise ValueError(f"unknown metric {metric!r}; choose one of {sorted(_METRICS)} or pass a callable")
    p = pred if isinstance(pred, torch.Tensor) else np.asarray(pred)
    r = ref if isinstance(ref, torch.Tensor) else np.asarray(ref)
    if tuple(p.shape) != tuple(r.shape):
        raise ValueError(f"pred and ref must have the same shape, got {tuple(p.shape)} and {tuple(r.shape)}")
    nd = len(p.shape)
    ax = slice_axis if slice_axis >= 0 else nd + slice_axis
    if not 2 <= ax < nd - 2:
        raise ValueError(
            f"slice_axis={slice_axis} must point at an axis between the channel axis and the last two "
            f"(in-plane) axes of shape {tuple(p.shape)}"
        )
    b, s = p.shape[0], p.shape[ax]

    def fold(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            x = torch.movedim(x, ax, 1)
        else:
            x = np.moveaxis(x, ax, 1)
        return x.reshape(b * s, *x.shape[2:])

    vals = np.asarray(fn(fold(p), fold(r), reduction="none", **kwargs), dtype=np.float64)
    return vals.reshape(b, s)


def slice_regions(n_slices: int, *, base_first: bool = True) -> np.ndarray:
    """Label the slices of a short-axis stack ``"basal"``, ``"mid"``, ``"apical"`` by thirds.

    Slices are split into three contiguous groups with :func:`numpy.array_split` (sizes differ by
    at most one, extra slices go to the basal then mid group; 10 slices -> 4/3/3, 3 -> 1/1/1).
    ``base_first=True`` means slice 0 is the most basal (the UK Biobank SAX convention); set it to
    False for apex-first stacks. Returns an object array of length ``n_slices``.
    """
    if int(n_slices) < 3:
        raise ValueError(f"n_slices must be >= 3 to form basal/mid/apical groups, got {n_slices}")
    groups = np.array_split(np.arange(int(n_slices)), 3)
    labels = np.empty(int(n_slices), dtype=object)
    for name, idx in zip(REGIONS, groups):
        labels[idx] = name
    return labels if base_first else labels[::-1].copy()


def mean_sd_by_region(
    values: ArrayLike | Mapping[str, ArrayLike],
    regions: ArrayLike,
    *,
    ddof: int = 1,
    order: Sequence[str] | None = None,
    nan_policy: Literal["raise", "omit"] = "raise",
):
    """Mean and standard deviation of per-slice scores grouped by region (Table 4.1 layout).

    Parameters
    ----------
    values : array ``(..., S)`` or mapping ``name -> array``
        Per-slice scores, e.g. the ``(B, S)`` output of :func:`per_slice`; a mapping produces one
        pair of columns per metric.
    regions : array of labels
        Either the same shape as ``values`` or length ``S`` (broadcast over the leading axes), e.g.
        :func:`slice_regions`.
    ddof : int
        Delta degrees of freedom of the standard deviation (1: sample SD, as ``mean ± sd`` tables
        usually report).
    order : region order of the rows; default basal, mid, apical first, then any other labels in
        order of appearance.
    nan_policy : ``"raise"`` (default) or ``"omit"`` NaN scores. ``+inf`` (e.g. PSNR of identical
        slices) is kept and makes the mean ``inf``.

    Returns
    -------
    pandas.DataFrame
        Index ``region``; columns ``n`` and ``mean``/``sd`` (single array) or ``<name>_mean`` /
        ``<name>_sd`` per metric. Groups with fewer than ``ddof + 1`` values get ``sd = NaN``.
    """
    import pandas as pd

    series = dict(values) if isinstance(values, Mapping) else {"": values}
    if not series:
        raise ValueError("values must not be an empty mapping")
    reg = np.asarray(regions, dtype=object)
    cols: dict[str, list[float]] = {}
    n_col: list[int] | None = None
    rows: list[str] | None = None
    for name, v in series.items():
        arr = np.asarray(v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v, dtype=np.float64)
        if arr.size == 0:
            raise ValueError(f"values{'[' + repr(name) + ']' if name else ''} is empty")
        if reg.shape == arr.shape:
            r = reg
        elif reg.ndim == 1 and arr.shape[-1:] == reg.shape:
            r = np.broadcast_to(reg, arr.shape)
        else:
            raise ValueError(
                f"regions of shape {reg.shape} match neither values of shape {arr.shape} nor its last axis"
            )
        flat, rflat = arr.ravel(), r.ravel()
        nan = np.isnan(flat)
        if nan.any():
            if nan_policy == "raise":
                raise ValueError(
                    f"values{'[' + repr(name) + ']' if name else ''} contains {int(nan.sum())} NaN; "
                    "pass nan_policy='omit' to drop them"
                )
            if nan_policy != "omit":
                raise ValueError(f"nan_policy must be 'raise' or 'omit', got {nan_policy!r}")
            flat, rflat = flat[~nan], rflat[~nan]
        if rows is None:
            seen = list(dict.fromkeys(rflat.tolist()))
            if order is None:
                rows = [x for x in REGIONS if x in seen] + [x for x in seen if x not in REGIONS]
            else:
                rows = list(order)
                missing = [x for x in seen if x not in rows]
                if missing:
                    raise ValueError(f"order {rows!r} lacks region label(s) {missing!r} present in regions")
        means, sds, ns = [], [], []
        for g in rows:
            sel = flat[rflat == g]
            ns.append(int(sel.size))
            means.append(float(np.mean(sel)) if sel.size else math.nan)
            sds.append(float(np.std(sel, ddof=ddof)) if sel.size > ddof else math.nan)
        key = f"{name}_" if name else ""
        cols[f"{key}mean"], cols[f"{key}sd"] = means, sds
        if n_col is None:
            n_col = ns
    df = pd.DataFrame({"n": n_col, **cols}, index=pd.Index(rows, name="region"))
    return df
