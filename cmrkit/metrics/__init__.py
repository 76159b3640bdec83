"""Evaluation metrics used by every chapter's tables.

Submodules (import them explicitly; each documents its exact definitions):

* :mod:`cmrkit.metrics.image` — SSIM, PSNR, RMSE, MAE, MS-SSIM, 4-G-r* SSIM; per-slice evaluation
  and basal/mid/apical aggregation (Table 4.1).
* :mod:`cmrkit.metrics.segmentation` — Dice, Hausdorff (max / 95th percentile) and ASSD per label
  in mm (§4.3.7, §6.2.3).
* :mod:`cmrkit.metrics.generative` — Fréchet distance over pluggable feature extractors (FID,
  FRD, offline default), improved precision/recall, MMD, MS-SSIM / 4-G-r* diversity and
  similarity (Tables 5.1, 6.1).
* :mod:`cmrkit.metrics.distribution` — KL divergence and 1-D Wasserstein distance between
  phenotype samples with bootstrap intervals (Tables 6.2-6.5).

The most used functions are re-exported here.
"""

from __future__ import annotations

from . import distribution, generative, image, segmentation
from .distribution import kl_divergence, wasserstein
from .generative import (
    frechet_distance,
    get_extractor,
    image_frechet_distance,
    mean_pairwise_similarity,
    mean_similarity_to_reference,
    mmd,
    precision_recall,
)
from .image import gr4_ssim, mae, mean_sd_by_region, ms_ssim, per_slice, psnr, rmse, slice_regions, ssim
from .segmentation import assd, dice, hausdorff, segmentation_scores

__all__ = [
    "image",
    "segmentation",
    "generative",
    "distribution",
    "ssim",
    "psnr",
    "rmse",
    "mae",
    "ms_ssim",
    "gr4_ssim",
    "per_slice",
    "slice_regions",
    "mean_sd_by_region",
    "dice",
    "hausdorff",
    "assd",
    "segmentation_scores",
    "frechet_distance",
    "image_frechet_distance",
    "get_extractor",
    "precision_recall",
    "mmd",
    "mean_pairwise_similarity",
    "mean_similarity_to_reference",
    "kl_divergence",
    "wasserstein",
]
