"""Shared pytest fixtures: repository paths, the real-data folder, headless matplotlib."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")  # tests only; never exported to the papermill kernels
os.environ.setdefault("OMP_NUM_THREADS", "2")

from cmrkit.utils import REPO_ROOT  # noqa: E402

REALDATA = REPO_ROOT.parent / "shared" / "realdata"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def realdata() -> Path:
    """``../shared/realdata``; tests using it are skipped when it is absent."""
    if not REALDATA.is_dir():
        pytest.skip(f"real data folder {REALDATA} is absent")
    return REALDATA
