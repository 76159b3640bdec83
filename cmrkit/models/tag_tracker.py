"""Learned tag tracking of single points: a spatiotemporal patch in, the point's trajectory out.

After Loecher, Hannum, Perotti & Ennis (*Med Image Anal* 2021, "Using synthetic data generation to
train a cardiac motion tag tracking neural network"), who train a network on synthetic tagging only
and track in vivo tags with a tag-position error of -0.02 px (95 % range -0.73 to +0.69 px): the input
is a square patch of ``patch`` x ``patch`` pixels centred on a point's frame-0 position, cut from
every frame of the sequence at the same place (an Eulerian window; the point moves inside it), and
the output is the point's displacement from its frame-0 position in every frame.

Network
    A MONAI :class:`~monai.networks.nets.Regressor` (residual units, stride-2 down-sampling, instance
    norm, a final linear layer) on the frames stacked as channels, ``(T, P, P)`` (the layout of
    Ferdian et al.'s and the thesis' tagging inputs). Output ``(T, 3)`` per point: displacement
    ``(dx, dy)`` in pixels (the network's raw output times :attr:`TagTrackerConfig.scale_px`) and
    ``log sigma``, the log of the expected displacement error of that frame, so that downstream
    fits can weight frames whose tags have faded less. Frame 0 is the reference (displacement 0).
Input convention (:func:`extract_patches`)
    Bilinear samples at ``x0 + (-(P-1)/2 ... (P-1)/2)`` in x and y (sub-pixel centred on the point,
    zeros outside the image) of every frame, divided by the mean of the frame-0 patch (the scale of
    magnitude images is arbitrary), clipped to [0, 4]. Frames beyond ``T`` are dropped, missing ones
    (all zero, e.g. Ferdian's zero-filled trailing frames) are passed as zeros.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "TagTrackerConfig",
    "TagTrackerNet",
    "TagRefinerConfig",
    "TagRefinerNet",
    "extract_patches",
    "normalise_patches",
    "sample_patches",
    "normalise_pairs",
]


@dataclass(frozen=True)
class TagTrackerConfig:
    """Sizes of :class:`TagTrackerNet`.

    Attributes
    ----------
    frames
        Frames per sequence ``T`` (UK Biobank tagging and the kit's phantom: 20).
    patch
        Patch side ``P`` in pixels (odd or even; the point sits at the patch centre).
    channels, strides
        Channels and strides of the Regressor's residual units.
    num_res_units
        Convolutions per residual unit.
    scale_px
        Output scaling: the network predicts displacement / ``scale_px``.
    period_px
        Tag period on the network's sampling grid: patches are sampled every ``period / period_px``
        image pixels (``period`` = the sequence's tag period), so every acquisition reaches the
        network with the same tag period whatever its pixel size and tag spacing, and displacements
        are in units of that grid (times the same factor back in image pixels).
    """

    frames: int = 20
    patch: int = 32
    channels: tuple[int, ...] = (32, 64, 128, 128)
    strides: tuple[int, ...] = (2, 2, 2, 1)
    num_res_units: int = 2
    scale_px: float = 4.0
    period_px: float = 4.4

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"], d["strides"] = list(self.channels), list(self.strides)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TagTrackerConfig:
        d = dict(d)
        d["channels"], d["strides"] = tuple(d["channels"]), tuple(d["strides"])
        return cls(**d)


class TagTrackerNet(nn.Module):
    """``(B, T, P, P)`` normalised patches -> ``(B, T, 2)`` displacement (px) and ``(B, T)`` log sigma."""

    def __init__(self, **config: Any) -> None:
        super().__init__()
        cfg = TagTrackerConfig.from_dict({**TagTrackerConfig().to_dict(), **config})
        if len(cfg.channels) != len(cfg.strides) or not cfg.channels:
            raise ValueError(f"channels {cfg.channels} and strides {cfg.strides} must be non-empty and of equal length")
        if cfg.frames < 2 or cfg.patch < 8:
            raise ValueError(f"need frames >= 2 and patch >= 8, got {cfg.frames}, {cfg.patch}")
        from monai.networks.nets import Regressor

        self.config = cfg
        self.net = Regressor(
            in_shape=(cfg.frames, cfg.patch, cfg.patch),
            out_shape=(cfg.frames, 3),
            channels=cfg.channels,
            strides=cfg.strides,
            num_res_units=cfg.num_res_units,
        )

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TagTrackerNet:
        return cls(**config)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        if x.ndim != 4 or tuple(x.shape[1:]) != (cfg.frames, cfg.patch, cfg.patch):
            raise ValueError(f"expected (B, {cfg.frames}, {cfg.patch}, {cfg.patch}) patches, got {tuple(x.shape)}")
        out = self.net(x)
        disp = out[..., :2] * cfg.scale_px
        disp = disp - disp[:, :1]  # frame 0 is the reference
        log_sigma = out[..., 2].clamp(-6.0, 4.0)
        return disp, log_sigma


def extract_patches(
    images: np.ndarray, points: np.ndarray, patch: int, frames: int | None = None, spacing: float = 1.0
) -> np.ndarray:
    """Eulerian patches ``(N, T, P, P)`` float32 around ``points (2, N)`` (x, y) in every frame of
    ``images (T, H, W)``, sampled every ``spacing`` pixels: bilinear, zero outside, not normalised
    (:func:`normalise_patches`).

    With ``frames`` given, the sequence is cut or zero-padded to that many frames.
    """
    from scipy import ndimage

    im = np.asarray(images, np.float32)
    pts = np.asarray(points, float)
    if im.ndim != 3:
        raise ValueError(f"images must be (T, H, W), got shape {im.shape}")
    if pts.ndim != 2 or pts.shape[0] != 2:
        raise ValueError(f"points must be (2, N), got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("points contain NaN/inf")
    t_n = im.shape[0] if frames is None else int(frames)
    off = (np.arange(patch, dtype=float) - (patch - 1) / 2.0) * float(spacing)
    oy, ox = np.meshgrid(off, off, indexing="ij")
    ys = (pts[1][:, None, None] + oy[None]).ravel()
    xs = (pts[0][:, None, None] + ox[None]).ravel()
    out = np.zeros((pts.shape[1], t_n, patch, patch), np.float32)
    for t in range(min(t_n, im.shape[0])):
        if not im[t].any():
            continue
        v = ndimage.map_coordinates(im[t], [ys, xs], order=1, mode="constant", cval=0.0)
        out[:, t] = v.reshape(pts.shape[1], patch, patch)
    return out


def normalise_patches(p: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Divide every patch ``(..., T, P, P)`` by the mean of its frame 0, clip to [0, 4]."""
    if isinstance(p, torch.Tensor):
        m = p[..., 0, :, :].mean(dim=(-2, -1), keepdim=True).unsqueeze(-3).clamp_min(1e-6)
        return (p / m).clamp(0.0, 4.0)
    m = np.maximum(p[..., 0, :, :].mean(axis=(-2, -1), keepdims=True)[..., None, :, :], 1e-6)
    return np.clip(p / m, 0.0, 4.0).astype(np.float32)


@dataclass(frozen=True)
class TagRefinerConfig:
    """Sizes of :class:`TagRefinerNet` (fields as :class:`TagTrackerConfig`)."""

    patch: int = 32
    channels: tuple[int, ...] = (32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 2
    scale_px: float = 1.0
    period_px: float = 4.4

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"], d["strides"] = list(self.channels), list(self.strides)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TagRefinerConfig:
        d = dict(d)
        d["channels"], d["strides"] = tuple(d["channels"]), tuple(d["strides"])
        return cls(**d)


class TagRefinerNet(nn.Module):
    """Lagrangian refinement of one point in one frame: ``(B, 2, P, P)`` = [frame-0 patch centred on the
    point's frame-0 position, frame-t patch centred on its current estimate] (each divided by its own
    mean) -> ``(B, 2)`` correction of the estimate (px) and ``(B,)`` log sigma."""

    def __init__(self, **config: Any) -> None:
        super().__init__()
        cfg = TagRefinerConfig.from_dict({**TagRefinerConfig().to_dict(), **config})
        if len(cfg.channels) != len(cfg.strides) or not cfg.channels or cfg.patch < 8:
            raise ValueError(f"bad refiner sizes: {cfg}")
        from monai.networks.nets import Regressor

        self.config = cfg
        self.net = Regressor(
            in_shape=(2, cfg.patch, cfg.patch),
            out_shape=(3,),
            channels=cfg.channels,
            strides=cfg.strides,
            num_res_units=cfg.num_res_units,
        )

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TagRefinerNet:
        return cls(**config)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.config.patch
        if x.ndim != 4 or tuple(x.shape[1:]) != (2, p, p):
            raise ValueError(f"expected (B, 2, {p}, {p}) patch pairs, got {tuple(x.shape)}")
        out = self.net(x)
        return out[:, :2] * self.config.scale_px, out[:, 2].clamp(-6.0, 4.0)


def sample_patches(image: np.ndarray, points: np.ndarray, patch: int, spacing: float = 1.0) -> np.ndarray:
    """Bilinear ``(N, P, P)`` patches of one frame ``image (H, W)`` centred on ``points (2, N)``, sampled
    every ``spacing`` pixels (zero outside)."""
    from scipy import ndimage

    pts = np.asarray(points, float)
    off = (np.arange(patch, dtype=float) - (patch - 1) / 2.0) * float(spacing)
    oy, ox = np.meshgrid(off, off, indexing="ij")
    ys = (pts[1][:, None, None] + oy[None]).ravel()
    xs = (pts[0][:, None, None] + ox[None]).ravel()
    v = ndimage.map_coordinates(np.asarray(image, np.float32), [ys, xs], order=1, mode="constant", cval=0.0)
    return v.reshape(pts.shape[1], patch, patch)


def normalise_pairs(p: np.ndarray) -> np.ndarray:
    """Divide each of the two patches of ``(..., 2, P, P)`` by its own mean, clip to [0, 4]."""
    m = np.maximum(p.mean(axis=(-2, -1), keepdims=True), 1e-6)
    return np.clip(p / m, 0.0, 4.0).astype(np.float32)
