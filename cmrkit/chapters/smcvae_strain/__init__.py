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

All intensities are in [0, 1] for metrics (the model works in [-1, 1]); image arrays are
``(N, frames, H, W)`` with row = y and column = x, the landmark convention of :mod:`cmrkit.strain`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...config import Config
from ...io.cohort import needs_reason
from ...registry import for_notebook
from ...report import Report, TableRow
from ...runs import mark_complete, run_dir
from .. import NotApplicable, leave_out

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
]

NOTEBOOK = "01_smcvae_strain"
CHAPTER = "smcvae_strain"
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
#: what the artefacts need from the data set (the chapter contract): paired cine and tagging, and for
#: the comparison with the true strain (Fig 4.11, kit version) the phantom's ground truth
NEEDS: dict[str, tuple[str, ...]] = {
    **{a.id: ("cine", "tagging") for a in for_notebook(NOTEBOOK)},
    "fig_4_11": ("cine", "tagging", "ground_truth"),
}
REGIONS = ("basal", "mid", "apical")
#: name of the geometry-aware model's rows and tracked source (tagging decoder given the header's tag phase)
GEOMETRY = "geometry_aware"
#: Table 4.1 scenarios: (name, source channels given to the model, output channel)
SCENARIOS = (
    ("reconstruction_tagging", ("cine", "tagging"), "tagging"),
    ("reconstruction_cine", ("cine", "tagging"), "cine"),
    ("only_cine_to_tagging", ("cine",), "tagging"),
    ("only_tagging_to_cine", ("tagging",), "cine"),
)


# --------------------------------------------------------------------------------------------- data
@dataclass
class PairData:
    """Paired cine/tagging slices on one pixel grid.

    Attributes
    ----------
    cine, tagging : (N, F, H, W) float32 in [0, 1]
    labels : (N, F, H, W) uint8 cine labels at the tagging frames (zeros where unlabelled)
    labelled : (N, F) bool, which label frames are real
    landmarks : (N, F, 2, 168) float or None -- ground-truth landmarks in pixels of this grid
    true_strain : dict of arrays or None -- true ``Ecc`` (N, F), ``Err`` (N, F), ``Ecc_rings`` (N, F, 7)
        (Ferdian definitions on the true landmarks) and ``Ecc_exact``/``Err_exact`` (analytic)
    region, subject : (N,) str
    es_frame : (N,) int -- ES frame of the tagging sequence
    split : (N,) str -- ``train`` / ``val`` / ``test`` (by subject)
    px_mm : float -- pixel size of the grid
    tag_phase : (N, 2, H, W) float32 or None -- SPAMM tag phase (radians) of each slice on this grid,
        predicted from the tagging header with the scanner grid fitted on the training slices
        (:func:`cmrkit.tagging.scanner.estimate_scanner_tag_grid`); None when the data have no affines
    tag_residual_mm : (N, 2) or None -- per slice and tag direction, how far (mm) the header-predicted
        tag lines lie from the observed ones on the first tagging frame
    """

    cine: np.ndarray
    tagging: np.ndarray
    labels: np.ndarray
    labelled: np.ndarray
    landmarks: np.ndarray | None
    true_strain: dict[str, np.ndarray] | None
    region: np.ndarray
    subject: np.ndarray
    es_frame: np.ndarray
    split: np.ndarray
    px_mm: float
    meta: dict[str, Any] = field(default_factory=dict)
    tag_phase: np.ndarray | None = None
    tag_residual_mm: np.ndarray | None = None

    def index(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    def __len__(self) -> int:
        return len(self.cine)


def _phase_frames(n_cine: int, n_tag: int) -> np.ndarray:
    """Cine frame nearest to each tagging frame when both sample one cycle from ED at equal steps."""
    return np.round(np.arange(n_tag) * n_cine / n_tag).astype(int) % n_cine


def split_by_subject(subjects: Sequence[str], fractions: Sequence[float], seed: int) -> dict[str, str]:
    """Assign each subject to train/val/test with the given fractions (seeded permutation).

    Every split gets at least one subject; fewer than three subjects is an error.
    """
    uniq = sorted(set(subjects))
    if len(fractions) != 3 or not np.isclose(sum(fractions), 1.0) or min(fractions) < 0:
        raise ValueError(f"ch4.split must be three fractions summing to 1, got {list(fractions)}")
    rng = np.random.default_rng([seed, 4])
    order = [uniq[i] for i in rng.permutation(len(uniq))]
    n = len(order)
    if n < 3:
        raise ValueError(f"need at least 3 subjects for a train/val/test split, got {n}")
    n_val = max(1, int(round(fractions[1] * n)))
    n_test = max(1, int(round(fractions[2] * n)))
    n_train = n - n_val - n_test
    if n_train < 1:
        raise ValueError(f"split {list(fractions)} leaves no training subject among {n}")
    names = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    return dict(zip(order, names))


def load_pairs(
    cfg: Config, *, max_subjects: int | None = None, progress: bool = False, rep: Report | None = None
) -> PairData:
    """Read the data set of ``cfg`` into paired slices (see the module docstring).

    Needs subjects with cine and tagging (phantom, UK Biobank layout). Tagging slices without a
    cine slice within half a slice spacing of their plane are dropped (reported in ``meta``). A data
    set without cine or without any tagging (M&Ms, ACDC, DICOM cine) raises
    :class:`cmrkit.chapters.NotApplicable` ("needs tagging; this data set has none") after recording
    every artefact of the chapter as left out in ``rep``.
    """
    from ...io import iter_subjects
    from ...preprocess import matching_cine_slice, prepare_subject, resample_inplane

    c = cfg.ch4
    size, spacing = int(c.image_size), float(c.roi_mm) / int(c.image_size)
    frames = int(c.frames)
    px_mm = spacing
    rows: dict[str, list] = {
        k: []
        for k in (
            "cine",
            "tagging",
            "labels",
            "labelled",
            "landmarks",
            "ecc",
            "err",
            "ecc_rings",
            "ecc_exact",
            "err_exact",
            "region",
            "subject",
            "es",
            "tag_f0",
            "tag_affine",
            "roi_affine",
        )
    }
    dropped: list[str] = []
    has_truth = True
    provides: set[str] = set()
    for i, subj in enumerate(iter_subjects(cfg.data_dir, cfg.dataset)):
        if max_subjects is not None and i >= max_subjects:
            break
        provides |= {f for f, ok in (("cine", subj.cine is not None), ("tagging", bool(subj.tagging))) if ok}
        if subj.cine is None or not subj.tagging:
            dropped.append(f"{subj.subject_id}: no cine or no tagging")
            continue
        truth = _ground_truth(subj)
        if truth is None:
            has_truth = False
        else:  # attach the true landmarks so preprocessing maps them onto the new grid
            subj = subj.copy_with(
                tagging=[replace(t, landmarks=truth["landmarks"][k]) for k, t in enumerate(subj.tagging)]
            )
        n_tag = min(t.image.shape[-1] for t in subj.tagging)
        # the acquired tagging headers fix the scanner's tag directions; the first frame checks the phase
        native = [(np.asarray(t.image[..., 0], np.float32), np.asarray(t.affine, float)) for t in subj.tagging]
        cf_all = truth["cine_frames"] if truth is not None else _phase_frames(subj.cine.shape[3], n_tag)
        # only the cine slices and frames that pair with tagging are preprocessed (much less work)
        center_world = _lv_center_world(subj)
        subj = _subset(
            subj, [matching_cine_slice(subj.affine, subj.shape, t.affine) for t in subj.tagging], cf_all[:frames]
        )
        # resample, then centre the ROI on the LV (the tracked structure) when labels allow it
        subj = resample_inplane(subj, spacing=spacing)
        center = None if center_world is None else tuple((np.linalg.inv(subj.affine) @ center_world)[:2])
        prep = prepare_subject(subj, size=size, center=center)
        px_mm = float(np.linalg.norm(prep.affine[:3, 0]))
        for k, t in enumerate(prep.tagging):
            z = t.meta.get("cine_slice")
            dist = t.meta.get("cine_plane_distance_mm", 0.0)
            if z is None or dist > 0.5 * float(np.linalg.norm(prep.affine[:3, 2])):
                dropped.append(f"{subj.subject_id}/{t.name}: no cine slice in its plane ({dist:.1f} mm)")
                continue
            tag = np.moveaxis(t.image, 2, 0)[:frames]  # (F, X, Y)
            if tag.shape[0] < frames:
                dropped.append(f"{subj.subject_id}/{t.name}: {tag.shape[0]} tagging frames < {frames}")
                continue
            cine = np.moveaxis(prep.cine[:, :, z, :], 2, 0)  # the subset holds the paired frames in order
            if prep.cine_labels is not None:
                lab = np.moveaxis(prep.cine_labels[:, :, z, :], 2, 0)
                lab_ok = prep.labelled_frames if prep.labelled_frames is not None else np.ones(frames, bool)
            else:
                lab, lab_ok = np.zeros(cine.shape, np.uint8), np.zeros(frames, bool)
            # (F, X, Y) -> (F, H=Y, W=X): rows are y, columns x
            rows["cine"].append(np.swapaxes(cine, 1, 2))
            rows["tagging"].append(np.swapaxes(tag, 1, 2))
            rows["labels"].append(np.swapaxes(lab, 1, 2).astype(np.uint8))
            rows["labelled"].append(np.asarray(lab_ok, bool))
            rows["region"].append(t.name or REGIONS[k])
            rows["tag_f0"].append(native[k][0])
            rows["tag_affine"].append(native[k][1])
            rows["roi_affine"].append(np.asarray(t.affine, float))
            rows["subject"].append(subj.subject_id)
            es = t.es_frame
            if truth is not None:
                rows["landmarks"].append(np.asarray(t.landmarks[:frames], np.float64))
                rows["ecc"].append(truth["Ecc"][k][:frames])
                rows["err"].append(truth["Err"][k][:frames])
                rows["ecc_rings"].append(truth["Ecc_rings"][k][:frames])
                rows["ecc_exact"].append(truth["Ecc_exact"][k][:frames])
                rows["err_exact"].append(truth["Err_exact"][k][:frames])
                if es is None:
                    es = truth["es_tag"]
            rows["es"].append(-1 if es is None else int(es))
    if not rows["cine"]:
        lacks = [f for f in ("cine", "tagging") if f not in provides]
        if lacks:
            if rep is not None:
                leave_out(rep, NEEDS, provides)
            raise NotApplicable(NOTEBOOK, needs_reason(lacks), f"{cfg.data_dir}: {'; '.join(dropped[:3])}")
        raise ValueError(f"no cine/tagging pairs found in {cfg.data_dir} ({cfg.dataset}); dropped: {dropped[:5]}")
    split_of = split_by_subject(rows["subject"], c.split, cfg.seed)
    split = np.array([split_of[s] for s in rows["subject"]])
    truth_ok = has_truth and len(rows["landmarks"]) == len(rows["cine"])
    phase, residual, grid_meta = _tag_phase_maps(rows, split, size)
    cine_arr, tag_arr = np.stack(rows["cine"]).astype(np.float32), np.stack(rows["tagging"]).astype(np.float32)
    # identifies the data a model is trained on (part of the run key: a regenerated cohort retrains)
    fingerprint = hashlib.sha256(
        np.ascontiguousarray(cine_arr[:, 0]).tobytes() + np.ascontiguousarray(tag_arr[:, 0]).tobytes()
    ).hexdigest()[:16]
    return PairData(
        cine=cine_arr,
        tagging=tag_arr,
        labels=np.stack(rows["labels"]),
        labelled=np.stack(rows["labelled"]),
        landmarks=np.stack(rows["landmarks"]) if truth_ok else None,
        true_strain={
            "Ecc": np.stack(rows["ecc"]),
            "Err": np.stack(rows["err"]),
            "Ecc_rings": np.stack(rows["ecc_rings"]),
            "Ecc_exact": np.stack(rows["ecc_exact"]),
            "Err_exact": np.stack(rows["err_exact"]),
        }
        if truth_ok
        else None,
        region=np.array(rows["region"]),
        subject=np.array(rows["subject"]),
        es_frame=np.array(rows["es"]),
        split=split,
        px_mm=px_mm,
        meta={
            "dropped": dropped,
            "n_subjects": len(split_of),
            "roi_mm": float(c.roi_mm),
            "tag_grid": grid_meta,
            "fingerprint": fingerprint,
        },
        tag_phase=phase,
        tag_residual_mm=residual,
    )


def _tag_phase_maps(
    rows: Mapping[str, list], split: np.ndarray, size: int
) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, Any]]:
    """Fit the scanner-fixed tag grid on the training slices' first frames and predict every slice's
    tag phase on the model grid from its header (``(N, 2, H, W)``, rows = y), plus each slice's
    residual (mm) of the header prediction on its own first frame."""
    from ...tagging.scanner import estimate_scanner_tag_grid, tag_phase_map, tag_phase_residual

    train = np.flatnonzero(split == "train")
    try:
        fit = estimate_scanner_tag_grid([rows["tag_f0"][i] for i in train], [rows["tag_affine"][i] for i in train])
    except ValueError as exc:
        return None, None, {"error": str(exc)}
    grid = fit.grid
    maps, res = [], []
    for f0, taff, raff in zip(rows["tag_f0"], rows["tag_affine"], rows["roi_affine"]):
        ph = tag_phase_map(raff, (size, size), taff, grid)  # (2, X, Y) on the model grid
        ph = ph - 2 * np.pi * np.round(ph.mean(axis=(1, 2), keepdims=True) / (2 * np.pi))
        maps.append(np.swapaxes(ph, 1, 2).astype(np.float32))  # rows = y, columns = x
        try:
            res.append(np.abs(tag_phase_residual(f0, tag_phase_map(taff, f0.shape, taff, grid))) / grid.k)
        except ValueError:
            res.append(np.full(2, np.nan))
    meta = {**grid.to_dict(), "concentration_train": fit.concentration.tolist(), "n_train_slices": int(len(train))}
    return np.stack(maps), np.stack(res), meta


def _lv_center_world(subj: Any) -> np.ndarray | None:
    """World position (homogeneous, 4,) of the LV centre (blood pool + myocardium voxels at ED, all
    slices), or None without labels (the preprocessing heuristic then finds the heart)."""
    if subj.cine_labels is None:
        return None
    ed = subj.ed_frame if subj.ed_frame is not None else 0
    if subj.labelled_frames is not None and not subj.labelled_frames[ed]:
        return None
    xyz = np.argwhere(np.isin(subj.cine_labels[..., ed], (1, 2)))
    return None if not len(xyz) else subj.affine @ np.r_[xyz.mean(axis=0), 1.0]


def _subset(subj: Any, slices: Sequence[int], frames: np.ndarray) -> Any:
    """The subject restricted to the contiguous cine slice range covering ``slices`` and to
    ``frames`` (in that order); the affine moves with the first kept slice."""
    z0, z1 = int(min(slices)), int(max(slices)) + 1
    aff = np.array(subj.affine, dtype=float)
    aff[:3, 3] = aff[:3, :3] @ np.array([0.0, 0.0, z0]) + aff[:3, 3]
    fr = np.asarray(frames, dtype=int)
    return subj.copy_with(
        cine=np.ascontiguousarray(subj.cine[:, :, z0:z1][..., fr]),
        cine_labels=None if subj.cine_labels is None else np.ascontiguousarray(subj.cine_labels[:, :, z0:z1][..., fr]),
        labelled_frames=None if subj.labelled_frames is None else np.asarray(subj.labelled_frames)[fr],
        affine=aff,
        ed_frame=0 if fr[0] == (subj.ed_frame or 0) else None,
        es_frame=None,
    )


def _ground_truth(subj: Any) -> dict[str, Any] | None:
    """The phantom's per-slice truth, else None.

    ``landmarks`` are in tagging pixels; ``Ecc``/``Err``/``Ecc_rings`` apply Ferdian's definitions to
    the true landmarks (the same definitions as tracked strain, so differences are tracking error);
    ``Ecc_exact``/``Err_exact`` are the analytic strains of the motion (E_rr as the wall mean).
    """
    path = subj.sources.get("ground_truth") if subj.sources else None
    if path is None:
        return None
    from ...phantom import read_ground_truth

    gt = read_ground_truth(path)
    lm, ex = gt["strain"]["landmark"], gt["strain"]["exact"]
    tag_ms, cine_ms = np.asarray(gt["times"]["tag_ms"]), np.asarray(gt["times"]["cine_ms"])
    es_cine = int(gt["attrs"]["es_frame"])
    return {
        "landmarks": np.asarray(gt["landmarks"]["px"], np.float64),
        "Ecc": np.asarray(lm["ecc"]),
        "Err": np.asarray(lm["err"]),
        "Ecc_rings": np.asarray(lm["ecc_ring"]),
        "Ecc_exact": np.asarray(ex["ecc"]),
        "Err_exact": np.asarray(ex["err"]),
        "cine_frames": np.abs(cine_ms[None, :] - tag_ms[:, None]).argmin(axis=1),
        "es_tag": int(np.abs(tag_ms - cine_ms[es_cine]).argmin()),
    }


# --------------------------------------------------------------------------------------------- model
def smcvae_config(
    cfg: Config, *, latent_dim: int | None = None, conv_layers: int | None = None, geometry: bool = False
) -> Any:
    """The :class:`cmrkit.models.smcvae.SMCVAEConfig` of the profile's ``ch4`` section (frames,
    image size, conv layers L, latent dimension D, base width, variant, initial log alpha);
    ``latent_dim`` / ``conv_layers`` replace D / L (the ablations). ``geometry=True`` gives the kit's
    geometry-aware variant: the tagging decoder is a :class:`cmrkit.models.smcvae.PhaseWarpDecoder` given
    the tag phase from the header, and its displacement also explains the cine's motion
    (``motion_channel="cine"``)."""
    from ...models.smcvae import SMCVAEConfig

    c = cfg.ch4
    return SMCVAEConfig(
        in_frames=int(c.frames),
        image_size=int(c.image_size),
        conv_layers=int(conv_layers or c.conv_layers),
        latent_dim=int(latent_dim or c.latent_dim),
        base_width=int(c.base_width),
        variant=str(c.variant),
        log_alpha_init=float(c.log_alpha_init),
        phase_channel="tagging" if geometry else "",
        motion_channel="cine" if geometry else "",
    )


def train_smcvae(
    cfg: Config,
    data: PairData,
    *,
    geometry: bool = False,
    latent_dim: int | None = None,
    conv_layers: int | None = None,
    epochs: int | None = None,
    name: str | None = None,
    progress: bool = False,
) -> Any:
    """Train the smcVAE of the profile (optionally another D / L / epochs); returns ``FitResult``.

    ``geometry=False`` is the thesis model (cine and tagging channels, plain decoders).
    ``geometry=True`` is the kit's geometry-aware variant: the tagging decoder is also given each slice's
    tag phase maps predicted from the header (``data.tag_phase``; :class:`cmrkit.models.smcvae.PhaseWarpDecoder`).
    Validation-loss model selection on the ``val`` subjects; checkpoints under ``runs/`` so that an
    interrupted run resumes and a finished one is not trained again.
    """
    from ...models.smcvae import PHASE_KEY, SMCVAE, PairedSliceDataset, smcvae_loss
    from ...train import fit

    c = cfg.ch4
    if geometry and data.tag_phase is None:
        raise ValueError(
            "the geometry-aware smcVAE needs the tag phase of every slice, but the data set gave none "
            f"({data.meta.get('tag_grid', {}).get('error', 'no tagging affines')})"
        )
    mcfg = smcvae_config(cfg, latent_dim=latent_dim, conv_layers=conv_layers, geometry=geometry)
    model = SMCVAE(mcfg, seed=cfg.seed)
    name = name or ("smcvae-geometry" if geometry else "smcvae")
    tr, va = data.index("train"), data.index("val")

    def ds(idx: np.ndarray) -> Any:
        extra = {PHASE_KEY: data.tag_phase[idx]} if geometry else None
        return PairedSliceDataset({"cine": data.cine[idx], "tagging": data.tagging[idx]}, extra=extra)

    n_epochs = int(epochs or c.epochs)
    run = run_dir(
        cfg,
        CHAPTER,
        name,
        {
            "model": mcfg.to_dict(),
            "epochs": n_epochs,
            "bs": int(c.batch_size),
            "lr": float(c.lr),
            "wd": float(c.weight_decay),
            "n": len(data),
            "data": data.meta.get("fingerprint", ""),
        },
    )
    res = fit(
        model,
        ds(tr),
        ds(va) if len(va) else None,
        loss_fn=smcvae_loss,
        epochs=n_epochs,
        batch_size=int(c.batch_size),
        lr=float(c.lr),
        weight_decay=float(c.weight_decay),
        device=cfg.device,
        seed=cfg.seed,
        checkpoint_dir=run,
        resume=True,
        progress=progress,
    )
    mark_complete(run, best_epoch=int(res.best_epoch))  # finished: find_run / list_runs see it
    return res


def active_threshold(cfg: Config) -> float | None:
    """Dropout-rate threshold that selects the active latent dimensions (sparse variant only).

    Synthesis uses the full posterior mean by default (the decoders learn to ignore dimensions with a
    high dropout rate); pass this as ``threshold`` to restrict the latent to the active dimensions.
    """
    return float(cfg.ch4.dropout_threshold) if cfg.ch4.variant == "sparse" else None


def _predict(
    model: Any,
    data: PairData,
    idx: np.ndarray,
    sources: Sequence[str],
    target: str,
    batch_size: int = 16,
    threshold: float | None = None,
) -> np.ndarray:
    """Model output for ``target`` from the given source channels, in [0, 1], (n, F, H, W); the
    latent means are restricted to the active dimensions when ``threshold`` is given."""
    import torch

    from ...models.smcvae import PHASE_KEY, from_model_range, to_model_range

    dev = next(model.parameters()).device
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(idx), batch_size):
            b = idx[s : s + batch_size]
            x = {ch: to_model_range(torch.from_numpy(getattr(data, ch)[b])).to(dev) for ch in sources}
            if getattr(model, "phase_aware", False):  # acquisition geometry, not an image channel
                x[PHASE_KEY] = torch.from_numpy(data.tag_phase[b]).to(dev)
            if len(sources) == 1:
                y = model.synthesise(x, source=sources[0], target=target, threshold=threshold)
            else:
                y = model.reconstruct(x, threshold=threshold)[target]
            out.append(from_model_range(y.float()).clamp(0, 1).cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def synthesis_scenarios(
    model: Any, data: PairData, split: str = "test", *, threshold: float | None = None
) -> dict[str, np.ndarray]:
    """Outputs of the four Table 4.1 scenarios on one split, keyed by scenario name."""
    idx = data.index(split)
    return {name: _predict(model, data, idx, src, tgt, threshold=threshold) for name, src, tgt in SCENARIOS}


def _image_metrics(pred: np.ndarray, ref: np.ndarray) -> dict[str, np.ndarray]:
    """Per-slice SSIM/PSNR/RMSE/MAE over the 2D+t sequence on the [0, 1] scale (data_range 1)."""
    from ...metrics import image as im

    p, r = pred[:, None], ref[:, None]  # (n, 1, F, H, W): SSIM per 2D frame, averaged per item
    return {
        "SSIM": im.ssim(p, r, data_range=1.0),
        "PSNR": im.psnr(p, r, data_range=1.0),
        "RMSE": im.rmse(p, r),
        "MAE": im.mae(p, r),
    }


def _table_4_1_rows(
    data: PairData, idx: np.ndarray, outputs: Mapping[str, np.ndarray], prefix: str = ""
) -> list[TableRow]:
    rows = []
    for name, _, tgt in SCENARIOS:
        if name not in outputs:
            continue
        ref = getattr(data, tgt)[idx]
        m = _image_metrics(outputs[name], ref)
        for region in REGIONS:
            sel = data.region[idx] == region
            for metric, vals in m.items():
                v = np.asarray(vals)[sel]
                v = v[np.isfinite(v)]
                if v.size == 0:
                    continue
                rows.append(
                    TableRow(
                        f"{prefix}{name}/{region}",
                        metric,
                        float(v.mean()),
                        float(v.std(ddof=1)) if v.size > 1 else None,
                        n=int(v.size),
                        units="dB" if metric == "PSNR" else "[0,1] intensity" if metric in ("RMSE", "MAE") else "",
                        thesis_key=("-",) if prefix else None,
                    )
                )
    return rows


def table_4_1(
    rep: Report,
    data: PairData,
    outputs: Mapping[str, np.ndarray],
    outputs_geometry: Mapping[str, np.ndarray] | None = None,
    split: str = "test",
) -> pd.DataFrame:
    """Table 4.1: the four scenarios x three regions x SSIM/PSNR/RMSE/MAE (mean ± sd over slices).

    ``outputs`` are the thesis model's (cine and tagging images only); ``outputs_geometry``, when given,
    the geometry-aware model's (rows ``geometry_aware/<scenario>/<region>``, no thesis counterpart).
    """
    idx = data.index(split)
    rows = _table_4_1_rows(data, idx, outputs)
    if outputs_geometry is not None:
        rows += _table_4_1_rows(data, idx, outputs_geometry, prefix=f"{GEOMETRY}/")
    notes = [
        f"{split} split, {len(idx)} slices; metrics over each 20-frame slice on the [0, 1] intensity scale "
        "(SSIM per 2D frame averaged over frames; data_range 1).",
        "Thesis MAE values (~160) are on an unstated scale (see anomaly); ours are on [0, 1].",
    ]
    if outputs_geometry is not None:
        notes.append(
            f"'{GEOMETRY}' rows: the kit's geometry-aware smcVAE, whose tagging decoder is also given the tag phase "
            "predicted from the tagging header (scanner-fixed SPAMM grid); the thesis model synthesises from the cine "
            "images alone. Both see only cine at synthesis; the phase is acquisition geometry, not image content."
        )
    return rep.save_table("table_4_1", rows, notes=notes)


def tag_phase_table(rep: Report, data: PairData) -> pd.DataFrame:
    """How well the tagging header predicts where the tag lines are (kit table ``ch4_tag_phase``).

    The scanner-fixed grid (spacing, angle, constant offsets) is fitted on the training slices
    (:func:`cmrkit.tagging.scanner.estimate_scanner_tag_grid`); each slice's residual is the distance (mm)
    between the header-predicted and the observed tag lines on its first frame, by split and region.
    """
    g = data.meta.get("tag_grid", {})
    if data.tag_residual_mm is None:
        why = g.get("error", "the data set has no tagging affines")
        return rep.save_table(
            "ch4_tag_phase",
            [TableRow("fitted_grid", "training slices with a detectable grid", 0.0, n=0, note=why)],
            notes=[f"No tag phase from the headers: {why}. The geometry-aware model is not trained."],
        )
    rows = [
        TableRow("fitted_grid", "spacing (mm)", float(g["spacing_mm"]), units="mm", n=int(g["n_train_slices"])),
        TableRow("fitted_grid", "angle (deg)", float(g["angle_deg"]), units="deg", n=int(g["n_train_slices"])),
    ]
    for d in range(2):
        rows.append(
            TableRow(
                "fitted_grid",
                f"offset {d + 1} (deg)",
                float(np.degrees(g["offsets_rad"][d])),
                units="deg",
                n=int(g["n_train_slices"]),
            )
        )
        rows.append(
            TableRow(
                "fitted_grid",
                f"concentration {d + 1}",
                float(g["concentration_train"][d]),
                n=int(g["n_train_slices"]),
            )
        )
    for split in ("train", "test"):
        for region in (*REGIONS, "all"):
            sel = (data.split == split) & ((data.region == region) if region != "all" else True)
            r = data.tag_residual_mm[sel]
            r = r[np.isfinite(r).all(axis=1)]
            if len(r) == 0:
                continue
            rows.append(
                TableRow(
                    f"header_residual/{split}/{region}",
                    "mean (mm)",
                    float(r.mean()),
                    float(r.mean(axis=1).std(ddof=1)) if len(r) > 1 else None,
                    n=int(len(r)),
                    units="mm",
                )
            )
            rows.append(TableRow(f"header_residual/{split}/{region}", "max (mm)", float(r.max()), n=int(len(r))))
    return rep.save_table(
        "ch4_tag_phase",
        rows,
        notes=[
            "SPAMM tags are written by gradients, so the grid is fixed in scanner coordinates: the tag phase of a "
            "pixel is k e.p + c, p its world position (mm from the isocentre), e the protocol's tag direction in the "
            "image plane, c a constant of the system. Spacing, angle and c are fitted on the training slices' first "
            "tagging frames; 'header_residual' is, per slice, the mean over the two directions of the distance "
            "between the tag lines predicted from the header alone and those observed (first frame).",
            "'concentration' is the mean resultant length of the per-slice phase offsets: 1 = the same offset on "
            "every slice (the header predicts the tags), about 0 = a random grid (no header predicts it). For "
            f"uniformly random tag positions the mean residual would be a quarter period ({0.25 * g['spacing_mm']:.2f} "
            "mm).",
        ],
    )


# --------------------------------------------------------------------------------------------- strain
def _init_landmarks(data: PairData, i: int) -> np.ndarray:
    """Frame-0 landmarks: ground truth when the data set has it, else from the ED cine segmentation,
    else located on the original tagging itself (:func:`cmrkit.tagging.auto_init_landmarks`)."""
    if data.landmarks is not None:
        return data.landmarks[i, 0]
    from ...tagging import init_landmarks_from_mask

    if data.labelled[i, 0] and (data.labels[i, 0] == 2).any():
        return init_landmarks_from_mask(data.labels[i, 0], rv_label=3 if (data.labels[i, 0] == 3).any() else None)
    from ...tagging import auto_init_landmarks

    try:
        return auto_init_landmarks(data.tagging[i])
    except ValueError as exc:
        raise ValueError(
            f"slice {data.subject[i]}/{data.region[i]}: no landmarks, no ED myocardium label, and "
            f"the LV wall could not be located on the tagging ({exc})"
        ) from None


def track_and_strain(
    data: PairData,
    generated: np.ndarray | Mapping[str, np.ndarray],
    split: str = "test",
    *,
    n_jobs: int = 1,
    tracker: Any = None,
) -> dict[str, Any]:
    """Track original and generated tagging of a split from the same frame-0 grid; Ferdian strain.

    ``generated`` is one array (named ``"generated"``) or ``{name: array}`` for several models (e.g.
    ``{"generated": thesis model, "geometry_aware": ...}``), each (n, F, H, W) for the split's slices.
    Returns landmarks ``{"original", <names>}`` (n, F, 2, 168), strain curves ``Ecc``/``Err`` per source
    (n, F) (``truth`` too when known), the landmark error in mm against the truth, the tag contrast of
    each generated source relative to the original (``tag_contrast_ratio[name]``, (n,)), the list of
    generated sources (``generated``), the ES frame per slice and the tracker's name. ``tracker`` comes from
    :func:`cmrkit.tagging.trackers.get_tracker` (the profile's ``ch4.tracker``; default HARP). ``n_jobs``
    tracks slices in parallel processes (joblib; -1 = all cores).
    """
    from ...strain import green_strain_from_landmarks
    from ...tagging import detect_harmonic_peaks, landmark_error
    from ...tagging.trackers import HarpTracker, track_all

    trk = tracker if tracker is not None else HarpTracker()
    gen = {"generated": generated} if isinstance(generated, np.ndarray) else dict(generated)
    idx = data.index(split)
    out: dict[str, Any] = {
        "idx": idx,
        "generated": list(gen),
        "tracker": trk.name,
        "landmarks": {},
        "Ecc": {},
        "Err": {},
        "landmark_error_mm": {},
        "tag_contrast_ratio": {},
    }
    # the tag pattern (spacing, orientation) is a property of the acquisition: detect it on the
    # original tagging of each slice and use it for the generated tagging of the same slice too
    peaks = [detect_harmonic_peaks(data.tagging[i, :2]) for i in idx]
    starts = np.stack([_init_landmarks(data, i) for i in idx])
    for src, seqs in (("original", data.tagging[idx]), *gen.items()):
        lms = list(track_all(trk, seqs, starts, peaks=peaks, n_jobs=n_jobs))
        ecc, err = [], []
        for lm in lms:
            s = green_strain_from_landmarks(lm)
            ecc.append(np.asarray(s.Ecc))
            err.append(np.asarray(s.Err))
        out["landmarks"][src] = np.stack(lms)
        out["Ecc"][src], out["Err"][src] = np.stack(ecc), np.stack(err)
        if data.landmarks is not None:
            out["landmark_error_mm"][src] = np.stack(
                [landmark_error(lm, data.landmarks[i], data.px_mm) for lm, i in zip(lms, idx)]
            )
    # tag contrast of each generated tagging relative to the original, on the heart (frames 0..7):
    # a ratio near 0 means the synthesis produced no tag pattern there and its "strain" is not a measurement
    ref = [_tag_contrast(data.tagging[i], peaks[j], out["landmarks"]["original"][j, 0]) for j, i in enumerate(idx)]
    for src, seqs in gen.items():
        out["tag_contrast_ratio"][src] = np.array(
            [
                _tag_contrast(seqs[j], peaks[j], out["landmarks"]["original"][j, 0]) / max(ref[j], 1e-12)
                for j in range(len(idx))
            ]
        )
    if data.true_strain is not None:
        out["Ecc"]["truth"] = data.true_strain["Ecc"][idx]
        out["Err"]["truth"] = data.true_strain["Err"][idx]
        out["exact"] = {"Ecc": data.true_strain["Ecc_exact"][idx], "Err": data.true_strain["Err_exact"][idx]}
    es = data.es_frame[idx].copy()
    unknown = es < 0  # no ES in the data: the frame of peak circumferential shortening of the original
    es[unknown] = np.argmin(out["Ecc"]["original"][unknown], axis=1)
    out["es"] = es
    return out


def _tag_contrast(images: np.ndarray, peaks: Any, lm0: np.ndarray, n_frames: int = 8) -> float:
    """Mean first-harmonic magnitude over the box around the frame-0 landmarks, first ``n_frames``
    frames, relative to the mean intensity there (a tag modulation depth)."""
    from ...tagging import harmonic_images

    im = np.asarray(images[:n_frames], float)
    b = np.abs(harmonic_images(im, peaks))  # (T, 2, H, W)
    h, w = im.shape[1:]
    x0, y0 = np.clip(np.floor(lm0.min(1)).astype(int), 0, [w - 1, h - 1])
    x1, y1 = np.clip(np.ceil(lm0.max(1)).astype(int) + 1, 1, [w, h])
    return float(b[:, :, y0:y1, x0:x1].mean() / max(float(im[:, y0:y1, x0:x1].mean()), 1e-12))


def _finite(v: np.ndarray) -> np.ndarray:
    return v[np.isfinite(v)]


def _at_es(curves: np.ndarray, es: np.ndarray) -> np.ndarray:
    return curves[np.arange(len(es)), es]


def _generated_sources(tr: Mapping[str, Any]) -> list[str]:
    return list(tr.get("generated", ["generated"]))


def strain_tables(rep: Report, data: PairData, tr: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """Table 4.2 (ES E_c, E_r by region, original vs generated) and the ground-truth comparison."""
    from ...stats import bland_altman

    idx, es = tr["idx"], tr["es"]
    regions = data.region[idx]
    gens = _generated_sources(tr)
    rows42 = []
    for region in REGIONS:
        sel = regions == region
        if not sel.any():
            continue
        for metric, key in (("Ec", "Ecc"), ("Er", "Err")):
            for src in ("original", *gens):
                v = _at_es(tr[key][src], es)[sel]
                rows42.append(
                    TableRow(
                        f"{region}/{src}",
                        metric,
                        float(v.mean()),
                        float(v.std(ddof=1)) if v.size > 1 else None,
                        n=int(v.size),
                        thesis_key=(region, metric, src) if src in ("original", "generated") else ("-",),
                    )
                )
    notes42 = [
        f"Green strain at the ES frame from landmarks tracked with the {tr.get('tracker', 'harp')} tracker "
        "(cmrkit.tagging) on original tagging and on "
        "tagging generated from cine only; all tracked from the same frame-0 landmark grid.",
        "Thesis landmarks came from a CNN+RNN tracker trained on UK Biobank annotations (not public).",
    ]
    if GEOMETRY in gens:
        notes42.append(
            f"'generated' is the thesis model (synthesis from the cine images alone); '{GEOMETRY}' the kit's "
            "geometry-aware model, whose tagging decoder also knows the tag phase from the header and moves the "
            "SPAMM grid with a decoded displacement field."
        )
    t42 = rep.save_table("table_4_2", rows42, notes=notes42)
    rows = []
    comparisons = [(f"{g}_vs_original", g, "original") for g in gens]
    if "truth" in tr["Ecc"]:
        comparisons += [("original_vs_truth", "original", "truth")] + [(f"{g}_vs_truth", g, "truth") for g in gens]
    for region in (*REGIONS, "all"):
        sel = np.ones(len(idx), bool) if region == "all" else regions == region
        if sel.sum() < 2:
            continue
        for name, a, b in comparisons:
            for metric in ("Ecc", "Err"):
                ba = bland_altman(_at_es(tr[metric][a], es)[sel], _at_es(tr[metric][b], es)[sel])
                for stat, val in (("bias", ba.bias), ("loa_low", ba.loa_low), ("loa_high", ba.loa_high)):
                    rows.append(TableRow(f"{name}/{region}", f"{metric} ES {stat}", float(val), n=ba.n, units="strain"))
                d = np.abs(tr[metric][a][sel] - tr[metric][b][sel])
                rows.append(
                    TableRow(
                        f"{name}/{region}",
                        f"{metric} |diff| all frames",
                        float(d.mean()),
                        float(d.std(ddof=1)),
                        n=int(sel.sum()),
                        units="strain",
                    )
                )
        if "exact" in tr:
            for metric in ("Ecc", "Err"):
                d = _at_es(tr[metric]["truth"], es)[sel] - _at_es(tr["exact"][metric], es)[sel]
                rows.append(
                    TableRow(
                        f"truth_vs_exact/{region}",
                        f"{metric} ES mean diff",
                        float(d.mean()),
                        float(d.std(ddof=1)),
                        n=int(sel.sum()),
                        units="strain",
                    )
                )
        for g in gens:
            if g not in tr.get("tag_contrast_ratio", {}):
                continue
            v = tr["tag_contrast_ratio"][g][sel]
            rows.append(
                TableRow(
                    f"tag_contrast/{region}",
                    f"{g} / original",
                    float(v.mean()),
                    float(v.std(ddof=1)) if v.size > 1 else None,
                    n=int(v.size),
                    units="ratio",
                )
            )
        for src, err in tr["landmark_error_mm"].items():
            e = err[sel]
            rows.append(
                TableRow(
                    f"landmarks_{src}_vs_truth/{region}",
                    "error (mm)",
                    float(e.mean()),
                    float(e.mean(axis=1).std(ddof=1)),
                    n=int(sel.sum()),
                    units="mm",
                )
            )
            rows.append(
                TableRow(
                    f"landmarks_{src}_vs_truth/{region}",
                    "error (px)",
                    float(e.mean() / data.px_mm),
                    n=int(sel.sum()),
                    units="px",
                )
            )
    notes = [
        "Bland-Altman bias and 95% limits of agreement (1.96 SD) of ES Green strain; '|diff| all frames' is the "
        "mean absolute difference over every frame of every slice.",
        "'truth' applies Ferdian's definitions to the phantom's true landmarks (material points of the analytic "
        "motion), so differences are tracking/synthesis error; 'exact' rows compare the truth with the analytic "
        "strain of the motion (E_rr there is the wall mean, not the endo-epi chord). Not available for real data.",
        f"Pixel size of the tracking grid: {data.px_mm:.3f} mm.",
        "'tag_contrast' is the first-harmonic (tag) modulation depth of the generated tagging over the heart, "
        "frames 0-7, relative to the original's: well below 1 means the synthesis has (almost) no tags there, and "
        "strain tracked on it measures the tracker's failure, not the heart.",
    ]
    if GEOMETRY in gens:
        notes.append(
            f"'generated' = thesis model (cine only); '{GEOMETRY}' = geometry-aware model (cine + tag phase from "
            "the header)."
        )
    tgt = rep.save_table("ch4_strain_vs_truth", rows, notes=notes)
    return {"table_4_2": t42, "ch4_strain_vs_truth": tgt}


def strain_figures(rep: Report, data: PairData, tr: Mapping[str, Any]) -> None:
    """Figs 4.8 (Bland-Altman), 4.9 (violins), 4.10 (curves), 4.11 (against ground truth)."""
    import matplotlib.pyplot as plt

    from ...figures import bland_altman_plot, show, strain_curves, violin_plot

    es, regions = tr["es"], data.region[tr["idx"]]
    gens = _generated_sources(tr)
    fig, axes = plt.subplots(len(gens), 2, figsize=(9, 3.6 * len(gens)), squeeze=False)
    for r, g in enumerate(gens):
        for ax, metric, label in ((axes[r, 0], "Ecc", "E_cc"), (axes[r, 1], "Err", "E_rr")):
            bland_altman_plot(
                _at_es(tr[metric][g], es),
                _at_es(tr[metric]["original"], es),
                ax=ax,
                title=f"ES {label}: {g} - original",
                xlabel="mean",
                ylabel="difference",
            )
    fig.tight_layout()
    rep.save_figure(fig, "fig_4_8", caption="Bland-Altman of ES strain, generated vs original tagging (test split)")
    show(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, metric, label in ((axes[0], "Ecc", "E_cc"), (axes[1], "Err", "E_rr")):
        groups = {
            r: {s: _finite(_at_es(tr[metric][s], es)[regions == r]) for s in tr[metric]}
            for r in REGIONS
            if (regions == r).any()
        }
        violin_plot(groups, ylabel=f"ES {label}", title=f"ES {label} by region", ax=ax)
    fig.tight_layout()
    rep.save_figure(fig, "fig_4_9", caption="ES circumferential and radial strain by region and source")
    show(fig)

    fig, axes = plt.subplots(2, len(REGIONS), figsize=(4 * len(REGIONS), 6), squeeze=False)
    for j, r in enumerate(REGIONS):
        sel = regions == r
        for i, (metric, label) in enumerate((("Ecc", "E_cc"), ("Err", "E_rr"))):
            if sel.any():
                strain_curves({s: tr[metric][s][sel] for s in tr[metric]}, ylabel=label, title=f"{r}", ax=axes[i, j])
    fig.tight_layout()
    rep.save_figure(fig, "fig_4_10", caption="Strain curves over the cycle, mean ± 1 sd, by region and source")
    show(fig)

    if "truth" in tr["Ecc"]:
        srcs = ["original", *gens]
        fig, axes = plt.subplots(1, len(srcs), figsize=(4.5 * len(srcs), 3.6), squeeze=False)
        for ax, src in zip(axes[0], srcs):
            bland_altman_plot(
                _at_es(tr["Ecc"][src], es),
                _at_es(tr["Ecc"]["truth"], es),
                ax=ax,
                title=f"ES E_cc: tracked {src} - truth",
                xlabel="mean",
                ylabel="difference",
            )
        fig.tight_layout()
        rep.save_figure(
            fig,
            "fig_4_11",
            caption="Bland-Altman of ES E_cc against the phantom's exact strain "
            "(the kit's replacement for the thesis' UK Biobank reference comparison)",
        )
        show(fig)
    else:
        rep.skip("fig_4_11", needs_reason(["ground_truth"]))


def tracking_without_annotations(
    data: PairData, tr: Mapping[str, Any], j: int = 0, *, tracker: Any = None
) -> tuple[pd.DataFrame, Any]:
    """Track one test slice from the LV wall located on its tagging alone, beside the start used by
    :func:`track_and_strain`.

    :func:`cmrkit.tagging.localise_lv_wall` finds the LV myocardium on the original tagging of test
    slice ``j`` (no landmarks, no labels: blood loses its tags within a few frames while myocardium
    keeps them, and in systole the wall moves towards one point); ``tracker`` (default HARP,
    :mod:`cmrkit.tagging.trackers`) starts from it. Returns the ES Green strain of that
    automatic start, of the start used above and, on the phantom, of the truth (rows; columns
    ``ES E_cc``, ``ES E_rr``), and the landmark overlay of frame 0 and ES (open; show it with
    :func:`cmrkit.figures.show`).
    """
    from ...figures import landmark_overlay
    from ...strain import green_strain_from_landmarks
    from ...tagging import localise_lv_wall
    from ...tagging.trackers import HarpTracker

    trk = tracker if tracker is not None else HarpTracker()
    i = int(tr["idx"][j])
    wall = localise_lv_wall(data.tagging[i])
    auto = trk.track(data.tagging[i], wall.landmarks)
    es = int(tr["es"][j])
    curves = {
        "automatic start": green_strain_from_landmarks(auto),
        "start used above": green_strain_from_landmarks(tr["landmarks"]["original"][j]),
    }
    summary = {k: {"ES E_cc": float(v.Ecc[es]), "ES E_rr": float(v.Err[es])} for k, v in curves.items()}
    if data.true_strain is not None:
        summary["truth"] = {
            "ES E_cc": float(data.true_strain["Ecc"][i, es]),
            "ES E_rr": float(data.true_strain["Err"][i, es]),
        }
    fig = landmark_overlay(
        {"automatic start": data.tagging[i]},
        {"automatic start": auto},
        [0, es],
        title=f"{data.subject[i]} {data.region[i]}: LV wall located on the tagging",
    )
    return pd.DataFrame(summary).T, fig


def trackers_on_test(
    data: PairData, tr: Mapping[str, Any], trackers: Mapping[str, Any], n: int = 6
) -> tuple[pd.DataFrame, Any]:
    """Several trackers (``{name: tracker}``, :mod:`cmrkit.tagging.trackers`) on the first ``n`` test
    slices of :func:`track_and_strain`'s result, from the same frame-0 grids: the table of
    :func:`cmrkit.tagging.trackers.compare_trackers` (ES strain means and, on the phantom, landmark error
    and ES strain bias against the truth) and the E_cc curves of the first slice per tracker (beside
    the truth when known; open, show it with :func:`cmrkit.figures.show`)."""
    from ...figures import strain_curves
    from ...strain import green_strain_from_landmarks
    from ...tagging.trackers import compare_trackers

    sel = np.asarray(tr["idx"][: min(n, len(tr["idx"]))])
    table, tracked = compare_trackers(
        dict(trackers),
        data.tagging[sel],
        tr["landmarks"]["original"][: len(sel), 0],
        truth=None if data.landmarks is None else data.landmarks[sel],
        px_mm=data.px_mm,
        es=tr["es"][: len(sel)],
    )
    curves = {name: green_strain_from_landmarks(lms[0]).Ecc[None] for name, lms in tracked.items()}
    if data.true_strain is not None:
        curves["truth"] = data.true_strain["Ecc"][sel[:1]]
    title = f"{data.subject[sel[0]]} {data.region[sel[0]]}: trackers vs truth"
    return table, strain_curves(curves, ylabel="E_cc", title=title)


# --------------------------------------------------------------------------------------------- ablation
def ablation(cfg: Config, rep: Report, data: PairData, *, progress: bool = False) -> dict[str, pd.DataFrame]:
    """Tables 4.3 (latent dimension) and 4.4 (conv layers): cine->tagging quality on the test split."""
    c = cfg.ch4
    idx = data.index("test")
    out = {}
    for table, key, values in (
        ("table_4_3", "latent_dim", c.ablation_latent_dims),
        ("table_4_4", "conv_layers", c.ablation_conv_layers),
    ):
        rows = []
        for v in values:
            kw = {key: int(v)}
            res = train_smcvae(
                cfg, data, epochs=int(c.ablation_epochs), name=f"ablation-{key}-{v}", progress=progress, **kw
            )
            pred = _predict(res.model, data, idx, ("cine",), "tagging")
            m = _image_metrics(pred, data.tagging[idx])
            for metric in ("PSNR", "SSIM", "RMSE"):
                vals = np.asarray(m[metric])
                vals = vals[np.isfinite(vals)]
                rows.append(
                    TableRow(
                        str(v),
                        metric,
                        float(vals.mean()),
                        float(vals.std(ddof=1)) if vals.size > 1 else None,
                        n=int(vals.size),
                        units="dB" if metric == "PSNR" else "",
                    )
                )
        other = "conv_layers" if key == "latent_dim" else "latent_dim"
        out[table] = rep.save_table(
            table,
            rows,
            notes=[
                f"cine->tagging on the test split; each row trained for {int(c.ablation_epochs)} epochs "
                f"({other} = {getattr(c, other)}).",
            ],
        )
    return out


# --------------------------------------------------------------------------------------------- segmentation
def segmentation_check(
    cfg: Config,
    rep: Report,
    data: PairData,
    recon_cine: np.ndarray,
    *,
    mnms_dir: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train the kit's segmenter on training cine, compare segmentations of original and reconstructed
    cine on the test split (Dice, HD95 in mm), and score it on real M&Ms volumes when present.

    The segmenter's sizes come from the profile's ``segmenter:`` section; the M&Ms folder is
    ``mnms_dir`` or else the run's ``realdata.mnms`` (none configured or absent: no M&Ms rows).
    """
    from ...figures import segmentation_overlay, show
    from ...metrics.segmentation import segmentation_scores
    from ...models.segmenter import Segmenter, SegmenterConfig
    from ...segment import evaluate_on_mnms, summarise_mnms

    seg = Segmenter(SegmenterConfig.from_dict(cfg.segmenter), seed=cfg.seed)
    tr, va, te = data.index("train"), data.index("val"), data.index("test")

    def frames(idx):
        ok = data.labelled[idx]
        return data.cine[idx][ok], data.labels[idx][ok]

    x_tr, y_tr = frames(tr)
    run = run_dir(cfg, CHAPTER, "segmenter", {"seg": seg.config.to_dict(), "n": len(x_tr)})
    seg.fit(
        x_tr,
        y_tr,
        validation=frames(va) if len(va) else None,
        seed=cfg.seed,
        device=cfg.device,
        checkpoint_dir=run,
        progress=progress,
        pixel_mm=data.px_mm,
    )
    mark_complete(run)
    n, f = len(te), data.cine.shape[1]
    orig = data.cine[te].reshape(n * f, *data.cine.shape[2:])
    recon = recon_cine.reshape(n * f, *recon_cine.shape[2:])
    p_orig, p_rec = seg.predict(orig, device=cfg.device), seg.predict(recon, device=cfg.device)
    gt = data.labels[te].reshape(n * f, *data.labels.shape[2:])
    ok = data.labelled[te].reshape(-1)
    sp = (data.px_mm, data.px_mm)
    rows = []
    for name, a, b, sel in (
        ("reconstructed_vs_original", p_rec, p_orig, np.ones(n * f, bool)),
        ("original_vs_ground_truth", p_orig, gt, ok),
    ):
        if not sel.any():
            continue
        sc = segmentation_scores(a[sel], b[sel], spacing=sp)
        per_item = sc.replace([np.inf, -np.inf], np.nan).groupby("item")[["dice", "hd_mm", "hd95_mm"]].mean()
        missed = int(np.isinf(sc["hd_mm"]).sum())
        for metric, col, units in (("Dice", "dice", ""), ("HD", "hd_mm", "mm"), ("HD95", "hd95_mm", "mm")):
            v = per_item[col].dropna()
            rows.append(
                TableRow(
                    name,
                    metric,
                    float(v.mean()),
                    float(v.std(ddof=1)) if len(v) > 1 else None,
                    n=int(len(v)),
                    units=units,
                    note=f"{missed} structure(s) found in only one of the two maps (excluded from HD)"
                    if missed and col != "dice"
                    else "",
                    thesis_key=(metric,) if name == "reconstructed_vs_original" else ("-",),
                )
            )
    mn = evaluate_on_mnms(seg, mnms_dir if mnms_dir is not None else cfg.realdata.mnms, device=cfg.device)
    if len(mn):
        s = summarise_mnms(mn)
        for r in s.itertuples(index=False):
            rows.append(
                TableRow(
                    f"mnms_real/{r.structure}",
                    "Dice",
                    float(r.dice_mean),
                    None if pd.isna(r.dice_sd) else float(r.dice_sd),
                    n=int(r.n),
                    note="real M&Ms volumes (phantom-to-real gap)",
                    thesis_key=("-",),
                )
            )
    table = rep.save_table(
        "ch4_segmentation",
        rows,
        notes=[
            "Dice, Hausdorff distance (HD) and its 95th percentile (HD95) in mm, averaged over LV, Myo and RV per 2D "
            "frame of the test split. The thesis segmented with the UK Biobank network of Bai et al.; the kit trains "
            "its "
            "own MONAI UNet on phantom cine.",
        ],
    )
    i = int(te[0]) if len(te) else 0
    j = 0
    fr = int(np.argmax(data.labelled[i])) if data.labelled[i].any() else 0
    fig = segmentation_overlay(
        [data.cine[i, fr], data.cine[i, fr], data.cine[i, fr]],
        [data.labels[i, fr], p_orig[j * f + fr], np.zeros_like(p_orig[0])],
        ["ground truth", "segmenter", "image"],
        title="Segmentation of original cine",
    )
    rep.save_figure(fig, "fig_4_6", caption="Original test cine with ground-truth and predicted labels")
    show(fig)
    fig = segmentation_overlay(
        [data.cine[i, fr], recon_cine[j, fr], recon_cine[j, fr]],
        [p_orig[j * f + fr], p_rec[j * f + fr], np.zeros_like(p_orig[0])],
        ["original + its seg.", "reconstructed + its seg.", "reconstructed"],
        title="Segmentation of reconstructed cine",
    )
    rep.save_figure(fig, "fig_4_7", caption="Reconstructed test cine and its segmentation vs the original's")
    show(fig)
    return {"segmenter": seg, "table": table, "mnms": mn}


# --------------------------------------------------------------------------------------------- figures
def _example_slice(data: PairData, tr: Mapping[str, Any] | None) -> tuple[int, list[int]]:
    """Index (into the test split) of the mid-ventricular example slice and frames ED, mid-systole, ES, diastole."""
    idx = data.index("test")
    picks = [int(np.flatnonzero(data.region[idx] == r)[0]) for r in REGIONS if (data.region[idx] == r).any()]
    j = picks[len(picks) // 2] if picks else 0
    es = int(tr["es"][j]) if tr is not None else data.cine.shape[1] // 3
    frames = sorted({0, es // 2, es, min(data.cine.shape[1] - 1, es + (data.cine.shape[1] - es) // 2)})
    return j, frames


def figure_examples(
    rep: Report,
    data: PairData,
    outputs: Mapping[str, np.ndarray],
    tr: Mapping[str, Any] | None = None,
    outputs_geometry: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Fig 4.4 (one test slice through the four scenarios) and Fig 4.5 (tracking), with the geometry-aware
    model's tagging from cine as an extra row when given."""
    from ...figures import image_grid, landmark_overlay, show

    idx = data.index("test")
    j, frames = _example_slice(data, tr)
    rows = {"cine": data.cine[idx[j]], "tagging": data.tagging[idx[j]]}
    rows.update({name.replace("_", " "): outputs[name][j] for name, _, _ in SCENARIOS})
    if outputs_geometry is not None:
        rows["cine to tagging, geometry-aware"] = outputs_geometry["only_cine_to_tagging"][j]
    fig = image_grid(rows, frames, title=f"{data.subject[idx[j]]} {data.region[idx[j]]} (test)")
    rep.save_figure(fig, "fig_4_4", caption="Original cine and tagging, reconstructions and cross-syntheses")
    show(fig)
    if tr is not None:
        seqs = {"original tagging": data.tagging[idx[j]], "generated tagging": outputs["only_cine_to_tagging"][j]}
        lms = {"original tagging": tr["landmarks"]["original"][j], "generated tagging": tr["landmarks"]["generated"][j]}
        if outputs_geometry is not None and GEOMETRY in tr["landmarks"]:
            seqs["geometry-aware"] = outputs_geometry["only_cine_to_tagging"][j]
            lms["geometry-aware"] = tr["landmarks"][GEOMETRY][j]
        fig = landmark_overlay(
            seqs, lms, frames, title=f"{tr.get('tracker', 'harp')} tracking from the same frame-0 grid"
        )
        rep.save_figure(
            fig, "fig_4_5", caption="Tracked landmarks on original and generated tagging (red: endocardial ring)"
        )
        show(fig)


def browse_test_set(
    data: PairData,
    outputs: Mapping[str, np.ndarray],
    *,
    outputs_geometry: Mapping[str, np.ndarray] | None = None,
    interactive: bool = False,
    item: int = 0,
    frame: int = 0,
    split: str = "test",
) -> tuple[Any, Any]:
    """Cine, tagging and the two cross-syntheses of one slice of ``split`` at one frame.

    Returns ``(figure, viewer_or_None)``: the static panels of slice ``item`` at ``frame`` and, with
    ``interactive=True``, an ipywidgets viewer whose sliders choose the slice and the frame
    (:class:`cmrkit.widgets.IndexFrameViewer`; display ``viewer.ui``). ``outputs`` are
    :func:`synthesis_scenarios`' outputs of the same split; ``outputs_geometry`` (the geometry-aware
    model's) add its tagging from cine as a fifth row.
    """
    from ...figures import image_grid

    idx = data.index(split)

    def render(j: int, t: int) -> Any:
        j = int(j)
        rows = {
            "cine": data.cine[idx[j]],
            "tagging": data.tagging[idx[j]],
            "tagging from cine": outputs["only_cine_to_tagging"][j],
            "cine from tagging": outputs["only_tagging_to_cine"][j],
        }
        if outputs_geometry is not None:
            rows["tagging from cine, geometry-aware"] = outputs_geometry["only_cine_to_tagging"][j]
        return image_grid(rows, [int(t)], title=f"{data.subject[idx[j]]} {data.region[idx[j]]}")

    viewer = None
    if interactive:
        from ...widgets import IndexFrameViewer

        viewer = IndexFrameViewer(
            render, len(idx), data.cine.shape[1], item=item, frame=frame, labels=(f"{split} slice", "frame")
        )
    return render(item, frame), viewer


# --------------------------------------------------------------------------------------------- dry run
def _random_pairs(n: int, frames: int, size: int, seed: int) -> PairData:
    """``n`` random cine/tagging slice pairs in [0, 1], all in the ``test`` split, with linear tag phase
    maps of a 4-pixel grid at a random angle and phase (dry runs only)."""
    rng = np.random.default_rng(seed)
    shape = (n, frames, size, size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    t = rng.uniform(0, np.pi / 2, (n, 1, 1))
    k = 2 * np.pi / 4.0
    phase = np.stack(
        [k * (np.cos(t) * xx + np.sin(t) * yy), k * (-np.sin(t) * xx + np.cos(t) * yy)], axis=1
    ) + rng.uniform(0, 2 * np.pi, (n, 2, 1, 1))
    return PairData(
        cine=rng.random(shape, dtype=np.float32),
        tagging=rng.random(shape, dtype=np.float32),
        labels=np.zeros(shape, np.uint8),
        labelled=np.zeros((n, frames), bool),
        landmarks=None,
        true_strain=None,
        region=np.array(["mid"] * n),
        subject=np.array([f"dry{i}" for i in range(n)]),
        es_frame=np.full(n, -1),
        split=np.array(["test"] * n),
        px_mm=1.0,
        tag_phase=phase.astype(np.float32),
    )


def _dry_run_smcvae(cfg: Config, latent_dim: int, conv_layers: int, geometry: bool = False) -> dict[str, np.ndarray]:
    from ...models.smcvae import PHASE_KEY, SMCVAE, PairedSliceDataset, smcvae_loss
    from ...train import fit

    mcfg = smcvae_config(cfg, latent_dim=latent_dim, conv_layers=conv_layers, geometry=geometry)
    model = SMCVAE(mcfg, seed=cfg.seed)
    train = _random_pairs(2, mcfg.in_frames, mcfg.image_size, cfg.seed)
    extra = {PHASE_KEY: train.tag_phase} if geometry else None
    res = fit(
        model,
        PairedSliceDataset({"cine": train.cine, "tagging": train.tagging}, extra=extra),
        None,
        loss_fn=smcvae_loss,
        epochs=1,
        batch_size=2,
        lr=float(cfg.ch4.lr),
        weight_decay=float(cfg.ch4.weight_decay),
        device="cpu",
        seed=cfg.seed,
        amp="none",
        progress=False,
    )
    test = _random_pairs(1, mcfg.in_frames, mcfg.image_size, cfg.seed + 1)
    generated = _predict(res.model.cpu(), test, test.index("test"), ("cine",), "tagging", batch_size=1)
    return {"train_loss": np.array([res.history[-1]["train_loss"]]), "only_cine_to_tagging": generated}


def _dry_run_segmenter(cfg: Config) -> dict[str, np.ndarray]:
    from ...models.segmenter import Segmenter, SegmenterConfig, toy_slices

    sc = replace(SegmenterConfig.from_dict(cfg.segmenter), epochs=1, batch_size=2)
    seg = Segmenter(sc, seed=cfg.seed)
    x, y = toy_slices(2, int(cfg.ch4.image_size), rng=cfg.seed)  # chapter 4 feeds it slices of its grid
    res = seg.fit(x, y, val_fraction=0.0, seed=cfg.seed, device="cpu", amp="none", progress=False)
    return {"train_loss": np.array([res.history[-1]["train_loss"]]), "labels": seg.predict(x[:1], device="cpu")}


def dry_runs(cfg: Config) -> list[Any]:
    """The chapter's models at the sizes of ``cfg``'s profile, for the CPU dry run (see
    :class:`cmrkit.chapters.DryRun`): the smcVAE with the profile's D and L and with the smallest and
    largest L of the Table 4.4 ablation (L sets the layer structure: how many of the convolutions
    down-sample; the Table 4.3 values of D only change the width of the latent layers), each trained
    one step and synthesising tagging from cine (the chapter's synthesis path), the geometry-aware
    smcVAE at the profile's D and L (given random tag phase maps), and the segmenter, trained one step on
    slices of the chapter's grid and predicting one."""
    import json

    from ...models.segmenter import SegmenterConfig
    from .. import DryRun

    c = cfg.ch4
    frames, size = int(c.frames), int(c.image_size)
    images = (1, frames, size, size)
    layers = [int(L) for L in c.ablation_conv_layers]
    variants = [(int(c.latent_dim), L) for L in (int(c.conv_layers), min(layers), max(layers))]
    runs = []
    for d, L in dict.fromkeys(variants):
        key = json.dumps(smcvae_config(cfg, latent_dim=d, conv_layers=L).to_dict(), sort_keys=True)
        expected = {"train_loss": (1,), "only_cine_to_tagging": images}
        run = lambda d=d, L=L: _dry_run_smcvae(cfg, d, L)  # noqa: E731
        runs.append(DryRun(CHAPTER, f"smcvae D={d} L={L}", key, expected, run))
    d, L = int(c.latent_dim), int(c.conv_layers)
    key = json.dumps(smcvae_config(cfg, latent_dim=d, conv_layers=L, geometry=True).to_dict(), sort_keys=True)
    run = lambda: _dry_run_smcvae(cfg, d, L, geometry=True)  # noqa: E731
    runs.append(
        DryRun(
            CHAPTER,
            f"smcvae geometry-aware D={d} L={L}",
            key,
            {"train_loss": (1,), "only_cine_to_tagging": images},
            run,
        )
    )
    sc = SegmenterConfig.from_dict(cfg.segmenter)
    key = json.dumps({"segmenter": sc.to_dict(), "input": size}, sort_keys=True)
    runs.append(
        DryRun(
            CHAPTER, "segmenter", key, {"train_loss": (1,), "labels": (1, size, size)}, lambda: _dry_run_segmenter(cfg)
        )
    )
    return runs


def tagging_cycle(
    rep: Report,
    data: PairData,
    generated: Mapping[str, np.ndarray],
    tr: Mapping[str, Any] | None = None,
    *,
    interactive: bool = False,
    n_frames: int = 6,
    item: int | None = None,
) -> tuple[Any, Any]:
    """Generated tagging beside the original over the cardiac cycle (kit figure ``ch4_tagging_cycle``).

    The montage: test slice ``item`` (default the mid-ventricular example of Fig 4.4), ``n_frames`` frames
    spread over the sequence (ED and ES included), one row for the original and one per generated source
    (``{name: (n_test, F, H, W)}``), cropped to the heart, saved and returned open (show it with
    :func:`cmrkit.figures.show`). With ``interactive=True`` also an ipywidgets viewer whose sliders choose
    the test slice and the frame (:class:`cmrkit.widgets.IndexFrameViewer`; display ``viewer.ui``).
    Returns ``(figure, viewer_or_None)``.
    """
    from ...figures import image_grid

    idx = data.index("test")
    if item is None:
        item, _ = _example_slice(data, tr)
    F = data.tagging.shape[1]

    def es_of(j: int) -> int:
        return int(tr["es"][j]) if tr is not None else F // 3

    def rows(j: int) -> dict[str, np.ndarray]:
        seqs = {"original": data.tagging[idx[j]], **{k.replace("_", " "): v[j] for k, v in generated.items()}}
        r0, r1, c0, c1 = _heart_box(data, int(idx[j]))
        return {k: np.asarray(v)[:, r0:r1, c0:c1] for k, v in seqs.items()}

    es = es_of(item)
    frames = sorted({*np.linspace(0, F - 1, n_frames).round().astype(int).tolist(), es})
    title = f"{data.subject[idx[item]]} {data.region[idx[item]]} (test): tagging over the cycle, ES = frame {es}"
    fig = image_grid(rows(item), frames, title=title)
    rep.save_figure(
        fig,
        "ch4_tagging_cycle",
        caption="Original tagging and tagging generated from cine over the cardiac cycle, cropped to the heart",
    )
    viewer = None
    if interactive:
        from ...widgets import IndexFrameViewer

        def render(j: int, t: int) -> Any:
            j = int(j)
            name = f"{data.subject[idx[j]]} {data.region[idx[j]]}"
            return image_grid(rows(j), [int(t)], title=f"{name}: frame {int(t)} of {F} (ES {es_of(j)})")

        viewer = IndexFrameViewer(render, len(idx), F, item=item, frame=es, labels=("test slice", "frame"))
    return fig, viewer


def _heart_box(data: PairData, i: int, margin: int = 6) -> tuple[int, int, int, int]:
    """Row/column window ``(r0, r1, c0, c1)`` around the frame-0 landmarks (or the whole image)."""
    H, W = data.tagging.shape[2:]
    if data.landmarks is None:
        return 0, H, 0, W
    lm = data.landmarks[i, 0]
    c0, r0 = np.floor(lm.min(axis=1)).astype(int) - margin
    c1, r1 = np.ceil(lm.max(axis=1)).astype(int) + margin + 1
    return max(r0, 0), min(r1, H), max(c0, 0), min(c1, W)


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
