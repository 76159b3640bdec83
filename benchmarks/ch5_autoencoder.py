"""Chapter-5 autoencoder alone: test-split SSIM, PSNR and mask Dice after training with chosen settings.

Trains (or reloads from ``runs/``) the chapter's image + mask autoencoder exactly as notebook 02 does
(:func:`cmrkit.chapters.ldm3d.train_autoencoder`) with ``--set`` overrides, reconstructs the test split
and scores it with the chapter's metrics (SSIM per 2D slice, PSNR per volume, Dice over LV, Myo, RV).
This is how the autoencoder table of ``benchmarks/README.md`` ("what caps the autoencoder's SSIM") was
measured.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/ch5_autoencoder.py --profile cpu
    OMP_NUM_THREADS=2 python benchmarks/ch5_autoencoder.py --profile cpu --set ch5.ae_slice_width=16 \\
        --set 'ch5.ae_channels=[32,64]' --set ch5.kl_weight=1e-6 --set ch5.ae_epochs=100 [--latents]

``--latents`` adds what the diffusion model will see (the training latents ``mu``): per channel the
spread of ``mu``, the mean posterior ``sigma`` and the lag-1 spatial autocorrelation (near 0 = a
white-noise-like map, which a coarse-to-fine denoiser struggles to generate: Skorokhodov et al. 2025),
and the decoder's robustness: the share of anatomically valid masks (:mod:`cmrkit.metrics.anatomy`)
decoded from ``mu + k * std_c * eps`` for noise levels ``k``.

Prints one JSON line with the settings and the numbers.
"""

from __future__ import annotations

import json
import time

import numpy as np
from profile_args import load_profile, profile_parser

from cmrkit.chapters import ldm3d
from cmrkit.metrics import psnr, ssim


def main() -> None:
    ap = profile_parser(__doc__)
    ap.add_argument("--latents", action="store_true", help="add latent statistics and decoder robustness")
    a = ap.parse_args()
    cfg, overrides = load_profile(a)
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
    if a.latents:
        out["latents"] = latent_statistics(trained.model, data, device=cfg.device)
    print(json.dumps(out))


def latent_statistics(model, data, *, device: str = "cpu", levels=(0.0, 0.1, 0.2, 0.3, 0.5)) -> dict:
    """Per-channel spread, posterior sigma and lag-1 autocorrelation of the training latents, and the
    share of valid anatomy decoded from noisy latents (see the module docstring)."""
    import torch

    from cmrkit.metrics.anatomy import check_volumes, validity_summary
    from cmrkit.models.autoencoder import split_output
    from cmrkit.models.diffusion import encode_latents

    tr = data.index("train")
    mu, sigma = (torch.as_tensor(v) for v in encode_latents(model, data.images[tr], data.labels[tr], device=device))
    centred = mu - mu.mean(dim=(0, 2, 3), keepdim=True)
    var = centred.pow(2).mean(dim=(0, 2, 3))
    lag_x = (centred[..., 1:, :] * centred[..., :-1, :]).mean(dim=(0, 2, 3)) / var
    lag_y = (centred[..., 1:] * centred[..., :-1]).mean(dim=(0, 2, 3)) / var
    std = var.sqrt().view(1, -1, 1, 1)
    g = torch.Generator().manual_seed(0)
    valid = {}
    model.eval()
    for k in levels:
        z = mu + float(k) * std * torch.randn(mu.shape, generator=g)
        with torch.no_grad():
            out = torch.cat([model.decode(z[i : i + 16]) for i in range(0, len(z), 16)])
        _, labels = split_output(out.float())
        valid[str(k)] = round(100 * validity_summary(check_volumes(labels.numpy(), apex_last=True))["valid"], 1)
    return {
        "std": [round(float(v), 3) for v in var.sqrt()],
        "sigma": [round(float(v), 4) for v in sigma.mean(dim=(0, 2, 3))],
        "lag1_autocorrelation": [round(float(v), 3) for v in (lag_x + lag_y) / 2],
        "valid_percent_at_noise": valid,
    }


if __name__ == "__main__":
    main()
