"""Learned tag tracking: training data from the phantom, the training recipe, and tracking with the network.

Training data
    :func:`training_slices` renders phantom subjects of a cohort seed that no evaluation uses, under
    acquisitions drawn from :data:`cmrkit.tagging.acquisition.TRAIN_RANGES` (tag fading, SNR, blur,
    contrast, shading, pixel size, tag spacing and angle, zero padding, missing frames), and keeps a
    crop around the heart with the trajectories of the 168 landmarks and of random wall points.
    :class:`PointPatchDataset` serves one point per item: its Eulerian patch sequence
    (:func:`cmrkit.models.tag_tracker.extract_patches`) and its true displacement in every frame.
Recipe
    :func:`train_tracker` fits :class:`cmrkit.models.tag_tracker.TagTrackerNet` with the kit's loop
    :func:`cmrkit.train.fit` (Adam, validation-loss model selection on held-out subjects). Loss per
    point: the mean end-point error over the valid frames ``|d_hat - d|`` (robust, the metric the
    tracker is judged by) plus ``0.1 x`` the Laplace negative log-likelihood of the detached error
    under the predicted ``sigma`` (so that sigma learns the expected error without pulling on the
    displacement). On-the-fly augmentation (torch RNG re-seeded by ``fit``): the eight symmetries of
    the square (patch and displacement transformed together) and an intensity gamma.
Tracking
    :func:`track_learned` predicts the trajectory of each of the 168 landmarks (and of wall points)
    from its patch sequence, then fits the smooth wall-displacement model of :mod:`cmrkit.tagging.wall`
    to them in every frame (weights ``1 / sigma^2``), which removes point-to-point noise before strain
    is computed. An optional Lagrangian refiner (``refiner_steps > 0``) re-centres each point on its
    frame-0 patch; measured at the ``cpu`` profile it made tracking worse (it pulls neighbouring points
    of the thin wall towards one displacement, so radial thickening is underestimated: ES E_rr bias
    -0.13 instead of +0.01 on the test split) and took most of the tracking time, so the shipped
    profiles train none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.tag_tracker import (
    TagRefinerConfig,
    TagRefinerNet,
    TagTrackerConfig,
    TagTrackerNet,
    extract_patches,
    normalise_pairs,
    normalise_patches,
    sample_patches,
)
from ..strain import N_LANDMARKS
from .acquisition import TRAIN_RANGES, AcquisitionRanges, phantom_tagged_slices

__all__ = [
    "TrackerTraining",
    "tracker_training",
    "SliceRecord",
    "training_slices",
    "PointPatchDataset",
    "PointPairDataset",
    "augment_batch",
    "tracker_loss",
    "refiner_loss",
    "train_learned_tracker",
    "LearnedTracker",
    "ensure_learned_tracker",
    "predict_trajectories",
    "refine_trajectories",
    "track_learned",
]


@dataclass(frozen=True)
class TrackerTraining:
    """Settings of one learned-tracker training; all of them key the cached run (profile section
    ``tagging``, :func:`tracker_training`).

    Attributes
    ----------
    subjects, val_subjects
        Phantom subjects rendered for training / validation (3 slices each).
    cohort_seed
        Phantom cohort seed of those subjects. The kit's cohorts use seed 0 by default and
        ``benchmarks/tracking.py`` tests on seeds 11 (realistic) and 12 (stress), so no slice the
        tracker is evaluated on was seen in training.
    extra_points
        Random wall points per slice besides the 168 landmarks (more, and less regular, targets).
    steps, refiner_steps
        Optimiser steps of the trajectory network and of the Lagrangian refiner (0: no refiner).
    batch_size, lr, weight_decay
        Adam settings of :func:`cmrkit.train.fit`; the last quarter of each network's steps runs at
        ``lr / 5`` (a second :func:`~cmrkit.train.fit` from the first one's weights).
    seed
        Seed of the training loops (shuffling, augmentation).
    jobs
        Worker processes rendering the training data (does not change the data).
    net, refiner
        :class:`~cmrkit.models.tag_tracker.TagTrackerConfig` / ``TagRefinerConfig`` fields.
    ranges
        Acquisition ranges of the training data.
    """

    subjects: int = 80
    val_subjects: int = 6
    cohort_seed: int = 1000
    extra_points: int = 200
    steps: int = 3000
    refiner_steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-5
    seed: int = 0
    jobs: int = 1
    net: dict[str, Any] = field(default_factory=lambda: TagTrackerConfig().to_dict())
    refiner: dict[str, Any] = field(default_factory=lambda: TagRefinerConfig().to_dict())
    ranges: AcquisitionRanges = TRAIN_RANGES

    def key(self) -> dict[str, Any]:
        """The settings that change the trained networks (``jobs`` does not)."""
        d = asdict(self)
        d.pop("jobs")
        d["ranges"] = self.ranges.to_dict()
        return d


def tracker_training(cfg: Any) -> TrackerTraining:
    """The :class:`TrackerTraining` of a profile (its ``tagging`` section)."""
    t = cfg.tagging
    return TrackerTraining(
        subjects=int(t.train_subjects),
        val_subjects=int(t.val_subjects),
        cohort_seed=int(t.cohort_seed),
        extra_points=int(t.extra_points),
        steps=int(t.steps),
        refiner_steps=int(t.refiner_steps),
        batch_size=int(t.batch_size),
        lr=float(t.lr),
        seed=int(t.seed),
        jobs=int(t.jobs),
        net=TagTrackerConfig(
            patch=int(t.patch), channels=tuple(int(c) for c in t.channels), strides=tuple(int(c) for c in t.strides)
        ).to_dict(),
        refiner=TagRefinerConfig(
            patch=int(t.patch),
            channels=tuple(int(c) for c in t.refiner_channels),
            strides=tuple(int(c) for c in t.refiner_strides),
        ).to_dict(),
    )


@dataclass
class SliceRecord:
    """A training slice cropped around the heart: ``images (T, h, w)`` float32, trajectories
    ``points (T, 2, N)`` in crop pixels (NaN where missing), the first 168 being the landmarks, and
    the tag period in pixels."""

    images: np.ndarray
    points: np.ndarray
    period_px: float


def _crop(images: np.ndarray, points: np.ndarray, margin: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = images.shape[1:]
    lo = np.floor(np.nanmin(points, axis=(0, 2))).astype(int) - margin
    hi = np.ceil(np.nanmax(points, axis=(0, 2))).astype(int) + margin + 1
    x0, y0 = max(int(lo[0]), 0), max(int(lo[1]), 0)
    x1, y1 = min(int(hi[0]), w), min(int(hi[1]), h)
    pts = points - np.array([x0, y0], float)[None, :, None]
    return np.ascontiguousarray(images[:, y0:y1, x0:x1]), pts


def _subject_records(index: int, seed: int, ranges: AcquisitionRanges, extra: int, frames: int, margin: int):
    out = []
    for ts in phantom_tagged_slices(index, seed=seed, acquisition=ranges, extra_points=extra, tag_frames=frames):
        pts = np.concatenate([ts.landmarks, ts.extra["points"]], axis=2)
        im, p = _crop(ts.images, pts, margin)
        out.append(SliceRecord(im, p.astype(np.float32), ts.tag_spacing_px))
    return out


def training_slices(
    indices: Sequence[int],
    *,
    seed: int,
    ranges: AcquisitionRanges = TRAIN_RANGES,
    extra_points: int = 200,
    frames: int = 20,
    patch: int = 32,
    n_jobs: int = 1,
) -> list[SliceRecord]:
    """Render phantom subjects ``indices`` of cohort ``seed`` under acquisitions drawn from ``ranges``
    and crop each slice around the heart (margin: a patch sampled at the coarsest grid the tag
    periods of ``ranges`` need, plus 2 pixels)."""
    hi_period = ranges.tag_spacing_mm[1] / ranges.pixel_mm[0]
    margin = int(math.ceil(patch * hi_period / TagTrackerConfig().period_px / 2)) + 2
    args = [(int(i), int(seed), ranges, int(extra_points), int(frames), margin) for i in indices]
    if n_jobs == 1 or len(args) < 2:
        res = [_subject_records(*a) for a in args]
    else:
        from joblib import Parallel, delayed

        res = Parallel(n_jobs=n_jobs)(delayed(_subject_records)(*a) for a in args)
    return [r for sub in res for r in sub]


class PointPatchDataset(torch.utils.data.Dataset):
    """One (slice, point) per item: ``x`` normalised patches ``(T, P, P)`` sampled every
    ``period / period_px`` pixels, ``y`` displacement ``(T, 2)`` from frame 0 in units of that
    sampling step, ``valid`` ``(T,)`` (frames with a known position)."""

    def __init__(self, records: Sequence[SliceRecord], patch: int, frames: int, period_px: float = 4.4) -> None:
        self.records = list(records)
        self.patch, self.frames = int(patch), int(frames)
        self.period_px = float(period_px)
        self.index = np.array(
            [(r, j) for r, rec in enumerate(self.records) for j in range(rec.points.shape[2])], dtype=np.int64
        )

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        r, j = self.index[i]
        rec = self.records[r]
        traj = rec.points[:, :, j].astype(float)  # (T, 2)
        p0 = traj[0][:, None]
        step = rec.period_px / self.period_px
        x = normalise_patches(extract_patches(rec.images, p0, self.patch, self.frames, step))[0]
        t_n = min(self.frames, traj.shape[0])
        y = np.zeros((self.frames, 2), np.float32)
        valid = np.zeros(self.frames, bool)
        d = (traj[:t_n] - traj[0]) / step
        ok = np.isfinite(d).all(1) & (np.abs(rec.images[:t_n]).reshape(t_n, -1).max(1) > 0)
        y[:t_n][ok] = d[ok]
        valid[:t_n] = ok
        return {"x": torch.from_numpy(x), "y": torch.from_numpy(y), "valid": torch.from_numpy(valid)}


def augment_batch(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eight symmetries of the square per sample (patches ``(B, C, P, P)`` and displacements
    ``(B, T, 2)`` transformed together) and an intensity gamma, from the torch RNG."""
    b = x.shape[0]
    dev = x.device
    fx = torch.rand(b, device=dev) < 0.5
    fy = torch.rand(b, device=dev) < 0.5
    tr = torch.rand(b, device=dev) < 0.5
    x = torch.where(fx[:, None, None, None], torch.flip(x, [-1]), x)
    y = torch.where(fx[:, None, None], y * torch.tensor([-1.0, 1.0], device=dev), y)
    x = torch.where(fy[:, None, None, None], torch.flip(x, [-2]), x)
    y = torch.where(fy[:, None, None], y * torch.tensor([1.0, -1.0], device=dev), y)
    x = torch.where(tr[:, None, None, None], x.transpose(-1, -2), x)
    y = torch.where(tr[:, None, None], y.flip(-1), y)
    gamma = torch.exp((torch.rand(b, 1, 1, 1, device=dev) - 0.5) * 0.7)
    x = (x.clamp_min(0.0) ** gamma).clamp(0.0, 4.0)
    return x, y


def tracker_loss(model: TagTrackerNet, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
    """End-point error over valid frames + 0.1 x Laplace NLL of the detached error (module docstring)."""
    x, y, valid = batch["x"], batch["y"], batch["valid"].float()
    if model.training:
        x, y = augment_batch(x, y)
    disp, log_sigma = model(x)
    err = torch.sqrt(((disp - y) ** 2).sum(-1) + 1e-8)  # (B, T)
    n = valid.sum().clamp_min(1.0)
    epe = (err * valid).sum() / n
    nll = ((err.detach() / log_sigma.exp() + log_sigma) * valid).sum() / n
    return epe + 0.1 * nll, {"epe_px": epe.detach(), "nll": nll.detach()}


@torch.no_grad()
def predict_trajectories(
    model: TagTrackerNet, images: np.ndarray, points: np.ndarray, period_px: float, *, batch: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Trajectories ``(T, 2, N)`` (pixels) and predicted errors ``sigma (T, N)`` (pixels) of the points
    ``(2, N)`` given at frame 0 of ``images (T, H, W)`` whose tag period is ``period_px`` pixels.
    Frames beyond the network's ``T`` are NaN."""
    cfg = model.config
    im = np.asarray(images, np.float32)
    pts = np.asarray(points, float)
    t_n = im.shape[0]
    step = float(period_px) / cfg.period_px
    patches = normalise_patches(extract_patches(im, pts, cfg.patch, cfg.frames, step))
    model.eval()
    dev = next(model.parameters()).device
    disp, lsig = [], []
    for i in range(0, pts.shape[1], batch):
        d, s = model(torch.from_numpy(patches[i : i + batch]).to(dev))
        disp.append(d.cpu().numpy())
        lsig.append(s.cpu().numpy())
    d = np.concatenate(disp) * step  # (N, T', 2)
    s = np.exp(np.concatenate(lsig)) * step  # (N, T')
    out = np.full((t_n, 2, pts.shape[1]), np.nan)
    sig = np.full((t_n, pts.shape[1]), np.nan)
    t_m = min(t_n, cfg.frames)
    out[:t_m] = pts[None] + d[:, :t_m].transpose(1, 2, 0)
    sig[:t_m] = s[:, :t_m].T
    present = np.abs(im).reshape(t_n, -1).max(1) > 0
    out[~present] = np.nan
    sig[~present] = np.nan
    return out, sig


class PointPairDataset(torch.utils.data.Dataset):
    """One (slice, point, frame >= 1) per item for the Lagrangian refiner: ``x`` ``(2, P, P)`` = frame-0
    patch at the point's frame-0 position and frame-t patch at its true position plus an offset ``e``
    (each normalised by its own mean), ``y = -e`` (px). The offsets are deterministic per item and
    ``seed``: Gaussian with a per-item scale uniform in ``(0, max_offset)`` px, clipped to 3 scales."""

    def __init__(
        self,
        records: Sequence[SliceRecord],
        patch: int,
        *,
        max_offset: float = 1.6,
        seed: int = 0,
        period_px: float = 4.4,
    ) -> None:
        self.records = list(records)
        self.patch = int(patch)
        self.period_px = float(period_px)
        self.max_offset, self.seed = float(max_offset), int(seed)
        idx = []
        for r, rec in enumerate(self.records):
            ok = np.isfinite(rec.points).all(1) & (np.abs(rec.images).reshape(len(rec.images), -1).max(1) > 0)[:, None]
            t, j = np.nonzero(ok[1:])
            idx.append(np.stack([np.full_like(t, r), j, t + 1], 1))
        self.index = np.concatenate(idx).astype(np.int64) if idx else np.zeros((0, 3), np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        r, j, t = self.index[i]
        rec = self.records[r]
        g = np.random.default_rng([self.seed, int(i)])
        s = g.uniform(0.0, self.max_offset)
        e = np.clip(g.normal(0.0, s, 2), -3 * s - 1e-6, 3 * s + 1e-6)
        step = rec.period_px / self.period_px
        p0 = rec.points[0, :, j].astype(float)[:, None]
        pt = rec.points[t, :, j].astype(float)[:, None] + step * e[:, None]
        x = np.stack(
            [
                sample_patches(rec.images[0], p0, self.patch, step)[0],
                sample_patches(rec.images[t], pt, self.patch, step)[0],
            ]
        )
        return {"x": torch.from_numpy(normalise_pairs(x)), "y": torch.from_numpy((-e).astype(np.float32))}


def refiner_loss(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
    """End-point error + 0.1 x Laplace NLL of the detached error, eight square symmetries when training."""
    x, y = batch["x"], batch["y"]
    if model.training:
        x5, y3 = augment_batch(x, y[:, None, :])
        x, y = x5, y3[:, 0, :]
    d, log_sigma = model(x)
    err = torch.sqrt(((d - y) ** 2).sum(-1) + 1e-8)
    epe = err.mean()
    nll = (err.detach() / log_sigma.exp() + log_sigma).mean()
    return epe + 0.1 * nll, {"epe_px": epe.detach(), "nll": nll.detach()}


@torch.no_grad()
def refine_trajectories(
    refiner: Any, images: np.ndarray, traj: np.ndarray, period_px: float, *, n_iter: int = 2, batch: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """Apply the Lagrangian refiner ``n_iter`` times to every point and frame of ``traj (T, 2, N)``
    (frame 0 = the reference positions) of ``images`` with tag period ``period_px``; returns the
    refined trajectories and sigma ``(T, N)`` (pixels). ``batch`` pairs go through the network at once
    (the result does not depend on it; 128 ran 1.4-1.7x faster than 1024 on a 2-core CPU, whose caches
    hold the smaller activations: benchmarks/README.md)."""
    im = np.asarray(images, np.float32)
    out = np.array(traj, float)
    t_n, _, n = out.shape
    sig = np.full((t_n, n), np.nan)
    p = refiner.config.patch
    step = float(period_px) / refiner.config.period_px
    tmpl = sample_patches(im[0], out[0], p, step)
    frames = [t for t in range(1, t_n) if np.isfinite(out[t]).all() and np.abs(im[t]).max() > 0]
    if not frames:
        return out, sig
    dev = next(refiner.parameters()).device
    refiner.eval()
    for _ in range(max(int(n_iter), 1)):
        pairs = np.stack(
            [np.stack([tmpl, sample_patches(im[t], out[t], p, step)], axis=1) for t in frames]
        )  # (F, N, 2, P, P)
        flat = normalise_pairs(pairs.reshape(-1, 2, p, p))
        ds, ls = [], []
        for i in range(0, len(flat), batch):
            d, s = refiner(torch.from_numpy(flat[i : i + batch]).to(dev))
            ds.append(d.cpu().numpy())
            ls.append(s.cpu().numpy())
        d = np.concatenate(ds).reshape(len(frames), n, 2) * step
        s = np.exp(np.concatenate(ls)).reshape(len(frames), n) * step
        for f, t in enumerate(frames):
            out[t] += d[f].T
            sig[t] = s[f]
    return out, sig


# --------------------------------------------------------------------------------------------- training
def _fit_two_phase(
    model: torch.nn.Module,
    train_ds: torch.utils.data.Dataset,
    val_ds: torch.utils.data.Dataset | None,
    loss_fn: Any,
    settings: TrackerTraining,
    steps: int,
    folder: Path | None,
    device: str,
    progress: bool,
) -> tuple[torch.nn.Module, list[dict[str, float]], float]:
    """``steps`` Adam steps: three quarters at ``lr``, the rest at ``lr / 5`` from the first phase's
    selected weights; returns the model, the joined history and the seconds spent."""
    from ..train import fit

    n1 = max(1, int(round(0.75 * steps)))
    n2 = max(0, int(steps) - n1)
    history: list[dict[str, float]] = []
    seconds = 0.0
    for phase, (n, lr) in enumerate(((n1, settings.lr), (n2, settings.lr / 5.0))):
        if n == 0:
            continue
        per_epoch = max(1, math.ceil(len(train_ds) / settings.batch_size))  # type: ignore[arg-type]
        res = fit(
            model,
            train_ds,
            val_ds,
            loss_fn=loss_fn,
            epochs=max(1, math.ceil(n / per_epoch)),
            batch_size=settings.batch_size,
            lr=lr,
            weight_decay=settings.weight_decay,
            device=device,
            seed=settings.seed + phase,
            amp="none",
            checkpoint_dir=None if folder is None else folder / f"phase{phase + 1}",
            progress=progress,
            max_steps=n,
            grad_clip=5.0,
        )
        model = res.model
        model.train()
        history += [dict(h, phase=phase + 1) for h in res.history]
        seconds += res.seconds
    model.eval()
    return model, history, seconds


def train_learned_tracker(
    settings: TrackerTraining,
    *,
    folder: str | Path | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> LearnedTracker:
    """Render the training data and fit both networks (checkpoints under ``folder``); returns the
    tracker with ``info`` holding the histories, item counts and seconds of each part."""
    import time

    folder = None if folder is None else Path(folder)
    net_cfg = TagTrackerConfig.from_dict(settings.net)
    ref_cfg = TagRefinerConfig.from_dict(settings.refiner)
    t0 = time.perf_counter()
    recs = training_slices(
        range(settings.subjects + settings.val_subjects),
        seed=settings.cohort_seed,
        ranges=settings.ranges,
        extra_points=settings.extra_points,
        frames=net_cfg.frames,
        patch=max(net_cfg.patch, ref_cfg.patch),
        n_jobs=settings.jobs,
    )
    t_data = time.perf_counter() - t0
    n_val = 3 * settings.val_subjects
    train_recs = recs[: len(recs) - n_val]
    # validation on the landmarks of held-out subjects (the points the tracker is used for)
    val_recs = [SliceRecord(r.images, r.points[:, :, :N_LANDMARKS], r.period_px) for r in recs[len(recs) - n_val :]]
    info: dict[str, Any] = {"data_seconds": t_data, "train_slices": len(train_recs), "val_slices": len(val_recs)}
    torch.manual_seed(settings.seed)
    net = TagTrackerNet(**net_cfg.to_dict())
    tr_ds = PointPatchDataset(train_recs, net_cfg.patch, net_cfg.frames)
    va_ds = PointPatchDataset(val_recs, net_cfg.patch, net_cfg.frames) if val_recs else None
    net, hist, sec = _fit_two_phase(
        net,
        tr_ds,
        va_ds,
        tracker_loss,
        settings,
        settings.steps,
        None if folder is None else folder / "net",
        device,
        progress,
    )
    info.update({"net_history": hist, "net_seconds": sec, "net_items": len(tr_ds)})
    refiner = None
    if settings.refiner_steps > 0:
        torch.manual_seed(settings.seed + 1)
        refiner = TagRefinerNet(**ref_cfg.to_dict())
        tr2 = PointPairDataset(train_recs, ref_cfg.patch, seed=settings.seed)
        va2: Any = None
        if val_recs:
            va_full = PointPairDataset(val_recs, ref_cfg.patch, seed=settings.seed + 1)
            keep = np.unique(np.linspace(0, len(va_full) - 1, min(len(va_full), 4000)).astype(int))
            va2 = torch.utils.data.Subset(va_full, keep.tolist())
        refiner, hist2, sec2 = _fit_two_phase(
            refiner,
            tr2,
            va2,
            refiner_loss,
            settings,
            settings.refiner_steps,
            None if folder is None else folder / "refiner",
            device,
            progress,
        )
        info.update({"refiner_history": hist2, "refiner_seconds": sec2, "refiner_items": len(tr2)})
    return LearnedTracker(net, refiner, info)


# --------------------------------------------------------------------------------------------- tracking
@dataclass
class LearnedTracker:
    """The trained networks and their tracking pipeline (:meth:`track`).

    Attributes
    ----------
    net
        The trajectory network (:class:`~cmrkit.models.tag_tracker.TagTrackerNet`).
    refiner
        The Lagrangian refiner (:class:`~cmrkit.models.tag_tracker.TagRefinerNet`) or ``None`` (the
        shipped profiles train none: ``tagging.refiner_steps: 0``; at ``cpu`` it raised the landmark error
        and the ES E_rr bias on the test, realistic and stress sets, ``benchmarks/README.md``).
    refine_iter
        Refiner passes per tracking when there is a refiner.
    info
        What the training recorded (histories, seconds, item counts), and ``folder`` when cached.
    """

    net: TagTrackerNet
    refiner: TagRefinerNet | None = None
    info: dict[str, Any] = field(default_factory=dict)
    tag_spacing_px: float | None = None
    name: str = "learned"
    refine_iter: int = 2

    def track(self, images: np.ndarray, init_landmarks: np.ndarray, *, peaks: Any = None, **kwargs: Any) -> np.ndarray:
        """``(T, 2, 168)`` landmarks (:func:`track_learned`; ``peaks`` give the tag period when known;
        the refiner, when trained, runs ``refine_iter`` times)."""
        kwargs.setdefault("tag_spacing_px", self.tag_spacing_px)
        kwargs.setdefault("refine_iter", self.refine_iter)
        out = track_learned(images, init_landmarks, self.net, refiner=self.refiner, peaks=peaks, **kwargs)
        assert isinstance(out, np.ndarray)
        return out

    def save(self, folder: str | Path) -> None:
        """Write ``net.pt`` (and ``refiner.pt``) with :func:`cmrkit.train.save_model`."""
        from ..train import save_model

        folder = Path(folder)
        save_model(folder / "net.pt", self.net, self.net.config.to_dict())
        if self.refiner is not None:
            save_model(folder / "refiner.pt", self.refiner, self.refiner.config.to_dict())

    @classmethod
    def load(cls, folder: str | Path) -> LearnedTracker:
        """Read what :meth:`save` wrote."""
        from ..train import load_model

        folder = Path(folder)
        if not (folder / "net.pt").is_file():
            raise FileNotFoundError(f"{folder}: no net.pt (not a learned tag tracker folder)")
        net = load_model(folder / "net.pt").model
        refiner = load_model(folder / "refiner.pt").model if (folder / "refiner.pt").is_file() else None
        return cls(net, refiner, {"folder": str(folder)})  # type: ignore[arg-type]


def ensure_learned_tracker(
    cfg: Any,
    *,
    progress: bool = False,
    log: Any = None,
    tag_spacing_px: float | None = None,
    root: str | Path | None = None,
) -> LearnedTracker:
    """The learned tracker of ``cfg``'s profile: loaded from its run folder (:mod:`cmrkit.runs`, keyed
    by every training setting) or trained there first (``log(message)`` says so and how long it took).

    ``tag_spacing_px`` (the tag period in pixels, when known) is used by :meth:`LearnedTracker.track`
    instead of detecting it. ``root`` replaces :data:`cmrkit.runs.RUNS_DIR`.
    """
    import time
    from types import SimpleNamespace

    from ..runs import is_complete, mark_complete, run_dir
    from ..utils import resolve_device

    settings = tracker_training(cfg)
    key = SimpleNamespace(profile=cfg.profile, seed=settings.seed, dataset="phantom", data_dir="rendered")
    folder = run_dir(key, "tagging", "learned_tracker", settings.key(), root=None if root is None else Path(root))
    if is_complete(folder):
        tracker = LearnedTracker.load(folder)
        tracker.tag_spacing_px = tag_spacing_px
        return tracker
    say = log or (lambda msg: None)
    say(
        f"training the learned tag tracker of profile {cfg.profile!r} once ({settings.subjects} phantom subjects, "
        f"{settings.steps} + {settings.refiner_steps} steps); it is cached in {folder}"
    )
    t0 = time.perf_counter()
    device = resolve_device(str(getattr(cfg, "device", "cpu")))
    tracker = train_learned_tracker(settings, folder=folder, device=str(device), progress=progress)
    tracker.net.cpu()
    if tracker.refiner is not None:
        tracker.refiner.cpu()
    tracker.save(folder)
    summary = {k: v for k, v in tracker.info.items() if not k.endswith("history")}
    summary["total_seconds"] = time.perf_counter() - t0
    mark_complete(folder, summary=summary)
    say(f"learned tag tracker trained in {summary['total_seconds'] / 60:.1f} min")
    tracker.info["folder"] = str(folder)
    tracker.tag_spacing_px = tag_spacing_px
    return tracker


def track_learned(
    images: np.ndarray,
    init_landmarks: np.ndarray,
    net: TagTrackerNet,
    *,
    refiner: TagRefinerNet | None = None,
    refine_iter: int = 2,
    peaks: Any = None,
    tag_spacing_px: float | None = None,
    smooth: bool = True,
    wall_points: int = 300,
    n_angular: int = 4,
    transmural_degree: int = 2,
    return_sigma: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Track the 24x7 landmark grid with the networks (module docstring).

    Parameters
    ----------
    images
        ``(T, H, W)`` tagged frames, frame 0 = the frame of ``init_landmarks``; constant (missing)
        frames give NaN landmarks. ``T`` may not exceed the network's frame count.
    init_landmarks
        ``(2, 168)`` frame-0 landmarks (x, y pixels).
    net, refiner
        The trained trajectory network and (optional) Lagrangian refiner, applied ``refine_iter`` times.
    peaks, tag_spacing_px
        The tag peaks or spacing when known; otherwise the tag period is detected on the first two
        frames around the landmarks (:func:`cmrkit.tagging.detect_harmonic_peaks`). The networks see
        the images resampled to their own tag period (``period_px`` of their config).
    smooth
        Fit the smooth wall model (:class:`cmrkit.tagging.wall.WallModel`, ``n_angular`` harmonics x
        Legendre degree ``transmural_degree``) to the predicted displacements of the landmarks and of
        up to ``wall_points`` frame-0 wall pixels in every frame, weighted by ``1 / sigma^2``; the
        landmarks are the model at their frame-0 positions. ``False`` returns the raw predictions.
    return_sigma
        Also return the predicted error ``sigma (T, 168)`` of every landmark (pixels).
    """
    from .wall import WallModel, robust_fit, wall_pixels

    im = np.asarray(images, np.float32)
    x0 = np.asarray(init_landmarks, float)
    if im.ndim != 3:
        raise ValueError(f"images must be (T, H, W), got shape {im.shape}")
    if im.shape[0] > net.config.frames:
        raise ValueError(
            f"the learned tracker was trained on sequences of {net.config.frames} frames, got {im.shape[0]}; "
            "use the harp tracker for longer sequences"
        )
    if x0.shape != (2, N_LANDMARKS) or not np.isfinite(x0).all():
        raise ValueError(f"init_landmarks must be a finite (2, {N_LANDMARKS}) array, got shape {x0.shape}")
    if not np.abs(im[0]).max() > 0:
        raise ValueError("images: frame 0 is empty (constant); tracking needs the tagged ED frame")
    pts = x0
    if smooth and wall_points > 0:
        wp = wall_pixels(x0, im.shape[1:])
        if wp.shape[1] > wall_points:
            wp = wp[:, np.unique(np.linspace(0, wp.shape[1] - 1, wall_points).round().astype(int))]
        pts = np.concatenate([x0, wp], axis=1)
    if peaks is None:
        from .harp import detect_harmonic_peaks
        from .tracker import roi_around

        h, w = im.shape[1:]
        peaks = detect_harmonic_peaks(im[: min(2, len(im))], tag_spacing_px=tag_spacing_px, roi=roi_around(x0, h, w))
    period = float(np.mean(peaks.spacing_px))
    traj, sig = predict_trajectories(net, im, pts, period)
    if refiner is not None and refine_iter > 0:
        traj, sig_r = refine_trajectories(refiner, im, traj, period, n_iter=refine_iter)
        sig = np.where(np.isfinite(sig_r), sig_r, sig)
    if not smooth:
        out, s_out = traj[:, :, :N_LANDMARKS], sig[:, :N_LANDMARKS]
        return (out, s_out) if return_sigma else out
    wm = WallModel(x0, n_angular, transmural_degree)
    a_pts, a_lm = wm.basis(pts), wm.basis(x0)
    out = np.full((im.shape[0], 2, N_LANDMARKS), np.nan)
    out[0] = x0
    for t in range(1, im.shape[0]):
        if not np.isfinite(traj[t]).all():
            continue
        w = 1.0 / np.maximum(sig[t], 0.05) ** 2
        coef = robust_fit(a_pts, (traj[t] - pts).T, w / w.max(), float(np.median(sig[t])) + 0.1, wm.penalty)
        out[t] = x0 + (a_lm @ coef).T
    return (out, sig[:, :N_LANDMARKS]) if return_sigma else out
