"""Synthetic images shared by the metrics tests."""

from __future__ import annotations

import numpy as np
import pytest


def _discs(rng: np.random.Generator, n: int, size: int = 48) -> np.ndarray:
    """``(n, 1, size, size)`` float32 images: a bright ring of random centre and radius on a ramp."""
    yy, xx = np.mgrid[:size, :size] / size
    out = np.empty((n, 1, size, size), dtype=np.float32)
    for i in range(n):
        c, r = rng.uniform(0.35, 0.65, 2), rng.uniform(0.12, 0.25)
        ring = np.abs(np.hypot(yy - c[0], xx - c[1]) - r) < 0.05
        out[i, 0] = np.where(ring, 0.8, 0.15 + 0.1 * yy)
    return out


@pytest.fixture
def make_discs():
    """The ring-image generator ``make_discs(rng, n, size=48)``."""
    return _discs
