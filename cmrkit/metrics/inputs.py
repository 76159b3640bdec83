"""Input handling shared by the :mod:`cmrkit.metrics` modules: arrays or tensors in, checked tensors out."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["ArrayLike", "as_tensor", "check_data_range"]

ArrayLike = Any  # numpy array, torch tensor or nested sequence


def as_tensor(
    x: ArrayLike,
    name: str,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    check_finite: bool = True,
) -> torch.Tensor:
    """Float tensor view of ``x`` (float64 stays float64, everything else becomes float32)."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        arr = np.asarray(x)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise TypeError(f"{name} must be a numeric array or tensor, got dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.is_complex():
        raise TypeError(f"{name} must be real-valued, got a complex {t.dtype} tensor")
    if dtype is None:
        dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    t = t.to(device=device if device is not None else t.device, dtype=dtype)
    if check_finite and not bool(torch.isfinite(t).all()):
        n_bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name} contains {n_bad} NaN or infinite value(s); clean or mask them first")
    return t


def check_data_range(data_range: float) -> float:
    """``data_range`` as a float; a clear error unless it is finite and positive."""
    if data_range is None or not np.isfinite(data_range) or float(data_range) <= 0:
        raise ValueError(
            f"data_range must be a finite positive number (e.g. 1.0 for [0, 1] images), got {data_range!r}"
        )
    return float(data_range)
