"""Chapter 4 end to end: smcVAE cine->tagging synthesis, tag tracking, strain, segmentation check.

The steps, in the order ``notebooks/01_smcvae_strain.ipynb`` walks through them (``run_all`` runs
them all for ``cmrkit run smcvae_strain``):

1. :func:`load_pairs` -- every tagging slice (basal, mid, apical) of every subject is paired with the
   cine slice nearest to its plane through the NIfTI affines (thesis Fig. 4.3,
   :func:`cmrkit.preprocess.matching_cine_slice`); both are put on one pixel grid (a square ROI of
   ``ch4.roi_mm`` around the heart, ``ch4.image_size`` pixels, tagging resampled onto the cine ROI)
   and the cine is sampled at the tagging frames (20, by cardiac phase); only those slices and frames
   are preprocessed (intensities normalised over them). Ground-truth landmarks and
   exact strain come along for the phantom. Subjects are split 60/20/20 (seeded, by subject). The
   scanner-fixed tag grid is fitted on the training slices and every slice gets its tag phase maps
   from its header (:mod:`cmrkit.tagging.scanner`); :func:`tag_phase_table` says how well the header
   predicts the tag lines.
2. :func:`train_smcvae` -- the sparse multi-channel VAE through :func:`cmrkit.train.fit`: the thesis
   model (cine only) and, with ``geometry=True``, the kit's geometry-aware variant whose tagging
   decoder is also given the tag phase (:class:`cmrkit.models.smcvae.PhaseWarpDecoder`).
3. :func:`synthesis_scenarios` / :func:`table_4_1` -- the four scenarios of Table 4.1, both models.
4. :func:`track_and_strain` / :func:`strain_tables` -- tag tracking (``ch4.tracker``: the learned tracker of
   :mod:`cmrkit.tagging.learned`, or HARP) of original and generated tagging (both models) from the same
   frame-0 grid, Ferdian strain, Table 4.2, Figs 4.8-4.11 and the comparison with the phantom's true
   strain; :func:`figure_examples` / :func:`tagging_cycle` show the generated tagging beside the original
   over the cycle.
5. :func:`ablation` -- Tables 4.3 (latent dimension) and 4.4 (number of conv layers).
6. :func:`segmentation_check` -- a MONAI UNet segmenter, Dice/HD between segmentations of original
   and reconstructed cine (§4.3.7), Figs 4.6-4.7, and the same segmenter on real M&Ms volumes.

The steps live in six modules, each importing only those before it: :mod:`.data` (step 1 with
:func:`tag_phase_table`; the shared records :class:`PairData`, :data:`REGIONS`, ``NEEDS``), :mod:`.synthesis`
(steps 2-3: the smcVAE, its scenario outputs and image metrics, Table 4.1), :mod:`.tracking` (step 4's tracking,
strain tables and figures, :func:`tracking_without_annotations`, :func:`trackers_on_test`), :mod:`.checks` (steps 5-6),
:mod:`.examples` (step 4's :func:`figure_examples` and :func:`tagging_cycle`, and :func:`browse_test_set`) and
:mod:`.dryrun` (:func:`dry_runs`, the contract's CPU dry run); this package re-exports them.

All intensities are in [0, 1] for metrics (the model works in [-1, 1]); image arrays are
``(N, frames, H, W)`` with row = y and column = x, the landmark convention of :mod:`cmrkit.strain`.
"""

from __future__ import annotations

from typing import Any

from ...config import Config
from ...report import Report
from .checks import ablation, segmentation_check
from .data import (
    CHAPTER,
    NEEDS,
    NOTEBOOK,
    REGIONS,
    PairData,
    load_pairs,
    phase_frames,
    split_by_subject,
    tag_phase_table,
)
from .dryrun import dry_runs
from .examples import browse_test_set, figure_examples, tagging_cycle
from .synthesis import (
    GEOMETRY,
    SCENARIOS,
    active_threshold,
    image_metrics,
    predict,
    smcvae_config,
    synthesis_scenarios,
    table_4_1,
    train_smcvae,
)
from .tracking import (
    at_es,
    init_landmarks,
    strain_figures,
    strain_tables,
    tag_contrast,
    track_and_strain,
    trackers_on_test,
    tracking_without_annotations,
)

__all__ = [
    "NOTEBOOK",
    "STEPS",
    "NEEDS",
    "REGIONS",
    "GEOMETRY",
    "SCENARIOS",
    "PairData",
    "load_pairs",
    "split_by_subject",
    "smcvae_config",
    "train_smcvae",
    "synthesis_scenarios",
    "table_4_1",
    "tag_phase_table",
    "track_and_strain",
    "strain_tables",
    "strain_figures",
    "ablation",
    "segmentation_check",
    "figure_examples",
    "tagging_cycle",
    "tracking_without_annotations",
    "browse_test_set",
    "active_threshold",
    "dry_runs",
    "run_all",
    "CHAPTER",
    "trackers_on_test",
    "phase_frames",
    "predict",
    "image_metrics",
    "init_landmarks",
    "tag_contrast",
    "at_es",
]


# NOTEBOOK, CHAPTER and NEEDS (the chapter contract) are defined in .data, whose load_pairs records the
# artefacts a data set cannot make; this package re-exports them above
#: the step functions in the order the notebook calls them
STEPS = (
    "load_pairs",
    "tag_phase_table",
    "train_smcvae",
    "synthesis_scenarios",
    "table_4_1",
    "track_and_strain",
    "strain_tables",
    "figure_examples",
    "tagging_cycle",
    "strain_figures",
    "tracking_without_annotations",
    "segmentation_check",
    "ablation",
    "browse_test_set",
)


# --------------------------------------------------------------------------------------------- all
def run_all(cfg: Config, rep: Report, *, interactive: bool = False, progress: bool = False) -> dict[str, Any]:
    """Every step of the chapter (what ``cmrkit run smcvae_strain`` executes); figures are closed."""
    import matplotlib.pyplot as plt

    data = load_pairs(cfg, rep=rep)
    rep.dataset = f"{rep.dataset}, {data.meta['n_subjects']} subjects"
    tag_phase_table(rep, data)
    res = train_smcvae(cfg, data, progress=progress)
    outputs = synthesis_scenarios(res.model, data)
    res_g = train_smcvae(cfg, data, geometry=True, progress=progress) if data.tag_phase is not None else None
    outputs_g = synthesis_scenarios(res_g.model, data) if res_g is not None else None
    table_4_1(rep, data, outputs, outputs_g)
    gen = {"generated": outputs["only_cine_to_tagging"]}
    if outputs_g is not None:
        gen[GEOMETRY] = outputs_g["only_cine_to_tagging"]
    from ...tagging.trackers import get_tracker

    tracker = get_tracker(str(cfg.ch4.tracker), cfg, progress=progress)
    tr = track_and_strain(data, gen, n_jobs=int(cfg.ch4.tracking_jobs), tracker=tracker)
    strain_tables(rep, data, tr)
    figure_examples(rep, data, outputs, tr, outputs_g)
    fig, _ = tagging_cycle(rep, data, gen, tr, interactive=interactive)
    plt.close(fig)
    strain_figures(rep, data, tr)
    auto, fig = tracking_without_annotations(data, tr, tracker=tracker)
    plt.close(fig)
    seg = segmentation_check(cfg, rep, data, outputs["reconstruction_cine"], progress=progress)
    abl = ablation(cfg, rep, data, progress=progress)
    fig, _ = browse_test_set(data, outputs, outputs_geometry=outputs_g, interactive=interactive, frame=int(tr["es"][0]))
    plt.close(fig)
    return {
        "data": data,
        "fit": res,
        "fit_geometry": res_g,
        "outputs": outputs,
        "outputs_geometry": outputs_g,
        "tracking": tr,
        "tracking_without_annotations": auto,
        "segmentation": seg,
        "ablation": abl,
    }
