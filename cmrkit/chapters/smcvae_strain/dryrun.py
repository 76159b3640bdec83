"""Chapter 4 dry runs (the chapter contract, :class:`cmrkit.chapters.DryRun`): the smcVAE variants and the segmenter
at the profile's sizes, one training step and one synthesis/prediction step on random inputs on the CPU."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from ...config import Config
from .data import CHAPTER, PairData
from .synthesis import predict, smcvae_config


# --------------------------------------------------------------------------------------------- dry run
def _random_pairs(n: int, frames: int, size: int, seed: int) -> PairData:
    """``n`` random cine/tagging slice pairs in [0, 1], all in the ``test`` split, with linear tag phase
    maps of a 4-pixel grid at a random angle and phase (dry runs only)."""
    rng = np.random.default_rng(seed)
    shape = (n, frames, size, size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    t = rng.uniform(0, np.pi / 2, (n, 1, 1))
    k = 2 * np.pi / 4.0
    phase = np.stack(
        [k * (np.cos(t) * xx + np.sin(t) * yy), k * (-np.sin(t) * xx + np.cos(t) * yy)], axis=1
    ) + rng.uniform(0, 2 * np.pi, (n, 2, 1, 1))
    return PairData(
        cine=rng.random(shape, dtype=np.float32),
        tagging=rng.random(shape, dtype=np.float32),
        labels=np.zeros(shape, np.uint8),
        labelled=np.zeros((n, frames), bool),
        landmarks=None,
        true_strain=None,
        region=np.array(["mid"] * n),
        subject=np.array([f"dry{i}" for i in range(n)]),
        es_frame=np.full(n, -1),
        split=np.array(["test"] * n),
        px_mm=1.0,
        tag_phase=phase.astype(np.float32),
    )


def _dry_run_smcvae(cfg: Config, latent_dim: int, conv_layers: int, geometry: bool = False) -> dict[str, np.ndarray]:
    from ...models.smcvae import PHASE_KEY, SMCVAE, PairedSliceDataset, smcvae_loss
    from ...train import fit

    mcfg = smcvae_config(cfg, latent_dim=latent_dim, conv_layers=conv_layers, geometry=geometry)
    model = SMCVAE(mcfg, seed=cfg.seed)
    train = _random_pairs(2, mcfg.in_frames, mcfg.image_size, cfg.seed)
    extra = {PHASE_KEY: train.tag_phase} if geometry else None
    res = fit(
        model,
        PairedSliceDataset({"cine": train.cine, "tagging": train.tagging}, extra=extra),
        None,
        loss_fn=smcvae_loss,
        epochs=1,
        batch_size=2,
        lr=float(cfg.ch4.lr),
        weight_decay=float(cfg.ch4.weight_decay),
        device="cpu",
        seed=cfg.seed,
        amp="none",
        progress=False,
    )
    test = _random_pairs(1, mcfg.in_frames, mcfg.image_size, cfg.seed + 1)
    generated = predict(res.model.cpu(), test, test.index("test"), ("cine",), "tagging", batch_size=1)
    return {"train_loss": np.array([res.history[-1]["train_loss"]]), "only_cine_to_tagging": generated}


def _dry_run_segmenter(cfg: Config) -> dict[str, np.ndarray]:
    from ...models.segmenter import Segmenter, SegmenterConfig, toy_slices

    sc = replace(SegmenterConfig.from_dict(cfg.segmenter), epochs=1, batch_size=2)
    seg = Segmenter(sc, seed=cfg.seed)
    x, y = toy_slices(2, int(cfg.ch4.image_size), rng=cfg.seed)  # chapter 4 feeds it slices of its grid
    res = seg.fit(x, y, val_fraction=0.0, seed=cfg.seed, device="cpu", amp="none", progress=False)
    return {"train_loss": np.array([res.history[-1]["train_loss"]]), "labels": seg.predict(x[:1], device="cpu")}


def dry_runs(cfg: Config) -> list[Any]:
    """The chapter's models at the sizes of ``cfg``'s profile, for the CPU dry run (see
    :class:`cmrkit.chapters.DryRun`): the smcVAE with the profile's D and L and with the smallest and
    largest L of the Table 4.4 ablation (L sets the layer structure: how many of the convolutions
    down-sample; the Table 4.3 values of D only change the width of the latent layers), each trained
    one step and synthesising tagging from cine (the chapter's synthesis path), the geometry-aware
    smcVAE at the profile's D and L (given random tag phase maps), and the segmenter, trained one step on
    slices of the chapter's grid and predicting one."""
    import json

    from ...models.segmenter import SegmenterConfig
    from .. import DryRun

    c = cfg.ch4
    frames, size = int(c.frames), int(c.image_size)
    images = (1, frames, size, size)
    layers = [int(L) for L in c.ablation_conv_layers]
    variants = [(int(c.latent_dim), L) for L in (int(c.conv_layers), min(layers), max(layers))]
    runs = []
    for d, L in dict.fromkeys(variants):
        key = json.dumps(smcvae_config(cfg, latent_dim=d, conv_layers=L).to_dict(), sort_keys=True)
        expected = {"train_loss": (1,), "only_cine_to_tagging": images}
        run = lambda d=d, L=L: _dry_run_smcvae(cfg, d, L)  # noqa: E731
        runs.append(DryRun(CHAPTER, f"smcvae D={d} L={L}", key, expected, run))
    d, L = int(c.latent_dim), int(c.conv_layers)
    key = json.dumps(smcvae_config(cfg, latent_dim=d, conv_layers=L, geometry=True).to_dict(), sort_keys=True)
    run = lambda: _dry_run_smcvae(cfg, d, L, geometry=True)  # noqa: E731
    runs.append(
        DryRun(
            CHAPTER,
            f"smcvae geometry-aware D={d} L={L}",
            key,
            {"train_loss": (1,), "only_cine_to_tagging": images},
            run,
        )
    )
    sc = SegmenterConfig.from_dict(cfg.segmenter)
    key = json.dumps({"segmenter": sc.to_dict(), "input": size}, sort_keys=True)
    runs.append(
        DryRun(
            CHAPTER, "segmenter", key, {"train_loss": (1,), "labels": (1, size, size)}, lambda: _dry_run_segmenter(cfg)
        )
    )
    return runs
