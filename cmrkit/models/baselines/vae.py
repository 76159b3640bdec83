"""Variational autoencoders of the comparisons: the 3D VAE (thesis Table 5.1) and the CVAE (Tables 6.1-6.4).

:class:`BaselineVAE` is one network for both. Unconditional (``cond_dim = 0``) over single volumes it
is the thesis' 3D VAE (§5.3.2: 3D convolutional encoder, transposed-convolutional decoder, MSE
reconstruction + KL; Kingma & Welling 2014). Conditional over sequences it is the CVAE of §6.3.2
(Sohn et al. 2015): the condition features are concatenated with the image in the encoder (as
constant maps beside the frames) and with the latent in the decoder::

    q(z | x, c) = N(mu, diag(exp(logvar))),   (mu, logvar) = Enc([x, c])
    p(x | z, c) : Dec([z, c]) -> image (sigmoid) + label logits per frame

Loss (:class:`VAELoss`): ``MSE(image) + CE(labels) + beta * KL``, the reconstruction terms averaged
over voxels and the KL over latent dimensions (:func:`~cmrkit.models.baselines.common.kl_per_dim`, the
form of CHeart's loss, so ``beta`` means the same for the 3D VAE, the CVAE and CHeart). Sampling
decodes ``z ~ N(0, I)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .common import BaselineConfig, VolumeDecoder, VolumeEncoder, condition_maps, finish_output, frame_input, kl_per_dim

__all__ = ["BaselineVAE", "VAELoss", "reconstruction_terms"]


class BaselineVAE(nn.Module):
    """(Conditional) VAE over image + label volumes or sequences (module docstring).

    Parameters
    ----------
    config
        Sizes (:class:`~cmrkit.models.baselines.common.BaselineConfig`); ``cond_dim > 0`` makes it a CVAE.
    seed
        Seed of the weight initialisation (the caller's RNG state is left untouched).
    """

    def __init__(self, config: BaselineConfig, *, seed: int | None = 0) -> None:
        super().__init__()
        self.config = config
        c = config
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(int(seed))
            self.encoder = VolumeEncoder(c, c.net_channels(c.frame_channels) + c.cond_dim, 2 * c.latent_dim)
            self.decoder = VolumeDecoder(c, c.latent_dim + c.cond_dim, c.net_channels(c.frame_channels))

    @classmethod
    def from_config(cls, d: Mapping[str, Any]) -> BaselineVAE:
        return cls(BaselineConfig.from_dict(d), seed=None)

    def _cond(self, x: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor | None:
        c = self.config
        if not c.cond_dim:
            return None
        if features is None or features.shape != (x.shape[0], c.cond_dim):
            got = None if features is None else tuple(features.shape)
            raise ValueError(f"{type(self).__name__}: expected condition features (B, {c.cond_dim}), got {got}")
        return features.to(x.dtype)

    def encode(self, x: torch.Tensor, features: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Packed input (:meth:`BaselineConfig.pack`) (+ features) -> ``(mu, logvar)`` of ``q(z | x, c)``."""
        f = self._cond(x, features)
        if f is not None:
            x = torch.cat([x, condition_maps(f, x)], dim=1)
        h = self.encoder(x)
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """Latent ``(B, latent_dim)`` (+ features) -> packed output, image channels through a sigmoid."""
        f = self._cond(z, features)
        return finish_output(self.config, self.decoder(z if f is None else torch.cat([z, f], dim=1)))

    def forward(
        self, x: torch.Tensor, features: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(output, mu, logvar)``: decodes ``mu + sigma * eps`` in train mode and ``mu`` in eval mode."""
        mu, logvar = self.encode(x, features)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
        return self.decode(z, features), mu, logvar

    def sample(self, z: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """Decode prior draws ``z`` (what :func:`~cmrkit.models.baselines.common.generate` calls)."""
        return self.decode(z, features)


def reconstruction_terms(
    cfg: BaselineConfig, out: torch.Tensor, image: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(MSE of the image, cross-entropy of the labels)`` of a packed output against the data
    ``(B, X, Y, Z[, T])``, computed frame by frame in the packed order (no copy of the output)."""
    v = cfg.frames_of(out)
    v = v.reshape(v.shape[0] * v.shape[1], *v.shape[2:]).float()
    img = cfg.to_frame_major(image).reshape(v.shape[0], *cfg.frame_grid).float()
    lab = cfg.to_frame_major(labels).reshape(v.shape[0], *cfg.frame_grid).long()
    return F.mse_loss(v[:, 0], img), F.cross_entropy(v[:, 1:], lab)


class VAELoss:
    """``loss_fn(model, batch)`` for :func:`cmrkit.train.fit`: ``MSE + CE + kl_weight * KL`` (module docstring).

    ``batch``: ``{"image", "labels"[, "cond"]}`` with images ``(B, X, Y, Z[, T])``. Logs ``mse``, ``ce``, ``kl``.
    """

    def __init__(self, kl_weight: float = 1e-2) -> None:
        if not (float(kl_weight) >= 0):
            raise ValueError(f"kl_weight must be >= 0, got {kl_weight}")
        self.kl_weight = float(kl_weight)

    def __call__(self, model: BaselineVAE, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        c = model.config
        x = frame_input(c, batch["image"], batch["labels"])
        out, mu, logvar = model(x, batch.get("cond"))
        mse, ce = reconstruction_terms(c, out, batch["image"], batch["labels"])
        kl = kl_per_dim(mu.float(), logvar.float())
        loss = mse + ce + self.kl_weight * kl
        return loss, {"mse": mse.detach(), "ce": ce.detach(), "kl": kl.detach()}
