"""Shared pytest fixtures: repository paths, the real-data folder, headless matplotlib, and one small
trained segmenter shared by the segmenter tests."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")  # tests only; never exported to the papermill kernels
os.environ.setdefault("OMP_NUM_THREADS", "2")

from cmrkit.utils import REPO_ROOT  # noqa: E402

#: the real-data folder (M&Ms, Sunnybrook) beside the repository; CMRKIT_TEST_REALDATA points elsewhere
#: (e.g. from a git worktree). Tests that use it are skipped when it is absent.
REALDATA = Path(os.environ.get("CMRKIT_TEST_REALDATA") or REPO_ROOT.parent / "shared" / "realdata")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def realdata() -> Path:
    """``../shared/realdata`` (or ``$CMRKIT_TEST_REALDATA``); tests using it are skipped when it is absent."""
    if not REALDATA.is_dir():
        pytest.skip(f"real data folder {REALDATA} is absent")
    return REALDATA


@pytest.fixture(scope="session")
def mnms_dir(realdata: Path) -> Path:
    """The real M&Ms ED/ES cases; skipped when absent."""
    d = realdata / "mnms"
    if not d.is_dir():
        pytest.skip(f"real M&Ms folder {d} is absent")
    return d


def dice_ref(pred: np.ndarray, gt: np.ndarray, label: int) -> float:
    """Independent Dice 2|A∩B| / (|A| + |B|)."""
    a, b = pred == label, gt == label
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="session")
def trained_segmenter():
    """``(segmenter, test images, test labels)``: a small segmenter trained once on toy slices
    (64 px at 1.8 mm, ~10 s on CPU) for the tests of cmrkit.models.segmenter and cmrkit.segment."""
    import torch

    from cmrkit.models.segmenter import Segmenter, SegmenterConfig, toy_slices

    torch.set_num_threads(1)
    x, y = toy_slices(128, 64, rng=10)
    cfg = SegmenterConfig(image_size=64, channels=(8, 16, 32), epochs=15, batch_size=16, lr=3e-3, augment=False)
    seg = Segmenter(cfg, seed=0)
    seg.fit(x, y, val_fraction=0.1, seed=0, progress=False, pixel_mm=1.8)
    xt, yt = toy_slices(24, 64, rng=99)
    return seg, xt, yt
