"""Throughput of the short-axis segmenter (cmrkit.models.segmenter): training and inference
slices per second at 64 x 64 (smoke channels) and 128 x 128 (demo channels).

Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/segmenter.py               # CPU, 1 thread
    .venv/bin/python benchmarks/segmenter.py --device cuda --threads 8         # on a GPU

Training goes through ``Segmenter.fit`` (so it includes the loop, the DataLoader and the on-the-fly
augmentation); the first epoch is a warm-up and not timed. Inference is ``Segmenter.predict``
with and without the largest-connected-component post-processing (which runs on the CPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from cmrkit.models.segmenter import Segmenter, SegmenterConfig, toy_slices

SETUPS = {64: (8, 16, 32), 128: (16, 32, 64, 128)}


def bench(
    size: int,
    channels: tuple[int, ...],
    *,
    n_train: int,
    n_infer: int,
    epochs: int,
    batch_size: int,
    device: str,
    augment: bool,
) -> dict[str, float]:
    x, y = toy_slices(n_train, size, rng=0)
    cfg = SegmenterConfig(image_size=size, channels=channels, epochs=1, batch_size=batch_size, augment=augment)
    seg = Segmenter(cfg, seed=0)
    seg.fit(x, y, val_fraction=0, seed=0, device=device, progress=False)  # warm-up epoch
    seg.config = dataclasses.replace(seg.config, epochs=epochs)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    seg.fit(x, y, val_fraction=0, seed=1, device=device, progress=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    train = epochs * n_train / (time.perf_counter() - t0)
    xi, _ = toy_slices(n_infer, size, rng=1)
    seg.predict(xi[:batch_size], device=device, largest_component=False)  # warm-up
    out = {"size": size, "params": sum(p.numel() for p in seg.network.parameters()), "train_slices_s": train}
    for lcc in (False, True):
        t0 = time.perf_counter()
        seg.predict(xi, device=device, largest_component=lcc, batch_size=64)
        out["infer_slices_s" + ("_lcc" if lcc else "")] = n_infer / (time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128], choices=sorted(SETUPS))
    ap.add_argument("--n-train", type=int, default=128)
    ap.add_argument("--n-infer", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--no-augment", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    print(f"device={a.device} threads={torch.get_num_threads()} torch={torch.__version__} augment={not a.no_augment}")
    print(f"{'size':>5} {'channels':>20} {'params':>9} {'train sl/s':>11} {'infer sl/s':>11} {'infer+LCC sl/s':>15}")
    for size in a.sizes:
        r = bench(
            size,
            SETUPS[size],
            n_train=a.n_train,
            n_infer=a.n_infer,
            epochs=a.epochs,
            batch_size=a.batch_size,
            device=a.device,
            augment=not a.no_augment,
        )
        print(
            f"{size:>5} {str(SETUPS[size]):>20} {r['params']:>9,d} {r['train_slices_s']:>11.1f} "
            f"{r['infer_slices_s']:>11.1f} {r['infer_slices_s_lcc']:>15.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
