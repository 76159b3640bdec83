"""smcVAE training throughput: slices per second for forward + backward + Adam step.

One "slice" is a cine/tagging pair of (20, 128, 128) tensors (thesis §4.3.3); every step encodes
both channels and decodes each latent with both decoders (the sparse model's training pass).
Also reports inference throughput of cine -> tagging synthesis.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/smcvae.py --device cpu --iters 3
    python benchmarks/smcvae.py --device cuda --iters 50          # bf16 autocast by default

Prints one JSON line per device with the settings and the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time

import torch

from cmrkit.models.smcvae import SMCVAE


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(
    device: str,
    *,
    batch: int,
    iters: int,
    warmup: int,
    latent_dim: int,
    conv_layers: int,
    image_size: int,
    frames: int,
    variant: str,
    amp: str,
) -> dict:
    dev = torch.device(device)
    model = SMCVAE(
        image_size=image_size, in_frames=frames, conv_layers=conv_layers, latent_dim=latent_dim, variant=variant, seed=0
    ).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=5e-4, weight_decay=1e-5)
    g = torch.Generator().manual_seed(0)
    data = {c: (torch.rand(batch, frames, image_size, image_size, generator=g) * 2 - 1).to(dev) for c in model.channels}
    use_amp = amp == "bf16" or (amp == "auto" and dev.type == "cuda")
    ctx = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if use_amp else contextlib.nullcontext

    def step() -> None:
        with ctx():
            loss, _ = model.loss(data)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    for _ in range(warmup):
        step()
    _sync(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    _sync(dev)
    train_s = time.perf_counter() - t0

    model.eval()
    with torch.no_grad(), ctx():
        for _ in range(max(1, warmup)):
            model.synthesise(data["cine"])
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(iters):
            model.synthesise(data["cine"])
        _sync(dev)
    infer_s = time.perf_counter() - t0
    out = {
        "device": torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "variant": variant,
        "amp": "bf16" if use_amp else "fp32",
        "batch": batch,
        "image_size": image_size,
        "frames": frames,
        "conv_layers": conv_layers,
        "latent_dim": latent_dim,
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "iters": iters,
        "train_slices_per_s": round(batch * iters / train_s, 2),
        "train_s_per_step": round(train_s / iters, 4),
        "synth_slices_per_s": round(batch * iters / infer_s, 2),
    }
    if dev.type == "cuda":
        out["peak_mem_GiB"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="all", help="cpu, cuda or all (cpu, then cuda if available)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--iters", type=int, default=None, help="timed steps (default: 3 on CPU, 50 on CUDA)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (default: 1 on CPU, 10 on CUDA)")
    ap.add_argument("--latent-dim", type=int, default=1024)
    ap.add_argument("--conv-layers", type=int, default=7)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--variant", default="sparse", choices=["sparse", "mcvae", "vae"])
    ap.add_argument(
        "--amp",
        default="auto",
        choices=["auto", "bf16", "none"],
        help="auto: bf16 autocast on CUDA, fp32 on CPU (as cmrkit.train.fit)",
    )
    args = ap.parse_args(argv)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    for d in devices:
        if d.startswith("cuda") and not torch.cuda.is_available():
            print(json.dumps({"device": d, "skipped": "CUDA not available"}))
            continue
        cpu = d == "cpu"
        res = bench(
            d,
            batch=args.batch,
            iters=args.iters or (3 if cpu else 50),
            warmup=args.warmup if args.warmup is not None else (1 if cpu else 10),
            latent_dim=args.latent_dim,
            conv_layers=args.conv_layers,
            image_size=args.image_size,
            frames=args.frames,
            variant=args.variant,
            amp=args.amp,
        )
        print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
