"""Feature extractors for set-level metrics of generative models (FID, FRD, and an offline default).

Fréchet distance, precision/recall and MMD (:mod:`cmrkit.metrics.generative`) compare two sets of
feature vectors ``(N, F)``. The features come from a pluggable :class:`FeatureExtractor`; every
extractor has a ``name`` that tables must print next to the numbers, because values from different
extractors are not comparable:

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
one sample** of the feature distribution (the per-slice protocol of the 2.5D FID of MONAI's MAISI
tutorial, ``compute_fid_2-5d_ct.py``, XY plane only).
"""

from __future__ import annotations

import math
import os
import types
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..utils import resolve_device
from .inputs import as_tensor, check_data_range

__all__ = [
    "FeatureExtractor",
    "RandomConvFeatures",
    "InceptionV3Features",
    "ResNet50Features",
    "get_extractor",
    "extract_features",
    "FID_WEIGHTS_ENV",
    "FRD_WEIGHTS_ENV",
]

ArrayLike = Any
FID_WEIGHTS_ENV = "CMRKIT_FID_WEIGHTS"
FRD_WEIGHTS_ENV = "CMRKIT_FRD_WEIGHTS"


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
