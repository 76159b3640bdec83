"""Chapter 5 end to end: 3D latent diffusion of short-axis volumes with their masks.

The steps, in the order ``notebooks/02_ldm3d.ipynb`` walks through them (``run_all`` runs them all for
``cmrkit run ldm3d``):

1. :func:`load_volumes` -- the ED frame of every subject with a segmentation (phantom, UK Biobank,
   ACDC or M&Ms layouts through :mod:`cmrkit.io`): resampled in-plane to ``ch5.roi_mm /
   ch5.image_size`` mm, cropped to a ``ch5.image_size`` ROI around the labelled heart, brought to
   ``ch5.slices`` slices (the labelled ones, centred), intensities normalised to [0, 1]
   (:func:`cmrkit.preprocess.prepare_subject`), and stacks ordered base -> apex (flipped when the
   labels show the apex first: the autoencoder treats slice position as a channel). Subjects are
   split train/val/test by ``ch5.split`` (seeded). On the phantom, ``ch5.phantom_subjects > 0`` gives the
   chapter a cohort of its own, rendered at end-diastole only (:func:`volume_folder`).
2. :func:`train_autoencoder` / :func:`autoencoder_table` -- the KL autoencoder over image + mask
   (:mod:`cmrkit.models.autoencoder`, thesis §5.2.1) and its reconstruction quality on the test split
   beside the thesis' SSIM 0.78 / PSNR 23.94 / Dice 0.91; with ``ch5.ae_decoder`` a second stage
   (:func:`finetune_decoder`) trains the decoder alone on perturbed latents, so that it tolerates the
   diffusion model's near-miss latents.
3. :func:`train_diffusion` -- the latent diffusion model (:mod:`cmrkit.models.diffusion`): L1 on the
   noise, ``scale_factor`` over the whole training set, stored with the weights.
4. :func:`generate_samples` -- DDIM sample set of ``max(ch5.n_samples)`` volumes, one seed per sample,
   written as a :class:`cmrkit.runs.SampleSet` (NIfTI-compatible ``(N, X, Y, Z)`` arrays) so notebook 04
   and users can load it; the sets of ``ch5.n_samples`` are its first ``n`` samples.
5. :func:`table_5_1` -- FID, FRD (extractor named), improved precision/recall, MS-SSIM and 4-G-R SSIM
   diversity of the generated volumes against the real test split; the 3D VAE and 3D LSGAN rows come
   from the baselines notebook through :func:`cmrkit.runs.list_runs` (run names ``vae3d`` and
   ``lsgan3d`` of chapter ``baselines``, each holding a :class:`~cmrkit.runs.SampleSet` with ``image``
   and ``labels`` arrays of the same shape as this chapter's).
6. :func:`figure_5_2`, :func:`figure_5_3`, :func:`figure_5_4` -- example volumes with masks, box plots
   of LV/Myo/RV volumes, t-SNE of real and generated features.
7. :func:`generated_checks` -- what the thesis could not check, in a table of its own: anatomical
   validity (:mod:`cmrkit.metrics.anatomy`), mask-image consistency (the kit's segmenter on the
   generated images), phenotype distributions (Wasserstein distances in mL/g and in cohort sd) and
   memorisation (nearest-training distances, closest pairs shown).
8. :func:`sample_browser` -- slice x sample browser (ipywidgets) or its static montage.

Arrays are in the kit's axis order ``(N, X, Y, Z)``; figures show ``(Y, X)`` (row = y). Image
intensities are in [0, 1] everywhere (``data_range = 1``).
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
from ..runs import SampleSet, check_manifest, is_complete, mark_complete, run_dir, run_key

__all__ = [
    "NOTEBOOK",
    "STEPS",
    "STRUCTURES",
    "BASELINES",
    "VolumeData",
    "Trained",
    "load_volumes",
    "volume_folder",
    "phantom_subjects",
    "source_key",
    "split_subjects",
    "decoder_settings",
    "finetune_decoder",
    "autoencoder_config",
    "diffusion_config",
    "train_autoencoder",
    "reconstruct",
    "autoencoder_table",
    "train_diffusion",
    "generate_samples",
    "sample_counts",
    "FeatureCache",
    "feature_cache",
    "evaluate_set",
    "table_5_1",
    "figure_5_2",
    "figure_5_3",
    "figure_5_4",
    "generated_checks",
    "sample_browser",
    "volume_phenotypes",
    "nearest_distances",
    "sample_specs",
    "nearest_mask_distances",
    "train_segmenter",
    "segment_volumes",
    "volume_dice",
    "image_slices",
    "run_all",
]

NOTEBOOK = "02_ldm3d"
CHAPTER = "ldm3d"
#: the step functions in the order the notebook calls them
STEPS = (
    "load_volumes",
    "train_autoencoder",
    "autoencoder_table",
    "train_diffusion",
    "generate_samples",
    "table_5_1",
    "figure_5_2",
    "figure_5_3",
    "figure_5_4",
    "generated_checks",
    "sample_browser",
)
#: label -> name (kit convention)
STRUCTURES = {1: "LV", 2: "Myo", 3: "RV"}
#: Table 5.1 baseline rows: (run name in chapter "baselines", row label)
BASELINES = (("vae3d", "3D VAE"), ("lsgan3d", "3D LSGAN"))
#: phenotypes compared in the checks table and Fig. 5.3: (key, short name, units)
PHENOTYPES = (("LVEDV", "LVV", "mL"), ("LVM", "LVM", "g"), ("RVEDV", "RVV", "mL"))


# =============================================================================================== data
@dataclass
class VolumeData:
    """ED short-axis volumes with their masks on one grid.

    Attributes
    ----------
    images : (N, X, Y, Z) float32 in [0, 1]
    labels : (N, X, Y, Z) uint8 (0 background, 1 LV, 2 Myo, 3 RV)
    subject : (N,) str
    split : (N,) str -- ``train`` / ``val`` / ``test`` (by subject)
    spacing : (N, 3) float -- voxel size (mm) of each volume (in-plane equal for all; slice spacing
        as acquired)
    meta : dict -- ``dropped`` (subject: reason), ``flipped`` (stacks reordered base -> apex),
        ``n_subjects``, ``pixel_mm`` (median in-plane pixel; within a few per cent of ``roi_mm / image_size``
        because the in-plane resampling keeps a whole number of pixels over the field of view)
    """

    images: np.ndarray
    labels: np.ndarray
    subject: np.ndarray
    split: np.ndarray
    spacing: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def index(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.images.shape[1:])  # type: ignore[return-value]

    @property
    def reference_spacing(self) -> tuple[float, float, float]:
        """Voxel size given to generated volumes: the in-plane pixel and the median slice spacing."""
        return tuple(float(v) for v in np.median(self.spacing, axis=0))  # type: ignore[return-value]

    @property
    def reference_affine(self) -> np.ndarray:
        return np.diag([*self.reference_spacing, 1.0])


@dataclass
class Trained:
    """A trained (or reloaded) model of the chapter with its training history and run folder."""

    model: Any
    history: list[dict[str, float]]
    best_epoch: int
    folder: Path


def split_subjects(subjects: Sequence[str], fractions: Sequence[float], seed: int) -> dict[str, str]:
    """Assign subjects to train/val/test with the given fractions (seeded permutation, stream 5).

    Every split gets at least one subject when ``fractions`` gives it a share; fewer than three
    subjects is an error.
    """
    uniq = sorted(set(subjects))
    if len(fractions) != 3 or not np.isclose(sum(fractions), 1.0) or min(fractions) < 0:
        raise ValueError(f"ch5.split must be three fractions (train, val, test) summing to 1, got {list(fractions)}")
    n = len(uniq)
    if n < 3:
        raise ValueError(f"need at least 3 subjects with masks for a train/val/test split, got {n}")
    order = [uniq[i] for i in np.random.default_rng([int(seed), 5]).permutation(n)]
    n_val = max(1, int(round(fractions[1] * n))) if fractions[1] > 0 else 0
    n_test = max(1, int(round(fractions[2] * n)))
    n_train = n - n_val - n_test
    if n_train < 1:
        raise ValueError(f"ch5.split {list(fractions)} leaves no training subject among {n}")
    return dict(zip(order, ["train"] * n_train + ["val"] * n_val + ["test"] * n_test))


def _base_first(labels: np.ndarray) -> bool:
    """True when the stack (X, Y, Z) runs base -> apex: the LV + myocardium area is larger over the
    first half of the labelled slices than over the second (the heart narrows towards the apex)."""
    area = np.isin(labels, (1, 2)).reshape(-1, labels.shape[2]).sum(axis=0).astype(float)
    z = np.flatnonzero(area > 0)
    if z.size < 2:
        return True
    a = area[z[0] : z[-1] + 1]
    h = len(a) // 2
    return a[:h].sum() >= a[len(a) - h :].sum()


def phantom_subjects(cfg: Any) -> int:
    """``ch5.phantom_subjects``: size of chapter 5's own phantom cohort (0 = read ``cfg.data_dir`` as it is).
    Only the phantom data set has one; for a real data set the value is 0 whatever the profile says."""
    raw = cfg.ch5.get("phantom_subjects", 0)
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0 or raw in (1, 2):
        raise ValueError(f"ch5.phantom_subjects must be 0 (the data set as it is) or an integer >= 3, got {raw!r}")
    return int(raw) if str(cfg.dataset) == "phantom" else 0


def volume_folder(cfg: Any) -> Path:
    """The folder chapter 5 reads its volumes from.

    ``cfg.data_dir``, unless the data set is the phantom and ``ch5.phantom_subjects = N > 0``: then a
    cohort of its own, ``<data_dir>-ch5``, rendered on first use (and reused after) with the profile's
    ``phantom`` settings but ``N`` subjects and only two cine and tagging frames, since this chapter
    uses the end-diastolic frame alone (frame 0; its anatomy is that of the main cohort's subject of
    the same index). The chapter-5 models need more subjects than the sequence chapters can afford
    to train on at the ``cpu`` profile, and rendering end-diastole only makes them cheap
    (``benchmarks/README.md``).
    """
    from ..phantom import ensure_phantom
    from ..utils import resolve_path

    n = phantom_subjects(cfg)
    base = resolve_path(cfg.data_dir)
    if not n:
        return base
    section = {**dict(cfg.phantom), "n_subjects": n, "cine_frames": 2, "tag_frames": 2}
    return ensure_phantom(base.with_name(f"{base.name}-ch5"), section, seed=int(cfg.seed))


def source_key(cfg: Any) -> dict[str, Any]:
    """What run folders trained on chapter 5's volumes add to their keys: its own cohort's size when there is one
    (``{}`` otherwise, so runs made without one keep their keys)."""
    n = phantom_subjects(cfg)
    return {"phantom_subjects": n} if n else {}


def load_volumes(cfg: Any, *, max_subjects: int | None = None) -> VolumeData:
    """Read the ED volumes and masks of ``cfg``'s data set (see the module docstring) from
    :func:`volume_folder`, which renders chapter 5's own phantom cohort first when the profile asks for one.

    Subjects without an ED segmentation or without an image are dropped (listed in
    ``meta["dropped"]``); a data set where no subject has both raises ``ValueError``: chapter 5
    trains on image + mask volumes.
    """
    from ..io import iter_subjects
    from ..preprocess import prepare_subject

    c = cfg.ch5
    folder = volume_folder(cfg)
    size = tuple(int(v) for v in c.image_size)
    if len(size) != 2:
        raise ValueError(f"ch5.image_size must be [X, Y], got {list(c.image_size)}")
    n_slices = int(c.slices)
    px = float(c.roi_mm) / size[0]
    images, labels, subjects, spacing = [], [], [], []
    dropped: dict[str, str] = {}
    flipped = 0
    for i, subj in enumerate(iter_subjects(folder, cfg.dataset)):
        if max_subjects is not None and i >= max_subjects:
            break
        if subj.cine is None:
            dropped[subj.subject_id] = "no image"
            continue
        if subj.cine_labels is None or not np.any(subj.cine_labels):
            dropped[subj.subject_id] = "no segmentation"
            continue
        ed = int(subj.ed_frame) if subj.ed_frame is not None else 0
        if subj.labelled_frames is not None and not bool(np.asarray(subj.labelled_frames)[ed]):
            dropped[subj.subject_id] = f"ED frame {ed} is not segmented"
            continue
        if not np.any(subj.cine_labels[..., ed]):
            dropped[subj.subject_id] = f"ED frame {ed} has an empty segmentation"
            continue
        one = subj.copy_with(
            cine=np.ascontiguousarray(subj.cine[..., ed : ed + 1]),
            cine_labels=np.ascontiguousarray(subj.cine_labels[..., ed : ed + 1]),
            labelled_frames=np.array([True]),
            ed_frame=0,
            es_frame=None,
            tagging=[],
        )
        prep = prepare_subject(one, size=size, n_slices=n_slices, spacing=px, tagging=False)
        img, lab = prep.cine[..., 0].astype(np.float32), prep.cine_labels[..., 0].astype(np.uint8)
        sp = np.linalg.norm(np.asarray(prep.affine)[:3, :3], axis=0)
        if not _base_first(lab):
            img, lab = img[:, :, ::-1], lab[:, :, ::-1]
            flipped += 1
        images.append(np.ascontiguousarray(img))
        labels.append(np.ascontiguousarray(lab))
        subjects.append(subj.subject_id)
        spacing.append(sp)
    if not images:
        reasons = "; ".join(f"{k}: {v}" for k, v in list(dropped.items())[:5]) or "no subjects found"
        raise ValueError(
            f"{folder} ({cfg.dataset}): no subject has an image with an ED segmentation; chapter 5 trains on "
            f"image + mask volumes, so use a data set with labels (phantom, ukbb label_sa_ED, acdc _gt, mnms _gt). "
            f"Dropped: {reasons}"
        )
    split_of = split_subjects(subjects, [float(v) for v in c.split], int(cfg.seed))
    spacing_arr = np.array(spacing, dtype=np.float64)
    return VolumeData(
        images=np.stack(images),
        labels=np.stack(labels),
        subject=np.array(subjects),
        split=np.array([split_of[s] for s in subjects]),
        spacing=spacing_arr,
        meta={
            "dropped": dropped,
            "flipped": flipped,
            "n_subjects": len(subjects),
            "folder": str(folder),
            "pixel_mm": float(np.median(spacing_arr[:, 0])),  # the resampling keeps whole pixels over the FOV
        },
    )


def _subjects_hash(data: VolumeData, split: str) -> str:
    ids = sorted(data.subject[data.index(split)].tolist())
    return hashlib.sha1(json.dumps(ids).encode()).hexdigest()[:10]


def image_slices(volumes: np.ndarray) -> np.ndarray:
    """``(N, X, Y, Z)`` -> ``(N, 1, Z, Y, X)`` (2D slices with row = y) for the image metrics."""
    return np.ascontiguousarray(np.transpose(np.asarray(volumes), (0, 3, 2, 1))[:, None])


# =============================================================================================== stage 1
def autoencoder_config(cfg: Any, shape: Sequence[int]) -> Any:
    """The :class:`~cmrkit.models.autoencoder.VolumeAutoencoderConfig` of ``cfg.ch5`` for volumes of
    ``shape = (X, Y, Z)`` (flash attention on CUDA)."""
    from ..models.autoencoder import VolumeAutoencoderConfig

    c = cfg.ch5
    x, y, z = (int(v) for v in shape)
    return VolumeAutoencoderConfig(
        image_size=(x, y),
        depth=z,
        channels=tuple(int(v) for v in c.ae_channels),
        latent_channels=int(c.latent_channels),
        n_classes=len(STRUCTURES) + 1,
        num_res_blocks=int(c.ae_res_blocks),
        slice_width=int(c.ae_slice_width),
        attention=bool(c.ae_attention),
        use_flash_attention=str(cfg.device).startswith("cuda"),
    )


def ae_payload(cfg: Any, data: VolumeData, mcfg: Any) -> dict[str, Any]:
    """The settings that key the autoencoder's run folder in ``runs/`` (model, training, subject lists)."""
    c = cfg.ch5
    model = mcfg.to_dict()
    model.pop("use_flash_attention")  # same weights and outputs either way
    return {
        "model": model,
        "epochs": int(c.ae_epochs),
        "batch_size": int(c.ae_batch_size),
        "lr": float(c.ae_lr),
        "kl_weight": float(c.kl_weight),
        "roi_mm": float(c.roi_mm),
        "train": _subjects_hash(data, "train"),
        "val": _subjects_hash(data, "val"),
        # only when set, so runs trained before the options keep their keys
        **({"scale_equivariance": se} if (se := ae_scale_equivariance(cfg)) else {}),
        **source_key(cfg),
    }


def ae_scale_equivariance(cfg: Any) -> float:
    """``ch5.ae_scale_equivariance``: weight of the autoencoder's scale-equivariance term (0 = off;
    :class:`~cmrkit.models.autoencoder.AutoencoderLoss`); a clear error if it is not a number >= 0."""
    raw = cfg.ch5.get("ae_scale_equivariance", 0.0)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"ch5.ae_scale_equivariance must be a number >= 0 (0 = off), got {raw!r}")
    return value


def _checked_folder(cfg: Any, name: str, payload: Mapping[str, Any], checkpoint: Any) -> Any:
    """The run folder to use: the given ``checkpoint`` folder after checking that it was made with
    this configuration (:class:`cmrkit.runs.RunMismatchError` otherwise), else :func:`run_dir`."""
    if checkpoint is None:
        return run_dir(cfg, CHAPTER, name, payload)
    folder = Path(checkpoint)
    if folder.is_file():
        folder = folder.parent
    check_manifest(folder, run_key(cfg, CHAPTER, name, payload))
    return folder


def train_autoencoder(cfg: Any, data: VolumeData, *, checkpoint: Any = None, progress: bool = False) -> Trained:
    """Train (or reload) the image + mask autoencoder; returns :class:`Trained`.

    L1 + CE + ``ch5.kl_weight`` KL (thesis §5.2.1), Adam with ``ch5.ae_lr``, batch ``ch5.ae_batch_size``,
    ``ch5.ae_epochs`` epochs; the weights of the epoch with the lowest validation loss are kept (as
    the thesis). Checkpoints go to ``runs/`` (weights-only, atomic, resumable) keyed by every setting
    and the subject lists, so a finished run is reloaded instead of retrained. ``checkpoint``: a run
    folder (or its ``model.pt``) to use instead; it must have been made with the same settings, else
    :class:`cmrkit.runs.RunMismatchError` names the settings that differ.
    """
    from ..models.autoencoder import AutoencoderLoss, VolumeAutoencoder, VolumeDataset
    from ..train import fit, save_model

    c = cfg.ch5
    mcfg = autoencoder_config(cfg, data.shape)
    folder = _checked_folder(cfg, "autoencoder", ae_payload(cfg, data, mcfg), checkpoint)
    model = VolumeAutoencoder(mcfg, seed=int(cfg.seed))
    tr, va = data.index("train"), data.index("val")
    res = fit(
        model,
        VolumeDataset(data.images[tr], data.labels[tr]),
        VolumeDataset(data.images[va], data.labels[va]) if len(va) else None,
        loss_fn=AutoencoderLoss(float(c.kl_weight), ae_scale_equivariance(cfg)),
        epochs=int(c.ae_epochs),
        batch_size=int(c.ae_batch_size),
        lr=float(c.ae_lr),
        weight_decay=0.0,
        device=cfg.device,
        seed=int(cfg.seed),
        checkpoint_dir=folder,
        resume=True,
        progress=progress,
    )
    res.model.to("cpu").eval()
    if not is_complete(folder):
        save_model(folder / "model.pt", res.model, mcfg.to_dict(), extra={"best_epoch": int(res.best_epoch)})
        mark_complete(folder, best_epoch=int(res.best_epoch), best_val=float(res.best_val))
    return finetune_decoder(cfg, data, Trained(res.model, res.history, int(res.best_epoch), folder), progress=progress)


def decoder_settings(cfg: Any) -> dict[str, Any] | None:
    """``ch5.ae_decoder``: the decoder fine-tuning stage as ``{"epochs", "noise", "lr", "batch_size"}``, or
    None when it is absent or has 0 epochs (the thesis' single-stage autoencoder). A clear error names the
    setting when a value is malformed."""
    raw = cfg.ch5.get("ae_decoder")
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ValueError(f"ch5.ae_decoder must be a mapping {{epochs, noise, lr, batch_size}}, got {raw!r}")
    unknown = sorted(set(raw) - {"epochs", "noise", "lr", "batch_size"})
    if unknown:
        raise ValueError(f"ch5.ae_decoder: unknown keys {unknown} (allowed: epochs, noise, lr, batch_size)")

    def number(key: str, default: Any, *, integer: bool, positive: bool) -> Any:
        v = raw.get(key, default)
        ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(float(v))
        ok = ok and (not integer or float(v) == int(v)) and (float(v) > 0 if positive else float(v) >= 0)
        if not ok:
            kind = "an integer" if integer else "a number"
            raise ValueError(f"ch5.ae_decoder.{key} must be {kind} {'> 0' if positive else '>= 0'}, got {v!r}")
        return int(v) if integer else float(v)

    epochs = number("epochs", 0, integer=True, positive=False)
    if epochs == 0:
        return None
    return {
        "epochs": epochs,
        "noise": number("noise", 0.0, integer=False, positive=False),
        "lr": number("lr", 1e-4, integer=False, positive=True),
        "batch_size": number("batch_size", int(cfg.ch5.ae_batch_size), integer=True, positive=True),
    }


def finetune_decoder(cfg: Any, data: VolumeData, autoencoder: Trained, *, progress: bool = False) -> Trained:
    """Second stage of the autoencoder (``ch5.ae_decoder``; returns ``autoencoder`` unchanged when off):
    the encoder is frozen and the decoder alone is trained for ``epochs`` more epochs on latents perturbed
    by up to ``noise`` times each latent channel's spread over the training set
    (:class:`~cmrkit.models.autoencoder.NoisyLatentDecoderLoss`), Adam at ``lr``, the last epoch's weights
    kept. The latents, hence the diffusion model's training data, are those of the first stage; the run
    folder (``decoder-*``) is keyed by the settings and the first stage's run."""
    import copy

    from ..models.autoencoder import EncodedVolumeDataset, NoisyLatentDecoderLoss
    from ..models.diffusion import encode_latents
    from ..train import fit, save_model

    settings = decoder_settings(cfg)
    if settings is None:
        return autoencoder
    folder = run_dir(cfg, CHAPTER, "decoder", {**settings, "autoencoder": autoencoder.folder.name})
    tr, va = data.index("train"), data.index("val")
    mu, sigma = encode_latents(autoencoder.model, data.images[tr], data.labels[tr], device=cfg.device)
    channel_sd = mu.std(dim=(0, 2, 3))
    model = copy.deepcopy(autoencoder.model)
    trainable = {id(p) for p in model.decoder_parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    val = None
    if len(va):
        val = EncodedVolumeDataset(
            *encode_latents(autoencoder.model, data.images[va], data.labels[va], device=cfg.device),
            data.images[va],
            data.labels[va],
        )
    try:
        res = fit(
            model,
            EncodedVolumeDataset(mu, sigma, data.images[tr], data.labels[tr]),
            val,
            loss_fn=NoisyLatentDecoderLoss(settings["noise"], channel_sd),
            epochs=settings["epochs"],
            batch_size=settings["batch_size"],
            lr=settings["lr"],
            weight_decay=0.0,
            device=cfg.device,
            seed=int(cfg.seed),
            checkpoint_dir=folder,
            resume=True,
            progress=progress,
            keep="last",
        )
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    res.model.to("cpu").eval()
    if not is_complete(folder):
        extra = {"best_epoch": int(res.best_epoch), "autoencoder": autoencoder.folder.name}
        save_model(folder / "model.pt", res.model, res.model.config.to_dict(), extra=extra)
        mark_complete(folder, best_epoch=int(res.best_epoch), first_stage=autoencoder.folder.name)
    history = [dict(h, stage="autoencoder") for h in autoencoder.history] + [
        dict(h, stage="decoder") for h in res.history
    ]
    return Trained(res.model, history, int(res.best_epoch), folder)


def reconstruct(model: Any, images: np.ndarray, labels: np.ndarray, *, device: str = "cpu", batch_size: int = 8):
    """Autoencoder reconstruction (decoded latent mean): images ``(N, X, Y, Z)`` in [0, 1] and labels."""
    import torch

    from ..models.autoencoder import split_output, to_input
    from ..utils import resolve_device

    dev = resolve_device(device)
    model.to(dev).eval()
    out_i, out_l = [], []
    with torch.no_grad():
        for s in range(0, len(images), batch_size):
            x = to_input(
                torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size])).to(dev),
                torch.from_numpy(np.asarray(labels[s : s + batch_size], np.int64)).to(dev),
                model.config.n_classes,
            )
            img, lab = split_output(model.reconstruct(x).float())
            out_i.append(img.cpu().numpy())
            out_l.append(lab.cpu().numpy())
    model.to("cpu")
    return np.concatenate(out_i).astype(np.float32), np.concatenate(out_l)


def volume_dice(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(N, 3) Dice per volume and structure (NaN when a structure is absent from both)."""
    from ..metrics import dice

    return np.asarray(dice(pred, ref, labels=list(STRUCTURES), spatial_dims=3), dtype=float).reshape(len(pred), -1)


def _depth_handling(mcfg: Any) -> str:
    if int(mcfg.slice_width):
        return f"per-slice stem of {int(mcfg.slice_width)} features, slices folded at half resolution"
    return "slices folded into the first layer"


def autoencoder_table(cfg: Any, rep: Report, data: VolumeData, model: Any, *, split: str = "test") -> pd.DataFrame:
    """Reconstruction quality on a split: SSIM (per 2D slice, averaged per volume), PSNR (per volume)
    on [0, 1] intensities, Dice of the decoded masks (mean over LV, Myo, RV per volume, and each)."""
    from ..figures import show, volume_montage
    from ..metrics import psnr, ssim

    idx = data.index(split)
    rec_i, rec_l = reconstruct(model, data.images[idx], data.labels[idx], device=cfg.device)
    s = np.asarray(ssim(image_slices(rec_i), image_slices(data.images[idx]), data_range=1.0))
    p = np.asarray(psnr(rec_i[:, None], data.images[idx][:, None], data_range=1.0))
    d = volume_dice(rec_l, data.labels[idx])
    row = f"autoencoder/{split}"
    rows = [
        TableRow.summary(row, metric, v, units=units, thesis_key=(metric,))
        for metric, v, units in (("SSIM", s, ""), ("PSNR", p, "dB"), ("Dice", np.nanmean(d, axis=1), ""))
    ]
    for j, name in enumerate(STRUCTURES.values()):
        rows.append(TableRow.summary(row, f"Dice {name}", d[:, j], thesis_key=("-",)))
    df = rep.save_table(
        "ch5_autoencoder",
        rows,
        notes=[
            f"{split} split, {len(idx)} volumes of {data.shape} voxels; reconstruction = decoder(latent mean). "
            "SSIM per 2D slice (11-tap Gaussian window) averaged per volume, PSNR over each volume, both on [0, 1] "
            "intensities (data_range 1); Dice per volume averaged over LV, Myo and RV (and per structure).",
            f"Latent {model.config.latent_shape[1]} x {model.config.latent_shape[2]} x 1 x "
            f"{model.config.latent_shape[0]} ({_depth_handling(model.config)}, cmrkit.models.autoencoder); loss "
            f"L1 + CE + {float(cfg.ch5.kl_weight):g} KL"
            + (f" + {se:g} x scale equivariance" if (se := ae_scale_equivariance(cfg)) else "")
            + (
                f"; then the decoder alone {d['epochs']} more epochs on latents perturbed by up to {d['noise']:g} x "
                "each latent channel's spread (cmrkit.models.autoencoder.NoisyLatentDecoderLoss)"
                if (d := decoder_settings(cfg))
                else ""
            )
            + ".",
        ],
    )
    j = int(np.argsort(s)[len(s) // 2]) if len(s) else 0
    i = int(idx[j])
    fig = volume_montage(
        {
            f"{data.subject[i]} original": (data.images[i], data.labels[i]),
            "reconstruction": (rec_i[j], rec_l[j]),
        },
        title=f"Autoencoder reconstruction (test volume of median SSIM {s[j]:.2f})",
    )
    rep.save_figure(fig, "ch5_reconstructions", caption="A test volume and its reconstruction, every slice, with masks")
    show(fig)
    return df


# =============================================================================================== stage 2
def diffusion_config(cfg: Any, latent_shape: Sequence[int]) -> Any:
    """The :class:`~cmrkit.models.diffusion.LatentDiffusionConfig` of ``cfg.ch5`` for latents of
    ``latent_shape = (C, X', Y')``."""
    from ..models.diffusion import LatentDiffusionConfig

    c = cfg.ch5
    ch = tuple(int(v) for v in c.diffusion_channels)
    att = tuple(bool(v) for v in c.diffusion_attention)
    return LatentDiffusionConfig(
        latent_shape=tuple(int(v) for v in latent_shape),
        channels=ch,
        attention_levels=att,
        num_res_blocks=int(c.diffusion_res_blocks),
        timesteps=int(c.timesteps),
        loss=str(c.diffusion_loss),
        prediction_type=str(c.get("diffusion_prediction", "epsilon")),
        use_flash_attention=str(cfg.device).startswith("cuda"),
    )


def train_diffusion(
    cfg: Any, data: VolumeData, autoencoder: Trained, *, checkpoint: Any = None, progress: bool = False
) -> Trained:
    """Train (or reload) the latent diffusion model; returns :class:`Trained`.

    The autoencoder's latent ``mu``/``sigma`` of every training (and validation) volume are computed
    once; ``scale_factor`` = 1 / std of one latent draw per training volume; the UNet is trained for
    ``ch5.diffusion_iterations`` steps of batch ``ch5.diffusion_batch_size`` with Adam (lr
    ``ch5.diffusion_lr``, betas (0.9, 0.99) as the thesis) and the final weights are kept (their
    moving average when ``ch5.diffusion_ema`` is a decay; null: the raw weights). The run
    folder is keyed by the settings and the autoencoder's run, so a new autoencoder means a new
    diffusion model; ``checkpoint`` as in :func:`train_autoencoder`.
    """
    from ..models.diffusion import (
        DiffusionLoss,
        LatentDataset,
        LatentDiffusion,
        compute_scale_factor,
        encode_latents,
        fit_latent_diffusion,
    )
    from ..train import ema_decay_setting

    c = cfg.ch5
    ema = ema_decay_setting(c.get("diffusion_ema"), "ch5.diffusion_ema")
    ae, ae_folder = autoencoder.model, autoencoder.folder
    mcfg = diffusion_config(cfg, ae.config.latent_shape)
    iters, bs = int(c.diffusion_iterations), int(c.diffusion_batch_size)
    if iters < 1 or bs < 1:
        raise ValueError(f"ch5.diffusion_iterations and ch5.diffusion_batch_size must be >= 1, got {iters}, {bs}")
    model_d = mcfg.to_dict()
    model_d.pop("use_flash_attention")
    payload = {
        "model": model_d,
        "iterations": iters,
        "batch_size": bs,
        "lr": float(c.diffusion_lr),
        "autoencoder": ae_folder.name,
    }
    if ema is not None:  # only when set, so runs trained before the option keep their keys
        payload["ema_decay"] = ema
    folder = _checked_folder(cfg, "diffusion", payload, checkpoint)
    tr, va = data.index("train"), data.index("val")
    mu, sigma = encode_latents(ae, data.images[tr], data.labels[tr], device=cfg.device)
    scale = compute_scale_factor(mu, sigma, seed=int(cfg.seed))
    model = LatentDiffusion(mcfg, seed=int(cfg.seed))
    model.set_scale_factor(scale)
    val = None
    if len(va):
        val = LatentDataset(*encode_latents(ae, data.images[va], data.labels[va], device=cfg.device))
    res = fit_latent_diffusion(
        model,
        lambda length: LatentDataset(mu, sigma, length=length),
        val,
        DiffusionLoss(),
        iterations=iters,
        batch_size=bs,
        lr=float(c.diffusion_lr),
        folder=folder,
        scale=scale,
        model_config=mcfg.to_dict(),
        autoencoder=ae_folder.name,
        device=cfg.device,
        seed=int(cfg.seed),
        ema_decay=ema,
        progress=progress,
    )
    return Trained(res.model, res.history, int(res.best_epoch), folder)


# =============================================================================================== sampling
def sample_counts(cfg: Any) -> list[int]:
    """The nested sample-set sizes ``ch5.n_samples`` (positive integers; a clear error otherwise)."""
    raw = cfg.ch5.n_samples
    counts = [int(v) for v in raw] if isinstance(raw, (list, tuple)) else [int(raw)]
    if not counts or min(counts) < 1:
        raise ValueError(f"ch5.n_samples must be a list of positive sample counts, got {raw!r}")
    return counts


def generate_samples(
    cfg: Any, data: VolumeData, autoencoder: Trained, diffusion: Trained, *, progress: bool = False
) -> SampleSet:
    """Generate (or reload) ``max(ch5.n_samples)`` volumes with their masks; returns the :class:`SampleSet`.

    Sample ``i`` is drawn from seed ``sample_seeds(cfg.seed, N)[i]`` with ``ch5.ddim_steps`` DDIM
    steps (``eta = 0``), batches of ``ch5.sample_batch_size``; the set is written to a run folder keyed
    by the diffusion run and the sampler settings, with ``meta["sets"]`` = the nested set sizes.
    """
    from ..models.diffusion import generate, sample_seeds

    counts = sample_counts(cfg)
    n = max(counts)
    ae, ldm = autoencoder.model, diffusion.model
    steps, batch = int(cfg.ch5.ddim_steps), int(cfg.ch5.sample_batch_size)
    # the batch size is part of the key: batched kernels change the last bits of the samples
    payload = {"n": n, "ddim_steps": steps, "batch_size": batch, "diffusion": diffusion.folder.name}
    folder = run_dir(cfg, CHAPTER, "samples", payload)
    if is_complete(folder) and (folder / SampleSet.FILE).is_file():
        return SampleSet.load(folder)
    seeds = sample_seeds(int(cfg.seed), n)
    images, labels = generate(
        ae,
        ldm,
        seeds,
        ddim_steps=steps,
        batch_size=batch,
        device=cfg.device,
        progress=progress,
    )
    ss = SampleSet(
        {"image": images, "labels": labels},
        seeds,
        data.reference_affine,
        meta={
            "chapter": CHAPTER,
            "model": "latent diffusion (cmrkit.models.diffusion) + VolumeAutoencoder",
            "sampler": f"DDIM, {steps} steps, eta 0, leading timestep spacing",
            "sets": counts,
            "sets_note": "the set of n samples is the first n samples",
            "labels": {str(k): v for k, v in STRUCTURES.items()},
            "intensity": "[0, 1]",
            "slice_order": "base -> apex",
            "scale_factor": float(ldm.scale_factor),
        },
    )
    ss.save(folder)
    mark_complete(folder, n=n)
    return ss


# =============================================================================================== metrics
def _extractors(cfg: Any) -> dict[str, Any]:
    """``{"FID": extractor, "FRD": extractor}``; without local weights both fall back (with a warning)
    to the offline extractor, and the tables say so."""
    import warnings

    from ..metrics import get_extractor

    out = {}
    for metric, kind in (("FID", "fid"), ("FRD", "frd")):
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            out[metric] = get_extractor(kind, fallback=True, seed=int(cfg.seed), device=cfg.device)
    return out


def _ms_ssim_kwargs(size: int, kernel: int = 7) -> dict[str, Any]:
    """MS-SSIM scales that fit a ``size``-pixel slice with a ``kernel``-tap window (MONAI needs
    ``size // (M-1)**2 > kernel - 1``): 5 (Wang et al.) where possible, fewer otherwise."""
    from ..metrics.image import MS_SSIM_WEIGHTS

    for m in range(len(MS_SSIM_WEIGHTS), 0, -1):
        if m == 1 or size // (m - 1) ** 2 > kernel - 1:
            return {"weights": MS_SSIM_WEIGHTS[:m], "kernel_size": kernel}
    return {"weights": MS_SSIM_WEIGHTS[:1], "kernel_size": kernel}  # pragma: no cover


class FeatureCache:
    """Slice features of named image sets per extractor (computed once); ``extractors`` maps
    ``"FID"`` and ``"FRD"`` to :class:`cmrkit.metrics.generative.FeatureExtractor` objects."""

    def __init__(self, extractors: Mapping[str, Any]):
        self.extractors = dict(extractors)
        self._cache: dict[tuple[str, str], np.ndarray] = {}

    def get(self, metric: str, name: str, volumes: np.ndarray) -> np.ndarray:
        key = (self.extractors[metric].name, name)
        if key not in self._cache:
            self._cache[key] = self.extractors[metric].extract(image_slices(volumes), data_range=1.0)
        return self._cache[key]


def feature_cache(cfg: Any) -> FeatureCache:
    """A :class:`FeatureCache` with the FID and FRD extractors of ``cfg`` (the offline extractor when
    no local Inception-V3 / ResNet50 weights are configured)."""
    return FeatureCache(_extractors(cfg))


def evaluate_set(
    cfg: Any, name: str, images: np.ndarray, real: np.ndarray, cache: FeatureCache, *, real_name: str = "real test"
) -> dict[str, float]:
    """Table 5.1 metrics of one generated set against real volumes (both ``(N, X, Y, Z)`` in [0, 1]).

    FID / FRD: Fréchet distance of per-slice features (every XY slice one sample). IP / IR: improved
    precision and recall (k = 3) on the FRD extractor's slice features. MS-SSIM / 4-G-R SSIM: mean
    over pairs of distinct generated volumes (per slice, averaged per pair; lower = more diverse),
    ``ch5.eval_pairs`` random pairs (all pairs when fewer).
    """
    from ..metrics import frechet_distance, precision_recall

    out: dict[str, float] = {}
    for metric in ("FID", "FRD"):
        out[metric] = frechet_distance(cache.get(metric, real_name, real), cache.get(metric, name, images))
    pr = precision_recall(cache.get("FRD", real_name, real), cache.get("FRD", name, images), k=3)
    out["IP"], out["IR"] = float(pr.precision), float(pr.recall)
    out.update(_diversity(cfg, images))
    return out


def _diversity(cfg: Any, images: np.ndarray) -> dict[str, float]:
    from ..metrics import mean_pairwise_similarity

    sl = image_slices(images)
    n_pairs = int(cfg.ch5.eval_pairs)
    kw = _ms_ssim_kwargs(min(sl.shape[-2:]))
    ms = mean_pairwise_similarity(
        sl, metric="ms_ssim", data_range=1.0, n_pairs=n_pairs, rng=int(cfg.seed), device=cfg.device, **kw
    )
    gr = mean_pairwise_similarity(
        sl, metric="gr4_ssim", data_range=1.0, n_pairs=n_pairs, rng=int(cfg.seed), device=cfg.device
    )
    return {"MS-SSIM": float(ms.mean), "4-G-R SSIM": float(gr.mean)}


def sample_specs(data: VolumeData) -> dict[str, Any]:
    """The bad-sample guard of a generated set on ``data``'s grid (:func:`cmrkit.runs.check_samples`):
    images of the data's shape in the data's intensity range [0, 1], integer labels 0..3."""
    from ..runs import ArraySpec

    return {
        "image": ArraySpec(data.shape, 0.0, 1.0),
        "labels": ArraySpec(data.shape, 0.0, float(max(STRUCTURES)), integer=True),
    }


def _baseline_set(cfg: Any, name: str, data: VolumeData) -> tuple[SampleSet | None, str]:
    """The newest complete baseline sample set of notebook 04 made with this seed and data folder, after
    the bad-sample guard, or None with the reason (shown in the table)."""
    from ..runs import check_samples, latest_run

    man = latest_run(cfg, "baselines", name)
    if man is None:
        return None, "not run yet (notebook 04)"
    try:
        ss = SampleSet.load(man["folder"])
        check_samples(ss, sample_specs(data), where=f"sample set in {man['folder']}")
    except (FileNotFoundError, ValueError) as exc:
        return None, f"refused: {exc}"
    return ss, f"{len(ss)} samples from {man['folder']}"


def table_5_1(cfg: Any, rep: Report, data: VolumeData, samples: SampleSet, *, cache: Any = None) -> pd.DataFrame:
    """Table 5.1: FID, FRD, IP, IR, MS-SSIM and 4-G-R SSIM of the LDM (its first ``ch5.n_samples[0]``
    samples) and of the baselines' sample sets against the real test split, with reference rows."""
    from ..runs import check_samples

    check_samples(samples, sample_specs(data), where="the LDM's sample set")
    cache = cache if cache is not None else feature_cache(cfg)
    n0 = sample_counts(cfg)[0]
    te, tr = data.index("test"), data.index("train")
    real = data.images[te]
    metrics = ("FID", "FRD", "IP", "IR", "MS-SSIM", "4-G-R SSIM")
    rows: list[TableRow] = []
    ldm = evaluate_set(cfg, f"ldm{n0}", samples.arrays["image"][:n0], real, cache)
    for m in metrics:
        rows.append(TableRow("LDM", m, ldm[m], n=n0, thesis_key=("LDM", m)))
    for run_name, label in BASELINES:
        ss, why = _baseline_set(cfg, run_name, data)
        if ss is None:
            for m in metrics:
                rows.append(TableRow(label, m, math.nan, note=why, thesis_key=(label, m)))
            continue
        if len(ss) < n0:
            why += f"; fewer than the LDM's {n0}"
        nb = min(n0, len(ss))  # as many samples as the LDM row (FID and P/R depend on the sample size)
        res = evaluate_set(cfg, f"{run_name}{nb}", ss.arrays["image"][:nb], real, cache)
        for m in metrics:
            rows.append(TableRow(label, m, res[m], n=nb, note=why, thesis_key=(label, m)))
    # references: the real training set scored as if generated (the floor of FID/FRD, the ceiling of
    # IP/IR with this many test slices) and the diversity of real test volumes
    ref = evaluate_set(cfg, "real train", data.images[tr], real, cache)
    for m in metrics:
        rows.append(TableRow("reference: real train vs real test", m, ref[m], n=len(tr), thesis_key=("-",)))
    div = _diversity(cfg, real)
    for m in ("MS-SSIM", "4-G-R SSIM"):
        rows.append(TableRow("reference: real test (diversity)", m, div[m], n=len(te), thesis_key=("-",)))
    ext = cache.extractors
    same = ext["FID"].name == ext["FRD"].name
    notes = [
        f"Generated sets against the real test split ({len(te)} volumes, {len(te) * data.shape[2]} XY slices); "
        f"every 2D slice is one sample of the feature distributions. Every generated row: the first {n0} volumes "
        "of its set (the same number for each model).",
        f"FID features: {ext['FID'].name}; FRD (Fréchet ResNet distance) features: {ext['FRD'].name}."
        + (
            " Both fell back to the kit's offline extractor (no Inception-V3 / ResNet50 weights found; set "
            "CMRKIT_FID_WEIGHTS / CMRKIT_FRD_WEIGHTS), so the two columns are the same number and are not "
            "comparable with the thesis' values."
            if same
            else ""
        ),
        "IP/IR: improved precision/recall (Kynkäänniemi et al. 2019, k = 3) on the FRD features.",
        f"MS-SSIM and 4-G-R SSIM: mean over {int(cfg.ch5.eval_pairs)} random pairs of distinct volumes of the same set "
        f"(all pairs when fewer), per XY slice; LOWER = MORE DIVERSE, as thesis Table 5.1 defines them. MS-SSIM "
        f"with {len(_ms_ssim_kwargs(data.shape[1])['weights'])} scales and a 7-tap window (what fits "
        f"{data.shape[1]} pixels); 4-G-R SSIM = 4-G-r* (cmrkit.metrics.image.gr4_ssim).",
        "Reference rows: the real training volumes scored like a generated set (what a perfect generator would "
        "reach with this many samples), and the diversity of real test volumes.",
    ]
    return rep.save_table("table_5_1", rows, notes=notes)


# =============================================================================================== figures
def figure_5_2(rep: Report, data: VolumeData, samples: SampleSet, *, n_real: int = 2, n_generated: int = 4) -> None:
    """Fig 5.2: real test and generated volumes, every slice, image and mask overlay."""
    from ..figures import show, volume_montage

    te = data.index("test")
    rows = {}
    for i in te[:n_real]:
        rows[f"real {data.subject[i]}"] = (data.images[i], data.labels[i])
    for j in range(min(n_generated, len(samples))):
        rows[f"generated #{j} (seed {int(samples.seeds[j]) % 100000:05d}…)"] = (
            samples.arrays["image"][j],
            samples.arrays["labels"][j],
        )
    fig = volume_montage(rows, title="Real (test) and generated volumes, base (left) to apex, with masks")
    rep.save_figure(fig, "fig_5_2", caption="Real and generated 3D volumes, all slices, with LV/Myo/RV masks")
    show(fig)


def volume_phenotypes(labels: np.ndarray, spacing: np.ndarray | Sequence[float]) -> pd.DataFrame:
    """LVEDV (mL), LVM (g) and RVEDV (mL) of ED label volumes ``(N, X, Y, Z)`` with their voxel size
    (``(3,)`` for all or ``(N, 3)``), with :func:`cmrkit.clinical.phenotypes` (volume = voxels x voxel
    volume, LVM = myocardial volume x 1.05 g/mL)."""
    from ..clinical import phenotypes

    lab = np.asarray(labels)
    sp = np.asarray(spacing, dtype=float)
    sp = np.broadcast_to(sp, (len(lab), 3)) if sp.ndim == 1 else sp
    rows = []
    for v, s in zip(lab, sp):
        p = phenotypes(v, v, tuple(s))  # ED volume only: the ES entries are not used
        rows.append({k: p[k] for k, _, _ in PHENOTYPES})
    return pd.DataFrame(rows)


def figure_5_3(rep: Report, data: VolumeData, samples: SampleSet, counts: Sequence[int]) -> dict[str, pd.DataFrame]:
    """Fig 5.3: box plots of LV volume, LV mass and RV volume, real train/test vs each generated set."""
    import matplotlib.pyplot as plt

    from ..figures import box_plot, show

    groups = {
        "real train": volume_phenotypes(data.labels[data.index("train")], data.spacing[data.index("train")]),
        "real test": volume_phenotypes(data.labels[data.index("test")], data.spacing[data.index("test")]),
    }
    gen = volume_phenotypes(samples.arrays["labels"], data.reference_spacing)
    for n in counts:
        groups[f"generated n={n}"] = gen.iloc[:n]
    fig, axes = plt.subplots(1, len(PHENOTYPES), figsize=(3.2 * len(PHENOTYPES) + 1, 3.6))
    for ax, (key, short, units) in zip(np.atleast_1d(axes), PHENOTYPES):
        box_plot(
            {short: {g: df[key].to_numpy() for g, df in groups.items()}}, ax=ax, ylabel=units, legend=key == "RVEDV"
        )
    fig.tight_layout()
    rep.save_figure(
        fig, "fig_5_3", caption="LV volume (LVV), LV mass (LVM) and RV volume (RVV), real vs generated sets"
    )
    show(fig)
    return groups


def _volume_features(cache: FeatureCache, name: str, volumes: np.ndarray, depth: int) -> np.ndarray:
    f = cache.get("FRD", name, volumes)
    return f.reshape(len(volumes), depth * f.shape[1])  # slices of a volume in order: one row per volume


def figure_5_4(
    cfg: Any, rep: Report, data: VolumeData, samples: SampleSet, counts: Sequence[int], *, cache: Any = None
) -> None:
    """Fig 5.4: t-SNE of per-volume features (the FRD extractor's slice features, concatenated over
    the slices, PCA to 50) of real train, real test and each generated set (one panel per set)."""
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    from ..figures import show

    cache = cache if cache is not None else feature_cache(cfg)
    z = data.shape[2]
    tr, te = data.index("train"), data.index("test")
    f_tr = _volume_features(cache, "real train", data.images[tr], z)
    f_te = _volume_features(cache, "real test", data.images[te], z)
    f_gen = _volume_features(cache, "generated", samples.arrays["image"], z)
    fig, axes = plt.subplots(1, len(counts), figsize=(4.2 * len(counts), 4.0), squeeze=False)
    for ax, n in zip(axes[0], counts):
        x = np.concatenate([f_tr, f_te, f_gen[:n]])
        k = min(50, x.shape[0] - 1, x.shape[1])
        xp = PCA(n_components=k, random_state=int(cfg.seed)).fit_transform(x)
        perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3.0)))
        emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=int(cfg.seed)).fit_transform(xp)
        parts = (
            ("real train", len(f_tr), "tab:blue"),
            ("real test", len(f_te), "tab:green"),
            ("generated", n, "tab:red"),
        )
        s = 0
        for label, m, color in parts:
            ax.scatter(emb[s : s + m, 0], emb[s : s + m, 1], s=6, alpha=0.6, c=color, label=f"{label} (n={m})")
            s += m
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"generated n={n}", fontsize=9)
        ax.legend(fontsize=7, frameon=False)
    fig.suptitle(f"t-SNE of volume features ({cache.extractors['FRD'].name})", fontsize=9)
    fig.tight_layout()
    rep.save_figure(fig, "fig_5_4", caption="t-SNE of real train/test and generated volume features")
    show(fig)


# =============================================================================================== checks
def nearest_distances(
    query: np.ndarray, reference: np.ndarray, *, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Root-mean-square voxel distance from each query volume to its nearest reference volume.

    ``query`` ``(Nq, ...)`` and ``reference`` ``(Nr, ...)`` of equal item shape; returns the distances
    ``(Nq,)`` and the index of the nearest reference ``(Nq,)`` (exact, float64 accumulation).
    """
    import torch

    q = torch.from_numpy(np.asarray(query, np.float64).reshape(len(query), -1))
    r = torch.from_numpy(np.asarray(reference, np.float64).reshape(len(reference), -1))
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"query items have {q.shape[1]} voxels, reference items {r.shape[1]}")
    r2 = (r * r).sum(1)
    dist, arg = [], []
    for s in range(0, len(q), batch_size):
        qb = q[s : s + batch_size]
        d2 = ((qb * qb).sum(1)[:, None] + r2[None, :] - 2.0 * qb @ r.T).clamp_min(0.0)
        m = d2.min(1)
        dist.append((m.values / q.shape[1]).sqrt())
        arg.append(m.indices)
    return torch.cat(dist).numpy(), torch.cat(arg).numpy()


def nearest_mask_distances(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """1 - (mean Dice over LV, Myo, RV) to the nearest reference mask, per query mask."""
    import torch

    def onehot(a: np.ndarray) -> list[torch.Tensor]:
        a = torch.from_numpy(np.asarray(a).reshape(len(a), -1))
        return [(a == k).double() for k in STRUCTURES]

    qs, rs = onehot(query), onehot(reference)
    dice = []
    for a, b in zip(qs, rs):
        inter = a @ b.T
        den = a.sum(1)[:, None] + b.sum(1)[None, :]
        dice.append(torch.where(den > 0, 2 * inter / den.clamp_min(1), torch.ones_like(den)))
    return (1.0 - torch.stack(dice).mean(0).max(1).values).numpy()


def train_segmenter(cfg: Any, data: VolumeData, *, progress: bool = False) -> Any:
    """The kit's segmenter trained on the training volumes' slices (validation: the val split)."""
    from ..models.segmenter import Segmenter, SegmenterConfig

    s = cfg.ch5.segmenter
    x, y, z = data.shape
    scfg = SegmenterConfig(
        image_size=int(max(x, y)),
        channels=tuple(int(v) for v in s.channels),
        lr=float(s.lr),
        epochs=int(s.epochs),
        batch_size=int(s.batch_size),
    )
    seg = Segmenter(scfg, seed=int(cfg.seed))

    def slices(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        im = np.moveaxis(data.images[idx], 3, 1).reshape(-1, x, y)
        lb = np.moveaxis(data.labels[idx], 3, 1).reshape(-1, x, y)
        return im, lb

    tr, va = data.index("train"), data.index("val")
    folder = run_dir(
        cfg, CHAPTER, "segmenter", {"seg": scfg.to_dict(), "train": _subjects_hash(data, "train"), **source_key(cfg)}
    )
    seg.fit(
        *slices(tr),
        validation=slices(va) if len(va) else None,
        seed=int(cfg.seed),
        device=cfg.device,
        checkpoint_dir=folder,
        progress=progress,
        pixel_mm=float(data.meta["pixel_mm"]),
    )
    if not is_complete(folder):
        mark_complete(folder)
    return seg


def segment_volumes(seg: Any, images: np.ndarray, device: str) -> np.ndarray:
    """The segmenter's labels of volumes ``(N, X, Y, Z)``, slice by slice."""
    n, x, y, z = images.shape
    pred = seg.predict(np.moveaxis(images, 3, 1).reshape(-1, x, y), device=device)
    return np.moveaxis(pred.reshape(n, z, x, y), 1, 3)


def generated_checks(
    cfg: Any, rep: Report, data: VolumeData, samples: SampleSet, autoencoder: Trained, *, progress: bool = False
) -> dict[str, Any]:
    """The kit's checks of generated volumes (table ``ch5_generated_checks``, figure ``ch5_memorisation``).

    * anatomy: share of volumes passing every rule of :mod:`cmrkit.metrics.anatomy` (and each rule),
      generated vs the real test volumes (slices base -> apex);
    * mask-image consistency: the kit's segmenter, trained on the training slices, segments each
      generated image; Dice with the generated mask per volume (mean over LV/Myo/RV). The same
      segmenter against the real test ground truth gives the ceiling;
    * phenotypes: LVEDV, LVM, RVEDV of generated vs training vs test volumes; Wasserstein-1 distances
      in mL / g and in units of the cohort's standard deviation (all real subjects), with the
      train-vs-test distance as the finite-sample floor;
    * memorisation: RMS voxel distance of each generated image to its nearest training image, against
      the same for the test images *passed through the autoencoder* (decoded latent means: generated
      volumes are decoder outputs, smoother than acquired images, so raw test images would sit
      further from every training image for reasons other than novelty; the raw-test row is shown too),
      and 1 - Dice of each generated mask to its nearest training mask vs test masks. Ratio
      median(generated) / median(test) well below 1 means copies of training subjects.
    """
    from ..figures import show, volume_montage
    from ..metrics import wasserstein
    from ..metrics.anatomy import RULES, check_volumes, validity_summary

    ae = autoencoder.model
    tr, te = data.index("train"), data.index("test")
    g_img, g_lab = samples.arrays["image"], samples.arrays["labels"]
    n = len(samples)
    rows: list[TableRow] = []
    out: dict[str, Any] = {}
    # ---- anatomy
    rep_gen = check_volumes(g_lab, apex_last=True)
    rep_real = check_volumes(data.labels[te], apex_last=True)
    for who, reps in (("generated", rep_gen), ("real test", rep_real)):
        summ = validity_summary(reps)
        rows.append(TableRow(f"anatomy/{who}", "valid (%)", 100 * summ["valid"], n=len(reps), units="%"))
        for rule in RULES:
            rows.append(TableRow(f"anatomy/{who}", f"passes {rule} (%)", 100 * summ[rule], n=len(reps), units="%"))
    out["anatomy"] = {"generated": rep_gen, "real_test": rep_real}
    # ---- mask-image consistency
    seg = train_segmenter(cfg, data, progress=progress)
    d_gen = volume_dice(segment_volumes(seg, g_img, cfg.device), g_lab)
    d_real = volume_dice(segment_volumes(seg, data.images[te], cfg.device), data.labels[te])
    for who, d, what in (
        ("generated", d_gen, "segmenter(generated image) vs generated mask"),
        ("real test", d_real, "segmenter(real image) vs ground truth"),
    ):
        rows.append(TableRow.summary(f"mask_image/{who}", "Dice", np.nanmean(d, axis=1), note=what))
        for j, name in enumerate(STRUCTURES.values()):
            rows.append(TableRow.summary(f"mask_image/{who}", f"Dice {name}", d[:, j]))
    out["mask_image_dice"] = {"generated": d_gen, "real_test": d_real}
    # ---- phenotypes
    ph = {
        "generated": volume_phenotypes(g_lab, data.reference_spacing),
        "train": volume_phenotypes(data.labels[tr], data.spacing[tr]),
        "test": volume_phenotypes(data.labels[te], data.spacing[te]),
    }
    cohort = volume_phenotypes(data.labels, data.spacing)
    for key, _, units in PHENOTYPES:
        sd = float(cohort[key].std(ddof=1))
        for who in ("generated", "train", "test"):
            rows.append(TableRow.summary(f"phenotype/{key}", f"mean {who}", ph[who][key], units=units))
        rows.append(TableRow(f"phenotype/{key}", "cohort sd", sd, n=len(cohort), units=units))
        for a, b in (("generated", "test"), ("generated", "train"), ("train", "test")):
            w = float(wasserstein(ph[a][key].to_numpy(), ph[b][key].to_numpy()))
            note = "finite-sample floor (two real samples)" if a == "train" else ""
            rows.append(TableRow(f"phenotype/{key}", f"W1 {a}-{b}", w, units=units, note=note))
            rows.append(TableRow(f"phenotype/{key}", f"W1 {a}-{b} / cohort sd", w / sd if sd > 0 else math.nan))
    out["phenotypes"] = ph
    # ---- memorisation
    rec_i, rec_l = reconstruct(ae, data.images[te], data.labels[te], device=cfg.device)
    d_g, nn_g = nearest_distances(g_img, data.images[tr])
    d_t, _ = nearest_distances(rec_i, data.images[tr])
    d_raw, _ = nearest_distances(data.images[te], data.images[tr])
    m_g, m_t = nearest_mask_distances(g_lab, data.labels[tr]), nearest_mask_distances(data.labels[te], data.labels[tr])
    med = {k: float(np.median(v)) for k, v in (("gen", d_g), ("test", d_t), ("raw", d_raw), ("mg", m_g), ("mt", m_t))}
    for who, v in (("generated", d_g), ("test (autoencoded)", d_t), ("test (raw)", d_raw)):
        rows.append(TableRow(f"memorisation/{who}", "median NN image distance (RMS)", float(np.median(v)), n=len(v)))
    rows.append(
        TableRow(
            "memorisation/ratio",
            "median NN distance generated / test (autoencoded)",
            med["gen"] / med["test"] if med["test"] > 0 else math.nan,
            note=">= 0.9 expected without memorisation",
        )
    )
    for who, v in (("generated", m_g), ("test", m_t)):
        rows.append(
            TableRow(f"memorisation/{who}", "median NN mask distance (1 - Dice)", float(np.median(v)), n=len(v))
        )
    rows.append(
        TableRow(
            "memorisation/ratio",
            "median NN mask distance generated / test",
            med["mg"] / med["mt"] if med["mt"] > 0 else math.nan,
        )
    )
    out["memorisation"] = {"generated": d_g, "nearest_train": nn_g, "test_autoencoded": d_t, "test_raw": d_raw}
    table = rep.save_table(
        "ch5_generated_checks",
        rows,
        notes=[
            f"{n} generated volumes; real: {len(tr)} training and {len(te)} test volumes (ED, {data.shape} voxels).",
            "anatomy: rule-based validity in the spirit of Painchaud et al. 2020 (cmrkit.metrics.anatomy): one "
            "component per structure, no holes, myocardium closing around the LV cavity, RV beside the LV, contiguous "
            "slices, LV cavity area with one peak in the basal half and shrinking towards the apex.",
            "mask_image: the kit's 2D segmenter (cmrkit.models.segmenter, trained on the training slices) run on each "
            "generated image; Dice (3D, per volume, mean over LV/Myo/RV) with the generated mask. The real-test row is "
            "the same segmenter against the ground truth (its own accuracy).",
            "phenotype: LVEDV and RVEDV in mL, LVM in g (1.05 g/mL) from the masks on the ROI grid; W1 = 1-D "
            "Wasserstein distance (cmrkit.metrics.wasserstein); cohort sd over all real subjects; train-test is "
            "the distance two real samples of these sizes already have.",
            "memorisation: RMS voxel distance ([0, 1] intensities) to the nearest training image; test images through "
            "the autoencoder put them on the footing of generated volumes (decoder outputs); mask distance 1 - mean "
            "Dice to the nearest training mask (Dar et al. 2023 on memorisation by 3D latent diffusion models).",
        ],
    )
    order = np.argsort(d_g)[:3]
    pairs = {}
    for j in order:
        i = int(tr[nn_g[j]])
        pairs[f"generated #{int(j)} (d={d_g[j]:.3f})"] = (g_img[j], g_lab[j])
        pairs[f"nearest train {data.subject[i]}"] = (data.images[i], data.labels[i])
    fig = volume_montage(pairs, title="Generated volumes closest to a training volume, beside it", overlay=False)
    rep.save_figure(
        fig, "ch5_memorisation", caption="The three generated volumes nearest to a training volume, side by side"
    )
    show(fig)
    out["table"] = table
    return out


# =============================================================================================== browser
def sample_browser(rep: Report, samples: SampleSet, *, interactive: bool = False, n: int = 8) -> Any:
    """Slice x sample browser of generated volumes with their masks.

    ``interactive=True`` returns an ipywidgets viewer (sliders: slice, sample); the static montage of
    the first ``n`` samples (rows: slices base -> apex; columns: samples) is saved either way.
    """
    from ..figures import show
    from ..widgets import SliceFrameViewer, slice_montage

    k = min(int(n), len(samples))
    img = np.moveaxis(samples.arrays["image"], 0, -1)  # (X, Y, Z, N): samples on the "frame" axis
    lab = np.moveaxis(samples.arrays["labels"], 0, -1)
    fig = slice_montage(
        img[..., :k],
        lab[..., :k],
        slices=list(range(img.shape[2])),
        frames=list(range(k)),
        frame_names=[f"sample {i}" for i in range(k)],
        crop=False,
        title="Generated volumes (columns) by slice, base (top) to apex",
        size=1.1,
    )
    rep.save_figure(fig, "ch5_sample_browser", caption="Static view of the sample browser: slices x generated samples")
    if not interactive:
        show(fig)
        return fig
    import matplotlib.pyplot as plt

    plt.close(fig)
    viewer = SliceFrameViewer(img, lab, crop=False)
    viewer.frame_slider.description = "sample"
    return viewer


# =============================================================================================== all
def run_all(cfg: Any, rep: Report, *, interactive: bool = False, progress: bool = False) -> dict[str, Any]:
    """Every step of the chapter (what ``cmrkit run ldm3d`` executes)."""
    data = load_volumes(cfg)
    rep.dataset = f"{rep.dataset}, {data.meta['n_subjects']} subjects"
    ae = train_autoencoder(cfg, data, progress=progress)
    ae_table = autoencoder_table(cfg, rep, data, ae.model)
    ldm = train_diffusion(cfg, data, ae, progress=progress)
    samples = generate_samples(cfg, data, ae, ldm, progress=progress)
    cache = feature_cache(cfg)
    t51 = table_5_1(cfg, rep, data, samples, cache=cache)
    counts = sample_counts(cfg)
    figure_5_2(rep, data, samples)
    figure_5_3(rep, data, samples, counts)
    figure_5_4(cfg, rep, data, samples, counts, cache=cache)
    checks = generated_checks(cfg, rep, data, samples, ae, progress=progress)
    sample_browser(rep, samples, interactive=interactive)
    return {
        "data": data,
        "autoencoder": ae,
        "autoencoder_table": ae_table,
        "diffusion": ldm,
        "samples": samples,
        "table_5_1": t51,
        "checks": checks,
    }
