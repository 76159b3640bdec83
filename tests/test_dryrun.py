"""Thesis-resolution dry run: every written chapter's models at the ``demo`` and ``paper`` sizes take
one training step and one synthesis/prediction step on the CPU with a batch of 1-2, so a shape or
memory-layout error at 128 x 128 is caught without a GPU. Chapters add their models by defining
``dry_runs(cfg)`` (the chapter contract in :mod:`cmrkit.chapters`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmrkit.chapters import CHAPTERS, DryRun, dry_runs
from cmrkit.config import load

PROFILES = ("demo", "paper")


def _cases() -> list:
    """One case per distinct model: a model of equal sizes in both profiles runs once."""
    by_key: dict[tuple[str, str], tuple[DryRun, list[str]]] = {}
    for profile in PROFILES:
        for dr in dry_runs(profile):
            by_key.setdefault((dr.chapter, dr.key), (dr, []))[1].append(profile)
    return [pytest.param(dr, id=f"{'+'.join(p)}-{dr.chapter}-{dr.name}") for dr, p in by_key.values()]


def test_every_chapter_with_models_has_dry_runs_at_thesis_resolution():
    for profile in PROFILES:
        runs = dry_runs(profile)
        assert all(isinstance(r, DryRun) for r in runs)
        written = {c.name for c in CHAPTERS.values() if c.available and hasattr(c.load(), "dry_runs")}
        assert {r.chapter for r in runs} == written and "smcvae_strain" in written
        ch4 = [r for r in runs if r.chapter == "smcvae_strain"]
        cfg = load(profile)
        assert f"smcvae D={cfg.ch4.latent_dim} L={cfg.ch4.conv_layers}" in [r.name for r in ch4]
        assert "segmenter" in [r.name for r in ch4]
        assert all(shape[-1] == 128 for r in ch4 for name, shape in r.expected.items() if name != "train_loss")


@pytest.mark.slow
@pytest.mark.parametrize("dr", _cases())
def test_one_training_and_one_synthesis_step_on_cpu(dr):
    torch.set_num_threads(2)
    out = dr.run()
    assert set(out) == set(dr.expected)
    for name, shape in dr.expected.items():
        arr = np.asarray(out[name])
        assert arr.shape == shape, (name, arr.shape, shape)
        assert np.all(np.isfinite(arr)), name
