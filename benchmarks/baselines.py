"""Baseline throughput at a profile's sizes: training samples/s and sampling volumes (sequences) per second.

For each of the five baselines (3D VAE, 3D LSGAN on chapter-5 volumes; CGAN, CVAE, CHeart on chapter-6
sequences), built from the profile exactly as :mod:`cmrkit.chapters.baselines` builds them:

* training: samples/s of one optimiser step at the profile's ``baselines.batch_size`` -- a VAE step for
  the VAE family, one discriminator step plus one generator step for the GANs (what one step of
  :func:`cmrkit.train.fit` with :class:`cmrkit.train.Adversarial` does);
* sampling: volumes/s (chapter 5) or sequences/s (chapter 6) of :func:`cmrkit.models.baselines.generate`
  in batches of ``baselines.sample_batch_size`` (latents drawn per seed, decoded, split into image and
  labels).

Weights are untrained (throughput does not depend on them); inputs are random.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/baselines.py --profile cpu --device cpu
    OMP_NUM_THREADS=2 python benchmarks/baselines.py --profile cpu --only cvae,cheart --iters 2
    python benchmarks/baselines.py --profile demo --device cuda --iters 20

Prints one JSON line with the settings and the numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from cmrkit import config
from cmrkit.chapters import baselines
from cmrkit.models.baselines import BaselineGAN, BaselineVAE, CHeart, CHeartLoss, GANLoss, VAELoss, generate
from cmrkit.models.conditioning import COVARIATES


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, iters: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(device)
    return time.perf_counter() - t0


def bench(profile: str, device: str, *, iters: int, warmup: int, only: list[str] | None) -> dict:
    cfg = config.load(profile, device=device)
    dev = torch.device(cfg.device)
    b = cfg.baselines
    bs, sb = int(b.batch_size), int(b.sample_batch_size)
    c5, c6 = cfg.ch5, cfg.ch6
    shape5 = (*[int(v) for v in c5.image_size], int(c5.slices))
    shape6 = (*[int(v) for v in c6.image_size], int(c6.slices), int(c6.frames))
    names = [str(v) for v in c6.conditions]
    f = sum(1 if c.continuous else len(c.levels) for c in COVARIATES if c.name in names)
    g = torch.Generator().manual_seed(0)
    out: dict = {}
    models = [(name, label, kind, 5, shape5, 0) for name, label, kind in baselines.MODELS5]
    models += [(name, label, kind, 6, shape6, f) for name, label, kind in baselines.MODELS6]
    for name, label, kind, chapter, shape, cond in models:
        if only and name not in only:
            continue
        mcfg = baselines.baseline_config(cfg, chapter, shape, cond_dim=cond)
        model = {"vae": BaselineVAE, "gan": BaselineGAN, "cheart": CHeart}[kind](mcfg, seed=0).to(dev)
        batch = {
            "image": torch.rand(bs, *shape, generator=g).to(dev),
            "labels": torch.randint(0, 4, (bs, *shape), generator=g).to(dev),
        }
        if cond:
            batch["cond"] = torch.randn(bs, cond, generator=g).to(dev)
        lr = float(b.lr)
        if kind == "gan":
            loss = GANLoss("least_squares" if chapter == 5 else str(b.cgan_loss))
            betas = tuple(float(v) for v in b.gan_betas)
            opt_g = torch.optim.Adam(model.generator.parameters(), lr=lr, betas=betas)
            opt_d = torch.optim.Adam(model.discriminator.parameters(), lr=lr, betas=betas)

            def step(model=model, loss=loss, batch=batch, opt_g=opt_g, opt_d=opt_d) -> None:
                d, _ = loss.discriminator(model, batch)
                opt_d.zero_grad(set_to_none=True)
                d.backward()
                opt_d.step()
                for p in model.discriminator.parameters():
                    p.requires_grad_(False)
                gl, _ = loss.generator(model, batch)
                opt_g.zero_grad(set_to_none=True)
                gl.backward()
                opt_g.step()
                for p in model.discriminator.parameters():
                    p.requires_grad_(True)

        else:
            loss_fn = VAELoss(float(b.kl_weight)) if kind == "vae" else CHeartLoss(float(b.kl_weight))
            opt = torch.optim.Adam(model.parameters(), lr=lr)

            def step(model=model, loss_fn=loss_fn, batch=batch, opt=opt) -> None:
                loss, _ = loss_fn(model, batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        model.train()
        t_train = _timed(step, iters, warmup, dev)
        model.eval()
        n_s = sb
        feats = np.random.default_rng(0).standard_normal((n_s, cond)).astype(np.float32) if cond else None
        t_sample = _timed(
            lambda model=model, feats=feats, n_s=n_s: generate(model, range(n_s), feats, batch_size=sb, device=dev),
            max(1, iters // 2),
            min(warmup, 1),
            dev,
        )
        out[name] = {
            "label": label,
            "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
            "train_samples_per_s": round(iters * bs / t_train, 3),
            "sample_per_s": round(max(1, iters // 2) * n_s / t_sample, 3),
            "unit": "volumes" if chapter == 5 else "sequences",
        }
        del model
    return {
        "profile": profile,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "batch_size": bs,
        "sample_batch_size": sb,
        "shape_ch5": list(shape5),
        "shape_ch6": list(shape6),
        "machine": platform.processor() or platform.machine(),
        "baselines": out,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="cpu")
    p.add_argument("--device", default="cpu")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--only", default="", help="comma-separated run names (vae3d, lsgan3d, cgan, cvae, cheart)")
    a = p.parse_args()
    only = [s for s in a.only.split(",") if s] or None
    print(json.dumps(bench(a.profile, a.device, iters=a.iters, warmup=a.warmup, only=only)))


if __name__ == "__main__":
    main()
