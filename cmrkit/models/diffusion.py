"""Latent diffusion on the autoencoder's latents: MONAI's UNet, DDPM/DDIM schedulers and inferers.

Second stage of the LDM of thesis ch. 5 (Rombach et al. 2022; Pinaya et al. 2022): a noise-prediction
network ``eps_theta(z_t, t)`` trained on latents ``z_0`` of the first-stage autoencoder
(:mod:`cmrkit.models.autoencoder`) and sampled with DDIM (Song et al. 2021, thesis eq. 5.3). Every
piece is MONAI's; this module fixes their known pitfalls and adds what a reproducible sample set needs.

Pieces
------
* Network: :class:`monai.networks.nets.DiffusionModelUNet` with ``spatial_dims=2`` on the
  ``(C, X', Y')`` latent. The autoencoder's latent has depth 1 (thesis 16 x 16 x 1 x 4); a 3D UNet
  on a depth-1 tensor computes the same as a 2D UNet (a zero-padded 3 x 3 x 3 kernel only uses its
  middle slice) and MONAI's 3D UNet fails when it upsamples depth 1 -> 2, so the 2D network is the
  3D one without its dead weights.
* Training scheduler: :class:`monai.networks.schedulers.DDPMScheduler` (``T`` steps, default
  ``scaled_linear_beta`` 0.0015 -> 0.0195 as MONAI's 3D LDM tutorial and Pinaya et al.) with
  ``clip_sample=False``: the default clamps predicted ``x_0`` to [-1, 1], which damages latents.
* Loss (thesis eq. 5.4): ``E ||eps - eps_theta(z_t, t)||_1`` (``loss="l1"``); ``"mse"`` is the
  usual alternative. ``z_t`` comes from :class:`monai.inferers.DiffusionInferer` (``add_noise``)
  applied to cached latents: the autoencoder's ``mu`` and ``sigma`` of every training volume are
  computed once and each step draws ``z_0 = (mu + sigma * eps') * scale_factor``, which is what
  :class:`~monai.inferers.LatentDiffusionInferer` does at every step (stochastic encoding) without
  running the encoder again.
* ``scale_factor = 1 / std(z_0)`` over the latents of the **whole** training set (Rombach et al.
  2022, §4.3.2 and app. D.1; one draw per volume), so that the diffusion sees unit-variance
  latents. It is a buffer of :class:`LatentDiffusion`, so it is saved with every checkpoint and
  restored with the weights (MONAI's tutorial recomputes it from one batch and its inference
  script forgets it).
* Sampling: :func:`ddim_scheduler` (DDIM with ``eta = 0``, ``clip_sample=False``) and
  :class:`monai.inferers.LatentDiffusionInferer`, which runs the chain and decodes
  ``z / scale_factor``. MONAI 1.6 spaces the inference timesteps with
  ``linspace(T-1, 0, N).round()`` while ``DDIMScheduler.step`` steps back by ``T // N``, so the
  chain evaluates alpha-bar at timesteps that are not the next ones in its own list (MONAI issue
  #8600, PR #8623; the same in diffusers #12633). :func:`ddim_scheduler` uses the
  "leading" spacing ``t_i = i * (T // N)`` (MONAI <= 1.5, DDIM paper), for which the step and the list
  agree.
* Reproducible sample sets: every sample ``i`` has its own seed ``s_i`` (:func:`sample_seeds`), its
  initial latent is ``randn(latent_shape, generator=torch.Generator().manual_seed(s_i))`` drawn on
  the CPU, and DDIM with ``eta = 0`` is deterministic, so a sample set is reproduced by its seeds and
  sample ``i`` regenerates alone (:func:`generate`; equal to its batched twin up to float
  round-off of batched kernels). On CUDA the chain and the decoder run under bf16 autocast in
  batches of ``batch_size``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..utils import resolve_device

__all__ = [
    "fit_latent_diffusion",
    "LatentDiffusionConfig",
    "LatentDiffusion",
    "ddim_scheduler",
    "DiffusionLoss",
    "LatentDataset",
    "encode_latents",
    "compute_scale_factor",
    "latent_draw",
    "channel_covariance",
    "channel_whitening",
    "mix_channels",
    "SCALE_FACTOR_RTOL",
    "sample_seeds",
    "initial_noise",
    "generate",
]

LOSSES = ("l1", "mse")
PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass(frozen=True)
class LatentDiffusionConfig:
    """Sizes and schedule of :class:`LatentDiffusion`.

    Attributes
    ----------
    latent_shape
        ``(C, X', Y')`` of one latent (the autoencoder's ``latent_shape``).
    channels
        UNet level widths; every spatial latent size must be divisible by ``2 ** (len(channels) - 1)``,
        and the first width must be at least the latent's channel count ``latent_shape[0]``: the noise to
        predict has that many independent channels at full resolution, and a narrower first level cannot
        carry them. Necessary, not sufficient: at chapter 6's former ``cpu`` sizes (80 latent channels = 20
        frames x 4) a 64-wide first level left the noise-prediction MSE at 0.30 even at t = 900, where the
        target is nearly the input itself, and DDIM chains diverged to latents of standard deviation 37
        instead of 1; a 96-wide one lowered the MSE to 0.14 after 1,300 steps but predicted noise of sd 0.89
        instead of 1, and the chains still diverged (sd 24). Keep the first width a few times the latent
        channels (thesis chapter 6: one latent channel per frame).
    attention_levels
        Self-attention per level (``None``: all levels but the first).
    num_res_blocks
        Residual blocks per level.
    num_head_channels
        Channels per attention head (capped by the level width).
    timesteps
        ``T`` of the forward process (thesis 1000).
    schedule, beta_start, beta_end
        MONAI noise schedule and its end points.
    loss
        ``"l1"`` (thesis eq. 5.4) or ``"mse"`` on the network's target.
    prediction_type
        What the network predicts (MONAI's names): ``"epsilon"``, the noise (thesis eq. 5.4), or
        ``"v_prediction"``, ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) z_0`` (Salimans & Ho, ICLR 2022,
        "Progressive distillation for fast sampling of diffusion models"). At high noise a noise-predicting
        network's error reaches its estimate of ``z_0`` multiplied by ``1 / sqrt(abar_t)`` (15 at
        ``t = 800`` of the default schedule), so the coarse layout of a sample rests on very precise noise
        estimates; ``v`` tends to ``-z_0`` there and to ``eps`` at low noise, so neither end is amplified.
    use_flash_attention
        MONAI's fused attention (same weights, faster on GPU).
    """

    latent_shape: tuple[int, int, int] = (4, 16, 16)
    channels: tuple[int, ...] = (64, 128, 256)
    attention_levels: tuple[bool, ...] | None = None
    num_res_blocks: int = 2
    num_head_channels: int = 32
    timesteps: int = 1000
    schedule: str = "scaled_linear_beta"
    beta_start: float = 0.0015
    beta_end: float = 0.0195
    loss: str = "l1"
    prediction_type: str = "epsilon"
    use_flash_attention: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "latent_shape", tuple(int(v) for v in self.latent_shape))
        object.__setattr__(self, "channels", tuple(int(v) for v in self.channels))
        if self.attention_levels is None:
            object.__setattr__(self, "attention_levels", tuple(i > 0 for i in range(len(self.channels))))
        object.__setattr__(self, "attention_levels", tuple(bool(v) for v in self.attention_levels))
        if len(self.latent_shape) != 3 or min(self.latent_shape) < 1:
            raise ValueError(f"LatentDiffusionConfig.latent_shape must be (C, X, Y), got {self.latent_shape}")
        if len(self.attention_levels) != len(self.channels):
            raise ValueError(
                f"LatentDiffusionConfig.attention_levels {self.attention_levels} needs one entry per level "
                f"{self.channels}"
            )
        f = 2 ** (len(self.channels) - 1)
        if any(s % f for s in self.latent_shape[1:]):
            raise ValueError(
                f"LatentDiffusionConfig: latent size {self.latent_shape[1:]} must be divisible by "
                f"2**(len(channels)-1) = {f}"
            )
        if self.loss not in LOSSES:
            raise ValueError(f"LatentDiffusionConfig.loss must be one of {LOSSES}, got {self.loss!r}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"LatentDiffusionConfig.prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}"
            )
        if int(self.timesteps) < 2:
            raise ValueError(f"LatentDiffusionConfig.timesteps must be >= 2, got {self.timesteps}")
        g = self.groups
        if any(c % g for c in self.channels):
            raise ValueError(f"LatentDiffusionConfig.channels {self.channels} must be multiples of {g}")
        if self.channels[0] < self.latent_shape[0]:
            raise ValueError(
                f"LatentDiffusionConfig.channels: the first width {self.channels[0]} is narrower than the "
                f"{self.latent_shape[0]} latent channels it must denoise; use a first width >= {self.latent_shape[0]}"
            )

    @property
    def groups(self) -> int:
        return next(g for g in (32, 16, 8, 4, 2, 1) if all(c % g == 0 for c in self.channels))

    @property
    def heads(self) -> tuple[int, ...]:
        """``num_head_channels`` per level (0 without attention; at most the level width). The deepest
        entry is always set: MONAI's middle block has self-attention whatever ``attention_levels`` says."""
        last = len(self.channels) - 1
        return tuple(
            min(int(self.num_head_channels), c) if (a or i == last) else 0
            for i, (c, a) in enumerate(zip(self.channels, self.attention_levels))
        )

    def build_unet(self, **conditioning: Any) -> torch.nn.Module:
        """MONAI's 2D :class:`~monai.networks.nets.DiffusionModelUNet` of these sizes over the latent
        (initialised from the current RNG state); ``conditioning``: ``with_conditioning`` /
        ``cross_attention_dim`` for a cross-attention UNet."""
        from monai.networks.nets import DiffusionModelUNet

        return DiffusionModelUNet(
            spatial_dims=2,
            in_channels=self.latent_shape[0],
            out_channels=self.latent_shape[0],
            num_res_blocks=self.num_res_blocks,
            channels=self.channels,
            attention_levels=self.attention_levels,
            norm_num_groups=self.groups,
            num_head_channels=self.heads,
            use_flash_attention=bool(self.use_flash_attention),
            **conditioning,
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("latent_shape", "channels", "attention_levels"):
            d[k] = list(d[k])
        if d["prediction_type"] == "epsilon":  # the default, so runs trained before the option keep their keys
            d.pop("prediction_type")
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LatentDiffusionConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"LatentDiffusionConfig.from_dict: unknown keys {sorted(unknown)}")
        return cls(**dict(d))


def ddim_scheduler(
    config: LatentDiffusionConfig, num_inference_steps: int, device: str | torch.device | None = None
) -> Any:
    """A MONAI :class:`~monai.networks.schedulers.DDIMScheduler` with self-consistent timesteps.

    Same schedule as training, ``clip_sample=False``, and ``timesteps = [(N-1) k, ..., k, 0] +
    steps_offset`` with ``k = T // N`` ("leading" spacing), so that ``step`` (which goes back by
    ``k``) lands on the next timestep of the list (see the module docstring).
    """
    from monai.networks.schedulers import DDIMScheduler

    c = config
    n = int(num_inference_steps)
    if not 1 <= n <= c.timesteps:
        raise ValueError(f"ddim steps must be in 1..{c.timesteps}, got {num_inference_steps}")
    sch = DDIMScheduler(
        num_train_timesteps=c.timesteps,
        schedule=c.schedule,
        beta_start=c.beta_start,
        beta_end=c.beta_end,
        clip_sample=False,
        prediction_type=c.prediction_type,
    )
    sch.set_timesteps(n, device=device)
    k = c.timesteps // n
    sch.timesteps = (torch.arange(n, device=device, dtype=torch.int64) * k).flip(0) + sch.steps_offset
    return sch


class LatentDiffusion(nn.Module):
    """The noise-prediction UNet with its schedule and the latent ``scale_factor`` (a saved buffer).

    Parameters
    ----------
    config
        :class:`LatentDiffusionConfig`.
    seed
        Seed of the weight initialisation (the caller's RNG state is left untouched).
    """

    def __init__(self, config: LatentDiffusionConfig | None = None, *, seed: int | None = 0) -> None:
        super().__init__()
        self.config = config if config is not None else LatentDiffusionConfig()
        c = self.config
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(int(seed))
            self.unet = c.build_unet()
        self.register_buffer("scale_factor", torch.tensor(1.0, dtype=torch.float64))

    @classmethod
    def from_config(cls, d: Mapping[str, Any]) -> LatentDiffusion:
        """Build from :meth:`LatentDiffusionConfig.to_dict` (used by :func:`cmrkit.train.load_model`)."""
        return cls(LatentDiffusionConfig.from_dict(d), seed=None)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return self.unet(x, timesteps)

    def train_scheduler(self) -> Any:
        """The DDPM scheduler of training (``T`` steps, ``clip_sample=False``)."""
        from monai.networks.schedulers import DDPMScheduler

        c = self.config
        return DDPMScheduler(
            num_train_timesteps=c.timesteps,
            schedule=c.schedule,
            beta_start=c.beta_start,
            beta_end=c.beta_end,
            clip_sample=False,
            prediction_type=c.prediction_type,
        )

    def ddim_scheduler(self, steps: int, device: str | torch.device | None = None) -> Any:
        """A DDIM scheduler with ``steps`` self-consistent inference timesteps."""
        return ddim_scheduler(self.config, steps, device=device)

    def set_scale_factor(self, value: float) -> None:
        v = float(value)
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"scale_factor must be a positive finite number, got {value}")
        self.scale_factor.fill_(v)


class LatentDataset(torch.utils.data.Dataset):
    """Cached latent means and standard deviations ``(N, *latent_shape)``, repeated to ``length`` items.

    Item ``j`` is latent ``j % N``: a long virtual epoch lets :func:`cmrkit.train.fit` checkpoint every
    few hundred steps of a step-budgeted training on a small data set.
    """

    def __init__(self, mu: torch.Tensor | np.ndarray, sigma: torch.Tensor | np.ndarray, length: int | None = None):
        self.mu = torch.as_tensor(mu, dtype=torch.float32)
        self.sigma = torch.as_tensor(sigma, dtype=torch.float32)
        if self.mu.shape != self.sigma.shape or self.mu.ndim != 4 or len(self.mu) == 0:
            raise ValueError(
                f"mu and sigma must be equal (N>0, C, X, Y) arrays, got {self.mu.shape}, {self.sigma.shape}"
            )
        self.length = len(self.mu) if length is None else int(length)
        if self.length < 1:
            raise ValueError(f"length must be >= 1, got {length}")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, j: int) -> dict[str, torch.Tensor]:
        i = j % len(self.mu)
        return {"mu": self.mu[i], "sigma": self.sigma[i]}


class DiffusionLoss:
    """``loss_fn(model, batch)`` for :func:`cmrkit.train.fit`: noise-prediction loss on cached latents.

    ``z_0 = (mu + sigma * eps') * scale_factor``, ``t ~ U{0, T-1}``, ``eps ~ N(0, I)``,
    ``z_t`` and the network's output through :class:`monai.inferers.DiffusionInferer`, loss
    ``|target - output|`` averaged (``"l1"``) or its square (``"mse"``), the target being ``eps`` or, with
    ``prediction_type="v_prediction"``, ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) z_0``
    (:meth:`monai.networks.schedulers.DDPMScheduler.get_velocity`). Random numbers come from the torch RNG
    that :func:`cmrkit.train.fit` re-seeds every epoch.
    """

    def __init__(self) -> None:
        self._scheduler: Any = None

    def __call__(self, model: LatentDiffusion, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        from monai.inferers import DiffusionInferer

        if self._scheduler is None:
            self._scheduler = model.train_scheduler()
        mu, sigma = batch["mu"], batch["sigma"]
        z0 = (mu + sigma * torch.randn_like(sigma)) * model.scale_factor.to(mu.dtype)
        noise = torch.randn_like(z0)
        t = torch.randint(0, model.config.timesteps, (z0.shape[0],), device=z0.device).long()
        pred = DiffusionInferer(self._scheduler)(inputs=z0, diffusion_model=model.unet, noise=noise, timesteps=t)
        target = noise if model.config.prediction_type == "epsilon" else self._scheduler.get_velocity(z0, noise, t)
        err = pred.float() - target.float()
        loss = err.abs().mean() if model.config.loss == "l1" else err.pow(2).mean()
        return loss, {"mse": err.detach().pow(2).mean()}


# --------------------------------------------------------------------------------------------- latents
@torch.no_grad()
def encode_latents(
    autoencoder: nn.Module,
    images: np.ndarray,
    labels: np.ndarray | None,
    *,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent ``mu`` and ``sigma`` ``(N, *latent_shape)`` (float32, CPU) of ``(N, X, Y, Z)`` volumes."""
    from .autoencoder import to_input

    dev = resolve_device(device)
    autoencoder.to(dev).eval()
    n_classes = int(getattr(autoencoder.config, "n_classes", 0))
    mus, sigmas = [], []
    for s in range(0, len(images), batch_size):
        img = torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size], dtype=np.float32)).to(dev)
        lab = None if labels is None else torch.from_numpy(np.asarray(labels[s : s + batch_size], np.int64)).to(dev)
        mu, sigma = autoencoder.encode(to_input(img, lab, n_classes))
        mus.append(mu.float().cpu())
        sigmas.append(sigma.float().cpu())
    return torch.cat(mus), torch.cat(sigmas)


#: Relative tolerance when a stored ``scale_factor`` is checked against the one of the current autoencoder's
#: latents: the same latents summed with another thread count (or BLAS) give a factor that differs in the
#: last digits (float32 sums, ~1e-7 relative); another autoencoder changes it by percents.
SCALE_FACTOR_RTOL = 1e-5


def latent_draw(mu: torch.Tensor, sigma: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
    """One float64 draw ``z = mu + sigma * eps`` per item, ``eps`` from ``torch.Generator().manual_seed(seed)``:
    the latents :func:`compute_scale_factor` and :func:`channel_covariance` are estimated on."""
    g = torch.Generator().manual_seed(int(seed))
    return mu.double() + sigma.double() * torch.randn(mu.shape, generator=g, dtype=torch.float64)


def compute_scale_factor(mu: torch.Tensor, sigma: torch.Tensor, *, seed: int = 0) -> float:
    """``1 / std(z)`` over one latent draw ``z = mu + sigma * eps`` per volume of the whole set.

    Rombach et al. 2022 (§4.3.2, app. D.1) rescale the latents to unit standard deviation with a
    factor estimated on the first batch; here every volume contributes (the estimate over many
    batches), with ``eps`` from ``torch.Generator().manual_seed(seed)``.
    """
    if mu.numel() < 2:
        raise ValueError("compute_scale_factor needs at least two latent values")
    sd = float(latent_draw(mu, sigma, seed=seed).std())
    if not (math.isfinite(sd) and sd > 0):
        raise ValueError(f"latents have standard deviation {sd}; cannot scale them")
    return 1.0 / sd


def channel_covariance(mu: torch.Tensor, sigma: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
    """The ``C x C`` covariance of the channels of :func:`latent_draw` ``(N, C, ...)``, pooled over the items
    and every spatial position (float64); ``sigma = 0`` gives the covariance of the means."""
    z = latent_draw(mu, sigma, seed=seed)
    return torch.cov(z.movedim(1, 0).reshape(int(mu.shape[1]), -1))


def channel_whitening(
    mu: torch.Tensor, sigma: torch.Tensor, *, seed: int = 0, floor: float = 1e-3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whitening ``W`` and colouring ``W^-1`` of the latent channels: the data-dependent prior of PriorGrad.

    Lee et al. 2022 (ICLR, "PriorGrad: improving conditional denoising diffusion models with data-dependent
    adaptive prior") train a diffusion model whose noise is ``N(0, Sigma)`` with ``Sigma`` the data's
    covariance; that is the standard ``N(0, I)`` process on ``x = W z`` with ``W = Lambda^-1/2 U^T`` from the
    eigendecomposition ``Sigma = U Lambda U^T``, and a sample is ``z = W^-1 x = U Lambda^1/2 x``. Then the
    denoiser's error reaches ``z`` in proportion to how much each channel combination varies in the data,
    instead of equally in every combination. ``Sigma`` is the ``C x C`` covariance of the channels of one
    draw ``z = mu + sigma * eps`` per item (:func:`channel_covariance`, the draw of
    :func:`compute_scale_factor`), pooled over the item and every spatial position. Eigenvalues below
    ``floor`` times their mean are raised to it, so a combination that never varies (two identical frames)
    is not amplified without bound. Returns float64 ``(W, W^-1)``.
    """
    if mu.ndim < 2 or mu.shape != sigma.shape:
        raise ValueError(
            f"channel_whitening: mu and sigma must be equal (N, C, ...) tensors, got {tuple(mu.shape)}, "
            f"{tuple(sigma.shape)}"
        )
    c = int(mu.shape[1])
    n = mu.numel() // c
    if n < c + 1:
        raise ValueError(f"channel_whitening: {n} latent positions cannot estimate a {c} x {c} covariance")
    if not (math.isfinite(float(floor)) and 0.0 < float(floor) <= 1.0):
        raise ValueError(f"channel_whitening: floor must be in (0, 1], got {floor}")
    cov = channel_covariance(mu, sigma, seed=seed)
    if not bool(torch.isfinite(cov).all()):
        raise ValueError("channel_whitening: the latents are not finite")
    lam, u = torch.linalg.eigh(cov)
    if float(lam.max()) <= 0:
        raise ValueError("channel_whitening: the latents do not vary; cannot whiten them")
    lam = lam.clamp(min=float(floor) * float(lam.clamp(min=0).mean()))
    return (u * lam.rsqrt()).T.contiguous(), (u * lam.sqrt()).contiguous()


def mix_channels(matrix: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``matrix @ z`` over the channel axis of ``z`` ``(B, C, ...)``: a ``C x C`` linear map of the channels."""
    m = matrix.to(device=z.device, dtype=z.dtype)
    return (m @ z.flatten(2)).view_as(z)


# --------------------------------------------------------------------------------------------- sampling
def fit_latent_diffusion(
    model: nn.Module,
    make_train: Any,
    val: Any,
    loss_fn: Any,
    *,
    iterations: int,
    batch_size: int,
    lr: float,
    folder: Path,
    scale: float,
    model_config: Mapping[str, Any],
    autoencoder: str,
    device: str = "cpu",
    seed: int = 0,
    ema_decay: float | None = None,
    progress: bool = False,
) -> Any:
    """Train a latent diffusion model whose ``scale_factor`` is already set, in a run folder.

    ``iterations`` optimiser steps at ``batch_size`` (Adam, betas (0.9, 0.99), no weight decay; the final
    weights kept, or their moving average with ``ema_decay``, see :func:`cmrkit.train.fit`), checkpointed
    in ``folder`` over at most 20 virtual epochs of the repeated training latents; ``make_train(length)``
    builds the training dataset of that many items, ``val`` is the validation dataset or ``None``. A
    resumed checkpoint must carry the ``scale`` of the current autoencoder's latents
    (:data:`SCALE_FACTOR_RTOL`), else :class:`cmrkit.runs.RunMismatchError`. A finished run is saved as
    ``model.pt`` (with ``model_config``, the scale factor and the ``autoencoder`` run name) and marked
    complete. Returns the fit result.
    """
    from ..runs import RunMismatchError, is_complete, mark_complete
    from ..train import fit, save_model

    epochs = min(iterations, 20)  # checkpoints (virtual epochs over the repeated training latents)
    res = fit(
        model,
        make_train(math.ceil(iterations / epochs) * batch_size),
        val,
        loss_fn=loss_fn,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=0.0,
        betas=(0.9, 0.99),
        keep="last",
        ema_decay=ema_decay,
        max_steps=iterations,
        device=device,
        seed=int(seed),
        checkpoint_dir=folder,
        resume=True,
        progress=progress,
    )
    res.model.to("cpu").eval()
    stored = float(res.model.scale_factor)
    if not math.isclose(stored, scale, rel_tol=SCALE_FACTOR_RTOL):
        raise RunMismatchError(
            f"{folder}: checkpoint scale_factor {stored:.6g} differs from the one of the current autoencoder's "
            f"latents {scale:.6g}; the diffusion model was trained on another autoencoder"
        )
    if not is_complete(folder):
        save_model(
            folder / "model.pt",
            res.model,
            dict(model_config),
            extra={"scale_factor": stored, "autoencoder": autoencoder},
        )
        mark_complete(folder, scale_factor=stored, steps=int(res.history[-1]["step"]) if res.history else 0)
    return res


def sample_seeds(seed: int, n: int, *, stream: int = 5) -> np.ndarray:
    """Seeds ``s_0..s_{n-1}`` (int64 < 2**63) of a sample set: ``s_i`` derives from ``(seed, stream, i)``
    through NumPy's ``SeedSequence``, so the first ``m`` seeds of a set of ``n > m`` are the set of ``m``."""
    if int(n) < 1:
        raise ValueError(f"the number of samples must be >= 1, got {n}")
    out = np.empty(int(n), dtype=np.int64)
    for i in range(int(n)):
        st = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(stream), i]).generate_state(2, dtype=np.uint32)
        out[i] = ((int(st[0]) << 31) ^ int(st[1])) & 0x7FFFFFFFFFFFFFFF
    return out


def initial_noise(seeds: Sequence[int], latent_shape: Sequence[int]) -> torch.Tensor:
    """``(len(seeds), *latent_shape)`` standard normal latents; row ``i`` is drawn on the CPU from
    ``torch.Generator().manual_seed(seeds[i])``, so it does not depend on the batch or the device."""
    rows = [torch.randn(tuple(latent_shape), generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(rows)


@torch.no_grad()
def generate(
    autoencoder: nn.Module,
    diffusion: LatentDiffusion,
    seeds: Sequence[int],
    *,
    ddim_steps: int = 50,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    amp: bool | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Sample one volume per seed: DDIM chain on the latent, then the autoencoder's decoder.

    Parameters
    ----------
    autoencoder
        First stage with ``decode_stage_2_outputs`` (:class:`~cmrkit.models.autoencoder.VolumeAutoencoder`).
    diffusion
        Trained :class:`LatentDiffusion` (its ``scale_factor`` is used to decode).
    seeds
        One seed per sample (:func:`sample_seeds`).
    ddim_steps
        Inference steps of :func:`ddim_scheduler` (``eta = 0``).
    batch_size
        Samples per chain.
    amp
        bf16 autocast; default on CUDA only.

    Returns
    -------
    images, labels
        ``(N, X, Y, Z)`` float32 in [0, 1] and ``(N, X, Y, Z)`` uint8 labels (None for an image-only
        autoencoder).
    """
    from monai.inferers import LatentDiffusionInferer
    from tqdm.auto import tqdm

    from .autoencoder import split_output

    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("generate: no seeds (the number of samples must be >= 1)")
    if int(batch_size) < 1:
        raise ValueError(f"generate: batch_size must be >= 1, got {batch_size}")
    dev = resolve_device(device)
    use_amp = (dev.type == "cuda") if amp is None else bool(amp)
    autocast = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if use_amp else nullcontext
    autoencoder.to(dev).eval()
    diffusion.to(dev).eval()
    scheduler = diffusion.ddim_scheduler(ddim_steps)
    inferer = LatentDiffusionInferer(scheduler, scale_factor=float(diffusion.scale_factor))
    images, labels = [], []
    latent_shape = diffusion.config.latent_shape
    chunks = range(0, len(seeds), int(batch_size))
    for s in tqdm(chunks, desc="sampling", disable=not progress, leave=False):
        noise = initial_noise(seeds[s : s + int(batch_size)], latent_shape).to(dev)
        with autocast():
            out = inferer.sample(
                input_noise=noise,
                autoencoder_model=autoencoder,
                diffusion_model=diffusion.unet,
                scheduler=scheduler,
                verbose=False,
            )
        img, lab = split_output(out.float())
        images.append(img.cpu().numpy())
        if lab is not None:
            labels.append(lab.cpu().numpy())
    return np.concatenate(images).astype(np.float32), (np.concatenate(labels) if labels else None)
