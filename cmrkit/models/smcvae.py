"""Sparse multi-channel VAE (smcVAE) over paired cine and tagging short-axis slices.

Re-implemented from the published mathematics (Antelmi et al., "Sparse multi-channel variational
autoencoder for the joint analysis of heterogeneous data", ICML 2019; Molchanov et al.,
"Variational dropout sparsifies deep neural networks", ICML 2017) and the network description of
Cheng 2025, thesis §4.2.1 / Fig. 4.2. No code of the research-only ``mcvae`` package is used.

Data and intensity convention
-----------------------------
Each channel (``"cine"``, ``"tagging"``) of one slice is a tensor ``(B, F, H, W)``: the ``F = 20``
time frames are image channels (thesis §4.3.3), ``H = W = image_size`` (thesis 128). Intensities
are in **[-1, 1]**: the thesis normalises to [0, 1] (§4.3.2) and the decoders end with Tanh, so
inputs are mapped with :func:`to_model_range` (``2x - 1``) and outputs back with
:func:`from_model_range`.

Model (one class, three variants; ``SMCVAEConfig.variant``)
-----------------------------------------------------------
For every channel ``c`` an encoder ``E_c`` (``L`` depthwise-separable conv layers + a fully connected
layer; thesis L = 7) gives ``mu_c`` in R^D (thesis D = 1024), and a decoder ``G_c`` (a fully
connected layer + ``L`` transposed conv layers + Tanh) maps a latent to the mean image of channel
``c``.

``"sparse"`` (smcVAE, Antelmi et al. 2019 §3)
    One learned ``log_alpha`` of shape (1, D), shared by all channels and not data dependent.
    Posterior ``q(z | x_c) = N(mu_c, diag(alpha * mu_c^2))``; prior: log-uniform (improper), with
    the KL of Molchanov et al. 2017 (eq. 14), see :func:`kl_log_uniform`. Every channel's latent is
    decoded by every decoder during training. Dropout rate per dimension ``p = alpha / (1 + alpha)``;
    active dimensions are those with ``p < threshold`` (0.2 in the reference examples).
``"mcvae"`` (Antelmi et al. 2019 §2)
    Gaussian posterior ``N(mu_c, diag(sigma_c^2))`` with an encoder head for ``log sigma_c^2``,
    standard normal prior (analytic KL); every latent decoded by every decoder.
``"vae"``
    The same networks trained as independent single-channel VAEs (Gaussian posterior, N(0, I)
    prior, each latent decoded only by its own decoder). Cross-channel synthesis is still callable
    and shows what a model without a shared latent space gives.

Geometry-aware decoder (beyond the thesis; ``SMCVAEConfig.phase_channel``)
--------------------------------------------------------------------------
SPAMM tags are written by gradients, so their phase at every pixel follows from the image header
(:mod:`cmrkit.tagging.scanner`), not from the anatomy: a cine shows where the heart is and how it moves,
but not where the scanner put the tag lines. With ``phase_channel="tagging"`` that channel's decoder is
also given the tag phase maps of the acquisition (batch key :data:`PHASE_KEY`). ``phase_decoder="warp"``
(:class:`PhaseWarpDecoder`) renders the grid at the material position given by a decoded displacement
field, as a SPAMM acquisition forms the image; ``"channels"`` (:class:`PhaseChannelsDecoder`) only adds
the phase as input channels. Encoders, latent space and prior are unchanged, and the synthesis is
still from the cine alone (the phase maps are acquisition geometry, not image content). With
``motion_channel="cine"`` the decoded displacement must also carry the cine's first frame onto its later
frames (a registration likelihood added to the loss, :meth:`SMCVAE.loss`): the motion of the synthesised
tags is then tied to the motion visible in the cine, and the tags refine it inside the myocardium, where
the cine is featureless. With ``anatomy_channel="cine"`` the decoder also reads the cine frames themselves
(:class:`FrameHead`): the anatomy's edges and where the blood is (which loses its tags) come from the
image of the same plane and time, and the latent carries what the cine cannot show pixel by pixel (the
motion of the tag lines, their fading). The phase-aware decoder's output is ``2 y - 1`` without Tanh, so it
may leave [-1, 1] slightly; the kit clips to [0, 1] after :func:`from_model_range`.

Loss (thesis Eq. 4.1, negated; averaged over the batch)::

    loss = (1/C) * sum_{s in channels} [ beta * KL(q(z | x_s) || p(z))
                                         - sum_{t in T(s)} E_{q(z | x_s)} log p(x_t | z) ]

with ``T(s)`` = all channels (sparse, mcvae) or ``{s}`` (vae): every encoder->decoder pair has
weight 1, averaged over the encoding channels ``s`` as the thesis' ``E_c``. The expectation is one
reparameterised sample in train mode and the posterior mean in eval mode (as the reference code's
``VAE.forward``). Likelihood: Gaussian, ``p(x_t | z) = N(G_t(z), sigma_t^2 I)`` summed over all
``F*H*W`` pixels, with one scalar log-variance per channel, learned (default; initialised at
``init_logvar = -3`` as the reference code) or fixed (``likelihood="fixed"``).

Encoder geometry
----------------
Layer ``i`` (0-based) has width ``min(base_width * 2**i, max_width)``; it has stride 2 while the
feature map is at least ``2 * min_spatial`` wide, otherwise stride 1. So downsampling stops at
``min_spatial`` (default 4, the usual 4x4 bottleneck; ``min_spatial=1`` downsamples until 1x1), and
every ``L`` in 1..12 works for 64 or 128 pixels: 128 px with L = 7 gives five stride-2 layers
(128 -> 4) then two stride-1 layers. ``image_size`` must be divisible by ``2 ** n_down``. Decoders
mirror the encoder (k4/s2/p1 transposed convs where the encoder downsampled, k3/s1/p1 otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from monai.networks.blocks import Convolution
from torch import nn
from torch.distributions import Normal

__all__ = [
    "VARIANTS",
    "PHASE_DECODERS",
    "PHASE_KEY",
    "K1",
    "K2",
    "K3",
    "LOG_ALPHA_CLAMP",
    "DEFAULT_DROPOUT_THRESHOLD",
    "SMCVAEConfig",
    "SMCVAE",
    "DepthwiseSeparableConv",
    "ChannelEncoder",
    "ChannelDecoder",
    "FrameHead",
    "PhaseWarpDecoder",
    "PhaseChannelsDecoder",
    "PairedSliceDataset",
    "kl_log_uniform",
    "kl_standard_normal",
    "smcvae_loss",
    "to_model_range",
    "from_model_range",
    "encoder_strides",
]

VARIANTS = ("sparse", "mcvae", "vae")
#: ways a decoder can use the tag phase maps of the acquisition (``SMCVAEConfig.phase_decoder``)
PHASE_DECODERS = ("warp", "channels")
#: batch key of the tag phase maps ``(B, 2, H, W)`` (radians) given to the phase-aware decoder
PHASE_KEY = "tag_phase"
#: Constants of the log-uniform-prior KL approximation (Molchanov et al. 2017, eq. 14).
K1, K2, K3 = 0.63576, 1.87320, 1.48695
#: ``log alpha`` is clamped to this range inside the KL (as in the reference implementation).
LOG_ALPHA_CLAMP = (-8.0, 8.0)
#: Dropout-rate threshold below which a latent dimension counts as active (reference examples).
DEFAULT_DROPOUT_THRESHOLD = 0.2
_EPS = 1e-8
_NORMS = ("batch", "instance", "group", "none")


# --------------------------------------------------------------------------------------------
# maths
# --------------------------------------------------------------------------------------------


def to_model_range(x: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Map intensities normalised to [0, 1] (thesis §4.3.2) to the model range [-1, 1]: ``2x - 1``."""
    return x * 2.0 - 1.0


def from_model_range(x: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Inverse of :func:`to_model_range`: ``(x + 1) / 2``."""
    return (x + 1.0) / 2.0


def kl_log_uniform(log_alpha: torch.Tensor) -> torch.Tensor:
    """Approximate KL(N(mu, alpha mu^2) || log-uniform prior), elementwise in ``log alpha``.

    Molchanov et al. 2017, eq. 14 (used by Antelmi et al. 2019 for the sparse mcVAE)::

        -KL ~= k1 * sigmoid(k2 + k3 * log_alpha) - 0.5 * log1p(exp(-log_alpha)) - k1

    with k1 = 0.63576, k2 = 1.87320, k3 = 1.48695 and ``log_alpha`` clamped to [-8, 8]. The
    constant ``-k1`` makes the KL vanish as alpha -> infinity; it is non-negative and decreases
    with alpha, so minimising it pushes unneeded dimensions towards dropout rate 1.
    """
    la = log_alpha.clamp(*LOG_ALPHA_CLAMP)
    neg_kl = K1 * torch.sigmoid(K2 + K3 * la) - 0.5 * torch.nn.functional.softplus(-la) - K1
    return -neg_kl


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(N(mu, exp(logvar)) || N(0, 1)) = 0.5 (mu^2 + exp(logvar) - logvar - 1)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)


def encoder_strides(image_size: int, conv_layers: int, min_spatial: int = 4) -> list[int]:
    """Strides of the ``conv_layers`` encoder layers (see module docstring, "Encoder geometry").

    >>> encoder_strides(128, 7)
    [2, 2, 2, 2, 2, 1, 1]
    >>> encoder_strides(64, 4, min_spatial=1)
    [2, 2, 2, 2]
    """
    strides, size = [], int(image_size)
    for _ in range(int(conv_layers)):
        s = 2 if size >= 2 * min_spatial and size % 2 == 0 else 1
        strides.append(s)
        size //= s
    return strides


# --------------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SMCVAEConfig:
    """Configuration of :class:`SMCVAE` (JSON round trip with :meth:`to_dict` / :meth:`from_dict`).

    Attributes
    ----------
    channels : tuple of str
        Channel names, also the batch keys (thesis: cine and tagging).
    in_frames : int
        Time frames per slice, used as image channels (thesis 20).
    image_size : int
        Square in-plane size (thesis 128).
    conv_layers : int
        ``L``, conv layers per encoder and transposed conv layers per decoder (thesis 7).
    latent_dim : int
        ``D`` (thesis 1024).
    base_width, max_width : int
        Width of encoder layer ``i`` is ``min(base_width * 2**i, max_width)``.
    min_spatial : int
        Feature-map size at which downsampling stops (module docstring).
    variant : {"sparse", "mcvae", "vae"}
    beta : float
        Weight of the KL term (1 in the published model).
    likelihood : {"learned", "fixed"}
        Whether the per-channel Gaussian log-variance is learned.
    init_logvar : float
        Initial (or fixed) per-channel Gaussian log-variance of the likelihood.
    log_alpha_init : float
        Mean of the N(., 0.01^2) initialisation of ``log alpha`` (reference code: 0, i.e. dropout
        rate 0.5).
    norm : {"batch", "instance", "group", "none"}
        Normalisation after each (transposed) conv except the output layer.
    log_param_scale : float
        ``log alpha`` and the likelihood log-variances are stored divided by this factor (the
        model uses ``log_param_scale * stored``). Adam moves a parameter by about ``lr`` per step
        whatever its gradient scale, so this lets these two scalars-per-dimension move
        ``log_param_scale`` times faster than the network weights: with lr 5e-4 and the few
        thousand steps of a demo run, log alpha could otherwise move by only ~1 and no dimension
        would reach a dropout rate below 0.2. ``1`` gives the reference parameterisation (whose
        examples train for 20 000 full-batch epochs at lr 2e-3). The model is the same.
    phase_channel : str
        ``""`` (the thesis model): every decoder is a plain :class:`ChannelDecoder`. Otherwise the name
        of a SPAMM-tagged channel whose decoder is also given the tag phase maps of the acquisition
        (batch key :data:`PHASE_KEY`, ``(B, 2, H, W)`` radians, e.g. predicted from the image header by
        :func:`cmrkit.tagging.scanner.tag_phase_map`): the geometry-aware variant.
    phase_decoder : {"warp", "channels"}
        How that decoder uses the phase (see :class:`PhaseWarpDecoder`, :class:`PhaseChannelsDecoder`).
    profile_harmonics : int
        Harmonics of the learned tag profile of :class:`PhaseWarpDecoder`.
    max_displacement : float
        Largest displacement :class:`PhaseWarpDecoder` can express, as a fraction of ``image_size``.
    anatomy_residual : float
        Bound of the per-frame anatomy residual of :class:`PhaseWarpDecoder` ([0, 1] intensity units).
    motion_channel : str
        ``""`` or the name of another channel (e.g. ``"cine"``) whose frames the displacement field of
        the :class:`PhaseWarpDecoder` must also explain: the loss gains the Gaussian likelihood of that
        channel's frames given its first frame resampled at ``x + v_t`` (a registration term with its own
        learned variance, see :meth:`SMCVAE.loss`). It ties the tags' motion to the motion visible in
        the cine.
    anatomy_channel : str
        ``""`` or the name of another channel (e.g. ``"cine"``) whose frames the :class:`PhaseWarpDecoder`
        is also given, frame by frame, to draw the anatomy and the tag depth from (a small convolutional
        head shared by the frames, :class:`FrameHead`): the latent then carries the motion and the tag
        fading, and the anatomy's edges and the blood/tissue boundary come from an image of the same
        plane at the same time instead of a 64-number code. That channel must be given whenever the
        decoder runs (synthesis from it is still synthesis from it alone).
    anatomy_width : int
        Width of the hidden layers of that head.
    """

    channels: tuple[str, ...] = ("cine", "tagging")
    in_frames: int = 20
    image_size: int = 128
    conv_layers: int = 7
    latent_dim: int = 1024
    base_width: int = 32
    max_width: int = 512
    min_spatial: int = 4
    variant: str = "sparse"
    beta: float = 1.0
    likelihood: str = "learned"
    init_logvar: float = -3.0
    log_alpha_init: float = 0.0
    norm: str = "batch"
    log_param_scale: float = 10.0
    phase_channel: str = ""
    phase_decoder: str = "warp"
    profile_harmonics: int = 2
    max_displacement: float = 0.15
    anatomy_residual: float = 0.25
    motion_channel: str = ""
    anatomy_channel: str = ""
    anatomy_width: int = 8

    def __post_init__(self) -> None:
        chans = tuple(self.channels) if not isinstance(self.channels, str) else (self.channels,)
        object.__setattr__(self, "channels", chans)
        if not chans or not all(isinstance(c, str) and c for c in chans) or len(set(chans)) != len(chans):
            raise ValueError(f"SMCVAEConfig.channels must be distinct non-empty names, got {self.channels!r}")
        positive = ("in_frames", "image_size", "conv_layers", "latent_dim", "base_width", "max_width", "min_spatial")
        for name in (*positive, "anatomy_width"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"SMCVAEConfig.{name} must be a positive integer, got {v!r}")
        if self.conv_layers > 12:
            raise ValueError(f"SMCVAEConfig.conv_layers must be <= 12, got {self.conv_layers}")
        if self.variant not in VARIANTS:
            raise ValueError(f"SMCVAEConfig.variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.likelihood not in ("learned", "fixed"):
            raise ValueError(f"SMCVAEConfig.likelihood must be 'learned' or 'fixed', got {self.likelihood!r}")
        if self.norm not in _NORMS:
            raise ValueError(f"SMCVAEConfig.norm must be one of {_NORMS}, got {self.norm!r}")
        if not (self.log_param_scale > 0 and math.isfinite(self.log_param_scale)):
            raise ValueError(f"SMCVAEConfig.log_param_scale must be a finite number > 0, got {self.log_param_scale!r}")
        if not (self.beta >= 0 and math.isfinite(self.beta)):
            raise ValueError(f"SMCVAEConfig.beta must be a finite number >= 0, got {self.beta!r}")
        if self.phase_channel and self.phase_channel not in chans:
            raise ValueError(
                f"SMCVAEConfig.phase_channel={self.phase_channel!r} is not one of the channels {chans} (or '' for none)"
            )
        if self.phase_decoder not in PHASE_DECODERS:
            raise ValueError(f"SMCVAEConfig.phase_decoder must be one of {PHASE_DECODERS}, got {self.phase_decoder!r}")
        if not isinstance(self.profile_harmonics, int) or not 1 <= self.profile_harmonics <= 8:
            raise ValueError(
                f"SMCVAEConfig.profile_harmonics must be an integer in 1..8, got {self.profile_harmonics!r}"
            )
        if not (0.0 < self.max_displacement <= 0.5):
            raise ValueError(f"SMCVAEConfig.max_displacement must be in (0, 0.5], got {self.max_displacement!r}")
        if not (0.0 <= self.anatomy_residual <= 1.0):
            raise ValueError(f"SMCVAEConfig.anatomy_residual must be in [0, 1], got {self.anatomy_residual!r}")
        for name in ("motion_channel", "anatomy_channel"):  # side channels of the warp decoder
            side = getattr(self, name)
            warp = self.phase_channel and self.phase_decoder == "warp"
            if side and (side not in chans or side == self.phase_channel or not warp):
                raise ValueError(
                    f"SMCVAEConfig.{name}={side!r} must be another of the channels {chans}, "
                    "used with a phase_channel whose phase_decoder is 'warp'"
                )
        n_down = sum(s == 2 for s in self.strides)
        if self.image_size % (2**n_down):
            raise ValueError(
                f"SMCVAEConfig.image_size={self.image_size} must be divisible by 2**{n_down} "
                f"(the stride-2 layers for conv_layers={self.conv_layers}, min_spatial={self.min_spatial})"
            )

    @property
    def strides(self) -> list[int]:
        """Encoder strides (see :func:`encoder_strides`)."""
        return encoder_strides(self.image_size, self.conv_layers, self.min_spatial)

    @property
    def widths(self) -> list[int]:
        """Output width of each encoder layer."""
        return [min(self.base_width * 2**i, self.max_width) for i in range(self.conv_layers)]

    @property
    def bottleneck_size(self) -> int:
        """Spatial size of the last encoder feature map."""
        return self.image_size // 2 ** sum(s == 2 for s in self.strides)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (``channels`` as a list)."""
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SMCVAEConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise a ValueError that names them."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"SMCVAEConfig: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**dict(d))


# --------------------------------------------------------------------------------------------
# networks
# --------------------------------------------------------------------------------------------


def _norm_arg(norm: str, channels: int) -> Any:
    if norm == "none":
        return None
    if norm == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return ("group", {"num_groups": groups})
    return norm


_ACT = ("leakyrelu", {"negative_slope": 0.2})


class DepthwiseSeparableConv(nn.Sequential):
    """Depthwise 3x3 conv (one filter per input channel, stride ``stride``) followed by a pointwise
    1x1 conv, normalisation and LeakyReLU(0.2) (Howard et al. 2017, MobileNets; thesis §4.2.1)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, norm: str = "batch"):
        super().__init__(
            Convolution(
                2,
                in_channels,
                in_channels,
                strides=stride,
                kernel_size=3,
                groups=in_channels,
                bias=False,
                conv_only=True,
            ),
            Convolution(2, in_channels, out_channels, kernel_size=1, norm=_norm_arg(norm, out_channels), act=_ACT),
        )


class ChannelEncoder(nn.Module):
    """``L`` depthwise-separable conv layers, flatten, and a linear head to ``D`` (sparse) or
    ``2D`` outputs (``mu`` and ``logvar``; other variants)."""

    def __init__(self, cfg: SMCVAEConfig):
        super().__init__()
        layers, c_in = [], cfg.in_frames
        for w, s in zip(cfg.widths, cfg.strides):
            layers.append(DepthwiseSeparableConv(c_in, w, s, cfg.norm))
            c_in = w
        self.features = nn.Sequential(*layers)
        n_out = cfg.latent_dim * (1 if cfg.variant == "sparse" else 2)
        self.head = nn.Linear(c_in * cfg.bottleneck_size**2, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class ChannelDecoder(nn.Module):
    """Linear layer to the encoder's bottleneck shape, then ``L`` transposed convs mirroring the
    encoder (norm + LeakyReLU between them) and Tanh on the ``in_frames`` output channels.

    ``out_channels`` (default ``in_frames``) and ``tanh=False`` make it the trunk of the phase-aware
    decoders (raw feature maps at full resolution)."""

    def __init__(self, cfg: SMCVAEConfig, out_channels: int | None = None, tanh: bool = True):
        super().__init__()
        widths, strides = cfg.widths, cfg.strides
        self.shape = (widths[-1], cfg.bottleneck_size, cfg.bottleneck_size)
        self.fc = nn.Sequential(nn.Linear(cfg.latent_dim, int(np.prod(self.shape))), nn.LeakyReLU(0.2))
        layers = []
        for i in reversed(range(cfg.conv_layers)):
            c_in, last = widths[i], i == 0
            c_out = (out_channels or cfg.in_frames) if last else widths[i - 1]
            k, p = (4, 1) if strides[i] == 2 else (3, 1)
            layers.append(
                Convolution(
                    2,
                    c_in,
                    c_out,
                    strides=strides[i],
                    kernel_size=k,
                    padding=p,
                    output_padding=0,
                    is_transposed=True,
                    conv_only=last,
                    norm=None if last else _norm_arg(cfg.norm, c_out),
                    act=None if last else _ACT,
                )
            )
        self.features = nn.Sequential(*layers)
        self.out = nn.Tanh() if tanh else nn.Identity()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(z.shape[0], *self.shape)
        return self.out(self.features(h))


def _check_maps(x: Any, want: tuple[int, ...], batch: int, missing: str, what: str) -> torch.Tensor:
    """``x`` as a float (B, *want) tensor for a batch of ``batch`` latents, or a ValueError (``missing`` when
    ``x`` is None, else naming ``what`` and the shape expected)."""
    if x is None:
        raise ValueError(missing)
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != want:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"SMCVAE: {what} must have shape (B, {want[0]}, {want[1]}, {want[2]}), got {shape}")
    if x.shape[0] != batch:
        raise ValueError(f"SMCVAE: {x.shape[0]} {what} for a batch of {batch} latents")
    return x.float()


def _check_phase(phase: torch.Tensor | None, cfg: SMCVAEConfig, batch: int) -> torch.Tensor:
    n = cfg.image_size
    missing = (
        f"SMCVAE: the decoder of channel {cfg.phase_channel!r} needs the tag phase maps "
        f"(batch key {PHASE_KEY!r}, shape (B, 2, {n}, {n}), radians)"
    )
    return _check_maps(phase, (2, n, n), batch, missing, "tag phase maps")


def _profile_terms(psi: torch.Tensor, coef_cos: torch.Tensor, coef_sin: torch.Tensor) -> torch.Tensor:
    """``g(psi) = c_0 + sum_n (c_n cos n psi + s_n sin n psi)``, harmonics by the Chebyshev recursion
    ``cos(n psi) = 2 cos(psi) cos((n-1) psi) - cos((n-2) psi)`` (likewise for sine: two trigonometric
    evaluations whatever their number)."""
    c1, s1 = torch.cos(psi), torch.sin(psi)
    g = coef_cos[1] * c1 + coef_sin[0] * s1 + coef_cos[0]
    c_prev, s_prev, c_n, s_n = None, None, c1, s1
    two_c1 = 2.0 * c1
    for n in range(2, coef_cos.shape[0]):
        if c_prev is None:  # cos 2x = 2 cos^2 x - 1, sin 2x = 2 cos x sin x
            c_new, s_new = two_c1 * c1 - 1.0, two_c1 * s1
        else:
            c_new, s_new = two_c1 * c_n - c_prev, two_c1 * s_n - s_prev
        c_prev, s_prev, c_n, s_n = c_n, s_n, c_new, s_new
        g = g + coef_cos[n] * c_n + coef_sin[n - 1] * s_n
    return g


def _check_anatomy(anatomy: torch.Tensor | None, cfg: SMCVAEConfig, batch: int) -> torch.Tensor:
    want = (cfg.in_frames, cfg.image_size, cfg.image_size)
    missing = (
        f"SMCVAE: the decoder of channel {cfg.phase_channel!r} draws its anatomy from channel "
        f"{cfg.anatomy_channel!r}: give its frames (B, {want[0]}, {want[1]}, {want[2]}) in [-1, 1]"
    )
    return _check_maps(anatomy, want, batch, missing, f"{cfg.anatomy_channel!r} sequences for the decoder")


class FrameHead(nn.Module):
    """A small convolutional network applied to every frame alone, with weights shared by the frames.

    Input (B, F, C, H, W) -> output (B, F, K, H, W): two 3x3 convolutions of ``width`` features
    (LeakyReLU 0.2) and a 1x1 convolution, so each output pixel sees the 5x5 pixels around it in its own
    frame. The last convolution starts at zero (an untrained head outputs zeros), so a head that adds a
    correction leaves its decoder as it was until it learns. Used by :class:`PhaseWarpDecoder` to read the
    anatomy and the tag depth from the frames of ``config.anatomy_channel``.
    """

    def __init__(self, in_channels: int, out_channels: int, width: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, width, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, out_channels, 1),
        )
        with torch.no_grad():
            self.net[-1].weight.zero_()
            self.net[-1].bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, F, C, H, W = x.shape
        # channels-last: 3.5x faster forward + backward on CPU for these few-channel maps (benchmarks/README.md)
        y = self.net(x.reshape(B * F, C, H, W).contiguous(memory_format=torch.channels_last))
        return y.reshape(B, F, -1, H, W)


class PhaseWarpDecoder(nn.Module):
    """SPAMM image formation with the acquisition's tag phase, moved by a decoded displacement.

    A SPAMM grid is a function of the material position at tagging time (Axel & Dougherty 1989): the
    frame at time ``t`` shows, at pixel ``x``, the material that was at ``X = x + v(x, t)``, and its
    modulation is ``g(phi_1(X)) g(phi_2(X))``, ``phi_d`` the tag phase of the acquisition (known from the
    header, :func:`cmrkit.tagging.scanner.tag_phase_map`). Phase is linear in position, so
    ``phi_d(x + v) = phi_d(x) + grad(phi_d) . v``, with ``grad(phi_d)`` the (constant) gradient of the
    given map. The same displacement moves the anatomy: a reference anatomy image ``a_ref`` (tagging
    contrast at tagging time) is resampled at ``x + v`` and a bounded residual ``delta`` absorbs what a
    2-D warp cannot describe (through-plane motion brings other material into the slice). A
    :class:`ChannelDecoder` trunk decodes ``a_ref``, and per frame ``delta``, the tag depth ``r`` (T1
    fading; blood loses its tags) and ``v``::

        y_t = a_t (1 - r_t + r_t g(psi_1) g(psi_2)),   psi_d = phi_d + grad(phi_d) . v_t,
        a_t = a_ref(x + v_t) + rho tanh(delta_t),       a_ref = sigmoid(.), r_t = sigmoid(.),
        v_t = v_max tanh(.)   (pixels; v_max = max_displacement * image_size, rho = anatomy_residual)

    and returns ``2 y - 1`` (model range). Tying the anatomy to the displacement gives the decoder a
    non-periodic handle on the motion: the tag pattern alone repeats every tag period, so a displacement
    learnt only from it can lock onto the wrong tag line (and a decoder then rather fades its tags). The
    tag profile ``g(psi) = c_0 + sum_n (c_n cos n psi + s_n sin n psi)`` (``profile_harmonics`` terms) is
    learned, initialised at ``(1 - cos psi) / 2`` (dark lines at phase 0). Displacement and residual
    outputs start at zero.

    With ``config.anatomy_channel`` the decoder is also given that channel's frames ``c_t`` (the cine of the
    same plane and times) and a :class:`FrameHead` corrects ``a_t`` and ``r_t`` from them, pixel by pixel::

        a'_t = a_t + da_t,   r'_t = sigmoid(l_t + dr_t),   (da_t, dr_t) = head(c_t, a_t, l_t)

    (``l_t`` the tag-depth logit). It sees 5x5 pixels of its own frame: it maps contrast and edges (where
    the wall is, where the blood is, which loses its tags) and cannot move the tags.
    """

    def __init__(self, cfg: SMCVAEConfig):
        super().__init__()
        self.cfg = cfg
        F = cfg.in_frames
        self.trunk = ChannelDecoder(cfg, out_channels=4 * F + 1, tanh=False)
        last = self.trunk.features[-1]
        conv = next(m for m in last.modules() if isinstance(m, nn.ConvTranspose2d))
        with torch.no_grad():  # residual and displacement start at zero: weight is (C_in, C_out, k, k)
            for sl in (slice(1, F + 1), slice(2 * F + 1, None)):
                conv.weight[:, sl].zero_()
                if conv.bias is not None:
                    conv.bias[sl].zero_()
        h = cfg.profile_harmonics
        cos = torch.zeros(h + 1)
        cos[0], cos[1] = 0.5, -0.5
        self.profile_cos = nn.Parameter(cos)
        self.profile_sin = nn.Parameter(torch.zeros(h))
        self.v_max = float(cfg.max_displacement * cfg.image_size)
        # the head that reads the frames of config.anatomy_channel: (c_t, a_t, l_t) -> (da_t, dr_t)
        self.anatomy = FrameHead(3, 2, cfg.anatomy_width) if cfg.anatomy_channel else None

    def profile(self, psi: torch.Tensor) -> torch.Tensor:
        """The learned tag profile ``g(psi)`` (see :func:`_profile_terms`)."""
        return _profile_terms(psi, self.profile_cos, self.profile_sin)

    def modulation(self, phase: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Grid modulation ``g(psi_1) g(psi_2)`` (B, F, H, W) of the tag phase ``phase`` (B, 2, H, W) moved by
        the displacement ``v`` (B, F, 2, H, W); ``grad(phi_d)`` is the mean finite difference of the map."""
        kx = (phase[:, :, :, 1:] - phase[:, :, :, :-1]).mean(dim=(2, 3))  # (B, 2): d phi_d / d column
        ky = (phase[:, :, 1:, :] - phase[:, :, :-1, :]).mean(dim=(2, 3))  # (B, 2): d phi_d / d row
        vx, vy = v[:, :, 0], v[:, :, 1]  # (B, F, H, W)
        m = None
        for d in range(2):
            psi = phase[:, d : d + 1] + kx[:, d, None, None, None] * vx + ky[:, d, None, None, None] * vy
            g = self.profile(psi)
            m = g if m is None else m * g
        return m

    def fields(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Decoded reference anatomy ``a_ref`` (B, 1, H, W), residual ``delta`` and tag depth ``r``
        (B, F, H, W, after their bounding functions; ``r_logit`` before it) and displacement ``v``
        (B, F, 2, H, W), ``v[:, :, 0]`` along columns (x), ``v[:, :, 1]`` along rows (y), in pixels."""
        F = self.cfg.in_frames
        h = self.trunk(z)
        B, _, H, W = h.shape
        a_ref, delta, r, v = torch.split(h, [1, F, F, 2 * F], dim=1)  # one concatenation in backward
        return {
            "a_ref": torch.sigmoid(a_ref),
            "delta": self.cfg.anatomy_residual * torch.tanh(delta),
            "r": torch.sigmoid(r),
            "r_logit": r,
            "v": self.v_max * torch.tanh(v).view(B, F, 2, H, W),
        }

    @staticmethod
    def warp(image: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``image(x + v_t(x))`` for every frame: image (B, 1, H, W), v (B, F, 2, H, W) in pixels ->
        (B, F, H, W); bilinear, border values outside."""
        B, F, _, H, W = v.shape
        yy, xx = torch.meshgrid(
            torch.arange(H, dtype=v.dtype, device=v.device),
            torch.arange(W, dtype=v.dtype, device=v.device),
            indexing="ij",
        )
        gx = (xx + v[:, :, 0]) * (2.0 / max(W - 1, 1)) - 1.0
        gy = (yy + v[:, :, 1]) * (2.0 / max(H - 1, 1)) - 1.0
        # all frames sample the one image: a (B, F*H, W) sampling grid instead of F copies of the image
        grid = torch.stack([gx, gy], dim=-1).reshape(B, F * H, W, 2)
        out = torch.nn.functional.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)
        return out.view(B, F, H, W)

    def forward(
        self,
        z: torch.Tensor,
        phase: torch.Tensor | None,
        anatomy: torch.Tensor | None = None,
        return_displacement: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Frames (B, F, H, W) in model range (and the displacement with ``return_displacement``);
        ``anatomy``: the frames of ``config.anatomy_channel`` (B, F, H, W), required when it is set."""
        ph = _check_phase(phase, self.cfg, z.shape[0])
        f = self.fields(z)
        v, r = f["v"], f["r"]
        side = None if self.anatomy is None else _check_anatomy(anatomy, self.cfg, z.shape[0])
        m = self.modulation(ph, v)
        a = self.warp(f["a_ref"], v) + f["delta"]
        if side is not None:
            d = self.anatomy(torch.stack([side, a, f["r_logit"]], dim=2))
            a, r = a + d[:, :, 0], torch.sigmoid(f["r_logit"] + d[:, :, 1])
        y = 2.0 * a * (1.0 - r + r * m) - 1.0
        return (y, v) if return_displacement else y


class PhaseChannelsDecoder(nn.Module):
    """The simpler alternative: the tag phase as extra input channels of the last layers.

    A :class:`ChannelDecoder` trunk gives ``2 F`` feature maps; ``cos phi_d`` and ``sin phi_d`` (4 maps)
    are concatenated and two 3x3 convolutions (LeakyReLU between them) with Tanh give the ``F`` frames.
    The network must learn by itself how to shift the pattern with the motion.
    """

    def __init__(self, cfg: SMCVAEConfig):
        super().__init__()
        self.cfg = cfg
        F = cfg.in_frames
        self.trunk = ChannelDecoder(cfg, out_channels=2 * F, tanh=False)
        self.head = nn.Sequential(
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * F + 4, 2 * F, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * F, F, 3, padding=1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, phase: torch.Tensor | None) -> torch.Tensor:
        ph = _check_phase(phase, self.cfg, z.shape[0])
        h = self.trunk(z)
        return self.head(torch.cat([h, torch.cos(ph), torch.sin(ph)], dim=1))


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------


class SMCVAE(nn.Module):
    """Sparse multi-channel VAE and its non-sparse / single-channel comparison variants.

    Parameters
    ----------
    config : SMCVAEConfig, optional
        Architecture and variant (defaults: thesis settings, sparse).
    seed : int, optional
        When given, parameters are initialised from ``torch.manual_seed(seed)`` inside
        :func:`torch.random.fork_rng`, leaving the global RNG untouched.
    **overrides
        Shortcut for config fields, e.g. ``SMCVAE(latent_dim=64, image_size=64)``.

    Examples
    --------
    >>> m = SMCVAE(image_size=64, conv_layers=4, latent_dim=16, base_width=8, seed=0).eval()
    >>> x = torch.zeros(2, 20, 64, 64)
    >>> m.synthesise({"cine": x}, source="cine", target="tagging").shape
    torch.Size([2, 20, 64, 64])
    """

    def __init__(self, config: SMCVAEConfig | None = None, *, seed: int | None = None, **overrides: Any):
        super().__init__()
        if config is None:
            config = SMCVAEConfig(**overrides)
        elif overrides:
            config = SMCVAEConfig.from_dict({**config.to_dict(), **overrides})
        self.config = config
        self.channels: tuple[str, ...] = config.channels
        if seed is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                self._build()
        else:
            self._build()

    def _build(self) -> None:
        cfg = self.config
        self.encoders = nn.ModuleDict({c: ChannelEncoder(cfg) for c in self.channels})
        self.decoders = nn.ModuleDict({c: self._make_decoder(c) for c in self.channels})
        k = float(cfg.log_param_scale)
        logvar = torch.full((len(self.channels),), float(cfg.init_logvar) / k)
        if cfg.likelihood == "learned":
            self.x_logvar_raw = nn.Parameter(logvar)
        else:
            self.register_buffer("x_logvar_raw", logvar)
        if cfg.motion_channel:  # learned variance of the registration term (same parameterisation)
            self.motion_logvar_raw = nn.Parameter(torch.tensor(float(cfg.init_logvar) / k))
        if cfg.variant == "sparse":
            self.log_alpha_raw = nn.Parameter((cfg.log_alpha_init + 0.01 * torch.randn(1, cfg.latent_dim)) / k)
        else:
            self.log_alpha_raw = None

    def _make_decoder(self, channel: str) -> nn.Module:
        cfg = self.config
        if channel != cfg.phase_channel:
            return ChannelDecoder(cfg)
        return PhaseWarpDecoder(cfg) if cfg.phase_decoder == "warp" else PhaseChannelsDecoder(cfg)

    @property
    def phase_aware(self) -> bool:
        """Whether a decoder takes the acquisition's tag phase maps (the geometry-aware variant)."""
        return bool(self.config.phase_channel)

    @property
    def log_alpha(self) -> torch.Tensor | None:
        """Shared ``log alpha`` (1, D) of the sparse variant (None otherwise)."""
        if self.log_alpha_raw is None:
            return None
        return self.log_alpha_raw * self.config.log_param_scale

    @property
    def x_logvar(self) -> torch.Tensor:
        """Per-channel log-variance of the Gaussian likelihood, shape (C,)."""
        return self.x_logvar_raw * self.config.log_param_scale

    # ---- construction helpers ---------------------------------------------------------------
    @classmethod
    def from_config(cls, config: Mapping[str, Any] | SMCVAEConfig, *, seed: int | None = None) -> SMCVAE:
        """Build from an :class:`SMCVAEConfig` or its dict (as stored by :func:`cmrkit.train.save_model`)."""
        cfg = config if isinstance(config, SMCVAEConfig) else SMCVAEConfig.from_dict(config)
        return cls(cfg, seed=seed)

    def config_dict(self) -> dict[str, Any]:
        """JSON-serialisable config, for :func:`cmrkit.train.save_model`."""
        return self.config.to_dict()

    @property
    def sparse(self) -> bool:
        return self.config.variant == "sparse"

    @property
    def cross(self) -> bool:
        """Whether every latent is decoded by every decoder during training."""
        return self.config.variant in ("sparse", "mcvae")

    # ---- checks ------------------------------------------------------------------------------
    def _check_channel(self, channel: str, what: str = "channel") -> int:
        if channel not in self.channels:
            raise ValueError(f"SMCVAE: {what}={channel!r} is not one of the model channels {self.channels}")
        return self.channels.index(channel)

    def _check_input(self, x: torch.Tensor, channel: str) -> None:
        cfg = self.config
        want = (cfg.in_frames, cfg.image_size, cfg.image_size)
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != want:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"SMCVAE: input for channel {channel!r} must have shape (B, {want[0]}, {want[1]}, "
                f"{want[2]}) with intensities in [-1, 1], got {shape}"
            )

    # ---- encoder / decoder ------------------------------------------------------------------
    def encode_params(self, x: torch.Tensor, channel: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior parameters ``(mu, logvar)`` of ``q(z | x_channel)``, each (B, D).

        Sparse: ``logvar = log_alpha + 2 log(|mu| + 1e-8)``, i.e. variance ``alpha mu^2``.
        """
        self._check_channel(channel)
        self._check_input(x, channel)
        h = self.encoders[channel](x)
        if self.sparse:
            mu = h
            logvar = self.log_alpha + 2.0 * torch.log(mu.abs() + _EPS)
        else:
            mu, logvar = h.chunk(2, dim=-1)
        return mu, logvar

    def encode(self, x: torch.Tensor, channel: str) -> Normal:
        """Posterior ``q(z | x_channel)`` as a :class:`torch.distributions.Normal` of shape (B, D)."""
        mu, logvar = self.encode_params(x, channel)
        return Normal(mu, (0.5 * logvar).exp(), validate_args=False)

    def decode(
        self,
        z: torch.Tensor,
        channel: str,
        phase: torch.Tensor | None = None,
        anatomy: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean image of ``channel`` given latents ``z`` (B, D): (B, F, H, W) in [-1, 1].

        ``phase``: the tag phase maps ``(B, 2, H, W)``, required by the decoder of
        ``config.phase_channel`` (ignored by the others); ``anatomy``: the frames of
        ``config.anatomy_channel`` (B, F, H, W), required by that decoder when it is set.
        """
        self._check_channel(channel)
        if z.ndim != 2 or z.shape[1] != self.config.latent_dim:
            raise ValueError(f"SMCVAE.decode: z must have shape (B, {self.config.latent_dim}), got {tuple(z.shape)}")
        if channel != self.config.phase_channel:
            return self.decoders[channel](z)
        if self.config.anatomy_channel:
            return self.decoders[channel](z, phase, anatomy)
        return self.decoders[channel](z, phase)

    def _side_inputs(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """What the phase-aware decoder reads from ``batch`` besides the latent: the tag phase maps
        (:data:`PHASE_KEY`) and the frames of ``config.anatomy_channel``; None where the model needs none."""
        phase = batch.get(PHASE_KEY) if self.phase_aware else None
        anatomy = batch.get(self.config.anatomy_channel) if self.config.anatomy_channel else None
        return phase, anatomy

    # ---- sparsity ----------------------------------------------------------------------------
    def dropout_rate(self) -> torch.Tensor:
        """Per-dimension dropout rate ``alpha / (1 + alpha) = sigmoid(log_alpha)``, shape (D,)."""
        if not self.sparse:
            raise ValueError(f"SMCVAE.dropout_rate: defined for variant 'sparse' only, not {self.config.variant!r}")
        return torch.sigmoid(self.log_alpha.detach()).reshape(-1)

    def active_dims(self, threshold: float = DEFAULT_DROPOUT_THRESHOLD) -> torch.Tensor:
        """Boolean mask (D,) of the dimensions whose dropout rate is below ``threshold``."""
        if not 0.0 < float(threshold) <= 1.0:
            raise ValueError(f"SMCVAE.active_dims: threshold must be in (0, 1], got {threshold!r}")
        return self.dropout_rate() < float(threshold)

    def _mask(self, z: torch.Tensor, threshold: float | None) -> torch.Tensor:
        if threshold is None:
            return z
        return z * self.active_dims(threshold).to(z.dtype)

    # ---- forward / loss -----------------------------------------------------------------------
    def forward(self, batch: Mapping[str, torch.Tensor], *, sample: bool | None = None) -> dict[str, Any]:
        """Encode every model channel present in ``batch`` and decode the latents.

        Parameters
        ----------
        batch : mapping
            ``{channel: (B, F, H, W)}``; keys that are not channels are ignored; at least one
            channel must be present.
        sample : bool, optional
            Draw ``z`` by reparameterisation (default: in train mode) or use the posterior mean.

        Returns
        -------
        dict
            ``q[s]`` (Normal), ``mu[s]``, ``logvar[s]``, ``z[s]`` for each present channel ``s``
            and ``recon[t][s]`` = decoder ``t`` applied to ``z[s]`` for every target ``t``
            (sparse/mcvae) or ``t = s`` (vae); with ``motion_channel``, ``motion[s]`` the displacement
            (B, F, 2, H, W) decoded from ``z[s]``.
        """
        present = [c for c in self.channels if c in batch]
        if not present:
            raise ValueError(f"SMCVAE.forward: batch has none of the channels {self.channels}; keys: {list(batch)}")
        phase, anatomy = self._side_inputs(batch)
        sample = self.training if sample is None else bool(sample)
        out: dict[str, Any] = {"q": {}, "mu": {}, "logvar": {}, "z": {}, "recon": {t: {} for t in self.channels}}
        for s in present:
            mu, logvar = self.encode_params(batch[s], s)
            z = mu + (0.5 * logvar).exp() * torch.randn_like(mu) if sample else mu
            out["mu"][s], out["logvar"][s], out["z"][s] = mu, logvar, z
            out["q"][s] = Normal(mu, (0.5 * logvar).exp(), validate_args=False)
        if self.cross:
            sizes = [out["z"][s].shape[0] for s in present]
            z_all = torch.cat([out["z"][s] for s in present])  # one decoder call per target
            ph_all = None if phase is None else torch.cat([phase] * len(present))
            an_all = None if anatomy is None else torch.cat([anatomy] * len(present))
            for t in self.channels:
                if t == self.config.phase_channel and self.config.motion_channel:
                    y, v = self.decoders[t](z_all, ph_all, an_all, return_displacement=True)
                    out["motion"] = dict(zip(present, v.split(sizes)))
                else:
                    y = self.decode(z_all, t, ph_all, an_all)
                for s, xh in zip(present, y.split(sizes)):
                    out["recon"][t][s] = xh
        else:
            for s in present:
                out["recon"][s][s] = self.decode(out["z"][s], s, phase, anatomy)
        return out

    def kl(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL of one channel's posterior to the prior, summed over dimensions, per sample (B,)."""
        if self.sparse:
            # log alpha is shared and data independent, so the KL is the same for every sample
            return kl_log_uniform(self.log_alpha).sum().expand(mu.shape[0])
        return kl_standard_normal(mu.float(), logvar.float()).sum(dim=1)

    def gaussian_nll(self, x: torch.Tensor, x_hat: torch.Tensor, channel: str) -> torch.Tensor:
        """``-log N(x | x_hat, sigma_c^2 I)`` summed over pixels, per sample (B,)."""
        lv = self.x_logvar[self._check_channel(channel)].float()
        sse = (x.float() - x_hat.float()).pow(2).flatten(1).sum(dim=1)
        n = x[0].numel()
        return 0.5 * (sse * torch.exp(-lv) + n * (lv + math.log(2 * math.pi)))

    def loss(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Negative ELBO of thesis Eq. 4.1 (module docstring), averaged over the batch.

        With ``config.motion_channel`` (geometry-aware variant) every displacement field decoded by the
        phase-aware decoder from ``z_s`` adds ``-log N(x_m | x_m[frame 0] o (id + v_s), sigma_m^2 I)``
        (``x_m`` the motion channel's frames, ``sigma_m`` learned), averaged over ``s`` like the other
        terms: the decoded motion must also move the cine's first frame onto its later frames.

        Returns
        -------
        loss : Tensor
            Scalar.
        logs : dict of scalar tensors (detached)
            ``kl`` and ``nll`` (averaged over encoding channels, like the loss), ``mse/<t><-<s>``
            per-pixel MSE of decoder ``t`` on the latent of ``s`` (model range), ``sigma/<t>``
            the likelihood standard deviation, and for the sparse variant ``active_dims`` (dropout
            rate < 0.2) and ``mean_dropout``.
        """
        missing = [c for c in self.channels if c not in batch]
        if missing:
            raise ValueError(f"SMCVAE.loss: the batch lacks channels {missing} (has {list(batch)})")
        out = self.forward(batch)
        C = len(self.channels)
        kl_total = 0.0
        nll_total = 0.0
        logs: dict[str, torch.Tensor] = {}
        for s in self.channels:
            kl_total = kl_total + self.kl(out["mu"][s], out["logvar"][s]).mean()
            for t in self.channels:
                if s not in out["recon"][t]:
                    continue
                xh = out["recon"][t][s]
                nll_total = nll_total + self.gaussian_nll(batch[t], xh, t).mean()
                logs[f"mse/{t}<-{s}"] = (batch[t].float() - xh.detach().float()).pow(2).mean()
            if s in out.get("motion", {}):
                ref = batch[self.config.motion_channel]
                moved = PhaseWarpDecoder.warp(ref[:, :1].float(), out["motion"][s])
                lv = self.motion_logvar_raw.float() * self.config.log_param_scale
                sse = (ref.float() - moved).pow(2).flatten(1).sum(dim=1)
                n = ref[0].numel()
                nll_total = nll_total + (0.5 * (sse * torch.exp(-lv) + n * (lv + math.log(2 * math.pi)))).mean()
                logs[f"mse/motion<-{s}"] = (ref.float() - moved.detach()).pow(2).mean()
        kl_mean, nll_mean = kl_total / C, nll_total / C
        loss = nll_mean + self.config.beta * kl_mean
        logs["kl"] = kl_mean.detach()
        logs["nll"] = nll_mean.detach()
        for i, t in enumerate(self.channels):
            logs[f"sigma/{t}"] = (0.5 * self.x_logvar[i].detach()).exp()
        if self.config.motion_channel:
            logs["sigma/motion"] = (0.5 * self.motion_logvar_raw.detach() * self.config.log_param_scale).exp()
        if self.sparse:
            rate = self.dropout_rate()
            logs["active_dims"] = (rate < DEFAULT_DROPOUT_THRESHOLD).sum().float()
            logs["mean_dropout"] = rate.mean()
        return loss, logs

    # ---- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def synthesise(
        self,
        x: torch.Tensor | Mapping[str, torch.Tensor],
        source: str = "cine",
        target: str = "tagging",
        *,
        threshold: float | None = None,
        phase: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Synthesise ``target`` from ``source`` alone: ``G_target(mu_source)``.

        Parameters
        ----------
        x : Tensor or mapping
            The source images (B, F, H, W) in [-1, 1], or a batch dict holding ``x[source]``
            (other channels, if present, are ignored; none is needed) and, for the geometry-aware
            variant, the tag phase maps under :data:`PHASE_KEY`. A ``target`` decoder that reads
            ``config.anatomy_channel`` takes it from the source when that is the channel (cine ->
            tagging: still the cine alone), else from ``x[anatomy_channel]``.
        source, target : str
            Channel names (``target == source`` reconstructs the channel).
        threshold : float, optional
            Sparse variant only: zero the latent dimensions whose dropout rate is >= threshold
            (e.g. 0.2) before decoding.
        phase : Tensor, optional
            Tag phase maps ``(B, 2, H, W)`` for a ``target`` that is the ``phase_channel`` (instead of
            ``x[PHASE_KEY]``): the acquisition geometry, not image content, so the synthesis is still
            from ``source`` alone.

        Returns
        -------
        Tensor
            (B, F, H, W) in [-1, 1]. Runs under ``torch.no_grad``; call ``model.eval()`` first
            (BatchNorm uses batch statistics in train mode).
        """
        self._check_channel(source, "source")
        self._check_channel(target, "target")
        anatomy = None
        if isinstance(x, Mapping):
            if source not in x:
                raise ValueError(f"SMCVAE.synthesise: source channel {source!r} not in the batch keys {list(x)}")
            found, anatomy = self._side_inputs(x)
            phase = found if phase is None else phase
            x = x[source]
        if source == self.config.anatomy_channel:
            anatomy = x
        mu, _ = self.encode_params(x, source)
        return self.decode(self._mask(mu, threshold), target, phase, anatomy)

    @torch.no_grad()
    def reconstruct(
        self,
        batch: Mapping[str, torch.Tensor],
        *,
        sources: Sequence[str] | None = None,
        threshold: float | None = None,
    ) -> dict[str, torch.Tensor]:
        """Every channel decoded from the posterior means of ``sources`` and averaged over them.

        This is the reference code's ``reconstruct`` (the decoded means are averaged over the
        available encoding channels; the posteriors themselves are not fused). ``sources``
        defaults to the model channels present in ``batch``. Returns ``{target: (B, F, H, W)}``.
        """
        srcs = [c for c in self.channels if c in batch] if sources is None else list(sources)
        if not srcs:
            raise ValueError(f"SMCVAE.reconstruct: no source channel; batch keys {list(batch)}")
        for s in srcs:
            self._check_channel(s, "source")
            if s not in batch:
                raise ValueError(f"SMCVAE.reconstruct: source {s!r} not in the batch keys {list(batch)}")
        mus = [self._mask(self.encode_params(batch[s], s)[0], threshold) for s in srcs]
        phase, anatomy = self._side_inputs(batch)
        return {t: torch.stack([self.decode(m, t, phase, anatomy) for m in mus]).mean(0) for t in self.channels}


def smcvae_loss(model: SMCVAE, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``loss_fn`` for :func:`cmrkit.train.fit`: ``model.loss(batch)``."""
    return model.loss(batch)


class PairedSliceDataset(torch.utils.data.Dataset):
    """Paired slices as dicts ``{channel: (F, H, W) float32 tensor}``.

    Parameters
    ----------
    arrays : mapping
        ``{channel: array (N, F, H, W)}``, all with the same N (numpy arrays or tensors).
    unit_range : bool
        The arrays are normalised to [0, 1] (thesis §4.3.2) and are mapped to [-1, 1] with
        :func:`to_model_range` on access. ``False``: they already are in [-1, 1].
    extra : mapping, optional
        Per-item metadata arrays of length N (e.g. subject index, slice position) returned under
        their keys.

    Notes
    -----
    Arrays are kept as given (no copy for tensors and NumPy arrays) and converted to float32 one
    item at a time: at thesis size one slice pair is 2 x 20 x 128 x 128 values, 2.6 MB in float32,
    so pass float16 arrays to halve the memory of a large cohort.
    """

    def __init__(self, arrays: Mapping[str, Any], *, unit_range: bool = True, extra: Mapping[str, Any] | None = None):
        if not arrays:
            raise ValueError("PairedSliceDataset: arrays is empty")
        self.arrays = {
            k: torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v) for k, v in arrays.items()
        }
        lens = {k: (v.shape[0] if v.ndim == 4 else None) for k, v in self.arrays.items()}
        if any(n is None for n in lens.values()):
            raise ValueError(
                f"PairedSliceDataset: every array must be (N, F, H, W); shapes "
                f"{ {k: tuple(v.shape) for k, v in self.arrays.items()} }"
            )
        if len(set(lens.values())) != 1:
            raise ValueError(f"PairedSliceDataset: arrays differ in length: {lens}")
        self.n = next(iter(lens.values()))
        self.unit_range = unit_range
        self.extra = {k: list(v) for k, v in (extra or {}).items()}
        for k, v in self.extra.items():
            if len(v) != self.n:
                raise ValueError(f"PairedSliceDataset: extra[{k!r}] has {len(v)} items, expected {self.n}")

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {}
        for k, v in self.arrays.items():
            x = v[i].float()
            item[k] = to_model_range(x) if self.unit_range else x
        for k, v in self.extra.items():
            item[k] = v[i]
        return item
