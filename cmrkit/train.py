"""One training loop for every chapter: Adam, AMP, validation-loss model selection,
atomic weights-only checkpoints, exact resume, and DDP under ``torchrun``.

STATUS: public API published; implementation in progress (signatures are final).

Public API
----------
``fit(model, train_ds, val_ds, *, loss_fn, epochs, batch_size, ...) -> FitResult``
    ``loss_fn(model, batch) -> (loss, logs)`` where ``model`` is the *unwrapped* module
    (never the DDP wrapper) and ``batch`` is the collated batch already moved to the device.
``load_checkpoint(path, model, *, which="best", optimizer=None, scaler=None) -> dict``
``save_model(path, model, config, *, extra=None) -> Path``
``load_model(path, *, builder=None, map_location="cpu") -> SavedModel(model, config, extra)``
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch
from torch import nn

__all__ = ["FitResult", "SavedModel", "fit", "load_checkpoint", "save_model", "load_model", "cli_main"]

LossFn = Callable[[nn.Module, Any], "tuple[torch.Tensor, dict[str, Any]]"]


@dataclass
class FitResult:
    """Outcome of :func:`fit`.

    Attributes
    ----------
    model : nn.Module
        The trained (unwrapped) model with the best-validation weights loaded.
    history : list of dict
        One dict per epoch: ``epoch`` (1-based), ``step`` (optimizer steps so far), ``lr``,
        ``train_loss``, ``val_loss`` (``nan`` without validation data), and the
        sample-weighted epoch means of every ``logs`` key as ``train/<key>`` and ``val/<key>``.
        No timings (so that a resumed run has exactly the same history).
    best_epoch : int
        1-based epoch whose weights were selected.
    best_val : float
        Its validation loss (its training loss when ``val_ds`` is None).
    checkpoint_path : Path or None
        The checkpoint file, when ``checkpoint_dir`` was given.
    seconds : float
        Wall time of this call (not of resumed earlier calls).
    """

    model: nn.Module
    history: list[dict[str, float]]
    best_epoch: int
    best_val: float
    checkpoint_path: Path | None = None
    seconds: float = 0.0


class SavedModel(NamedTuple):
    """What :func:`load_model` returns: the built model (eval mode), its config, extras."""

    model: nn.Module
    config: dict[str, Any]
    extra: dict[str, Any]


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
) -> FitResult:
    """Train ``model`` with Adam and keep the weights of the epoch with the lowest validation loss."""
    raise NotImplementedError("cmrkit.train.fit: implementation in progress")


def load_checkpoint(path, model, *, which="best", optimizer=None, scaler=None) -> dict[str, Any]:
    """Load a :func:`fit` checkpoint (weights-only) into ``model``; return its metadata."""
    raise NotImplementedError


def save_model(path, model, config, *, extra=None) -> Path:
    """Write a final model artefact (weights + JSON-serialisable config + extras), atomically."""
    raise NotImplementedError


def load_model(path, *, builder=None, map_location="cpu") -> SavedModel:
    """Load an artefact written by :func:`save_model` (weights-only)."""
    raise NotImplementedError


def cli_main(argv: list[str] | None = None) -> int:
    """``python -m cmrkit.train --selftest``: tiny DDP/CPU self test."""
    raise NotImplementedError
