"""Chapter 6: recovered covariate effects and volume-curve plausibility against the guidance weight and noise prior.

Classifier-free guidance (Ho & Salimans 2022) extrapolates from the unconditional towards the conditional
noise prediction, ``eps_u + w (eps_c - eps_u)``: ``w = 1`` is the conditional model itself, ``w > 1``
strengthens whatever the model has learned about the conditions, right or wrong. On the phantom the true
covariate effects are known, so this script shows what the weight does to them: for each ``w`` it samples the
chapter's population set (one sequence per new covariate draw, ``ch6.n_population``) with the chapter's
trained models and fits the same effect regression as notebook 03 (:func:`cmrkit.chapters.cond_ldm4d.
covariate_effects`), then scores the volume curves (:func:`~cmrkit.chapters.cond_ldm4d.curve_statistics`).

``--prior`` compares the diffusion's noise (``ch6.diffusion_prior``): isotropic (the thesis) or the covariance of
the frames' latent channels (PriorGrad, Lee et al. 2022; :mod:`cmrkit.models.cond_diffusion`); every prior is
combined with every weight. The first line printed is the eigenvalue spectrum of that covariance (share of the
variance per frame combination, largest first) on the training latents, which is what the prior is built from.

The trained autoencoder and diffusion models come from ``runs/`` (they are trained there first if absent,
as notebook 03 would); each weight's population set is cached in ``runs/`` like the notebook's. Tables and
figures of each weight go to ``--report-root/g<w>``. Prints one JSON line per weight.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/cond_ldm4d_guidance.py --profile cpu --guidance 1,2,3
    python benchmarks/cond_ldm4d_guidance.py --profile cpu --guidance 1 --prior isotropic,channel_covariance
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile

import torch

from cmrkit.chapters import cond_ldm4d as c6
from cmrkit.clinical import sequence_phenotypes
from cmrkit.config import load
from cmrkit.report import Report


def channel_spectrum(data: c6.SequenceData, ae: c6.Trained) -> list[float]:
    """Share of the variance of each eigen-combination of the latent channels (frames), largest first, for the
    autoencoder's latent means of the training split (:func:`cmrkit.models.diffusion.channel_covariance` with
    ``sigma = 0``; the whitening adds one posterior draw to the same means)."""
    from cmrkit.models.cond_diffusion import encode_sequences
    from cmrkit.models.diffusion import channel_covariance

    tr = data.index("train")
    mu, _ = encode_sequences(ae.model, data.images[tr], data.labels[tr])
    lam = torch.linalg.eigvalsh(channel_covariance(mu, torch.zeros_like(mu))).flip(0).clamp(min=0)
    return [round(float(v), 5) for v in lam / lam.sum()]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="cpu")
    p.add_argument("--data-dir", default=None, help="phantom cohort folder (default: the profile's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--guidance", default="1,2,3", help="comma-separated guidance weights (>= 1)")
    p.add_argument("--prior", default=None, help="comma-separated ch6.diffusion_prior values (default: the profile's)")
    p.add_argument("--report-root", default=None, help="where each weight's tables go (default: a temporary folder)")
    a = p.parse_args(argv)
    weights = [float(v) for v in a.guidance.split(",")]
    if not weights or min(weights) < 1.0:
        p.error(f"--guidance must be weights >= 1, got {a.guidance!r}")
    priors = [None] if a.prior is None else a.prior.split(",")
    root = a.report_root or tempfile.mkdtemp(prefix="cmrkit-guidance-")
    spectrum_shown = False
    for prior, w in itertools.product(priors, weights):
        overrides = {"ch6.guidance": w} if prior is None else {"ch6.guidance": w, "ch6.diffusion_prior": prior}
        cfg = load(a.profile, data_dir=a.data_dir, device=a.device, overrides=overrides)
        name = f"g{w:g}" if prior is None else f"{prior}_g{w:g}"
        rep = Report.from_config(cfg, notebook="03_cond_ldm4d", root=f"{root}/{name}", dataset_label="phantom")
        data = c6.load_sequences(cfg)
        ae = c6.train_autoencoder(cfg, data)
        if not spectrum_shown:
            print(json.dumps({"latent_channel_variance_share": channel_spectrum(data, ae)}), flush=True)
            spectrum_shown = True
        ldm = c6.train_diffusion(cfg, data, ae)
        population = c6.generate_population_samples(cfg, data, ae, ldm)
        effects = c6.covariate_effects(cfg, rep, data, population)
        ef_range = c6.cohort_ef_range(sequence_phenotypes(data.labels, data.spacing))
        curves = c6.curve_statistics(population.arrays["labels"], data.reference_spacing, ef_range)
        out = {
            "profile": a.profile,
            "guidance": w,
            "prior": ldm.model.config.prior,
            "n": len(population),
            "effect_ratio_generated_over_true": {k: v["ratio"] for k, v in effects["bars"].items()},
            "meets_bar": {k: bool(v["pass"]) for k, v in effects["bars"].items()},
            "physiological_pct": 100.0 * float(curves["physiological"].mean()),
            "es_in_window_pct": 100.0 * float(curves["es_ok"].mean()),
            "ef_in_range_pct": 100.0 * float(curves["ef_ok"].mean()),
            "lvef_mean": float(curves["LVEF"].mean()),
            "roughness_mean": float(curves["roughness"].mean()),
            "diffusion_run": ldm.folder.name,
        }
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
