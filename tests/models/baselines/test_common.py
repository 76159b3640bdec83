"""cmrkit.models.baselines.common: sizes, packing, patch padding, encoder/decoder shapes, KL, sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cmrkit.models.baselines import BaselineConfig, BaselineVAE, CHeart, generate, patch_padding
from cmrkit.models.baselines.common import (
    PatchCritic,
    VolumeDecoder,
    VolumeEncoder,
    critic_input,
    finish_output,
    frame_input,
    kl_per_dim,
    split_frames,
)


def cfg3d(**kw):
    return BaselineConfig(**{"image_size": (16, 16), "depth": 10, "channels": (4, 8), "depth_strides": (1, 2), **kw})


def cfg2d(**kw):
    base = {"image_size": (16, 16), "depth": 10, "frames": 3, "channels": (4, 8), "depth_strides": (1, 1)}
    return BaselineConfig(**{**base, "fold_slices": True, **kw})


def test_config_refuses_sizes_without_an_exact_round_trip():
    with pytest.raises(ValueError, match="divisible by 2\\*\\*len\\(channels\\) = 4"):
        cfg3d(image_size=(18, 16))
    with pytest.raises(ValueError, match="odd"):
        cfg3d(depth_strides=(2, 2))  # 10 -> 5 -> (odd) 5 cannot be halved
    with pytest.raises(ValueError, match="depth_strides must be 1"):
        cfg2d(depth_strides=(1, 2))
    with pytest.raises(ValueError, match="norm"):
        cfg3d(norm="group")
    c = cfg3d()
    assert c.bottom == (4, 4, 5) and cfg2d().bottom == (4, 4)
    assert BaselineConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown keys"):
        BaselineConfig.from_dict({**c.to_dict(), "width": 3})


@pytest.mark.parametrize("make", [cfg3d, cfg2d])
def test_pack_unpack_round_trip_and_channel_order(make):
    c = make()
    t = c.frames
    x = torch.randn(2, 5, 16, 16, 10, t) if t > 1 else torch.randn(2, 5, 16, 16, 10)
    y = c.pack(x)
    assert y.shape == ((2, 5 * t * 10, 16, 16) if c.fold_slices else (2, 5 * t, 16, 16, 10))
    assert torch.equal(c.unpack(y, 5), x)
    # an element lands where the documented channel index says
    xs = x if t > 1 else x[..., None]
    tt, cc, zz = t - 1, 3, 7
    if c.fold_slices:
        assert torch.equal(y[:, (tt * 5 + cc) * 10 + zz], xs[:, cc, :, :, zz, tt])
    else:
        assert torch.equal(y[:, tt * 5 + cc, ..., zz], xs[:, cc, :, :, zz, tt])


@pytest.mark.parametrize("make", [cfg3d, cfg2d])
def test_frame_input_is_the_packed_image_and_one_hot_labels(make):
    c = make()
    shape = (2, 16, 16, 10) + ((c.frames,) if c.frames > 1 else ())
    g = torch.Generator().manual_seed(0)
    image = torch.rand(shape, generator=g)
    labels = torch.randint(0, 4, shape, generator=g)
    ref = c.pack(torch.cat([image[:, None], F.one_hot(labels, 4).movedim(-1, 1).float()], 1))
    assert torch.equal(frame_input(c, image, labels), ref)


def test_split_finish_and_critic_views():
    c = cfg2d()
    raw = torch.randn(1, c.net_channels(5), 16, 16)
    out = finish_output(c, raw)
    frames = c.unpack(out, 5)
    assert torch.equal(frames[:, 0], torch.sigmoid(c.unpack(raw, 5)[:, 0]))  # image channels squashed
    assert torch.equal(frames[:, 1:], c.unpack(raw, 5)[:, 1:])  # logits untouched
    image, labels = split_frames(c, out)
    assert image.shape == labels.shape == (1, 16, 16, 10, 3) and labels.dtype == torch.uint8
    assert torch.equal(labels.long(), frames[:, 1:].argmax(1))
    soft = c.unpack(critic_input(c, out), 5)[:, 1:]
    assert torch.allclose(soft.sum(1), torch.ones(1, 16, 16, 10, 3), atol=1e-6)


def test_patch_padding_avoids_the_depth_10_trap():
    from monai.networks.nets import PatchDiscriminator

    assert patch_padding((64, 64, 10), 3) == (1, 1, 2)
    assert patch_padding((128, 128, 10), 3) == (1, 1, 2)
    assert patch_padding((64, 64), 3) == (1, 1)
    x = torch.randn(1, 5, 64, 64, 10)
    with pytest.raises(RuntimeError):  # MONAI's default padding of 1: 10 -> 5 -> 2 -> 1 -> too small
        PatchDiscriminator(spatial_dims=3, channels=4, in_channels=5, num_layers_d=3)(x)
    critic = PatchCritic(BaselineConfig(image_size=(64, 64), depth=10, disc_channels=4, disc_layers=3), 5)
    assert critic(x).shape == (1, 1, 6, 6, 3)  # 64 -> 32 -> 16 -> 8 -> 7 -> 6; 10 -> 6 -> 4 -> 3 -> 4 -> 3


@pytest.mark.parametrize("make", [cfg3d, cfg2d])
def test_encoder_decoder_shapes(make):
    c = make()
    enc, dec = VolumeEncoder(c, c.net_channels(5), 12), VolumeDecoder(c, 7, c.net_channels(5))
    x = torch.randn(2, c.net_channels(5), *c.grid)
    assert enc(x).shape == (2, 12)
    assert dec(torch.randn(2, 7)).shape == x.shape
    with pytest.raises(ValueError, match="VolumeEncoder: expected"):
        enc(x[..., :8])


def test_kl_per_dim_closed_form():
    assert kl_per_dim(torch.zeros(3, 4), torch.zeros(3, 4)).item() == 0.0
    assert kl_per_dim(torch.ones(3, 4), torch.zeros(3, 4)).item() == pytest.approx(0.5)
    lv = torch.full((2, 5), float(np.log(4.0)))  # sigma^2 = 4: 0.5 (4 - 1 - log 4) per dim
    assert kl_per_dim(torch.zeros(2, 5), lv).item() == pytest.approx(0.5 * (3.0 - np.log(4.0)))


def test_generate_is_per_sample_and_checks_features():
    c = cfg2d(cond_dim=3, latent_dim=6, hidden=8, mapping_dim=4, mapping_layers=1)
    vae, ch = BaselineVAE(c, seed=1), CHeart(c, seed=1)
    f = np.random.default_rng(0).standard_normal((3, 3)).astype(np.float32)
    for model in (vae, ch):
        img, lab = generate(model, [5, 6, 7], f, batch_size=3)
        img1, lab1 = generate(model, [6], f[1:2], batch_size=1)
        assert img.shape == (3, 16, 16, 10, 3) and lab.dtype == np.uint8
        np.testing.assert_allclose(img[1], img1[0], atol=1e-5)  # batch-independent: seed 6 alone
        assert 0.0 <= img.min() and img.max() <= 1.0
        with pytest.raises(ValueError, match="needs features"):
            generate(model, [5], None)
