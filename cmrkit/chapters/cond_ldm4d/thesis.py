"""Chapter 6 as the thesis reports it: the autoencoder table and Fig 6.3, Tables 6.1-6.5 and Figs 6.2, 6.4-6.6."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ...clinical import sequence_phenotypes
from ...report import Report, TableRow
from ...runs import SampleSet
from .data import BASELINES, PHENOTYPES, STRUCTURES, SequenceData, Trained
from .generation import eval_frames, frame_slices, guidance_weight, reconstruct


def autoencoder_table(cfg: Any, rep: Report, data: SequenceData, model: Any, *, split: str = "test") -> pd.DataFrame:
    """Reconstruction of the test sequences (table ``ch6_autoencoder``, figure ``fig_6_3``).

    Per sequence, over all frames: SSIM (per 2D slice, 11-tap Gaussian window) and PSNR on [0, 1]
    intensities; myocardial Dice, Hausdorff distance (maximum, mm) and ASSD (mm) of the decoded mask,
    each per 3D frame and averaged over the frames. Thesis: 0.89 / 29.57 / 0.95 / 8.26 / 1.69.
    """
    from ...figures import show
    from ...metrics import assd, dice, hausdorff, psnr, ssim

    idx = data.index(split)
    rec_i, rec_l = reconstruct(model, data.images[idx], data.labels[idx], device=cfg.device)
    n, x, y, z, t = rec_i.shape
    s = np.asarray(ssim(frame_slices(rec_i), frame_slices(data.images[idx]), data_range=1.0))
    p = np.asarray(psnr(rec_i[:, None], data.images[idx][:, None], data_range=1.0))
    frames_pred = np.moveaxis(rec_l, 4, 1).reshape(n * t, x, y, z)
    frames_ref = np.moveaxis(data.labels[idx], 4, 1).reshape(n * t, x, y, z)
    sp = data.reference_spacing
    d = np.asarray(dice(frames_pred, frames_ref, labels=[2], spatial_dims=3, strict=False), dtype=float).reshape(n, t)
    hd = np.asarray(hausdorff(frames_pred, frames_ref, labels=[2], spacing=sp, strict=False), dtype=float).reshape(n, t)
    sd = np.asarray(assd(frames_pred, frames_ref, labels=[2], spacing=sp, strict=False), dtype=float).reshape(n, t)
    d_all = np.asarray(dice(frames_pred, frames_ref, labels=list(STRUCTURES), spatial_dims=3), dtype=float)
    d_all = d_all.reshape(n, t, -1)
    rows = [
        TableRow.summary(f"autoencoder/{split}", "SSIM", s, thesis_key=("SSIM",)),
        TableRow.summary(f"autoencoder/{split}", "PSNR", p, units="dB", thesis_key=("PSNR",)),
        TableRow.summary(f"autoencoder/{split}", "Dice Myo", np.nanmean(d, axis=1), thesis_key=("Dice_myo",)),
        TableRow.summary(f"autoencoder/{split}", "HD Myo", np.nanmean(hd, axis=1), units="mm", thesis_key=("HD",)),
        TableRow.summary(f"autoencoder/{split}", "ASSD Myo", np.nanmean(sd, axis=1), units="mm", thesis_key=("ASSD",)),
    ]
    for j, name in enumerate(STRUCTURES.values()):
        if name != "Myo":
            rows.append(
                TableRow.summary(
                    f"autoencoder/{split}", f"Dice {name}", np.nanmean(d_all[..., j], axis=1), thesis_key=("-",)
                )
            )
    df = rep.save_table(
        "ch6_autoencoder",
        rows,
        notes=[
            f"{split} split, {n} sequences of {data.shape} voxels (X, Y, Z, T); reconstruction = decoder(latent mean) "
            "of every frame. SSIM per 2D slice (11-tap Gaussian window) and PSNR per sequence on [0, 1] intensities; "
            "Dice, Hausdorff distance (maximum) and ASSD of the myocardium per 3D frame in mm, averaged over the "
            "frames of a sequence; mean ± sd over sequences.",
            f"Latent per frame {model.config.latent_shape[1]} x {model.config.latent_shape[2]} x 1 x "
            f"{model.config.latent_shape[0]} (thesis 16 x 16 x 1 x 1 per frame), sequence latent "
            f"{model.latent_shape[0]} x {model.latent_shape[1]} x {model.latent_shape[2]} "
            "(frames stacked on channels).",
            "The thesis value is on UK Biobank at 128 x 128 x 10 x 50; this run's voxel grid and data set are named "
            "above.",
        ],
    )
    fig = _figure_6_3(data, idx, rec_i, rec_l, s)
    rep.save_figure(
        fig, "fig_6_3", caption="Myocardial masks of test sequences and of their autoencoder reconstructions"
    )
    show(fig)
    return df


def _figure_6_3(data: SequenceData, idx: np.ndarray, rec_i: np.ndarray, rec_l: np.ndarray, s: np.ndarray) -> Any:
    import matplotlib.pyplot as plt

    order = np.argsort(s)
    picks = [int(order[len(order) // 2]), int(order[0])] if len(order) > 1 else [0]
    ph = sequence_phenotypes(data.labels[idx[picks]], data.reference_spacing)
    fig, axes = plt.subplots(len(picks) * 2, 2, figsize=(5.6, 2.9 * len(picks) * 2), squeeze=False)
    for r, (j, es) in enumerate(zip(picks, ph["ES_frame"].astype(int))):
        i = int(idx[j])
        zmid = data.shape[2] // 2
        for c, (f, fname) in enumerate(((0, "ED"), (es, "ES"))):
            for k, (img, lab, who) in enumerate(
                ((data.images[i], data.labels[i], "test"), (rec_i[j], rec_l[j], "reconstruction"))
            ):
                ax = axes[2 * r + k, c]
                ax.imshow(img[:, :, zmid, f].T, cmap="gray", vmin=0, vmax=1)
                ax.contour((lab[:, :, zmid, f] == 2).T.astype(float), levels=[0.5], colors=["#2ca02c"], linewidths=1.0)
                ax.set_title(f"{data.subject[i]} {who}, {fname} (mid slice)", fontsize=7)
                ax.set_xticks([])
                ax.set_yticks([])
    fig.suptitle(
        "Myocardium (green contour): test sequences and their reconstructions\n(median and lowest SSIM)", fontsize=8
    )
    fig.tight_layout()
    return fig


# =============================================================================================== Tables 6.1-6.5
def feature_extractors(cfg: Any) -> dict[str, Any]:
    """``{"FID": extractor, "FRD": extractor}``; without local weights both fall back to the offline
    extractor (the tables say which network was used)."""
    import warnings

    from ...metrics import get_extractor

    out = {}
    for metric, kind in (("FID", "fid"), ("FRD", "frd")):
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            out[metric] = get_extractor(kind, fallback=True, seed=int(cfg.seed), device=cfg.device)
    return out


class FeatureCache:
    """Per-slice features of named image sets per extractor, computed once."""

    def __init__(self, extractors: Mapping[str, Any]):
        self.extractors = dict(extractors)
        self._cache: dict[tuple[str, str], np.ndarray] = {}

    def get(self, metric: str, name: str, slices: np.ndarray) -> np.ndarray:
        key = (self.extractors[metric].name, name)
        if key not in self._cache:
            self._cache[key] = self.extractors[metric].extract(slices, data_range=1.0)
        return self._cache[key]


def _subsample(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    if len(x) <= k:
        return x
    return x[np.sort(np.random.default_rng(seed).choice(len(x), size=k, replace=False))]


def _ms_ssim_kwargs(size: int, kernel: int = 7) -> dict[str, Any]:
    """MS-SSIM scales that fit a ``size``-pixel slice with a ``kernel``-tap window (MONAI needs
    ``size // (M-1)**2 > kernel - 1``): 5 (Wang et al.) where possible, fewer otherwise."""
    from ...metrics.image import MS_SSIM_WEIGHTS

    for m in range(len(MS_SSIM_WEIGHTS), 1, -1):
        if size // (m - 1) ** 2 > kernel - 1:
            return {"weights": MS_SSIM_WEIGHTS[:m], "kernel_size": kernel}
    return {"weights": MS_SSIM_WEIGHTS[:1], "kernel_size": kernel}


def subject_index(data: SequenceData, samples: SampleSet) -> np.ndarray:
    """Index into ``data`` of the real subject whose covariates each sample was generated for:
    ``meta["subjects"]`` when present, else the test subject with identical covariates (-1: none)."""
    subjects = samples.meta.get("subjects")
    pos = {s: i for i, s in enumerate(data.subject)}
    if subjects is not None:
        return np.array([pos.get(str(s), -1) for s in subjects])
    names = list(samples.meta.get("condition_names", data.covariates.columns))
    te = data.index("test")
    ref = data.covariates.iloc[te][names].to_numpy(float)
    out = np.full(len(samples), -1)
    for k, row in enumerate(np.asarray(samples.conditions, float)):
        hit = np.flatnonzero(np.all(np.isclose(ref, row[None, :], atol=1e-6), axis=1))
        if hit.size:
            out[k] = te[hit[0]]
    return out


def sample_specs(data: SequenceData, image_frames: int | None = None) -> dict[str, Any]:
    """The bad-sample guard of a generated set on ``data``'s grid (:func:`cmrkit.runs.check_samples`):
    labels ``(X, Y, Z, T)`` with codes 0..3 and images in the data's range [0, 1], ``(X, Y, Z, F)`` when
    only ``image_frames = F`` frames are kept (``None``: no image check)."""
    from ...runs import ArraySpec

    x, y, z, t = data.shape
    specs: dict[str, Any] = {"labels": ArraySpec((x, y, z, t), 0.0, float(max(STRUCTURES)), integer=True)}
    if image_frames is not None:
        specs["image"] = ArraySpec((x, y, z, int(image_frames)), 0.0, 1.0)
    return specs


def _baseline_set(cfg: Any, name: str, data: SequenceData) -> tuple[SampleSet | None, str]:
    """The newest complete baseline sample set of notebook 04 made with this seed and data folder, after the
    bad-sample guard, or None with the reason (shown in the table).

    Expected: a :class:`~cmrkit.runs.SampleSet` in chapter ``baselines`` named ``name`` with ``labels``
    ``(N, X, Y, Z, T)`` on this chapter's grid, ``image`` at the frames of ``meta["image_frames"]`` (all
    frames when absent), ``conditions`` in the covariate order of ``meta["condition_names"]`` and
    ``meta["subjects"]`` (the test subject of each sample).
    """
    from ...runs import check_samples, latest_run

    man = latest_run(cfg, "baselines", name)
    if man is None:
        return None, "not run yet (notebook 04)"
    folder = man["folder"]
    try:
        ss = SampleSet.load(folder)
        frames = ss.meta.get("image_frames") or list(range(data.frames))
        check_samples(ss, sample_specs(data, len(frames)), where=f"sample set in {folder}")
    except (FileNotFoundError, ValueError) as exc:
        return None, f"refused: {exc}"
    if ss.conditions is None:
        return None, f"sample set in {folder} has no conditions"
    return ss, f"{len(ss)} samples from {folder}"


def _image_frames_of(samples: SampleSet, frames: Sequence[int]) -> np.ndarray:
    """The images of ``samples`` at ``frames`` (from its ``image_frames`` or a full sequence)."""
    img = samples.arrays["image"]
    kept = list(samples.meta.get("image_frames", range(img.shape[-1])))
    if len(kept) != img.shape[-1]:
        kept = list(range(img.shape[-1]))
    missing = [f for f in frames if f not in kept]
    if missing:
        raise ValueError(f"sample set lacks the images of frames {missing} (has {kept})")
    return np.asarray(img[..., [kept.index(f) for f in frames]], dtype=np.float32)


def _fidelity(
    cfg: Any, name: str, gen: np.ndarray, subj: np.ndarray, data: SequenceData, frames: list[int], cache: FeatureCache
) -> dict[str, float]:
    """Table 6.1 metrics of generated images ``gen`` (N, X, Y, Z, F) made for real subjects ``subj``."""
    from ...metrics import frechet_distance, mean_similarity_to_reference, mmd, precision_recall

    seed = int(cfg.seed)
    te = data.index("test")
    real = frame_slices(data.images[te], frames)
    g = frame_slices(gen)
    out: dict[str, float] = {}
    for metric in ("FID", "FRD"):
        out[metric] = frechet_distance(cache.get(metric, "real test", real), cache.get(metric, name, g))
    fr, fg = cache.get("FRD", "real test", real), cache.get("FRD", name, g)
    pr = precision_recall(fr, fg, k=3)
    out["IP"], out["IR"] = float(pr.precision), float(pr.recall)
    out["MMD"] = float(mmd(_subsample(fr, 2000, seed), _subsample(fg, 2000, seed + 1)))
    ok = subj >= 0
    ref = frame_slices(data.images[subj[ok]], frames)
    n_pairs = int(cfg.ch6.eval_pairs)
    kw = _ms_ssim_kwargs(min(ref.shape[-2:]))
    ms = mean_similarity_to_reference(
        g[ok], ref, metric="ms_ssim", data_range=1.0, n_pairs=n_pairs, rng=seed, device="cpu", **kw
    )
    gr = mean_similarity_to_reference(
        g[ok], ref, metric="gr4_ssim", data_range=1.0, n_pairs=n_pairs, rng=seed, device="cpu"
    )
    out["MS-SSIM"], out["4-G-R SSIM"] = float(ms.mean), float(gr.mean)
    out["_pairs"] = float(len(ms.scores))
    return out


TABLE_6_1_METRICS = ("FID", "FRD", "IP", "IR", "MMD", "MS-SSIM", "4-G-R SSIM")


def table_6_1(
    cfg: Any,
    rep: Report,
    data: SequenceData,
    samples: SampleSet,
    autoencoder: Trained,
    *,
    cache: FeatureCache | None = None,
) -> pd.DataFrame:
    """Table 6.1: FID, FRD, IP, IR, MMD, MS-SSIM and 4-G-R SSIM of the generated test-condition sequences.

    Images of the ``ch6.eval_frames`` frames (from ED) of every sequence; every XY slice is one sample of
    the feature distributions (FID / FRD: Fréchet distance; IP / IR: improved precision / recall, k = 3;
    MMD: Gaussian-kernel MMD² with the median bandwidth, eq. 6.6, on at most 2,000 slices per set).
    MS-SSIM and 4-G-R SSIM are **similarity to the reference** (thesis ch. 6): each generated sequence
    against the real test sequence whose covariates it was generated for, higher = more similar.
    Reference rows bracket them: the real training set scored as if generated, an unrelated real test
    subject as "reference", and the autoencoder's reconstruction of the subject itself (the ceiling).
    """
    from ...metrics import mean_similarity_to_reference
    from ...runs import check_samples

    cache = cache if cache is not None else FeatureCache(feature_extractors(cfg))
    frames = eval_frames(cfg, data.frames)
    check_samples(samples, sample_specs(data, len(samples.meta.get("image_frames") or frames)), where="the LDM's set")
    te, tr = data.index("test"), data.index("train")
    rows: list[TableRow] = []
    subj = subject_index(data, samples)
    res = _fidelity(cfg, "ldm", _image_frames_of(samples, frames), subj, data, frames, cache)
    for m in TABLE_6_1_METRICS:
        rows.append(TableRow("LDM", m, res[m], n=len(samples), thesis_key=("LDM", m)))
    for run_name, label in BASELINES:
        ss, why = _baseline_set(cfg, run_name, data)
        if ss is None:
            for m in TABLE_6_1_METRICS:
                rows.append(TableRow(label, m, math.nan, note=why, thesis_key=(label, m)))
            continue
        b = _fidelity(cfg, run_name, _image_frames_of(ss, frames), subject_index(data, ss), data, frames, cache)
        for m in TABLE_6_1_METRICS:
            rows.append(TableRow(label, m, b[m], n=len(ss), note=why, thesis_key=(label, m)))
    # references
    seed = int(cfg.seed)
    fake = SampleSet({"image": data.images[tr][..., frames]}, np.arange(len(tr)), meta={"image_frames": frames})
    ref_train = _fidelity(cfg, "real train", fake.arrays["image"], tr, data, frames, cache)
    for m in ("FID", "FRD", "IP", "IR", "MMD"):
        rows.append(TableRow("reference: real train vs real test", m, ref_train[m], n=len(tr), thesis_key=("-",)))
    real_te = frame_slices(data.images[te], frames)
    other = np.roll(np.arange(len(te)), 1)
    kw = _ms_ssim_kwargs(min(real_te.shape[-2:]))
    rec_i, _ = reconstruct(autoencoder.model, data.images[te], data.labels[te], device=cfg.device)
    rec = frame_slices(rec_i, frames)
    for who, a in (
        ("reference: another real test subject", real_te[other]),
        ("reference: autoencoder reconstruction of the subject", rec),
    ):
        ms = mean_similarity_to_reference(a, real_te, metric="ms_ssim", data_range=1.0, rng=seed, device="cpu", **kw)
        gr = mean_similarity_to_reference(a, real_te, metric="gr4_ssim", data_range=1.0, rng=seed, device="cpu")
        rows.append(TableRow(who, "MS-SSIM", float(ms.mean), n=len(te), thesis_key=("-",)))
        rows.append(TableRow(who, "4-G-R SSIM", float(gr.mean), n=len(te), thesis_key=("-",)))
    ext = cache.extractors
    same = ext["FID"].name == ext["FRD"].name
    notes = [
        f"{len(samples)} generated sequences ({int(cfg.ch6.samples_per_condition)} per test subject, guidance "
        f"{guidance_weight(cfg):g}) against the {len(te)} real test sequences; images of frames {frames} "
        "(frame 0 = ED), "
        f"every XY slice one sample ({len(te) * len(frames) * data.shape[2]} real slices).",
        f"FID features: {ext['FID'].name}; FRD (Fréchet ResNet distance) features: {ext['FRD'].name}."
        + (
            " Both fell back to the kit's offline extractor (no Inception-V3 / ResNet50 weights found; set "
            "CMRKIT_FID_WEIGHTS / CMRKIT_FRD_WEIGHTS), so the two columns are the same number and not comparable "
            "with the thesis' values."
            if same
            else ""
        ),
        "IP/IR: improved precision/recall (Kynkäänniemi et al. 2019, k = 3) on the FRD features. MMD: unbiased "
        "Gaussian-kernel MMD² (thesis eq. 6.6, median-heuristic bandwidth) on the FRD features of at most 2,000 "
        "slices per set.",
        f"MS-SSIM and 4-G-R SSIM: SIMILARITY TO THE REFERENCE (thesis Table 6.1's definition; HIGHER = MORE "
        f"SIMILAR): each generated sequence against the real test sequence whose covariates it was generated for, "
        f"per XY slice of the scored frames, {int(res['_pairs'])} random (sample, subject) pairs. Not chapter 5's "
        f"diversity. MS-SSIM with {len(kw['weights'])} scales and a 7-tap window (what fits {data.shape[1]} pixels); "
        "4-G-R SSIM = 4-G-r* (cmrkit.metrics.image.gr4_ssim).",
        "Reference rows: the real training sequences scored as if generated (what a perfect generator reaches with "
        "this many samples); an unrelated real test subject as the 'reference' (what similarity means without "
        "conditioning); the autoencoder's reconstruction of the subject itself (the ceiling of a latent model).",
    ]
    return rep.save_table("table_6_1", rows, notes=notes)


def _phenotype_differences(data: SequenceData, samples: SampleSet) -> tuple[pd.DataFrame, np.ndarray]:
    """|real - synthetic| per sample and phenotype, and the subject index of each sample."""
    subj = subject_index(data, samples)
    ok = subj >= 0
    gen = sequence_phenotypes(samples.arrays["labels"][ok], data.reference_spacing)
    real = sequence_phenotypes(data.labels[subj[ok]], data.spacing[subj[ok]])
    keys = [k for k, _ in PHENOTYPES]
    return (gen[keys] - real[keys]).abs().reset_index(drop=True), subj[ok]


def table_6_2(cfg: Any, rep: Report, data: SequenceData, samples: SampleSet) -> pd.DataFrame:
    """Table 6.2: |real - synthetic| LVEDV, LVESV, RVEDV, RVESV and LVM, every generated sequence against
    the real test subject whose covariates it was generated for (mean ± sd over all pairs).

    References: a real test subject against another real test subject (what covariates-blind generation
    scores) and, on the phantom, the true covariate model's own draws under the subject's covariates
    (the floor a perfect conditional generator reaches: a real heart differs from the expected heart of
    its covariates by its own residual).
    """
    rows: list[TableRow] = []
    d, _ = _phenotype_differences(data, samples)
    n_per = int(samples.meta.get("samples_per_condition", 1))
    for key, units in PHENOTYPES:
        rows.append(TableRow.summary("LDM", key, d[key], units=units, thesis_key=("LDM", key)))
    for run_name, label in BASELINES:
        ss, why = _baseline_set(cfg, run_name, data)
        if ss is None:
            for key, units in PHENOTYPES:
                rows.append(TableRow(label, key, math.nan, units=units, note=why, thesis_key=(label, key)))
            continue
        db, _ = _phenotype_differences(data, ss)
        for key, units in PHENOTYPES:
            rows.append(TableRow.summary(label, key, db[key], units=units, note=why, thesis_key=(label, key)))
    te = data.index("test")
    real = sequence_phenotypes(data.labels[te], data.spacing[te])
    other = real.iloc[np.roll(np.arange(len(te)), 1)].reset_index(drop=True)
    for key, units in PHENOTYPES:
        rows.append(
            TableRow.summary(
                "reference: another real test subject",
                key,
                (real[key] - other[key]).abs(),
                units=units,
                thesis_key=("-",),
            )
        )
    notes = [
        f"{len(te)} real test subjects x {n_per} generated sequences each (thesis: 50); |real - synthetic| per pair, "
        "mean ± sd over all pairs. Phenotypes from the masks on the ROI grid: ED = frame 0, ES = frame of minimal LV "
        "volume, LVM = ED myocardium x 1.05 g/mL (cmrkit.clinical.sequence_phenotypes), the same for real "
        "and generated sequences.",
        "Reference row: each real test subject against another (covariate-blind), the level a generator that ignored "
        "the covariates would reach.",
    ]
    if cfg.dataset == "phantom":
        floor = _true_model_floor(data, te, n_per=max(n_per, 20), seed=int(cfg.seed))
        for key, units in PHENOTYPES:
            row = "reference: phantom's true model"
            rows.append(TableRow.summary(row, key, floor[key], units=units, thesis_key=("-",)))
        notes.append(
            "Reference 'phantom's true model': the phantom's covariate -> phenotype model (phenotype_model.yaml) drawn "
            "under each test subject's covariates against the subject's own targets: the floor of a perfect "
            "conditional generator (the residual a heart has beyond its covariates)."
        )
    return rep.save_table("table_6_2", rows, notes=notes)


_TARGET_COLUMNS = {"LVEDV": "lvedv_ml", "LVESV": "lvesv_ml", "RVEDV": "rvedv_ml", "RVESV": "rvesv_ml", "LVM": "lvm_g"}


def _true_model_floor(data: SequenceData, idx: np.ndarray, *, n_per: int, seed: int) -> pd.DataFrame:
    """|y - y'| between two independent draws of the phantom's model under each subject's covariates."""
    from ...phantom.covariates import bsa_mosteller, load_phenotype_model, phenotype_targets

    model = load_phenotype_model()
    rng = np.random.default_rng([seed, 63])
    rows = []
    for i in idx:
        cov = {k: float(v) for k, v in data.covariates.iloc[int(i)].items()}
        cov["bsa"] = float(bsa_mosteller(cov["height_cm"], cov["weight_kg"]))
        for _ in range(n_per):
            a, b = phenotype_targets(cov, rng, model), phenotype_targets(cov, rng, model)
            rows.append({k: abs(a[c] - b[c]) for k, c in _TARGET_COLUMNS.items()})
    return pd.DataFrame(rows)


def _distances(real: pd.DataFrame, gen: pd.DataFrame, cfg: Any) -> dict[str, dict[str, Any]]:
    """KL and W1 per phenotype; ``None`` where undefined, with the reason under ``"why"``.

    W1 is defined for any two non-empty samples (also a point mass: a set whose masks all lack the structure
    sits at 0); the KDE behind KL needs two non-constant samples of at least 2 values.
    """
    from ...metrics import kl_divergence, wasserstein

    nb, seed = int(cfg.ch6.bootstrap), int(cfg.seed)
    out: dict[str, dict[str, Any]] = {}

    def estimate(fn: Any, p: np.ndarray, q: np.ndarray) -> Any:
        try:  # a bootstrap resample of a tiny sample can be constant (no KDE): then no interval
            return fn(p, q, n_boot=nb, rng=seed) if nb >= 2 and min(p.size, q.size) >= 5 else fn(p, q)
        except ValueError:
            return fn(p, q)

    for key, _ in PHENOTYPES:
        p, q = real[key].to_numpy(float), gen[key].to_numpy(float)
        p, q = p[np.isfinite(p)], q[np.isfinite(q)]
        res: dict[str, Any] = {"KL": None, "WD": None, "why": ""}
        if p.size < 1 or q.size < 1:
            res["why"] = f"no finite {key} values (real {p.size}, generated {q.size})"
        else:
            res["WD"] = estimate(wasserstein, p, q)
            if q.size >= 2 and np.std(q) == 0:
                res["why"] = f"KL undefined: every generated {key} is {q[0]:.3g} (a point mass has no density)"
            elif p.size < 2 or q.size < 2 or np.std(p) == 0:
                res["why"] = f"KL undefined: a sample is constant or has fewer than 2 values ({p.size}, {q.size})"
            else:
                res["KL"] = estimate(kl_divergence, p, q)
        out[key] = res
    return out


def _dist_row(row: str, key: str, est: Any, units: str, n: int, note: str = "", thesis: bool = True) -> TableRow:
    if est is None:
        return TableRow(
            row,
            key,
            math.nan,
            units=units,
            note=note or "undefined (constant or too few values)",
            thesis_key=None if thesis else ("-",),
        )
    if hasattr(est, "low"):
        sd = (est.high - est.low) / (2 * 1.959964)
        return TableRow(row, key, est.value, sd, n=n, units=units, note=note, thesis_key=None if thesis else ("-",))
    return TableRow(row, key, float(est), n=n, units=units, note=note, thesis_key=None if thesis else ("-",))


def tables_6_3_6_4(cfg: Any, rep: Report, data: SequenceData, samples: SampleSet) -> dict[str, pd.DataFrame]:
    """Tables 6.3 (KL divergence) and 6.4 (Wasserstein-1 distance) between the real test phenotypes and
    the phenotypes of the sequences generated for the test subjects' covariates, **as computed** here
    (the thesis printed Table 6.2's numbers in both; see the anomaly note).

    ``KL(real || generated)`` in nats from Gaussian KDEs (Scott's bandwidth; eq. 6.8) and ``W1`` in mL / g
    (eq. 6.9), each with a percentile bootstrap over ``ch6.bootstrap`` resamples (± = half the 95 %
    interval / 1.96). Reference row: real training vs real test phenotypes (the finite-sample floor).
    """
    te, tr = data.index("test"), data.index("train")
    real = sequence_phenotypes(data.labels[te], data.spacing[te])
    train = sequence_phenotypes(data.labels[tr], data.spacing[tr])
    sets: list[tuple[str, pd.DataFrame | None, str, int]] = []
    gen = sequence_phenotypes(samples.arrays["labels"], data.reference_spacing)
    sets.append(("LDM", gen, "", len(gen)))
    for run_name, label in BASELINES:
        ss, why = _baseline_set(cfg, run_name, data)
        if ss is None:
            sets.append((label, None, why, 0))
        else:
            sets.append((label, sequence_phenotypes(ss.arrays["labels"], data.reference_spacing), why, len(ss)))
    rows: dict[str, list[TableRow]] = {"KL": [], "WD": []}
    undefined: dict[str, list[str]] = {"KL": [], "WD": []}
    for label, ph, why, n in sets:
        res = (
            _distances(real, ph, cfg)
            if ph is not None
            else {k: {"KL": None, "WD": None, "why": why} for k, _ in PHENOTYPES}
        )
        for key, units in PHENOTYPES:
            for name, u in (("KL", "nats"), ("WD", units)):
                est = res[key][name]
                if est is None and ph is not None:  # a missing set already says why in its note
                    undefined[name].append(f"{label} {key}: {res[key]['why']}")
                rows[name].append(_dist_row(label, key, est, u, n, why))
    ref = _distances(real, train, cfg)
    for key, units in PHENOTYPES:
        rows["KL"].append(
            _dist_row("reference: real train vs real test", key, ref[key]["KL"], "nats", len(train), thesis=False)
        )
        rows["WD"].append(
            _dist_row("reference: real train vs real test", key, ref[key]["WD"], units, len(train), thesis=False)
        )
    common = [
        f"Real: the {len(te)} test subjects' phenotypes; generated: the {len(gen)} sequences generated for their "
        "covariates. Phenotypes as in Table 6.2.",
        f"± = bootstrap half-width of the 95 % interval / 1.96 ({int(cfg.ch6.bootstrap)} resamples of each sample). "
        "Reference row: real training vs real test subjects, the distance two real samples of these sizes already "
        "have.",
        "The thesis cells of this table repeat Table 6.2's mean absolute differences (mL / g), not divergences; they "
        "are shown as transcribed and are not comparable with this run's values.",
    ]
    t63 = rep.save_table(
        "table_6_3",
        rows["KL"],
        notes=[
            "KL(real || generated) in nats from Gaussian kernel density estimates (Scott's rule), thesis eq. 6.8 "
            "(cmrkit.metrics.kl_divergence).",
            *common,
            *(["'-' cells: " + "; ".join(undefined["KL"])] if undefined["KL"] else []),
        ],
    )
    t64 = rep.save_table(
        "table_6_4",
        rows["WD"],
        notes=[
            "1-D Wasserstein-1 distance in the phenotype's units, thesis eq. 6.9 (cmrkit.metrics.wasserstein).",
            *common,
            *(["'-' cells: " + "; ".join(undefined["WD"])] if undefined["WD"] else []),
        ],
    )
    return {"table_6_3": t63, "table_6_4": t64}


def table_6_5(rep: Report, autoencoder_df: pd.DataFrame, table_6_1_df: pd.DataFrame) -> pd.DataFrame:
    """Table 6.5: the cine generators the thesis compares with (values those papers report, as quoted in
    the thesis; not re-run here) and this run's LDM: autoencoder SSIM / PSNR / myocardial Dice and the FID
    of Table 6.1."""

    def cell(df: pd.DataFrame, row: str, metric: str) -> tuple[float, float | None, int | None]:
        hit = df[(df["row"] == row) & (df["metric"] == metric)]
        if hit.empty:
            return math.nan, None, None
        r = hit.iloc[0]
        return (
            float(r["value"]),
            (None if pd.isna(r["sd"]) else float(r["sd"])),
            (None if pd.isna(r["n"]) else int(r["n"])),
        )

    rows: list[TableRow] = []
    lit = (("TexDC", ("FID",)), ("SADM", ("SSIM", "PSNR")), ("Diffusion Deformable Model", ("PSNR", "Dice")))
    for name, metrics in lit:
        for m in metrics:
            rows.append(
                TableRow(
                    name, m, math.nan, note="reported by the original paper (as quoted in thesis Table 6.5); not re-run"
                )
            )
    ae_row = str(autoencoder_df["row"].iloc[0])
    for m, src in (("SSIM", "SSIM"), ("PSNR", "PSNR"), ("Dice", "Dice Myo")):
        v, sd, n = cell(autoencoder_df, ae_row, src)
        rows.append(TableRow("LDM (this run)", m, v, sd, n=n, thesis_key=("LDM (thesis)", m)))
    v, sd, n = cell(table_6_1_df, "LDM", "FID")
    rows.append(TableRow("LDM (this run)", "FID", v, sd, n=n, thesis_key=("LDM (thesis)", "FID")))
    return rep.save_table(
        "table_6_5",
        rows,
        notes=[
            "Literature rows: the values the thesis quotes from each paper (thesis column); measured on other "
            "data and are not reproduced by the kit.",
            "LDM (this run): SSIM, PSNR and myocardial Dice of the autoencoder reconstruction (table ch6_autoencoder), "
            "as the thesis' Table 6.5 row uses its autoencoder numbers; FID from Table 6.1 (its feature extractor is "
            "named there).",
        ],
    )


# =============================================================================================== figures
def figure_6_2(
    cfg: Any,
    rep: Report,
    data: SequenceData,
    samples: SampleSet,
    autoencoder: Trained,
    diffusion: Trained,
    *,
    n_subjects: int = 3,
    n_columns: int = 10,
) -> None:
    """Fig 6.2: real test sequences (top rows) and the sequences generated for their covariates (bottom
    rows) over the cardiac cycle, mid-ventricular slice, frame 0 = ED; the generated ones are the first
    sample of each subject regenerated from its seed (sampling is deterministic given seed and covariates)."""
    import matplotlib.pyplot as plt

    from ...figures import show
    from ...models.cond_diffusion import generate_sequences

    subj = subject_index(data, samples)
    picks: list[int] = []
    for k, s in enumerate(subj):
        if s >= 0 and s not in [subj[p] for p in picks]:
            picks.append(k)
        if len(picks) == n_subjects:
            break
    names = list(diffusion.model.space.names)
    cond = pd.DataFrame(samples.conditions[picks], columns=names)
    gen = generate_sequences(
        autoencoder.model,
        diffusion.model,
        cond,
        samples.seeds[picks],
        guidance=guidance_weight(cfg),
        ddim_steps=int(cfg.ch6.ddim_steps),
        device=cfg.device,
    )
    t = data.frames
    cols = sorted({int(v) for v in np.round(np.linspace(0, t, min(n_columns, t), endpoint=False)).astype(int)})
    zmid = data.shape[2] // 2
    nrow = 2 * len(picks)
    fig, axes = plt.subplots(nrow, len(cols), figsize=(1.15 * len(cols) + 0.6, 1.2 * nrow + 0.6), squeeze=False)
    for r in range(nrow):
        real = r < len(picks)
        k = r if real else r - len(picks)
        seq = data.images[subj[picks[k]]] if real else gen.images[k]
        for c, f in enumerate(cols):
            ax = axes[r, c]
            ax.imshow(seq[:, :, zmid, f].T, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"t = {f}" + (" (ED)" if f == 0 else ""), fontsize=7)
        cv = cond.iloc[k]
        who = f"real {data.subject[subj[picks[k]]]}" if real else "generated"
        axes[r, 0].set_ylabel(
            f"{who}\n{'M' if cv['sex'] else 'F'} {cv['age']:.0f} y, {cv['weight_kg']:.0f} kg", fontsize=6
        )
    fig.suptitle(
        "Real test sequences (top) and sequences generated for the same covariates (bottom), mid slice", fontsize=8
    )
    fig.tight_layout()
    rep.save_figure(
        fig, "fig_6_2", caption="Real and generated cine sequences over the cardiac cycle for chosen covariates"
    )
    show(fig)


def _kde_panel(ax: Any, x_real: np.ndarray, y_real: np.ndarray, x_gen: np.ndarray, y_gen: np.ndarray) -> None:
    """Filled KDE of the real points (blue) and contour lines of the generated ones (red), same levels."""
    from scipy.stats import gaussian_kde

    xs = np.concatenate([x_real, x_gen])
    ys = np.concatenate([y_real, y_gen])
    xg = np.linspace(xs.min() - 0.05 * np.ptp(xs), xs.max() + 0.05 * np.ptp(xs), 80)
    yg = np.linspace(ys.min() - 0.1 * np.ptp(ys), ys.max() + 0.1 * np.ptp(ys), 80)
    gx, gy = np.meshgrid(xg, yg)
    for xv, yv, kind in ((x_real, y_real, "real"), (x_gen, y_gen, "gen")):
        ok = np.isfinite(xv) & np.isfinite(yv)
        if ok.sum() < 5 or np.std(xv[ok]) == 0 or np.std(yv[ok]) == 0:
            continue
        dens = gaussian_kde(np.vstack([xv[ok], yv[ok]]))(np.vstack([gx.ravel(), gy.ravel()])).reshape(gx.shape)
        if kind == "real":
            ax.contourf(gx, gy, dens, levels=6, cmap="Blues", alpha=0.8)
        else:
            ax.contour(gx, gy, dens, levels=6, cmap="Reds", linewidths=0.9)


def figures_6_4_6_5(cfg: Any, rep: Report, data: SequenceData, population: SampleSet) -> dict[str, pd.DataFrame]:
    """Figs 6.4 and 6.5: kernel density of each phenotype against age (6.4) and weight (6.5), real
    subjects (filled, blue) vs generated sequences (red contours) of the population set."""
    import matplotlib.pyplot as plt

    from ...figures import show

    real = sequence_phenotypes(data.labels, data.spacing)
    gen = sequence_phenotypes(population.arrays["labels"], data.reference_spacing)
    gcov = pd.DataFrame(population.conditions, columns=population.meta["condition_names"])
    for fid, cov, label in (("fig_6_4", "age", "age (years)"), ("fig_6_5", "weight_kg", "weight (kg)")):
        if cov not in gcov.columns:
            continue
        fig, axes = plt.subplots(1, len(PHENOTYPES), figsize=(3.0 * len(PHENOTYPES), 2.9))
        for ax, (key, units) in zip(axes, PHENOTYPES):
            _kde_panel(
                ax,
                data.covariates[cov].to_numpy(float),
                real[key].to_numpy(float),
                gcov[cov].to_numpy(float),
                gen[key].to_numpy(float),
            )
            ax.set_xlabel(label, fontsize=8)
            ax.set_ylabel(f"{key} ({units})", fontsize=8)
            ax.tick_params(labelsize=7)
        axes[0].plot([], [], color="#2f6fb0", lw=6, label=f"real (n={len(real)})")
        axes[0].plot([], [], color="#c0392b", lw=1, label=f"generated (n={len(gen)})")
        axes[0].legend(fontsize=7, frameon=False, loc="upper left")
        fig.suptitle(f"Phenotypes vs {cov}: real subjects (filled) and generated sequences (contours)", fontsize=9)
        fig.tight_layout()
        rep.save_figure(
            fig, fid, caption=f"Kernel density of LVEDV, LVESV, RVEDV, RVESV and LVM against {cov}, real vs generated"
        )
        show(fig)
    return {"real": real, "generated": gen}


def figure_6_6(cfg: Any, rep: Report, data: SequenceData, samples: SampleSet, *, n_sequences: int = 12) -> np.ndarray:
    """Fig 6.6: t-SNE of the latent frames of generated sequences (one point per frame; each frame's
    ``c x X' x Y'`` latent as a vector), coloured by cardiac phase (left) and by the sequence's weight
    (right; lines join consecutive frames of a sequence)."""
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    from ...figures import show

    lat = samples.arrays["latent"]  # (N, X', Y', c, T)
    n = min(int(n_sequences), len(lat))
    per = max(1, len(lat) // n)
    pick = np.arange(0, per * n, per)[:n]
    x = np.moveaxis(lat[pick], 4, 1).reshape(n * lat.shape[-1], -1)
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3.0)))
    emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=int(cfg.seed)).fit_transform(x)
    t = lat.shape[-1]
    emb3 = emb.reshape(n, t, 2)
    names = list(samples.meta["condition_names"])
    w = samples.conditions[pick, names.index("weight_kg")] if "weight_kg" in names else np.arange(n, dtype=float)
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 4.0))
    sc = axes[0].scatter(emb[:, 0], emb[:, 1], c=np.tile(np.arange(t) / t, n), cmap="twilight", s=12)
    fig.colorbar(sc, ax=axes[0], label="cardiac phase (frame / T, 0 = ED)")
    cmap = plt.get_cmap("viridis")
    norm = plt.Normalize(float(w.min()), float(w.max()) if w.max() > w.min() else float(w.min()) + 1)
    for k in range(n):
        axes[1].plot(*np.vstack([emb3[k], emb3[k][:1]]).T, "-", color=cmap(norm(w[k])), lw=0.8, alpha=0.8)
        axes[1].scatter(emb3[k][:, 0], emb3[k][:, 1], color=cmap(norm(w[k])), s=10)
    fig.colorbar(
        plt.cm.ScalarMappable(norm=norm, cmap=cmap),
        ax=axes[1],
        label="weight (kg)" if "weight_kg" in names else "sequence",
    )
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].set_title(f"{n} generated sequences x {t} frames", fontsize=9)
    axes[1].set_title("the same, frames of a sequence joined, coloured by weight", fontsize=9)
    fig.tight_layout()
    rep.save_figure(
        fig, "fig_6_6", caption="t-SNE of the latent frames of generated sequences, by cardiac phase and by weight"
    )
    show(fig)
    return emb
