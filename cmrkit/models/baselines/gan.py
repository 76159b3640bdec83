"""Adversarial baselines: the 3D LSGAN (thesis Table 5.1) and the CGAN (Tables 6.1-6.4).

:class:`BaselineGAN` holds a generator (the :class:`~cmrkit.models.baselines.common.VolumeDecoder`
from ``z`` -- plus the condition features for the CGAN, concatenated as in Mirza & Osindero 2014 -- to
the image and label logits of every frame) and a 3D :class:`~cmrkit.models.baselines.common.PatchCritic`
as its ``discriminator`` submodule, which is what :func:`cmrkit.train.fit` with
:class:`cmrkit.train.Adversarial` trains with its own optimiser.

Losses (:class:`GANLoss`, MONAI :class:`~monai.losses.PatchAdversarialLoss` over the patch logits):

* ``"least_squares"`` (LSGAN, Mao et al. 2017, a-b-c coding 0-1-1, no output activation)::

      L_D = 1/2 E[(D(x) - 1)^2] + 1/2 E[D(G(z))^2]        L_G = 1/2 E[(D(G(z)) - 1)^2]

* ``"bce"`` (the original GAN loss, Goodfellow et al. 2014, non-saturating generator)::

      L_D = 1/2 (BCE(D(x), 1) + BCE(D(G(z)), 0))         L_G = BCE(D(G(z)), 1)

The critic sees real frames as image + one-hot labels and generated ones as image + softmax of the
logits (:func:`~cmrkit.models.baselines.common.critic_input`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .common import BaselineConfig, PatchCritic, VolumeDecoder, critic_input, finish_output, frame_input

__all__ = ["BaselineGAN", "GANLoss", "CRITERIA"]

CRITERIA = ("least_squares", "bce")


class BaselineGAN(nn.Module):
    """(Conditional) GAN over image + label volumes or sequences (module docstring).

    Parameters
    ----------
    config
        Sizes; ``cond_dim > 0`` makes it a CGAN. The generator uses batch norm (DCGAN/LSGAN practice)
        whatever ``config.norm`` says.
    seed
        Seed of the weight initialisation.
    """

    def __init__(self, config: BaselineConfig, *, seed: int | None = 0) -> None:
        super().__init__()
        self.config = config
        c = config
        gcfg = BaselineConfig.from_dict({**c.to_dict(), "norm": "batch"})
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(int(seed))
            self.generator = VolumeDecoder(gcfg, c.latent_dim + c.cond_dim, c.net_channels(c.frame_channels))
            self.discriminator = PatchCritic(c, c.net_channels(c.frame_channels))

    @classmethod
    def from_config(cls, d: Mapping[str, Any]) -> BaselineGAN:
        return cls(BaselineConfig.from_dict(d), seed=None)

    def sample(self, z: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """``G(z, c)``: packed output, image channels through a sigmoid, label logits."""
        c = self.config
        if c.cond_dim:
            if features is None or features.shape != (z.shape[0], c.cond_dim):
                got = None if features is None else tuple(features.shape)
                raise ValueError(f"BaselineGAN: expected condition features (B, {c.cond_dim}), got {got}")
            z = torch.cat([z, features.to(z.dtype)], dim=1)
        return finish_output(c, self.generator(z))

    def critic(self, x: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """Patch logits of a critic-view input (real: image + one-hot; fake: image + softmax)."""
        return self.discriminator(x, features if self.config.cond_dim else None)


class GANLoss:
    """The generator's and the discriminator's losses (module docstring) for :func:`cmrkit.train.fit`.

    ``generator(model, batch)`` is the ``loss_fn`` and ``discriminator(model, batch)`` the
    :class:`cmrkit.train.Adversarial` ``d_loss_fn``. Each draws ``z ~ N(0, I)`` from the torch RNG
    (which :func:`~cmrkit.train.fit` seeds per epoch); ``batch`` is ``{"image", "labels"[, "cond"]}``
    (the condition features of the real samples are also the generated samples' conditions).
    """

    def __init__(self, criterion: str = "least_squares") -> None:
        from monai.losses import PatchAdversarialLoss

        if criterion not in CRITERIA:
            raise ValueError(f"GANLoss: criterion must be one of {CRITERIA}, got {criterion!r}")
        self.criterion = criterion
        self.adv = PatchAdversarialLoss(criterion=criterion, no_activation_leastsq=True, reduction="mean")

    def _fake(self, model: BaselineGAN, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        c = model.config
        z = torch.randn(batch["image"].shape[0], c.latent_dim, device=batch["image"].device)
        return critic_input(c, model.sample(z, batch.get("cond")))

    def d_terms(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """``L_D`` from the critic's logits on real and generated samples."""
        return 0.5 * (
            self.adv(real_logits, target_is_real=True, for_discriminator=True)
            + self.adv(fake_logits, target_is_real=False, for_discriminator=True)
        )

    def g_term(self, fake_logits: torch.Tensor) -> torch.Tensor:
        """``L_G`` from the critic's logits on generated samples."""
        g = self.adv(fake_logits, target_is_real=True, for_discriminator=False)
        return 0.5 * g if self.criterion == "least_squares" else g

    def generator(self, model: BaselineGAN, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        fake_logits = model.critic(self._fake(model, batch), batch.get("cond"))
        loss = self.g_term(fake_logits.float())
        return loss, {"d_fake_for_g": fake_logits.detach().float().mean()}

    def discriminator(self, model: BaselineGAN, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        c = model.config
        real = frame_input(c, batch["image"], batch["labels"])
        with torch.no_grad():
            fake = self._fake(model, batch)
        r = model.critic(real, batch.get("cond")).float()
        f = model.critic(fake, batch.get("cond")).float()
        return self.d_terms(r, f), {"real": r.detach().mean(), "fake": f.detach().mean()}
