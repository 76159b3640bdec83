"""Chapter 6 end to end: conditional 4D latent diffusion of cine sequences on eight covariates.

The steps, in the order ``notebooks/03_cond_ldm4d.ipynb`` walks through them (``run_all`` runs them all
for ``cmrkit run cond_ldm4d``):

1. :func:`load_sequences` -- every subject's short-axis cine with a segmentation of **every frame** and
   all eight covariates (phantom; UK Biobank layout with a ``manifest.csv``): in-plane resampled to
   ``ch6.roi_mm / ch6.image_size`` mm, cropped around the heart, ``ch6.slices`` slices ordered base ->
   apex, ``ch6.frames`` frames from ED (nearest cardiac phase), intensities in [0, 1]; split
   train/val/test by subject (``ch6.split``, seeded). Cached in ``runs/`` keyed by the settings and a
   fingerprint of the data folder.
2. :func:`train_autoencoder` / :func:`autoencoder_table` -- the frame-wise image + mask autoencoder
   (:class:`cmrkit.models.cond_diffusion.SequenceAutoencoder`, thesis §6.3.2) and its reconstruction
   of the test sequences (SSIM, PSNR, myocardial Dice, HD, ASSD) beside the thesis; Fig 6.3.
3. :func:`train_diffusion` -- the conditional latent diffusion model (cross-attention on the
   covariates, condition dropout for classifier-free guidance).
4. :func:`generate_test_samples` -- ``ch6.samples_per_condition`` sequences for the covariates of every
   test subject (thesis: 50), a :class:`cmrkit.runs.SampleSet` with ``conditions``.
5. :func:`table_6_1`, :func:`table_6_2`, :func:`tables_6_3_6_4`, :func:`table_6_5` -- image fidelity
   (MS-SSIM and 4-G-R SSIM as similarity to the real sequence of the same covariates, the thesis'
   ch. 6 definition), |real - synthetic| phenotypes, KL and Wasserstein distances as computed here,
   and the literature table. Baseline rows (CGAN, CVAE, CHeart) come from notebook 04 through
   :func:`cmrkit.runs.list_runs` (chapter ``baselines``, run names in :data:`BASELINES`).
6. :func:`figure_6_2` (sequences over the cycle), :func:`generate_population_samples` and
   :func:`figures_6_4_6_5` (phenotype KDEs vs age and weight), :func:`figure_6_6` (t-SNE of latent frames).
7. Beyond the thesis (the phantom knows the true covariate -> anatomy model):
   :func:`covariate_effects` (regression of generated phenotypes on the covariates vs the true
   coefficients), :func:`condition_recovery` (frozen predictors of each covariate), :func:`counterfactuals`
   (same noise, one covariate moved; Monteiro et al. 2023 soundness) and :func:`temporal_plausibility`
   (volume curves).
8. :func:`condition_sliders` -- eight covariate controls, seed and guidance driving
   :func:`cmrkit.condition_sliders.render`; the static render of the defaults is saved either way.

The steps live in five modules, each importing only those before it: :mod:`.data` (steps 1; the shared
records), :mod:`.generation` (the models and sample sets of steps 2-4 and 6), :mod:`.thesis` (the thesis' tables
and figures), :mod:`.checks` (step 7) and :mod:`.sliders` (step 8); this package re-exports them.

Arrays are ``(N, X, Y, Z, T)`` in the kit's axis order; labels 0 background, 1 LV blood pool, 2 LV
myocardium, 3 RV blood pool; intensities in [0, 1].
"""

from __future__ import annotations

from typing import Any

from ...report import Report
from .checks import (
    BAR_EFFECTS,
    EFFECT_TERMS,
    MAIN_TERMS,
    Predictors,
    cohort_ef_range,
    condition_recovery,
    counterfactuals,
    covariate_effects,
    curve_rows,
    curve_statistics,
    intervention_endpoints,
    recovery_predictors,
    temporal_plausibility,
)
from .data import (
    BASELINES,
    PHENOTYPES,
    STRUCTURES,
    SequenceData,
    Trained,
    load_sequences,
    phase_frames,
    split_subjects,
)
from .generation import (
    autoencoder_config,
    condition_space,
    diffusion_config,
    generate_population_samples,
    generate_test_samples,
    population_conditions,
    reconstruct,
    train_autoencoder,
    train_diffusion,
)
from .sliders import (
    condition_sliders,
    slider_generator,
)
from .thesis import (
    FeatureCache,
    autoencoder_table,
    feature_extractors,
    figure_6_2,
    figure_6_6,
    figures_6_4_6_5,
    sample_specs,
    table_6_1,
    table_6_2,
    table_6_5,
    tables_6_3_6_4,
)

__all__ = [
    "NOTEBOOK",
    "STEPS",
    "BASELINES",
    "PHENOTYPES",
    "SequenceData",
    "Trained",
    "load_sequences",
    "split_subjects",
    "train_autoencoder",
    "reconstruct",
    "autoencoder_table",
    "train_diffusion",
    "generate_test_samples",
    "table_6_1",
    "table_6_2",
    "tables_6_3_6_4",
    "table_6_5",
    "figure_6_2",
    "generate_population_samples",
    "figures_6_4_6_5",
    "figure_6_6",
    "covariate_effects",
    "condition_recovery",
    "counterfactuals",
    "temporal_plausibility",
    "condition_sliders",
    "slider_generator",
    "autoencoder_config",
    "diffusion_config",
    "population_conditions",
    "phase_frames",
    "FeatureCache",
    "Predictors",
    "recovery_predictors",
    "condition_space",
    "sample_specs",
    "intervention_endpoints",
    "curve_statistics",
    "curve_rows",
    "cohort_ef_range",
    "run_all",
    "STRUCTURES",
    "BAR_EFFECTS",
    "EFFECT_TERMS",
    "MAIN_TERMS",
]

NOTEBOOK = "03_cond_ldm4d"
#: the step functions in the order the notebook calls them
STEPS = (
    "load_sequences",
    "train_autoencoder",
    "autoencoder_table",
    "train_diffusion",
    "generate_test_samples",
    "table_6_1",
    "table_6_2",
    "tables_6_3_6_4",
    "table_6_5",
    "figure_6_2",
    "generate_population_samples",
    "figures_6_4_6_5",
    "figure_6_6",
    "covariate_effects",
    "condition_recovery",
    "counterfactuals",
    "temporal_plausibility",
    "condition_sliders",
)


# =============================================================================================== all
def run_all(cfg: Any, rep: Report, *, interactive: bool = False, progress: bool = False) -> dict[str, Any]:
    """Every step of the chapter (what ``cmrkit run cond_ldm4d`` executes)."""
    data = load_sequences(cfg, progress=progress)
    rep.dataset = f"{rep.dataset}, {data.meta['n_subjects']} subjects"
    ae = train_autoencoder(cfg, data, progress=progress)
    ae_table = autoencoder_table(cfg, rep, data, ae.model)
    ldm = train_diffusion(cfg, data, ae, progress=progress)
    samples = generate_test_samples(cfg, data, ae, ldm, progress=progress)
    cache = FeatureCache(feature_extractors(cfg))
    t61 = table_6_1(cfg, rep, data, samples, ae, cache=cache)
    t62 = table_6_2(cfg, rep, data, samples)
    t634 = tables_6_3_6_4(cfg, rep, data, samples)
    t65 = table_6_5(rep, ae_table, t61)
    figure_6_2(cfg, rep, data, samples, ae, ldm)
    population = generate_population_samples(cfg, data, ae, ldm, progress=progress)
    figures_6_4_6_5(cfg, rep, data, population)
    figure_6_6(cfg, rep, data, samples)
    effects = covariate_effects(cfg, rep, data, population)
    recovery = condition_recovery(cfg, rep, data, population, samples)
    cf = counterfactuals(cfg, rep, data, ae, ldm, recovery, progress=progress)
    temporal = temporal_plausibility(cfg, rep, data, samples, population, ae)
    sliders = condition_sliders(cfg, rep, data, ae, ldm, interactive=interactive)
    return {
        "data": data,
        "autoencoder": ae,
        "autoencoder_table": ae_table,
        "diffusion": ldm,
        "samples": samples,
        "population": population,
        "table_6_1": t61,
        "table_6_2": t62,
        **t634,
        "table_6_5": t65,
        "effects": effects,
        "recovery": recovery,
        "counterfactuals": cf,
        "temporal": temporal,
        "sliders": sliders,
    }
