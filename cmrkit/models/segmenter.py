"""Cardiac short-axis segmenter: LV blood pool / LV myocardium / RV on single 2D slices.

The thesis (Cheng 2025, §4.3.7) checks reconstructed cine by segmenting original and
reconstructed images with the ukbb_cardiac network (Bai et al. 2018) and comparing the two
segmentations with Dice and Hausdorff distance. UK Biobank weights are not redistributable, so the
kit trains its own small segmenter on the phantom cohort instead and keeps it as a reusable
component (chapters 5–6 measure generated volumes with it).

Network and loss
    A 2D MONAI :class:`~monai.networks.nets.UNet` (1 input channel, 4 output classes:
    0 background, 1 LV blood pool, 2 LV myocardium, 3 RV blood pool; residual units, stride-2
    down-sampling) trained with MONAI :class:`~monai.losses.DiceCELoss` (softmax, one-hot targets)
    through the shared loop :func:`cmrkit.train.fit`.
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
Volumes of any resolution
    :func:`segment_volume_at_resolution` resamples a volume to the training pixel size
    (``config.pixel_mm``), crops around a heart centre, segments and maps the labels back;
    :func:`slices_from_subjects` builds training slices from :class:`~cmrkit.io.subject.Subject`
    records through :func:`cmrkit.preprocess.prepare_subject`, the same geometry.
Real-data check
    :func:`evaluate_on_mnms` runs the segmenter on M&Ms (Campello et al., IEEE TMI 2021) ED/ES
    volumes and reports per subject/phase/label Dice, HD, HD95 and ASSD in millimetres.
    ``python -m cmrkit.models.segmenter`` (:func:`cli_main`) trains on a cohort, saves the
    artefact and prints the held-out and M&Ms numbers.
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

from ..utils import REPO_ROOT, resolve_device, resolve_path

__all__ = [
    "LABELS",
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
    "slices_from_subjects",
    "toy_slices",
    "segment_volume_at_resolution",
    "evaluate_on_mnms",
    "MNMS_DEFAULT_DIR",
    "summarise_mnms",
    "cli_main",
]

#: kit label convention (UK Biobank / M&Ms)
LABELS: dict[int, str] = {1: "LV", 2: "Myo", 3: "RV"}
#: where the shared M&Ms subset lives (``../shared/realdata/mnms`` beside the repository)
MNMS_DEFAULT_DIR = REPO_ROOT.parent / "shared" / "realdata" / "mnms"

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
        :meth:`Segmenter.fit` when its ``pixel_mm`` is given and used by :func:`evaluate_on_mnms`
        to resample real images to the training resolution. ``None`` = unknown.
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

    @classmethod
    def from_profile(cls, cfg: Any, **overrides: Any) -> SegmenterConfig:
        """Build from a loaded profile (:func:`cmrkit.config.load`): ``ch4.segmenter.{epochs,
        batch_size, channels, lr}``, ``ch4.image_size`` and ``ch4.weight_decay``; optional
        ``ch4.segmenter.{strides, num_res_units, augment, weight_decay}`` if present."""
        seg = cfg.ch4.segmenter
        kw: dict[str, Any] = {
            "image_size": int(cfg.ch4.image_size),
            "channels": tuple(seg.channels),
            "lr": float(seg.lr),
            "epochs": int(seg.epochs),
            "batch_size": int(seg.batch_size),
        }
        if "weight_decay" in cfg.ch4:
            kw["weight_decay"] = float(cfg.ch4.weight_decay)
        for key in ("strides", "num_res_units", "augment", "weight_decay"):
            if key in seg:
                kw[key] = seg[key]
        kw.update(overrides)
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists, numbers, bools) for checkpoints and JSON sidecars."""
        d = dataclasses.asdict(self)
        d["channels"] = list(d["channels"])
        d["strides"] = list(d["strides"])
        d["augment_params"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in d["augment_params"].items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SegmenterConfig:
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
            out_channels=len(LABELS) + 1,
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
    labels: np.ndarray, classes: Sequence[int] = (1, 2, 3), *, spatial_dims: int = 2
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


def slices_from_subjects(
    subjects: Any,
    *,
    image_size: int,
    pixel_mm: float | None = None,
    empty_slices: str = "keep",
    return_index: bool = False,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2D training slices from :class:`cmrkit.io.subject.Subject` records (phantom or real).

    Each subject goes through the kit's one preprocessing path,
    :func:`cmrkit.preprocess.prepare_subject` (``spacing=pixel_mm`` resampling when given, an
    ``image_size`` crop around the heart, intensity normalisation; no tagging), then its labelled
    frames (``labelled_frames``: every frame for the phantom, ED/ES for M&Ms/ACDC) are cut into
    slices with :func:`slices_from_volumes`. Subjects without a cine or labels are skipped.
    ``index`` rows are (position in ``subjects``, z, t).
    """
    from ..preprocess import prepare_subject

    vols, labs, keep = [], [], []
    for i, subj in enumerate(subjects):
        if subj.cine is None or subj.cine_labels is None or subj.labelled_frames is None:
            continue
        ps = prepare_subject(subj, size=image_size, spacing=pixel_mm, tagging=False)
        frames = np.flatnonzero(ps.labelled_frames)
        vols.append(ps.cine)
        labs.append({int(t): ps.cine_labels[..., t] for t in frames})
        keep.append(i)
    if not vols:
        raise ValueError("slices_from_subjects: no subject with both a cine and labels")
    out = slices_from_volumes(vols, labs, empty_slices=empty_slices, return_index=True)
    x, y, idx = out  # type: ignore[misc]
    idx[:, 0] = np.asarray(keep)[idx[:, 0]]
    return (x, y, idx) if return_index else (x, y)


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

    @classmethod
    def from_profile(cls, cfg: Any, *, seed: int | None = None, **overrides: Any) -> Segmenter:
        """Segmenter sized by a loaded profile (see :meth:`SegmenterConfig.from_profile`);
        ``seed`` defaults to the profile's run seed when it has one, else 0."""
        if seed is None:
            seed = int(cfg["seed"]) if "seed" in cfg else 0
        return cls(SegmenterConfig.from_profile(cfg, **overrides), seed=seed)

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
            size) as ``config.pixel_mm`` for :func:`evaluate_on_mnms`.
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


# --------------------------------------------------------------------------------------------
# M&Ms evaluation
# --------------------------------------------------------------------------------------------
def _uncrop(crop: np.ndarray, origin: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros((*shape, *crop.shape[2:]), crop.dtype)
    r0, c0 = origin
    size = crop.shape[0]
    rs, cs = max(r0, 0), max(c0, 0)
    re_, ce = min(r0 + size, shape[0]), min(c0 + size, shape[1])
    if re_ > rs and ce > cs:
        out[rs:re_, cs:ce] = crop[rs - r0 : re_ - r0, cs - c0 : ce - c0]
    return out


def segment_volume_at_resolution(
    segmenter: Segmenter,
    volume: ArrayLike,
    spacing: Sequence[float],
    centre: tuple[float, float],
    *,
    pixel_mm: float | None = None,
    **predict_kwargs: Any,
) -> np.ndarray:
    """Segment a short-axis volume (X, Y, Z) of any resolution around a known heart centre.

    The volume is resampled in-plane to ``pixel_mm`` (default ``segmenter.config.pixel_mm``) with
    :func:`cmrkit.preprocess.resample_inplane` (edge-aligned grid), an ``image_size`` square is cut
    around ``centre`` with :func:`cmrkit.preprocess.crop_roi` (``(x, y)`` = (axis 0, axis 1) in
    *input* voxels, e.g. from :func:`cmrkit.preprocess.heart_center`; zero padding outside the
    image), segmented with :meth:`Segmenter.predict_volume`, pasted back and resampled to the input
    grid (nearest). Returns uint8 labels of the input shape (0 outside the window).
    """
    from ..preprocess import crop_roi, resample_inplane

    v = np.asarray(volume, np.float32)
    if v.ndim != 3:
        raise ValueError(f"volume must be (X, Y, Z), got shape {v.shape}")
    if len(spacing) < 2 or min(float(s) for s in spacing[:2]) <= 0:
        raise ValueError(f"spacing must give positive in-plane voxel sizes (mm), got {spacing!r}")
    pmm = pixel_mm if pixel_mm is not None else segmenter.config.pixel_mm
    if pmm is None or pmm <= 0:
        raise ValueError("pixel_mm is needed: segmenter.config.pixel_mm is unknown (fit with pixel_mm=... or pass it)")
    sp3 = [float(spacing[0]), float(spacing[1]), float(spacing[2]) if len(spacing) > 2 else 1.0]
    res = resample_inplane(v, np.diag([*sp3, 1.0]), spacing=float(pmm))
    shape_r = res.image.shape[:2]
    # pixel centres: o = (i + 0.5) * n_out / n_in - 0.5 (edge-aligned grid)
    c_r = tuple((c + 0.5) * n_r / n - 0.5 for c, n_r, n in zip(centre, shape_r, v.shape[:2]))
    cropped = crop_roi(res.image, segmenter.config.image_size, center=c_r)
    pred = segmenter.predict_volume(cropped.image, **predict_kwargs)
    full = _uncrop(pred, (int(cropped.box.x0), int(cropped.box.y0)), shape_r)
    back = resample_inplane(None, labels=full, size=v.shape[:2])
    return np.asarray(back.labels, dtype=np.uint8)


def evaluate_on_mnms(
    segmenter: Segmenter,
    mnms_dir: str | os.PathLike[str] | None = None,
    *,
    pixel_mm: float | None = None,
    centre: str = "motion",
    device: str | torch.device = "auto",
    largest_component: bool = True,
    return_predictions: bool = False,
) -> Any:
    """Segment M&Ms ED/ES short-axis volumes and score them against the expert labels.

    Cases are read with :func:`cmrkit.io.mnms.iter_mnms_subjects` (flat ``<case>_sa_{ED,ES}[_gt]``
    files as in ``shared/realdata/mnms``, or the official 4-D release); labels 1 LV, 2 Myo, 3 RV
    (checked on the shared files: label 1 lies inside the filled label-2 ring). Cases without an
    image are skipped (listed in ``attrs["skipped"]``). For each labelled ED/ES frame:

    1. heart centre (:func:`cmrkit.preprocess.heart_center`): ``centre="motion"`` (default; uses
       no labels: the temporal variation of the subject's cine, here ED and ES only; 3–7 mm from
       the label box centre on the shared cases), ``"label"`` (centre of the bounding box of the
       expert labels of that frame: uses the ground-truth location, so it measures segmentation
       alone, not localisation) or ``"fov"`` (image centre);
    2. :func:`segment_volume_at_resolution` at ``pixel_mm`` (default
       ``segmenter.config.pixel_mm``, the resolution the network was trained at);
    3. Dice, HD, HD95 and ASSD per label on the original grid, in 3D with the NIfTI voxel spacing
       (:func:`cmrkit.metrics.segmentation.segmentation_scores`).

    Returns
    -------
    pandas.DataFrame
        Columns ``subject, phase, label, structure, dice, hd_mm, hd95_mm, assd_mm, gt_voxels,
        pred_voxels, centre, pixel_mm``. A structure the segmenter missed entirely has Dice 0 and
        infinite distances (the metrics module's convention). An absent or empty folder gives an
        empty frame whose ``attrs["note"]`` says why. With ``return_predictions=True`` also a dict
        ``{(subject, phase): (image, gt, pred)}`` on the original grid.
    """
    import pandas as pd

    cols = [
        "subject",
        "phase",
        "label",
        "structure",
        "dice",
        "hd_mm",
        "hd95_mm",
        "assd_mm",
        "gt_voxels",
        "pred_voxels",
        "centre",
        "pixel_mm",
    ]
    d = MNMS_DEFAULT_DIR if mnms_dir is None else resolve_path(mnms_dir)
    if centre not in ("motion", "label", "fov"):
        raise ValueError(f"centre must be 'motion', 'label' or 'fov', got {centre!r}")
    empty = pd.DataFrame(columns=cols)
    if not d.is_dir():
        empty.attrs["note"] = f"M&Ms folder {d} not found; nothing evaluated"
        return (empty, {}) if return_predictions else empty
    pmm = pixel_mm if pixel_mm is not None else segmenter.config.pixel_mm
    if pmm is None:
        raise ValueError(
            "evaluate_on_mnms needs pixel_mm: the segmenter's config.pixel_mm is unknown (fit it with pixel_mm=...)"
        )
    from ..io.mnms import MNMS_FILE_PATTERN, iter_mnms_subjects
    from ..metrics.segmentation import segmentation_scores
    from ..preprocess import heart_center

    folders = [d, *(p for p in d.iterdir() if p.is_dir())]
    if not any(MNMS_FILE_PATTERN.match(f.name) for folder in folders for f in folder.iterdir()):
        empty.attrs["note"] = f"no M&Ms <case>_sa*.nii.gz files in {d}; nothing evaluated"
        return (empty, {}) if return_predictions else empty
    rows, preds, skipped = [], {}, []
    for subj in iter_mnms_subjects(d):  # one subject in memory at a time
        if subj.cine is None or subj.cine_labels is None:
            skipped.append(subj.subject_id)
            continue
        sid = subj.subject_id.split("_")[-1]
        spacing = subj.spacing
        if centre == "motion":
            c_motion = heart_center(image=subj.cine, spacing=spacing[:2])
        for phase, t in (("ED", subj.ed_frame), ("ES", subj.es_frame)):
            if t is None or not subj.labelled_frames[t]:
                continue
            img, gt = subj.frame(t), subj.label(t).astype(np.uint8)
            if centre == "motion":
                c = c_motion
            elif centre == "label":
                c = heart_center(labels=gt) if gt.any() else (img.shape[0] / 2 - 0.5, img.shape[1] / 2 - 0.5)
            else:
                c = (img.shape[0] / 2 - 0.5, img.shape[1] / 2 - 0.5)
            pred = segment_volume_at_resolution(
                segmenter,
                img,
                spacing,
                (float(c[0]), float(c[1])),
                pixel_mm=pmm,
                device=device,
                largest_component=largest_component,
            )
            sc = segmentation_scores(pred, gt, spacing=spacing, labels=tuple(LABELS), names=list(LABELS.values()))
            for r in sc.itertuples(index=False):
                rows.append(
                    {
                        "subject": sid,
                        "phase": phase,
                        "label": int(r.label),
                        "structure": r.structure,
                        "dice": r.dice,
                        "hd_mm": r.hd_mm,
                        "hd95_mm": r.hd95_mm,
                        "assd_mm": r.assd_mm,
                        "gt_voxels": int(r.ref_voxels),
                        "pred_voxels": int(r.pred_voxels),
                        "centre": centre,
                        "pixel_mm": float(pmm),
                    }
                )
            if return_predictions:
                preds[(sid, phase)] = (img, gt, pred)
    df = pd.DataFrame(rows, columns=cols)
    n_vol = len(df) // len(LABELS)
    df.attrs["note"] = (
        f"{n_vol} M&Ms volumes from {d}; crop centre: {centre}"
        + (
            " (uses the ground-truth location)"
            if centre == "label"
            else " (no labels used)"
            if centre == "motion"
            else ""
        )
        + (f"; skipped (no image): {skipped}" if skipped else "")
    )
    df.attrs["skipped"] = skipped
    return (df, preds) if return_predictions else df


def summarise_mnms(df: Any) -> Any:
    """Mean ± SD of Dice and HD95 per structure (and centre mode) of an :func:`evaluate_on_mnms`
    frame; HD95 is summarised over finite values only, with the count of missed structures."""
    import pandas as pd

    if df.empty:
        return pd.DataFrame(
            columns=["centre", "structure", "n", "dice_mean", "dice_sd", "hd95_mm_mean", "hd95_mm_sd", "missed"]
        )
    g = df.assign(finite_hd=df["hd95_mm"].where(np.isfinite(df["hd95_mm"]))).groupby(
        ["centre", "structure"], sort=False
    )
    return pd.DataFrame(
        {
            "n": g["dice"].size(),
            "dice_mean": g["dice"].mean(),
            "dice_sd": g["dice"].std(ddof=1),
            "hd95_mm_mean": g["finite_hd"].mean(),
            "hd95_mm_sd": g["finite_hd"].std(ddof=1),
            "missed": g["pred_voxels"].apply(lambda v: int((v == 0).sum())),
        }
    ).reset_index()


def cli_main(argv: Sequence[str] | None = None) -> int:
    """``python -m cmrkit.models.segmenter``: train the segmenter on a cohort, save it, and
    report held-out Dice and the phantom-to-real gap on M&Ms.

    Subjects are split by subject (``--val-fraction`` held out, from ``--seed``); sizes come from
    the profile (``ch4.image_size``, ``ch4.segmenter.*``), the pixel size from ``--pixel-mm``
    (default ``phantom.pixel_mm``, i.e. the phantom's native grid).
    """
    import argparse
    import sys

    from ..config import DATASETS, ConfigError, load

    ap = argparse.ArgumentParser(
        prog="python -m cmrkit.models.segmenter", description=cli_main.__doc__.split("\n\n")[0]
    )
    ap.add_argument("--data-dir", required=True, help="cohort folder (e.g. a phantom cohort with manifest.csv)")
    ap.add_argument("--dataset", default="phantom", choices=DATASETS)
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=None, help="override ch4.segmenter.epochs")
    ap.add_argument("--pixel-mm", type=float, default=None)
    ap.add_argument("--val-fraction", type=float, default=0.2)
    ap.add_argument("--no-augment", action="store_true")
    ap.add_argument("--out", default=None, help="artefact path (.pt); default: not saved")
    ap.add_argument("--mnms", default=str(MNMS_DEFAULT_DIR), help="M&Ms folder ('' to skip)")
    ap.add_argument("--csv", default=None, help="write the per-volume M&Ms table here")
    ap.add_argument("--progress", action="store_true")
    a = ap.parse_args(None if argv is None else list(argv))
    try:
        cfg = load(a.profile, seed=a.seed)
        over: dict[str, Any] = {}
        if a.epochs is not None:
            over["epochs"] = a.epochs
        if a.no_augment:
            over["augment"] = False
        scfg = SegmenterConfig.from_profile(cfg, **over)
        pixel_mm = a.pixel_mm if a.pixel_mm is not None else float(cfg.phantom.pixel_mm)
        if not 0 <= a.val_fraction < 1:
            raise ValueError(f"--val-fraction must be in [0, 1), got {a.val_fraction}")
        from ..io import iter_subjects

        subjects = [s for s in iter_subjects(resolve_path(a.data_dir), a.dataset)]
    except (ConfigError, ValueError, OSError) as exc:
        print(f"cmrkit segmenter: error: {exc}", file=sys.stderr)
        return 2
    x, y, idx = slices_from_subjects(subjects, image_size=scfg.image_size, pixel_mm=pixel_mm, return_index=True)
    ids = np.unique(idx[:, 0])
    n_val = int(round(a.val_fraction * len(ids))) if len(ids) > 1 else 0
    val_ids = np.random.default_rng(a.seed).permutation(ids)[:n_val]
    is_val = np.isin(idx[:, 0], val_ids)
    print(
        f"{len(ids)} subjects ({n_val} held out), {int((~is_val).sum())} training / {int(is_val.sum())} validation "
        f"slices at {pixel_mm:g} mm, {scfg.image_size} px; channels {scfg.channels}, {scfg.epochs} epochs"
    )
    seg = Segmenter(scfg, seed=a.seed)
    res = seg.fit(
        x[~is_val],
        y[~is_val],
        validation=(x[is_val], y[is_val]) if n_val else None,
        val_fraction=0.0,
        seed=a.seed,
        device=a.device,
        pixel_mm=pixel_mm,
        progress=a.progress,
    )
    print(f"trained in {res.seconds:.1f} s; best epoch {res.best_epoch} (val loss {res.best_val:.4f})")
    if n_val:
        from ..metrics.segmentation import dice

        pred = seg.predict(x[is_val], device=a.device)
        d = dice(pred, y[is_val], labels=tuple(LABELS))
        print(
            "held-out "
            + a.dataset
            + " Dice (all slices pooled): "
            + ", ".join(f"{n} {v:.3f}" for n, v in zip(LABELS.values(), np.atleast_1d(d)))
        )
    if a.out:
        print(f"saved {seg.save(a.out)}")
    if a.mnms:
        import pandas as pd

        frames = [evaluate_on_mnms(seg, a.mnms, centre=c, device=a.device) for c in ("motion", "label")]
        df = pd.concat(frames, ignore_index=True)
        if df.empty:
            print(frames[0].attrs.get("note", "no M&Ms data"))
        else:
            print(frames[0].attrs["note"])
            print(summarise_mnms(df).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
            if a.csv:
                from ..utils import atomic_write

                with atomic_write(resolve_path(a.csv), "w") as fh:
                    df.to_csv(fh, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main())
