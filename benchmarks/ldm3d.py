"""Chapter-5 latent diffusion throughput at a profile's sizes.

* autoencoder training: volumes/s for forward + backward + Adam step of the image + mask
  AutoencoderKL (L1 + CE + KL), one volume = ``(2, X, Y, Z)`` in, ``(5, X, Y, Z)`` out;
* diffusion training: latents/s for one noise-prediction step of the UNet on cached latents;
* sampling: volumes/s for a DDIM chain of ``--ddim-steps`` steps (default 50) plus decoding, in
  batches of ``--sample-batch``.

Models are built from the profile exactly as the chapter builds them
(:func:`cmrkit.chapters.ldm3d.autoencoder_config` / :func:`~cmrkit.chapters.ldm3d.diffusion_config`);
weights are untrained (throughput does not depend on them). bf16 autocast on CUDA by default.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/ldm3d.py --profile cpu --device cpu
    OMP_NUM_THREADS=2 python benchmarks/ldm3d.py --profile demo --device cpu --iters 2 --sample-batch 4
    python benchmarks/ldm3d.py --profile demo --device cuda --iters 50            # one GPU
    python benchmarks/ldm3d.py --profile paper --device cuda --iters 50 --sample-batch 500

Prints one JSON line with the settings and the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time

import torch

from cmrkit import config
from cmrkit.chapters.ldm3d import autoencoder_config, diffusion_config
from cmrkit.models.autoencoder import AutoencoderLoss, VolumeAutoencoder
from cmrkit.models.diffusion import DiffusionLoss, LatentDiffusion, generate, sample_seeds


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


def bench(profile: str, device: str, *, iters: int, warmup: int, ddim_steps: int, sample_batch: int, amp: str) -> dict:
    cfg = config.load(profile, device=device)
    dev = torch.device(cfg.device)
    c = cfg.ch5
    shape = (*[int(v) for v in c.image_size], int(c.slices))
    use_amp = amp == "bf16" or (amp == "auto" and dev.type == "cuda")
    ctx = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if use_amp else contextlib.nullcontext
    g = torch.Generator().manual_seed(0)

    ae = VolumeAutoencoder(autoencoder_config(cfg, shape), seed=0).to(dev)
    ae_bs = int(c.ae_batch_size)
    batch = {
        "image": torch.rand(ae_bs, *shape, generator=g).to(dev),
        "labels": torch.randint(0, 4, (ae_bs, *shape), generator=g).to(dev),
    }
    ae_loss, ae_opt = AutoencoderLoss(float(c.kl_weight)), torch.optim.Adam(ae.parameters(), lr=float(c.ae_lr))

    def ae_step() -> None:
        with ctx():
            loss, _ = ae_loss(ae, batch)
        ae_opt.zero_grad(set_to_none=True)
        loss.backward()
        ae_opt.step()

    ae.train()
    ae_s = _timed(ae_step, iters, warmup, dev)

    ldm = LatentDiffusion(diffusion_config(cfg, ae.config.latent_shape), seed=0).to(dev)
    d_bs = int(c.diffusion_batch_size)
    lat = {"mu": torch.randn(d_bs, *ae.config.latent_shape, generator=g).to(dev)}
    lat["sigma"] = torch.full_like(lat["mu"], 0.1)
    d_loss, d_opt = DiffusionLoss(), torch.optim.Adam(ldm.parameters(), lr=float(c.diffusion_lr), betas=(0.9, 0.99))

    def d_step() -> None:
        with ctx():
            loss, _ = d_loss(ldm, lat)
        d_opt.zero_grad(set_to_none=True)
        loss.backward()
        d_opt.step()

    ldm.train()
    d_s = _timed(d_step, iters, warmup, dev)

    seeds = sample_seeds(0, sample_batch)
    ae.eval()
    ldm.eval()
    generate(ae, ldm, seeds[:1], ddim_steps=2, batch_size=1, device=dev, amp=use_amp)  # warm-up
    _sync(dev)
    t0 = time.perf_counter()
    generate(ae, ldm, seeds, ddim_steps=ddim_steps, batch_size=sample_batch, device=dev, amp=use_amp)
    _sync(dev)
    s_s = time.perf_counter() - t0
    out = {
        "profile": profile,
        "device": str(dev),
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "amp_bf16": use_amp,
        "volume": list(shape),
        "latent": list(ae.config.latent_shape),
        "ae_params_M": round(sum(p.numel() for p in ae.parameters()) / 1e6, 3),
        "unet_params_M": round(sum(p.numel() for p in ldm.parameters()) / 1e6, 3),
        "ae_batch": ae_bs,
        "ae_train_volumes_per_s": round(ae_bs * iters / ae_s, 3),
        "diffusion_batch": d_bs,
        "diffusion_train_latents_per_s": round(d_bs * iters / d_s, 2),
        "ddim_steps": ddim_steps,
        "sample_batch": sample_batch,
        "sampling_volumes_per_s": round(sample_batch / s_s, 3),
    }
    if dev.type == "cuda":
        out["peak_memory_GB"] = round(torch.cuda.max_memory_allocated(dev) / 1e9, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--ddim-steps", type=int, default=50)
    ap.add_argument("--sample-batch", type=int, default=None, help="default: the profile's ch5.sample_batch_size")
    ap.add_argument("--amp", choices=("auto", "bf16", "none"), default="auto")
    args = ap.parse_args(argv)
    sb = args.sample_batch or int(config.load(args.profile).ch5.sample_batch_size)
    res = bench(
        args.profile,
        args.device,
        iters=args.iters,
        warmup=args.warmup,
        ddim_steps=args.ddim_steps,
        sample_batch=sb,
        amp=args.amp,
    )
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
