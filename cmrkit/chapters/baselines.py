"""Baselines: the 3D VAE and 3D LSGAN of chapter 5 and the CGAN, CVAE and CHeart of chapter 6, compared with
the latent diffusion models on equal terms.

The steps, in the order ``notebooks/04_baselines.ipynb`` walks through them (``run_all`` runs them all for
``cmrkit run baselines``):

1. :func:`chapter5_inputs` -- chapter 5's data, split and LDM through :mod:`cmrkit.chapters.ldm3d`'s own
   steps (:func:`~cmrkit.chapters.ldm3d.load_volumes`, ``train_autoencoder``, ``train_diffusion``,
   ``generate_samples``): reloaded from ``runs/`` when notebook 02 made them, trained here otherwise.
2. :func:`train_chapter5` -- the 3D VAE and the 3D LSGAN (:mod:`cmrkit.models.baselines`) on the same
   training volumes (image + mask), the same number of epochs, batch and learning rate for both.
3. :func:`generate_chapter5` -- as many volumes as the LDM's set (``max(ch5.n_samples)``), one seed per
   sample, through the bad-sample guard (:func:`cmrkit.runs.check_samples`: no NaN, the data's shape and
   ranges), written as :class:`cmrkit.runs.SampleSet` runs ``vae3d`` / ``lsgan3d`` of chapter
   ``baselines`` -- where :func:`cmrkit.chapters.ldm3d.table_5_1` finds them.
4. :func:`table_5_1` -- the complete Table 5.1, written by chapter 5's own function (same metric code,
   same feature extractor, same sample count for every row).
5. :func:`chapter5_checks` -- chapter 5's checks for every model (anatomical validity, mask-image
   consistency, phenotype Wasserstein distances, memorisation) plus a mode-collapse check; the LDM's
   volumes beside each baseline's.
6. :func:`chapter6_inputs`, :func:`train_chapter6`, :func:`generate_chapter6` -- the same for chapter 6:
   the sequences, covariates and condition encoding of :mod:`cmrkit.chapters.cond_ldm4d`, the CGAN, CVAE
   and CHeart on the same training sequences, and per model the test-covariate set (``ch6.samples_per_condition``
   per test subject, the LDM's seeds) and the population set (the LDM's population covariates).
7. :func:`training_curves` -- every baseline's losses per epoch.
8. :func:`tables_6` -- the complete Tables 6.1-6.4 through chapter 6's own functions.
9. :func:`chapter6_montage`, :func:`covariate_effects`, :func:`condition_recovery`,
   :func:`counterfactuals`, :func:`temporal_plausibility` -- chapter 6's checks for every model; on the
   phantom the true covariate -> anatomy model says which model learned the covariate effects best.
10. :func:`summary` -- which model did what best, and every failure (collapse, no learned effect) named.

Nothing here is tuned to make a row win: the baselines' sizes and iteration counts live in the profile's
``baselines:`` section, with the same budget for the models of one chapter.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..report import Report, TableRow
from ..runs import SampleSet, check_samples, is_complete, mark_complete, run_dir

__all__ = [
    "NOTEBOOK",
    "STEPS",
    "MODELS5",
    "MODELS6",
    "Trained",
    "Chapter5",
    "Chapter6",
    "baseline_config",
    "chapter5_inputs",
    "train_chapter5",
    "generate_chapter5",
    "table_5_1",
    "chapter5_checks",
    "chapter6_inputs",
    "train_chapter6",
    "generate_chapter6",
    "training_curves",
    "tables_6",
    "chapter6_montage",
    "covariate_effects",
    "condition_recovery",
    "counterfactuals",
    "temporal_plausibility",
    "summary",
    "collapse_flags",
    "missing_structures",
    "dry_runs",
    "run_all",
]

NOTEBOOK = "04_baselines"
CHAPTER = "baselines"
#: the step functions in the order the notebook calls them
STEPS = (
    "chapter5_inputs",
    "train_chapter5",
    "generate_chapter5",
    "table_5_1",
    "chapter5_checks",
    "chapter6_inputs",
    "train_chapter6",
    "generate_chapter6",
    "training_curves",
    "tables_6",
    "chapter6_montage",
    "covariate_effects",
    "condition_recovery",
    "counterfactuals",
    "temporal_plausibility",
    "summary",
)
#: chapter-5 baselines: (run name, row label, kind) -- the run names chapter 5's Table 5.1 reads
MODELS5 = (("vae3d", "3D VAE", "vae"), ("lsgan3d", "3D LSGAN", "gan"))
#: chapter-6 baselines: (run name, row label, kind) -- the run names chapter 6's Tables 6.1-6.4 read
MODELS6 = (("cgan", "CGAN", "gan"), ("cvae", "CVAE", "vae"), ("cheart", "CHeart", "cheart"))
#: mode-collapse thresholds (module docstring of :func:`collapse_flags`)
COLLAPSE_SPREAD = 0.5
COLLAPSE_PHENOTYPE_SD = 0.3


@dataclass
class Trained:
    """A trained (or reloaded) baseline with its training history and run folder."""

    name: str
    label: str
    model: Any
    history: list[dict[str, float]]
    best_epoch: int
    folder: Path


@dataclass
class Chapter5:
    """Chapter 5's data and LDM (from :mod:`cmrkit.chapters.ldm3d`) and the baselines' sample sets."""

    data: Any
    autoencoder: Any
    diffusion: Any
    samples: SampleSet
    sets: dict[str, SampleSet] = field(default_factory=dict)


@dataclass
class Chapter6:
    """Chapter 6's data, condition space and LDM (from :mod:`cmrkit.chapters.cond_ldm4d`) and the sets."""

    data: Any
    space: Any
    autoencoder: Any
    diffusion: Any
    samples: SampleSet
    population: SampleSet
    sets: dict[str, SampleSet] = field(default_factory=dict)
    population_sets: dict[str, SampleSet] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


# =============================================================================================== helpers
def _split_hash(subjects: np.ndarray, split: np.ndarray, which: str) -> str:
    ids = sorted(np.asarray(subjects)[np.asarray(split) == which].tolist())
    return hashlib.sha1(json.dumps(ids).encode()).hexdigest()[:10]


def baseline_config(cfg: Any, chapter: int, shape: Sequence[int], *, cond_dim: int = 0) -> Any:
    """The :class:`~cmrkit.models.baselines.BaselineConfig` of the profile's ``baselines:`` section for chapter
    ``5`` (one volume, 3D networks) or ``6`` (a sequence ``(X, Y, Z, T)``, slices folded, ``cond_dim`` features)."""
    from ..models.baselines import BaselineConfig

    b = cfg.baselines
    if chapter == 5:
        x, y, z = (int(v) for v in shape)
        return BaselineConfig(
            image_size=(x, y),
            depth=z,
            frames=1,
            latent_dim=int(b.latent_dim),
            channels=tuple(int(v) for v in b.ch5_channels),
            depth_strides=tuple(int(v) for v in b.ch5_depth_strides),
            fold_slices=False,
            res_units=int(b.res_units),
            disc_channels=int(b.disc_channels),
            disc_layers=int(b.disc_layers),
        )
    if chapter != 6:
        raise ValueError(f"baseline_config: chapter must be 5 or 6, got {chapter}")
    x, y, z, t = (int(v) for v in shape)
    return BaselineConfig(
        image_size=(x, y),
        depth=z,
        frames=t,
        latent_dim=int(b.latent_dim),
        channels=tuple(int(v) for v in b.ch6_channels),
        depth_strides=tuple(1 for _ in b.ch6_channels),
        fold_slices=True,
        res_units=int(b.res_units),
        cond_dim=int(cond_dim),
        disc_channels=int(b.disc_channels),
        disc_layers=int(b.disc_layers),
        hidden=int(b.cheart_hidden),
        mapping_dim=int(b.cheart_mapping_dim),
        mapping_layers=int(b.cheart_mapping_layers),
    )


def _build(kind: str, mcfg: Any, seed: int) -> Any:
    from ..models.baselines import BaselineGAN, BaselineVAE, CHeart

    return {"vae": BaselineVAE, "gan": BaselineGAN, "cheart": CHeart}[kind](mcfg, seed=seed)


def _losses(cfg: Any, kind: str, criterion: str) -> tuple[Any, Any]:
    """``(loss_fn, adversarial)`` of a baseline for :func:`cmrkit.train.fit`."""
    from ..models.baselines import CHeartLoss, GANLoss, VAELoss
    from ..train import Adversarial

    b = cfg.baselines
    if kind == "vae":
        return VAELoss(float(b.kl_weight)), None
    if kind == "cheart":
        return CHeartLoss(float(b.kl_weight)), None
    g = GANLoss(criterion)
    adv = Adversarial(
        d_loss_fn=g.discriminator,
        lr=float(b.lr),
        betas=tuple(float(v) for v in b.gan_betas),
        d_steps=int(b.d_steps),
    )
    return g.generator, adv


def _fit_baseline(
    cfg: Any,
    name: str,
    label: str,
    kind: str,
    mcfg: Any,
    train_ds: Any,
    val_ds: Any,
    *,
    criterion: str,
    key: Mapping[str, Any],
    progress: bool,
) -> Trained:
    """Train (or reload) one baseline in ``runs/<profile>/<dataset>/baselines/model_<name>-<hash>``."""
    from ..train import fit, save_model

    b = cfg.baselines
    epochs, bs, lr = int(b.epochs5 if mcfg.frames == 1 else b.epochs6), int(b.batch_size), float(b.lr)
    if epochs < 1 or bs < 1:
        raise ValueError(f"baselines: epochs and batch_size must be >= 1, got {epochs}, {bs}")
    gan = kind == "gan"
    betas = tuple(float(v) for v in b.gan_betas) if gan else (0.9, 0.999)
    loss_fn, adversarial = _losses(cfg, kind, criterion)
    payload = {
        "kind": kind,
        "model": mcfg.to_dict(),
        "epochs": epochs,
        "batch_size": bs,
        "lr": lr,
        "betas": list(betas),
        "kl_weight": None if gan else float(b.kl_weight),
        "criterion": criterion if gan else None,
        "d_steps": int(b.d_steps) if gan else None,
        **dict(key),
    }
    folder = run_dir(cfg, CHAPTER, f"model_{name}", payload)
    model = _build(kind, mcfg, int(cfg.seed))
    res = fit(
        model,
        train_ds,
        None if gan else val_ds,  # a GAN has no validation loss worth selecting on: its last weights are kept
        loss_fn=loss_fn,
        epochs=epochs,
        batch_size=bs,
        lr=lr,
        weight_decay=0.0,
        betas=betas,
        keep="last" if gan else "best",
        adversarial=adversarial,
        device=cfg.device,
        seed=int(cfg.seed),
        checkpoint_dir=folder,
        resume=True,
        progress=progress,
    )
    res.model.to("cpu").eval()
    if not is_complete(folder):
        save_model(folder / "model.pt", res.model, mcfg.to_dict(), extra={"best_epoch": int(res.best_epoch)})
        mark_complete(folder, best_epoch=int(res.best_epoch))
    return Trained(name, label, res.model, res.history, int(res.best_epoch), folder)


def _save_set(
    cfg: Any,
    name: str,
    arrays: dict[str, np.ndarray],
    seeds: np.ndarray,
    affine: Any,
    meta: dict,
    specs: Mapping[str, Any],
    payload: Mapping[str, Any],
    conditions: np.ndarray | None = None,
) -> SampleSet:
    """Guard and write one generated set as run ``name`` of chapter ``baselines``."""
    folder = run_dir(cfg, CHAPTER, name, payload)
    if is_complete(folder) and (folder / SampleSet.FILE).is_file():
        ss = SampleSet.load(folder)
        check_samples(ss, specs, where=f"{name} sample set in {folder}")
        return ss
    ss = SampleSet(arrays, seeds, affine, meta=meta, conditions=conditions)
    check_samples(ss, specs, where=f"{name} sample set")
    ss.save(folder)
    mark_complete(folder, n=len(ss))
    return ss


# =============================================================================================== chapter 5
def chapter5_inputs(cfg: Any, *, progress: bool = False) -> Chapter5:
    """Chapter 5's volumes, split and LDM sample set through :mod:`cmrkit.chapters.ldm3d`'s own steps
    (reloaded from ``runs/`` when notebook 02 made them, trained here otherwise)."""
    from . import ldm3d

    data = ldm3d.load_volumes(cfg)
    ae = ldm3d.train_autoencoder(cfg, data, progress=progress)
    ldm = ldm3d.train_diffusion(cfg, data, ae, progress=progress)
    samples = ldm3d.generate_samples(cfg, data, ae, ldm, progress=progress)
    return Chapter5(data, ae, ldm, samples)


def train_chapter5(cfg: Any, ch5: Chapter5, *, progress: bool = False) -> dict[str, Trained]:
    """Train (or reload) the 3D VAE and the 3D LSGAN on chapter 5's training volumes (validation split
    for the VAE's model selection, as the LDM's autoencoder); ``baselines.epochs5`` epochs each."""
    from ..models.baselines import SequenceDataset
    from .ldm3d import source_key

    data = ch5.data
    mcfg = baseline_config(cfg, 5, data.shape)
    tr, va = data.index("train"), data.index("val")
    train_ds = SequenceDataset(data.images[tr], data.labels[tr])
    val_ds = SequenceDataset(data.images[va], data.labels[va]) if len(va) else None
    key = {"train": _split_hash(data.subject, data.split, "train"), "val": _split_hash(data.subject, data.split, "val")}
    key["roi_mm"] = float(cfg.ch5.roi_mm)
    key.update(source_key(cfg))
    return {
        name: _fit_baseline(
            cfg, name, label, kind, mcfg, train_ds, val_ds, criterion="least_squares", key=key, progress=progress
        )
        for name, label, kind in MODELS5
    }


def generate_chapter5(cfg: Any, ch5: Chapter5, models: Mapping[str, Trained]) -> dict[str, SampleSet]:
    """``max(ch5.n_samples)`` volumes per baseline (the LDM's count), sample ``i`` from seed
    ``sample_seeds(seed, N, stream=50 + k)[i]``, guarded and written as runs ``vae3d`` / ``lsgan3d``."""
    from ..models.baselines import generate
    from ..models.diffusion import sample_seeds
    from . import ldm3d

    data = ch5.data
    n = max(ldm3d.sample_counts(cfg))
    sets = {}
    for k, (name, label, _) in enumerate(MODELS5):
        tm = models[name]
        seeds = sample_seeds(int(cfg.seed), n, stream=50 + k)
        payload = {"n": n, "model": tm.folder.name}
        folder = run_dir(cfg, CHAPTER, name, payload)
        if not (is_complete(folder) and (folder / SampleSet.FILE).is_file()):
            img, lab = generate(tm.model, seeds, batch_size=int(cfg.baselines.sample_batch_size), device=cfg.device)
        else:
            img = lab = None
        sets[name] = _save_set(
            cfg,
            name,
            {"image": img, "labels": lab} if img is not None else {},
            seeds,
            data.reference_affine,
            {
                "chapter": CHAPTER,
                "model": f"{label} (cmrkit.models.baselines, run {tm.folder.name})",
                "sampler": "z ~ N(0, I) from each sample's seed, decoded once",
                "sets": ldm3d.sample_counts(cfg),
                "labels": {str(k): v for k, v in ldm3d.STRUCTURES.items()},
                "intensity": "[0, 1]",
                "slice_order": "base -> apex",
            },
            ldm3d.sample_specs(data),
            payload,
        )
    ch5.sets = sets
    return sets


def table_5_1(cfg: Any, rep: Report, ch5: Chapter5) -> pd.DataFrame:
    """The complete Table 5.1, written by :func:`cmrkit.chapters.ldm3d.table_5_1` (the baseline rows come
    from the sample sets of :func:`generate_chapter5`)."""
    from . import ldm3d

    return ldm3d.table_5_1(cfg, rep, ch5.data, ch5.samples, cache=ldm3d.feature_cache(cfg))


def _spread(images: np.ndarray, m: int) -> float:
    """Median distance (RMS per voxel) from each of the first ``m // 2`` volumes to its nearest neighbour
    among the next ``m // 2`` (two disjoint halves: no self-match)."""
    from .ldm3d import nearest_distances

    h = max(1, min(m, len(images)) // 2)
    d, _ = nearest_distances(images[:h], images[h : 2 * h])
    return float(np.median(d))


def collapse_flags(spread_ratio: float, sd_ratio: float) -> list[str]:
    """Why a generated set looks collapsed (empty when it does not).

    * ``spread_ratio``: median nearest-neighbour distance within the generated set over the same within
      the real test set, both on two equal halves of ``len(test)`` volumes; below ``COLLAPSE_SPREAD`` the
      samples are much closer to each other than real hearts are (mode collapse);
    * ``sd_ratio``: standard deviation of generated LVEDV over the real test LVEDV's; below
      ``COLLAPSE_PHENOTYPE_SD`` the set covers a sliver of the cohort's heart sizes.
    """
    out = []
    if math.isfinite(spread_ratio) and spread_ratio < COLLAPSE_SPREAD:
        out.append(f"samples {spread_ratio:.2f}x as far apart as real test volumes (< {COLLAPSE_SPREAD})")
    if math.isfinite(sd_ratio) and sd_ratio < COLLAPSE_PHENOTYPE_SD:
        out.append(f"LVEDV sd {sd_ratio:.2f}x the real test sd (< {COLLAPSE_PHENOTYPE_SD})")
    return out


def missing_structures(labels: np.ndarray, names: Mapping[int, str], *, what: str = "volumes") -> list[str]:
    """Structures a generated set lacks: one flag per label of ``names`` absent from more than half of the
    items of ``labels`` ``(N, ...)`` (e.g. a decoder that predicts background everywhere)."""
    lab = np.asarray(labels).reshape(len(labels), -1)
    out = []
    for k, name in names.items():
        absent = int((~(lab == k).any(axis=1)).sum())
        if 2 * absent > len(lab):
            out.append(f"no {name} in {absent} of {len(lab)} {what}")
    return out


def chapter5_checks(cfg: Any, rep: Report, ch5: Chapter5, *, progress: bool = False) -> dict[str, Any]:
    """Chapter 5's checks for the LDM and every baseline (table ``baselines_ch5_checks``, figure
    ``baselines_ch5_montage``), each on its whole set (the same count for every model):

    * anatomy: share of volumes passing every rule of :mod:`cmrkit.metrics.anatomy`;
    * mask-image Dice: chapter 5's segmenter on the generated image vs the generated mask;
    * phenotypes: Wasserstein-1 of LVEDV, LVM and RVEDV against the real test volumes, in cohort sd;
    * memorisation: median nearest-training distance of generated images over that of real test images
      (raw, and through the LDM's autoencoder as chapter 5 does), and the same with masks (1 - Dice);
    * collapse: within-set spread and LVEDV spread relative to the real test set (:func:`collapse_flags`).
    """
    from ..figures import show
    from ..metrics import wasserstein
    from ..metrics.anatomy import check_volumes, validity_summary
    from . import ldm3d

    data = ch5.data
    tr, te = data.index("train"), data.index("test")
    models = {"LDM": ch5.samples, **{label: ch5.sets[name] for name, label, _ in MODELS5 if name in ch5.sets}}
    seg = ldm3d.train_segmenter(cfg, data, progress=progress)
    cohort = ldm3d.volume_phenotypes(data.labels, data.spacing)
    real_te = ldm3d.volume_phenotypes(data.labels[te], data.spacing[te])
    real_spread = _spread(data.images[te], len(te))
    rec_i, _ = ldm3d.reconstruct(ch5.autoencoder.model, data.images[te], data.labels[te], device=cfg.device)
    d_test_raw = float(np.median(ldm3d.nearest_distances(data.images[te], data.images[tr])[0]))
    d_test_ae = float(np.median(ldm3d.nearest_distances(rec_i, data.images[tr])[0]))
    m_test = float(np.median(ldm3d.nearest_mask_distances(data.labels[te], data.labels[tr])))
    rows: list[TableRow] = []
    out: dict[str, Any] = {"flags": {}}
    real_valid = validity_summary(check_volumes(data.labels[te], apex_last=True))["valid"]
    rows.append(TableRow("real test", "valid anatomy (%)", 100 * real_valid, n=len(te), units="%"))
    d_real = ldm3d.volume_dice(ldm3d.segment_volumes(seg, data.images[te], cfg.device), data.labels[te])
    rows.append(TableRow.summary("real test", "mask-image Dice", np.nanmean(d_real, axis=1)))
    for label, ss in models.items():
        img, lab = ss.arrays["image"], ss.arrays["labels"]
        n = len(ss)
        rows.append(
            TableRow(
                label,
                "valid anatomy (%)",
                100 * validity_summary(check_volumes(lab, apex_last=True))["valid"],
                n=n,
                units="%",
            )
        )
        d = ldm3d.volume_dice(ldm3d.segment_volumes(seg, img, cfg.device), lab)
        rows.append(TableRow.summary(label, "mask-image Dice", np.nanmean(d, axis=1)))
        ph = ldm3d.volume_phenotypes(lab, data.reference_spacing)
        for key, _, _units in ldm3d.PHENOTYPES:
            sd = float(cohort[key].std(ddof=1))
            w = float(wasserstein(ph[key].to_numpy(), real_te[key].to_numpy()))
            rows.append(TableRow(label, f"W1 {key} vs test / cohort sd", w / sd if sd > 0 else math.nan, n=n))
        d_g = float(np.median(ldm3d.nearest_distances(img, data.images[tr])[0]))
        m_g = float(np.median(ldm3d.nearest_mask_distances(lab, data.labels[tr])))
        rows.append(TableRow(label, "memorisation: NN distance / test raw", d_g / d_test_raw, n=n))
        rows.append(TableRow(label, "memorisation: NN distance / test autoencoded", d_g / d_test_ae, n=n))
        rows.append(TableRow(label, "memorisation: NN mask distance / test", m_g / m_test if m_test > 0 else math.nan))
        spread = _spread(img, len(te)) / real_spread if real_spread > 0 else math.nan
        sd_ratio = float(ph["LVEDV"].std(ddof=1) / real_te["LVEDV"].std(ddof=1))
        rows.append(TableRow(label, "spread vs real test", spread))
        rows.append(TableRow(label, "LVEDV sd / real test sd", sd_ratio))
        flags = collapse_flags(spread, sd_ratio) + missing_structures(lab, ldm3d.STRUCTURES)
        note = f"{label} collapsed: " + "; ".join(flags) if flags else ""
        rows.append(TableRow(label, "collapsed (1 = yes)", float(bool(flags)), note=note))
        out["flags"][label] = flags
    table = rep.save_table(
        "baselines_ch5_checks",
        rows,
        notes=[
            f"Every model's whole set ({len(ch5.samples)} volumes each); real: {len(tr)} training and {len(te)} test "
            f"volumes of {data.shape} voxels. Same code as chapter 5's checks (cmrkit.chapters.ldm3d).",
            "valid anatomy: every rule of cmrkit.metrics.anatomy (Painchaud et al. 2020 in spirit). mask-image Dice: "
            "chapter 5's 2D segmenter on each generated image against the generated mask (mean over LV, Myo, RV); "
            "its real-test row is the segmenter against the ground truth (its own accuracy).",
            "W1: 1-D Wasserstein distance of the phenotype between the generated set and the real test volumes, over "
            "the cohort's standard deviation.",
            "memorisation: median RMS distance of a generated image to its nearest training image over that of the "
            "real test images (raw, or through the LDM's autoencoder, which puts them on the footing of decoder "
            "outputs); mask: 1 - Dice to the nearest training mask. Well below 1 = copies of training subjects.",
            f"collapse: 'spread' = median nearest-neighbour distance within the set (two halves of {len(te)} volumes) "
            f"over the same within the real test set; collapsed when spread < {COLLAPSE_SPREAD} or the LVEDV sd is "
            f"below {COLLAPSE_PHENOTYPE_SD} of the real test sd.",
        ],
    )
    out["table"] = table
    fig = _montage5(ch5, models)
    rep.save_figure(fig, "baselines_ch5_montage", caption="Generated volumes of each model beside the LDM's, masks")
    show(fig)
    return out


def _montage5(ch5: Chapter5, models: Mapping[str, SampleSet], n: int = 6) -> Any:
    import matplotlib.pyplot as plt

    from ..figures import LABEL_CMAP

    data = ch5.data
    te = data.index("test")
    rows = {"real test": (data.images[te[:n]], data.labels[te[:n]])}
    rows.update({k: (v.arrays["image"][:n], v.arrays["labels"][:n]) for k, v in models.items()})
    z = data.shape[2] // 2
    fig, axes = plt.subplots(2 * len(rows), n, figsize=(1.3 * n + 0.8, 1.35 * 2 * len(rows)), squeeze=False)
    for r, (name, (img, lab)) in enumerate(rows.items()):
        for c in range(n):
            for k, over in enumerate((False, True)):
                ax = axes[2 * r + k, c]
                ax.axis("off")
                if c >= len(img):
                    continue
                ax.imshow(img[c][:, :, z].T, cmap="gray", vmin=0, vmax=1)
                if over:
                    ax.imshow(lab[c][:, :, z].T, cmap=LABEL_CMAP, vmin=0, vmax=3, interpolation="nearest")
        axes[2 * r, 0].text(-0.1, 0.5, name, transform=axes[2 * r, 0].transAxes, ha="right", va="center", fontsize=8)
    fig.suptitle("Mid slice of the first volumes of each set (image, then with its mask)", fontsize=9)
    fig.tight_layout()
    return fig


# =============================================================================================== chapter 6
def chapter6_inputs(cfg: Any, *, progress: bool = False) -> Chapter6:
    """Chapter 6's sequences, covariates, condition encoding and LDM sets through
    :mod:`cmrkit.chapters.cond_ldm4d`'s own steps (reloaded when notebook 03 made them)."""
    from . import cond_ldm4d

    data = cond_ldm4d.load_sequences(cfg, progress=progress)
    space = cond_ldm4d.condition_space(cfg, data)
    ae = cond_ldm4d.train_autoencoder(cfg, data, progress=progress)
    ldm = cond_ldm4d.train_diffusion(cfg, data, ae, progress=progress)
    samples = cond_ldm4d.generate_test_samples(cfg, data, ae, ldm, progress=progress)
    population = cond_ldm4d.generate_population_samples(cfg, data, ae, ldm, progress=progress)
    return Chapter6(data, space, ae, ldm, samples, population)


def train_chapter6(cfg: Any, ch6: Chapter6, *, progress: bool = False) -> dict[str, Trained]:
    """Train (or reload) the CGAN, CVAE and CHeart on chapter 6's training sequences with their covariates
    encoded as chapter 6 encodes them (:func:`cmrkit.chapters.cond_ldm4d.condition_space`); the CGAN's
    loss is ``baselines.cgan_loss``; ``baselines.epochs6`` epochs each."""
    from ..models.baselines import SequenceDataset

    data, space = ch6.data, ch6.space
    mcfg = baseline_config(cfg, 6, data.shape, cond_dim=space.feature_dim)
    tr, va = data.index("train"), data.index("val")
    f_tr = space.encode(data.covariates.iloc[tr])
    train_ds = SequenceDataset(data.images[tr], data.labels[tr], f_tr)
    val_ds = None
    if len(va):
        val_ds = SequenceDataset(data.images[va], data.labels[va], space.encode(data.covariates.iloc[va]))
    key = {
        "train": _split_hash(data.subject, data.split, "train"),
        "val": _split_hash(data.subject, data.split, "val"),
        "space": space.to_dict(),
        "roi_mm": float(cfg.ch6.roi_mm),
    }
    crit = str(cfg.baselines.cgan_loss)
    return {
        name: _fit_baseline(cfg, name, label, kind, mcfg, train_ds, val_ds, criterion=crit, key=key, progress=progress)
        for name, label, kind in MODELS6
    }


def _generate_many(cfg: Any, trained: Trained, space: Any, conditions: pd.DataFrame, seeds: np.ndarray) -> Any:
    from ..models.baselines import generate

    feats = space.encode(conditions[list(space.names)])
    return generate(trained.model, seeds, feats, batch_size=int(cfg.baselines.sample_batch_size), device=cfg.device)


def generate_chapter6(cfg: Any, ch6: Chapter6, models: Mapping[str, Trained]) -> dict[str, SampleSet]:
    """Per baseline, the sets chapter 6 reads: run ``<name>`` = ``ch6.samples_per_condition`` sequences for
    every test subject's covariates (the LDM's seeds, labels of every frame, images at the LDM set's
    ``image_frames``) and run ``population_<name>`` = one sequence per condition set of the LDM's population
    set (labels only). Both pass chapter 6's bad-sample guard."""
    from . import cond_ldm4d

    data, space, ldm_set = ch6.data, ch6.space, ch6.samples
    names = list(space.names)
    frames = list(ldm_set.meta.get("image_frames") or range(data.frames))
    test_cond = pd.DataFrame(ldm_set.conditions, columns=names)
    pop_cond = pd.DataFrame(ch6.population.conditions, columns=list(ch6.population.meta["condition_names"]))[names]
    for name, label, _ in MODELS6:
        tm = models[name]
        for run, cond, src, keep_images in (
            (name, test_cond, ldm_set, True),
            (f"population_{name}", pop_cond, ch6.population, False),
        ):
            payload = {
                "n": len(cond),
                "model": tm.folder.name,
                "seeds": hashlib.sha1(np.asarray(src.seeds, np.int64).tobytes()).hexdigest()[:12],
                "conditions": hashlib.sha1(np.ascontiguousarray(cond.to_numpy(float)).tobytes()).hexdigest()[:12],
                "image_frames": frames if keep_images else None,
            }
            folder = run_dir(cfg, CHAPTER, run, payload)
            arrays: dict[str, np.ndarray] = {}
            if not (is_complete(folder) and (folder / SampleSet.FILE).is_file()):
                img, lab = _generate_many(cfg, tm, space, cond, np.asarray(src.seeds))
                arrays = {"labels": lab}
                if keep_images:
                    arrays["image"] = np.ascontiguousarray(img[..., frames]).astype(np.float16)
            meta = {
                "chapter": CHAPTER,
                "model": f"{label} (cmrkit.models.baselines, run {tm.folder.name})",
                "sampler": "z ~ N(0, I) from each sample's seed (the LDM set's seeds), decoded under the covariates",
                "condition_names": names,
                "image_frames": frames if keep_images else [],
                "labels": {str(k): v for k, v in cond_ldm4d.STRUCTURES.items()},
                "intensity": "[0, 1] (float16)",
                "slice_order": "base -> apex",
                "frame_0": "ED",
            }
            for k in ("subjects", "samples_per_condition", "source"):
                if k in src.meta:
                    meta[k] = src.meta[k]
            ss = _save_set(
                cfg,
                run,
                arrays,
                np.asarray(src.seeds),
                data.reference_affine,
                meta,
                cond_ldm4d.sample_specs(data, len(frames) if keep_images else None),
                payload,
                conditions=cond.to_numpy(float),
            )
            (ch6.sets if keep_images else ch6.population_sets)[name] = ss
    return ch6.sets


def training_curves(rep: Report, models: Mapping[str, Trained]) -> Any:
    """Figure ``baselines_training_curves``: every baseline's training (and validation) loss per epoch,
    and for the GANs the discriminator's loss and its mean outputs on real and generated samples."""
    import matplotlib.pyplot as plt

    from ..figures import show

    fig, axes = plt.subplots(1, len(models), figsize=(3.3 * len(models), 3.0), squeeze=False)
    for ax, tm in zip(axes[0], models.values()):
        h = pd.DataFrame(tm.history)
        if h.empty:
            ax.set_title(f"{tm.label}: no history", fontsize=8)
            continue
        ax.plot(h["epoch"], h["train_loss"], label="generator / train loss" if "train/d_loss" in h else "train")
        if h["val_loss"].notna().any():
            ax.plot(h["epoch"], h["val_loss"], label="validation")
            ax.axvline(tm.best_epoch, color="0.6", ls=":", lw=0.8)
        if "train/d_loss" in h:
            ax.plot(h["epoch"], h["train/d_loss"], label="discriminator")
            for k, ls in (("train/d/real", "--"), ("train/d/fake", ":")):
                if k in h:
                    ax.plot(h["epoch"], h[k], ls=ls, lw=0.8, label=f"D output on {k.rsplit('/', 1)[1]}")
        ax.set_title(tm.label, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, frameon=False)
    fig.suptitle("Training curves of the baselines (dotted line: the VAE-family epoch kept)", fontsize=9)
    fig.tight_layout()
    rep.save_figure(fig, "baselines_training_curves", caption="Losses per epoch of every baseline")
    show(fig)
    return fig


def tables_6(cfg: Any, rep: Report, ch6: Chapter6) -> dict[str, pd.DataFrame]:
    """The complete Tables 6.1-6.4, written by chapter 6's own functions (:func:`cmrkit.chapters.cond_ldm4d.table_6_1`,
    ``table_6_2``, ``tables_6_3_6_4``); the baseline rows come from :func:`generate_chapter6`'s sets."""
    from . import cond_ldm4d

    out = {"table_6_1": cond_ldm4d.table_6_1(cfg, rep, ch6.data, ch6.samples, ch6.autoencoder)}
    out["table_6_2"] = cond_ldm4d.table_6_2(cfg, rep, ch6.data, ch6.samples)
    out.update(cond_ldm4d.tables_6_3_6_4(cfg, rep, ch6.data, ch6.samples))
    ch6.tables.update(out)
    return out


def _models6(ch6: Chapter6, population: bool = False) -> dict[str, SampleSet]:
    sets = ch6.population_sets if population else ch6.sets
    first = ch6.population if population else ch6.samples
    return {"LDM": first, **{label: sets[name] for name, label, _ in MODELS6 if name in sets}}


def chapter6_montage(cfg: Any, rep: Report, ch6: Chapter6, *, n_subjects: int = 3) -> Any:
    """Figure ``baselines_ch6_montage``: for the first test subjects, the real sequence and each model's first
    sequence generated for the subject's covariates, mid slice at ED (frame 0) and at the scored frame nearest
    the real subject's ES (the sets keep the images of the scored frames only), myocardium outlined."""
    import matplotlib.pyplot as plt

    from ..clinical import sequence_phenotypes
    from ..figures import show

    data = ch6.data
    models = _models6(ch6)
    subjects = list(ch6.samples.meta.get("subjects") or [])
    per = int(ch6.samples.meta.get("samples_per_condition", 1))
    pos = {s: i for i, s in enumerate(data.subject)}
    picks = [subjects[k * per] for k in range(min(n_subjects, len(subjects) // max(per, 1)))]
    zmid = data.shape[2] // 2
    ncol = 2 * len(picks)
    fig, axes = plt.subplots(1 + len(models), ncol, figsize=(1.35 * ncol + 0.8, 1.4 * (1 + len(models))), squeeze=False)
    kept = list(ch6.samples.meta.get("image_frames") or range(data.frames))
    for c, sid in enumerate(picks):
        i = pos[sid]
        j = subjects.index(sid)
        es = int(sequence_phenotypes(data.labels[i][None], data.spacing[i])["ES_frame"].iloc[0])
        near = min(kept, key=lambda f: (abs(f - es), f))  # only the scored frames' images are kept
        rows = [("real", data.labels[i], data.images[i], list(range(data.frames)))]
        for label, ss in models.items():
            rows.append(
                (label, ss.arrays["labels"][j], ss.arrays["image"][j], list(ss.meta.get("image_frames") or kept))
            )
        for r, (label, lab, img, frames) in enumerate(rows):
            for k, f in enumerate((0, near)):
                ax = axes[r, 2 * c + k]
                ax.axis("off")
                im = np.asarray(img[..., frames.index(f)], np.float32)
                ax.imshow(im[:, :, zmid].T, cmap="gray", vmin=0, vmax=1)
                ax.contour((lab[:, :, zmid, f] == 2).T.astype(float), levels=[0.5], colors=["#2ca02c"], linewidths=0.7)
                if r == 0:
                    ax.set_title(f"{sid} frame {f}" + (" (ED)" if f == 0 else f" (ES {es})"), fontsize=6)
            axes[r, 0].text(-0.08, 0.5, label, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=7)
    fig.suptitle("Real test sequences and each model's sequence for the same covariates (mid slice)", fontsize=8)
    fig.tight_layout()
    rep.save_figure(fig, "baselines_ch6_montage", caption="Each model's sequence for a test subject's covariates")
    show(fig)
    return fig


def covariate_effects(cfg: Any, rep: Report, ch6: Chapter6) -> dict[str, Any]:
    """Recovered covariate effects of every model (table ``baselines_ch6_effects``, figure
    ``baselines_ch6_effects_forest``): chapter 6's regression (:func:`cmrkit.effects.fit_effects`) on each
    model's population set (the same covariates for every model), the real cohort and, on the phantom, the
    true model (:func:`cmrkit.effects.true_effects`).

    Per model: every coefficient with its standard error; ``RMSE vs true`` over the main terms (sex, log BSA,
    age, SBP) and the five volumes/mass (log scale: relative effects), and the number of the four bar effects
    (sex and body size on LVEDV and LVM) with the true sign within +-50 % -- the ground-truth answer to
    "which model learned the covariate effects best".
    """
    import matplotlib.pyplot as plt

    from ..clinical import sequence_phenotypes
    from ..effects import TERM_LABELS, fit_effects, true_effects
    from ..figures import show
    from . import cond_ldm4d

    data = ch6.data
    pops = _models6(ch6, population=True)
    names = list(ch6.space.names)
    n_min = min(len(ss) for ss in pops.values())
    n_terms = len(cond_ldm4d.EFFECT_TERMS) + 1
    terms = None if min(n_min, len(data)) >= 3 * n_terms else cond_ldm4d.MAIN_TERMS
    if min(n_min, len(data)) <= len(cond_ldm4d.MAIN_TERMS) + 2:
        raise ValueError(f"covariate_effects: {n_min} sequences are too few for a regression")
    fits = {}
    for label, ss in pops.items():
        cov = pd.DataFrame(ss.conditions, columns=list(ss.meta["condition_names"]))
        fits[label] = fit_effects(
            cov, sequence_phenotypes(ss.arrays["labels"], data.reference_spacing), names=names, terms=terms
        )
    fits["real cohort"] = fit_effects(
        data.covariates, sequence_phenotypes(data.labels, data.spacing), names=names, terms=terms
    )
    true = true_effects(names=names, terms=terms, seed=int(cfg.seed)) if cfg.dataset == "phantom" else None
    keys = ("LVEDV", "LVESV", "RVEDV", "RVESV", "LVM")
    # a model whose masks lack a structure cannot be regressed on: say so (its RMSE and bar count follow)
    unfit = [f"{label} {key}: {fit[key].note}" for label, fit in fits.items() for key in keys if not fit[key].estimable]
    main = [t for t in cond_ldm4d.MAIN_TERMS if t in fits["LDM"]["LVEDV"].terms]
    rows: list[TableRow] = []
    for key in keys:
        for term in main:
            row = f"{key}/{TERM_LABELS[term]}"
            if true is not None:
                rows.append(TableRow(row, "true (phantom model)", true[key][term]["coef"], units="log-scale"))
            for label, fit in fits.items():
                e = fit[key][term]
                rows.append(TableRow(row, label, e["coef"], e["se"], n=fit[key].n, units="log-scale"))
    scores: dict[str, dict[str, float]] = {}
    if true is not None:
        for label, fit in fits.items():
            err = [fit[k][t]["coef"] - true[k][t]["coef"] for k in keys for t in main]
            passed = 0
            for k, t in cond_ldm4d.BAR_EFFECTS:
                if t in fit[k].terms:
                    tv, gv = true[k][t]["coef"], fit[k][t]["coef"]
                    passed += int(tv != 0 and np.sign(gv) == np.sign(tv) and abs(gv / tv - 1) <= 0.5)
            rmse = float(np.sqrt(np.mean(np.square(err))))
            scores[label] = {"rmse": rmse, "bar": float(passed)}
            rows.append(TableRow("summary", f"{label}: RMSE vs true", rmse, n=len(err), units="log-scale"))
            rows.append(
                TableRow("summary", f"{label}: bar effects met (of {len(cond_ldm4d.BAR_EFFECTS)})", float(passed))
            )
    table = rep.save_table(
        "baselines_ch6_effects",
        rows,
        notes=[
            "Chapter 6's regression (cmrkit.effects.fit_effects) of log LVEDV, LVESV, RVEDV, RVESV and LVM on the "
            "covariates, fitted to each model's population set -- the same covariate draws for every model -- and to "
            f"the real cohort ({len(data)} subjects); coefficients on the log scale (0.1 = +10.5 %), ± = standard "
            "error."
            + ("" if terms is None else f" Too few sequences for every term: main effects {list(terms)} only."),
            "true: the phantom's covariate -> phenotype model (cmrkit.effects.true_effects, 20,000 draws). RMSE vs "
            "true over the main terms x the five phenotypes; bar effects = sex and log BSA on LVEDV and LVM with the "
            "true sign and within ±50 % of the true value (chapter 6's bar). The real cohort's row is what a perfect "
            "generator would show with the cohort's own sample size."
            if true is not None
            else f"No true model for data set {cfg.dataset!r}: models vs the real cohort only.",
            *(
                ["Not estimable (shown as '-'; the model's RMSE is then undefined and its bar effects unmet): "] + unfit
                if unfit
                else []
            ),
        ],
    )
    # forest plot: LVEDV and LVM main terms, every model and the truth
    fig, axes = plt.subplots(2, len(main), figsize=(3.0 * len(main), 5.4), squeeze=False)
    colours = plt.get_cmap("tab10")
    for r, key in enumerate(("LVEDV", "LVM")):
        for c, term in enumerate(main):
            ax = axes[r, c]
            for j, fit in enumerate(fits.values()):
                e = fit[key][term]
                ax.errorbar(
                    e["coef"],
                    j,
                    xerr=[[e["coef"] - e["low"]], [e["high"] - e["coef"]]],
                    fmt="o",
                    ms=4,
                    color=colours(j),
                )
            if true is not None:
                ax.axvline(true[key][term]["coef"], color="k", ls="--", lw=1, label="true")
            ax.axvline(0, color="0.8", lw=0.6)
            ax.set_yticks(range(len(fits)))
            ax.set_yticklabels(list(fits), fontsize=7)
            ax.set_title(f"log {key}: {TERM_LABELS[term]}", fontsize=8)
            ax.tick_params(axis="x", labelsize=7)
    fig.suptitle("Covariate effects of each model (95 % CI) against the phantom's true effect (dashed)", fontsize=9)
    fig.tight_layout()
    rep.save_figure(fig, "baselines_ch6_effects_forest", caption="Covariate effects of every model vs the truth")
    show(fig)
    return {"table": table, "fits": fits, "true": true, "scores": scores}


def condition_recovery(cfg: Any, rep: Report, ch6: Chapter6) -> dict[str, Any]:
    """Condition recovery of every model (table ``baselines_ch6_recovery``): chapter 6's frozen predictors
    (:func:`cmrkit.chapters.cond_ldm4d.recovery_predictors`, trained on the real training phenotypes) applied to
    each model's population set with the covariates it was generated for as the truth, beside the held-out
    real subjects. R² for continuous covariates, ROC AUC for sex / smoking / alcohol."""
    from ..clinical import sequence_phenotypes
    from . import cond_ldm4d

    data = ch6.data
    names = list(ch6.space.names)
    predictors, skipped = cond_ldm4d.recovery_predictors(data, names)
    held = np.concatenate([data.index("val"), data.index("test")])
    sets: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {
        "real held-out": (sequence_phenotypes(data.labels[held], data.spacing[held]), data.covariates.iloc[held])
    }
    for label, ss in _models6(ch6, population=True).items():
        cov = pd.DataFrame(ss.conditions, columns=list(ss.meta["condition_names"]))
        sets[label] = (sequence_phenotypes(ss.arrays["labels"], data.reference_spacing), cov)
    rows: list[TableRow] = []
    scores: dict[str, list[float]] = {k: [] for k in sets}
    for n in names:
        for who, (ph, cov) in sets.items():
            if n in skipped:
                rows.append(TableRow(n, who, math.nan, note=skipped[n]))
                continue
            v = predictors.score(n, ph, cov[n].to_numpy())
            metric = "R²" if predictors.kinds[n] == "continuous" else "AUC"
            rows.append(TableRow(n, who, v, n=len(ph), units=metric))
            if metric == "R²" and math.isfinite(v):
                scores[who].append(v)
    for who, v in scores.items():
        rows.append(TableRow("mean R² (continuous covariates)", who, float(np.mean(v)) if v else math.nan))
    table = rep.save_table(
        "baselines_ch6_recovery",
        rows,
        notes=[
            "Chapter 6's predictors (cmrkit.chapters.cond_ldm4d.recovery_predictors: ridge / logistic regression on "
            "log LVEDV, LVESV, RVEDV, RVESV, LVM, LVEF and RVEF of the real training subjects), frozen, applied to "
            "each model's population set with the covariates it was generated for as the truth; 'real held-out' = the "
            f"validation and test subjects ({len(held)}). A model that learned the covariates scores about as real "
            "hearts do; R² can be negative, AUC 0.5 = chance.",
        ],
    )
    return {"table": table, "mean_r2": {k: (float(np.mean(v)) if v else math.nan) for k, v in scores.items()}}


def _ldm_generator(cfg: Any, ch6: Chapter6) -> Any:
    from ..models.cond_diffusion import generate_sequences

    def run(cond: pd.DataFrame, seeds: np.ndarray) -> np.ndarray:
        g = generate_sequences(
            ch6.autoencoder.model,
            ch6.diffusion.model,
            cond,
            seeds,
            guidance=float(cfg.ch6.guidance),
            ddim_steps=int(cfg.ch6.ddim_steps),
            batch_size=int(cfg.ch6.sample_batch_size),
            image_frames=[],
            device=cfg.device,
        )
        return g.labels

    return run


def counterfactuals(cfg: Any, rep: Report, ch6: Chapter6, models: Mapping[str, Trained]) -> dict[str, Any]:
    """Seed-based counterfactuals of every model (table ``baselines_ch6_counterfactuals``): chapter 6's
    interventions (weight 60 -> 100 kg with height kept, sex F -> M) on ``ch6.counterfactual_seeds`` seeds whose
    other covariates are those of test subjects (cycled), the same initial noise -- the LDM's DDIM noise, a
    baseline's ``z`` -- under both covariate sets. Per model: the share of seeds whose LVEDV moved in the true
    direction and the mean changes of LVEDV and LVM against the phantom model's own counterfactual change
    (:func:`cmrkit.effects.true_counterfactual`, the same residual under both covariate sets)."""
    from ..clinical import sequence_phenotypes
    from ..effects import true_counterfactual
    from ..models.diffusion import sample_seeds
    from . import cond_ldm4d

    data, space = ch6.data, ch6.space
    names = list(space.names)
    n_seeds = int(cfg.ch6.counterfactual_seeds)
    te = data.index("test")
    base = data.covariates.iloc[te[np.arange(n_seeds) % len(te)]][names].reset_index(drop=True)
    seeds = sample_seeds(int(cfg.seed), n_seeds, stream=66)
    interventions, notes = [], []
    if "weight_kg" in names:
        (w0, w1), why = cond_ldm4d.intervention_endpoints(space, "weight_kg", (60.0, 100.0), data)
        interventions.append((f"weight {w0:g} -> {w1:g} kg", {"weight_kg": w0}, {"weight_kg": w1}))
        if why:
            notes.append(f"weight: {why}.")
    if "sex" in names and len(space.stats["sex"]["observed"]) == 2:
        interventions.append(("sex F -> M", {"sex": 0.0}, {"sex": 1.0}))
    gens = {"LDM": _ldm_generator(cfg, ch6)}
    for name, label, _ in MODELS6:
        if name in models:
            gens[label] = lambda cond, s, tm=models[name]: _generate_many(cfg, tm, space, cond, s)[1]
    phantom = cfg.dataset == "phantom"
    rows: list[TableRow] = []
    direction: dict[str, list[float]] = {k: [] for k in gens}
    for label_i, a_set, b_set in interventions:
        ca, cb = base.assign(**a_set), base.assign(**b_set)
        true_d = None
        if phantom:
            pairs = [
                true_counterfactual(ca.iloc[i].to_dict(), cb.iloc[i].to_dict(), seed=int(seeds[i]))
                for i in range(n_seeds)
            ]
            true_d = pd.DataFrame([b for _, b in pairs]) - pd.DataFrame([a for a, _ in pairs])
            for k, units in (("LVEDV", "mL"), ("LVM", "g")):
                rows.append(TableRow.summary(f"{label_i}/{k} change", "true model", true_d[k], units=units))
        for who, gen in gens.items():
            pa = sequence_phenotypes(gen(ca, seeds), data.reference_spacing)
            pb = sequence_phenotypes(gen(cb, seeds), data.reference_spacing)
            d = pb - pa
            for k, units in (("LVEDV", "mL"), ("LVM", "g")):
                rows.append(TableRow.summary(f"{label_i}/{k} change", who, d[k], units=units))
            if true_d is not None:
                right = 100.0 * float(np.mean(np.sign(d["LVEDV"]) == np.sign(true_d["LVEDV"])))
                direction[who].append(right)
                rows.append(
                    TableRow(
                        f"{label_i}/LVEDV direction right",
                        who,
                        right,
                        n=n_seeds,
                        units="%",
                        note="chapter 6 bar: >= 90 %",
                    )
                )
    table = rep.save_table(
        "baselines_ch6_counterfactuals",
        rows,
        notes=[
            f"{n_seeds} seeds, each with the other covariates of a test subject (cycled); both covariate sets "
            "generated from the same initial noise (the LDM: DDIM noise, eta 0; a baseline: its latent z). Changes = "
            "after - before, mean ± sd over seeds; phenotypes as in Table 6.2.",
            *notes,
            "true model: the phantom's covariate -> phenotype model with the same residual under both covariate sets "
            "(cmrkit.effects.true_counterfactual)."
            if phantom
            else "No true model for this data set: generated changes only.",
        ],
    )
    return {"table": table, "direction": {k: (float(np.mean(v)) if v else math.nan) for k, v in direction.items()}}


def temporal_plausibility(cfg: Any, rep: Report, ch6: Chapter6) -> dict[str, Any]:
    """Volume curves and diversity of every model (table ``baselines_ch6_temporal``).

    Curves of each test-covariate set scored by chapter 6's :func:`~cmrkit.chapters.cond_ldm4d.curve_statistics`:
    physiological (ES in 25-55 % of the cycle and LVEF in the real cohort's range), ED at frame 0, roughness
    within the cohort's 95th percentile. Diversity (:func:`collapse_flags`): the within-set spread of the ED
    images of one sequence per test subject against the real test subjects', and the LVEDV sd of the
    population set against the real cohort's -- a conditional GAN that collapses shows it here."""
    from ..clinical import sequence_phenotypes
    from . import cond_ldm4d

    data = ch6.data
    real_all = sequence_phenotypes(data.labels, data.spacing)
    ef = cond_ldm4d.cohort_ef_range(real_all)
    rough_hi = float(np.nanpercentile(cond_ldm4d.curve_statistics(data.labels, data.spacing, ef)["roughness"], 95))
    te = data.index("test")
    sets = {"real test": (data.labels[te], data.spacing[te])}
    sets.update({k: (v.arrays["labels"], data.reference_spacing) for k, v in _models6(ch6).items()})
    rows: list[TableRow] = []
    physio: dict[str, float] = {}
    for who, (lab, sp) in sets.items():
        st = cond_ldm4d.curve_statistics(lab, sp, ef)
        curve = cond_ldm4d.curve_rows(who, st, rough_hi, note="chapter 6 bar: >= 90 %")
        physio[who] = curve[0].value
        rows += curve
        rows.append(TableRow.summary(who, "LVEF", st["LVEF"], units="%"))
    # diversity: one sequence per test subject (distinct covariates), ED images; LVEDV spread of the population
    per = int(ch6.samples.meta.get("samples_per_condition", 1))
    real_ed = data.images[te][..., 0]
    real_spread = _spread(real_ed, len(te))
    sd_real = float(real_all["LVEDV"].std(ddof=1))
    flags: dict[str, list[str]] = {}
    pops = _models6(ch6, population=True)
    for label, ss in _models6(ch6).items():
        kept = list(ss.meta.get("image_frames") or range(data.frames))
        ed = np.asarray(ss.arrays["image"][::per, ..., kept.index(0)], np.float32)
        spread = _spread(ed, len(te)) / real_spread if real_spread > 0 else math.nan
        sd_ratio = float(sequence_phenotypes(pops[label].arrays["labels"], data.reference_spacing)["LVEDV"].std(ddof=1))
        sd_ratio = sd_ratio / sd_real if sd_real > 0 else math.nan
        flags[label] = collapse_flags(spread, sd_ratio) + missing_structures(
            pops[label].arrays["labels"], cond_ldm4d.STRUCTURES, what="sequences"
        )
        rows.append(TableRow(label, "spread vs real test (ED images)", spread, n=len(ed)))
        rows.append(TableRow(label, "LVEDV sd / real cohort sd (population set)", sd_ratio, n=len(pops[label])))
        note = f"{label} collapsed: " + "; ".join(flags[label]) if flags[label] else ""
        rows.append(TableRow(label, "collapsed (1 = yes)", float(bool(flags[label])), note=note))
    table = rep.save_table(
        "baselines_ch6_temporal",
        rows,
        notes=[
            f"LV blood-pool volume per frame from the masks (T = {data.frames}, frame 0 = ED), scored by "
            "cmrkit.chapters.cond_ldm4d.curve_statistics: ES phase = frame of minimal LV volume / T; physiological = "
            f"ES phase in [0.25, 0.55] and LVEF in the real cohort's range [{ef[0]:.1f}, {ef[1]:.1f}] %; roughness = "
            f"mean |second difference| / LVEDV, cohort 95th percentile {rough_hi:.4f}.",
            f"Diversity: 'spread' = median nearest-neighbour distance between the ED images of one sequence per test "
            f"subject (two halves of {len(te)}) over the same for the real test subjects; LVEDV sd of the population "
            f"set over the real cohort's. Collapsed when spread < {COLLAPSE_SPREAD} or the sd ratio < "
            f"{COLLAPSE_PHENOTYPE_SD}.",
        ],
    )
    return {"table": table, "physiological": physio, "flags": flags}


# =============================================================================================== summary
def _cell(df: pd.DataFrame, row: str, metric: str) -> float:
    hit = df[(df["row"] == row) & (df["metric"] == metric)]
    return float(hit["value"].iloc[0]) if len(hit) else math.nan


def summary(
    cfg: Any,
    rep: Report,
    ch5: Chapter5 | None = None,
    ch6: Chapter6 | None = None,
    *,
    t51: pd.DataFrame | None = None,
    checks5: Mapping[str, Any] | None = None,
    effects: Mapping[str, Any] | None = None,
    recovery: Mapping[str, Any] | None = None,
    cf: Mapping[str, Any] | None = None,
    temporal: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Table ``baselines_summary``: for each question the comparison answers, every model's number and the
    best one (``note`` "best"), then the verdicts as sentences (returned; the notebook prints them): the best
    model per question and every failure the numbers show (a collapsed set, covariate effects not learned,
    counterfactuals in the wrong direction, implausible volume curves)."""
    rows: list[TableRow] = []
    verdicts: list[str] = []

    def question(name: str, values: Mapping[str, float], lower: bool, units: str = "") -> None:
        finite = {k: v for k, v in values.items() if math.isfinite(v)}
        best = (min if lower else max)(finite, key=finite.get) if finite else None
        for k, v in values.items():
            rows.append(TableRow(name, k, v, units=units))
        how = "lower is better" if lower else "higher is better"
        if best is not None:
            verdicts.append(f"{name}: best {best} ({finite[best]:.3g}{units and ' ' + units}; {how})")
        else:
            verdicts.append(f"{name}: no model has a finite value")

    if ch5 is not None and t51 is not None:
        labels5 = ["LDM", *[lab for _, lab, _ in MODELS5]]
        question("ch5: FID (Table 5.1)", {k: _cell(t51, k, "FID") for k in labels5}, True)
        question("ch5: improved recall (Table 5.1)", {k: _cell(t51, k, "IR") for k in labels5}, False)
        if checks5 is not None:
            c = checks5["table"]
            question("ch5: valid anatomy", {k: _cell(c, k, "valid anatomy (%)") for k in labels5}, False, "%")
            question("ch5: mask-image Dice", {k: _cell(c, k, "mask-image Dice") for k in labels5}, False)
            question(
                "ch5: W1 LVEDV / cohort sd", {k: _cell(c, k, "W1 LVEDV vs test / cohort sd") for k in labels5}, True
            )
            for k, flags in checks5["flags"].items():
                if flags:
                    verdicts.append(f"FAILURE ch5 {k}: collapsed -- " + "; ".join(flags))
    if ch6 is not None:
        labels6 = ["LDM", *[lab for _, lab, _ in MODELS6]]
        t61 = ch6.tables.get("table_6_1")
        if t61 is not None:
            question("ch6: FID (Table 6.1)", {k: _cell(t61, k, "FID") for k in labels6}, True)
        t62 = ch6.tables.get("table_6_2")
        if t62 is not None:
            question(
                "ch6: |real - synthetic| LVEDV (Table 6.2)", {k: _cell(t62, k, "LVEDV") for k in labels6}, True, "mL"
            )
        if effects is not None and effects.get("scores"):
            sc = effects["scores"]
            question("ch6: covariate effects, RMSE vs true", {k: sc[k]["rmse"] for k in labels6 if k in sc}, True)
            question("ch6: bar effects met (of 4)", {k: sc[k]["bar"] for k in labels6 if k in sc}, False)
            for k in labels6:
                if k in sc and sc[k]["bar"] == 0:
                    verdicts.append(f"FAILURE ch6 {k}: none of the four bar effects learned (sign and ±50 %)")
        if recovery is not None:
            question(
                "ch6: condition recovery, mean R²", {k: recovery["mean_r2"].get(k, math.nan) for k in labels6}, False
            )
        if cf is not None and cf.get("direction"):
            d = cf["direction"]
            question("ch6: counterfactual LVEDV direction right", {k: d.get(k, math.nan) for k in labels6}, False, "%")
            for k in labels6:
                if math.isfinite(d.get(k, math.nan)) and d[k] < 90:
                    verdicts.append(f"FAILURE ch6 {k}: counterfactual LVEDV direction right in {d[k]:.0f} % (< 90 %)")
        if temporal is not None:
            p = temporal["physiological"]
            question("ch6: physiological volume curves", {k: p.get(k, math.nan) for k in labels6}, False, "%")
            for k in labels6:
                if math.isfinite(p.get(k, math.nan)) and p[k] < 90:
                    verdicts.append(f"FAILURE ch6 {k}: {p[k]:.0f} % physiological volume curves (< 90 %)")
            for k, fl in temporal.get("flags", {}).items():
                if fl:
                    verdicts.append(f"FAILURE ch6 {k}: collapsed -- " + "; ".join(fl))
    if not rows:
        raise ValueError("summary: nothing to summarise (pass the chapter-5 and/or chapter-6 results)")
    table = rep.save_table(
        "baselines_summary",
        rows,
        notes=[
            "Each question's numbers for every model, from the tables above (Table 5.1, 6.1, 6.2 and the kit's "
            "checks); the notes below name the best model of each question and every failure the numbers show.",
            *verdicts,
            f"Profile {cfg.profile}"
            + (": smoke sizes, the numbers mean nothing" if cfg.profile == "smoke" else "")
            + "; the thesis' models were trained on UK Biobank for much longer.",
        ],
    )
    return {"table": table, "verdicts": verdicts}


# =============================================================================================== dry run
def dry_runs(cfg: Any) -> list[Any]:
    """One :class:`cmrkit.chapters.DryRun` per baseline at ``cfg``'s sizes (the chapter contract): build it
    on the CPU, one training step on a batch of 1 random volume / sequence (the GANs: one discriminator and
    one generator step through :func:`cmrkit.train.fit`'s adversarial loop) and one sampling step."""
    from . import DryRun

    c5, c6 = cfg.ch5, cfg.ch6
    shape5 = (*(int(v) for v in c5.image_size), int(c5.slices))
    shape6 = (*(int(v) for v in c6.image_size), int(c6.slices), int(c6.frames))
    from ..models.conditioning import COVARIATES

    names = [str(v) for v in c6.conditions]
    f = sum(1 if c.continuous else len(c.levels) for c in COVARIATES if c.name in names)
    out = []
    for shape, chapter, models, cond in ((shape5, 5, MODELS5, 0), (shape6, 6, MODELS6, f)):
        mcfg = baseline_config(cfg, chapter, shape, cond_dim=cond)
        for _name, label, kind in models:
            crit = "least_squares" if chapter == 5 else str(cfg.baselines.cgan_loss)
            out.append(
                DryRun(
                    CHAPTER,
                    label,
                    json.dumps(
                        {"kind": kind, "crit": crit if kind == "gan" else None, **mcfg.to_dict()}, sort_keys=True
                    ),
                    {"train_loss": (1,), "image": (1, *shape), "labels": (1, *shape)},
                    lambda cfg=cfg, kind=kind, mcfg=mcfg, crit=crit, shape=shape: _dry_run(
                        cfg, kind, mcfg, crit, shape
                    ),
                )
            )
    return out


def _dry_run(cfg: Any, kind: str, mcfg: Any, criterion: str, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    import torch

    from ..models.baselines import SequenceDataset, generate
    from ..train import fit

    rng = np.random.default_rng(0)
    img = rng.random((1, *shape), dtype=np.float32)
    lab = rng.integers(0, 4, (1, *shape)).astype(np.uint8)
    feats = rng.standard_normal((1, mcfg.cond_dim)).astype(np.float32) if mcfg.cond_dim else None
    loss_fn, adv = _losses(cfg, kind, criterion)
    model = _build(kind, mcfg, 0)
    res = fit(
        model,
        SequenceDataset(img, lab, feats),
        None,
        loss_fn=loss_fn,
        epochs=1,
        batch_size=1,
        lr=1e-4,
        adversarial=adv,
        keep="last",
        device="cpu",
        seed=0,
        progress=False,
        amp="none",
    )
    with torch.no_grad():
        g_img, g_lab = generate(res.model, [1], feats, batch_size=1, device="cpu")
    return {"train_loss": np.array([res.history[-1]["train_loss"]]), "image": g_img, "labels": g_lab}


# =============================================================================================== all
def run_all(cfg: Any, rep: Report, *, interactive: bool = False, progress: bool = False) -> dict[str, Any]:
    """Every step of the chapter (what ``cmrkit run baselines`` executes); ``interactive`` changes nothing
    here (the figures are static)."""
    ch5 = chapter5_inputs(cfg, progress=progress)
    m5 = train_chapter5(cfg, ch5, progress=progress)
    generate_chapter5(cfg, ch5, m5)
    t51 = table_5_1(cfg, rep, ch5)
    checks5 = chapter5_checks(cfg, rep, ch5, progress=progress)
    ch6 = chapter6_inputs(cfg, progress=progress)
    m6 = train_chapter6(cfg, ch6, progress=progress)
    generate_chapter6(cfg, ch6, m6)
    training_curves(rep, {**m5, **m6})
    tables_6(cfg, rep, ch6)
    chapter6_montage(cfg, rep, ch6)
    effects = covariate_effects(cfg, rep, ch6)
    recovery = condition_recovery(cfg, rep, ch6)
    cf = counterfactuals(cfg, rep, ch6, m6)
    temporal = temporal_plausibility(cfg, rep, ch6)
    summ = summary(
        cfg, rep, ch5, ch6, t51=t51, checks5=checks5, effects=effects, recovery=recovery, cf=cf, temporal=temporal
    )
    return {
        "ch5": ch5,
        "ch6": ch6,
        "models": {**m5, **m6},
        "table_5_1": t51,
        "checks5": checks5,
        "effects": effects,
        "recovery": recovery,
        "counterfactuals": cf,
        "temporal": temporal,
        "summary": summ,
    }
