"""Chapter 6 models and samples: the frame-wise autoencoder, the conditional latent diffusion model and the
generated sequence sets (test covariates, population draws), cached in ``runs/``."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...runs import SampleSet, check_manifest, is_complete, mark_complete, run_dir, run_key
from .data import CHAPTER, STRUCTURES, SequenceData, Trained, condition_names, subjects_hash


# =============================================================================================== stage 1
def autoencoder_config(cfg: Any, shape: Sequence[int]) -> Any:
    """The frame autoencoder's :class:`~cmrkit.models.autoencoder.VolumeAutoencoderConfig` for sequences of
    ``shape`` ``(X, Y, Z, T)`` under ``cfg.ch6`` (image + 4-class mask)."""
    from ...models.autoencoder import VolumeAutoencoderConfig

    c = cfg.ch6
    x, y, z = (int(v) for v in shape[:3])
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


def _checked_folder(cfg: Any, name: str, payload: Mapping[str, Any], checkpoint: Any) -> Path:
    """The run folder: the given ``checkpoint`` folder after checking its settings, else :func:`run_dir`."""
    if checkpoint is None:
        return run_dir(cfg, CHAPTER, name, payload)
    folder = Path(checkpoint)
    if folder.is_file():
        folder = folder.parent
    check_manifest(folder, run_key(cfg, CHAPTER, name, payload))
    return folder


def _ae_frames(cfg: Any, data: SequenceData) -> list[int]:
    n = int(cfg.ch6.ae_frames)
    t = data.frames
    if not 1 <= n <= t:
        raise ValueError(f"ch6.ae_frames must be in 1..{t} (frames per sequence), got {n}")
    return sorted({int(v) for v in np.round(np.linspace(0, t, n, endpoint=False)).astype(int)})


def train_autoencoder(cfg: Any, data: SequenceData, *, checkpoint: Any = None, progress: bool = False) -> Trained:
    """Train (or reload) the frame-wise image + mask autoencoder; returns :class:`Trained`
    (``model`` a :class:`~cmrkit.models.cond_diffusion.SequenceAutoencoder`).

    Every training sequence contributes ``ch6.ae_frames`` frames evenly spread over the cycle (all of
    them by default at ``paper``) as independent volumes; loss L1 + CE + ``ch6.kl_weight`` KL (thesis:
    L1 + KL 1e-6; the CE term trains the mask channels the generated sequences carry), Adam
    (``ch6.ae_lr``), batch ``ch6.ae_batch_size``, ``ch6.ae_epochs`` epochs, the epoch with the lowest
    validation loss kept (as the thesis). Keyed in ``runs/`` by every setting and the subject lists.
    """
    from ...models.autoencoder import AutoencoderLoss
    from ...models.cond_diffusion import FrameDataset, SequenceAutoencoder
    from ...train import fit, save_model

    c = cfg.ch6
    mcfg = autoencoder_config(cfg, data.shape)
    frames = _ae_frames(cfg, data)
    model_d = mcfg.to_dict()
    model_d.pop("use_flash_attention")
    payload = {
        "model": model_d,
        "frames": data.frames,
        "ae_frames": frames,
        "epochs": int(c.ae_epochs),
        "batch_size": int(c.ae_batch_size),
        "lr": float(c.ae_lr),
        "kl_weight": float(c.kl_weight),
        "roi_mm": float(c.roi_mm),
        "train": subjects_hash(data, "train"),
        "val": subjects_hash(data, "val"),
    }
    folder = _checked_folder(cfg, "autoencoder", payload, checkpoint)
    seq = SequenceAutoencoder(mcfg, data.frames, seed=int(cfg.seed))
    tr, va = data.index("train"), data.index("val")
    res = fit(
        seq.frame,
        FrameDataset(data.images[tr], data.labels[tr], frames),
        FrameDataset(data.images[va], data.labels[va], frames) if len(va) else None,
        loss_fn=AutoencoderLoss(float(c.kl_weight)),
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
    seq.frame = res.model
    seq.to("cpu").eval()
    if not is_complete(folder):
        save_model(folder / "model.pt", seq, seq.to_config(), extra={"best_epoch": int(res.best_epoch)})
        mark_complete(folder, best_epoch=int(res.best_epoch), best_val=float(res.best_val))
    return Trained(seq, res.history, int(res.best_epoch), folder)


def reconstruct(model: Any, images: np.ndarray, labels: np.ndarray, *, device: str = "cpu", batch_size: int = 2):
    """Sequence reconstructions (decoded latent means): images ``(N, X, Y, Z, T)`` in [0, 1] and labels."""
    import torch

    from ...models.autoencoder import split_output
    from ...models.cond_diffusion import encode_sequences

    out_i, out_l = [], []
    for s in range(0, len(images), batch_size):
        mu, _ = encode_sequences(model, images[s : s + batch_size], labels[s : s + batch_size], device=device)
        with torch.no_grad():
            img, lab = split_output(model.decode(mu.to(next(model.parameters()).device)).float())
        out_i.append(img.cpu().numpy())
        out_l.append(lab.cpu().numpy())
    model.to("cpu")
    return np.concatenate(out_i).astype(np.float32), np.concatenate(out_l)


def frame_slices(seq: np.ndarray, frames: Sequence[int] | None = None) -> np.ndarray:
    """``(N, X, Y, Z, T)`` -> ``(N, 1, F*Z, Y, X)``: the XY slices (row = y) of the chosen frames of each
    sequence stacked on one axis (the image metrics average over it per sequence)."""
    a = np.asarray(seq)
    if frames is not None:
        a = a[..., list(frames)]
    n, x, y, z, t = a.shape
    return np.ascontiguousarray(np.transpose(a, (0, 4, 3, 2, 1)).reshape(n, 1, t * z, y, x))


def eval_frames(cfg: Any, n_frames: int) -> list[int]:
    k = int(cfg.ch6.eval_frames)
    if not 1 <= k <= n_frames:
        raise ValueError(f"ch6.eval_frames must be in 1..{n_frames}, got {k}")
    return sorted({int(v) for v in np.round(np.linspace(0, n_frames, k, endpoint=False)).astype(int)})


# =============================================================================================== stage 2
def diffusion_config(cfg: Any, latent_shape: Sequence[int], space: Any) -> Any:
    """The :class:`~cmrkit.models.cond_diffusion.ConditionalDiffusionConfig` of ``cfg.ch6`` for a sequence
    latent ``(T*c, X', Y')`` and a :class:`~cmrkit.models.conditioning.ConditionSpace`."""
    from ...models.cond_diffusion import PRIORS, ConditionalDiffusionConfig
    from ...models.diffusion import LatentDiffusionConfig

    c = cfg.ch6
    prior = c.get("diffusion_prior", "isotropic")
    if prior not in PRIORS:
        raise ValueError(f"ch6.diffusion_prior must be one of {', '.join(PRIORS)}, got {prior!r}")
    base = LatentDiffusionConfig(
        latent_shape=tuple(int(v) for v in latent_shape),
        channels=tuple(int(v) for v in c.diffusion_channels),
        attention_levels=tuple(bool(v) for v in c.diffusion_attention),
        num_res_blocks=int(c.diffusion_res_blocks),
        timesteps=int(c.timesteps),
        loss=str(c.diffusion_loss),
        use_flash_attention=str(cfg.device).startswith("cuda"),
    )
    return ConditionalDiffusionConfig(
        base=base,
        space=space.to_dict(),
        cross_attention_dim=int(c.cross_attention_dim),
        n_tokens=int(c.condition_tokens),
        encoder_hidden=int(c.encoder_hidden),
        cond_dropout=float(c.cond_dropout),
        prior=prior,
    )


def condition_space(cfg: Any, data: SequenceData) -> Any:
    """The :class:`~cmrkit.models.conditioning.ConditionSpace` of ``ch6.conditions``: normalisation from the
    training split, allowed ranges from the whole cohort (every model of chapter 6 encodes covariates with it)."""
    from ...models.conditioning import ConditionSpace

    return ConditionSpace.fit(data.covariates.iloc[data.index("train")], condition_names(cfg), cohort=data.covariates)


def train_diffusion(
    cfg: Any, data: SequenceData, autoencoder: Trained, *, checkpoint: Any = None, progress: bool = False
) -> Trained:
    """Train (or reload) the conditional latent diffusion model; returns :class:`Trained`.

    The covariates' normalisation comes from the training split and their allowed ranges from the whole
    cohort (:meth:`cmrkit.models.conditioning.ConditionSpace.fit`); both are stored in the checkpoint config. The
    autoencoder's sequence latents of the training (and validation) sequences are computed once;
    ``scale_factor`` = 1 / std of one latent draw per training sequence and, with ``ch6.diffusion_prior:
    channel_covariance``, the whitening of the frames' channels from the same draw
    (:func:`cmrkit.models.diffusion.channel_whitening`); ``ch6.diffusion_iterations``
    steps of batch ``ch6.diffusion_batch_size``, Adam (lr ``ch6.diffusion_lr``, betas (0.9, 0.99) as
    the thesis), condition dropout ``ch6.cond_dropout``; the final weights are kept, or their exponential
    moving average when ``ch6.diffusion_ema`` is a decay (null: the raw final weights). Keyed in ``runs/``
    by the settings, the covariate statistics and the autoencoder's run.
    """
    from ...models.cond_diffusion import (
        ConditionalDiffusionLoss,
        ConditionalLatentDataset,
        ConditionalLatentDiffusion,
        encode_sequences,
    )
    from ...models.diffusion import channel_whitening, compute_scale_factor, fit_latent_diffusion
    from ...train import ema_decay_setting

    c = cfg.ch6
    ema = ema_decay_setting(c.get("diffusion_ema"), "ch6.diffusion_ema")
    ae, ae_folder = autoencoder.model, autoencoder.folder
    tr, va = data.index("train"), data.index("val")
    space = condition_space(cfg, data)
    mcfg = diffusion_config(cfg, ae.latent_shape, space)
    iters, bs = int(c.diffusion_iterations), int(c.diffusion_batch_size)
    if iters < 1 or bs < 1:
        raise ValueError(f"ch6.diffusion_iterations and ch6.diffusion_batch_size must be >= 1, got {iters}, {bs}")
    model_d = mcfg.to_dict()
    model_d["base"].pop("use_flash_attention")
    if model_d["prior"] == "isotropic":  # the default, so runs trained before the option keep their keys
        model_d.pop("prior")
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
    mu, sigma = encode_sequences(ae, data.images[tr], data.labels[tr], device=cfg.device)
    scale = compute_scale_factor(mu, sigma, seed=int(cfg.seed))
    model = ConditionalLatentDiffusion(mcfg, seed=int(cfg.seed))
    model.set_scale_factor(scale)
    if mcfg.prior == "channel_covariance":
        model.set_whitening(*channel_whitening(mu * scale, sigma * scale, seed=int(cfg.seed)))
    cond = space.encode(data.covariates.iloc[tr])
    val = None
    if len(va):
        vmu, vsig = encode_sequences(ae, data.images[va], data.labels[va], device=cfg.device)
        val = ConditionalLatentDataset(vmu, vsig, space.encode(data.covariates.iloc[va]))
    res = fit_latent_diffusion(
        model,
        lambda length: ConditionalLatentDataset(mu, sigma, cond, length=length),
        val,
        ConditionalDiffusionLoss(),
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
def guidance_weight(cfg: Any) -> float:
    w = float(cfg.ch6.guidance)
    if not (math.isfinite(w) and w >= 0):
        raise ValueError(f"ch6.guidance must be a number >= 0, got {cfg.ch6.guidance!r}")
    return w


def _sample_set(
    cfg: Any,
    name: str,
    data: SequenceData,
    autoencoder: Trained,
    diffusion: Trained,
    conditions: pd.DataFrame,
    meta: Mapping[str, Any],
    *,
    stream: int,
    keep_images: bool,
    progress: bool,
) -> SampleSet:
    """Generate (or reload) one sequence per row of ``conditions`` into a :class:`SampleSet` run folder."""
    from ...models.cond_diffusion import generate_sequences
    from ...models.diffusion import sample_seeds

    ldm = diffusion.model
    names = list(ldm.space.names)
    cond = ldm.space.as_array(conditions)
    steps, w = int(cfg.ch6.ddim_steps), guidance_weight(cfg)
    frames = eval_frames(cfg, data.frames)
    payload = {
        "n": len(cond),
        "conditions": hashlib.sha1(np.ascontiguousarray(cond).tobytes()).hexdigest()[:12],
        "ddim_steps": steps,
        "guidance": w,
        "image_frames": frames if keep_images else None,
        "diffusion": diffusion.folder.name,
        "stream": stream,
    }
    folder = run_dir(cfg, CHAPTER, name, payload)
    if is_complete(folder) and (folder / SampleSet.FILE).is_file():
        return SampleSet.load(folder)
    seeds = sample_seeds(int(cfg.seed), len(cond), stream=stream)
    gen = generate_sequences(
        autoencoder.model,
        ldm,
        conditions[names] if isinstance(conditions, pd.DataFrame) else conditions,
        seeds,
        guidance=w,
        ddim_steps=steps,
        batch_size=int(cfg.ch6.sample_batch_size),
        image_frames=frames if keep_images else [],
        device=cfg.device,
        progress=progress,
    )
    c, x, y = ldm.latent_shape
    t = data.frames
    arrays = {
        "labels": gen.labels,
        "latent": np.ascontiguousarray(gen.latents.reshape(len(cond), t, c // t, x, y).transpose(0, 3, 4, 2, 1)),
    }
    if keep_images:
        arrays["image"] = gen.images.astype(np.float16)
    ss = SampleSet(
        arrays,
        seeds,
        data.reference_affine,
        meta={
            "chapter": CHAPTER,
            "model": "conditional latent diffusion (cmrkit.models.cond_diffusion) + SequenceAutoencoder",
            "sampler": f"DDIM, {steps} steps, eta 0, leading timestep spacing; classifier-free guidance w = {w:g}",
            "condition_names": names,
            "image_frames": frames if keep_images else [],
            "labels": {str(k): v for k, v in STRUCTURES.items()},
            "intensity": "[0, 1] (float16)",
            "axes": "labels (N, X, Y, Z, T); image (N, X, Y, Z, F) at image_frames; latent (N, X', Y', c, T)",
            "slice_order": "base -> apex",
            "frame_0": "ED",
            "scale_factor": float(ldm.scale_factor),
            "noise_prior": ldm.config.prior,
            **dict(meta),
        },
        conditions=cond,
    )
    ss.save(folder)
    mark_complete(folder, n=len(cond))
    return ss


def generate_test_samples(
    cfg: Any, data: SequenceData, autoencoder: Trained, diffusion: Trained, *, progress: bool = False
) -> SampleSet:
    """``ch6.samples_per_condition`` sequences for the covariates of every test subject (thesis: 50).

    Sample ``i * n + j`` is the ``j``-th sequence for test subject ``i`` (``meta["subjects"]``), drawn
    from seed ``sample_seeds(cfg.seed, N, stream=61)[i * n + j]`` with DDIM (``ch6.ddim_steps``) and
    guidance ``ch6.guidance``. Labels of every frame, images of ``ch6.eval_frames`` frames and the
    latents are kept (:class:`cmrkit.runs.SampleSet` with ``conditions`` in raw units).
    """
    n = int(cfg.ch6.samples_per_condition)
    if n < 1:
        raise ValueError(f"ch6.samples_per_condition must be >= 1, got {n}")
    te = data.index("test")
    cond = data.covariates.iloc[np.repeat(te, n)].reset_index(drop=True)
    subjects = np.repeat(data.subject[te], n).tolist()
    return _sample_set(
        cfg,
        "test_samples",
        data,
        autoencoder,
        diffusion,
        cond,
        {"subjects": subjects, "samples_per_condition": n},
        stream=61,
        keep_images=True,
        progress=progress,
    )


def population_conditions(cfg: Any, data: SequenceData, space: Any, n: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``n`` condition sets for the population-level analyses, and how they were made.

    Phantom: drawn from the phantom's own covariate model (:func:`cmrkit.phantom.covariates.sample_covariates`,
    seeded), i.e. new subjects of the same population, redrawn when a covariate falls outside the
    model's allowed (training) range. Other data sets (no covariate model): the test subjects'
    covariates, cycled.
    """
    if n < 1:
        raise ValueError(f"ch6.n_population must be >= 1, got {n}")
    if cfg.dataset != "phantom":
        te = data.index("test")
        rows = data.covariates.iloc[te[np.arange(n) % len(te)]].reset_index(drop=True)
        return rows, {"source": "test subjects' covariates (cycled)"}
    from ...models.conditioning import ConditionError
    from ...phantom.covariates import load_phenotype_model, sample_covariates

    model = load_phenotype_model()
    rng = np.random.default_rng([int(cfg.seed), 62])
    rows, rejected = [], 0
    while len(rows) < n:
        cov = sample_covariates(rng, model)
        try:
            space.validate({k: cov[k] for k in space.names})
        except ConditionError:
            rejected += 1
            if rejected > 100 * n:
                raise ValueError(
                    "population_conditions: the phantom's covariate model rarely falls inside the training ranges"
                ) from None
            continue
        rows.append({k: cov[k] for k in data.covariates.columns if k in cov})
    return pd.DataFrame(rows, columns=list(data.covariates.columns)), {
        "source": "phantom covariate model (cmrkit.phantom.covariates.sample_covariates), new draws",
        "rejected_outside_training_range": rejected,
    }


def generate_population_samples(
    cfg: Any, data: SequenceData, autoencoder: Trained, diffusion: Trained, *, progress: bool = False
) -> SampleSet:
    """One sequence for each of ``ch6.n_population`` condition sets of :func:`population_conditions`
    (phantom: new covariate draws of the same population); labels and latents only."""
    cond, how = population_conditions(cfg, data, diffusion.model.space, int(cfg.ch6.n_population))
    return _sample_set(
        cfg,
        "population_samples",
        data,
        autoencoder,
        diffusion,
        cond,
        how,
        stream=62,
        keep_images=False,
        progress=progress,
    )
