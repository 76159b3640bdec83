"""Tests of cmrkit.models.segmenter (fast: one small training shared by the session, ~10 s on CPU)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from cmrkit.models.segmenter import (
    AugmentParams,
    Segmenter,
    SegmenterConfig,
    augment_batch,
    from_network_grid,
    keep_largest_component,
    normalise_slices,
    slices_from_volumes,
    to_network_grid,
    toy_slices,
)

from ..conftest import dice_ref


@pytest.fixture(scope="module")
def trained(trained_segmenter):
    return trained_segmenter


# ------------------------------------------------------------------------------------------ config
def test_config_validation_and_round_trip():
    cfg = SegmenterConfig(channels=[16, 32, 64, 128], image_size=128)
    assert cfg.strides == (2, 2, 2)
    assert SegmenterConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="strides"):
        SegmenterConfig(channels=(8, 16, 32), strides=(2,))
    with pytest.raises(ValueError, match="image_size"):
        SegmenterConfig(channels=(8, 16, 32), image_size=66)  # not a multiple of 4
    with pytest.raises(ValueError, match="unknown keys"):
        SegmenterConfig.from_dict({"image_size": 64, "chanels": [8, 16]})


@pytest.mark.parametrize("profile", ["smoke", "cpu", "demo", "paper"])
def test_every_profile_has_a_segmenter_section_that_maps_on_the_config(profile):
    from cmrkit.config import load

    cfg = load(profile)
    sc = SegmenterConfig.from_dict(cfg.segmenter)
    assert sc.channels == tuple(cfg.segmenter.channels) and sc.epochs == cfg.segmenter.epochs
    assert sc.image_size == cfg.ch4.image_size  # chapter 4 feeds it slices of its own grid
    assert "segmenter" not in cfg.ch4  # the model's sizes live in one place
    if profile == "demo":
        assert sc.image_size == 128 and sc.channels == (16, 32, 64, 128)


# ------------------------------------------------------------------------------------------ helpers
def test_normalise_slices_closed_form():
    ramp = np.tile(np.arange(201, dtype=np.float64), (5, 1))  # values 0..200, percentile p -> 2p
    out = normalise_slices(np.stack([ramp, np.full_like(ramp, 7.0)]), lower=10, upper=90)
    # (x - 20) / (180 - 20), clipped
    np.testing.assert_allclose(out[0, 0, 100], 80 / 160, atol=1e-6)
    assert out[0, 0, 0] == 0 and out[0, 0, 200] == 1
    assert np.all(out[1] == 0)  # constant slice
    with pytest.raises(ValueError, match="NaN"):
        normalise_slices(np.array([[np.nan, 1.0], [0.0, 1.0]]))


def test_network_grid_round_trip():
    rng = np.random.default_rng(0)
    lab = torch.from_numpy(rng.integers(0, 4, (3, 1, 32, 24)))
    net = to_network_grid(lab, 64, mode="nearest")
    assert net.shape == (3, 1, 64, 64)
    # integer up-sampling by 2, then 8 pixels of padding each side along the short axis
    assert torch.equal(net[..., :, 8:56], lab.repeat_interleave(2, -2).repeat_interleave(2, -1))
    assert torch.count_nonzero(net[..., :8]) == 0 and torch.count_nonzero(net[..., 56:]) == 0
    assert torch.equal(from_network_grid(net, (32, 24)), lab)
    # odd shapes come back at the right size
    img = torch.rand(2, 1, 50, 71)
    assert to_network_grid(img, 64, mode="bilinear").shape == (2, 1, 64, 64)
    assert from_network_grid(torch.zeros(2, 1, 64, 64, dtype=torch.uint8), (50, 71)).shape == (2, 1, 50, 71)


def _only_flips() -> AugmentParams:
    return AugmentParams(p_flip=1.0, max_rotate_deg=0, zoom=(1, 1), max_shift=0, p_intensity=0.0)


def test_augment_flips_closed_form():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 16, 16)
    y = torch.randint(0, 4, (2, 1, 16, 16))
    xa, ya = augment_batch(x, y, g, _only_flips())
    # all three symmetries on: transpose, then reverse rows and columns
    np.testing.assert_allclose(xa.numpy(), x.flip(-1, -2).transpose(-1, -2).numpy(), atol=1e-6)
    assert torch.equal(ya, y.flip(-1, -2).transpose(-1, -2))


def test_augment_deterministic_and_aligned():
    x0, y0 = toy_slices(8, 64, rng=3, noise=0.0)
    y = torch.from_numpy(y0.astype(np.int64))[:, None]
    x = y.float() / 3  # image encodes the labels, so the two warps can be compared
    p = AugmentParams(max_rotate_deg=30, zoom=(0.8, 1.25), max_shift=0.1, p_intensity=0.0)
    a1 = augment_batch(x, y, torch.Generator().manual_seed(5), p)
    a2 = augment_batch(x, y, torch.Generator().manual_seed(5), p)
    a3 = augment_batch(x, y, torch.Generator().manual_seed(6), p)
    assert torch.equal(a1[0], a2[0]) and torch.equal(a1[1], a2[1])
    assert not torch.equal(a1[1], a3[1])
    assert a1[1].dtype == y.dtype and set(a1[1].unique().tolist()) <= {0, 1, 2, 3}
    agree = (torch.round(a1[0] * 3).long() == a1[1]).float().mean().item()
    assert agree > 0.95  # image and labels moved together (mismatch only at interpolated edges)
    assert not torch.equal(a1[1], y)  # something actually happened
    # intensity part keeps the range and leaves labels alone
    xi, yi = augment_batch(
        x,
        y,
        torch.Generator().manual_seed(1),
        AugmentParams(p_flip=0, max_rotate_deg=0, zoom=(1, 1), max_shift=0, p_intensity=1.0),
    )
    assert torch.equal(yi, y) and xi.min() >= 0 and xi.max() <= 1 and not torch.allclose(xi, x)


def test_keep_largest_component():
    lab = np.zeros((2, 20, 20), np.uint8)
    lab[0, 2:8, 2:8] = 1  # 36 px
    lab[0, 12:14, 12:14] = 1  # 4 px island, removed
    lab[0, 15:18, 2:5] = 2  # single component of another class: kept
    lab[1, 0:3, 0:3] = 3
    out = keep_largest_component(lab)
    expect = lab.copy()
    expect[0, 12:14, 12:14] = 0
    assert np.array_equal(out, expect) and out.dtype == np.uint8
    # 3D: components connected through neighbouring slices survive, a far-away island does not
    vol = np.zeros((12, 12, 5), np.uint8)
    vol[2:6, 2:6, 0:3] = 1
    vol[9:11, 9:11, 4] = 1
    out3 = keep_largest_component(vol[None], spatial_dims=3)[0]
    assert out3[2:6, 2:6, 0:3].all() and not out3[9:11, 9:11, 4].any()
    with pytest.raises(ValueError, match="spatial_dims"):
        keep_largest_component(vol, spatial_dims=4)


def test_toy_slices_anatomy():
    _, y = toy_slices(6, 64, rng=0)
    for s in y:
        assert set(np.unique(s)) == {0, 1, 2, 3}
        # LV blood pool lies inside the filled myocardial ring, RV outside it
        ring = ndi.binary_fill_holes(s == 2)
        assert np.all(ring[s == 1]) and not np.any(ring[s == 3])


def test_slices_from_volumes():
    rng = np.random.default_rng(0)
    img4 = rng.random((16, 12, 3, 4)).astype(np.float32)
    lab4 = np.zeros(img4.shape, np.uint8)
    lab4[4:8, 4:8, 1, 0] = 1  # frame 0: only slice 1 has heart
    lab4[4:8, 4:8, :, 2] = 2  # frame 2: all slices; frames 1 and 3 unlabelled
    x, y, idx = slices_from_volumes([img4], [lab4], return_index=True)
    assert x.shape == (6, 16, 12) and y.dtype == np.uint8
    assert idx.tolist() == [[0, 0, 0], [0, 1, 0], [0, 2, 0], [0, 0, 2], [0, 1, 2], [0, 2, 2]]
    np.testing.assert_array_equal(x[4], img4[:, :, 1, 2])
    xd, _ = slices_from_volumes([img4], [lab4], empty_slices="drop")
    assert len(xd) == 4
    # ED/ES mapping form and a 3D subject together
    img3 = rng.random((16, 12, 2))
    lab3 = np.ones((16, 12, 2), np.uint8)
    x2, y2, idx2 = slices_from_volumes([img4, img3], [{2: lab4[..., 2]}, lab3], return_index=True)
    assert idx2.tolist() == [[0, 0, 2], [0, 1, 2], [0, 2, 2], [1, 0, 0], [1, 1, 0]]
    with pytest.raises(ValueError, match="labels\\[0\\] shape"):
        slices_from_volumes([img4], [lab4[..., 0]])
    with pytest.raises(ValueError, match="values outside"):
        slices_from_volumes([img3], [lab3 * 5])


# ------------------------------------------------------------------------------------------ training
def test_fit_reaches_dice_on_held_out(trained):
    seg, xt, yt = trained
    pred = seg.predict(xt)
    assert pred.shape == yt.shape and pred.dtype == np.uint8
    dices = [dice_ref(pred, yt, lab) for lab in (1, 2, 3)]
    assert min(dices) > 0.8, dices
    h = seg.history.history
    assert len(h) == 15 and h[-1]["train_loss"] < h[0]["train_loss"]
    # pixel size recorded for real-data evaluation (64 px input = network size, so unchanged)
    assert seg.config.pixel_mm == pytest.approx(1.8)


def test_predict_maps_back_to_input_grid(trained):
    seg, xt, yt = trained
    # twice the resolution and non-square: 128 x 96 crop of a 2x up-sampled slice
    big_x = np.kron(xt[:6], np.ones((2, 2), np.float32))[:, :, 16:112]
    big_y = np.kron(yt[:6], np.ones((2, 2), np.uint8))[:, :, 16:112]
    pred = seg.predict(big_x)
    assert pred.shape == big_x.shape
    assert min(dice_ref(pred, big_y, lab) for lab in (1, 2, 3)) > 0.75
    single = seg.predict(xt[0])
    assert single.shape == (64, 64) and np.array_equal(single, seg.predict(xt[:1])[0])
    vol = np.stack([xt[:3], xt[3:6]], -1).transpose(1, 2, 0, 3)  # (H, W, Z=3, T=2)
    pv = seg.predict_volume(vol, largest_component=False)
    assert pv.shape == vol.shape and seg.predict_volume(vol).shape == vol.shape
    np.testing.assert_array_equal(pv[:, :, 1, 1], seg.predict(xt[4], largest_component=False))
    with pytest.raises(ValueError, match="predict_volume"):
        seg.predict(np.zeros((2, 3, 64, 64)))


def test_save_load_round_trip(trained, tmp_path):
    seg, xt, _ = trained
    path = seg.save(tmp_path / "seg.pt")
    seg2 = Segmenter.load(path)
    assert seg2.config == seg.config
    np.testing.assert_array_equal(seg2.predict(xt), seg.predict(xt))
    np.testing.assert_allclose(seg2.predict_proba(xt[:4]), seg.predict_proba(xt[:4]), atol=0)
    with pytest.raises(FileNotFoundError):
        Segmenter.load(tmp_path / "missing.pt")


def test_fit_is_deterministic_per_seed():
    x, y = toy_slices(24, 32, rng=1)
    cfg = SegmenterConfig(image_size=32, channels=(4, 8), epochs=1, batch_size=8, augment=True)
    ws = []
    for seed in (3, 3, 4):
        seg = Segmenter(cfg, seed=0)
        seg.fit(x, y, val_fraction=0.25, seed=seed, progress=False)
        ws.append(torch.cat([p.detach().flatten() for p in seg.network.parameters()]))
    assert torch.equal(ws[0], ws[1]) and not torch.equal(ws[0], ws[2])


def test_fit_resume_reproduces_augmented_run(tmp_path):
    """Augmentation draws from the RNG that cmrkit.train.fit re-seeds per epoch, so 2 + 1 epochs
    with a checkpoint equal 3 uninterrupted epochs."""
    x, y = toy_slices(16, 32, rng=4)
    cfg = SegmenterConfig(image_size=32, channels=(4, 8), epochs=3, batch_size=8, augment=True)

    def weights(seg):
        return torch.cat([p.detach().flatten() for p in seg.network.parameters()])

    full = Segmenter(cfg, seed=0)
    full.fit(x, y, val_fraction=0.25, seed=1)
    part = Segmenter(dataclasses.replace(cfg, epochs=2), seed=0)
    part.fit(x, y, val_fraction=0.25, seed=1, checkpoint_dir=tmp_path)
    resumed = Segmenter(cfg, seed=5)  # other init: everything must come from the checkpoint
    resumed.fit(x, y, val_fraction=0.25, seed=1, checkpoint_dir=tmp_path, resume=True)
    assert torch.equal(weights(full), weights(resumed))
    assert [h["train_loss"] for h in resumed.history.history] == [h["train_loss"] for h in full.history.history]


def test_fit_rejects_bad_input():
    seg = Segmenter(SegmenterConfig(image_size=32, channels=(4, 8), epochs=1))
    with pytest.raises(ValueError, match="equal shape"):
        seg.fit(np.zeros((4, 32, 32)), np.zeros((4, 32, 31), np.uint8))
    with pytest.raises(ValueError, match="labels must be"):
        seg.fit(np.zeros((4, 32, 32)), np.full((4, 32, 32), 4, np.uint8))
