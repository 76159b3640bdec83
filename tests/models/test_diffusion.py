"""Latent diffusion (cmrkit.models.diffusion): DDIM spacing, the sampler with an oracle, scale factor
persistence, seeded and per-sample reproducible sampling, the loss, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmrkit.models.autoencoder import VolumeAutoencoder, VolumeAutoencoderConfig
from cmrkit.models.diffusion import (
    SCALE_FACTOR_RTOL,
    DiffusionLoss,
    LatentDataset,
    LatentDiffusion,
    LatentDiffusionConfig,
    channel_whitening,
    compute_scale_factor,
    ddim_scheduler,
    encode_latents,
    fit_latent_diffusion,
    generate,
    initial_noise,
    mix_channels,
    sample_seeds,
)

AE_CFG = VolumeAutoencoderConfig(image_size=(16, 16), depth=3, channels=(8, 16), latent_channels=4)
LDM_CFG = LatentDiffusionConfig(latent_shape=(4, 8, 8), channels=(16, 32), num_res_blocks=1, num_head_channels=8)


@pytest.fixture(scope="module")
def models():
    return VolumeAutoencoder(AE_CFG, seed=0).eval(), LatentDiffusion(LDM_CFG, seed=0).eval()


def test_ddim_timesteps_are_self_consistent():
    sch = ddim_scheduler(LDM_CFG, 10)
    t = sch.timesteps.tolist()
    assert t == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    # DDIMScheduler.step goes back by T // N: it must land on the next listed timestep
    stride = sch.num_train_timesteps // sch.num_inference_steps
    assert all(a - stride == b for a, b in zip(t[:-1], t[1:]))
    assert not sch.clip_sample
    # MONAI 1.6's own spacing (linspace) is not consistent with that stride: the reason for the fix
    from monai.networks.schedulers import DDIMScheduler

    plain = DDIMScheduler(1000, schedule="scaled_linear_beta", beta_start=0.0015, beta_end=0.0195)
    plain.set_timesteps(10)
    p = plain.timesteps.tolist()
    assert any(a - stride != b for a, b in zip(p[:-1], p[1:]))
    with pytest.raises(ValueError, match="ddim steps"):
        ddim_scheduler(LDM_CFG, 0)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_ddim_chain_with_an_oracle_recovers_x0_beyond_unit_range(prediction):
    """With the exact target as model output (the noise, or the velocity v = sqrt(abar) eps - sqrt(1 - abar) x0)
    DDIM (eta 0) returns x0, so the sampler and the training target agree; values outside [-1, 1] survive
    because clip_sample is off (MONAI's default would clamp them)."""
    cfg = LatentDiffusionConfig(**{**LDM_CFG.to_dict(), "prediction_type": prediction})
    sch = ddim_scheduler(cfg, 25)
    g = torch.Generator().manual_seed(0)
    x0 = 3.0 * torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    eps = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    ab = sch.alphas_cumprod.double()
    t0 = int(sch.timesteps[0])
    x = ab[t0].sqrt() * x0 + (1 - ab[t0]).sqrt() * eps
    for t in sch.timesteps:
        a = ab[int(t)]
        e = (x - a.sqrt() * x0) / (1 - a).sqrt()
        x, _ = sch.step(e if prediction == "epsilon" else a.sqrt() * e - (1 - a).sqrt() * x0, int(t), x)
    torch.testing.assert_close(x, x0, atol=1e-6, rtol=1e-6)


def test_v_prediction_trains_on_the_velocity_and_keeps_old_run_keys():
    cfg = LatentDiffusionConfig(**{**LDM_CFG.to_dict(), "prediction_type": "v_prediction"})
    train = LatentDiffusion(cfg, seed=0).train_scheduler()
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([0, 500, 999])
    a = train.alphas_cumprod.double()[t].view(-1, 1, 1, 1)
    e3 = torch.randn(3, 4, 8, 8, generator=g, dtype=torch.float64)
    x3 = torch.randn(3, 4, 8, 8, generator=g, dtype=torch.float64)
    torch.testing.assert_close(train.get_velocity(x3, e3, t), a.sqrt() * e3 - (1 - a).sqrt() * x3)
    # the default (noise prediction) keeps the run keys of models trained before the option
    assert "prediction_type" not in LDM_CFG.to_dict() and cfg.to_dict()["prediction_type"] == "v_prediction"
    assert LatentDiffusionConfig.from_dict(cfg.to_dict()) == cfg


def test_scale_factor_closed_form_and_persistence(tmp_path):
    from cmrkit.train import load_model, save_model

    g = torch.Generator().manual_seed(1)
    mu = 2.0 * torch.randn(400, 4, 8, 8, generator=g)
    sf = compute_scale_factor(mu, torch.zeros_like(mu), seed=0)
    assert sf == pytest.approx(1.0 / float(mu.double().std()), rel=1e-9)
    assert sf == pytest.approx(0.5, rel=0.02)
    # sigma adds variance: std(z)^2 = std(mu)^2 + 1 for sigma = 1
    assert compute_scale_factor(mu, torch.ones_like(mu), seed=0) == pytest.approx(1 / np.sqrt(5), rel=0.02)
    m = LatentDiffusion(LDM_CFG, seed=0)
    m.set_scale_factor(sf)
    assert "scale_factor" in m.state_dict()
    path = save_model(tmp_path / "ldm.pt", m, LDM_CFG.to_dict(), extra={"scale_factor": sf})
    back = load_model(path)
    assert float(back.model.scale_factor) == sf and back.extra["scale_factor"] == sf
    with pytest.raises(ValueError, match="positive"):
        m.set_scale_factor(0.0)
    with pytest.raises(ValueError, match="standard deviation"):
        compute_scale_factor(torch.ones(3, 4), torch.zeros(3, 4))


def test_channel_whitening_against_numpy_covariance():
    g = torch.Generator().manual_seed(2)
    a = torch.tensor([[2.0, 0.0, 0.0], [1.5, 0.3, 0.0], [-1.0, 0.2, 0.4]])  # correlated channels, none degenerate
    mu = torch.einsum("ij,njxy->nixy", a, torch.randn(60, 3, 5, 5, generator=g))
    w, k = channel_whitening(mu, torch.zeros_like(mu), seed=0)
    ref = np.cov(mu.movedim(1, 0).reshape(3, -1).double().numpy())  # independent estimate
    np.testing.assert_allclose((w @ torch.from_numpy(ref) @ w.T).numpy(), np.eye(3), atol=1e-9)
    np.testing.assert_allclose((k @ k.T).numpy(), ref, rtol=1e-9)  # the prior's covariance is the data's
    np.testing.assert_allclose((k @ w).numpy(), np.eye(3), atol=1e-9)
    x = mix_channels(w, mu.double())
    np.testing.assert_allclose(np.cov(x.movedim(1, 0).reshape(3, -1).numpy()), np.eye(3), atol=1e-9)
    torch.testing.assert_close(mix_channels(k, x), mu.double())
    # with sigma the covariance is the one of the draw mu + sigma * eps, eps seeded as compute_scale_factor's
    _, k1 = channel_whitening(mu, 0.5 * torch.ones_like(mu), seed=3)
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    draw = (mu.double() + 0.5 * eps).movedim(1, 0).reshape(3, -1).numpy()
    np.testing.assert_allclose((k1 @ k1.T).numpy(), np.cov(draw), rtol=1e-9, atol=1e-12)


def test_channel_whitening_floors_combinations_that_never_vary():
    mu = torch.randn(40, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    mu[:, 1] = mu[:, 0]  # two identical channels: their difference has variance 0
    w, k = channel_whitening(mu, torch.zeros_like(mu), seed=0, floor=1e-2)
    assert torch.isfinite(w).all() and torch.isfinite(k).all()
    lam = torch.linalg.eigvalsh(torch.cov(mu.movedim(1, 0).reshape(3, -1).double()))
    # the largest gain of W is 1 / sqrt(floor * mean eigenvalue), not 1 / sqrt(0)
    gain = float(torch.linalg.matrix_norm(w, ord=2))
    assert gain == pytest.approx(1 / np.sqrt(1e-2 * float(lam.clamp(min=0).mean())), rel=1e-6)
    torch.testing.assert_close(k @ w, torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="equal"):
        channel_whitening(mu, torch.zeros(40, 3, 4))
    with pytest.raises(ValueError, match="positions"):
        channel_whitening(mu[:1, :, :1, :1], torch.zeros(1, 3, 1, 1))
    with pytest.raises(ValueError, match="floor"):
        channel_whitening(mu, torch.zeros_like(mu), floor=0.0)
    with pytest.raises(ValueError, match="do not vary"):
        channel_whitening(torch.ones(4, 2, 3, 3), torch.zeros(4, 2, 3, 3))
    with pytest.raises(ValueError, match="not finite"):
        channel_whitening(mu.masked_fill(mu > 1, float("nan")), torch.zeros_like(mu))


def test_stored_scale_factor_check_tolerates_thread_counts_not_another_autoencoder(models):
    """A run resumed with another thread count re-encodes the same latents with float32 sums in another
    order: its factor must pass the check against the stored one; another autoencoder's must not."""
    import math

    ae, _ = models
    imgs = np.random.default_rng(0).random((6, 16, 16, 3)).astype(np.float32)
    labs = np.random.default_rng(1).integers(0, 4, (6, 16, 16, 3))
    n = torch.get_num_threads()
    try:
        factors = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            factors.append(compute_scale_factor(*encode_latents(ae, imgs, labs), seed=0))
    finally:
        torch.set_num_threads(n)
    assert math.isclose(factors[0], factors[1], rel_tol=SCALE_FACTOR_RTOL)
    other = VolumeAutoencoder(AE_CFG, seed=1).eval()
    assert not math.isclose(
        factors[0], compute_scale_factor(*encode_latents(other, imgs, labs), seed=0), rel_tol=SCALE_FACTOR_RTOL
    )


def test_sample_seeds_are_deterministic_distinct_and_nested():
    a = sample_seeds(0, 50)
    assert a.dtype == np.int64 and len(set(a.tolist())) == 50 and (a >= 0).all()
    assert np.array_equal(sample_seeds(0, 10), a[:10])
    assert not np.array_equal(sample_seeds(1, 10), a[:10])
    n = initial_noise(a[:3], (4, 8, 8))
    torch.testing.assert_close(n[1], initial_noise(a[1:2], (4, 8, 8))[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match=">= 1"):
        sample_seeds(0, 0)


def test_generate_is_reproducible_and_sample_i_regenerates_alone(models):
    ae, ldm = models
    seeds = sample_seeds(7, 4)
    img, lab = generate(ae, ldm, seeds, ddim_steps=5, batch_size=4)
    assert img.shape == (4, 16, 16, 3) and lab.shape == (4, 16, 16, 3) and lab.dtype == np.uint8
    assert 0 <= img.min() and img.max() <= 1
    img2, lab2 = generate(ae, ldm, seeds, ddim_steps=5, batch_size=4)
    assert np.array_equal(img, img2) and np.array_equal(lab, lab2)  # same seeds -> identical set
    one, one_lab = generate(ae, ldm, seeds[2:3], ddim_steps=5, batch_size=1)
    np.testing.assert_allclose(one[0], img[2], atol=1e-4)  # batched kernels differ only in round-off
    assert (one_lab[0] == lab[2]).mean() > 0.99
    other, _ = generate(ae, ldm, sample_seeds(8, 1), ddim_steps=5)
    assert np.abs(other[0] - img[0]).max() > 1e-3
    with pytest.raises(ValueError, match="no seeds"):
        generate(ae, ldm, [], ddim_steps=5)


def test_diffusion_loss_is_l1_or_mse_on_the_noise_or_the_velocity(models):
    ae, _ = models
    imgs = np.random.default_rng(0).random((3, 16, 16, 3)).astype(np.float32)
    labs = np.random.default_rng(1).integers(0, 4, (3, 16, 16, 3))
    mu, sigma = encode_latents(ae, imgs, labs)
    assert mu.shape == sigma.shape == (3, 4, 8, 8)
    batch = {"mu": mu, "sigma": sigma}
    for kind, prediction in (("l1", "epsilon"), ("mse", "epsilon"), ("l1", "v_prediction")):
        m = LatentDiffusion(
            LatentDiffusionConfig(**{**LDM_CFG.to_dict(), "loss": kind, "prediction_type": prediction}), seed=0
        )
        torch.manual_seed(5)
        loss, logs = DiffusionLoss()(m, batch)
        # replay the same draws by hand
        torch.manual_seed(5)
        z0 = (mu + sigma * torch.randn_like(sigma)) * m.scale_factor.float()
        noise = torch.randn_like(z0)
        t = torch.randint(0, 1000, (3,)).long()
        sch = m.train_scheduler()
        pred = m.unet(sch.add_noise(z0, noise, t), t)
        a = sch.alphas_cumprod[t].view(-1, 1, 1, 1)
        target = noise if prediction == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * z0
        ref = (pred - target).abs().mean() if kind == "l1" else (pred - target).pow(2).mean()
        assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
        assert float(logs["mse"]) == pytest.approx(float((pred - target).detach().pow(2).mean()), rel=1e-5)


def test_fit_latent_diffusion_completes_and_refuses_a_run_of_another_autoencoder(tmp_path):
    from cmrkit.config import load
    from cmrkit.runs import RunMismatchError, is_complete, run_dir
    from cmrkit.train import load_model

    folder = run_dir(load("smoke"), "unit", "diffusion", {"iterations": 3}, root=tmp_path)

    g = torch.Generator().manual_seed(0)
    mu, sigma = torch.randn(4, *LDM_CFG.latent_shape, generator=g), torch.full((4, *LDM_CFG.latent_shape), 0.1)

    def fit_once(scale):
        m = LatentDiffusion(LDM_CFG, seed=0)
        m.set_scale_factor(scale)
        return fit_latent_diffusion(
            m,
            lambda length: LatentDataset(mu, sigma, length=length),
            None,
            DiffusionLoss(),
            iterations=3,
            batch_size=2,
            lr=1e-3,
            folder=folder,
            scale=scale,
            model_config=LDM_CFG.to_dict(),
            autoencoder="autoencoder-test",
        )

    res = fit_once(0.5)
    assert is_complete(folder) and res.history[-1]["step"] == 3
    back = load_model(folder / "model.pt")
    assert back.extra == {"scale_factor": 0.5, "autoencoder": "autoencoder-test"}
    for a, b in zip(back.model.state_dict().values(), res.model.state_dict().values()):
        assert torch.equal(a, b)
    # resuming the finished run with the latents of another autoencoder must not pass silently
    with pytest.raises(RunMismatchError, match="another autoencoder"):
        fit_once(0.7)


def test_latent_dataset_repeats():
    ds = LatentDataset(torch.zeros(3, 4, 2, 2), torch.ones(3, 4, 2, 2), length=10)
    assert len(ds) == 10 and torch.equal(ds[7]["mu"], ds[1]["mu"])
    with pytest.raises(ValueError, match="equal"):
        LatentDataset(torch.zeros(3, 4, 2, 2), torch.ones(2, 4, 2, 2))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"latent_shape": (4, 10, 10), "channels": (8, 16, 32)}, "divisible"),
        ({"loss": "huber"}, "loss"),
        ({"attention_levels": (True,)}, "attention_levels"),
        ({"timesteps": 1}, "timesteps"),
        ({"prediction_type": "sample"}, "prediction_type must be one of"),
        # 20 latent channels cannot pass a 16-wide first level (chapter 6's cpu failure, 80 through 64)
        ({"latent_shape": (20, 8, 8)}, "narrower than the 20 latent channels"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LatentDiffusionConfig(**{**{"latent_shape": (4, 8, 8), "channels": (16, 32)}, **kwargs})


def test_first_width_equal_to_latent_channels_is_allowed():
    c = LatentDiffusionConfig(latent_shape=(16, 8, 8), channels=(16, 32))
    assert c.build_unet().conv_in.conv.in_channels == 16


def test_deepest_level_without_attention_still_builds():
    """MONAI's middle block always attends, so its head size must be set even when the deepest level
    has no attention (a zero there divides by zero inside MONAI)."""
    c = LatentDiffusionConfig(latent_shape=(4, 8, 8), channels=(16, 32), attention_levels=(False, False))
    assert c.heads == (0, 32)
    m = LatentDiffusion(c, seed=0)
    assert m(torch.zeros(1, 4, 8, 8), torch.tensor([3])).shape == (1, 4, 8, 8)
