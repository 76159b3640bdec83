"""The registry of artefacts every notebook must produce.

Each entry names a thesis table or figure (or one of the kit's own artefacts), the notebook that
writes it, where its thesis values live in ``cmrkit/reference/thesis.yaml``, and a caption. The
report index (:func:`cmrkit.report.write_index`) lists every entry with its status, so a missing
artefact is reported as missing, never hidden.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Artefact", "REGISTRY", "by_id", "for_notebook", "NOTEBOOKS"]

#: notebook stem -> one-line purpose (the order is the execution order)
NOTEBOOKS = {
    "00_background": "Clinical background told with the phantom cohort (cycle, indices, tagging, strain, cohort)",
    "01_smcvae_strain": "Chapter 4: smcVAE cine->tagging synthesis, tag tracking, strain, segmentation check",
    "02_ldm3d": "Chapter 5: 3D latent diffusion of cine volumes with masks",
    "03_cond_ldm4d": "Chapter 6: conditional 4D latent diffusion on 8 covariates",
    "04_baselines": "Baselines (3D VAE, 3D LSGAN, CGAN, CVAE, CHeart-style CVAE) and the comparison tables",
}


@dataclass(frozen=True)
class Artefact:
    """One expected artefact.

    Attributes
    ----------
    id
        File stem under ``reports/<profile>/{tables,figures}/``.
    kind
        ``"table"`` or ``"figure"``.
    notebook
        Stem of the notebook that writes it.
    title
        Caption shown in the index.
    thesis
        Dotted path of its reported values in ``reference/thesis.yaml`` (``None`` for the kit's own).
    thesis_item
        True for a table/figure of the thesis (counted in the coverage line), False for the kit's own.
    rewritten_by
        Other notebooks that write the same artefact with the owner's own function (a comparison table
        whose rows come from several notebooks' sample sets: the owner writes the rows that exist when it
        runs, a later notebook rewrites it once its rows exist). The owner stays the one named owner.
    """

    id: str
    kind: str
    notebook: str
    title: str
    thesis: str | None = None
    thesis_item: bool = True
    rewritten_by: tuple[str, ...] = ()

    def writable_by(self, notebook: str) -> bool:
        """True when ``notebook`` may write this artefact (its owner or a notebook in ``rewritten_by``)."""
        return notebook == self.notebook or notebook in self.rewritten_by


def _t(id, nb, title, thesis=None, thesis_item=True, rewritten_by=()):
    return Artefact(id, "table", nb, title, thesis, thesis_item, tuple(rewritten_by))


def _f(id, nb, title, thesis_item=True):
    return Artefact(id, "figure", nb, title, None, thesis_item)


REGISTRY: tuple[Artefact, ...] = (
    # background notebook (the kit's own)
    _t("bg_indices", "00_background", "Functional indices of a few subjects (clinical.py)", thesis_item=False),
    _t(
        "bg_phenotypes_vs_reference",
        "00_background",
        "Cohort phenotypes vs UK Biobank reference ranges",
        thesis_item=False,
    ),
    _t(
        "bg_realism",
        "00_background",
        "Realism of the run's images: contrast, SNR, tag period and fading vs real data",
        thesis_item=False,
    ),
    _f("bg_cardiac_cycle", "00_background", "Volume curve of one subject with ED/ES marked", thesis_item=False),
    _f(
        "bg_cine_viewer",
        "00_background",
        "Slice x frame montage of one cine (static view of the viewer)",
        thesis_item=False,
    ),
    _f(
        "bg_real_vs_phantom",
        "00_background",
        "Short-axis slices of real M&Ms beside the run's data set (the phantom by default)",
        thesis_item=False,
    ),
    _f(
        "bg_tagging_physics",
        "00_background",
        "SPAMM tag pattern, fading and deformation over the cycle",
        thesis_item=False,
    ),
    _f(
        "bg_strain_bullseye",
        "00_background",
        "Green strain worked example and AHA 17-segment bullseye",
        thesis_item=False,
    ),
    _f(
        "bg_phenotype_distributions",
        "00_background",
        "Cohort phenotype distributions vs reference values",
        thesis_item=False,
    ),
    # chapter 4
    _t(
        "table_4_1",
        "01_smcvae_strain",
        "Table 4.1: reconstruction and cross-synthesis quality by region",
        "chapter4.table_4_1",
    ),
    _t(
        "table_4_2", "01_smcvae_strain", "Table 4.2: ES strain from original vs generated tagging", "chapter4.table_4_2"
    ),
    _t("table_4_3", "01_smcvae_strain", "Table 4.3: latent dimension ablation (cine->tagging)", "chapter4.table_4_3"),
    _t(
        "table_4_4", "01_smcvae_strain", "Table 4.4: convolutional layer ablation (cine->tagging)", "chapter4.table_4_4"
    ),
    _t(
        "ch4_strain_vs_truth",
        "01_smcvae_strain",
        "Strain of tracked original/generated tagging vs ground truth; landmark error",
        thesis_item=False,
    ),
    _t(
        "ch4_segmentation",
        "01_smcvae_strain",
        "Segmentation of original vs reconstructed cine (Dice, HD) and on real M&Ms",
        "chapter4.segmentation_of_reconstructed_cine",
        thesis_item=False,
    ),
    _t(
        "ch4_tag_phase",
        "01_smcvae_strain",
        "Scanner-fixed tag grid: how well the tagging header predicts the tag lines",
        thesis_item=False,
    ),
    _f(
        "ch4_tagging_cycle",
        "01_smcvae_strain",
        "Generated tagging (thesis model, geometry-aware model) beside the original over the cycle",
        thesis_item=False,
    ),
    _f("fig_4_4", "01_smcvae_strain", "Fig 4.4: cine/tagging reconstructions and cross-syntheses"),
    _f("fig_4_5", "01_smcvae_strain", "Fig 4.5: tag tracking on original and generated tagging"),
    _f("fig_4_6", "01_smcvae_strain", "Fig 4.6: segmentation of original cine"),
    _f("fig_4_7", "01_smcvae_strain", "Fig 4.7: segmentation of reconstructed cine"),
    _f("fig_4_8", "01_smcvae_strain", "Fig 4.8: Bland-Altman of ES strain, original vs generated tagging"),
    _f("fig_4_9", "01_smcvae_strain", "Fig 4.9: strain violins by region"),
    _f("fig_4_10", "01_smcvae_strain", "Fig 4.10: strain curves with error bands over the cycle"),
    _f(
        "fig_4_11",
        "01_smcvae_strain",
        "Fig 4.11 (kit version): Bland-Altman against ground-truth strain instead of the UKB reference",
    ),
    # chapter 5
    _t(
        "table_5_1",
        "02_ldm3d",
        "Table 5.1: 3D generation fidelity and diversity",
        "chapter5.table_5_1",
        rewritten_by=("04_baselines",),
    ),
    _t(
        "ch5_autoencoder",
        "02_ldm3d",
        "Autoencoder reconstruction of test volumes (SSIM, PSNR, mask Dice)",
        "chapter5.autoencoder_reconstruction",
        thesis_item=False,
    ),
    _t(
        "ch5_generated_checks",
        "02_ldm3d",
        "Generated volumes: anatomical validity, mask-image consistency, phenotype distributions, memorisation",
        thesis_item=False,
    ),
    _f("fig_5_2", "02_ldm3d", "Fig 5.2: generated 3D cine volumes with masks"),
    _f("fig_5_3", "02_ldm3d", "Fig 5.3: ventricular volume box plots, real vs generated"),
    _f("fig_5_4", "02_ldm3d", "Fig 5.4: t-SNE of real and generated features"),
    _f(
        "ch5_reconstructions",
        "02_ldm3d",
        "A test volume and its autoencoder reconstruction with masks",
        thesis_item=False,
    ),
    _f(
        "ch5_memorisation",
        "02_ldm3d",
        "Generated volumes nearest to a training volume, side by side",
        thesis_item=False,
    ),
    _f(
        "ch5_sample_browser",
        "02_ldm3d",
        "Slice x sample montage of generated volumes (static browser)",
        thesis_item=False,
    ),
    # chapter 6 (baseline rows of Tables 6.1-6.4 are read from notebook 04's sample sets through cmrkit.runs;
    # notebook 04 rewrites these tables with chapter 6's functions once its sample sets exist)
    _t(
        "table_6_1",
        "03_cond_ldm4d",
        "Table 6.1: conditional 4D generation fidelity",
        "chapter6.table_6_1",
        rewritten_by=("04_baselines",),
    ),
    _t(
        "table_6_2",
        "03_cond_ldm4d",
        "Table 6.2: |real - synthetic| phenotype differences",
        "chapter6.table_6_2",
        rewritten_by=("04_baselines",),
    ),
    _t(
        "table_6_3",
        "03_cond_ldm4d",
        "Table 6.3: KL divergence of phenotype distributions",
        "chapter6.table_6_3",
        rewritten_by=("04_baselines",),
    ),
    _t(
        "table_6_4",
        "03_cond_ldm4d",
        "Table 6.4: Wasserstein distance of phenotype distributions",
        "chapter6.table_6_4",
        rewritten_by=("04_baselines",),
    ),
    _t("table_6_5", "03_cond_ldm4d", "Table 6.5: comparison with literature", "chapter6.table_6_5"),
    _t(
        "ch6_autoencoder",
        "03_cond_ldm4d",
        "Sequence autoencoder reconstruction of test sequences (SSIM, PSNR, myocardial Dice, HD, ASSD)",
        "chapter6.autoencoder_reconstruction",
        thesis_item=False,
    ),
    _t(
        "ch6_covariate_effects",
        "03_cond_ldm4d",
        "Covariate effects recovered from generated sequences vs the real cohort and the phantom's true model",
        thesis_item=False,
    ),
    _t(
        "ch6_condition_recovery",
        "03_cond_ldm4d",
        "Condition recovery: frozen covariate predictors on real held-out vs generated sequences",
        thesis_item=False,
    ),
    _t(
        "ch6_counterfactuals",
        "03_cond_ldm4d",
        "Counterfactuals: one covariate moved under the same noise; composition, effectiveness, reversibility",
        thesis_item=False,
    ),
    _t("ch6_temporal", "03_cond_ldm4d", "Temporal plausibility of generated volume curves", thesis_item=False),
    _f("fig_6_2", "03_cond_ldm4d", "Fig 6.2: generated 4D sequences for chosen conditions"),
    _f("fig_6_3", "03_cond_ldm4d", "Fig 6.3: autoencoder reconstructions with masks"),
    _f("fig_6_4", "03_cond_ldm4d", "Fig 6.4: phenotype KDE vs age, real vs generated"),
    _f("fig_6_5", "03_cond_ldm4d", "Fig 6.5: phenotype KDE vs weight, real vs generated"),
    _f("fig_6_6", "03_cond_ldm4d", "Fig 6.6: t-SNE of the latent space coloured by condition"),
    _f(
        "ch6_effects_forest",
        "03_cond_ldm4d",
        "Covariate effects: generated vs real vs true (forest plot)",
        thesis_item=False,
    ),
    _f(
        "ch6_counterfactual_pairs",
        "03_cond_ldm4d",
        "Counterfactual pairs: same seed, one covariate moved",
        thesis_item=False,
    ),
    _f(
        "ch6_volume_curves", "03_cond_ldm4d", "LV volume curves, ES timing and EF, generated vs real", thesis_item=False
    ),
    _f("ch6_sliders", "03_cond_ldm4d", "Condition sliders: static render of the default covariates", thesis_item=False),
    # baselines (notebook 04): it also rewrites Tables 5.1 and 6.1-6.4 (rewritten_by above) with its rows filled
    _t(
        "baselines_ch5_checks",
        "04_baselines",
        "Chapter-5 checks for every model: anatomy, mask-image Dice, phenotype W1, memorisation, diversity",
        thesis_item=False,
    ),
    _t(
        "baselines_ch6_effects",
        "04_baselines",
        "Covariate effects recovered by every model vs the phantom's true model",
        thesis_item=False,
    ),
    _t(
        "baselines_ch6_recovery",
        "04_baselines",
        "Condition recovery for every model: frozen covariate predictors on generated sequences",
        thesis_item=False,
    ),
    _t(
        "baselines_ch6_counterfactuals",
        "04_baselines",
        "Counterfactuals for every model: one covariate moved under the same noise vs the true change",
        thesis_item=False,
    ),
    _t(
        "baselines_ch6_temporal",
        "04_baselines",
        "Volume curves and diversity (mode collapse) of every chapter-6 model",
        thesis_item=False,
    ),
    _t(
        "baselines_summary",
        "04_baselines",
        "Which model did what best: the comparison's answers with ground truth, and failures flagged",
        thesis_item=False,
    ),
    _f("baselines_training_curves", "04_baselines", "Training curves of the five baselines", thesis_item=False),
    _f(
        "baselines_ch5_montage",
        "04_baselines",
        "Generated volumes of every chapter-5 model beside the LDM's (mid slice, masks)",
        thesis_item=False,
    ),
    _f(
        "baselines_ch6_montage",
        "04_baselines",
        "Generated sequences of every chapter-6 model for the same covariates (mid slice, ED and ES)",
        thesis_item=False,
    ),
    _f(
        "baselines_ch6_effects_forest",
        "04_baselines",
        "Covariate effects of every chapter-6 model against the true ones (forest plot)",
        thesis_item=False,
    ),
)


def by_id(artefact_id: str) -> Artefact:
    """Look up a registry entry; unknown ids are an error (artefacts must be registered)."""
    for a in REGISTRY:
        if a.id == artefact_id:
            return a
    raise KeyError(f"artefact {artefact_id!r} is not in cmrkit.registry.REGISTRY; register it first")


def for_notebook(stem: str) -> list[Artefact]:
    """Entries a notebook writes: those it owns and those it rewrites (``rewritten_by``)."""
    return [a for a in REGISTRY if a.writable_by(stem)]
