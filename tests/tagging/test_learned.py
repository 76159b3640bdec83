"""Tests for cmrkit.tagging.learned: training targets, augmentation, the tracking pipeline, caching, CLI."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from cmrkit.io.ferdian import write_ferdian_h5
from cmrkit.models.tag_tracker import TagTrackerConfig
from cmrkit.tagging import HarmonicPeaks, synthetic_tagged_ring
from cmrkit.tagging.learned import (
    LearnedTracker,
    PointPairDataset,
    PointPatchDataset,
    SliceRecord,
    TrackerTraining,
    augment_batch,
    ensure_learned_tracker,
    refine_trajectories,
    track_learned,
    tracker_loss,
    train_learned_tracker,
)


def _blob_record(t_n: int = 6, size: int = 64, v=(0.8, -0.5), period: float = 5.5) -> SliceRecord:
    """A Gaussian blob moving by ``v`` px per frame; one tracked point at its centre; last frame missing."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    c = np.array([30.3, 33.6])
    pos = c[None] + np.arange(t_n)[:, None] * np.asarray(v)[None]
    img = np.stack([1.0 + 5.0 * np.exp(-((xx - p[0]) ** 2 + (yy - p[1]) ** 2) / (2 * 2.0**2)) for p in pos])
    img[-1] = 0.0
    pts = pos[:, :, None].copy()
    pts[-1] = np.nan
    return SliceRecord(img.astype(np.float32), pts.astype(np.float32), period)


def _centroid(p: np.ndarray) -> np.ndarray:
    """Centroid ``(x, y)`` of the blob (intensity above the background) relative to the patch centre."""
    w = np.clip(p - np.median(p), 0, None)
    off = np.arange(p.shape[-1]) - (p.shape[-1] - 1) / 2.0
    return np.array([(w.sum(0) * off).sum(), (w.sum(1) * off).sum()]) / w.sum()


def test_point_patch_targets_are_displacements_on_the_tag_period_grid():
    rec = _blob_record()
    ds = PointPatchDataset([rec], patch=24, frames=8, period_px=4.4)
    assert len(ds) == 1
    item = ds[0]
    step = 5.5 / 4.4
    x, y, valid = item["x"].numpy(), item["y"].numpy(), item["valid"].numpy()
    assert x.shape == (8, 24, 24)
    np.testing.assert_array_equal(valid, [True] * 5 + [False] * 3)  # missing frame 5, padding 6-7
    want = np.arange(5)[:, None] * np.array([0.8, -0.5]) / step
    np.testing.assert_allclose(y[:5], want, atol=1e-5)
    for t in range(5):  # the blob sits where the target says, on the patch grid
        np.testing.assert_allclose(_centroid(x[t]), want[t], atol=0.05)
    assert (x[5:] == 0).all()


def test_augmentation_moves_patches_and_targets_together():
    ds = PointPatchDataset([_blob_record()], patch=24, frames=6, period_px=4.4)
    x = torch.stack([ds[0]["x"]] * 16)
    y = torch.stack([ds[0]["y"]] * 16)
    torch.manual_seed(0)
    xa, ya = augment_batch(x, y)
    assert not torch.equal(xa, x)
    for b in range(16):
        for t in range(1, 5):
            np.testing.assert_allclose(_centroid(xa[b, t].numpy()), ya[b, t].numpy(), atol=0.08)


def test_point_pair_targets_undo_the_offset():
    ds = PointPairDataset([_blob_record()], patch=24, max_offset=1.5, seed=3, period_px=4.4)
    assert len(ds) == 4  # frames 1-4 valid (frame 5 missing)
    for i in range(len(ds)):
        it = ds[i]
        x, y = it["x"].numpy(), it["y"].numpy()
        np.testing.assert_allclose(_centroid(x[0]), 0.0, atol=0.05)
        np.testing.assert_allclose(_centroid(x[1]), y, atol=0.06)
    assert ds[0]["y"].abs().sum() > 0 and torch.equal(ds[2]["y"], ds[2]["y"])


class _ConstantNet(nn.Module):
    """A stand-in network: displacement ``d`` (grid units) in every frame after the first, sigma 1."""

    def __init__(self, frames: int, d: tuple[float, float]) -> None:
        super().__init__()
        self.config = TagTrackerConfig(frames=frames, patch=16, period_px=4.4)
        self.w = nn.Parameter(torch.zeros(1))
        self.d = torch.tensor(d)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t = x.shape[:2]
        disp = self.d.expand(b, t, 2).clone() + 0 * self.w
        disp[:, 0] = 0
        return disp, torch.zeros(b, t)


def test_pipeline_maps_grid_displacements_back_to_pixels():
    s = synthetic_tagged_ring(size=80, n_frames=6, r_endo=12, r_epi=19, tag_spacing_px=5.0, noise=0.02, rng=1)
    imgs = s.images.copy()
    imgs[5] = 0.0
    net = _ConstantNet(8, (1.0, -0.5))
    peaks = HarmonicPeaks.from_spacing(5.0, (45.0, 135.0))  # the period sets the network's sampling grid
    for smooth in (False, True):
        out, sig = track_learned(imgs, s.landmarks[0], net, smooth=smooth, peaks=peaks, return_sigma=True)
        assert out.shape == (6, 2, 168)
        np.testing.assert_allclose(out[0], s.landmarks[0])
        shift = (out[1:5] - s.landmarks[0][None]).reshape(4, 2, -1)
        np.testing.assert_allclose(shift[:, 0], 5.0 / 4.4, atol=1e-6 if not smooth else 1e-3)
        np.testing.assert_allclose(shift[:, 1], -0.5 * 5.0 / 4.4, atol=1e-6 if not smooth else 1e-3)
        assert np.isnan(out[5]).all()
        np.testing.assert_allclose(sig[1:5], 5.0 / 4.4, rtol=1e-6)
    with pytest.raises(ValueError, match="trained on sequences of 8 frames"):
        track_learned(np.concatenate([imgs, imgs]), s.landmarks[0], net)
    with pytest.raises(ValueError, match="frame 0"):
        track_learned(imgs[::-1], s.landmarks[0], net)


TINY = TrackerTraining(
    subjects=1,
    val_subjects=1,
    extra_points=8,
    steps=4,
    refiner_steps=4,
    batch_size=8,
    net=TagTrackerConfig(patch=16, channels=(4, 8), strides=(2, 2)).to_dict(),
    refiner={"patch": 16, "channels": [4, 8], "strides": [2, 2], "num_res_units": 1, "scale_px": 1.0, "period_px": 4.4},
)


def test_tiny_training_saves_loads_and_tracks(tmp_path):
    trk = train_learned_tracker(TINY, folder=tmp_path / "ck")
    assert trk.refiner is not None
    assert [h["phase"] for h in trk.info["net_history"]] == [1, 2]
    assert trk.info["train_slices"] == 3 and trk.info["val_slices"] == 3
    trk.save(tmp_path / "model")
    back = LearnedTracker.load(tmp_path / "model")
    s = synthetic_tagged_ring(size=72, n_frames=8, r_endo=11, r_epi=17, tag_spacing_px=4.5, noise=0.02, rng=2)
    a = trk.track(s.images, s.landmarks[0])
    b = back.track(s.images, s.landmarks[0])
    assert a.shape == (8, 2, 168) and np.isfinite(a).all()
    np.testing.assert_allclose(a, b, atol=1e-5)
    # refine_iter=0 is the network and the wall model alone, as if no refiner had been trained
    import dataclasses

    plain = dataclasses.replace(trk, refine_iter=0).track(s.images, s.landmarks[0])
    np.testing.assert_allclose(plain, LearnedTracker(trk.net).track(s.images, s.landmarks[0]), atol=1e-9)
    assert np.abs(plain - a).max() > 1e-4  # the refiner does move the points
    with pytest.raises(FileNotFoundError, match="net.pt"):
        LearnedTracker.load(tmp_path)


def test_refinement_does_not_depend_on_the_batch_size():
    from cmrkit.models.tag_tracker import TagRefinerNet

    torch.manual_seed(0)
    refiner = TagRefinerNet(**TINY.refiner)
    s = synthetic_tagged_ring(size=72, n_frames=5, r_endo=11, r_epi=17, tag_spacing_px=4.5, noise=0.02, rng=3)
    traj = np.repeat(s.landmarks[:1], 5, axis=0)
    a, sa = refine_trajectories(refiner, s.images, traj, 4.5, batch=7)
    b, sb = refine_trajectories(refiner, s.images, traj, 4.5, batch=10_000)
    assert np.abs(a - traj).max() > 1e-3  # the refiner moved the points
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(sa, sb, rtol=1e-5)


def test_ensure_trains_once_then_loads(tmp_path, monkeypatch):
    import cmrkit.tagging.learned as L

    cfg = SimpleNamespace(profile="smoke", device="cpu")
    monkeypatch.setattr(L, "tracker_training", lambda c: TINY)
    msgs: list[str] = []
    first = ensure_learned_tracker(cfg, root=tmp_path, log=msgs.append)
    assert any("training the learned tag tracker" in m for m in msgs)
    folder = first.info["folder"]

    def boom(*a, **k):  # a second call must not train again
        raise AssertionError("trained twice")

    monkeypatch.setattr(L, "train_learned_tracker", boom)
    again = ensure_learned_tracker(cfg, root=tmp_path, log=msgs.append, tag_spacing_px=4.5)
    assert again.info["folder"] == folder and again.tag_spacing_px == 4.5
    assert str(tmp_path) in folder
    manifest = json.loads((Path(folder) / "manifest.json").read_text())
    assert manifest["complete"] and manifest["key"]["payload"]["steps"] == 4


def test_track_cli_with_the_learned_tracker(tmp_path, monkeypatch, capsys):
    import cmrkit.runs
    import cmrkit.tagging.learned as L
    from cmrkit.tagging.cli import cli_main

    monkeypatch.setattr(cmrkit.runs, "RUNS_DIR", tmp_path / "runs")
    monkeypatch.setattr(L, "tracker_training", lambda c: TINY)
    s = synthetic_tagged_ring(size=72, n_frames=8, r_endo=11, r_epi=17, tag_spacing_px=4.5, noise=0.02, rng=3)
    f = tmp_path / "tag.h5"
    write_ferdian_h5(
        f, image_seqs=s.images[None].astype(np.float32), landmark_coords=s.landmarks[None], px_spaces=[1.4]
    )
    # the profile's default is HARP (tagging.tracker); --tracker learned trains the profile's networks once
    assert cli_main([str(f), "--init-from-file", "--json", "--profile", "smoke"]) == 0
    assert json.loads(capsys.readouterr().out)["tracker"] == "harp"
    assert cli_main([str(f), "--init-from-file", "--json", "--profile", "smoke", "--tracker", "learned"]) == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out)
    assert out["tracker"] == "learned" and np.asarray(out["landmarks"]).shape == (8, 2, 168)
    assert "training the learned tag tracker" in cap.err
    assert (tmp_path / "runs" / "smoke").is_dir()
    assert cli_main([str(f), "--init-from-file", "--json", "--profile", "smoke", "--method", "classic"]) == 0
    assert json.loads(capsys.readouterr().out)["tracker"] == "harp-classic"
    assert cli_main([str(f), "--tracker", "learned", "--method", "model"]) == 2
    assert "contradicts" in capsys.readouterr().err
    assert cli_main([str(f), "--profile", "nosuch"]) == 2
    assert "--profile" in capsys.readouterr().err


def test_loss_is_finite_and_trains():
    rec = _blob_record(t_n=6)
    ds = PointPatchDataset([rec], patch=16, frames=6)
    batch = {k: torch.stack([ds[0][k]] * 4) for k in ("x", "y", "valid")}
    from cmrkit.models.tag_tracker import TagTrackerNet

    net = TagTrackerNet(frames=6, patch=16, channels=(4, 8), strides=(2, 2))
    net.train()
    loss, logs = tracker_loss(net, batch)
    assert torch.isfinite(loss) and set(logs) == {"epe_px", "nll"}
    loss.backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
