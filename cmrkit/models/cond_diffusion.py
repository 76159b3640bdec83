"""Conditional 4D latent diffusion (thesis ch. 6): whole cine sequences generated for given covariates.

Built from chapter 5's pieces (:mod:`cmrkit.models.autoencoder`, :mod:`cmrkit.models.diffusion`) and
MONAI's UNet, schedulers and inferers, plus the covariate handling of :mod:`cmrkit.models.conditioning`.

Temporal handling (thesis §6.3.2: 128 x 128 x 10 x 50 frames -> latent 16 x 16 x 1 x 50)
-----------------------------------------------------------------------------------------
* **Space is compressed frame by frame.** :class:`SequenceAutoencoder` applies one
  :class:`~cmrkit.models.autoencoder.VolumeAutoencoder` (image + mask, slices folded into the first
  layer; chapter 5's depth handling) to every frame of a ``(X, Y, Z, T)`` sequence with shared weights:
  the frames are moved into the batch, each 3D frame becomes a ``(c, X/f, Y/f)`` latent (depth 1), and
  the autoencoder is trained on frames as independent volumes (L1 + CE + ``kl_weight`` KL; thesis
  L1 + KL 1e-6, here with the mask term of ch. 5 because the generated sequences carry masks).
* **Time is modelled by the diffusion model.** The ``T`` frame latents are stacked on the channel
  axis in frame order (channel ``t * c + k``), giving one ``(T * c, X/f, Y/f)`` latent per sequence
  (the thesis' 16 x 16 x 1 x 50 is ``c = 1``, ``T = 50``). The UNet's first convolution sees all
  frames at once, so the cardiac cycle (contraction, timing, the coupling of ED and ES anatomy) is
  learned by the denoiser, and the decoder is frame-wise. A 3D UNet over ``(X/f, Y/f, T)`` would make
  time translation-equivariant, which a cycle anchored at ED = frame 0 does not need, at ``T`` times
  the cost.

Conditioning and guidance (thesis §6.2.2, eqs. 6.4-6.5)
--------------------------------------------------------
``eps_theta(z_t, t, tau_theta(y))``: :class:`ConditionalLatentDiffusion` holds a MONAI
``DiffusionModelUNet(spatial_dims=2, with_conditioning=True, cross_attention_dim=D)`` and the
:class:`~cmrkit.models.conditioning.ConditionEncoder` ``tau_theta``; both are trained jointly on
``|eps - eps_theta|`` (thesis: L1). With probability ``cond_dropout`` a training sample's context is
replaced by the null context (every element :data:`~cmrkit.models.conditioning.NULL_FILL`), so the
same network also learns ``eps_theta(z_t, t, 0)``. Sampling with guidance weight ``w`` uses MONAI's
:meth:`monai.inferers.DiffusionInferer.sample` ``cfg=w``, i.e. classifier-free guidance (Ho &
Salimans 2022)::

    eps = eps_theta(z_t, t, 0) + w * (eps_theta(z_t, t, y) - eps_theta(z_t, t, 0))   (guided_noise)

``w = 1`` is the conditional model itself (then the unconditional half is not computed); ``w > 1``
sharpens the conditional at the price of diversity. DDIM with ``eta = 0`` from seeded initial noise
(:func:`cmrkit.models.diffusion.initial_noise`) makes a sample a deterministic function of
``(seed, conditions, w)``: a counterfactual keeps the noise and changes one covariate.

Noise prior (``ConditionalDiffusionConfig.prior``)
-------------------------------------------------
The frames of a sequence are channels of one latent, and they are strongly correlated: in the `cpu`
profile's latents one frame-averaged component carries 94 % of the variance and the ED-to-ES contraction
4 %, while the remaining 18 frame combinations share under 2 %. Under the usual isotropic noise the
denoiser's error is spread evenly over all 20 combinations, so most of it lands in combinations the data
hardly use, as frame-to-frame jitter of the generated anatomy. ``prior="channel_covariance"`` runs the
diffusion on whitened latents instead (PriorGrad, Lee et al. 2022; for video, Ge et al. 2023 "Preserve your
own correlation" correlate the noise of the frames for the same reason): the forward process ends in
``N(0, Sigma)`` of the latents and an error reaches each frame combination in proportion to its variance.
The whitening is a fixed linear map estimated on the training latents and stored in the checkpoint
(:func:`cmrkit.models.diffusion.channel_whitening`).

Abduction (:func:`ddim_invert`)
-------------------------------
DDIM inversion (Song et al. 2021; Mokady et al. 2023) runs the deterministic chain backwards with
MONAI's :meth:`~monai.networks.schedulers.DDIMScheduler.reversed_step`, mapping the latent of a *real*
sequence to the noise from which the model regenerates it under its own covariates; sampling from that
noise under other covariates gives a counterfactual of a real subject (Monteiro et al. 2023).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..utils import resolve_device
from .autoencoder import VolumeAutoencoder, VolumeAutoencoderConfig, split_output
from .conditioning import NULL_FILL, ConditionEncoder, ConditionSpace
from .diffusion import LatentDiffusionConfig, ddim_scheduler, initial_noise, mix_channels

__all__ = [
    "SequenceAutoencoder",
    "FrameDataset",
    "ConditionalDiffusionConfig",
    "PRIORS",
    "ConditionalLatentDiffusion",
    "ConditionalDiffusionLoss",
    "ConditionalLatentDataset",
    "GeneratedSequences",
    "guided_noise",
    "encode_sequences",
    "sample_latents",
    "decode_latents",
    "generate_sequences",
    "ddim_invert",
]


# ============================================================================================ stage 1
class SequenceAutoencoder(nn.Module):
    """A frame-wise :class:`~cmrkit.models.autoencoder.VolumeAutoencoder` over ``(X, Y, Z, T)`` sequences.

    Parameters
    ----------
    config
        Sizes of the per-frame autoencoder (``depth`` = slices ``Z``).
    frames
        ``T``, the number of frames of a sequence.
    seed
        Weight initialisation seed of the frame autoencoder.
    decode_chunk
        Frames decoded at once (bounds the decoder's activation memory).

    The sequence latent is ``(B, T * c, X', Y')`` with frame ``t``'s channels at ``t*c .. t*c + c - 1``
    (module docstring); :meth:`decode_stage_2_outputs` makes the wrapper a first stage for MONAI's
    latent inferers.
    """

    def __init__(
        self, config: VolumeAutoencoderConfig, frames: int, *, seed: int | None = 0, decode_chunk: int = 64
    ) -> None:
        super().__init__()
        if int(frames) < 1:
            raise ValueError(f"SequenceAutoencoder: frames must be >= 1, got {frames}")
        if int(decode_chunk) < 1:
            raise ValueError(f"SequenceAutoencoder: decode_chunk must be >= 1, got {decode_chunk}")
        self.frames = int(frames)
        self.decode_chunk = int(decode_chunk)
        self.frame = VolumeAutoencoder(config, seed=seed)

    @property
    def config(self) -> VolumeAutoencoderConfig:
        return self.frame.config

    @classmethod
    def from_config(cls, d: Mapping[str, Any]) -> SequenceAutoencoder:
        """Build from ``{"frame": VolumeAutoencoderConfig.to_dict(), "frames": T}`` (used by
        :func:`cmrkit.train.load_model`)."""
        return cls(VolumeAutoencoderConfig.from_dict(d["frame"]), int(d["frames"]), seed=None)

    def to_config(self) -> dict[str, Any]:
        return {"frame": self.config.to_dict(), "frames": self.frames}

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        c, x, y = self.config.latent_shape
        return (self.frames * c, x, y)

    def stack(self, z: torch.Tensor) -> torch.Tensor:
        """Frame latents ``(B*T, c, X', Y')`` (frame fastest) -> sequence latents ``(B, T*c, X', Y')``."""
        bt, c, x, y = z.shape
        return z.reshape(bt // self.frames, self.frames * c, x, y)

    def unstack(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`stack`."""
        if z.ndim != 4 or tuple(z.shape[1:]) != self.latent_shape:
            raise ValueError(f"sequence latent: expected (B, {self.latent_shape}), got {tuple(z.shape)}")
        b = z.shape[0]
        c = self.config.latent_channels
        return z.reshape(b * self.frames, c, *z.shape[2:])

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C_in, X, Y, Z, T)`` -> sequence latent mean and sd ``(B, T*c, X', Y')``."""
        if x.ndim != 6 or x.shape[-1] != self.frames:
            raise ValueError(
                f"SequenceAutoencoder.encode: expected (B, C, X, Y, Z, {self.frames}), got {tuple(x.shape)}"
            )
        b = x.shape[0]
        frames = x.permute(0, 5, 1, 2, 3, 4).reshape(b * self.frames, *x.shape[1:5])
        mu, sigma = self.frame.encode(frames)
        return self.stack(mu), self.stack(sigma)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Sequence latent ``(B, T*c, X', Y')`` -> ``(B, 1 + K, X, Y, Z, T)`` (image, mask logits)."""
        zf = self.unstack(z)
        outs = [self.frame.decode(zf[s : s + self.decode_chunk]) for s in range(0, zf.shape[0], self.decode_chunk)]
        out = torch.cat(outs)  # (B*T, 1+K, X, Y, Z)
        b = z.shape[0]
        return out.reshape(b, self.frames, *out.shape[1:]).permute(0, 2, 3, 4, 5, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, sigma = self.encode(x)
        z = mu + sigma * torch.randn_like(sigma) if self.training else mu
        return self.decode(z), mu, sigma

    def decode_stage_2_outputs(self, z: torch.Tensor) -> torch.Tensor:
        return self.decode(z)

    def encode_stage_2_inputs(self, x: torch.Tensor) -> torch.Tensor:
        mu, sigma = self.encode(x)
        return mu + sigma * torch.randn_like(sigma)


class FrameDataset(torch.utils.data.Dataset):
    """The frames of ``(N, X, Y, Z, T)`` sequences as ``(X, Y, Z)`` volumes (no copy).

    Item ``j`` is frame ``frames[j % len(frames)]`` of sequence ``j // len(frames)`` as
    ``{"image": float32, "labels": int64}``, the batch format of
    :class:`~cmrkit.models.autoencoder.AutoencoderLoss`.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, frames: Sequence[int] | None = None) -> None:
        if images.ndim != 5 or labels.shape != images.shape:
            raise ValueError(
                f"FrameDataset: images and labels must be equal (N, X, Y, Z, T), got {images.shape}, {labels.shape}"
            )
        self.images, self.labels = images, labels
        t = images.shape[-1]
        self.frames = list(range(t)) if frames is None else [int(f) for f in frames]
        if not self.frames or min(self.frames) < 0 or max(self.frames) >= t:
            raise ValueError(f"FrameDataset: frames {frames} outside 0..{t - 1}")

    def __len__(self) -> int:
        return len(self.images) * len(self.frames)

    def __getitem__(self, j: int) -> dict[str, torch.Tensor]:
        i, f = divmod(int(j), len(self.frames))
        t = self.frames[f]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(self.images[i, ..., t], dtype=np.float32)),
            "labels": torch.from_numpy(np.ascontiguousarray(self.labels[i, ..., t], dtype=np.int64)),
        }


@torch.no_grad()
def encode_sequences(
    autoencoder: SequenceAutoencoder,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int = 2,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence latent ``mu`` and ``sigma`` ``(N, T*c, X', Y')`` (float32, CPU) of ``(N, X, Y, Z, T)`` sequences."""
    dev = resolve_device(device)
    autoencoder.to(dev).eval()
    k = max(int(autoencoder.config.n_classes) - 1, 1)
    mus, sigmas = [], []
    for s in range(0, len(images), int(batch_size)):
        img = torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size], dtype=np.float32)).to(dev)
        x = img.unsqueeze(1)
        if autoencoder.config.n_classes:
            lab = torch.from_numpy(np.asarray(labels[s : s + batch_size], np.float32)).to(dev) / float(k)
            x = torch.cat([x, lab.unsqueeze(1)], dim=1)
        mu, sigma = autoencoder.encode(x)
        mus.append(mu.float().cpu())
        sigmas.append(sigma.float().cpu())
    return torch.cat(mus), torch.cat(sigmas)


# ============================================================================================ stage 2
PRIORS = ("isotropic", "channel_covariance")


@dataclass(frozen=True)
class ConditionalDiffusionConfig:
    """Sizes of :class:`ConditionalLatentDiffusion`.

    Attributes
    ----------
    base
        UNet sizes and noise schedule (:class:`~cmrkit.models.diffusion.LatentDiffusionConfig`);
        ``base.latent_shape`` is the sequence latent ``(T*c, X', Y')``.
    space
        The covariates and their training statistics (:meth:`ConditionSpace.to_dict`).
    cross_attention_dim
        Width ``D`` of the context tokens.
    n_tokens
        Context tokens per condition set.
    encoder_hidden
        Hidden width of the condition encoder's MLP.
    cond_dropout
        Probability of training a sample with the null context (classifier-free guidance).
    prior
        The noise of the diffusion process: ``"isotropic"`` (``N(0, I)`` on the scaled latents, Rombach et
        al. 2022, the thesis) or ``"channel_covariance"`` (``N(0, Sigma)`` with ``Sigma`` the covariance of
        the latent channels, i.e. of the frames: PriorGrad, Lee et al. 2022; see "Noise prior" above).
    """

    base: LatentDiffusionConfig
    space: Mapping[str, Any] = field(default_factory=dict)
    cross_attention_dim: int = 64
    n_tokens: int = 8
    encoder_hidden: int = 128
    cond_dropout: float = 0.1
    prior: str = "isotropic"

    def __post_init__(self) -> None:
        if not isinstance(self.base, LatentDiffusionConfig):
            raise ValueError("ConditionalDiffusionConfig.base must be a LatentDiffusionConfig")
        if self.base.prediction_type != "epsilon":  # guidance and DDIM inversion here combine noise estimates
            raise ValueError(
                "ConditionalDiffusionConfig: the conditional model predicts the noise; "
                f"base.prediction_type {self.base.prediction_type!r} is not supported"
            )
        ConditionSpace.from_dict(self.space)  # validates
        for name in ("cross_attention_dim", "n_tokens", "encoder_hidden"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ConditionalDiffusionConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= float(self.cond_dropout) < 1.0:
            raise ValueError(f"ConditionalDiffusionConfig.cond_dropout must be in [0, 1), got {self.cond_dropout}")
        if self.prior not in PRIORS:
            raise ValueError(f"ConditionalDiffusionConfig.prior must be one of {PRIORS}, got {self.prior!r}")
        if not any(self.base.attention_levels):
            raise ValueError("ConditionalDiffusionConfig: cross-attention needs at least one attention level in base")

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["base"] = self.base.to_dict()
        d["space"] = dict(ConditionSpace.from_dict(self.space).to_dict())
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConditionalDiffusionConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"ConditionalDiffusionConfig.from_dict: unknown keys {sorted(unknown)}")
        d = dict(d)
        d["base"] = LatentDiffusionConfig.from_dict(d["base"])
        return cls(**d)


class ConditionalLatentDiffusion(nn.Module):
    """Cross-attention UNet ``eps_theta``, condition encoder ``tau_theta``, the latent ``scale_factor`` and,
    with ``prior="channel_covariance"``, the channel whitening ``whiten`` and its inverse ``colour``.

    The diffusion runs on ``x = to_diffusion(z)``: ``scale_factor * z``, then ``whiten`` over the channels
    when the prior is the channel covariance; :meth:`from_diffusion` is its inverse.

    Parameters
    ----------
    config
        :class:`ConditionalDiffusionConfig`.
    seed
        Weight initialisation seed (the caller's RNG state is left untouched).
    """

    def __init__(self, config: ConditionalDiffusionConfig, *, seed: int | None = 0) -> None:
        super().__init__()
        self.config = config
        self.space = ConditionSpace.from_dict(config.space)
        b = config.base
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(int(seed))
            self.unet = b.build_unet(with_conditioning=True, cross_attention_dim=int(config.cross_attention_dim))
            self.encoder = ConditionEncoder(
                self.space.feature_dim,
                int(config.cross_attention_dim),
                int(config.n_tokens),
                int(config.encoder_hidden),
            )
        self.register_buffer("scale_factor", torch.tensor(1.0, dtype=torch.float64))
        if config.prior == "channel_covariance":  # only then, so isotropic checkpoints keep their state dict
            c = int(b.latent_shape[0])
            self.register_buffer("whiten", torch.eye(c, dtype=torch.float64))
            self.register_buffer("colour", torch.eye(c, dtype=torch.float64))

    @classmethod
    def from_config(cls, d: Mapping[str, Any]) -> ConditionalLatentDiffusion:
        """Build from :meth:`ConditionalDiffusionConfig.to_dict` (:func:`cmrkit.train.load_model`)."""
        return cls(ConditionalDiffusionConfig.from_dict(d), seed=None)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return tuple(self.config.base.latent_shape)  # type: ignore[return-value]

    def context(self, features: torch.Tensor) -> torch.Tensor:
        """Context tokens ``(B, n_tokens, D)`` of encoded conditions ``(B, F)`` (:meth:`ConditionSpace.encode`)."""
        return self.encoder(features.float())

    def null_context(self, n: int, *, device: Any = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The unconditional context: ``(n, n_tokens, D)`` filled with :data:`NULL_FILL`."""
        return torch.full(
            (int(n), self.config.n_tokens, self.config.cross_attention_dim), NULL_FILL, device=device, dtype=dtype
        )

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.unet(x, timesteps, context=context)

    def train_scheduler(self) -> Any:
        """DDPM scheduler of training (``T`` steps, ``clip_sample=False``)."""
        from monai.networks.schedulers import DDPMScheduler

        b = self.config.base
        return DDPMScheduler(
            num_train_timesteps=b.timesteps,
            schedule=b.schedule,
            beta_start=b.beta_start,
            beta_end=b.beta_end,
            clip_sample=False,
        )

    def ddim_scheduler(self, steps: int, device: Any = None) -> Any:
        """DDIM with self-consistent leading timestep spacing (:func:`cmrkit.models.diffusion.ddim_scheduler`)."""
        return ddim_scheduler(self.config.base, steps, device=device)

    def set_scale_factor(self, value: float) -> None:
        v = float(value)
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"scale_factor must be a positive finite number, got {value}")
        self.scale_factor.fill_(v)

    def set_whitening(self, whiten: torch.Tensor, colour: torch.Tensor) -> None:
        """Store the channel whitening of the *scaled* latents and its inverse
        (:func:`cmrkit.models.diffusion.channel_whitening`); only with ``prior="channel_covariance"``."""
        if self.config.prior != "channel_covariance":
            raise ValueError(f"set_whitening: the model's prior is {self.config.prior!r}, not 'channel_covariance'")
        c = int(self.latent_shape[0])
        w, k = torch.as_tensor(whiten, dtype=torch.float64), torch.as_tensor(colour, dtype=torch.float64)
        if w.shape != (c, c) or k.shape != (c, c):
            raise ValueError(f"set_whitening: expected two {c} x {c} matrices, got {tuple(w.shape)}, {tuple(k.shape)}")
        if not torch.allclose(w @ k, torch.eye(c, dtype=torch.float64), atol=1e-6):
            raise ValueError("set_whitening: colour is not the inverse of whiten")
        self.whiten.copy_(w)
        self.colour.copy_(k)

    def to_diffusion(self, z: torch.Tensor) -> torch.Tensor:
        """Autoencoder latents ``(B, C, X', Y')`` -> the space the diffusion runs in."""
        x = z * self.scale_factor.to(z.dtype)
        return mix_channels(self.whiten, x) if self.config.prior == "channel_covariance" else x

    def from_diffusion(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_diffusion`."""
        if self.config.prior == "channel_covariance":
            x = mix_channels(self.colour, x)
        return x / self.scale_factor.to(x.dtype)


class ConditionalLatentDataset(torch.utils.data.Dataset):
    """Cached sequence latents (mean, sd) with their encoded conditions, repeated to ``length`` items."""

    def __init__(self, mu: Any, sigma: Any, features: Any, length: int | None = None) -> None:
        self.mu = torch.as_tensor(mu, dtype=torch.float32)
        self.sigma = torch.as_tensor(sigma, dtype=torch.float32)
        self.features = torch.as_tensor(np.asarray(features), dtype=torch.float32)
        if self.mu.shape != self.sigma.shape or self.mu.ndim != 4 or len(self.mu) == 0:
            raise ValueError(
                f"mu and sigma must be equal (N>0, C, X, Y) arrays, got {tuple(self.mu.shape)}, "
                f"{tuple(self.sigma.shape)}"
            )
        if self.features.ndim != 2 or len(self.features) != len(self.mu):
            raise ValueError(f"features must be (N={len(self.mu)}, F), got {tuple(self.features.shape)}")
        self.length = len(self.mu) if length is None else int(length)
        if self.length < 1:
            raise ValueError(f"length must be >= 1, got {length}")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, j: int) -> dict[str, torch.Tensor]:
        i = int(j) % len(self.mu)
        return {"mu": self.mu[i], "sigma": self.sigma[i], "cond": self.features[i]}


class ConditionalDiffusionLoss:
    """``loss_fn(model, batch)`` for :func:`cmrkit.train.fit`: noise prediction with condition dropout.

    ``z_0 = to_diffusion(mu + sigma * eps')``; context ``tau_theta(y)``, replaced by the null context
    for each training sample with probability ``cond_dropout`` (never in eval mode); ``z_t`` and
    ``eps_theta(z_t, t, context)`` through :class:`monai.inferers.DiffusionInferer` (``mode="crossattn"``);
    loss ``mean |eps - eps_theta|`` (``base.loss == "l1"``, thesis) or its square (``"mse"``).
    """

    def __init__(self) -> None:
        self._scheduler: Any = None

    def __call__(
        self, model: ConditionalLatentDiffusion, batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict]:
        from monai.inferers import DiffusionInferer

        if self._scheduler is None:
            self._scheduler = model.train_scheduler()
        mu, sigma = batch["mu"], batch["sigma"]
        z0 = model.to_diffusion(mu + sigma * torch.randn_like(sigma))
        ctx = model.context(batch["cond"])
        p = float(model.config.cond_dropout)
        if model.training and p > 0:
            drop = torch.rand(ctx.shape[0], device=ctx.device) < p
            ctx = torch.where(drop[:, None, None], torch.full_like(ctx, NULL_FILL), ctx)
        noise = torch.randn_like(z0)
        t = torch.randint(0, model.config.base.timesteps, (z0.shape[0],), device=z0.device).long()
        pred = DiffusionInferer(self._scheduler)(
            inputs=z0, diffusion_model=model.unet, noise=noise, timesteps=t, condition=ctx, mode="crossattn"
        )
        err = pred.float() - noise.float()
        loss = err.abs().mean() if model.config.base.loss == "l1" else err.pow(2).mean()
        return loss, {"mse": err.detach().pow(2).mean()}


# ============================================================================================ sampling
def guided_noise(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance: ``eps_u + w (eps_c - eps_u)`` (the formula MONAI's inferer applies with ``cfg=w``)."""
    return eps_uncond + float(guidance) * (eps_cond - eps_uncond)


def _check_guidance(guidance: float) -> float:
    w = float(guidance)
    if not (math.isfinite(w) and w >= 0):
        raise ValueError(f"guidance weight must be a finite number >= 0, got {guidance!r}")
    return w


@torch.no_grad()
def sample_latents(
    diffusion: ConditionalLatentDiffusion,
    noise: torch.Tensor,
    features: torch.Tensor | np.ndarray,
    *,
    guidance: float = 1.0,
    ddim_steps: int = 50,
    amp: bool = False,
) -> torch.Tensor:
    """Run the DDIM chain (MONAI :meth:`~monai.inferers.DiffusionInferer.sample`) from ``noise`` under
    the encoded conditions ``features``; returns latents in the diffusion's space
    (:meth:`ConditionalLatentDiffusion.to_diffusion` of the autoencoder's).

    ``guidance == 1`` is the conditional model alone (``cfg=None``); any other ``w`` passes ``cfg=w``
    with the null context ``NULL_FILL`` (:func:`guided_noise`).
    """
    from monai.inferers import DiffusionInferer

    w = _check_guidance(guidance)
    dev = noise.device
    f = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features).to(dev)
    if f.shape[0] != noise.shape[0]:
        raise ValueError(f"sample_latents: {noise.shape[0]} noise tensors but {f.shape[0]} condition sets")
    scheduler = diffusion.ddim_scheduler(ddim_steps, device=dev)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if amp else nullcontext()
    with autocast:
        ctx = diffusion.context(f)
        z = DiffusionInferer(scheduler).sample(
            input_noise=noise,
            diffusion_model=diffusion.unet,
            scheduler=scheduler,
            conditioning=ctx,
            mode="crossattn",
            verbose=False,
            cfg=None if w == 1.0 else w,
            cfg_fill_value=NULL_FILL,
        )
    return z.float()


@torch.no_grad()
def decode_latents(
    autoencoder: SequenceAutoencoder, diffusion: ConditionalLatentDiffusion, z: torch.Tensor, *, amp: bool = False
) -> torch.Tensor:
    """Decode latents of the diffusion's space: ``autoencoder.decode(from_diffusion(z))``, (B, 1 + K, X, Y, Z, T)."""
    z = diffusion.from_diffusion(z.float())
    autocast = torch.autocast(z.device.type, dtype=torch.bfloat16) if amp else nullcontext()
    with autocast:
        out = autoencoder.decode_stage_2_outputs(z)
    return out.float()


@dataclass
class GeneratedSequences:
    """Output of :func:`generate_sequences`.

    Attributes
    ----------
    images : (N, X, Y, Z, F) float32 in [0, 1] -- the frames ``image_frames`` of each sequence
    labels : (N, X, Y, Z, T) uint8 -- every frame (0 background, 1 LV, 2 Myo, 3 RV)
    latents : (N, T*c, X', Y') float32 -- the unscaled sequence latents ``z_0`` that were decoded
    image_frames : list of the frame indices kept in ``images``
    """

    images: np.ndarray
    labels: np.ndarray
    latents: np.ndarray
    image_frames: list[int]


@torch.no_grad()
def generate_sequences(
    autoencoder: SequenceAutoencoder,
    diffusion: ConditionalLatentDiffusion,
    conditions: Any,
    seeds: Sequence[int] | None = None,
    *,
    noise: torch.Tensor | None = None,
    guidance: float = 1.0,
    ddim_steps: int = 50,
    batch_size: int = 32,
    image_frames: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    amp: bool | None = None,
    progress: bool = False,
) -> GeneratedSequences:
    """Generate one sequence per condition set: DDIM chain on the sequence latent, frame-wise decoding.

    Parameters
    ----------
    conditions
        Condition sets (mappings, a DataFrame, or an already encoded ``(N, F)`` float array), validated
        by the model's :class:`~cmrkit.models.conditioning.ConditionSpace` (out-of-range values raise
        :class:`~cmrkit.models.conditioning.ConditionError`).
    seeds
        One seed per condition set (:func:`cmrkit.models.diffusion.sample_seeds`); sample ``i`` starts
        from ``initial_noise([seeds[i]])`` and regenerates alone. Or pass ``noise`` ``(N, *latent_shape)``
        (e.g. from :func:`ddim_invert`).
    guidance
        Classifier-free guidance weight ``w`` (1 = conditional model alone).
    image_frames
        Frames whose images are returned (default all; labels are always returned for every frame).
    amp
        bf16 autocast; default on CUDA only.
    """
    from tqdm.auto import tqdm

    if isinstance(conditions, np.ndarray) and conditions.dtype.kind == "f" and conditions.ndim == 2:
        feats = conditions.astype(np.float32)
        if feats.shape[1] != diffusion.space.feature_dim:
            raise ValueError(f"encoded conditions must be (N, {diffusion.space.feature_dim}), got {feats.shape}")
    else:
        feats = diffusion.space.encode(conditions)
    n = len(feats)
    if (seeds is None) == (noise is None):
        raise ValueError("generate_sequences: pass exactly one of seeds and noise")
    if seeds is not None and len(seeds) != n:
        raise ValueError(f"generate_sequences: {len(seeds)} seeds for {n} condition sets")
    if noise is not None and (len(noise) != n or tuple(noise.shape[1:]) != diffusion.latent_shape):
        raise ValueError(f"generate_sequences: noise must be ({n}, {diffusion.latent_shape}), got {tuple(noise.shape)}")
    if int(batch_size) < 1:
        raise ValueError(f"generate_sequences: batch_size must be >= 1, got {batch_size}")
    _check_guidance(guidance)
    t_all = autoencoder.frames
    frames = list(range(t_all)) if image_frames is None else [int(f) for f in image_frames]
    if frames and (min(frames) < 0 or max(frames) >= t_all):
        raise ValueError(f"image_frames {frames} outside 0..{t_all - 1}")
    dev = resolve_device(device)
    use_amp = (dev.type == "cuda") if amp is None else bool(amp)
    autoencoder.to(dev).eval()
    diffusion.to(dev).eval()
    images, labels, latents = [], [], []
    for s in tqdm(range(0, n, int(batch_size)), desc="sampling", disable=not progress, leave=False):
        e = min(n, s + int(batch_size))
        x = initial_noise(seeds[s:e], diffusion.latent_shape) if seeds is not None else noise[s:e].float().cpu()
        z = sample_latents(
            diffusion, x.to(dev), torch.from_numpy(feats[s:e]), guidance=guidance, ddim_steps=ddim_steps, amp=use_amp
        )
        img, lab = split_output(decode_latents(autoencoder, diffusion, z, amp=use_amp))
        images.append(img[..., frames].cpu().numpy())
        labels.append(lab.cpu().numpy())
        latents.append(diffusion.from_diffusion(z).cpu().numpy())
    return GeneratedSequences(
        images=np.concatenate(images).astype(np.float32),
        labels=np.concatenate(labels).astype(np.uint8),
        latents=np.concatenate(latents).astype(np.float32),
        image_frames=frames,
    )


@torch.no_grad()
def ddim_invert(
    diffusion: ConditionalLatentDiffusion,
    latents: torch.Tensor,
    features: torch.Tensor | np.ndarray,
    *,
    ddim_steps: int = 50,
) -> torch.Tensor:
    """DDIM inversion: the initial noise from which the conditional model regenerates ``latents``.

    ``latents`` are *unscaled* sequence latents ``z_0`` (e.g. the autoencoder's means of real
    sequences); they are mapped by ``to_diffusion`` and pushed up the chain ``0 -> k -> ... -> (N-1) k``
    (``k = T // N``, the leading spacing of :func:`cmrkit.models.diffusion.ddim_scheduler`) with
    :meth:`monai.networks.schedulers.DDIMScheduler.reversed_step` and the conditional noise prediction
    (no guidance). Sampling from the result under the same conditions approximately returns ``z_0``
    (the approximation: ``z_0`` is treated as the chain's state at timestep 0).
    """
    dev = latents.device
    f = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features).to(dev)
    scheduler = diffusion.ddim_scheduler(ddim_steps, device=dev)
    ctx = diffusion.context(f)
    x = diffusion.to_diffusion(latents.float())
    for t in scheduler.timesteps.flip(0)[:-1]:
        eps = diffusion.unet(x, timesteps=torch.full((x.shape[0],), int(t), device=dev), context=ctx)
        x, _ = scheduler.reversed_step(eps, int(t), x)
    return x
