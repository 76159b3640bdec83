"""cmrkit.models.baselines.cheart: the recurrence, its shapes, the conditioning and the ED-only encoder."""

from __future__ import annotations

import pytest
import torch

from cmrkit.models.baselines import BaselineConfig, CHeart, CHeartLoss
from cmrkit.models.baselines.common import frame_input


def tiny(**kw):
    base = {"image_size": (8, 8), "depth": 4, "frames": 5, "channels": (4, 8), "depth_strides": (1, 1)}
    return BaselineConfig(
        **{
            **base,
            "fold_slices": True,
            "latent_dim": 6,
            "cond_dim": 3,
            "hidden": 7,
            "mapping_dim": 4,
            "mapping_layers": 2,
            **kw,
        }
    )


def test_motion_model_is_an_lstm_fed_its_own_state():
    c = tiny()
    m = CHeart(c, seed=0).eval()
    z = torch.randn(2, 6)
    hs = m.motion(z)
    assert hs.shape == (2, 5, 7)
    h = cs = torch.zeros(2, 7)
    inp = m.project(z)
    for t in range(5):  # an independent unroll: step 0 sees P z, step t > 0 the previous hidden state
        h, cs = m.cell(inp, (h, cs))
        assert torch.allclose(hs[:, t], h)
        inp = h
    assert (hs[:, 1] - hs[:, 4]).abs().max() > 1e-5  # the state evolves over the cycle
    assert (m.motion(z + 1.0) - hs).abs().amax(dim=(0, 2)).min() > 1e-6  # z reaches every frame


def test_shapes_conditioning_and_ed_only_encoder():
    c = tiny()
    m = CHeart(c, seed=0).eval()
    z = torch.randn(2, 6)
    f1, f2 = torch.zeros(2, 3), torch.ones(2, 3)
    out = m.decode(z, f1)
    assert out.shape == (2, c.net_channels(5), 8, 8)
    per_frame = (m.decode(z, f2) - out).reshape(2, 5, -1).abs().amax(dim=2)
    assert per_frame.min() > 1e-5  # the covariates change every frame
    g = torch.Generator().manual_seed(0)
    image, labels = torch.rand(2, 8, 8, 4, 5, generator=g), torch.randint(0, 4, (2, 8, 8, 4, 5), generator=g)
    mu, _ = m.encode(frame_input(c, image[..., 0], labels[..., 0]), f1)
    image2 = image.clone()
    image2[..., 1:] = 0.0  # later frames do not reach the encoder
    loss_fn = CHeartLoss(0.01)
    mu2, _ = m.encode(frame_input(c, image2[..., 0], labels[..., 0]), f1)
    assert torch.equal(mu, mu2)
    loss, logs = loss_fn(m.train(), {"image": image, "labels": labels, "cond": f1})
    loss.backward()
    assert torch.isfinite(loss) and set(logs) == {"mse", "ce", "kl"}
    assert m.cell.weight_hh.grad is not None and m.cell.weight_hh.grad.abs().sum() > 0


def test_cheart_is_conditional():
    with pytest.raises(ValueError, match="cond_dim"):
        CHeart(tiny(cond_dim=0))
    with pytest.raises(ValueError, match="condition features"):
        CHeart(tiny()).sample(torch.randn(1, 6))
