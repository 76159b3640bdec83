"""Chapter-5 generated volumes without the notebook: validity, phenotype distances and memorisation.

Trains (or reloads from ``runs/``) the autoencoder and the diffusion model exactly as notebook 02 does, with
``--set`` overrides, draws ``--n`` samples from the notebook's seeds with DDIM (``--steps``, comma-separated
for several samplers) and scores them with the notebook's own functions: the share of anatomically valid
volumes and each rule (:mod:`cmrkit.metrics.anatomy`), the Wasserstein-1 distance of LVEDV, LVM and RVEDV
to the held-out test volumes in cohort standard deviations, and the memorisation ratio of the masks
(median nearest-training mask distance of the samples over that of the test volumes). This is how the
variants of ``benchmarks/README.md`` (stop 24) were compared in a few minutes each.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/ch5_samples.py --profile cpu --set ch5.diffusion_iterations=3000

Prints one JSON line per sampler setting.
"""

from __future__ import annotations

import json
import time

import numpy as np
from profile_args import load_profile, profile_parser

from cmrkit.chapters import ldm3d
from cmrkit.metrics import wasserstein
from cmrkit.metrics.anatomy import check_volumes, validity_summary
from cmrkit.models.diffusion import generate, sample_seeds


def main() -> None:
    ap = profile_parser(__doc__)
    ap.add_argument("--steps", default=None, help="DDIM steps, comma-separated (default: the profile's)")
    ap.add_argument("--n", type=int, default=200, help="samples per setting")
    a = ap.parse_args()
    cfg, overrides = load_profile(a)
    data = ldm3d.load_volumes(cfg)
    ae = ldm3d.train_autoencoder(cfg, data)
    ldm = ldm3d.train_diffusion(cfg, data, ae)
    tr, te = data.index("train"), data.index("test")
    test = ldm3d.volume_phenotypes(data.labels[te], data.spacing[te])
    sd = ldm3d.volume_phenotypes(data.labels, data.spacing).std(ddof=1)
    test_nn = float(np.median(ldm3d.nearest_mask_distances(data.labels[te], data.labels[tr])))
    steps_list = [int(s) for s in (a.steps or str(cfg.ch5.ddim_steps)).split(",")]
    for steps in steps_list:
        t0 = time.perf_counter()
        _, labels = generate(
            ae.model, ldm.model, sample_seeds(int(cfg.seed), a.n), ddim_steps=steps, batch_size=100, device=cfg.device
        )
        summ = validity_summary(check_volumes(labels, apex_last=True))
        gen = ldm3d.volume_phenotypes(labels, data.reference_spacing)
        w1 = {k: round(float(wasserstein(gen[k].to_numpy(), test[k].to_numpy())) / float(sd[k]), 3) for k in gen}
        gen_nn = float(np.median(ldm3d.nearest_mask_distances(labels, data.labels[tr])))
        print(
            json.dumps(
                {
                    "overrides": overrides,
                    "ddim_steps": steps,
                    "n": a.n,
                    "valid_percent": round(100 * summ["valid"], 1),
                    "rules_percent": {k: round(100 * v, 1) for k, v in summ.items() if k != "valid"},
                    "w1_over_cohort_sd": w1,
                    "mask_memorisation_ratio": round(gen_nn / test_nn, 3),
                    "sampling_s": round(time.perf_counter() - t0, 1),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
