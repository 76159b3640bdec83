"""Cardiac short-axis segmenter: LV blood pool / LV myocardium / RV on single 2D slices.

The thesis (Cheng 2025, §4.3.7) checks reconstructed cine by segmenting original and
reconstructed images with the ukbb_cardiac network (Bai et al. 2018) and comparing the two
segmentations with Dice and Hausdorff distance. UK Biobank weights are not redistributable, so the
kit trains its own small segmenter on the phantom cohort instead and keeps it as a reusable
component (chapters 5–6 measure generated volumes with it).

Network and loss
    A 2D MONAI :class:`~monai.networks.nets.UNet` (1 input channel, 4 output classes in the
    convention of :mod:`cmrkit.labels`: 0 background, 1 LV blood pool, 2 LV myocardium, 3 RV blood
    pool; residual units, stride-2 down-sampling) trained with MONAI
    :class:`~monai.losses.DiceCELoss` (softmax, one-hot targets) through the shared loop
    :func:`cmrkit.train.fit`.
Input convention
    Every slice is normalised on its own to [0, 1] by clipping at its 0.5th and 99.5th
    percentiles (:func:`normalise_slices`). A slice whose size differs from the network size
    ``S = config.image_size`` is resized so that its longer side is ``S`` (bilinear with
    anti-aliasing, aspect ratio kept) and zero-padded symmetrically to ``S x S``; predicted labels
    are cropped back and resized to the input grid with nearest-neighbour interpolation
    (:func:`to_network_grid`, :func:`from_network_grid`). No rotation or re-orientation is done.
Augmentation
    Optional, on the fly, batched torch operations (:func:`augment_batch`) whose random numbers
    come from the torch generator that :func:`cmrkit.train.fit` re-seeds from its ``seed`` at
    every epoch (deterministic per seed, reproduced by an exact resume): flips/transposes (the
    eight symmetries of the square, so no prior on which side the RV sits), small rotations, zoom
    and shift (bilinear for images, nearest for labels), and intensity gamma, contrast, a smooth
    multiplicative bias field and Gaussian noise. They target the phantom-to-real gap (other
    contrast, coil shading, orientation, noise).
Sizes, not chapters
    The segmenter takes its sizes (:class:`SegmenterConfig`) and arrays; the profiles give it its
    own section (``segmenter:``), which a chapter maps with
    ``SegmenterConfig.from_dict(cfg.segmenter)``.
    Building training slices from subject records, segmenting volumes of any resolution and the
    real-data (M&Ms) evaluation live in :mod:`cmrkit.segment`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..labels import LABELS, N_CLASSES
from ..utils import resolve_device, resolve_path

__all__ = [
    "AugmentParams",
    "SegmenterConfig",
    "Segmenter",
    "build_network",
    "normalise_slices",
    "to_network_grid",
    "from_network_grid",
    "augment_batch",
    "keep_largest_component",
    "slices_from_volumes",
    "toy_slices",
]

ArrayLike = Any
_ARTEFACT_EXTRA = {"kind": "cmrkit.models.segmenter.Segmenter", "labels": {str(k): v for k, v in LABELS.items()}}


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AugmentParams:
    """Ranges of the on-the-fly augmentation (each sample draws its own values).

    Attributes
    ----------
    p_flip
        Probability of each of: flip rows, flip columns, transpose (together: the 8 symmetries
        of the square, with ``p_flip = 0.5`` all equally likely).
    max_rotate_deg
        Rotation angle drawn from U(-max, max) degrees.
    zoom
        Isotropic zoom factor drawn log-uniformly in ``[zoom[0], zoom[1]]`` (> 1 enlarges).
    max_shift
        Translation drawn from U(-max, max) as a fraction of the half-width, per axis.
    gamma
        Exponent of ``x -> x**g`` drawn log-uniformly in ``[gamma[0], gamma[1]]``.
    contrast
        Factor ``c`` of ``x -> mean + c (x - mean)`` drawn uniformly in the range.
    bias_field
        Coefficients of a quadratic polynomial ``b(u, v)`` in normalised coordinates drawn from
        U(-bias_field, bias_field); the image is multiplied by ``exp(b)`` (as MONAI RandBiasField).
    max_noise_std
        Gaussian noise standard deviation drawn from U(0, max) (image in [0, 1]).
    p_intensity
        Probability that a sample receives the intensity part (gamma, contrast, bias, noise).
    """

    p_flip: float = 0.5
    max_rotate_deg: float = 15.0
    zoom: tuple[float, float] = (0.85, 1.2)
    max_shift: float = 0.12
    gamma: tuple[float, float] = (0.6, 1.6)
    contrast: tuple[float, float] = (0.75, 1.3)
    bias_field: float = 0.3
    max_noise_std: float = 0.06
    p_intensity: float = 0.9

    def __post_init__(self) -> None:
        for name in ("p_flip", "p_intensity"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"AugmentParams.{name} must be in [0, 1], got {v}")
        for name in ("zoom", "gamma", "contrast"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"AugmentParams.{name} must be (lo, hi) with 0 < lo <= hi, got {(lo, hi)}")
        for name in ("max_rotate_deg", "max_shift", "bias_field", "max_noise_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"AugmentParams.{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class SegmenterConfig:
    """Hyperparameters of :class:`Segmenter`.

    Attributes
    ----------
    image_size
        Network input size ``S`` (slices are ``S x S``); every down-sampling stride must divide it.
    channels, strides, num_res_units
        MONAI UNet arguments; ``strides`` defaults to 2 between consecutive ``channels``.
    lr, weight_decay, epochs, batch_size
        AdamW optimiser and loop settings passed to :func:`cmrkit.train.fit`.
    augment
        Whether :meth:`Segmenter.fit` augments training batches (:func:`augment_batch`).
    augment_params
        Ranges of the augmentation.
    pixel_mm
        In-plane pixel size (mm) of the slices *as the network saw them*; set by
        :meth:`Segmenter.fit` when its ``pixel_mm`` is given and used by
        :func:`cmrkit.segment.segment_volume_at_resolution` to resample real images to the training
        resolution. ``None`` = unknown.
    """

    image_size: int = 64
    channels: tuple[int, ...] = (8, 16, 32)
    strides: tuple[int, ...] | None = None
    num_res_units: int = 2
    lr: float = 1e-3
    weight_decay: float = 1e-5
    epochs: int = 3
    batch_size: int = 16
    augment: bool = True
    augment_params: AugmentParams = field(default_factory=AugmentParams)
    pixel_mm: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if len(self.channels) < 2:
            raise ValueError(f"SegmenterConfig.channels needs at least 2 entries, got {self.channels}")
        strides = (2,) * (len(self.channels) - 1) if self.strides is None else tuple(int(s) for s in self.strides)
        if len(strides) != len(self.channels) - 1:
            raise ValueError(
                f"SegmenterConfig.strides must have len(channels) - 1 = {len(self.channels) - 1} entries, got {strides}"
            )
        object.__setattr__(self, "strides", strides)
        if isinstance(self.augment_params, Mapping):
            ap = dict(self.augment_params)
            for k in ("zoom", "gamma", "contrast"):
                if k in ap:
                    ap[k] = tuple(ap[k])
            object.__setattr__(self, "augment_params", AugmentParams(**ap))
        factor = int(np.prod(strides))
        if self.image_size <= 0 or self.image_size % factor:
            raise ValueError(
                f"SegmenterConfig.image_size={self.image_size} must be a positive multiple of the total stride {factor}"
            )
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"SegmenterConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"SegmenterConfig.lr must be > 0, got {self.lr}")
        if self.pixel_mm is not None and self.pixel_mm <= 0:
            raise ValueError(f"SegmenterConfig.pixel_mm must be > 0 or None, got {self.pixel_mm}")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists, numbers, bools) for checkpoints and JSON sidecars."""
        d = dataclasses.asdict(self)
        d["channels"] = list(d["channels"])
        d["strides"] = list(d["strides"])
        d["augment_params"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in d["augment_params"].items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SegmenterConfig:
        """Build from a mapping of the field names: :meth:`to_dict`'s output (checkpoints) or a
        profile's ``segmenter:`` section (``SegmenterConfig.from_dict(cfg.segmenter)``); an unknown
        key is an error naming it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"SegmenterConfig.from_dict: unknown keys {sorted(unknown)}")
        return cls(**dict(d))


def build_network(config: SegmenterConfig, *, seed: int | None = 0) -> torch.nn.Module:
    """The MONAI 2D UNet of ``config`` (1 -> 4 channels), with weights initialised from ``seed``.

    The global torch RNG is forked (and restored) around the construction, so building a network
    never changes the caller's random state.
    """
    from monai.networks.nets import UNet

    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(int(seed))
        return UNet(
            spatial_dims=2,
            in_channels=1,
            out_channels=N_CLASSES,
            channels=config.channels,
            strides=config.strides,
            num_res_units=config.num_res_units,
        )


# --------------------------------------------------------------------------------------------
# geometry and intensity helpers
# --------------------------------------------------------------------------------------------
def normalise_slices(images: ArrayLike, lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """Normalise each 2D slice of ``images`` (..., H, W) to [0, 1] independently.

    ``x -> clip((x - p_lower) / (p_upper - p_lower), 0, 1)`` with the slice's percentiles; a
    constant slice becomes all zeros. Returns float32.
    """
    x = np.asarray(images, dtype=np.float32)
    if x.ndim < 2:
        raise ValueError(f"images must have at least 2 dimensions (H, W), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("images contain NaN or infinite values")
    flat = x.reshape(-1, x.shape[-2] * x.shape[-1])
    lo = np.percentile(flat, lower, axis=1, keepdims=True)
    hi = np.percentile(flat, upper, axis=1, keepdims=True)
    span = hi - lo
    out = np.where(span > 0, (flat - lo) / np.where(span > 0, span, 1.0), 0.0)
    return np.clip(out, 0.0, 1.0).astype(np.float32).reshape(x.shape)


def _fit_shape(h: int, w: int, size: int) -> tuple[int, int]:
    s = size / max(h, w)
    return max(1, min(size, round(h * s))), max(1, min(size, round(w * s)))


def to_network_grid(x: torch.Tensor, size: int, *, mode: str) -> torch.Tensor:
    """Resize (N, C, H, W) so that the longer side is ``size`` and zero-pad to ``size x size``.

    ``mode="bilinear"`` (images, anti-aliased when shrinking) or ``"nearest"`` (labels; uses
    ``nearest-exact``, i.e. pixel-centre sampling). Identity when ``H == W == size``.
    Padding is symmetric with the extra pixel (odd difference) after the image.
    """
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    nh, nw = _fit_shape(h, w, size)
    if (nh, nw) != (h, w):
        if mode == "bilinear":
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=(nh < h or nw < w))
        elif mode == "nearest":
            x = F.interpolate(x.float(), size=(nh, nw), mode="nearest-exact").to(x.dtype)
        else:
            raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    ph, pw = size - nh, size - nw
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


def from_network_grid(y: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`to_network_grid` for label maps (N, C, S, S) -> (N, C, H, W), nearest."""
    size = y.shape[-1]
    h, w = shape
    if (h, w) == (size, size):
        return y
    nh, nw = _fit_shape(h, w, size)
    ph, pw = size - nh, size - nw
    y = y[..., ph // 2 : ph // 2 + nh, pw // 2 : pw // 2 + nw]
    if (nh, nw) != (h, w):
        y = F.interpolate(y.float(), size=(h, w), mode="nearest-exact").to(y.dtype)
    return y


def _uniform(n: int, lo: float, hi: float, g: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=device)


def augment_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    generator: torch.Generator | None,
    params: AugmentParams | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomly augment a batch; every random number comes from ``generator``.

    Parameters
    ----------
    images
        (B, 1, H, W) float in [0, 1].
    labels
        (B, 1, H, W) integer label maps.
    generator
        Seeded generator on the device of ``images`` (equal seeds give equal batches), or None
        for torch's default generator (what :meth:`Segmenter.fit` uses: :func:`cmrkit.train.fit`
        re-seeds it from its ``seed`` at every epoch).
    params
        Ranges (default :class:`AugmentParams`).

    Returns
    -------
    images, labels
        Same shapes and dtypes. Geometry: one affine map per sample, ``grid_sample`` bilinear for
        images and nearest for labels, zeros outside. Intensity: ``x**gamma``, contrast about the
        sample mean, multiplicative ``exp(quadratic bias)``, additive Gaussian noise, then the
        sample is rescaled to [0, 1] by its 99.5th percentile (as :func:`normalise_slices`);
        samples that skip the intensity part (probability ``1 - p_intensity``) are only resampled.
    """
    p = params or AugmentParams()
    if images.ndim != 4 or images.shape[1] != 1 or labels.shape != images.shape:
        raise ValueError(
            f"augment_batch expects images and labels of equal shape (B, 1, H, W); got {tuple(images.shape)}"
            f" and {tuple(labels.shape)}"
        )
    b, _, h, w = images.shape
    dev = images.device
    g = generator
    # --- geometry: theta maps output normalised coords to input coords
    ang = torch.deg2rad(_uniform(b, -p.max_rotate_deg, p.max_rotate_deg, g, dev))
    zoom = torch.exp(_uniform(b, math.log(p.zoom[0]), math.log(p.zoom[1]), g, dev))
    flip_r = torch.where(torch.rand(b, generator=g, device=dev) < p.p_flip, -1.0, 1.0)
    flip_c = torch.where(torch.rand(b, generator=g, device=dev) < p.p_flip, -1.0, 1.0)
    transpose = torch.rand(b, generator=g, device=dev) < p.p_flip
    shift = _uniform(2 * b, -p.max_shift, p.max_shift, g, dev).view(b, 2)
    cos, sin = torch.cos(ang) / zoom, torch.sin(ang) / zoom
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (B, 2, 2)
    flip = torch.diag_embed(torch.stack([flip_c, flip_r], -1))  # grid x = columns, y = rows
    swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]], device=dev)
    perm = torch.where(transpose[:, None, None], swap, torch.eye(2, device=dev))
    a = rot @ flip @ perm
    theta = torch.cat([a, shift[:, :, None]], dim=2)
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
    x = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = F.grid_sample(labels.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    y = y.round().to(labels.dtype)
    # --- intensity
    do = (torch.rand(b, generator=g, device=dev) < p.p_intensity).float()[:, None, None, None]
    gam = torch.exp(_uniform(b, math.log(p.gamma[0]), math.log(p.gamma[1]), g, dev))[:, None, None, None]
    con = _uniform(b, p.contrast[0], p.contrast[1], g, dev)[:, None, None, None]
    coef = _uniform(6 * b, -p.bias_field, p.bias_field, g, dev).view(b, 6, 1, 1)
    sigma = _uniform(b, 0.0, p.max_noise_std, g, dev)[:, None, None, None]
    noise = torch.randn(x.shape, generator=g, device=dev)
    xi = x.clamp(0, 1) ** gam
    mean = xi.mean(dim=(2, 3), keepdim=True)
    xi = mean + con * (xi - mean)
    vv, uu = torch.meshgrid(torch.linspace(-1, 1, h, device=dev), torch.linspace(-1, 1, w, device=dev), indexing="ij")
    basis = torch.stack([torch.ones_like(uu), uu, vv, uu * vv, uu**2, vv**2])[None]  # (1, 6, H, W)
    bias = torch.exp((coef * basis).sum(1, keepdim=True))
    xi = xi * bias + sigma * noise
    hi = torch.quantile(xi.flatten(1), 0.995, dim=1).clamp_min(1e-6)[:, None, None, None]
    xi = (xi.clamp_min(0) / hi).clamp(0, 1)
    x = do * xi + (1 - do) * x
    return x.to(images.dtype), y


def keep_largest_component(
    labels: np.ndarray, classes: Sequence[int] = tuple(LABELS), *, spatial_dims: int = 2
) -> np.ndarray:
    """Keep only the largest connected component of each class in every item of ``labels``.

    Items are the trailing ``spatial_dims`` axes: 2 -> each (H, W) slice of (..., H, W); 3 -> each
    (A, B, C) volume of (..., A, B, C). Uses MONAI
    :class:`~monai.transforms.KeepLargestConnectedComponent` (independent per class, full
    connectivity); removed voxels become background.
    """
    from monai.transforms import KeepLargestConnectedComponent

    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    lab = np.asarray(labels)
    if lab.ndim < spatial_dims:
        raise ValueError(f"labels needs at least {spatial_dims} axes, got shape {lab.shape}")
    lcc = KeepLargestConnectedComponent(applied_labels=list(classes), is_onehot=False, independent=True)
    flat = lab.reshape(-1, 1, *lab.shape[lab.ndim - spatial_dims :])
    out = np.stack([np.asarray(lcc(torch.as_tensor(s))) for s in flat]) if len(flat) else flat
    return out.reshape(lab.shape).astype(lab.dtype)


# --------------------------------------------------------------------------------------------
# training-set builders
# --------------------------------------------------------------------------------------------
def slices_from_volumes(
    images: Sequence[ArrayLike],
    labels: Sequence[ArrayLike | Mapping[int, ArrayLike]],
    *,
    empty_slices: str = "keep",
    return_index: bool = False,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut cine volumes into a 2D training set of labelled short-axis slices.

    Parameters
    ----------
    images
        One array per subject, (X, Y, Z) or (X, Y, Z, T) (all subjects the same in-plane size).
    labels
        Per subject either an array of the same shape as its image (phantom: every frame labelled;
        a frame whose whole volume is background counts as *unlabelled* and is skipped, so a 4D
        array with only ED and ES filled in also works), or a mapping ``{frame: (X, Y, Z) array}``
        for a 4D image (real data labelled at ED/ES only).
    empty_slices
        ``"keep"`` (default) keeps slices of labelled frames that contain no heart (the network must
        learn to predict background above the base/below the apex); ``"drop"`` removes them.
    return_index
        Also return an (N, 3) int array of (subject, z, t) per slice (t = 0 for 3D images).

    Returns
    -------
    images : (N, X, Y) float32, labels : (N, X, Y) uint8[, index : (N, 3) int64]
    """
    if len(images) != len(labels):
        raise ValueError(f"images and labels must have the same length, got {len(images)} and {len(labels)}")
    if empty_slices not in ("keep", "drop"):
        raise ValueError(f"empty_slices must be 'keep' or 'drop', got {empty_slices!r}")
    xs, ys, idx = [], [], []
    plane: tuple[int, int] | None = None
    for i, (img, lab) in enumerate(zip(images, labels)):
        img = np.asarray(img)
        if img.ndim not in (3, 4):
            raise ValueError(f"images[{i}] must be (X, Y, Z) or (X, Y, Z, T), got shape {img.shape}")
        if plane is None:
            plane = img.shape[:2]
        elif img.shape[:2] != plane:
            raise ValueError(f"images[{i}] in-plane size {img.shape[:2]} differs from images[0] {plane}")
        img4 = img if img.ndim == 4 else img[..., None]
        if isinstance(lab, Mapping):
            if img.ndim != 4:
                raise ValueError(f"labels[{i}] is a frame mapping, which needs a 4D image; images[{i}] is 3D")
            frames = {int(t): np.asarray(v) for t, v in lab.items()}
        else:
            lab = np.asarray(lab)
            if lab.shape != img.shape:
                raise ValueError(f"labels[{i}] shape {lab.shape} differs from images[{i}] shape {img.shape}")
            lab4 = lab if lab.ndim == 4 else lab[..., None]
            frames = {t: lab4[..., t] for t in range(lab4.shape[-1])}
        for t, lt in sorted(frames.items()):
            if not 0 <= t < img4.shape[-1]:
                raise ValueError(f"labels[{i}] frame {t} outside images[{i}] with {img4.shape[-1]} frames")
            if lt.shape != img4.shape[:3]:
                raise ValueError(f"labels[{i}] frame {t} shape {lt.shape} differs from image frame {img4.shape[:3]}")
            if not np.any(lt):
                continue  # unlabelled frame
            if np.any((lt < 0) | (lt > 3) | (lt != np.round(lt))):
                raise ValueError(f"labels[{i}] frame {t} has values outside {{0, 1, 2, 3}}")
            for z in range(lt.shape[2]):
                if empty_slices == "drop" and not np.any(lt[:, :, z]):
                    continue
                xs.append(img4[:, :, z, t].astype(np.float32))
                ys.append(lt[:, :, z].astype(np.uint8))
                idx.append((i, z, t))
    if not xs:
        raise ValueError("slices_from_volumes: no labelled slice found (all label volumes are background)")
    out = (np.stack(xs), np.stack(ys))
    return (*out, np.asarray(idx, dtype=np.int64)) if return_index else out


def toy_slices(
    n: int, size: int = 64, *, rng: np.random.Generator | int | None = None, noise: float = 0.08
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic short-axis-like slices for tests and benchmarks (not anatomy).

    Each slice holds an elliptical LV blood pool (label 1, bright) inside a myocardial ring
    (label 2, dark), an RV crescent (label 3, bright) hugging the ring on a random side, on a
    textured background, with Gaussian noise of std ``noise``. Returns ``(n, size, size)`` float32
    images in about [0, 1] and uint8 labels.
    """
    rng = np.random.default_rng(rng)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    images = np.empty((n, size, size), np.float32)
    labels = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        cy, cx = 0.5 + rng.uniform(-0.08, 0.08, 2)
        r_lv = rng.uniform(0.08, 0.14)
        wall = rng.uniform(0.06, 0.09)
        ecc = rng.uniform(0.85, 1.15)
        phi = rng.uniform(0, 2 * np.pi)
        c, s = np.cos(phi), np.sin(phi)
        u, v = (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c
        rho = np.sqrt((u * ecc) ** 2 + (v / ecc) ** 2)
        lv, myo = rho < r_lv, (rho >= r_lv) & (rho < r_lv + wall)
        # RV: an ellipse centred beside the LV, minus the LV epicardial disc
        rv_d = r_lv + wall + rng.uniform(0.0, 0.04)
        ru, rv_ = r_lv * rng.uniform(1.1, 1.6), r_lv * rng.uniform(1.6, 2.3)
        rv = (((u - rv_d) / ru) ** 2 + (v / rv_) ** 2 < 1) & (rho >= r_lv + wall + 0.01)
        lab = np.zeros((size, size), np.uint8)
        lab[rv], lab[myo], lab[lv] = 3, 2, 1
        bg = 0.15 + 0.1 * np.sin(2 * np.pi * (rng.uniform(1, 3) * xx + rng.uniform(0, 1))) * np.cos(
            2 * np.pi * rng.uniform(1, 3) * yy
        )
        img = bg.copy()
        img[lab == 1] = rng.uniform(0.75, 0.95)
        img[lab == 3] = rng.uniform(0.65, 0.9)
        img[lab == 2] = rng.uniform(0.25, 0.4)
        img = img + noise * rng.standard_normal(img.shape)
        images[i], labels[i] = img.astype(np.float32), lab
    return images, labels


# --------------------------------------------------------------------------------------------
# the segmenter
# --------------------------------------------------------------------------------------------
class _SliceSet(torch.utils.data.Dataset):
    """(image (1, S, S) float32, label (1, S, S) int64) pairs already on the network grid."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]


class _SegLoss:
    """Loss callable for :func:`cmrkit.train.fit`: ``(model, (x, y)) -> (DiceCE loss, logs)``.

    While the model is in training mode the batch is first augmented (:func:`augment_batch`) with
    the default torch generator, which :func:`cmrkit.train.fit` re-seeds at every epoch from its
    ``seed`` inside ``fork_rng``: the augmentation stream is therefore a function of the seed and
    the epoch, and an exact resume reproduces it. Validation batches (eval mode) are not augmented.
    Logs: hard Dice per class on the batch (1 when a class is absent from both maps).
    """

    def __init__(self, params: AugmentParams | None) -> None:
        from monai.losses import DiceCELoss

        self.dice_ce = DiceCELoss(softmax=True, to_onehot_y=True)
        self.params = params

    def __call__(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, y = batch
        if model.training and self.params is not None:
            with torch.autocast(x.device.type, enabled=False):  # keep the affine maps in float32
                x, y = augment_batch(x, y, None, self.params)
        logits = model(x)
        loss = self.dice_ce(logits, y)
        with torch.no_grad():
            pred = logits.argmax(1, keepdim=True)
            logs = {}
            for lab, name in LABELS.items():
                p, g = pred == lab, y == lab
                inter, den = (p & g).sum().float(), (p.sum() + g.sum()).float()
                logs[f"dice_{name}"] = torch.where(den > 0, 2 * inter / den.clamp_min(1), torch.ones_like(den))
        return loss, logs


class Segmenter:
    """A 2D MONAI UNet for short-axis LV / myocardium / RV segmentation (labels 1 / 2 / 3).

    Parameters
    ----------
    config
        Hyperparameters (default :class:`SegmenterConfig`).
    seed
        Seed of the weight initialisation.

    Examples
    --------
    >>> x, y = toy_slices(64, 64, rng=0)  # doctest: +SKIP
    >>> seg = Segmenter(SegmenterConfig(epochs=5))  # doctest: +SKIP
    >>> history = seg.fit(x, y, seed=0)  # doctest: +SKIP
    >>> pred = seg.predict(x[:4])  # (4, 64, 64) uint8  # doctest: +SKIP
    """

    def __init__(self, config: SegmenterConfig | None = None, *, seed: int = 0) -> None:
        self.config = config if config is not None else SegmenterConfig()
        if not isinstance(self.config, SegmenterConfig):
            raise TypeError(f"config must be a SegmenterConfig, got {type(self.config).__name__}")
        self.network = build_network(self.config, seed=seed)
        self.history: Any = None

    # -- data preparation -------------------------------------------------------------------
    def _prepare(self, images: ArrayLike) -> torch.Tensor:
        x = np.asarray(images)
        if x.ndim != 3:
            raise ValueError(f"images must be (N, H, W), got shape {x.shape}")
        x = torch.from_numpy(normalise_slices(x))[:, None]
        return to_network_grid(x, self.config.image_size, mode="bilinear")

    # -- training ---------------------------------------------------------------------------
    def fit(
        self,
        images: ArrayLike,
        labels: ArrayLike,
        *,
        val_fraction: float = 0.1,
        validation: tuple[ArrayLike, ArrayLike] | None = None,
        seed: int = 0,
        device: str | torch.device = "auto",
        checkpoint_dir: str | os.PathLike[str] | None = None,
        resume: bool = True,
        progress: bool = False,
        pixel_mm: float | None = None,
        amp: str | bool = "auto",
        **fit_kwargs: Any,
    ) -> Any:
        """Train on 2D slices through :func:`cmrkit.train.fit`; return its ``FitResult``.

        The network keeps the weights of the epoch with the lowest validation loss (DiceCE on the
        un-augmented validation slices; the training loss when there are none). ``result.history``
        holds per epoch ``train_loss``, ``val_loss`` and the hard Dice per class
        (``train/dice_LV``, ``val/dice_Myo``, ...; training values are on augmented batches).

        Parameters
        ----------
        images
            (N, H, W) slices, any intensity range (normalised per slice here).
        labels
            (N, H, W) integer labels in {0, 1, 2, 3}.
        val_fraction
            Fraction of slices held out for validation loss (random, from ``seed``); 0 for none.
            The split is by slice, so neighbouring slices of one subject fall on both sides; for a
            clean estimate split by subject and pass the held-out slices as ``validation``.
        validation
            ``(images, labels)`` of validation slices; replaces the ``val_fraction`` split.
        seed
            Seeds the split, the augmentation generator and the loop (shuffling).
        device, checkpoint_dir, resume, progress, amp
            Passed to :func:`cmrkit.train.fit` (``device="auto"``: CUDA when available). The
            trained network is moved back to the CPU.
        pixel_mm
            In-plane pixel size (mm) of ``images``; stored (rescaled by any resize to the network
            size) as ``config.pixel_mm`` for :func:`cmrkit.segment.segment_volume_at_resolution`.
        **fit_kwargs
            Further keyword arguments for :func:`cmrkit.train.fit`.
        """
        from .. import train as _train

        x = np.asarray(images)
        y = np.asarray(labels)
        if x.ndim != 3 or y.shape != x.shape:
            raise ValueError(f"images and labels must both be (N, H, W) of equal shape, got {x.shape} and {y.shape}")
        if len(x) < 2:
            raise ValueError(f"need at least 2 slices to train, got {len(x)}")
        if np.any((y < 0) | (y > 3)):
            raise ValueError("labels must be in {0, 1, 2, 3}")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        size = self.config.image_size
        xt = self._prepare(x)
        yt = to_network_grid(torch.from_numpy(y.astype(np.int64))[:, None], size, mode="nearest")
        if validation is not None:
            vx, vy = (np.asarray(a) for a in validation)
            if vx.ndim != 3 or vy.shape != vx.shape or len(vx) == 0:
                raise ValueError(
                    f"validation must be (images, labels), both (M, H, W) with M > 0; got {vx.shape}, {vy.shape}"
                )
            if np.any((vy < 0) | (vy > 3)):
                raise ValueError("validation labels must be in {0, 1, 2, 3}")
            train_ds = _SliceSet(xt, yt)
            val_ds = _SliceSet(
                self._prepare(vx), to_network_grid(torch.from_numpy(vy.astype(np.int64))[:, None], size, mode="nearest")
            )
        else:
            order = np.random.default_rng(seed).permutation(len(x))
            n_val = min(int(round(val_fraction * len(x))), len(x) - 1)
            val_idx, tr_idx = order[:n_val], order[n_val:]
            train_ds = _SliceSet(xt[tr_idx], yt[tr_idx])
            val_ds = _SliceSet(xt[val_idx], yt[val_idx]) if n_val > 0 else None
        loss = _SegLoss(self.config.augment_params if self.config.augment else None)
        result = _train.fit(
            self.network,
            train_ds,
            val_ds,
            loss_fn=loss,
            epochs=self.config.epochs,
            batch_size=self.config.batch_size,
            lr=self.config.lr,
            weight_decay=self.config.weight_decay,
            device=device,
            seed=seed,
            amp=amp,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            progress=progress,
            **fit_kwargs,
        )
        if pixel_mm is not None:
            scale = max(x.shape[1:]) / size
            self.config = dataclasses.replace(self.config, pixel_mm=float(pixel_mm) * scale)
        self.network.to("cpu").eval()
        self.history = result
        return result

    # -- inference --------------------------------------------------------------------------
    @torch.no_grad()
    def predict_proba(
        self, images: ArrayLike, *, batch_size: int | None = None, device: str | torch.device = "auto"
    ) -> np.ndarray:
        """Softmax class probabilities (N, 4, S, S) on the *network grid* of (N, H, W) slices
        (``device="auto"``: CUDA when available; the network is moved back to the CPU)."""
        xt = self._prepare(images)
        device = resolve_device(device)
        net = self.network.to(device).eval()
        bs = int(batch_size or max(self.config.batch_size, 32))
        out = [torch.softmax(net(xt[i : i + bs].to(device)).float(), 1).cpu() for i in range(0, len(xt), bs)]
        self.network.to("cpu")
        return (
            torch.cat(out).numpy()
            if out
            else np.zeros((0, 4, self.config.image_size, self.config.image_size), np.float32)
        )

    def predict(
        self,
        images: ArrayLike,
        *,
        batch_size: int | None = None,
        device: str | torch.device = "auto",
        largest_component: bool = True,
    ) -> np.ndarray:
        """Label maps of (N, H, W) slices (or one (H, W) slice), on the input grid.

        Slices are normalised and fitted to the network size (:func:`to_network_grid`); the
        arg-max labels are mapped back with nearest-neighbour interpolation
        (:func:`from_network_grid`). ``largest_component`` keeps, per slice and class, only the
        largest connected component (:func:`keep_largest_component`).

        Returns
        -------
        (N, H, W) or (H, W) uint8 labels in {0, 1, 2, 3}.
        """
        x = np.asarray(images)
        single = x.ndim == 2
        if single:
            x = x[None]
        if x.ndim != 3:
            raise ValueError(
                f"predict expects (N, H, W) slices or one (H, W) slice, got shape {x.shape}; use predict_volume for "
                "volumes"
            )
        if len(x) == 0:
            return np.zeros(x.shape, np.uint8)
        proba = torch.from_numpy(self.predict_proba(x, batch_size=batch_size, device=device))
        lab = proba.argmax(1, keepdim=True).to(torch.uint8)
        lab = from_network_grid(lab, x.shape[1:])[:, 0].numpy()
        if largest_component:
            lab = keep_largest_component(lab)
        return lab[0] if single else lab

    def predict_volume(self, volume: ArrayLike, *, largest_component: bool = True, **kwargs: Any) -> np.ndarray:
        """Labels of a short-axis volume (H, W, Z) or cine (H, W, Z, T), slice by slice; same shape,
        uint8. ``largest_component`` keeps the largest component per class in every slice (2D)
        and then in every (H, W, Z) frame (3D, removing false positives in slices away from the
        heart). Other keyword arguments go to :meth:`predict`."""
        v = np.asarray(volume)
        if v.ndim not in (3, 4):
            raise ValueError(f"volume must be (H, W, Z) or (H, W, Z, T), got shape {v.shape}")
        h, w = v.shape[:2]
        rest = v.shape[2:]
        slices = np.moveaxis(v.reshape(h, w, -1), -1, 0)
        lab = np.moveaxis(self.predict(slices, largest_component=largest_component, **kwargs), 0, -1).reshape(
            h, w, *rest
        )
        if largest_component:
            frames = lab[..., None] if lab.ndim == 3 else lab
            frames = np.moveaxis(keep_largest_component(np.moveaxis(frames, -1, 0), spatial_dims=3), 0, -1)
            lab = frames.reshape(lab.shape)
        return lab

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write weights and config with :func:`cmrkit.train.save_model` (atomic, loadable
        weights-only); relative paths anchor at the repository root. Returns the path."""
        from .. import train as _train

        return _train.save_model(path, self.network, self.config.to_dict(), extra=dict(_ARTEFACT_EXTRA))

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> Segmenter:
        """Read an artefact written by :meth:`save` (:func:`cmrkit.train.load_model`)."""
        from .. import train as _train

        p = resolve_path(path)
        if not p.is_file():
            raise FileNotFoundError(f"segmenter artefact not found: {p}")
        saved = _train.load_model(
            p, builder=lambda c: build_network(SegmenterConfig.from_dict(c), seed=None), map_location=map_location
        )
        if saved.extra.get("kind") != _ARTEFACT_EXTRA["kind"]:
            raise ValueError(f"{p} is a cmrkit model artefact but not a Segmenter (extra={saved.extra})")
        seg = cls.__new__(cls)
        seg.config = SegmenterConfig.from_dict(saved.config)
        seg.network = saved.model.to("cpu").eval()
        seg.history = None
        return seg
