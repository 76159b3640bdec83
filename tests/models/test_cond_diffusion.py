"""Conditional 4D latent diffusion (cmrkit.models.cond_diffusion) on tiny sizes."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from cmrkit.models.autoencoder import VolumeAutoencoderConfig, split_output
from cmrkit.models.cond_diffusion import (
    ConditionalDiffusionConfig,
    ConditionalDiffusionLoss,
    ConditionalLatentDataset,
    ConditionalLatentDiffusion,
    FrameDataset,
    SequenceAutoencoder,
    ddim_invert,
    encode_sequences,
    generate_sequences,
    guided_noise,
    sample_latents,
)
from cmrkit.models.conditioning import NULL_FILL, ConditionSpace
from cmrkit.models.diffusion import LatentDiffusionConfig
from cmrkit.train import load_model, save_model

T = 3


@pytest.fixture(scope="module")
def cohort():
    rng = np.random.default_rng(1)
    n = 12
    return pd.DataFrame(
        {
            "age": rng.uniform(45, 80, n),
            "sex": np.arange(n) % 2,
            "height_cm": rng.uniform(150, 195, n),
            "weight_kg": rng.uniform(50, 120, n),
            "smoking": np.arange(n) % 3,
            "alcohol": (np.arange(n) // 2) % 3,
            "sbp": rng.uniform(100, 180, n),
            "dbp": rng.uniform(60, 100, n),
        }
    )


@pytest.fixture(scope="module")
def models(cohort):
    ae = SequenceAutoencoder(
        VolumeAutoencoderConfig(image_size=(16, 16), depth=4, channels=(8, 16), latent_channels=2), T, seed=0
    )
    space = ConditionSpace.fit(cohort)
    cfg = ConditionalDiffusionConfig(
        base=LatentDiffusionConfig(
            latent_shape=ae.latent_shape,
            channels=(16, 32),
            attention_levels=(False, True),
            num_res_blocks=1,
            num_head_channels=8,
            timesteps=100,
        ),
        space=space.to_dict(),
        cross_attention_dim=8,
        n_tokens=3,
        encoder_hidden=16,
    )
    ldm = ConditionalLatentDiffusion(cfg, seed=0)
    ldm.set_scale_factor(0.7)
    _wake(ldm)
    return ae.eval(), ldm.eval()


def _wake(model):
    """MONAI zero-initialises the output projections of its attention blocks, so at initialisation the
    context has no effect (and the encoder gets no gradient); small random weights and a louder encoder
    stand in for a trained network."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.unet.parameters():
            if p.abs().sum() == 0:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
        model.encoder.net[-1].weight.mul_(20.0)


def test_sequence_autoencoder_stacks_frames_in_order():
    ae = SequenceAutoencoder(
        VolumeAutoencoderConfig(image_size=(16, 16), depth=4, channels=(8, 16), latent_channels=2), T, seed=0
    ).eval()
    assert ae.latent_shape == (T * 2, 8, 8)
    x = torch.rand(2, 2, 16, 16, 4, T)
    with torch.no_grad():
        mu, _ = ae.encode(x)
        # frame t's latent sits at channels t*c .. t*c + c - 1 and equals the frame autoencoder's latent
        for t in range(T):
            mu_t, _ = ae.frame.encode(x[..., t])
            torch.testing.assert_close(mu[:, 2 * t : 2 * t + 2], mu_t)
        out = ae.decode(mu)
        assert out.shape == (2, 5, 16, 16, 4, T)
        torch.testing.assert_close(out[..., 1], ae.frame.decode(mu[:, 2:4]))
    torch.testing.assert_close(ae.stack(ae.unstack(mu)), mu)
    with pytest.raises(ValueError, match="expected"):
        ae.encode(torch.rand(2, 2, 16, 16, 4, T + 1))


def test_frame_dataset_indexes_sequences_and_frames():
    img = np.random.default_rng(0).random((3, 4, 4, 2, 5)).astype(np.float32)
    lab = (img > 0.5).astype(np.uint8)
    ds = FrameDataset(img, lab, [0, 3])
    assert len(ds) == 6
    item = ds[3]  # sequence 1, frame 3
    np.testing.assert_array_equal(item["image"].numpy(), img[1, ..., 3])
    assert item["labels"].dtype == torch.int64
    with pytest.raises(ValueError, match="outside"):
        FrameDataset(img, lab, [5])


def test_config_round_trip_and_checkpoint(models, tmp_path, cohort):
    ae, ldm = models
    d = ldm.config.to_dict()
    again = ConditionalDiffusionConfig.from_dict(d)
    assert again.to_dict() == d
    save_model(tmp_path / "ldm.pt", ldm, d, extra={"scale_factor": 0.7})
    loaded = load_model(tmp_path / "ldm.pt").model
    assert float(loaded.scale_factor) == pytest.approx(0.7)
    assert loaded.space == ldm.space
    f = torch.from_numpy(ldm.space.encode(cohort.iloc[:2]))
    torch.testing.assert_close(loaded.context(f), ldm.context(f))
    save_model(tmp_path / "ae.pt", ae, ae.to_config())
    assert load_model(tmp_path / "ae.pt").model.latent_shape == ae.latent_shape
    with pytest.raises(ValueError, match="cond_dropout"):
        ConditionalDiffusionConfig(base=ldm.config.base, space=ldm.config.space, cond_dropout=1.0)
    v_base = dataclasses.replace(ldm.config.base, prediction_type="v_prediction")
    with pytest.raises(ValueError, match="predicts the noise; base.prediction_type 'v_prediction' is not supported"):
        ConditionalDiffusionConfig(base=v_base, space=ldm.config.space)


def test_guided_noise_formula():
    u, c = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 0.0])
    torch.testing.assert_close(guided_noise(u, c, 2.5), torch.tensor([1.0 + 2.5 * 2.0, -2.0 + 2.5 * 2.0]))
    torch.testing.assert_close(guided_noise(u, c, 1.0), c)
    torch.testing.assert_close(guided_noise(u, c, 0.0), u)


class _StubUNet(nn.Module):
    """eps(x, t, ctx) = 0.1 x + mean(ctx): the conditional and the null context give different outputs."""

    def forward(self, x, timesteps, context=None):
        return 0.1 * x + context.mean(dim=(1, 2)).view(-1, 1, 1, 1)


def test_cfg_sampling_matches_a_hand_computed_ddim_chain(models, cohort):
    _, ldm = models
    stub = ConditionalLatentDiffusion(ldm.config, seed=0)
    stub.unet = _StubUNet()
    f = torch.from_numpy(stub.space.encode(cohort.iloc[:2]))
    x = torch.randn(2, *stub.latent_shape, generator=torch.Generator().manual_seed(3))
    w, steps = 3.0, 4
    got = sample_latents(stub, x.clone(), f, guidance=w, ddim_steps=steps)
    # by hand: DDIM (eta 0) with leading spacing k = T // N and eps = eps_u + w (eps_c - eps_u)
    ctx = stub.context(f).detach()
    ac = stub.ddim_scheduler(steps).alphas_cumprod.double()
    k = stub.config.base.timesteps // steps
    z = x.double()
    for t in [k * i for i in reversed(range(steps))]:
        eps_c = 0.1 * z + ctx.double().mean(dim=(1, 2)).view(-1, 1, 1, 1)
        eps_u = 0.1 * z + NULL_FILL
        eps = eps_u + w * (eps_c - eps_u)
        a_t = ac[t]
        a_prev = ac[t - k] if t - k >= 0 else torch.tensor(1.0, dtype=torch.float64)
        x0 = (z - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        z = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    torch.testing.assert_close(got.double(), z, rtol=1e-4, atol=1e-4)
    # guidance 1 is the conditional model alone
    g1 = sample_latents(stub, x.clone(), f, guidance=1.0, ddim_steps=steps)
    assert not torch.allclose(g1, got)
    with pytest.raises(ValueError, match="guidance weight"):
        sample_latents(stub, x.clone(), f, guidance=float("nan"), ddim_steps=steps)


def test_generation_is_seeded_and_batch_independent(models, cohort):
    ae, ldm = models
    cond = cohort.iloc[:3]
    a = generate_sequences(ae, ldm, cond, [5, 6, 7], ddim_steps=3, batch_size=3, image_frames=[0, 2])
    b = generate_sequences(ae, ldm, cond, [5, 6, 7], ddim_steps=3, batch_size=1)
    assert a.images.shape == (3, 16, 16, 4, 2) and b.images.shape == (3, 16, 16, 4, T)
    assert a.labels.shape == (3, 16, 16, 4, T) and a.labels.dtype == np.uint8
    np.testing.assert_allclose(a.latents, b.latents, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a.images, b.images[..., [0, 2]], rtol=1e-4, atol=1e-4)
    c = generate_sequences(ae, ldm, cond, [5, 6, 8], ddim_steps=3)
    np.testing.assert_allclose(c.latents[:2], a.latents[:2], rtol=1e-4, atol=1e-4)
    assert np.abs(c.latents[2] - a.latents[2]).max() > 1e-3


def test_counterfactual_null_change_and_one_covariate_moved(models, cohort):
    ae, ldm = models
    base = cohort.iloc[[0, 0]].reset_index(drop=True)
    moved = base.copy()
    moved.loc[1, "weight_kg"] = float(cohort["weight_kg"].max())
    same = generate_sequences(ae, ldm, base, [11, 11], ddim_steps=3)
    # null change: the same sequence (up to float round-off between batch positions)
    np.testing.assert_allclose(same.latents[0], same.latents[1], rtol=1e-4, atol=1e-4)
    cf = generate_sequences(ae, ldm, moved, [11, 11], ddim_steps=3)
    np.testing.assert_allclose(cf.latents[0], same.latents[0], rtol=1e-4, atol=1e-4)
    assert np.abs(cf.latents[1] - cf.latents[0]).max() > 1e-3


def test_conditions_are_validated_before_sampling(models, cohort):
    ae, ldm = models
    bad = cohort.iloc[:1].assign(age=12.0)
    from cmrkit.models.conditioning import ConditionError

    with pytest.raises(ConditionError, match="age=12"):
        generate_sequences(ae, ldm, bad, [0], ddim_steps=2)
    with pytest.raises(ValueError, match="exactly one of seeds and noise"):
        generate_sequences(ae, ldm, cohort.iloc[:1], ddim_steps=2)
    with pytest.raises(ValueError, match="2 seeds for 1 condition sets"):
        generate_sequences(ae, ldm, cohort.iloc[:1], [0, 1], ddim_steps=2)


def test_ddim_inversion_regenerates_the_latent(models, cohort):
    _, ldm = models
    f = torch.from_numpy(ldm.space.encode(cohort.iloc[:2]))
    z0 = sample_latents(
        ldm, torch.randn(2, *ldm.latent_shape, generator=torch.Generator().manual_seed(0)), f, ddim_steps=20
    )
    z0 = z0 / float(ldm.scale_factor)
    noise = ddim_invert(ldm, z0, f, ddim_steps=20)
    again = sample_latents(ldm, noise, f, ddim_steps=20) / float(ldm.scale_factor)
    rel = float((again - z0).norm() / z0.norm())
    assert rel < 0.1, rel
    other = sample_latents(ldm, torch.randn(noise.shape, generator=torch.Generator().manual_seed(1)), f, ddim_steps=20)
    assert float((other / float(ldm.scale_factor) - z0).norm() / z0.norm()) > 0.5  # a random start is far away


def test_loss_condition_dropout_and_training_step(models, cohort):
    _, ldm = models
    model = ConditionalLatentDiffusion(ldm.config, seed=0)
    _wake(model)
    mu = torch.randn(4, *model.latent_shape)
    ds = ConditionalLatentDataset(mu, torch.full_like(mu, 0.1), model.space.encode(cohort.iloc[:4]), length=8)
    assert len(ds) == 8 and torch.equal(ds[5]["mu"], mu[1])
    batch = {k: torch.stack([ds[i][k] for i in range(4)]) for k in ("mu", "sigma", "cond")}
    loss_fn = ConditionalDiffusionLoss()
    seen = []
    model.unet.register_forward_pre_hook(
        lambda m, args, kw: seen.append(kw["context"].detach().clone()), with_kwargs=True
    )
    model.train()
    torch.manual_seed(0)
    object.__setattr__(model.config, "cond_dropout", 0.999)
    loss, logs = loss_fn(model, batch)
    assert torch.all(seen[-1] == NULL_FILL)  # every sample dropped to the null context
    loss.backward()
    assert torch.isfinite(loss) and "mse" in logs
    assert model.encoder.net[0].weight.grad is None or torch.all(model.encoder.net[0].weight.grad == 0)
    object.__setattr__(model.config, "cond_dropout", 0.0)
    model.zero_grad()
    loss, _ = loss_fn(model, batch)
    loss.backward()
    assert torch.any(model.encoder.net[0].weight.grad != 0)  # the encoder is trained jointly
    model.eval()
    loss_fn(model, batch)
    assert not torch.any(seen[-1] == NULL_FILL)  # never dropped in eval mode


def test_encode_sequences_shapes(models):
    ae, _ = models
    img = np.random.default_rng(0).random((3, 16, 16, 4, T)).astype(np.float32)
    lab = np.random.default_rng(1).integers(0, 4, (3, 16, 16, 4, T)).astype(np.uint8)
    mu, sigma = encode_sequences(ae, img, lab, batch_size=2)
    assert mu.shape == sigma.shape == (3, *ae.latent_shape)
    assert torch.all(sigma > 0)


@pytest.fixture(scope="module")
def whitened(models):
    """The tiny model of ``models`` with the channel-covariance prior, whitened on correlated latents."""
    from cmrkit.models.diffusion import channel_whitening

    ae, ldm = models
    cfg = dataclasses.replace(ldm.config, prior="channel_covariance")
    model = ConditionalLatentDiffusion(cfg, seed=0)
    model.set_scale_factor(0.7)
    g = torch.Generator().manual_seed(4)
    shared = torch.randn(30, 1, *ldm.latent_shape[1:], generator=g)  # every frame channel shares a component
    mu = shared + 0.3 * torch.randn(30, *ldm.latent_shape, generator=g)
    model.set_whitening(*channel_whitening(mu * 0.7, torch.zeros_like(mu), seed=0))
    _wake(model)
    return ae, model.eval(), mu


def test_channel_covariance_prior_maps_latents_both_ways_and_persists(whitened, models, cohort, tmp_path):
    ae, model, mu = whitened
    _, iso = models
    c = model.latent_shape[0]
    x = model.to_diffusion(mu)
    cov = torch.cov(x.movedim(1, 0).reshape(c, -1).double())
    torch.testing.assert_close(cov, torch.eye(c, dtype=torch.float64), atol=1e-5, rtol=0)  # white
    torch.testing.assert_close(model.from_diffusion(x), mu, atol=1e-5, rtol=1e-5)
    # isotropic: only the scale factor, and no extra buffers, so checkpoints from before the option load
    torch.testing.assert_close(iso.to_diffusion(mu), mu * 0.7)
    assert "whiten" not in iso.state_dict() and "whiten" in model.state_dict()
    old = iso.config.to_dict()
    old.pop("prior")
    assert ConditionalDiffusionConfig.from_dict(old).prior == "isotropic"
    d = model.config.to_dict()
    assert d["prior"] == "channel_covariance"
    save_model(tmp_path / "w.pt", model, d)
    back = load_model(tmp_path / "w.pt").model
    torch.testing.assert_close(back.whiten, model.whiten)
    torch.testing.assert_close(back.from_diffusion(x), mu, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="prior must be one of"):
        dataclasses.replace(model.config, prior="pink")
    with pytest.raises(ValueError, match="not 'channel_covariance'"):
        iso.set_whitening(model.whiten, model.colour)
    with pytest.raises(ValueError, match="not the inverse"):
        ConditionalLatentDiffusion(model.config, seed=0).set_whitening(model.whiten, model.whiten)


def test_channel_covariance_prior_in_loss_sampling_and_inversion(whitened, cohort):
    from monai.inferers import DiffusionInferer

    ae, model, mu = whitened
    f = torch.from_numpy(model.space.encode(cohort.iloc[:2]))
    # the loss noises to_diffusion(z0): replayed by hand with the same random draws (eval mode: no dropout)
    batch = {"mu": mu[:2], "sigma": torch.full_like(mu[:2], 0.05), "cond": f}
    torch.manual_seed(7)
    loss, _ = ConditionalDiffusionLoss()(model, batch)
    torch.manual_seed(7)
    z0 = model.to_diffusion(batch["mu"] + batch["sigma"] * torch.randn_like(batch["sigma"]))
    noise = torch.randn_like(z0)
    t = torch.randint(0, model.config.base.timesteps, (2,)).long()
    with torch.no_grad():
        pred = DiffusionInferer(model.train_scheduler())(
            inputs=z0,
            diffusion_model=model.unet,
            noise=noise,
            timesteps=t,
            condition=model.context(f),
            mode="crossattn",
        )
    assert float(loss.detach()) == pytest.approx(float((pred - noise).abs().mean()), rel=1e-5)
    # generation returns the autoencoder's latents: from_diffusion of the DDIM chain's end
    x = torch.randn(2, *model.latent_shape, generator=torch.Generator().manual_seed(0))
    gen = generate_sequences(ae, model, cohort.iloc[:2], noise=x, ddim_steps=20)
    chain = sample_latents(model, x, f, ddim_steps=20)
    np.testing.assert_allclose(gen.latents, model.from_diffusion(chain).numpy(), rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        _, lab = split_output(ae.decode_stage_2_outputs(torch.from_numpy(gen.latents)))
    np.testing.assert_array_equal(gen.labels, lab.numpy().astype(np.uint8))
    # DDIM inversion takes and regenerates autoencoder latents under the prior too
    z = torch.from_numpy(gen.latents)
    again = model.from_diffusion(sample_latents(model, ddim_invert(model, z, f, ddim_steps=20), f, ddim_steps=20))
    assert float((again - z).norm() / z.norm()) < 0.1
