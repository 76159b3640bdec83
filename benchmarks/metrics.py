"""Speed and memory of the set-level metrics at the thesis sample sizes (1,000 / 2,000 / 4,000).

Run::

    .venv/bin/python benchmarks/metrics.py                     # CPU, torch's default threads
    .venv/bin/python benchmarks/metrics.py --device cuda       # on a GPU
    .venv/bin/python benchmarks/metrics.py --sizes 1000 --dim 512 --no-images   # quick look

For each n, two sets of n random 2,048-d feature vectors (Inception/ResNet50 size; the offline
extractor gives 992-d) go through the Fréchet distance, improved precision/recall (k=3) and MMD
(Gaussian kernel with the median heuristic, and the linear kernel). Times are wall-clock seconds
of one call (the fastest of ``--repeat`` calls, after a small warm-up, because the shared CI
machine is noisy); ``peak_MB`` is the CUDA peak allocation (GPU runs only).
Image-level throughputs follow: offline feature extraction (slices/s at 128 x 128) and the
pairwise MS-SSIM / 4-G-r* diversity scores (pairs/s of 128 x 128 x 10 volumes).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from cmrkit.metrics import generative as gen


def _timed(fn, device: str) -> tuple[float, object]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def bench_sets(sizes: list[int], dim: int, device: str, dtype: torch.dtype | None, repeat: int) -> None:
    rng = np.random.default_rng(0)
    print(f"\nset metrics: features {dim}-d, device {device}, dtype {dtype or 'default'}")
    print(f"{'n':>6} {'metric':<22} {'seconds':>9} {'value':>10} {'peak_MB':>8}")
    x0, y0 = rng.standard_normal((8, dim)), rng.standard_normal((8, dim))
    gen.precision_recall(x0, y0, device=device, dtype=dtype)  # warm-up (kernels, threads, LAPACK)
    gen.mmd(x0, y0, device=device, dtype=dtype)
    gen.frechet_distance(x0, y0, device=device)
    gen.frechet_distance(np.vstack([x0] * 40), np.vstack([y0] * 40), device=device)
    for n in sizes:
        real = rng.standard_normal((n, dim)).astype(np.float32)
        fake = (rng.standard_normal((n, dim)) + 0.05).astype(np.float32)  # small mean shift
        rt, ft = torch.from_numpy(real).to(device), torch.from_numpy(fake).to(device)
        runs = {
            "frechet_distance": lambda: gen.frechet_distance(rt, ft),
            "precision_recall(k=3)": lambda: tuple(gen.precision_recall(rt, ft, device=device, dtype=dtype)),
            "mmd(gaussian,median)": lambda: gen.mmd(rt, ft, device=device, dtype=dtype),
            "mmd(linear)": lambda: gen.mmd(rt, ft, kernel="linear", device=device, dtype=dtype),
        }
        for name, fn in runs.items():
            timings = [_timed(fn, device) for _ in range(repeat)]
            sec, val = min(t[0] for t in timings), timings[0][1]
            peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else float("nan")
            shown = "/".join(f"{v:.3f}" for v in val) if isinstance(val, tuple) else f"{val:.4g}"
            print(f"{n:>6} {name:<22} {sec:>9.2f} {shown:>10} {peak:>8.0f}", flush=True)


def bench_images(device: str, n_slices: int, n_pairs: int) -> None:
    rng = np.random.default_rng(1)
    print(f"\nimage metrics, device {device}")
    ext = gen.RandomConvFeatures(0, device=device)
    x = torch.from_numpy(rng.random((n_slices, 1, 128, 128), dtype=np.float32))
    ext(x[:8])
    sec, _ = _timed(lambda: ext(x, batch_size=128), device)
    print(f"  offline features ({ext.name}): {n_slices / sec:8.1f} slices/s")
    vols = torch.from_numpy(rng.random((20, 1, 10, 128, 128), dtype=np.float32)).to(device)
    for metric in ("ms_ssim", "gr4_ssim"):
        gen.mean_pairwise_similarity(vols, metric=metric, n_pairs=2, rng=0, device=device)
        sec, _ = _timed(
            lambda: gen.mean_pairwise_similarity(vols, metric=metric, n_pairs=n_pairs, rng=0, device=device), device
        )
        print(
            f"  mean_pairwise_similarity({metric}): {n_pairs / sec:8.1f} volume pairs/s "
            f"({10 * n_pairs / sec:.0f} slice pairs/s)"
        )
    from cmrkit.metrics import segmentation as seg

    zz, yy, xx = np.meshgrid(np.arange(10) * 8.0, np.arange(128) * 1.8, np.arange(128) * 1.8, indexing="ij")
    r = np.sqrt((zz - 36) ** 2 + (yy - 115) ** 2 + (xx - 115) ** 2)
    lab = np.select([r < 25, r < 33, (r < 45) & (xx > 125)], [1, 2, 3], 0)
    ref = np.stack([np.roll(lab, k, axis=2) for k in range(8)])
    pred = np.roll(ref, 2, axis=1)
    sec, _ = _timed(lambda: seg.segmentation_scores(pred, ref, spacing=(8.0, 1.8, 1.8)), "cpu")
    print(f"  segmentation_scores (Dice/HD/HD95/ASSD, 3 labels, 10x128x128, CPU): {len(ref) / sec:6.1f} volumes/s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000])
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument(
        "--dtype",
        choices=["default", "float32", "float64"],
        default="default",
        help="distance dtype for P/R and MMD (default: float64 on CPU, float32 on GPU)",
    )
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads on CPU (0: torch default)")
    ap.add_argument("--slices", type=int, default=256, help="slices for the extractor throughput")
    ap.add_argument("--pairs", type=int, default=40, help="volume pairs for the diversity throughput")
    ap.add_argument("--no-images", action="store_true", help="skip the image-level throughputs")
    ap.add_argument("--repeat", type=int, default=2, help="calls per set metric; the fastest is reported")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = None if args.dtype == "default" else getattr(torch, args.dtype)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}")
    bench_sets(args.sizes, args.dim, args.device, dtype, max(1, args.repeat))
    if not args.no_images:
        bench_images(args.device, args.slices, args.pairs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
