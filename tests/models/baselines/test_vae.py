"""cmrkit.models.baselines.vae: the 3D VAE and the CVAE (loss in closed form, conditioning, learning)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cmrkit.models.baselines import BaselineConfig, BaselineVAE, SequenceDataset, VAELoss
from cmrkit.models.baselines.common import frame_input


def tiny(**kw):
    return BaselineConfig(
        **{"image_size": (8, 8), "depth": 4, "channels": (4, 8), "depth_strides": (1, 1), "latent_dim": 5, **kw}
    )


def batch(c, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (n, 8, 8, 4) + ((c.frames,) if c.frames > 1 else ())
    b = {"image": torch.rand(shape, generator=g), "labels": torch.randint(0, 4, shape, generator=g)}
    if c.cond_dim:
        b["cond"] = torch.randn(n, c.cond_dim, generator=g)
    return b


@pytest.mark.parametrize("kw", [{}, {"frames": 3, "fold_slices": True, "cond_dim": 2}])
def test_loss_is_mse_plus_ce_plus_weighted_kl_in_closed_form(kw):
    c = tiny(**kw)
    model = BaselineVAE(c, seed=0).eval()  # eval: z = mu, so the loss is a deterministic function
    b = batch(c)
    loss, logs = VAELoss(kl_weight=0.3)(model, b)
    out, mu, logvar = model(frame_input(c, b["image"], b["labels"]), b.get("cond"))
    frames = c.unpack(out, 5)
    mse = F.mse_loss(frames[:, 0], b["image"])
    ce = F.cross_entropy(frames[:, 1:], b["labels"])
    kl = -0.5 * torch.mean(1 + logvar - mu**2 - logvar.exp())
    assert loss.item() == pytest.approx((mse + ce + 0.3 * kl).item(), rel=1e-5)
    assert logs["mse"].item() == pytest.approx(mse.item(), rel=1e-5)
    assert logs["kl"].item() == pytest.approx(kl.item(), rel=1e-5)


def test_cvae_decoder_depends_on_the_condition_and_vae_refuses_none():
    c = tiny(frames=3, fold_slices=True, cond_dim=2)
    m = BaselineVAE(c, seed=0).eval()
    z = torch.randn(1, 5)
    a = m.decode(z, torch.tensor([[1.0, 0.0]]))
    b = m.decode(z, torch.tensor([[-1.0, 2.0]]))
    assert (a - b).abs().max() > 1e-4
    with pytest.raises(ValueError, match="condition features"):
        m.decode(z)


def test_vae_learns_to_reconstruct():
    from cmrkit.train import fit

    c = tiny()
    g = torch.Generator().manual_seed(0)
    labels = torch.zeros(6, 8, 8, 4, dtype=torch.int64)
    labels[:, 2:6, 2:6] = 1
    images = 0.2 + 0.6 * (labels == 1).float() + 0.02 * torch.randn(6, 8, 8, 4, generator=g)
    ds = SequenceDataset(images.clamp(0, 1).numpy(), labels.numpy())
    res = fit(BaselineVAE(c, seed=0), ds, None, loss_fn=VAELoss(1e-2), epochs=60, batch_size=3, lr=3e-3, progress=False)
    first, last = res.history[0]["train/ce"], res.history[-1]["train/ce"]
    assert last < 0.5 * first
