"""Shared pieces of the baseline generators: sizes, 3D encoder/decoder, patch critic, packing, sampling.

Data layout
-----------
Every baseline generates what the latent diffusion models of chapters 5 and 6 generate: a short-axis
image in [0, 1] **with** its label map (0 background, 1 LV blood pool, 2 LV myocardium, 3 RV blood
pool), either one volume ``(X, Y, Z)`` (chapter 5: 3D VAE, 3D LSGAN) or a sequence ``(X, Y, Z, T)``
(chapter 6: CGAN, CVAE, CHeart). Inside the networks a frame is ``1 + K`` channels: the image and the
one-hot labels (``K = n_classes``) on the input side, the image (a sigmoid output in [0, 1]) and ``K``
label logits on the output side. The frames of a sequence are stacked on the channel axis
(:meth:`BaselineConfig.pack` / :meth:`BaselineConfig.unpack`), as chapter 6's diffusion model stacks its
frame latents, so the first convolution sees every frame at once and the cardiac cycle is learned by
the network. The discriminators see generated frames as the image plus the softmax of the logits,
real ones as the image plus the one-hot labels.

Two spatial layouts (``BaselineConfig.fold_slices``):

* ``False`` -- 3D convolutions over ``(X, Y, Z)`` (the thesis' "3D" VAE and LSGAN of chapter 5), a
  frame's ``1 + K`` channels (times ``T``) on the channel axis;
* ``True`` -- the slices are folded into the channels as well and the networks are 2D over
  ``(X, Y)``: the first convolution is then exactly a 3D convolution whose kernel spans the whole
  stack, and every later layer works at depth 1. This is how chapters 5-6's own autoencoder handles
  the depth (:mod:`cmrkit.models.autoencoder`), and it makes a whole 10-slice x T-frame sequence
  affordable for the chapter-6 baselines on a CPU (a 3D network over 20 frames costs about ten times
  more).

Networks (MONAI building blocks)
--------------------------------
* :class:`VolumeEncoder` -- ``len(channels)`` strided 3D (or 2D) convolutions (MONAI
  :class:`~monai.networks.blocks.Convolution` or :class:`~monai.networks.blocks.ResidualUnit`), stride
  2 in-plane and ``depth_strides[i]`` along the slices, then a linear layer (the structure of MONAI's
  ``VarAutoEncoder``, which has no conditioning input).
* :class:`VolumeDecoder` -- a linear layer to the coarsest grid, then transposed convolutions
  mirroring the encoder (MONAI's ``Generator`` structure); the round trip is exact in shape
  (:meth:`BaselineConfig.check`).
* :class:`PatchCritic` -- MONAI :class:`~monai.networks.nets.PatchDiscriminator` (3D or 2D). With the
  default padding of 1 its four stride-2 4x4x4 convolutions shrink 10 slices to nothing (5 -> 2 -> 1 ->
  0: "Kernel size can't be greater than actual input size"); :func:`patch_padding` gives every axis
  the smallest padding that keeps it alive (2 along 10 slices: 10 -> 6 -> 4 -> 3 -> 4 -> 3).

Sampling draws the latent of sample ``i`` from its own seed on the CPU
(:func:`cmrkit.models.diffusion.initial_noise`), so a sample does not depend on the batch or device.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "BaselineConfig",
    "VolumeEncoder",
    "VolumeDecoder",
    "PatchCritic",
    "MappingNetwork",
    "patch_padding",
    "frame_input",
    "finish_output",
    "condition_maps",
    "critic_input",
    "split_frames",
    "kl_per_dim",
    "SequenceDataset",
    "generate",
]

_NORMS = {"instance": "INSTANCE", "batch": "BATCH"}


@dataclass(frozen=True)
class BaselineConfig:
    """Sizes of a baseline generator (every model of :mod:`cmrkit.models.baselines` takes one).

    Attributes
    ----------
    image_size
        In-plane size ``(X, Y)``; divisible by ``2 ** len(channels)``.
    depth
        Slices ``Z``; divisible by the product of ``depth_strides`` with an even size before each
        depth-strided level.
    frames
        ``T``: 1 for one volume (chapter 5), the frames of a sequence otherwise (chapter 6).
    n_classes
        Label classes including background (4).
    latent_dim
        Length of the latent vector ``z``.
    channels
        Encoder widths, finest first (the decoder mirrors them); one stride-2 level each.
    depth_strides
        Stride along the slices of each level (1 or 2), ``len(depth_strides) == len(channels)``; all 1
        with ``fold_slices``.
    fold_slices
        Fold the slices into the channels and use 2D networks (module docstring).
    res_units
        MONAI residual sub-units per level (0: one plain convolution per level).
    norm
        ``"instance"`` or ``"batch"`` normalisation in the encoder/decoder.
    cond_dim
        Length of the condition feature vector (0: unconditional).
    disc_channels, disc_layers
        Width of the first layer and number of stride-2 layers of the :class:`PatchCritic`.
    hidden
        Hidden size of CHeart's recurrent motion model.
    mapping_dim, mapping_layers
        Width and depth of CHeart's condition mapping network.
    """

    image_size: tuple[int, int] = (64, 64)
    depth: int = 10
    frames: int = 1
    n_classes: int = 4
    latent_dim: int = 64
    channels: tuple[int, ...] = (16, 32, 64)
    depth_strides: tuple[int, ...] = (1, 1, 1)
    fold_slices: bool = False
    res_units: int = 0
    norm: str = "instance"
    cond_dim: int = 0
    disc_channels: int = 32
    disc_layers: int = 3
    hidden: int = 128
    mapping_dim: int = 32
    mapping_layers: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))
        object.__setattr__(self, "channels", tuple(int(v) for v in self.channels))
        object.__setattr__(self, "depth_strides", tuple(int(v) for v in self.depth_strides))
        self.check()

    def check(self) -> None:
        """Raise ``ValueError`` naming the field when the sizes cannot make an exact round trip."""
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ValueError(f"BaselineConfig.image_size must be two positive sizes, got {self.image_size}")
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"BaselineConfig.channels must be positive widths, got {self.channels}")
        if len(self.depth_strides) != len(self.channels) or any(s not in (1, 2) for s in self.depth_strides):
            raise ValueError(
                f"BaselineConfig.depth_strides must give 1 or 2 for each of the {len(self.channels)} levels, "
                f"got {self.depth_strides}"
            )
        if self.fold_slices and any(s != 1 for s in self.depth_strides):
            raise ValueError(
                "BaselineConfig: fold_slices keeps the depth in the channels; depth_strides must be 1, "
                f"got {self.depth_strides}"
            )
        f = 2 ** len(self.channels)
        if any(s % f for s in self.image_size):
            raise ValueError(f"BaselineConfig.image_size {self.image_size} must be divisible by 2**len(channels) = {f}")
        z = int(self.depth)
        for i, s in enumerate(self.depth_strides):
            if s == 2 and z % 2:
                raise ValueError(
                    f"BaselineConfig: depth {self.depth} is odd ({z}) before level {i}, which halves it "
                    f"(depth_strides {self.depth_strides}); the decoder could not give the slices back"
                )
            z //= s
        for name in ("depth", "frames", "latent_dim", "disc_channels", "disc_layers", "hidden"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"BaselineConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("res_units", "cond_dim", "mapping_layers"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"BaselineConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.mapping_dim < 1:
            raise ValueError(f"BaselineConfig.mapping_dim must be >= 1, got {self.mapping_dim}")
        if self.n_classes < 2:
            raise ValueError(f"BaselineConfig.n_classes must be >= 2 (labels with background), got {self.n_classes}")
        if self.norm not in _NORMS:
            raise ValueError(f"BaselineConfig.norm must be one of {sorted(_NORMS)}, got {self.norm!r}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(X, Y, Z)`` of one frame."""
        return (*self.image_size, int(self.depth))  # type: ignore[return-value]

    @property
    def frame_channels(self) -> int:
        """Channels of one frame: image + one entry per class."""
        return 1 + int(self.n_classes)

    @property
    def spatial_dims(self) -> int:
        """2 with ``fold_slices``, else 3."""
        return 2 if self.fold_slices else 3

    @property
    def grid(self) -> tuple[int, ...]:
        """Spatial grid of the networks: ``(X, Y)`` with ``fold_slices``, else ``(X, Y, Z)``."""
        return tuple(self.image_size) if self.fold_slices else self.shape

    def net_channels(self, per_frame: int, frames: int | None = None) -> int:
        """Network channels of ``per_frame`` channels per frame (times the slices when folded) over ``frames``."""
        t = self.frames if frames is None else int(frames)
        return int(per_frame) * t * (int(self.depth) if self.fold_slices else 1)

    @property
    def strides(self) -> list[Any]:
        if self.fold_slices:
            return [2] * len(self.channels)
        return [(2, 2, s) for s in self.depth_strides]

    @property
    def bottom(self) -> tuple[int, ...]:
        """Grid of the coarsest level."""
        f = 2 ** len(self.channels)
        xy = (self.image_size[0] // f, self.image_size[1] // f)
        return xy if self.fold_slices else (*xy, int(self.depth) // int(np.prod(self.depth_strides)))

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, X, Y, Z)`` (one frame) or ``(B, C, X, Y, Z, T)`` -> the networks' layout: ``(B, T*C, X, Y, Z)``
        (channel ``t*C + c``) or, with ``fold_slices``, ``(B, T*C*Z, X, Y)`` (channel ``(t*C + c)*Z + z``)."""
        if x.ndim == 5:
            x = x.unsqueeze(-1)
        if x.ndim != 6:
            raise ValueError(f"pack: expected (B, C, X, Y, Z[, T]), got {tuple(x.shape)}")
        b, c, sx, sy, sz, t = x.shape
        if self.fold_slices:
            return x.permute(0, 5, 1, 4, 2, 3).reshape(b, t * c * sz, sx, sy)
        return x.permute(0, 5, 1, 2, 3, 4).reshape(b, t * c, sx, sy, sz)

    def unpack(self, y: torch.Tensor, channels: int, frames: int | None = None) -> torch.Tensor:
        """Inverse of :meth:`pack`: ``(B, C, X, Y, Z)`` for one frame, ``(B, C, X, Y, Z, T)`` otherwise."""
        t = self.frames if frames is None else int(frames)
        b = y.shape[0]
        sx, sy, sz = self.shape
        if self.fold_slices:
            x = y.reshape(b, t, channels, sz, sx, sy).permute(0, 2, 4, 5, 3, 1)
        else:
            x = y.reshape(b, t, channels, sx, sy, sz).permute(0, 2, 3, 4, 5, 1)
        return x[..., 0] if t == 1 else x

    @property
    def frame_grid(self) -> tuple[int, int, int]:
        """Axis order of one frame inside the packed layout: ``(Z, X, Y)`` folded, else ``(X, Y, Z)``."""
        x, y, z = self.shape
        return (z, x, y) if self.fold_slices else (x, y, z)

    def frames_of(self, y: torch.Tensor, channels: int | None = None) -> torch.Tensor:
        """A packed tensor as the view ``(B, T', C, *frame_grid)`` (no copy; ``T'`` from its size)."""
        c = self.frame_channels if channels is None else int(channels)
        return y.reshape(y.shape[0], -1, c, *self.frame_grid)

    def to_frame_major(self, a: torch.Tensor) -> torch.Tensor:
        """A data tensor ``(B, X, Y, Z[, T])`` -> ``(B, T, *frame_grid)`` (contiguous)."""
        if a.ndim == 4:
            a = a.unsqueeze(-1)
        order = (0, 4, 3, 1, 2) if self.fold_slices else (0, 4, 1, 2, 3)
        return a.permute(*order).contiguous()

    def from_frame_major(self, a: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_frame_major`: ``(B, T, *frame_grid)`` -> ``(B, X, Y, Z[, T])`` (no T when 1)."""
        order = (0, 3, 4, 2, 1) if self.fold_slices else (0, 2, 3, 4, 1)
        out = a.permute(*order)
        return out[..., 0] if out.shape[-1] == 1 else out

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("image_size", "channels", "depth_strides"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BaselineConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"BaselineConfig.from_dict: unknown keys {sorted(unknown)}")
        return cls(**dict(d))


def _level(cfg: BaselineConfig, cin: int, cout: int, stride: Any, *, transposed: bool, last: bool = False) -> nn.Module:
    from monai.networks.blocks import Convolution, ResidualUnit

    norm = _NORMS[cfg.norm]
    dims = cfg.spatial_dims
    conv = Convolution(
        dims,
        cin,
        cout,
        strides=stride,
        kernel_size=3,
        act="PRELU" if not transposed else "RELU",
        norm=norm,
        is_transposed=transposed,
        conv_only=last or (cfg.res_units > 0 and transposed),
    )
    if cfg.res_units == 0 or last:
        return conv
    if transposed:  # an upsampling convolution followed by a residual unit (MONAI Generator's layout)
        return nn.Sequential(
            conv,
            ResidualUnit(dims, cout, cout, subunits=cfg.res_units, act="RELU", norm=norm),
        )
    return ResidualUnit(dims, cin, cout, strides=stride, subunits=cfg.res_units, act="PRELU", norm=norm)


class VolumeEncoder(nn.Module):
    """Strided convolutions over the packed input (``(B, C, X, Y, Z)``, or ``(B, C, X, Y)`` with
    ``fold_slices``), then a linear layer to ``out_features``."""

    def __init__(self, cfg: BaselineConfig, in_channels: int, out_features: int) -> None:
        super().__init__()
        layers, cin = [], int(in_channels)
        for cout, stride in zip(cfg.channels, cfg.strides):
            layers.append(_level(cfg, cin, cout, stride, transposed=False))
            cin = cout
        self.conv = nn.Sequential(*layers)
        self.flat = int(cfg.channels[-1] * np.prod(cfg.bottom))
        self.linear = nn.Linear(self.flat, int(out_features))
        self.in_channels = int(in_channels)
        self.grid = cfg.grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != (self.in_channels, *self.grid):
            raise ValueError(f"VolumeEncoder: expected (B, {self.in_channels}, {self.grid}), got {tuple(x.shape)}")
        return self.linear(self.conv(x).flatten(1))


class VolumeDecoder(nn.Module):
    """A linear layer to the coarsest grid, then transposed convolutions back to ``(B, out, *grid)``."""

    def __init__(self, cfg: BaselineConfig, in_features: int, out_channels: int) -> None:
        super().__init__()
        self.cfg = cfg
        rev = list(reversed(cfg.channels))
        self.start = (rev[0], *cfg.bottom)
        self.linear = nn.Linear(int(in_features), int(np.prod(self.start)))
        layers = []
        strides = list(reversed(cfg.strides))
        for i, stride in enumerate(strides):
            last = i == len(strides) - 1
            cout = int(out_channels) if last else rev[i + 1]
            layers.append(_level(cfg, rev[i], cout, stride, transposed=True, last=last))
        self.conv = nn.Sequential(*layers)
        self.act = nn.PReLU()
        self.in_features = int(in_features)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.ndim != 2 or h.shape[1] != self.in_features:
            raise ValueError(f"VolumeDecoder: expected (B, {self.in_features}), got {tuple(h.shape)}")
        x = self.act(self.linear(h)).reshape(h.shape[0], *self.start)
        return self.conv(x)


def patch_padding(shape: Sequence[int], num_layers: int, kernel: int = 4) -> tuple[int, ...]:
    """Per-axis padding of a MONAI :class:`~monai.networks.nets.PatchDiscriminator` so that no axis of
    ``shape`` shrinks below its kernel: the smallest ``p >= 1`` per axis (1, MONAI's default, wherever
    it works). Raises ``ValueError`` when no padding up to half the kernel works.

    The network is a stride-2 ``kernel``-wide convolution, ``num_layers - 1`` more stride-2 ones and two
    stride-1 ones (the last layer and the output convolution, whose padding MONAI fixes at
    ``(kernel - 1) // 2``); a size ``n`` becomes ``(n + 2p - kernel) // s + 1``.
    """
    out = []
    for n in shape:
        for p in range(1, max(1, kernel // 2) + 1):
            size, ok = int(n), True
            for s in [2] * int(num_layers) + [1]:
                if size + 2 * p < kernel:
                    ok = False
                    break
                size = (size + 2 * p - kernel) // s + 1
            last = (kernel - 1) // 2
            if ok and size + 2 * last >= kernel and (size + 2 * last - kernel) + 1 >= 1:
                out.append(p)
                break
        else:
            raise ValueError(
                f"patch_padding: an axis of size {n} does not survive {num_layers} layers of kernel {kernel}"
            )
    return tuple(out)


class PatchCritic(nn.Module):
    """Patch discriminator (MONAI :class:`~monai.networks.nets.PatchDiscriminator`, batch norm,
    LeakyReLU 0.2) over ``in_channels`` frame channels plus the condition features broadcast as
    constant maps (Mirza & Osindero 2014's conditioning by concatenation); returns the patch logits."""

    def __init__(self, cfg: BaselineConfig, in_channels: int) -> None:
        super().__init__()
        from monai.networks.nets import PatchDiscriminator

        self.cond_dim = int(cfg.cond_dim)
        self.in_channels = int(in_channels)
        self.grid = cfg.grid
        self.padding = patch_padding(self.grid, int(cfg.disc_layers))
        self.net = PatchDiscriminator(
            spatial_dims=cfg.spatial_dims,
            channels=int(cfg.disc_channels),
            in_channels=self.in_channels + self.cond_dim,
            num_layers_d=int(cfg.disc_layers),
            kernel_size=4,
            padding=self.padding,
            norm="BATCH",
        )

    def forward(self, x: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        if tuple(x.shape[1:]) != (self.in_channels, *self.grid):
            raise ValueError(f"PatchCritic: expected (B, {self.in_channels}, {self.grid}), got {tuple(x.shape)}")
        if self.cond_dim:
            if features is None or features.shape != (x.shape[0], self.cond_dim):
                got = None if features is None else tuple(features.shape)
                raise ValueError(f"PatchCritic: expected condition features (B, {self.cond_dim}), got {got}")
            maps = features.reshape(*features.shape, *([1] * len(self.grid))).expand(-1, -1, *x.shape[2:]).to(x.dtype)
            x = torch.cat([x, maps], dim=1)
        return self.net(x)[-1]


class MappingNetwork(nn.Module):
    """Condition mapping MLP in the style of StyleGAN's mapping network (Karras et al. 2019), as CHeart
    embeds its conditions: pixel norm of the input, then ``layers`` Linear + LeakyReLU(0.2) layers.
    ``layers = 0`` is the identity (no mapping)."""

    def __init__(self, in_features: int, width: int, layers: int) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        cin = int(in_features)
        for _ in range(int(layers)):
            mods += [nn.Linear(cin, int(width)), nn.LeakyReLU(0.2)]
            cin = int(width)
        self.net = nn.Sequential(*mods)
        self.out_features = cin

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if not len(self.net):
            return f
        f = f * torch.rsqrt(f.pow(2).mean(dim=1, keepdim=True) + 1e-8)
        return self.net(f)


# ------------------------------------------------------------------------------------------ packing
def condition_maps(features: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Condition features ``(B, F)`` as constant maps ``(B, F, *grid)`` beside a packed tensor ``like``."""
    grid = like.shape[2:]
    return features.reshape(*features.shape, *([1] * len(grid))).expand(-1, -1, *grid).to(like.dtype)


def frame_input(cfg: BaselineConfig, image: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Image ``(B, X, Y, Z[, T])`` in [0, 1] and labels -> packed (image, one-hot labels) input.

    Written straight into the packed order (``(B, T, 1+K, *frame_grid)`` viewed as channels), so no
    copy of the ``1+K``-channel tensor is permuted."""
    img = cfg.to_frame_major(image)
    lab = cfg.to_frame_major(labels).long()
    b, t = img.shape[:2]
    x = torch.zeros(b, t, cfg.frame_channels, *cfg.frame_grid, dtype=img.dtype, device=img.device)
    x[:, :, 0] = img
    x.scatter_(2, (lab + 1).unsqueeze(2), 1.0)
    return x.reshape(b, t * cfg.frame_channels * (cfg.depth if cfg.fold_slices else 1), *cfg.grid)


def finish_output(cfg: BaselineConfig, out: torch.Tensor) -> torch.Tensor:
    """Raw packed network output -> the same with a sigmoid on every image channel (logits kept)."""
    v = cfg.frames_of(out)
    return torch.cat([torch.sigmoid(v[:, :, :1]), v[:, :, 1:]], dim=2).reshape(out.shape)


def critic_input(cfg: BaselineConfig, out: torch.Tensor) -> torch.Tensor:
    """A generator's packed output (image, logits per frame) -> the critic's view (image, softmax)."""
    v = cfg.frames_of(out)
    soft = torch.softmax(v[:, :, 1:].float(), dim=2).to(v.dtype)
    return torch.cat([v[:, :, :1], soft], dim=2).reshape(out.shape)


def split_frames(cfg: BaselineConfig, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed output -> image ``(B, X, Y, Z[, T])`` in [0, 1] and argmax labels (uint8)."""
    v = cfg.frames_of(out)
    image = cfg.from_frame_major(v[:, :, 0].float().clamp(0.0, 1.0))
    labels = cfg.from_frame_major(v[:, :, 1:].max(2).indices.to(torch.uint8))  # max: much faster than argmax here
    return image, labels


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, I))`` averaged over batch and latent dimensions:
    ``-0.5 * mean(1 + logvar - mu^2 - exp(logvar))`` (the form CHeart's loss uses, with its beta)."""
    return -0.5 * torch.mean(1.0 + logvar - mu.pow(2) - logvar.exp())


class SequenceDataset(torch.utils.data.Dataset):
    """Sequences ``(N, X, Y, Z, T)`` (or volumes ``(N, X, Y, Z)``) with labels and optional condition
    features ``(N, F)``; items ``{"image", "labels"[, "cond"]}`` (no copy of the arrays)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, features: np.ndarray | None = None) -> None:
        if images.ndim not in (4, 5) or labels.shape != images.shape:
            raise ValueError(
                f"SequenceDataset: images and labels must be equal (N, X, Y, Z[, T]), got {images.shape}, "
                f"{labels.shape}"
            )
        if features is not None and (np.ndim(features) != 2 or len(features) != len(images)):
            raise ValueError(f"SequenceDataset: features must be (N={len(images)}, F), got {np.shape(features)}")
        self.images, self.labels = images, labels
        self.features = None if features is None else np.asarray(features, np.float32)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(self.images[i], dtype=np.float32)),
            "labels": torch.from_numpy(np.ascontiguousarray(self.labels[i], dtype=np.int64)),
        }
        if self.features is not None:
            item["cond"] = torch.from_numpy(self.features[i])
        return item


@torch.no_grad()
def generate(
    model: nn.Module,
    seeds: Sequence[int],
    features: np.ndarray | None = None,
    *,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    noise: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``len(seeds)`` volumes or sequences from a baseline (its ``sample(z, features)``).

    Sample ``i``'s latent is drawn from ``seeds[i]`` alone (or taken from ``noise``); ``features``
    ``(N, F)`` are the encoded conditions of a conditional model. Returns images ``(N, X, Y, Z[, T])``
    float32 in [0, 1] and labels uint8.
    """
    from ...utils import resolve_device
    from ..diffusion import initial_noise

    cfg: BaselineConfig = model.config
    dev = resolve_device(device)
    z_all = noise if noise is not None else initial_noise(list(seeds), (cfg.latent_dim,))
    n = len(z_all)
    if cfg.cond_dim:
        if features is None or np.shape(features) != (n, cfg.cond_dim):
            raise ValueError(
                f"generate: a conditional model needs features ({n}, {cfg.cond_dim}), got {np.shape(features)}"
            )
    if int(batch_size) < 1:
        raise ValueError(f"generate: batch_size must be >= 1, got {batch_size}")
    model.to(dev).eval()
    images, labels = [], []
    for s in range(0, n, int(batch_size)):
        z = z_all[s : s + int(batch_size)].to(dev)
        f = (
            None
            if not cfg.cond_dim
            else torch.as_tensor(np.asarray(features[s : s + int(batch_size)]), dtype=torch.float32, device=dev)
        )
        img, lab = split_frames(cfg, model.sample(z, f))
        images.append(img.cpu().numpy())
        labels.append(lab.cpu().numpy())
    model.to("cpu")
    return np.concatenate(images).astype(np.float32), np.concatenate(labels)
