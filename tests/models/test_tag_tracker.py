"""Tests for cmrkit.models.tag_tracker: patch sampling conventions and the two networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmrkit.models.tag_tracker import (
    TagRefinerConfig,
    TagRefinerNet,
    TagTrackerConfig,
    TagTrackerNet,
    extract_patches,
    normalise_pairs,
    normalise_patches,
    sample_patches,
)
from cmrkit.train import load_model, save_model


def _plane(t_n: int = 3, h: int = 40, w: int = 50) -> np.ndarray:
    """Frames ``I_t(x, y) = 2 x + 3 y + 10 t + 5`` (bilinear interpolation is exact on them)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    return np.stack([2 * xx + 3 * yy + 10 * t + 5 for t in range(t_n)])


def test_extract_patches_samples_the_plane_exactly_at_sub_pixel_offsets():
    im = _plane()
    pts = np.array([[20.3, 25.0], [18.7, 21.25]])  # (2, N): x, y
    for spacing in (1.0, 1.3):
        p = extract_patches(im, pts, 8, spacing=spacing)
        assert p.shape == (2, 3, 8, 8)
        off = (np.arange(8) - 3.5) * spacing
        for n in range(2):
            for t in range(3):
                want = 2 * (pts[0, n] + off[None, :]) + 3 * (pts[1, n] + off[:, None]) + 10 * t + 5
                np.testing.assert_allclose(p[n, t], want, rtol=1e-5)


def test_extract_patches_zero_outside_missing_frames_and_padding():
    im = _plane()
    im[2] = 0.0  # a missing frame
    p = extract_patches(im, np.array([[1.0], [1.0]]), 8, frames=5)
    assert p.shape == (1, 5, 8, 8)
    assert (p[0, 0, :2, :2] == 0).all() and (p[0, 0, 4:, 4:] > 0).all()  # outside the image: zero
    assert (p[0, 2] == 0).all() and (p[0, 3:] == 0).all()
    with pytest.raises(ValueError, match="NaN"):
        extract_patches(im, np.array([[np.nan], [1.0]]), 8)
    with pytest.raises(ValueError, match=r"\(2, N\)"):
        extract_patches(im, np.zeros((3, 2)), 8)
    # the single-frame sampler agrees with the sequence sampler
    pts = np.array([[20.3], [18.7]])
    np.testing.assert_allclose(sample_patches(im[1], pts, 8, 1.2)[0], extract_patches(im, pts, 8, spacing=1.2)[0, 1])


def test_normalisation_divides_by_the_frame0_mean():
    p = np.ones((2, 4, 6, 6), np.float32) * np.array([2.0, 4.0])[:, None, None, None]
    p[:, 1] *= 3.0
    out = normalise_patches(p)
    np.testing.assert_allclose(out[:, 0], 1.0)
    np.testing.assert_allclose(out[:, 1], 3.0)
    np.testing.assert_allclose(normalise_patches(torch.from_numpy(p)).numpy(), out)
    p[:, 2] *= 10.0
    assert normalise_patches(p)[:, 2].max() == 4.0  # clipped
    q = np.stack([np.full((6, 6), 2.0), np.full((6, 6), 8.0)])[None]
    np.testing.assert_allclose(normalise_pairs(q), 1.0)


def test_tracker_net_shapes_reference_frame_and_round_trip(tmp_path):
    cfg = TagTrackerConfig(frames=6, patch=16, channels=(8, 16), strides=(2, 2))
    net = TagTrackerNet(**cfg.to_dict())
    x = torch.rand(3, 6, 16, 16)
    d, s = net(x)
    assert d.shape == (3, 6, 2) and s.shape == (3, 6)
    assert torch.all(d[:, 0] == 0)  # frame 0 is the reference
    with pytest.raises(ValueError, match="expected"):
        net(torch.rand(3, 5, 16, 16))
    path = save_model(tmp_path / "net.pt", net, net.config.to_dict())
    back = load_model(path).model
    assert back.config == cfg
    net.eval()
    torch.testing.assert_close(back(x)[0], net(x)[0])
    with pytest.raises(ValueError, match="channels"):
        TagTrackerNet(channels=[8], strides=[2, 2])


def test_refiner_net_shapes():
    net = TagRefinerNet(**TagRefinerConfig(patch=16, channels=(8, 16), strides=(2, 2)).to_dict())
    d, s = net(torch.rand(4, 2, 16, 16))
    assert d.shape == (4, 2) and s.shape == (4,)
    with pytest.raises(ValueError, match="patch pairs"):
        net(torch.rand(4, 3, 16, 16))
