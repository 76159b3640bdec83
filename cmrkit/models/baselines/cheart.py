"""CHeart (Qiao et al., IEEE TMI 2023, "CHeart: a conditional spatio-temporal generative model for
cardiac anatomy"), re-implemented from the paper and adapted to images as thesis §6.3.2 did.

CHeart is a conditional VAE for cardiac anatomy whose decoder carries a **recurrent motion model**:
the latent code of the end-diastolic anatomy is unrolled over the cardiac cycle by an LSTM cell, and
every frame is decoded from the cell's hidden state together with the (mapped) conditions.

* **Conditions.** A mapping network (:class:`~cmrkit.models.baselines.common.MappingNetwork`: pixel norm
  + Linear/LeakyReLU layers, StyleGAN style, as CHeart's) embeds the condition features ``c`` into
  ``w``. ``w`` enters the encoder as constant maps beside the input and the decoder after the LSTM
  (CHeart's "encoder and decoder" mapping, conditions concatenated after the recurrent cell).
* **Encoder** ``q(z | x_ED, c)``: 3D convolutions over the ED frame (image + one-hot labels; CHeart
  encodes the ED segmentation, the thesis an image -- the kit's frames carry both) and ``w``, then
  ``mu`` and ``logvar``.
* **Motion model**: ``h_0 = c_0 = 0``; the input of step 0 is ``P z`` (a linear projection to the
  hidden size), the input of step ``t > 0`` is ``h_{t-1}``; ``(h_t, c_t) = LSTMCell(input_t, (h_{t-1},
  c_{t-1}))`` for ``t = 0 .. T-1``.
* **Decoder**: frame ``t = Dec([h_t, w])`` with shared weights over frames
  (:class:`~cmrkit.models.baselines.common.VolumeDecoder`, transposed 3D convolutions) -> image (sigmoid)
  and label logits.

Loss (:class:`CHeartLoss`): per-frame reconstruction of the whole sequence from the ED frame, MSE of
the image + cross-entropy of the labels (CHeart: cross-entropy of its segmentations) +
``beta * KL`` with the KL averaged over latent dimensions (CHeart: ``beta = 1e-2``). CHeart's optional
class and temporal loss weights are not used (every class and frame counts the same). Sampling:
``z ~ N(0, I)`` and the conditions give the whole sequence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .common import (
    BaselineConfig,
    MappingNetwork,
    VolumeDecoder,
    VolumeEncoder,
    condition_maps,
    finish_output,
    frame_input,
    kl_per_dim,
)
from .vae import reconstruction_terms

__all__ = ["CHeart", "CHeartLoss"]


class CHeart(nn.Module):
    """Conditional spatio-temporal VAE with an LSTM motion model (module docstring).

    Parameters
    ----------
    config
        Sizes; ``frames`` is the sequence length ``T``, ``hidden`` the LSTM size, ``mapping_dim`` /
        ``mapping_layers`` the condition mapping network, ``cond_dim`` the condition features (``>= 1``).
    seed
        Seed of the weight initialisation.
    decode_chunk
        Frames decoded at once (bounds the decoder's activation memory).
    """

    def __init__(self, config: BaselineConfig, *, seed: int | None = 0, decode_chunk: int = 64) -> None:
        super().__init__()
        c = config
        if c.cond_dim < 1:
            raise ValueError("CHeart is conditional: config.cond_dim must be >= 1")
        self.config = c
        self.decode_chunk = int(decode_chunk)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(int(seed))
            self.mapping = MappingNetwork(c.cond_dim, c.mapping_dim, c.mapping_layers)
            w = self.mapping.out_features
            self.encoder = VolumeEncoder(c, c.net_channels(c.frame_channels, 1) + w, 2 * c.latent_dim)
            self.project = nn.Linear(c.latent_dim, c.hidden)
            self.cell = nn.LSTMCell(c.hidden, c.hidden)
            self.decoder = VolumeDecoder(c, c.hidden + w, c.net_channels(c.frame_channels, 1))

    @classmethod
    def from_config(cls, d: Mapping[str, Any]) -> CHeart:
        return cls(BaselineConfig.from_dict(d), seed=None)

    def _w(self, features: torch.Tensor | None, n: int) -> torch.Tensor:
        c = self.config
        if features is None or features.shape != (n, c.cond_dim):
            got = None if features is None else tuple(features.shape)
            raise ValueError(f"CHeart: expected condition features ({n}, {c.cond_dim}), got {got}")
        return self.mapping(features.float())

    def encode(self, ed: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Packed ED frame (one frame of :meth:`BaselineConfig.pack`) and condition features -> ``(mu, logvar)``."""
        w = self._w(features, ed.shape[0])
        x = torch.cat([ed, condition_maps(w, ed)], dim=1)
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def motion(self, z: torch.Tensor) -> torch.Tensor:
        """The recurrent motion model: hidden states ``(B, T, hidden)`` unrolled from ``z``."""
        h = torch.zeros(z.shape[0], self.config.hidden, device=z.device, dtype=z.dtype)
        cstate = torch.zeros_like(h)
        inp = self.project(z)
        states = []
        for _ in range(self.config.frames):
            h, cstate = self.cell(inp, (h, cstate))
            states.append(h)
            inp = h
        return torch.stack(states, dim=1)

    def decode(self, z: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Latent ``(B, latent_dim)`` and features -> packed sequence (:meth:`BaselineConfig.pack`)."""
        c = self.config
        b, t = z.shape[0], c.frames
        w = self._w(features, b)
        hs = self.motion(z)
        u = torch.cat([hs, w[:, None, :].expand(-1, t, -1).to(hs.dtype)], dim=2).reshape(b * t, -1)
        outs = [self.decoder(u[s : s + self.decode_chunk]) for s in range(0, b * t, self.decode_chunk)]
        y = finish_output(c, torch.cat(outs))  # (B*T, frame channels, *grid), frame-major
        return y.reshape(b, t * y.shape[1], *y.shape[2:])  # the packed order: frame t's channels at t*C..

    def forward(self, ed: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(packed sequence, mu, logvar)`` from the ED frame (``mu`` decoded in eval mode)."""
        mu, logvar = self.encode(ed, features)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
        return self.decode(z, features), mu, logvar

    def sample(self, z: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """Decode prior draws ``z`` under the conditions (what ``generate`` calls)."""
        if features is None:
            raise ValueError("CHeart.sample: the model is conditional; pass the condition features")
        return self.decode(z, features)


class CHeartLoss:
    """``loss_fn(model, batch)``: reconstruct the whole sequence from its ED frame (module docstring).

    ``batch``: ``{"image": (B, X, Y, Z, T), "labels", "cond"}``. Logs ``mse``, ``ce``, ``kl``.
    """

    def __init__(self, kl_weight: float = 1e-2) -> None:
        if not (float(kl_weight) >= 0):
            raise ValueError(f"kl_weight must be >= 0, got {kl_weight}")
        self.kl_weight = float(kl_weight)

    def __call__(self, model: CHeart, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        c = model.config
        ed = frame_input(c, batch["image"][..., 0], batch["labels"][..., 0])
        out, mu, logvar = model(ed, batch["cond"])
        mse, ce = reconstruction_terms(c, out, batch["image"], batch["labels"])
        kl = kl_per_dim(mu.float(), logvar.float())
        return mse + ce + self.kl_weight * kl, {"mse": mse.detach(), "ce": ce.detach(), "kl": kl.detach()}
