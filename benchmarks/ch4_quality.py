"""Chapter 4 quality at a chosen size: cine->tagging synthesis, tracking and strain agreement, per model.

A cheaper stand-in for ``cmrkit run smcvae_strain --profile P`` (no ablations, no segmentation check)
that prints the numbers of the chapter-4 bars for the thesis model (cine only) and the geometry-aware
model (tagging decoder given the tag phase from the header), on the test split:

* active latent dimensions (dropout rate below ``ch4.dropout_threshold``);
* cine->tagging SSIM by region and its mean (Table 4.1's measure);
* tag contrast of the generated tagging relative to the original, by region;
* landmark error of tracked generated (and original) tagging against the phantom's true landmarks (px);
* ES E_cc of generated minus original tagging by region: mean and 95 % limits of agreement;
* training time and training slices per second.

::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/ch4_quality.py --profile cpu
    .venv/bin/python benchmarks/ch4_quality.py --profile cpu --max-subjects 40 --set ch4.epochs=100 --models geometry
    .venv/bin/python benchmarks/ch4_quality.py --profile demo --device cuda          # thesis resolution, on a GPU
    .venv/bin/python benchmarks/ch4_quality.py --profile cpu --tag-phase random      # a control cohort

The profile's own cohort (``data/phantom/<profile>``) is used when the tag phase and cohort size are the
profile's; otherwise the cohort goes to /tmp/cmrkit_ch4_quality/<profile>_<tag-phase>_<n> (or --data-dir).
``--max-subjects`` reads only the first subjects of the cohort (no new cohort).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _parse_set(items: list[str]) -> dict:
    import yaml

    out = {}
    for it in items:
        if "=" not in it:
            raise SystemExit(f"--set expects key=value, got {it!r}")
        k, v = it.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


def _ba(d: np.ndarray) -> dict:
    sd = float(d.std(ddof=1)) if d.size > 1 else float("nan")
    m = float(d.mean())
    return {"bias": round(m, 4), "loa": [round(m - 1.96 * sd, 4), round(m + 1.96 * sd, 4)], "n": int(d.size)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="cpu")
    p.add_argument("--n", type=int, default=None, help="cohort size (default: the profile's)")
    p.add_argument("--max-subjects", type=int, default=None, help="read only the first N subjects of the cohort")
    p.add_argument("--epochs", type=int, default=None, help="smcVAE epochs (default: the profile's)")
    p.add_argument("--tag-phase", default=None, choices=["scanner", "random", "anchored"])
    p.add_argument("--models", default="thesis,geometry", help="comma list of thesis, geometry")
    p.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, e.g. ch4.latent_dim=128"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--tracking-jobs", type=int, default=None)
    p.add_argument("--out", default=None, help="also write the JSON here")
    a = p.parse_args()

    import torch

    from cmrkit import config
    from cmrkit.chapters import smcvae_strain as ch
    from cmrkit.phantom import ensure_cohort

    models = [m.strip() for m in a.models.split(",") if m.strip()]
    if not set(models) <= {"thesis", "geometry"}:
        raise SystemExit(f"--models: unknown {sorted(set(models) - {'thesis', 'geometry'})}")
    raw = config.load_raw(a.profile)
    ov: dict = _parse_set(a.set)
    tag_phase = a.tag_phase or raw["phantom"]["tag_phase"]
    ov["phantom.tag_phase"] = tag_phase
    if a.n:
        ov["phantom.n_subjects"] = a.n
    if a.epochs:
        ov["ch4.epochs"] = a.epochs
    n = a.n or raw["phantom"]["n_subjects"]
    ddir = a.data_dir
    if ddir is None and (tag_phase != raw["phantom"]["tag_phase"] or n != raw["phantom"]["n_subjects"]):
        ddir = f"/tmp/cmrkit_ch4_quality/{a.profile}_{tag_phase}_{n}"
    cfg = config.load(a.profile, seed=a.seed, data_dir=ddir, device=a.device, overrides=ov)
    out: dict = {
        "profile": a.profile,
        "data_dir": str(cfg.data_dir),
        "n_subjects": cfg.phantom.n_subjects,
        "max_subjects": a.max_subjects,
        "tag_phase": tag_phase,
        "device": cfg.device,
        "torch_threads": torch.get_num_threads(),
        "ch4": {
            k: cfg.ch4[k] for k in ("image_size", "latent_dim", "conv_layers", "base_width", "epochs", "batch_size")
        },
        "overrides": ov,
    }
    t = time.perf_counter()
    ensure_cohort(cfg)
    out["cohort_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    data = ch.load_pairs(cfg, max_subjects=a.max_subjects)
    out["pairing_s"] = round(time.perf_counter() - t, 1)
    out["slices"] = {s: int((data.split == s).sum()) for s in ("train", "val", "test")}
    out["tag_grid"] = data.meta.get("tag_grid")
    if data.tag_residual_mm is not None:
        te = data.split == "test"
        out["header_residual_mm_test"] = round(float(np.nanmean(data.tag_residual_mm[te])), 4)
    idx = data.index("test")
    regions = data.region[idx]
    gen = {}
    n_train = len(data.index("train"))
    for m in models:
        geometry = m == "geometry"
        name = ch.GEOMETRY if geometry else "generated"
        t = time.perf_counter()
        fit = ch.train_smcvae(cfg, data, geometry=geometry)
        secs = time.perf_counter() - t
        res: dict = {
            "training_s": round(secs, 1),
            "training_slices_per_s": round(n_train * cfg.ch4.epochs / max(secs, 1e-9), 2),
            "best_epoch": fit.best_epoch,
        }
        if fit.model.sparse:
            rate = fit.model.dropout_rate().numpy()
            act = int((rate < cfg.ch4.dropout_threshold).sum())
            res["active_dims"] = act
            res["active_fraction"] = round(act / rate.size, 3)
            res["dropout_quantiles"] = [round(float(q), 3) for q in np.quantile(rate, [0, 0.1, 0.5, 0.9, 1])]
        outputs = ch.synthesis_scenarios(fit.model, data)
        for sc, _, tgt in ch.SCENARIOS:
            met = ch.image_metrics(outputs[sc], getattr(data, tgt)[idx])
            ssim = np.asarray(met["SSIM"])
            by_region = {r: round(float(np.nanmean(ssim[regions == r])), 4) for r in ch.REGIONS}
            res[sc] = {
                "SSIM_by_region": by_region,
                "SSIM_mean_over_regions": round(float(np.mean(list(by_region.values()))), 4),
                "PSNR": round(float(np.nanmean(met["PSNR"])), 2),
            }
        gen[name] = outputs["only_cine_to_tagging"]
        out[m] = res
    t = time.perf_counter()
    jobs = a.tracking_jobs if a.tracking_jobs is not None else int(cfg.ch4.tracking_jobs)
    tr = ch.track_and_strain(data, gen, n_jobs=jobs)
    out["tracking_s"] = round(time.perf_counter() - t, 1)
    es = tr["es"]
    if "original" in tr["landmark_error_mm"]:
        e = tr["landmark_error_mm"]["original"]
        out["original"] = {"landmark_error_px": round(float(e.mean() / data.px_mm), 3)}
        if "truth" in tr["Ecc"]:
            d = ch.at_es(tr["Ecc"]["original"], es) - ch.at_es(tr["Ecc"]["truth"], es)
            out["original"]["Ecc_ES_minus_truth"] = _ba(d)
    for m in models:
        name = ch.GEOMETRY if m == "geometry" else "generated"
        res = out[m]
        res["tag_contrast_by_region"] = {
            r: round(float(tr["tag_contrast_ratio"][name][regions == r].mean()), 3) for r in ch.REGIONS
        }
        if name in tr["landmark_error_mm"]:
            res["landmark_error_px"] = round(float(tr["landmark_error_mm"][name].mean() / data.px_mm), 3)
        d_all = ch.at_es(tr["Ecc"][name], es) - ch.at_es(tr["Ecc"]["original"], es)
        res["dEcc_ES_vs_original"] = {r: _ba(d_all[regions == r]) for r in (*ch.REGIONS,)}
        res["dEcc_ES_vs_original"]["all"] = _ba(d_all)
        res["Ecc_ES_mean"] = {
            "generated": round(float(ch.at_es(tr["Ecc"][name], es).mean()), 4),
            "original": round(float(ch.at_es(tr["Ecc"]["original"], es).mean()), 4),
        }
        if "truth" in tr["Ecc"]:
            res["Ecc_ES_minus_truth"] = _ba(ch.at_es(tr["Ecc"][name], es) - ch.at_es(tr["Ecc"]["truth"], es))
        res["bars"] = {
            "active_fraction>=0.10": res.get("active_fraction", 0) >= 0.10,
            "tag_contrast>=0.6_every_region": min(res["tag_contrast_by_region"].values()) >= 0.6,
            "landmark_error<=1.5px": res.get("landmark_error_px", np.inf) <= 1.5,
            "|mean dEcc|<=0.03_every_region": all(
                abs(res["dEcc_ES_vs_original"][r]["bias"]) <= 0.03 for r in ch.REGIONS
            ),
            "LoA_inside_0.1_every_region": all(
                -0.1 <= res["dEcc_ES_vs_original"][r]["loa"][0] and res["dEcc_ES_vs_original"][r]["loa"][1] <= 0.1
                for r in ch.REGIONS
            ),
            "SSIM>=0.75": res["only_cine_to_tagging"]["SSIM_mean_over_regions"] >= 0.75,
        }
    txt = json.dumps(out, indent=1, default=str)
    print(txt)
    if a.out:
        from cmrkit.utils import atomic_write

        with atomic_write(a.out, "w") as fh:
            fh.write(txt)


if __name__ == "__main__":
    main()
