"""Chapter-5 autoencoder alone: test-split SSIM, PSNR and mask Dice after training with chosen settings.

Trains (or reloads from ``runs/``) the chapter's image + mask autoencoder exactly as notebook 02 does
(:func:`cmrkit.chapters.ldm3d.train_autoencoder`) with ``--set`` overrides, reconstructs the test split
and scores it with the chapter's metrics (SSIM per 2D slice, PSNR per volume, Dice over LV, Myo, RV).
This is how the autoencoder table of ``benchmarks/README.md`` ("what caps the autoencoder's SSIM") was
measured.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/ch5_autoencoder.py --profile cpu
    OMP_NUM_THREADS=2 python benchmarks/ch5_autoencoder.py --profile cpu --set ch5.ae_slice_width=16 \\
        --set 'ch5.ae_channels=[32,64]' --set ch5.kl_weight=1e-6 --set ch5.ae_epochs=100

Prints one JSON line with the settings and the numbers.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from cmrkit import config
from cmrkit.chapters import ldm3d
from cmrkit.metrics import psnr, ssim


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data-dir", default=None, help="phantom cohort folder (default: the profile's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="profile override, repeatable")
    a = ap.parse_args()
    overrides = config.parse_overrides(a.set)
    cfg = config.load(a.profile, device=a.device, overrides=overrides, data_dir=a.data_dir)
    data = ldm3d.load_volumes(cfg)
    t0 = time.perf_counter()
    trained = ldm3d.train_autoencoder(cfg, data)
    seconds = time.perf_counter() - t0
    idx = data.index("test")
    rec_i, rec_l = ldm3d.reconstruct(trained.model, data.images[idx], data.labels[idx], device=cfg.device)
    s = np.asarray(ssim(ldm3d.image_slices(rec_i), ldm3d.image_slices(data.images[idx]), data_range=1.0))
    p = np.asarray(psnr(rec_i[:, None], data.images[idx][:, None], data_range=1.0))
    d = np.nanmean(ldm3d.volume_dice(rec_l, data.labels[idx]), axis=1)
    out = {
        "profile": a.profile,
        "overrides": overrides,
        "latent_shape": list(trained.model.config.latent_shape),
        "test_volumes": int(len(idx)),
        "ssim": round(float(s.mean()), 4),
        "psnr_db": round(float(p.mean()), 2),
        "mask_dice": round(float(d.mean()), 4),
        "train_or_load_s": round(seconds, 1),
        "best_epoch": int(trained.best_epoch),
        "run": trained.folder.name,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
