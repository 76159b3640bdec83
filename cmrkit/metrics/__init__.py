"""Evaluation metrics used by every chapter's tables.

Submodules (import them explicitly; each documents its exact definitions):

* :mod:`cmrkit.metrics.image` — SSIM, PSNR, RMSE, MAE, MS-SSIM, 4-G-r* SSIM of one image pair or a
  batch; per-slice evaluation and basal/mid/apical aggregation (Table 4.1).
* :mod:`cmrkit.metrics.segmentation` — Dice, Hausdorff (max / 95th percentile) and ASSD per label
  in mm (§4.3.7, §6.2.3).
* :mod:`cmrkit.metrics.features` — the feature extractors behind the set-level metrics:
  Inception-V3 (FID), ResNet50 (FRD), a seeded random CNN (offline default).
* :mod:`cmrkit.metrics.generative` — Fréchet distance over those features, improved
  precision/recall, MMD, MS-SSIM / 4-G-r* diversity and similarity (Tables 5.1, 6.1).
* :mod:`cmrkit.metrics.distribution` — KL divergence and 1-D Wasserstein distance between
  phenotype samples with bootstrap intervals (Tables 6.2-6.5).
* :mod:`cmrkit.metrics.realism` — how realistic an image or a cohort is: tissue contrast, noise,
  SNR, tag period and fading, phenotypes against reference values (notebook 00).
* :mod:`cmrkit.metrics.inputs` — the input checks the metrics share.

The most used functions are re-exported here.
"""

from __future__ import annotations

from . import distribution, features, generative, image, realism, segmentation
from .distribution import kl_divergence, wasserstein
from .features import (
    FeatureExtractor,
    InceptionV3Features,
    RandomConvFeatures,
    ResNet50Features,
    extract_features,
    get_extractor,
)
from .generative import (
    frechet_distance,
    image_frechet_distance,
    mean_pairwise_similarity,
    mean_similarity_to_reference,
    mmd,
    precision_recall,
)
from .image import gr4_ssim, mae, mean_sd_by_region, ms_ssim, per_slice, psnr, rmse, slice_regions, ssim
from .realism import snr, tag_period_and_contrast, tissue_contrast
from .segmentation import assd, dice, hausdorff, segmentation_scores

__all__ = [
    "image",
    "segmentation",
    "features",
    "generative",
    "distribution",
    "realism",
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
    "FeatureExtractor",
    "RandomConvFeatures",
    "InceptionV3Features",
    "ResNet50Features",
    "extract_features",
    "get_extractor",
    "frechet_distance",
    "image_frechet_distance",
    "precision_recall",
    "mmd",
    "mean_pairwise_similarity",
    "mean_similarity_to_reference",
    "kl_divergence",
    "wasserstein",
    "tissue_contrast",
    "snr",
    "tag_period_and_contrast",
]
