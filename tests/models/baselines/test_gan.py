"""cmrkit.models.baselines.gan: LSGAN / GAN losses on known discriminator outputs, the CGAN's conditioning,
and alternating-step training through cmrkit.train.fit."""

from __future__ import annotations

import math

import pytest
import torch

from cmrkit.models.baselines import BaselineConfig, BaselineGAN, GANLoss, SequenceDataset
from cmrkit.train import Adversarial, fit


def tiny(**kw):
    base = {"image_size": (16, 16), "depth": 4, "channels": (4, 8), "depth_strides": (1, 1), "latent_dim": 5}
    return BaselineConfig(**{**base, "disc_channels": 4, "disc_layers": 2, **kw})


def test_least_squares_losses_on_known_discriminator_outputs():
    g = GANLoss("least_squares")
    real, fake = torch.full((2, 1, 3, 3), 0.8), torch.full((2, 1, 3, 3), 0.3)
    # Mao et al. 2017, a-b-c = 0-1-1: L_D = 1/2 (D(x) - 1)^2 + 1/2 D(G(z))^2, L_G = 1/2 (D(G(z)) - 1)^2
    assert g.d_terms(real, fake).item() == pytest.approx(0.5 * (0.2**2 + 0.3**2))
    assert g.g_term(fake).item() == pytest.approx(0.5 * 0.7**2)
    assert g.d_terms(torch.ones(4), torch.zeros(4)).item() == 0.0  # a perfect discriminator


def test_bce_losses_on_known_logits():
    g = GANLoss("bce")
    lr, lf = 1.5, -0.5
    s = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    d = 0.5 * (-math.log(s(lr)) - math.log(1 - s(lf)))
    assert g.d_terms(torch.full((3,), lr), torch.full((3,), lf)).item() == pytest.approx(d, rel=1e-6)
    assert g.g_term(torch.full((3,), lf)).item() == pytest.approx(-math.log(s(lf)), rel=1e-6)
    with pytest.raises(ValueError, match="criterion"):
        GANLoss("hinge")


def test_generator_output_and_cgan_conditioning():
    c = tiny(frames=2, fold_slices=True, cond_dim=3)
    m = BaselineGAN(c, seed=0).eval()
    z = torch.randn(2, 5)
    f1, f2 = torch.zeros(2, 3), torch.ones(2, 3)
    a, b = m.sample(z, f1), m.sample(z, f2)
    assert a.shape == (2, c.net_channels(5), 16, 16)
    assert (a - b).abs().max() > 1e-4  # the generator sees the condition
    assert m.critic(a, f1).shape[0] == 2
    assert not torch.equal(m.critic(a, f1), m.critic(a, f2))  # so does the discriminator
    with pytest.raises(ValueError, match="condition features"):
        m.sample(z)


def test_adversarial_training_steps_both_networks():
    c = tiny()
    model = BaselineGAN(c, seed=0)
    g0 = {k: v.clone() for k, v in model.generator.state_dict().items()}
    d0 = {k: v.clone() for k, v in model.discriminator.state_dict().items()}
    img = torch.rand(4, 16, 16, 4).numpy()
    lab = torch.randint(0, 4, (4, 16, 16, 4)).numpy()
    loss = GANLoss()
    res = fit(
        model,
        SequenceDataset(img, lab),
        None,
        loss_fn=loss.generator,
        epochs=2,
        batch_size=2,
        lr=1e-3,
        adversarial=Adversarial(d_loss_fn=loss.discriminator, betas=(0.5, 0.999)),
        keep="last",
        progress=False,
    )
    assert [h["step"] for h in res.history] == [2, 4]
    assert all(math.isfinite(h["train/d_loss"]) for h in res.history)
    assert any(not torch.equal(v, model.generator.state_dict()[k]) for k, v in g0.items())
    assert any(not torch.equal(v, model.discriminator.state_dict()[k]) for k, v in d0.items())
