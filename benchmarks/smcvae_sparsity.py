"""smcVAE sparsity against optimiser steps, latent size D and the log-alpha settings.

The sparse mcVAE (Antelmi et al. 2019) learns one shared ``log alpha`` per latent dimension; a dimension is
*active* when its dropout rate ``p = alpha / (1 + alpha)`` is below 0.2 and *pruned* when ``p > 0.95``
(``log alpha > 3``, the variational-dropout threshold of Molchanov et al. 2017). This script trains the
chapter-4 model on the first subjects of a phantom cohort for each setting of a small grid and prints,
per epoch, the numbers of active / undecided / pruned dimensions, the spread of ``log alpha`` and the
cine->tagging reconstruction error, plus the largest ``|log alpha|`` change per optimiser step.

::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/smcvae_sparsity.py --profile cpu --max-subjects 40 \\
        --epochs 100 --grid latent_dim=64,256,1024 log_param_scale=1,10 log_alpha_init=0

Every combination of the ``--grid`` values is trained (``--geometry`` trains the geometry-aware model).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np


def _grid(items: list[str]) -> list[dict]:
    axes = {}
    for it in items:
        k, v = it.split("=", 1)
        axes[k] = [float(x) if "." in x or "e" in x.lower() else int(x) for x in v.split(",")]
    keys = list(axes)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(axes[k] for k in keys))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="cpu")
    p.add_argument("--max-subjects", type=int, default=40)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--grid", nargs="+", default=["latent_dim=64,256", "log_param_scale=10"])
    p.add_argument("--geometry", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None)
    a = p.parse_args()

    from cmrkit import config
    from cmrkit.chapters import smcvae_strain as ch
    from cmrkit.models.smcvae import PHASE_KEY, SMCVAE, PairedSliceDataset, SMCVAEConfig, smcvae_loss
    from cmrkit.train import fit

    cfg = config.load(a.profile, seed=a.seed, data_dir=a.data_dir, device="cpu")
    data = ch.load_pairs(cfg, max_subjects=a.max_subjects)
    tr, va = data.index("train"), data.index("val")

    def ds(idx):
        extra = {PHASE_KEY: data.tag_phase[idx]} if a.geometry else None
        return PairedSliceDataset({"cine": data.cine[idx], "tagging": data.tagging[idx]}, extra=extra)

    c = cfg.ch4
    steps_per_epoch = int(np.ceil(len(tr) / int(c.batch_size)))
    results = []
    for setting in _grid(a.grid):
        base = dict(
            in_frames=int(c.frames),
            image_size=int(c.image_size),
            conv_layers=int(c.conv_layers),
            latent_dim=int(c.latent_dim),
            base_width=int(c.base_width),
            variant="sparse",
            log_alpha_init=float(c.log_alpha_init),
            phase_channel="tagging" if a.geometry else "",
            motion_channel="cine" if a.geometry else "",
        )
        base.update(setting)
        model = SMCVAE(SMCVAEConfig(**base), seed=cfg.seed)
        la0 = model.log_alpha.detach().clone()
        per_epoch = []

        t = time.perf_counter()
        res = fit(
            model,
            ds(tr),
            ds(va),
            loss_fn=smcvae_loss,
            epochs=a.epochs,
            batch_size=int(c.batch_size),
            lr=float(c.lr),
            weight_decay=float(c.weight_decay),
            device="cpu",
            seed=cfg.seed,
            progress=False,
        )
        secs = time.perf_counter() - t
        la = res.model.log_alpha.detach().reshape(-1).numpy()
        rate = 1.0 / (1.0 + np.exp(-la))
        for h in res.history:
            per_epoch.append(
                {
                    "epoch": h["epoch"],
                    "step": h["step"],
                    "active": h.get("train/active_dims"),
                    "mse_tagging_from_cine": h.get("val/mse/tagging<-cine"),
                    "val_loss": h["val_loss"],
                }
            )
        out = {
            "setting": setting,
            "steps": res.history[-1]["step"],
            "seconds": round(secs, 1),
            "final": {
                "active(p<0.2)": int((rate < 0.2).sum()),
                "undecided": int(((rate >= 0.2) & (rate <= 0.95)).sum()),
                "pruned(p>0.95)": int((rate > 0.95).sum()),
                "log_alpha_quantiles": [round(float(q), 2) for q in np.quantile(la, [0, 0.1, 0.5, 0.9, 1])],
                "max_abs_change_per_step": round(
                    float(np.abs(la - la0.reshape(-1).numpy()).max() / res.history[-1]["step"]), 5
                ),
                "best_epoch": res.best_epoch,
                "val_mse_tagging_from_cine": per_epoch[res.best_epoch - 1]["mse_tagging_from_cine"],
            },
            "trajectory": [
                per_epoch[i] for i in sorted({0, 1, 4, 9, 19, 49, 99, 199, len(per_epoch) - 1}) if i < len(per_epoch)
            ],
        }
        results.append(out)
        print(json.dumps(out), flush=True)
    summary = {"profile": a.profile, "train_slices": int(len(tr)), "steps_per_epoch": steps_per_epoch, "runs": results}
    if a.out:
        from cmrkit.utils import atomic_write

        with atomic_write(a.out, "w") as fh:
            json.dump(summary, fh, indent=1)


if __name__ == "__main__":
    main()
