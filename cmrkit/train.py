"""One training loop for every chapter: Adam, AMP, validation-loss model selection,
atomic weights-only checkpoints, exact resume, and DDP under ``torchrun``.

Public API
----------
:func:`fit`
    ``fit(model, train_ds, val_ds, *, loss_fn, epochs, batch_size, ...) -> FitResult``.
    ``loss_fn(model, batch) -> (loss, logs)``: ``model`` is the *unwrapped* module (never the DDP
    wrapper; gradient synchronisation still happens, see below), ``batch`` is the collated batch
    already moved to the device, ``loss`` a scalar tensor and ``logs`` a dict of scalar tensors or
    floats that are averaged over the epoch (weighted by batch size) into the history.
:func:`load_checkpoint`
    Load the best (or last) weights of a :func:`fit` checkpoint into a model.
:func:`save_model` / :func:`load_model`
    Final artefacts: weights + JSON-serialisable config + extras (e.g. a latent ``scale_factor``).

Determinism and resume
----------------------
Everything random in :func:`fit` derives from ``seed``: the shuffling of epoch ``e`` comes from
``SeedSequence([seed, e])``, and the torch RNG used by the model during epoch ``e`` on rank ``r``
(reparameterisation noise, dropout) is re-seeded from ``SeedSequence([seed, e, r, ...])`` at the
start of the epoch, inside :func:`torch.random.fork_rng` so the caller's global RNG state is left
untouched. Because the RNG is re-derived at every epoch boundary, a checkpoint written after epoch
``e`` (weights, optimizer and grad-scaler state, BatchNorm buffers, history, best weights) holds all
the state needed: resuming yields bit-identical weights and history to an uninterrupted run on the
same hardware (``tests/test_train.py`` checks this). A run interrupted mid-epoch restarts that epoch.
Datasets must not draw from global RNGs (kit convention: explicit ``rng``/``seed``).

Distributed data parallel
-------------------------
When the environment variable ``WORLD_SIZE`` is > 1 (``torchrun --nproc_per_node N ...``),
:func:`fit` initialises the default process group if needed (``nccl`` on CUDA, ``gloo`` on CPU),
uses ``cuda:LOCAL_RANK``, wraps ``model`` + ``loss_fn`` in one module under
:class:`~torch.nn.parallel.DistributedDataParallel` (so ``loss_fn`` may call any model method and
gradients are still all-reduced), splits each epoch's permutation across ranks (padded to equal
length like :class:`~torch.utils.data.DistributedSampler`), all-reduces the epoch statistics so
every rank has the same history and model selection, broadcasts module buffers (BatchNorm running
statistics) from rank 0 at the end of each epoch, and lets only rank 0 write checkpoints and show
progress. ``batch_size`` is per process. Resuming reads the checkpoint on every rank, so the
checkpoint folder must be visible to all ranks. Try it with ``python -m cmrkit.train --selftest``
under ``torchrun --standalone --nproc_per_node 2``.

Adversarial training
--------------------
``fit(..., adversarial=Adversarial(d_loss_fn=...))`` trains a model that holds its discriminator as a
submodule (``model.discriminator`` by default) with two Adam optimisers: the discriminator's
parameters get their own (``Adversarial.lr`` / ``betas``), every other parameter is the generator's.
Each training step first takes ``d_steps`` discriminator steps on ``d_loss_fn(model, batch)`` and then
one generator step on ``loss_fn(model, batch)`` plus ``weight * g_loss_fn(model, batch)`` (the
alternating updates of Goodfellow et al. 2014, Algorithm 1). During the first ``warmup_steps``
generator steps the discriminator is neither trained nor used (the adversarial term is off), as in
MONAI's VAE-GAN tutorials. The discriminator's optimiser state is checkpointed with the rest, so a
resumed adversarial run continues exactly; without ``adversarial`` nothing changes (same
checkpoints, same histories). The history adds ``train/d_loss`` and ``train/d/<key>`` for the
discriminator's logs (epoch means over the steps that trained it) and ``train/adv`` for the
generator's adversarial term.

Weight averaging (EMA)
----------------------
``fit(..., ema_decay=d)`` keeps an exponential moving average of the weights next to the trained ones
(:class:`torch.optim.swa_utils.AveragedModel` updated after every optimiser step) with the warm-up of
diffusers' ``EMAModel`` / TensorFlow's ``ExponentialMovingAverage``: after ``n`` updates the decay is
``min(d, (1 + n) / (10 + n))``, so the first weights are forgotten within a short run. Validation,
model selection and the returned weights are then the averaged ones (buffers are copied from the
trained model); the checkpoint holds both, so a resumed run continues exactly. Averaged weights are
standard for diffusion models (Ho et al. 2020; Rombach et al. 2022), whose last raw weights jitter
from step to step.

Mixed precision
---------------
``amp="auto"``: bf16 autocast on CUDA (fp16 + gradient scaling where the GPU lacks bf16), nothing on
CPU. ``"bf16"`` forces bf16 autocast (also on CPU), ``"fp16"`` fp16 + :class:`torch.amp.GradScaler`
(CUDA only), ``"none"``/``False`` full precision.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from cmrkit.utils import atomic_path, resolve_device

__all__ = [
    "Adversarial",
    "FitResult",
    "SavedModel",
    "fit",
    "ema_decay_setting",
    "load_checkpoint",
    "save_model",
    "load_model",
    "cli_main",
    "CHECKPOINT_NAME",
]

LossFn = Callable[[nn.Module, Any], "tuple[torch.Tensor, Mapping[str, Any]]"]

#: File name of the training checkpoint inside ``checkpoint_dir``.
CHECKPOINT_NAME = "checkpoint.pt"
_CKPT_FORMAT = "cmrkit-fit-v1"
_MODEL_FORMAT = "cmrkit-model-v1"


@dataclass
class FitResult:
    """Outcome of :func:`fit`.

    Attributes
    ----------
    model : nn.Module
        The trained (unwrapped) model with the best-validation weights loaded, in eval mode.
    history : list of dict
        One dict per epoch: ``epoch`` (1-based), ``step`` (optimizer steps so far), ``lr``,
        ``train_loss``, ``val_loss`` (``nan`` without validation data), and the sample-weighted
        epoch means of every ``logs`` key as ``train/<key>`` and ``val/<key>``. No timings, so a
        resumed run has exactly the same history as an uninterrupted one.
    best_epoch : int
        1-based epoch whose weights were selected (lowest ``val_loss``; lowest ``train_loss``
        when ``val_ds`` is None).
    best_val : float
        The selected epoch's validation loss (its training loss when ``val_ds`` is None).
    checkpoint_path : Path or None
        The checkpoint file, when ``checkpoint_dir`` was given.
    seconds : float
        Wall time of this call (resumed earlier calls not included).
    """

    model: nn.Module
    history: list[dict[str, float]]
    best_epoch: int
    best_val: float
    checkpoint_path: Path | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class Adversarial:
    """The adversarial part of a :func:`fit` (module docstring, *Adversarial training*).

    Attributes
    ----------
    d_loss_fn
        ``d_loss_fn(model, batch) -> (loss, logs)``: the discriminator's loss (it should detach or
        regenerate the generator's samples under ``torch.no_grad``; only the discriminator steps).
    g_loss_fn
        Optional ``g_loss_fn(model, batch) -> (loss, logs)``: the generator's adversarial term, added to
        ``loss_fn`` with ``weight`` once the warm-up is over. ``None`` when ``loss_fn`` already is the
        generator's whole (adversarial) loss.
    discriminator
        Attribute (dotted path) of the discriminator submodule of the model.
    weight
        Weight of ``g_loss_fn`` in the generator's loss.
    warmup_steps
        Generator steps taken before the discriminator is trained and the adversarial term switched on.
    d_steps
        Discriminator steps per generator step (on the same batch).
    lr, betas, weight_decay
        The discriminator's Adam settings (``None``: the generator's ``lr`` / ``betas``).
    """

    d_loss_fn: Callable[[nn.Module, Any], Any]
    g_loss_fn: Callable[[nn.Module, Any], Any] | None = None
    discriminator: str = "discriminator"
    weight: float = 1.0
    warmup_steps: int = 0
    d_steps: int = 1
    lr: float | None = None
    betas: tuple[float, float] | None = None
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if not callable(self.d_loss_fn):
            raise ValueError("Adversarial: d_loss_fn must be callable as d_loss_fn(model, batch) -> (loss, logs)")
        if self.g_loss_fn is not None and not callable(self.g_loss_fn):
            raise ValueError("Adversarial: g_loss_fn must be callable or None")
        if not (math.isfinite(float(self.weight)) and float(self.weight) >= 0):
            raise ValueError(f"Adversarial: weight must be a finite number >= 0, got {self.weight}")
        if int(self.warmup_steps) < 0 or int(self.d_steps) < 1:
            raise ValueError(
                f"Adversarial: warmup_steps must be >= 0 and d_steps >= 1, got {self.warmup_steps}, {self.d_steps}"
            )
        if self.lr is not None and not float(self.lr) > 0:
            raise ValueError(f"Adversarial: lr must be > 0 or None, got {self.lr}")
        if self.betas is not None:
            b = tuple(float(v) for v in self.betas)
            if len(b) != 2 or not all(0.0 <= v < 1.0 for v in b):
                raise ValueError(f"Adversarial: betas must be two numbers in [0, 1), got {self.betas}")

    def module(self, model: nn.Module) -> nn.Module:
        """The discriminator submodule of ``model`` (a clear error when it is missing)."""
        obj: Any = model
        for part in self.discriminator.split("."):
            if not hasattr(obj, part):
                name = type(model).__name__
                raise ValueError(
                    f"fit(adversarial): {name} has no submodule {self.discriminator!r} (the discriminator)"
                )
            obj = getattr(obj, part)
        if not isinstance(obj, nn.Module) or not any(True for _ in obj.parameters()):
            raise ValueError(f"fit(adversarial): {self.discriminator!r} is not a module with parameters")
        return obj

    def settings(self, lr: float, betas: tuple[float, float]) -> dict[str, Any]:
        """What a checkpoint records (and a resume must match)."""
        return {
            "discriminator": self.discriminator,
            "weight": float(self.weight),
            "warmup_steps": int(self.warmup_steps),
            "d_steps": int(self.d_steps),
            "lr": float(self.lr if self.lr is not None else lr),
            "betas": [float(v) for v in (self.betas if self.betas is not None else betas)],
            "weight_decay": float(self.weight_decay),
        }


class SavedModel(NamedTuple):
    """What :func:`load_model` returns: the built model (eval mode), its config and extras."""

    model: nn.Module
    config: dict[str, Any]
    extra: dict[str, Any]


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _mix_seed(*keys: int) -> int:
    """A 63-bit seed derived from integer keys (NumPy ``SeedSequence``; no collisions between
    e.g. ``(seed=0, epoch=1)`` and ``(seed=1, epoch=0)``)."""
    state = np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFFFFFFFFFFFFFF


class _EpochSampler(torch.utils.data.Sampler[int]):
    """Indices of one epoch for one rank.

    ``shuffle``: a permutation drawn from ``_mix_seed(seed, epoch)`` (identical on every rank),
    otherwise ``0..n-1``. ``pad``: the list is extended cyclically to a multiple of ``world`` so all
    ranks run the same number of steps (as :class:`~torch.utils.data.DistributedSampler`). Rank
    ``r`` takes elements ``r, r + world, ...``.
    """

    def __init__(self, n: int, *, seed: int, epoch: int, rank: int, world: int, shuffle: bool, pad: bool):
        self.n, self.seed, self.epoch, self.rank, self.world = n, seed, epoch, rank, world
        self.shuffle, self.pad = shuffle, pad

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch))
            idx = torch.randperm(self.n, generator=g).tolist()
        else:
            idx = list(range(self.n))
        if self.pad and self.world > 1:
            total = math.ceil(self.n / self.world) * self.world
            while len(idx) < total:
                idx += idx[: total - len(idx)]
        return idx[self.rank :: self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices())

    def __len__(self) -> int:
        if self.pad and self.world > 1:
            return math.ceil(self.n / self.world)
        return len(range(self.rank, self.n, self.world))


class _LossModule(nn.Module):
    """Puts ``loss_fn(model, batch)`` behind ``forward`` so DDP's gradient hooks see the call."""

    def __init__(self, model: nn.Module, loss_fn: LossFn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> tuple[torch.Tensor, Mapping[str, Any]]:
        return self.loss_fn(self.model, batch)


class _AdversarialModule(nn.Module):
    """DDP-visible wrapper of the three losses of an adversarial fit: ``forward(batch, "d")`` is the
    discriminator's loss, ``forward(batch, "g", adv_on)`` the generator's (``loss_fn`` plus the weighted
    adversarial term when ``adv_on``)."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, adversarial: Adversarial):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        self.adversarial = adversarial

    def forward(self, batch: Any, which: str, adv_on: bool = True) -> tuple[torch.Tensor, dict[str, Any]]:
        adv = self.adversarial
        if which == "d":
            loss, logs = adv.d_loss_fn(self.model, batch)
            return loss, dict(logs)
        loss, logs = self.loss_fn(self.model, batch)
        logs = dict(logs)
        if adv_on and adv.g_loss_fn is not None:
            a, alogs = adv.g_loss_fn(self.model, batch)
            loss = loss + float(adv.weight) * a
            logs.update({"adv": a.detach(), **{f"adv/{k}": v for k, v in alogs.items()}})
        return loss, logs


def _to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) dict/list/tuple batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=device.type == "cuda")
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(_to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _batch_len(batch: Any) -> int:
    """Number of samples in a collated batch: the leading size of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    if isinstance(batch, Mapping):
        items = list(batch.values())
    elif isinstance(batch, (list, tuple)):
        items = list(batch)
    else:
        items = []
    for v in items:
        try:
            return _batch_len(v)
        except ValueError:
            continue
    raise ValueError("fit: cannot find a tensor in the batch to count its samples")


def _train_device(device: str | torch.device, local_rank: int, distributed: bool) -> torch.device:
    try:
        dev = resolve_device(device, local_rank=local_rank if distributed else None)
    except ValueError as exc:
        raise ValueError(f"fit: {exc}") from None
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(dev)
    return dev


def _amp_setup(amp: str | bool | None, dev: torch.device) -> tuple[torch.dtype | None, bool]:
    """Return (autocast dtype or None, use GradScaler)."""
    key = (
        {True: "auto", False: "none", None: "none"}.get(amp, amp)
        if isinstance(amp, (bool, type(None)))
        else str(amp).lower()
    )
    if key in ("none", "off", "fp32", "no"):
        return None, False
    if key == "auto":
        if dev.type != "cuda":
            return None, False
        return (torch.bfloat16, False) if torch.cuda.is_bf16_supported() else (torch.float16, True)
    if key == "bf16":
        return torch.bfloat16, False
    if key == "fp16":
        if dev.type != "cuda":
            raise ValueError("fit: amp='fp16' needs a CUDA device; use amp='bf16' or 'none' on CPU")
        return torch.float16, True
    raise ValueError(f"fit: amp must be 'auto', 'bf16', 'fp16', 'none' or a bool, got {amp!r}")


class _Meter:
    """Sample-weighted sums of the loss and the logs, kept on the device (no per-step sync).

    Each key is averaged over the batches that logged it (every key of an ordinary fit is logged on
    every batch; a discriminator's logs only on the steps that trained it)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, loss: torch.Tensor | None, logs: Mapping[str, Any], n: int) -> None:
        dtype = torch.float64 if self.device.type in ("cpu", "cuda") else torch.float32
        items = {**({"loss": loss} if loss is not None else {}), **{str(k): v for k, v in logs.items()}}
        for k, v in items.items():
            t = v.detach() if isinstance(v, torch.Tensor) else torch.tensor(float(v))
            t = t.to(self.device, dtype).reshape(-1).mean() * n
            self.sums[k] = self.sums[k] + t if k in self.sums else t
            self.counts[k] = self.counts.get(k, 0) + n

    def means(self, distributed: bool) -> dict[str, float]:
        keys = sorted(self.sums)
        if not keys:
            return {}
        dtype = torch.float64 if self.device.type in ("cpu", "cuda") else torch.float32
        counts = torch.tensor([float(self.counts[k]) for k in keys], device=self.device, dtype=dtype)
        vec = torch.cat([torch.stack([self.sums[k] for k in keys]), counts])
        if distributed:
            torch.distributed.all_reduce(vec)
        vals = vec.cpu().tolist()
        m = len(keys)
        return {k: vals[i] / vals[m + i] for i, k in enumerate(keys) if vals[m + i] > 0}


def _discriminator_step(
    wrapped: nn.Module,
    batch: Any,
    d_optimizer: torch.optim.Optimizer,
    d_scaler: torch.amp.GradScaler | None,
    d_params: list[nn.Parameter],
    autocast: Callable[[], Any],
    grad_clip: float | None,
    epoch: int,
    step: int,
) -> tuple[torch.Tensor, Mapping[str, Any]]:
    """One discriminator update on ``batch``; returns its (detached) loss and logs."""
    with autocast():
        d_loss, d_logs = wrapped(batch, "d")
    if d_loss.ndim != 0:
        raise ValueError(f"fit: d_loss_fn must return a scalar loss, got shape {tuple(d_loss.shape)}")
    if not torch.isfinite(d_loss.detach()):
        raise FloatingPointError(
            f"fit: non-finite discriminator loss {d_loss.item()} at epoch {epoch + 1}, step {step + 1}"
        )
    d_optimizer.zero_grad(set_to_none=True)
    if d_scaler is not None:
        d_scaler.scale(d_loss).backward()
        if grad_clip is not None:
            d_scaler.unscale_(d_optimizer)
            torch.nn.utils.clip_grad_norm_(d_params, grad_clip)
        d_scaler.step(d_optimizer)
        d_scaler.update()
    else:
        d_loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(d_params, grad_clip)
        d_optimizer.step()
    return d_loss.detach(), d_logs


def _settings(
    seed: int, batch_size: int, lr: float, weight_decay: float, n_train: int, n_val: int, world: int, model: nn.Module
) -> dict[str, Any]:
    cls = type(model)
    return {
        "seed": int(seed),
        "batch_size": int(batch_size),
        "lr": float(lr),
        "weight_decay": float(weight_decay),
        "n_train": int(n_train),
        "n_val": int(n_val),
        "world_size": int(world),
        "model_class": f"{cls.__module__}:{cls.__qualname__}",
    }


def ema_decay_setting(value: Any, name: str) -> float | None:
    """A profile's weight-averaging setting (e.g. ``ch5.diffusion_ema``) as :func:`fit`'s ``ema_decay``:
    None for null, else the decay, which must be a number in (0, 1); a clear error naming ``name`` otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must be a decay in (0, 1) or null, got {value!r}")
    return float(value)


def _ema(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An :class:`~torch.optim.swa_utils.AveragedModel` of ``model``'s parameters: EMA with warm-up."""

    @torch.no_grad()
    def avg(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        n = float(n_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        torch._foreach_lerp_(averaged, current, 1.0 - d)

    return torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=avg, use_buffers=False)


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _save_torch(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _load_torch(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what}: no file at {p}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files
        raise ValueError(f"{what}: {p} is not a readable weights-only torch file ({exc})") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{what}: {p} does not hold a dict")
    return obj


# --------------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------------


def fit(
    model: nn.Module,
    train_ds: torch.utils.data.Dataset,
    val_ds: torch.utils.data.Dataset | None,
    *,
    loss_fn: LossFn,
    epochs: int,
    batch_size: int,
    lr: float = 5e-4,
    weight_decay: float = 1e-5,
    device: str | torch.device = "cpu",
    seed: int = 0,
    amp: str | bool = "auto",
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    progress: bool = True,
    num_workers: int = 0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    max_steps: int | None = None,
    grad_clip: float | None = None,
    find_unused_parameters: bool = False,
    betas: tuple[float, float] = (0.9, 0.999),
    keep: str = "best",
    adversarial: Adversarial | None = None,
    ema_decay: float | None = None,
) -> FitResult:
    """Train ``model`` with Adam and keep the weights of the epoch with the lowest validation loss.

    Parameters
    ----------
    model : nn.Module
        Model to train (moved to ``device`` in place).
    train_ds, val_ds : Dataset
        Map-style datasets (``len`` and ``__getitem__``). ``val_ds`` may be None: the training loss
        then selects the epoch.
    loss_fn : callable
        ``loss_fn(model, batch) -> (loss, logs)`` (see module docstring). Called in train mode with
        gradients, and in eval mode under ``torch.no_grad`` for validation.
    epochs : int
        Total number of epochs (a resumed run continues up to this number).
    batch_size : int
        Samples per step and per process. The last batch of an epoch may be smaller.
    lr, weight_decay : float
        Adam learning rate and (L2) weight decay; defaults are the thesis values (§4.3.3:
        lr 5e-4, weight decay 1e-5).
    device : str or torch.device
        ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``. Under DDP on CUDA, ``cuda:LOCAL_RANK``.
    seed : int
        Seeds the shuffling and the model's RNG (see module docstring).
    amp : {"auto", "bf16", "fp16", "none"} or bool
        Mixed precision (see module docstring).
    checkpoint_dir : path, optional
        Where ``checkpoint.pt`` is written (atomically) after every epoch; relative paths are
        anchored at the repository root. It holds model, optimizer and grad-scaler state, epoch,
        step, history, settings and the best weights.
    resume : bool
        Continue from ``checkpoint_dir/checkpoint.pt`` when it exists. Its settings (seed, batch
        size, lr, weight decay, dataset sizes, world size, model class) must match, otherwise a
        ValueError is raised. ``False`` starts afresh and overwrites it.
    progress : bool
        Show a tqdm bar per epoch and one summary line per epoch (rank 0 only).
    num_workers : int
        DataLoader workers. Worker seeds derive from ``seed`` and the epoch.
    collate_fn : callable, optional
        DataLoader collate function (default :func:`torch.utils.data.default_collate`).
    max_steps : int, optional
        Stop after this many optimizer steps in total (the current epoch is cut short, validated,
        recorded and checkpointed). Meant for smoke runs and step-budgeted trainings.
    grad_clip : float, optional
        Clip the global gradient norm to this value.
    find_unused_parameters : bool
        Passed to DistributedDataParallel (needed when some parameters get no gradient).
    betas : (float, float)
        Adam's ``(beta1, beta2)`` (PyTorch default ``(0.9, 0.999)``; the thesis trains its diffusion
        models with ``(0.9, 0.99)``, §5.2.1). Recorded in the checkpoint settings when not the default.
    keep : {"best", "last"}
        ``"best"`` (default) returns the weights of the epoch with the lowest validation loss
        (training loss without ``val_ds``); ``"last"`` returns the weights after the last epoch
        (diffusion models, whose noise-prediction loss is a poor guide to sample quality). The
        history and the checkpoint are the same either way; ``best_epoch``/``best_val`` then
        describe the last epoch.
    ema_decay : float, optional
        Keep, validate and return an exponential moving average of the weights with this decay in
        (0, 1) (module docstring, "Weight averaging"). Recorded in the checkpoint settings when set.
    adversarial : Adversarial, optional
        Train a generator against the discriminator submodule of ``model`` (two optimisers,
        alternating steps, warm-up; module docstring). ``loss_fn`` is then the generator's loss;
        validation evaluates ``loss_fn`` alone. Recorded in the checkpoint settings.

    Returns
    -------
    FitResult

    Raises
    ------
    ValueError
        Bad arguments, empty datasets, or a checkpoint from different settings.
    FloatingPointError
        A non-finite training or validation loss (the message names epoch and step).
    """
    if not callable(loss_fn):
        raise ValueError("fit: loss_fn must be callable as loss_fn(model, batch) -> (loss, logs)")
    if int(epochs) < 1:
        raise ValueError(f"fit: epochs must be >= 1, got {epochs}")
    if int(batch_size) < 1:
        raise ValueError(f"fit: batch_size must be >= 1, got {batch_size}")
    if max_steps is not None and int(max_steps) < 1:
        raise ValueError(f"fit: max_steps must be >= 1 or None, got {max_steps}")
    if keep not in ("best", "last"):
        raise ValueError(f"fit: keep must be 'best' or 'last', got {keep!r}")
    if adversarial is not None and not isinstance(adversarial, Adversarial):
        raise ValueError(
            f"fit: adversarial must be a cmrkit.train.Adversarial or None, got {type(adversarial).__name__}"
        )
    if ema_decay is not None and not (0.0 < float(ema_decay) < 1.0):
        raise ValueError(f"fit: ema_decay must be in (0, 1) or None, got {ema_decay}")
    betas = (float(betas[0]), float(betas[1]))
    if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
        raise ValueError(f"fit: betas must be two numbers in [0, 1), got {betas}")
    n_train = len(train_ds)  # type: ignore[arg-type]
    n_val = len(val_ds) if val_ds is not None else 0  # type: ignore[arg-type]
    if n_train == 0:
        raise ValueError("fit: train_ds is empty")
    if val_ds is not None and n_val == 0:
        raise ValueError("fit: val_ds is empty (pass None to select on the training loss)")

    t0 = time.perf_counter()
    world_env = int(os.environ.get("WORLD_SIZE", "1"))
    distributed = world_env > 1
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    created_group = False
    dev = _train_device(device, local_rank, distributed)
    if distributed:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
            created_group = True
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    is_main = rank == 0
    try:
        return _fit(
            model,
            train_ds,
            val_ds,
            loss_fn=loss_fn,
            epochs=int(epochs),
            batch_size=int(batch_size),
            lr=lr,
            weight_decay=weight_decay,
            dev=dev,
            seed=int(seed),
            amp=amp,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            progress=progress and is_main,
            num_workers=num_workers,
            collate_fn=collate_fn,
            max_steps=max_steps,
            grad_clip=grad_clip,
            find_unused_parameters=find_unused_parameters,
            betas=betas,
            keep=keep,
            adversarial=adversarial,
            ema_decay=None if ema_decay is None else float(ema_decay),
            rank=rank,
            world=world,
            distributed=distributed,
            n_train=n_train,
            n_val=n_val,
            t0=t0,
        )
    finally:
        if created_group:
            torch.distributed.destroy_process_group()


def _fit(
    model,
    train_ds,
    val_ds,
    *,
    loss_fn,
    epochs,
    batch_size,
    lr,
    weight_decay,
    dev,
    seed,
    amp,
    checkpoint_dir,
    resume,
    progress,
    num_workers,
    collate_fn,
    max_steps,
    grad_clip,
    find_unused_parameters,
    betas,
    keep,
    adversarial,
    ema_decay,
    rank,
    world,
    distributed,
    n_train,
    n_val,
    t0,
) -> FitResult:
    from tqdm.auto import tqdm

    is_main = rank == 0
    model.to(dev)
    amp_dtype, use_scaler = _amp_setup(amp, dev)
    d_params: list[nn.Parameter] = []
    d_optimizer = d_scaler = None
    if adversarial is not None:
        d_params = list(adversarial.module(model).parameters())
        d_ids = {id(p) for p in d_params}
        g_params = [p for p in model.parameters() if id(p) not in d_ids]
        if not g_params:
            raise ValueError("fit(adversarial): the model has no parameters outside its discriminator (no generator)")
        adv_settings = adversarial.settings(lr, betas)
        d_optimizer = torch.optim.Adam(
            d_params,
            lr=adv_settings["lr"],
            weight_decay=adv_settings["weight_decay"],
            betas=tuple(adv_settings["betas"]),
        )
        d_scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    else:
        g_params = list(model.parameters())
    optimizer = torch.optim.Adam(g_params, lr=lr, weight_decay=weight_decay, betas=betas)
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    settings = _settings(seed, batch_size, lr, weight_decay, n_train, n_val, world, model)
    if betas != (0.9, 0.999):  # only when set, so checkpoints written before the option still resume
        settings["betas"] = list(betas)
    if adversarial is not None:  # likewise only when set
        settings["adversarial"] = adv_settings
    ema = None
    if ema_decay is not None:  # likewise only when set
        settings["ema_decay"] = ema_decay
        ema = _ema(model, ema_decay)

    history: list[dict[str, float]] = []
    start_epoch, step = 0, 0
    best_epoch, best_val, best_state = 0, math.inf, None
    ckpt_path = None
    if checkpoint_dir is not None:
        from cmrkit.utils import resolve_path

        ckpt_path = resolve_path(checkpoint_dir) / CHECKPOINT_NAME
        if resume and ckpt_path.is_file():
            ck = _load_torch(ckpt_path, "fit(resume)")
            if ck.get("format") != _CKPT_FORMAT:
                raise ValueError(f"fit: {ckpt_path} is not a cmrkit fit checkpoint (format {ck.get('format')!r})")
            keys = sorted(set(settings) | set(ck["settings"]))  # "betas" is only recorded when set
            diff = {
                k: (ck["settings"].get(k), settings.get(k)) for k in keys if ck["settings"].get(k) != settings.get(k)
            }
            if diff:
                raise ValueError(
                    f"fit: checkpoint {ckpt_path} was written with other settings "
                    f"(checkpoint, now): {diff}; use another checkpoint_dir or resume=False"
                )
            model.load_state_dict(ck["model"])
            optimizer.load_state_dict(ck["optimizer"])
            if scaler is not None and ck.get("scaler"):
                scaler.load_state_dict(ck["scaler"])
            if d_optimizer is not None:
                d_optimizer.load_state_dict(ck["d_optimizer"])
                if d_scaler is not None and ck.get("d_scaler"):
                    d_scaler.load_state_dict(ck["d_scaler"])
            if ema is not None:
                ema.module.load_state_dict(ck["ema"])
                ema.n_averaged.fill_(int(ck["ema_n"]))
            start_epoch, step = int(ck["epoch"]), int(ck["step"])
            history = [dict(h) for h in ck["history"]]
            best_epoch, best_val, best_state = int(ck["best_epoch"]), float(ck["best_val"]), ck["best_model"]

    wrapped: nn.Module = (
        _LossModule(model, loss_fn) if adversarial is None else _AdversarialModule(model, loss_fn, adversarial)
    )
    if distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        wrapped = DDP(
            wrapped,
            device_ids=[dev.index] if dev.type == "cuda" else None,
            # the discriminator step leaves the generator's parameters without gradients
            find_unused_parameters=find_unused_parameters or adversarial is not None,
        )
    fork_devices = [dev.index] if dev.type == "cuda" else []
    autocast = (lambda: torch.autocast(dev.type, dtype=amp_dtype)) if amp_dtype is not None else nullcontext

    def loader(ds, epoch: int, train: bool) -> torch.utils.data.DataLoader:
        sampler = _EpochSampler(len(ds), seed=seed, epoch=epoch, rank=rank, world=world, shuffle=train, pad=train)
        return torch.utils.data.DataLoader(
            ds,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=num_workers,
            collate_fn=collate_fn,
            pin_memory=dev.type == "cuda",
            drop_last=False,
            generator=torch.Generator().manual_seed(_mix_seed(seed, epoch, rank, 1)),
        )

    for epoch in range(start_epoch, epochs):
        if max_steps is not None and step >= max_steps:
            break
        # ---------------- train ----------------
        wrapped.train()
        meter = _Meter(dev)
        dl = loader(train_ds, epoch, True)
        bar = tqdm(dl, total=len(dl), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, leave=False)
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(_mix_seed(seed, epoch, rank, 2))
            for i, batch in enumerate(bar):
                batch = _to_device(batch, dev)
                adv_on = adversarial is not None and step >= int(adversarial.warmup_steps)
                if adv_on:
                    for _ in range(int(adversarial.d_steps)):
                        d_loss, d_logs = _discriminator_step(
                            wrapped, batch, d_optimizer, d_scaler, d_params, autocast, grad_clip, epoch, step
                        )
                        meter.add(
                            None, {"d_loss": d_loss, **{f"d/{k}": v for k, v in d_logs.items()}}, _batch_len(batch)
                        )
                # the generator step: the discriminator's weights need no gradients here (not under DDP,
                # whose reducer expects a fixed set of parameters with gradients)
                frozen = [p for p in d_params if p.requires_grad] if not distributed else []
                for p in frozen:
                    p.requires_grad_(False)
                try:
                    with autocast():
                        loss, logs = wrapped(batch) if adversarial is None else wrapped(batch, "g", adv_on)
                finally:
                    for p in frozen:
                        p.requires_grad_(True)
                if loss.ndim != 0:
                    raise ValueError(f"fit: loss_fn must return a scalar loss, got shape {tuple(loss.shape)}")
                if not torch.isfinite(loss.detach()):
                    raise FloatingPointError(
                        f"fit: non-finite training loss {loss.item()} at epoch {epoch + 1}, step {step + 1}"
                    )
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    if grad_clip is not None:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(g_params, grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    if grad_clip is not None:
                        torch.nn.utils.clip_grad_norm_(g_params, grad_clip)
                    optimizer.step()
                if ema is not None:
                    ema.update_parameters(model)
                meter.add(loss, logs, _batch_len(batch))
                step += 1
                if progress and i % 10 == 0:
                    bar.set_postfix(loss=f"{loss.item():.4g}")
                if max_steps is not None and step >= max_steps:
                    break
        bar.close()
        if distributed:
            for buf in model.buffers():
                torch.distributed.broadcast(buf, 0)
        train_means = meter.means(distributed)
        kept = model  # the weights validated, selected and returned
        if ema is not None:
            kept = ema.module
            for b_avg, b in zip(kept.buffers(), model.buffers()):
                b_avg.copy_(b)
        # ---------------- validate ----------------
        val_means: dict[str, float] = {}
        if val_ds is not None:
            kept.eval()
            vmeter = _Meter(dev)
            with torch.no_grad(), torch.random.fork_rng(devices=fork_devices):
                torch.manual_seed(_mix_seed(seed, epoch, rank, 3))
                for batch in loader(val_ds, epoch, False):
                    batch = _to_device(batch, dev)
                    with autocast():
                        vloss, vlogs = loss_fn(kept, batch)
                    vmeter.add(vloss, vlogs, _batch_len(batch))
            val_means = vmeter.means(distributed)
            if not math.isfinite(val_means["loss"]):
                raise FloatingPointError(f"fit: non-finite validation loss at epoch {epoch + 1}")
        rec: dict[str, float] = {
            "epoch": epoch + 1,
            "step": step,
            "lr": float(optimizer.param_groups[0]["lr"]),
            "train_loss": train_means["loss"],
            "val_loss": val_means.get("loss", math.nan),
        }
        rec.update({f"train/{k}": v for k, v in train_means.items() if k != "loss"})
        rec.update({f"val/{k}": v for k, v in val_means.items() if k != "loss"})
        history.append(rec)
        monitor = rec["val_loss"] if val_ds is not None else rec["train_loss"]
        if monitor < best_val or best_state is None:
            best_epoch, best_val, best_state = epoch + 1, monitor, _cpu_state(kept)
        if progress:
            tqdm.write(
                f"epoch {epoch + 1}/{epochs}  step {step}  train {rec['train_loss']:.6g}  "
                f"val {rec['val_loss']:.6g}  best {best_val:.6g} (epoch {best_epoch})"
            )
        # ---------------- checkpoint ----------------
        if ckpt_path is not None and is_main:
            _save_torch(
                {
                    "format": _CKPT_FORMAT,
                    "epoch": epoch + 1,
                    "step": step,
                    "settings": settings,
                    "model": _cpu_state(model),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    **(
                        {
                            "d_optimizer": d_optimizer.state_dict(),
                            "d_scaler": d_scaler.state_dict() if d_scaler is not None else None,
                        }
                        if d_optimizer is not None
                        else {}
                    ),
                    **({"ema": _cpu_state(ema.module), "ema_n": int(ema.n_averaged)} if ema is not None else {}),
                    "history": history,
                    "best_epoch": best_epoch,
                    "best_val": best_val,
                    "best_model": best_state,
                },
                ckpt_path,
            )

    if best_state is None:  # only reachable with max_steps already spent before the first epoch
        best_state, best_epoch, best_val = _cpu_state(model), 0, math.nan
    if keep == "last":
        if ema is not None:
            model.load_state_dict(ema.module.state_dict())
        if history:
            last = history[-1]
            best_epoch = int(last["epoch"])
            best_val = last["val_loss"] if val_ds is not None else last["train_loss"]
    else:
        model.load_state_dict(best_state)
    model.eval()
    if distributed:
        torch.distributed.barrier()
    return FitResult(
        model=model,
        history=history,
        best_epoch=best_epoch,
        best_val=float(best_val),
        checkpoint_path=ckpt_path,
        seconds=time.perf_counter() - t0,
    )


# --------------------------------------------------------------------------------------------
# checkpoints and artefacts
# --------------------------------------------------------------------------------------------


def load_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    which: str = "best",
    optimizer: torch.optim.Optimizer | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, Any]:
    """Load a :func:`fit` checkpoint (``torch.load(weights_only=True)``) into ``model``.

    Parameters
    ----------
    path : path
        ``checkpoint.pt`` or the ``checkpoint_dir`` holding it (relative paths anchor at the repo root).
    model : nn.Module
        Receives the weights (strict key match).
    which : {"best", "last", "ema"}
        The best-validation weights, those after the last completed epoch, or the moving average of
        the weights after it (a run with ``ema_decay``).
    optimizer, scaler : optional
        Also restored (from the last epoch) when given.

    Returns
    -------
    dict
        ``epoch``, ``step``, ``history``, ``best_epoch``, ``best_val``, ``settings``.
    """
    from cmrkit.utils import resolve_path

    p = resolve_path(path)
    if p.is_dir():
        p = p / CHECKPOINT_NAME
    if which not in ("best", "last", "ema"):
        raise ValueError(f"load_checkpoint: which must be 'best', 'last' or 'ema', got {which!r}")
    ck = _load_torch(p, "load_checkpoint")
    if ck.get("format") != _CKPT_FORMAT:
        raise ValueError(f"load_checkpoint: {p} is not a cmrkit fit checkpoint (format {ck.get('format')!r})")
    if which == "ema" and "ema" not in ck:
        raise ValueError(f"load_checkpoint: {p} holds no averaged weights (trained without ema_decay)")
    model.load_state_dict(ck[{"best": "best_model", "last": "model", "ema": "ema"}[which]])
    if optimizer is not None:
        optimizer.load_state_dict(ck["optimizer"])
    if scaler is not None and ck.get("scaler"):
        scaler.load_state_dict(ck["scaler"])
    return {k: ck[k] for k in ("epoch", "step", "history", "best_epoch", "best_val", "settings")}


def _check_serialisable(obj: Any, where: str, allow_tensors: bool) -> None:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return
    if allow_tensors and isinstance(obj, torch.Tensor):
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_serialisable(v, f"{where}[{i}]", allow_tensors)
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ValueError(f"{where}: keys must be strings, got {k!r}")
            _check_serialisable(v, f"{where}[{k!r}]", allow_tensors)
        return
    kinds = "JSON types or tensors" if allow_tensors else "JSON types (dict/list/str/int/float/bool/None)"
    raise ValueError(f"{where}: {type(obj).__name__} is not allowed; use {kinds}")


def save_model(
    path: str | os.PathLike[str],
    model: nn.Module,
    config: Mapping[str, Any],
    *,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a final model artefact atomically: weights, config and extras, loadable weights-only.

    Parameters
    ----------
    path : path
        Output file (``.pt``); relative paths anchor at the repository root.
    model : nn.Module
        Its class is recorded as ``"module:QualName"`` so :func:`load_model` can rebuild it.
    config : mapping
        JSON-serialisable constructor arguments: :func:`load_model` calls
        ``cls.from_config(config)`` when the class has it, else ``cls(**config)``.
    extra : mapping, optional
        Anything else to keep with the weights (JSON types or tensors), e.g. a latent
        ``scale_factor``, intensity normalisation, the active latent dimensions, the git SHA.

    Returns
    -------
    Path
        The written file.
    """
    from cmrkit.utils import resolve_path

    config = dict(config)
    extra = dict(extra or {})
    _check_serialisable(config, "save_model(config)", allow_tensors=False)
    json.dumps(config)  # also rejects NaN-free issues early (NaN is allowed by json by default)
    _check_serialisable(extra, "save_model(extra)", allow_tensors=True)
    cls = type(model)
    p = resolve_path(path)
    _save_torch(
        {
            "format": _MODEL_FORMAT,
            "class": f"{cls.__module__}:{cls.__qualname__}",
            "config": config,
            "extra": extra,
            "state_dict": _cpu_state(model),
        },
        p,
    )
    return p


def load_model(
    path: str | os.PathLike[str],
    *,
    builder: Callable[[dict[str, Any]], nn.Module] | None = None,
    map_location: str | torch.device = "cpu",
) -> SavedModel:
    """Load an artefact written by :func:`save_model` (``torch.load(weights_only=True)``).

    Parameters
    ----------
    path : path
        The artefact file; relative paths anchor at the repository root.
    builder : callable, optional
        ``builder(config) -> nn.Module``. Without it the recorded class is imported and built,
        which is allowed only for classes inside the ``cmrkit`` package.
    map_location : str or device
        Device of the returned model.

    Returns
    -------
    SavedModel
        ``(model, config, extra)``; the model is in eval mode.
    """
    from cmrkit.utils import resolve_path

    p = resolve_path(path)
    ck = _load_torch(p, "load_model")
    if ck.get("format") != _MODEL_FORMAT:
        raise ValueError(f"load_model: {p} is not a cmrkit model artefact (format {ck.get('format')!r})")
    config = dict(ck["config"])
    if builder is None:
        mod_name, _, qual = str(ck["class"]).partition(":")
        if not (mod_name == "cmrkit" or mod_name.startswith("cmrkit.")):
            raise ValueError(f"load_model: {p} holds class {ck['class']!r} outside cmrkit; pass builder=")
        obj: Any = importlib.import_module(mod_name)
        for part in qual.split("."):
            obj = getattr(obj, part)
        model = obj.from_config(config) if hasattr(obj, "from_config") else obj(**config)
    else:
        model = builder(config)
    model.load_state_dict(ck["state_dict"])
    model.to(map_location)
    model.eval()
    return SavedModel(model=model, config=config, extra=dict(ck["extra"]))


# --------------------------------------------------------------------------------------------
# self test / entry point
# --------------------------------------------------------------------------------------------


class _ToyDataset(torch.utils.data.Dataset):
    """``y = x @ W`` regression pairs drawn from ``torch.Generator(seed)``."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=g)
        w = torch.randn(4, 2, generator=torch.Generator().manual_seed(12345))
        self.y = self.x @ w

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


def _toy_model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2))


def _toy_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
    pred = model(batch["x"])
    loss = torch.nn.functional.mse_loss(pred, batch["y"])
    return loss, {"mae": (pred - batch["y"]).abs().mean()}


def cli_main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m cmrkit.train --selftest --out DIR [--epochs N]``.

    Trains a tiny MLP (with BatchNorm and dropout) on a toy regression with :func:`fit`; works
    alone or under ``torchrun`` (DDP on gloo for CPU). Every rank writes ``DIR/rank<r>.pt`` with
    its final weights and history; rank 0 writes the checkpoint under ``DIR/ckpt``. Returns 0 on
    success, 2 on bad arguments.
    """
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m cmrkit.train", description=cli_main.__doc__.splitlines()[0])
    ap.add_argument("--selftest", action="store_true", help="run the tiny training self test")
    ap.add_argument("--out", type=Path, default=None, help="folder for rank<r>.pt and the checkpoint")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not args.selftest:
        print("python -m cmrkit.train: nothing to do (pass --selftest)", file=sys.stderr)
        return 2
    if args.epochs < 1:
        print(f"python -m cmrkit.train: --epochs must be >= 1, got {args.epochs}", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    model = _toy_model()
    res = fit(
        model,
        _ToyDataset(40, 1),
        _ToyDataset(12, 2),
        loss_fn=_toy_loss,
        epochs=args.epochs,
        batch_size=4,
        lr=1e-2,
        device="cpu",
        seed=args.seed,
        progress=False,
        checkpoint_dir=(args.out / "ckpt") if args.out else None,
    )
    rank = int(os.environ.get("RANK", "0"))
    if args.out is not None:
        _save_torch(
            {"state_dict": _cpu_state(res.model), "history": res.history, "best_epoch": res.best_epoch},
            args.out / f"rank{rank}.pt",
        )
    print(f"rank {rank}: best epoch {res.best_epoch}, val {res.best_val:.6g}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(cli_main())
