"""Set-level metrics of generative models: Fréchet distance (FID/FRD), improved precision/recall,
MMD, and MS-SSIM / 4-G-r* diversity and similarity scores (thesis Tables 5.1 and 6.1).

Features
--------
Fréchet distance, precision/recall and MMD compare two sets of feature vectors ``(N, F)``. The
features come from a pluggable :class:`FeatureExtractor`; every extractor has a ``name`` that
tables must print next to the numbers, because values from different extractors are not
comparable:

* :class:`InceptionV3Features` -> **FID** (Heusel et al. 2017; thesis eq. 5.6, ref. [220]):
  torchvision's Inception-V3 architecture, 2048-d pool3 features, 299 x 299 bilinear resize,
  inputs scaled to [-1, 1]. With pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (the
  TF-FID weights, 1008 classes) the TF-FID block variants are used (average pools that exclude
  padding, max pool in the last block) so values match the standard FID; with torchvision's
  ImageNet weights (``inception_v3_google-*.pth``) the plain torchvision network is used and the
  name says so.
* :class:`ResNet50Features` -> **FRD** ("Fréchet ResNet distance", thesis ref. [221]; not the
  "Fréchet radiomics distance"): ResNet50, 2048-d global-average-pooled ``layer4`` features. With
  RadImageNet weights (``RadImageNet-ResNet50_notop.pth``, Keras-ported: biased convolutions,
  stride in the first 1x1 conv, BN eps 1.001e-5) the network is adapted accordingly and the
  MONAI-tutorial preprocessing is used (grey to 3 channels, BGR order, minus channel means
  (0.406, 0.456, 0.485)); with torchvision ImageNet weights, ImageNet mean/std normalisation.
* :class:`RandomConvFeatures` -> the **offline default** (no weights, no torchvision), see its
  docstring for what it is and why it is a sound stand-in.

Pretrained weights are never downloaded: pass ``weights=PATH`` or set ``CMRKIT_FID_WEIGHTS`` /
``CMRKIT_FRD_WEIGHTS``. torchvision is imported only when one of those two extractors is built.

Images are ``(N, C, *extra, H, W)`` with intensities in ``[0, data_range]``; extractors are 2D,
so 3D volumes ``(N, C, D, H, W)`` (and 2D+t / 3D+t) are cut into XY slices and **every slice is
one sample** of the feature distribution (the per-slice protocol of MONAI's 2.5D FID, XY plane
only; anchors-ch5-6-ldm.md §2).
"""

from __future__ import annotations

import math
import os
import types
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..utils import resolve_device
from .image import gr4_ssim, ms_ssim, ssim
from .inputs import as_tensor, check_data_range

__all__ = [
    "FeatureExtractor",
    "RandomConvFeatures",
    "InceptionV3Features",
    "ResNet50Features",
    "get_extractor",
    "extract_features",
    "frechet_distance",
    "frechet_distance_from_stats",
    "FrechetResult",
    "image_frechet_distance",
    "PrecisionRecall",
    "precision_recall",
    "knn_radii",
    "mmd",
    "median_heuristic",
    "SimilarityScores",
    "mean_pairwise_similarity",
    "mean_similarity_to_reference",
    "FID_WEIGHTS_ENV",
    "FRD_WEIGHTS_ENV",
]

ArrayLike = Any
FID_WEIGHTS_ENV = "CMRKIT_FID_WEIGHTS"
FRD_WEIGHTS_ENV = "CMRKIT_FRD_WEIGHTS"


# =============================================================================================
# feature extractors
# =============================================================================================
class FeatureExtractor:
    """Base class: maps 2D images ``(n, C, H, W)`` in [0, 1] to features ``(n, F)``.

    Subclasses set ``name`` (printed in tables), ``feature_dim`` and implement
    :meth:`forward`. Call :meth:`extract` (or the instance) on ``(N, C, *extra, H, W)`` images
    to get a float64 ``(N * n_extra, F)`` array, computed in batches without gradients.
    """

    name: str = "abstract"
    feature_dim: int = 0
    in_channels: tuple[int, ...] = (1,)

    def __init__(self, device: str | torch.device | None = None) -> None:
        self.device = resolve_device(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def to(self, device: str | torch.device) -> FeatureExtractor:
        self.device = torch.device(device)
        for v in vars(self).values():
            if isinstance(v, nn.Module):
                v.to(self.device)
        return self

    @torch.no_grad()
    def extract(self, images: ArrayLike, *, data_range: float = 1.0, batch_size: int = 64) -> np.ndarray:
        """Features of every 2D slice of ``images`` ``(N, C, *extra, H, W)`` -> ``(N*n_extra, F)``.

        Intensities are divided by ``data_range`` (expected range ``[0, data_range]``).
        """
        L = check_data_range(data_range)
        x = as_tensor(images, "images")  # stays where it is; batches move to self.device
        if x.ndim < 4:
            raise ValueError(f"images must be laid out (N, C, *extra, H, W), got shape {tuple(x.shape)}")
        c = x.shape[1]
        if c not in self.in_channels:
            raise ValueError(
                f"{self.name} takes {' or '.join(map(str, self.in_channels))} channel(s), images have {c}; "
                "select the image channel (e.g. images[:, :1]) before extracting features"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        # (N, C, *extra, H, W) -> (N*n_extra, C, H, W)
        extra = x.shape[2:-2]
        perm = (0, *range(2, 2 + len(extra)), 1, x.ndim - 2, x.ndim - 1)
        x = x.permute(perm).reshape(-1, c, *x.shape[-2:])
        out = []
        for i in range(0, x.shape[0], batch_size):
            xb = (x[i : i + batch_size].to(self.device, torch.float32)) / L
            out.append(self.forward(xb).to(torch.float64).cpu())
        return torch.cat(out).numpy()

    __call__ = extract

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, feature_dim={self.feature_dim}, device={self.device})"


class RandomConvFeatures(FeatureExtractor):
    """Offline default extractor: a fixed, seeded, randomly initialised multi-scale CNN.

    What it is
    ----------
    Images (1 channel, [0, 1]) are resized to ``input_size`` x ``input_size`` (bilinear) and
    passed through 5 stages ``conv3x3 -> ReLU`` with widths (16, 32, 64, 128, 256) and a 2x2
    average pool before stages 2-5 (zero padding, no bias). The feature vector concatenates,
    for every stage, the spatial mean and spatial standard deviation of each channel:
    ``2 * (16+32+64+128+256) = 992`` dimensions. Weights are He-normal (std ``sqrt(2/fan_in)``),
    drawn from ``numpy.random.default_rng(seed)`` (PCG64), so they are identical on every machine
    and device and need no file. ``name`` = ``"RandomConv-v1(seed=<seed>)"``.

    Why it is a sound stand-in
    --------------------------
    * Untrained convolutional embeddings are an established evaluation space for generative models
      outside ImageNet's domain: Naeem et al. 2020 ("Reliable fidelity and diversity metrics for
      generative models", ICML) show randomly initialised CNN embeddings give meaningful
      precision/recall/density/coverage, and random-weight networks capture enough image statistics
      for texture synthesis (He, Wang & Hopcroft 2016, NeurIPS; Ulyanov et al. 2018, deep image
      prior).
    * Per-channel means and standard deviations of filter responses at five scales are
      first- and second-order multi-scale statistics of local structure (the Gram-diagonal
      statistics of texture models), sensitive to intensity, contrast, edges, blur and noise and
      therefore to the differences FID is meant to detect; the Fréchet distance, MMD and
      precision/recall are well-defined in any fixed feature space.
    * It carries no ImageNet class bias (Kynkäänniemi et al. 2023, "The role of ImageNet classes
      in Fréchet inception distance", ICLR), which matters for grey-level cardiac MRI.
    * Deterministic and weights-free, so CI and any user reproduce the same numbers offline.

    Limits: absolute values are not comparable with Inception FID or RadImageNet FRD (nor with
    the thesis's numbers); compare methods within one extractor and print ``name`` in tables.
    """

    in_channels = (1,)
    VERSION = "v1"

    def __init__(
        self,
        seed: int = 0,
        *,
        widths: Sequence[int] = (16, 32, 64, 128, 256),
        input_size: int | None = 128,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__(device)
        if input_size is not None and int(input_size) < 2 ** len(widths):
            raise ValueError(f"input_size must be >= {2 ** len(widths)} for {len(widths)} stages, got {input_size}")
        self.seed, self.widths = int(seed), tuple(int(w) for w in widths)
        self.input_size = None if input_size is None else int(input_size)
        default = self.widths == (16, 32, 64, 128, 256) and self.input_size == 128
        suffix = "" if default else f",widths={list(self.widths)},size={self.input_size}"
        self.name = f"RandomConv-{self.VERSION}(seed={self.seed}{suffix})"
        self.feature_dim = 2 * sum(self.widths)
        rng = np.random.default_rng(self.seed)
        self.weights: list[torch.Tensor] = []
        cin = 1
        for w in self.widths:
            std = math.sqrt(2.0 / (cin * 9))
            k = rng.standard_normal((w, cin, 3, 3)).astype(np.float32) * np.float32(std)
            self.weights.append(torch.from_numpy(k).to(self.device))
            cin = w

    def to(self, device: str | torch.device) -> RandomConvFeatures:
        super().to(device)
        self.weights = [w.to(self.device) for w in self.weights]
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_size is not None and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        feats = []
        for i, w in enumerate(self.weights):
            if i > 0:
                x = F.avg_pool2d(x, 2)
            x = F.relu(F.conv2d(x, w, padding=1))
            flat = x.flatten(2)
            feats += [flat.mean(dim=2), flat.std(dim=2, unbiased=False)]
        return torch.cat(feats, dim=1)


def _weights_path(weights: str | os.PathLike[str] | None, env: str, what: str, hint: str) -> Path:
    from ..utils import resolve_path

    src = weights if weights is not None else os.environ.get(env)
    if not src:
        raise FileNotFoundError(
            f"{what} needs a local weights file and none was given: pass weights='/path/to/file.pth' or set the "
            f"environment variable {env}. Nothing is downloaded at run time. {hint} "
            "Without weights, use get_extractor('offline') (RandomConvFeatures) and report its name."
        )
    path = resolve_path(src)
    if not path.is_file():
        origin = "weights argument" if weights is not None else f"${env}"
        raise FileNotFoundError(f"{what}: weights file {path} (from the {origin}) does not exist. {hint}")
    return path


def _torchvision() -> Any:
    try:
        from ..utils import optional_import

        return optional_import("torchvision")
    except ImportError as exc:
        raise ImportError(
            "Inception-V3/ResNet50 feature extractors need torchvision (architectures only; weights come from a "
            "local file). Install the torchvision build that matches your torch version "
            f"(torch {torch.__version__}), e.g. `pip install torchvision` from the same index as torch; or use "
            "get_extractor('offline')."
        ) from exc


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"could not read {path} as a PyTorch state dict (weights-only load): {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


# --- Inception-V3 -------------------------------------------------------------------------------
def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's 3x3 average pool ignores the zero padding in its denominator
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _fid_block_a(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    b5 = self.branch5x5_2(self.branch5x5_1(x))
    b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_tf_avg_pool(x))], 1)


def _fid_block_c(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    d = x
    for name in ("branch7x7dbl_1", "branch7x7dbl_2", "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5"):
        d = getattr(self, name)(d)
    return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_tf_avg_pool(x))], 1)


def _fid_block_e(self: nn.Module, x: torch.Tensor, pool: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    b3 = self.branch3x3_1(x)
    b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
    d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
    return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pool(x))], 1)


class InceptionV3Features(FeatureExtractor):
    """Inception-V3 pool3 features (2048-d) for FID, from a local weights file.

    ``weights``: path to pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (standard TF-FID
    network; recommended) or torchvision's ``inception_v3_google-*.pth``; default
    ``$CMRKIT_FID_WEIGHTS``. Grey images are repeated to 3 channels, resized to 299 x 299
    (bilinear) and scaled to [-1, 1]. Raises FileNotFoundError (no weights) or ImportError (no
    torchvision) with instructions.
    """

    in_channels = (1, 3)
    feature_dim = 2048

    def __init__(
        self, weights: str | os.PathLike[str] | None = None, *, device: str | torch.device | None = None
    ) -> None:
        super().__init__(device)
        hint = (
            "Get pytorch-fid's pt_inception-2015-12-05-6726825d.pth (github.com/mseitzer/pytorch-fid releases) or "
            "torchvision's inception_v3_google weights on a machine with internet and copy the file here."
        )
        path = _weights_path(weights, FID_WEIGHTS_ENV, "InceptionV3Features (FID)", hint)
        tv = _torchvision()
        sd = _load_state_dict(path)
        if "fc.weight" not in sd:
            raise ValueError(f"{path} is not an Inception-V3 state dict (no 'fc.weight')")
        n_cls = int(sd["fc.weight"].shape[0])
        net = tv.models.inception_v3(
            weights=None, aux_logits=False, num_classes=n_cls, init_weights=False, transform_input=False
        )
        if n_cls == 1008:  # TF-FID weights: patch the blocks that differ from torchvision's
            for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):
                m = getattr(net, name)
                m.forward = types.MethodType(_fid_block_a, m)
            for name in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
                m = getattr(net, name)
                m.forward = types.MethodType(_fid_block_c, m)
            net.Mixed_7b.forward = types.MethodType(lambda s, x: _fid_block_e(s, x, _tf_avg_pool), net.Mixed_7b)
            net.Mixed_7c.forward = types.MethodType(
                lambda s, x: _fid_block_e(s, x, lambda t: F.max_pool2d(t, kernel_size=3, stride=1, padding=1)),
                net.Mixed_7c,
            )
            self.name = "InceptionV3-FID(pt_inception-2015-12-05)"
        else:
            self.name = "InceptionV3(torchvision-ImageNet)"
        sd = {k: v for k, v in sd.items() if not k.startswith("AuxLogits.")}
        try:
            net.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"{path} does not match torchvision's Inception-V3: {exc}") from exc
        self.net = net.eval().to(self.device)
        self.weights_file = str(path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2.0 * x - 1.0
        n = self.net
        for layer in (
            n.Conv2d_1a_3x3,
            n.Conv2d_2a_3x3,
            n.Conv2d_2b_3x3,
            n.maxpool1,
            n.Conv2d_3b_1x1,
            n.Conv2d_4a_3x3,
            n.maxpool2,
            n.Mixed_5b,
            n.Mixed_5c,
            n.Mixed_5d,
            n.Mixed_6a,
            n.Mixed_6b,
            n.Mixed_6c,
            n.Mixed_6d,
            n.Mixed_6e,
            n.Mixed_7a,
            n.Mixed_7b,
            n.Mixed_7c,
        ):
            x = layer(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


# --- ResNet50 ----------------------------------------------------------------------------------
def _to_keras_resnet(net: nn.Module) -> None:
    """Adapt torchvision's ResNet50 (v1.5) in place to the Keras ResNet50 used by RadImageNet:
    biased convolutions, stride on the first 1x1 conv of a down-sampling block, BN eps 1.001e-5."""
    for parent in list(net.modules()):
        for cname, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d) and child.bias is None:
                conv = nn.Conv2d(
                    child.in_channels,
                    child.out_channels,
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    child.dilation,
                    child.groups,
                    bias=True,
                )
                setattr(parent, cname, conv)
            elif isinstance(child, nn.BatchNorm2d):
                child.eps = 1.001e-5
    for lname in ("layer2", "layer3", "layer4"):
        block = getattr(net, lname)[0]
        block.conv1.stride, block.conv2.stride = (2, 2), (1, 1)


class ResNet50Features(FeatureExtractor):
    """ResNet50 global-average-pooled ``layer4`` features (2048-d) for FRD, from a local file.

    ``weights``: ``RadImageNet-ResNet50_notop.pth`` (RadImageNet, Mei et al. 2022; the file MONAI's
    perceptual-models hub loads; recommended for FRD) or a torchvision ResNet50 state dict;
    default ``$CMRKIT_FRD_WEIGHTS``. The variant is recognised from the file (biased convolutions
    mean RadImageNet). No resizing (fully convolutional, as in MONAI's tutorial) unless
    ``resize`` is given.
    """

    in_channels = (1, 3)
    feature_dim = 2048

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        *,
        resize: int | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__(device)
        hint = (
            "Get RadImageNet-ResNet50_notop.pth (Hugging Face MONAI/checkpoints) or torchvision's resnet50 "
            "weights on a machine with internet and copy the file here."
        )
        path = _weights_path(weights, FRD_WEIGHTS_ENV, "ResNet50Features (FRD)", hint)
        tv = _torchvision()
        sd = {k: v for k, v in _load_state_dict(path).items() if not k.startswith("fc.")}
        net = tv.models.resnet50(weights=None)
        net.fc = nn.Identity()
        self.radimagenet = "conv1.bias" in sd
        if self.radimagenet:
            _to_keras_resnet(net)
            self.name = "ResNet50(RadImageNet)"
            mean, std = (0.406, 0.456, 0.485), (1.0, 1.0, 1.0)  # BGR means, no scaling
        else:
            self.name = "ResNet50(torchvision-ImageNet)"
            mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        try:
            net.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise ValueError(
                f"{path} does not match a ResNet50 ({'RadImageNet' if self.radimagenet else 'torchvision'}"
                f" layout): {exc}"
            ) from exc
        self.net = net.eval().to(self.device)
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        self.resize = resize
        self.weights_file = str(path)

    def to(self, device: str | torch.device) -> ResNet50Features:
        super().to(device)
        self.mean, self.std = self.mean.to(self.device), self.std.to(self.device)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        elif self.radimagenet:
            x = x[:, [2, 1, 0]]  # RGB -> BGR
        if self.resize is not None:
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        x = n.layer4(n.layer3(n.layer2(n.layer1(x))))
        return x.mean(dim=(2, 3))


def get_extractor(
    kind: Literal["offline", "fid", "frd"] = "offline",
    *,
    weights: str | os.PathLike[str] | None = None,
    fallback: bool = False,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> FeatureExtractor:
    """Build a feature extractor.

    ``"offline"`` -> :class:`RandomConvFeatures` (``seed``); ``"fid"`` -> :class:`InceptionV3Features`;
    ``"frd"`` -> :class:`ResNet50Features`. With ``fallback=True`` a missing weights file or
    torchvision gives the offline extractor and a ``UserWarning`` instead of an error; the
    returned ``name`` always says which network was used.
    """
    if kind == "offline":
        return RandomConvFeatures(seed, device=device)
    if kind not in ("fid", "frd"):
        raise ValueError(f"kind must be 'offline', 'fid' or 'frd', got {kind!r}")
    cls = InceptionV3Features if kind == "fid" else ResNet50Features
    try:
        return cls(weights, device=device)
    except (FileNotFoundError, ImportError) as exc:
        if not fallback:
            raise
        ext = RandomConvFeatures(seed, device=device)
        warnings.warn(
            f"{kind.upper()} extractor unavailable ({exc}); using the offline extractor {ext.name}",
            UserWarning,
            stacklevel=2,
        )
        return ext


def extract_features(
    images: ArrayLike, extractor: FeatureExtractor, *, data_range: float = 1.0, batch_size: int = 64
) -> np.ndarray:
    """``extractor.extract(images, ...)``: ``(N, C, *extra, H, W)`` -> ``(N * n_extra, F)`` features."""
    return extractor.extract(images, data_range=data_range, batch_size=batch_size)


# =============================================================================================
# Fréchet distance
# =============================================================================================
def _features(x: ArrayLike, name: str, device: torch.device, dtype: torch.dtype, min_rows: int = 2) -> torch.Tensor:
    t = as_tensor(x, name, device, dtype)
    if t.ndim != 2:
        raise ValueError(f"{name} must be a (N, F) feature matrix, got shape {tuple(t.shape)}")
    if t.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} samples, got {t.shape[0]}")
    if t.shape[1] < 1:
        raise ValueError(f"{name} has no feature columns")
    return t


def _default_dtype(device: torch.device, dtype: torch.dtype | None) -> torch.dtype:
    if dtype is not None:
        return dtype
    return torch.float64 if device.type == "cpu" else torch.float32


def _trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """``tr((S1 S2)^{1/2})`` for symmetric PSD ``S1``, ``S2``: the eigenvalues of ``S1 S2`` equal
    those of the symmetric PSD ``L^T S2 L`` (``S1 = L L^T``; Cholesky, or the symmetric square
    root when ``S1`` is singular), whose square roots are summed (round-off negatives -> 0)."""
    try:
        root = np.linalg.cholesky(s1)
    except np.linalg.LinAlgError:  # singular S1 (fewer samples than features): symmetric root
        w1, v1 = np.linalg.eigh(s1)
        root = v1 * np.sqrt(np.clip(w1, 0, None))
    m = root.T @ s2 @ root
    w = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(w, 0, None)).sum())


def frechet_distance_from_stats(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2) (thesis eq. 5.6):

    ``||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^{1/2})``.

    The trace term is ``sum sqrt(eig(L^T sigma2 L))`` with ``sigma1 = L L^T`` (float64 symmetric
    eigenvalues, exact for PSD matrices and more stable than ``scipy.linalg.sqrtm(S1 @ S2)``,
    which pytorch-fid and MONAI use). Returns the squared distance, as FID does.
    """
    m1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    m2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    s1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    s2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    d = m1.shape[0]
    if m1.shape != (d,) or m2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"inconsistent shapes: mu1 {m1.shape}, sigma1 {s1.shape}, mu2 {m2.shape}, sigma2 {s2.shape}")
    for name, a in (("mu1", m1), ("mu2", m2), ("sigma1", s1), ("sigma2", s2)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    for name, a in (("sigma1", s1), ("sigma2", s2)):
        w = np.linalg.eigvalsh(a) if d <= 64 else None  # cheap PSD check for small matrices
        if w is not None and w.min() < -1e-8 * max(1.0, float(np.abs(w).max())):
            raise ValueError(f"{name} is not positive semi-definite")
    diff = m1 - m2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * _trace_sqrt_product(s1, s2))


def frechet_distance(feats_a: ArrayLike, feats_b: ArrayLike, *, device: str | torch.device | None = None) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(N, F)`` and ``(M, F)``.

    Means and unbiased covariances (``N - 1``, as pytorch-fid and MONAI's ``FIDMetric``) in
    float64 on ``device`` (default: the inputs' device, else CUDA), then
    :func:`frechet_distance_from_stats`. When the sets are small compared with ``F`` (``N M
    min(N, M) < F^3``, e.g. 1,000-2,000 samples of 2,048-d features) the trace term is computed
    exactly from the ``N x M`` cross-Gram matrix instead: with centred features ``A``, ``B``,
    ``tr((S_A S_B)^{1/2}) = ||A B^T||_* / sqrt((N-1)(M-1))`` (nuclear norm), which is faster and
    avoids ``F x F`` eigenproblems on rank-deficient covariances. Symmetric in its arguments.
    With Inception features this is FID, with ResNet50 features FRD (see the module docstring).
    """
    dev = resolve_device(device, feats_a, feats_b)
    a = _features(feats_a, "feats_a", dev, torch.float64)
    b = _features(feats_b, "feats_b", dev, torch.float64)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    (n, f), m = a.shape, b.shape[0]
    mu_a, mu_b = a.mean(0), b.mean(0)
    ac, bc = a - mu_a, b - mu_b
    if n * m * min(n, m) < f**3:
        diff = mu_a - mu_b
        tr_a, tr_b = (ac * ac).sum() / (n - 1), (bc * bc).sum() / (m - 1)
        nuc = torch.linalg.svdvals(ac @ bc.T).sum() / math.sqrt((n - 1) * (m - 1))
        return float(diff @ diff + tr_a + tr_b - 2.0 * nuc)
    return frechet_distance_from_stats(
        mu_a.cpu().numpy(), (ac.T @ ac / (n - 1)).cpu().numpy(), mu_b.cpu().numpy(), (bc.T @ bc / (m - 1)).cpu().numpy()
    )


@dataclass(frozen=True)
class FrechetResult:
    """A Fréchet distance with the extractor that produced it (print ``extractor`` in tables)."""

    value: float
    extractor: str
    n_real: int
    n_fake: int
    feature_dim: int

    def __float__(self) -> float:
        return self.value


def image_frechet_distance(
    real: ArrayLike, fake: ArrayLike, extractor: FeatureExtractor, *, data_range: float = 1.0, batch_size: int = 64
) -> FrechetResult:
    """FID/FRD-style distance between two image sets through ``extractor``.

    Images ``(N, C, *extra, H, W)``; every 2D slice is one sample (see module docstring).
    ``n_real``/``n_fake`` count slices.
    """
    fr = extractor.extract(real, data_range=data_range, batch_size=batch_size)
    ff = extractor.extract(fake, data_range=data_range, batch_size=batch_size)
    return FrechetResult(frechet_distance(fr, ff), extractor.name, fr.shape[0], ff.shape[0], fr.shape[1])


# =============================================================================================
# chunked pairwise distances
# =============================================================================================
def _sqdist(a: torch.Tensor, b: torch.Tensor, a2: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``(len(a), len(b))`` from norms and one matrix product."""
    return (a2[:, None] + b2[None, :] - 2.0 * (a @ b.T)).clamp_min_(0.0)


def _knn_sq_radii(x: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    x2 = (x * x).sum(1)
    out = []
    for i in range(0, x.shape[0], batch_size):
        d = _sqdist(x[i : i + batch_size], x, x2[i : i + batch_size], x2)
        out.append(torch.kthvalue(d, k + 1, dim=1).values)  # index 0 is the point itself
    return torch.cat(out)


def knn_radii(
    feats: ArrayLike,
    k: int = 3,
    *,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> np.ndarray:
    """Distance from each feature vector to its ``k``-th nearest neighbour in its own set.

    Sorting each row of the distance matrix *including the point itself* (distance 0 at index 0)
    and taking index ``k``, as Kynkäänniemi et al.'s reference code does (so ``k=3`` is the third
    neighbour other than the point).
    """
    dev = resolve_device(device, feats)
    x = _features(feats, "feats", dev, _default_dtype(dev, dtype), min_rows=k + 1)
    return _knn_sq_radii(_centre(x), int(k), batch_size).sqrt().cpu().numpy()


def _centre(*xs: torch.Tensor) -> Any:
    """Subtract the pooled mean (distances unchanged, less cancellation in ``|a|^2 + |b|^2 - 2ab``)."""
    mu = torch.cat([x for x in xs]).mean(0, keepdim=True)
    out = tuple(x - mu for x in xs)
    return out[0] if len(out) == 1 else out


class PrecisionRecall(NamedTuple):
    precision: float
    recall: float


def precision_recall(
    real: ArrayLike,
    fake: ArrayLike,
    *,
    k: int = 3,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> PrecisionRecall:
    """Improved precision and recall (Kynkäänniemi et al. 2019, NeurIPS) of feature sets.

    With ``r_k(phi)`` the distance from ``phi`` to its ``k``-th nearest neighbour within its own
    set (self included at rank 0, :func:`knn_radii`) and ``f(phi, S) = 1`` iff some ``phi' in S``
    has ``||phi - phi'|| <= r_k(phi')`` (inclusive, as the reference code):
    ``precision = mean_{g in fake} f(g, real)``, ``recall = mean_{r in real} f(r, fake)``.
    ``k = 3`` as in the paper and the thesis (Tables 5.1/6.1 "IP"/"IR").

    Distances are computed block-wise (``batch_size`` rows at a time; memory
    ``O(batch_size * max(N, M))``) on ``device`` (default: inputs' device, else CUDA) in ``dtype``
    (default float64 on CPU, float32 on GPU). 4,000 x 4,000 sets of 2,048-d features need a few
    hundred MB.
    """
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = resolve_device(device, real, fake)
    dt = _default_dtype(dev, dtype)
    r = _features(real, "real", dev, dt, min_rows=k + 1)
    g = _features(fake, "fake", dev, dt, min_rows=k + 1)
    if r.shape[1] != g.shape[1]:
        raise ValueError(f"feature dimensions differ: real {r.shape[1]} vs fake {g.shape[1]}")
    r, g = _centre(r, g)
    rad_r = _knn_sq_radii(r, k, batch_size)
    rad_g = _knn_sq_radii(g, k, batch_size)
    r2, g2 = (r * r).sum(1), (g * g).sum(1)
    prec_hits = torch.zeros(g.shape[0], dtype=torch.bool, device=dev)
    rec_hits = torch.zeros(r.shape[0], dtype=torch.bool, device=dev)
    for i in range(0, g.shape[0], batch_size):
        d = _sqdist(g[i : i + batch_size], r, g2[i : i + batch_size], r2)  # (chunk of fake, real)
        prec_hits[i : i + batch_size] = (d <= rad_r[None, :]).any(dim=1)
        rec_hits |= (d <= rad_g[i : i + batch_size, None]).any(dim=0)
    return PrecisionRecall(float(prec_hits.double().mean()), float(rec_hits.double().mean()))


# =============================================================================================
# MMD
# =============================================================================================
_CACHE_BYTES = 1 << 30  # keep the pooled float32 distance matrix for MMD when it fits in 1 GiB


def _median_sq_dist(
    z: torch.Tensor, batch_size: int, keep: bool = False
) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """Lower median of the squared pairwise distances ``i < j`` of ``z``; with ``keep`` also the
    row blocks of the distance matrix (float32) so a caller can reuse them."""
    z2 = (z * z).sum(1)
    vals, blocks = [], ([] if keep else None)
    cols = torch.arange(z.shape[0], device=z.device)
    for i in range(0, z.shape[0], batch_size):
        d = _sqdist(z[i : i + batch_size], z, z2[i : i + batch_size], z2)
        rows = torch.arange(i, i + d.shape[0], device=z.device)
        vals.append(d[cols[None, :] > rows[:, None]].to(torch.float32))
        if blocks is not None:
            blocks.append(d.to(torch.float32))
    return torch.cat(vals).median().to(z.dtype), blocks


def median_heuristic(
    x: ArrayLike,
    y: ArrayLike,
    *,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> float:
    """Median-heuristic Gaussian bandwidth (Gretton et al. 2012): ``sigma = median ||z_i - z_j||``
    over all unordered pairs ``i < j`` of the pooled sample ``z = x ∪ y`` (lower median)."""
    dev = resolve_device(device, x, y)
    dt = _default_dtype(dev, dtype)
    a, b = _features(x, "x", dev, dt), _features(y, "y", dev, dt)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    a, b = _centre(a, b)
    return float(_median_sq_dist(torch.cat([a, b]), batch_size)[0].sqrt())


def mmd(
    x: ArrayLike,
    y: ArrayLike,
    *,
    kernel: Literal["gaussian", "linear"] = "gaussian",
    bandwidth: float | Literal["median"] = "median",
    squared: bool = True,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> float:
    """Unbiased maximum mean discrepancy between samples ``x (n, F)`` and ``y (m, F)`` (thesis eq. 6.6).

    ``MMD^2 = 1/(n(n-1)) sum_{i!=j} k(x_i, x_j) + 1/(m(m-1)) sum_{i!=j} k(y_i, y_j)
    - 2/(nm) sum_{i,j} k(x_i, y_j)`` (Gretton et al. 2012, eq. 3). The unbiased estimate can be
    slightly negative when the distributions agree.

    Kernels
    -------
    ``"gaussian"`` (default, the thesis's kernel): ``k(a, b) = exp(-||a - b||^2 / (2 sigma^2))``
    with ``sigma = bandwidth``, or with ``bandwidth="median"`` the median heuristic
    (:func:`median_heuristic`: median pairwise distance of the pooled sample, computed on the same
    blocks). ``"linear"``: ``k(a, b) = a . b``, the kernel of MONAI's ``MMDMetric`` (unbiased,
    close to ``||mean(x) - mean(y)||^2``); computed in closed form, any ``n``/``m``.

    ``squared=True`` returns MMD^2 as eq. 6.6 defines it; ``False`` returns
    ``sqrt(max(MMD^2, 0))``. Distances are computed in blocks of ``batch_size`` rows on
    ``device`` in ``dtype`` (default float64 on CPU, float32 on GPU). The median needs the
    ``(n+m)(n+m-1)/2`` pair distances (float32, 128 MB for 4,000 + 4,000 samples); when the
    whole ``(n+m)^2`` float32 matrix fits in 1 GiB (n + m <= 16,384) it is kept from the median
    pass and reused for the kernel sums, otherwise the distances are recomputed block-wise.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = resolve_device(device, x, y)
    dt = _default_dtype(dev, dtype)
    a, b = _features(x, "x", dev, dt), _features(y, "y", dev, dt)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    n, m = a.shape[0], b.shape[0]
    if kernel == "linear":
        a64, b64 = a.double(), b.double()
        sa, sb = a64.sum(0), b64.sum(0)
        kxx = (sa @ sa - (a64 * a64).sum()) / (n * (n - 1))
        kyy = (sb @ sb - (b64 * b64).sum()) / (m * (m - 1))
        val = float(kxx + kyy - 2.0 * (sa @ sb) / (n * m))
    elif kernel == "gaussian":
        a, b = _centre(a, b)
        z = torch.cat([a, b])
        blocks: list[torch.Tensor] | None = None
        if isinstance(bandwidth, str):
            if bandwidth != "median":
                raise ValueError(f"bandwidth must be a positive number or 'median', got {bandwidth!r}")
            keep = 4 * (n + m) ** 2 <= _CACHE_BYTES  # reuse the distances of the median pass
            med, blocks = _median_sq_dist(z, batch_size, keep=keep)
            sigma2 = float(med)
            if sigma2 <= 0:
                raise ValueError("median pairwise distance is 0 (most samples identical); pass an explicit bandwidth")
        else:
            if not (np.isfinite(bandwidth) and bandwidth > 0):
                raise ValueError(f"bandwidth must be a positive number or 'median', got {bandwidth!r}")
            sigma2 = float(bandwidth) ** 2
        z2 = (z * z).sum(1)
        s_xx = s_yy = s_xy = 0.0
        for blk, i in enumerate(range(0, n + m, batch_size)):
            d = (
                blocks[blk].to(z.dtype)
                if blocks is not None
                else _sqdist(z[i : i + batch_size], z, z2[i : i + batch_size], z2)
            )
            kb = torch.exp(-d / (2.0 * sigma2)).double()
            rows = torch.arange(i, i + kb.shape[0], device=dev)
            kb[torch.arange(kb.shape[0], device=dev), rows] = 0.0  # drop i == j terms
            in_x = rows < n
            s_xx += float(kb[in_x, :n].sum())
            s_yy += float(kb[~in_x, n:].sum())
            s_xy += float(kb[in_x, n:].sum())
            if blocks is not None:
                blocks[blk] = None  # type: ignore[call-overload]  # free as we go
        val = s_xx / (n * (n - 1)) + s_yy / (m * (m - 1)) - 2.0 * s_xy / (n * m)
    else:
        raise ValueError(f"kernel must be 'gaussian' or 'linear', got {kernel!r}")
    return val if squared else math.sqrt(max(val, 0.0))


# =============================================================================================
# MS-SSIM / 4-G-r* diversity (Table 5.1) and similarity to real data (Table 6.1)
# =============================================================================================
@dataclass(frozen=True)
class SimilarityScores:
    """Per-pair similarity scores and their summary; ``float(obj)`` is the mean."""

    metric: str
    mean: float
    sd: float
    scores: np.ndarray = field(repr=False)
    pairs: np.ndarray = field(repr=False)

    def __float__(self) -> float:
        return self.mean


_PAIR_METRICS: dict[str, Callable[..., Any]] = {"ms_ssim": ms_ssim, "gr4_ssim": gr4_ssim, "ssim": ssim}


def _pair_metric(metric: str | Callable[..., Any]) -> tuple[str, Callable[..., Any]]:
    if callable(metric):
        return getattr(metric, "__name__", "custom"), metric
    if metric not in _PAIR_METRICS:
        raise ValueError(f"metric must be one of {sorted(_PAIR_METRICS)} or a callable, got {metric!r}")
    return metric, _PAIR_METRICS[metric]


def _triu_pairs(n: int, idx: np.ndarray) -> np.ndarray:
    """Map linear indices of the strict upper triangle (row-major) of an n x n matrix to (i, j)."""
    idx = idx.astype(np.int64)
    start = lambda i: i * (2 * n - i - 1) // 2  # noqa: E731 - first linear index of row i
    i = np.floor(((2 * n - 1) - np.sqrt((2 * n - 1) ** 2 - 8.0 * idx)) / 2).astype(np.int64)
    i = np.clip(i, 0, n - 2)
    for _ in range(3):  # fix float rounding at row boundaries
        i = np.where(start(i) > idx, i - 1, i)
        i = np.where(start(i + 1) <= idx, i + 1, i)
    j = idx - start(i) + i + 1
    return np.stack([i, j], axis=1)


def _choose(total: int, n_pairs: int | None, rng: np.random.Generator | int | None) -> np.ndarray:
    if n_pairs is None or n_pairs >= total:
        return np.arange(total, dtype=np.int64)
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1 or None, got {n_pairs}")
    gen = np.random.default_rng(rng)
    return np.sort(gen.choice(total, size=int(n_pairs), replace=False)).astype(np.int64)


def _score_pairs(
    a: Any,
    b: Any,
    pairs: np.ndarray,
    fn: Callable[..., Any],
    data_range: float,
    batch_size: int,
    device: str | torch.device | None,
    kwargs: dict[str, Any],
) -> np.ndarray:
    """fn(pred=a[pairs[:,0]], ref=b[pairs[:,1]]) in chunks of pairs."""
    dev = resolve_device(device, a, b)
    ta = as_tensor(a, "samples", dev)
    tb = ta if b is a else as_tensor(b, "reference", dev)
    out = []
    for s in range(0, len(pairs), batch_size):
        p = torch.from_numpy(pairs[s : s + batch_size]).to(dev)
        out.append(
            np.asarray(
                fn(ta[p[:, 0]], tb[p[:, 1]], data_range=data_range, reduction="none", device=dev, **kwargs),
                dtype=np.float64,
            )
        )
    return np.concatenate(out) if out else np.empty(0)


def _summary(name: str, scores: np.ndarray, pairs: np.ndarray) -> SimilarityScores:
    sd = float(np.std(scores, ddof=1)) if scores.size > 1 else math.nan
    return SimilarityScores(name, float(np.mean(scores)), sd, scores, pairs)


def mean_pairwise_similarity(
    samples: ArrayLike,
    *,
    metric: str | Callable[..., Any] = "ms_ssim",
    data_range: float = 1.0,
    n_pairs: int | None = None,
    rng: np.random.Generator | int | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    **metric_kwargs: Any,
) -> SimilarityScores:
    """Diversity of generated samples: mean similarity over pairs of distinct samples (Table 5.1).

    For unordered pairs ``i < j`` of ``samples`` ``(N, C, *extra, H, W)``, the score is
    ``metric(samples[j], samples[i])`` (``samples[i]`` plays the reference; this matters only for
    the asymmetric 4-G-r*), each computed per 2D slice and averaged over slices/frames as in
    :func:`cmrkit.metrics.image.ms_ssim` / :func:`~cmrkit.metrics.image.gr4_ssim`. **Lower means
    more diverse.** ``metric`` is ``"ms_ssim"``, ``"gr4_ssim"``, ``"ssim"`` or a callable
    ``f(pred, ref, *, data_range, reduction, device, **metric_kwargs) -> (B,)`` like those.
    ``n_pairs=None`` uses all ``N(N-1)/2`` pairs; an integer draws that many
    distinct pairs uniformly without replacement with ``rng`` (e.g. 1,000 pairs for N = 1,000).
    ``metric_kwargs`` go to the metric (e.g. ``kernel_size``, ``weights`` for MS-SSIM).
    """
    name, fn = _pair_metric(metric)
    n = len(samples)
    if n < 2:
        raise ValueError(f"samples must hold at least 2 items, got {n}")
    L = check_data_range(data_range)
    lin = _choose(n * (n - 1) // 2, n_pairs, rng)
    pairs = _triu_pairs(n, lin)
    scores = _score_pairs(samples, samples, pairs[:, ::-1].copy(), fn, L, batch_size, device, metric_kwargs)
    return _summary(name, scores, pairs)


def mean_similarity_to_reference(
    generated: ArrayLike,
    reference: ArrayLike,
    *,
    metric: str | Callable[..., Any] = "ms_ssim",
    data_range: float = 1.0,
    pairing: Literal["paired", "all"] = "paired",
    n_pairs: int | None = None,
    rng: np.random.Generator | int | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    **metric_kwargs: Any,
) -> SimilarityScores:
    """Fidelity to real data: mean similarity of generated samples to real reference samples (Table 6.1).

    ``metric(generated[i], reference[j])`` (real image as the reference) per 2D slice, averaged
    over slices/frames. ``pairing="paired"`` compares ``generated[i]`` with ``reference[i]`` (e.g.
    a sample generated with the covariates of real subject ``i``; equal lengths required);
    ``pairing="all"`` uses every (generated, real) combination, or ``n_pairs`` of them drawn
    without replacement with ``rng``. **Higher means more similar.**
    """
    name, fn = _pair_metric(metric)
    L = check_data_range(data_range)
    ng, nr = len(generated), len(reference)
    if ng < 1 or nr < 1:
        raise ValueError(f"generated and reference must be non-empty, got {ng} and {nr}")
    if pairing == "paired":
        if ng != nr:
            raise ValueError(f"pairing='paired' needs as many generated as reference samples, got {ng} and {nr}")
        lin = _choose(ng, n_pairs, rng)
        pairs = np.stack([lin, lin], axis=1)
    elif pairing == "all":
        lin = _choose(ng * nr, n_pairs, rng)
        pairs = np.stack([lin // nr, lin % nr], axis=1)
    else:
        raise ValueError(f"pairing must be 'paired' or 'all', got {pairing!r}")
    scores = _score_pairs(generated, reference, pairs, fn, L, batch_size, device, metric_kwargs)
    return _summary(name, scores, pairs)
