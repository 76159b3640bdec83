"""Baseline generators the thesis compares its latent diffusion models with.

=================  ========================================  ======================  ==========================
model              class                                      thesis                  data
=================  ========================================  ======================  ==========================
3D VAE             :class:`BaselineVAE` (``cond_dim = 0``)    Table 5.1, §5.3.2       ED volume + mask
3D LSGAN           :class:`BaselineGAN` (least squares)       Table 5.1, §5.3.2       ED volume + mask
CGAN               :class:`BaselineGAN` (conditional)         Tables 6.1-6.4, §6.3.2  sequence + masks, 8 covariates
CVAE               :class:`BaselineVAE` (conditional)         Tables 6.1-6.4, §6.3.2  sequence + masks, 8 covariates
CHeart             :class:`CHeart`                            Tables 6.1-6.4, §6.3.2  sequence + masks, 8 covariates
=================  ========================================  ======================  ==========================

Models know sizes, not chapters: each takes a :class:`BaselineConfig`; ``cmrkit.chapters.baselines``
maps the profile's ``baselines:`` section onto it, and trains them with :func:`cmrkit.train.fit`
(the GANs with :class:`cmrkit.train.Adversarial`). Submodules: :mod:`.common` (sizes, encoder, decoder,
patch critic, packing, sampling), :mod:`.vae`, :mod:`.gan`, :mod:`.cheart`.
"""

from __future__ import annotations

from .cheart import CHeart, CHeartLoss
from .common import BaselineConfig, SequenceDataset, generate, patch_padding
from .gan import BaselineGAN, GANLoss
from .vae import BaselineVAE, VAELoss

__all__ = [
    "BaselineConfig",
    "BaselineVAE",
    "BaselineGAN",
    "CHeart",
    "VAELoss",
    "GANLoss",
    "CHeartLoss",
    "SequenceDataset",
    "generate",
    "patch_padding",
]
