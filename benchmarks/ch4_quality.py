"""Chapter 4 quality at a chosen size: cine->tagging synthesis, tracking and strain agreement.

A cheaper stand-in for ``cmrkit run smcvae_strain --profile demo`` (no ablations, no segmentation check) that
prints the numbers of the chapter-4 bars: cine->tagging SSIM on the test split, landmark error of
tracked original tagging, and ES strain agreement (generated vs original, tracked vs truth).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/ch4_quality.py --profile demo --n 40 --epochs 40 --device cpu
    .venv/bin/python benchmarks/ch4_quality.py --profile demo --tag-phase anchored      # grid fixed to the heart

The cohort goes to /tmp/cmrkit_ch4_quality/<profile>_<tag-phase>_<n> unless --data-dir is given.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="demo")
    p.add_argument("--n", type=int, default=None, help="cohort size (default: the profile's)")
    p.add_argument("--epochs", type=int, default=None, help="smcVAE epochs (default: the profile's)")
    p.add_argument("--tag-phase", default="random", choices=["random", "anchored"])
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    a = p.parse_args()

    from cmrkit import config
    from cmrkit.chapters import smcvae_strain
    from cmrkit.phantom import ensure_cohort

    ov: dict = {"phantom.tag_phase": a.tag_phase}
    if a.n:
        ov["phantom.n_subjects"] = a.n
    if a.epochs:
        ov["ch4.epochs"] = a.epochs
    raw = config.load_raw(a.profile)
    ddir = a.data_dir or f"/tmp/cmrkit_ch4_quality/{a.profile}_{a.tag_phase}_{a.n or raw['phantom']['n_subjects']}"
    cfg = config.load(a.profile, seed=a.seed, data_dir=ddir, device=a.device, overrides=ov)
    out: dict = {
        "profile": a.profile,
        "n_subjects": cfg.phantom.n_subjects,
        "epochs": cfg.ch4.epochs,
        "tag_phase": a.tag_phase,
        "device": cfg.device,
    }
    t = time.perf_counter()
    ensure_cohort(cfg)
    out["cohort_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    data = smcvae_strain.load_pairs(cfg)
    out["pairing_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    fit = smcvae_strain.train_smcvae(cfg, data)
    out["training_s"] = round(time.perf_counter() - t, 1)
    n_train = len(data.index("train"))
    out["training_slices_per_s"] = round(n_train * cfg.ch4.epochs / max(out["training_s"], 1e-9), 2)
    out["active_dims"] = int(fit.model.active_dims(cfg.ch4.dropout_threshold).sum())
    outputs = smcvae_strain.synthesis_scenarios(fit.model, data)
    idx = data.index("test")
    for name, _, tgt in smcvae_strain.SCENARIOS:
        m = smcvae_strain._image_metrics(outputs[name], getattr(data, tgt)[idx])
        out[name] = {k: round(float(np.mean(v)), 4) for k, v in m.items()}
    t = time.perf_counter()
    tr = smcvae_strain.track_and_strain(data, outputs["only_cine_to_tagging"], n_jobs=int(cfg.ch4.tracking_jobs))
    out["tracking_s"] = round(time.perf_counter() - t, 1)
    es = tr["es"]
    pairs = [("generated", "original")] + (
        [("original", "truth"), ("generated", "truth")] if "truth" in tr["Ecc"] else []
    )
    for x, y in pairs:
        for met in ("Ecc", "Err"):
            d = smcvae_strain._at_es(tr[met][x], es) - smcvae_strain._at_es(tr[met][y], es)
            sd = float(d.std(ddof=1))
            out[f"{met}_ES_{x}_minus_{y}"] = {
                "bias": round(float(d.mean()), 4),
                "loa": [round(float(d.mean() - 1.96 * sd), 4), round(float(d.mean() + 1.96 * sd), 4)],
            }
    out["tag_contrast_generated_over_original"] = round(float(np.mean(tr["tag_contrast_ratio"])), 3)
    for src, e in tr["landmark_error_mm"].items():
        out[f"landmark_error_{src}"] = {"mm": round(float(e.mean()), 3), "px": round(float(e.mean() / data.px_mm), 3)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
