"""Tests for cmrkit.models.smcvae (sparse multi-channel VAE, Antelmi et al. 2019)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from cmrkit.models.smcvae import (
    K1,
    K2,
    K3,
    PHASE_KEY,
    SMCVAE,
    PairedSliceDataset,
    SMCVAEConfig,
    encoder_strides,
    from_model_range,
    kl_log_uniform,
    kl_standard_normal,
    smcvae_loss,
    to_model_range,
)
from cmrkit.train import fit, load_model, save_model


def tiny(**kw) -> SMCVAE:
    args = dict(image_size=32, in_frames=4, conv_layers=4, latent_dim=8, base_width=4, max_width=16, seed=0)
    args.update(kw)
    return SMCVAE(**args)


def batch_for(m: SMCVAE, n: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    c = m.config
    return {ch: torch.rand(n, c.in_frames, c.image_size, c.image_size, generator=g) * 2 - 1 for ch in c.channels}


# ------------------------------------------------------------------------------------------
# geometry and shapes
# ------------------------------------------------------------------------------------------


def test_encoder_strides_rule():
    assert encoder_strides(128, 7) == [2, 2, 2, 2, 2, 1, 1]  # 128 -> 4, then stride 1
    assert encoder_strides(64, 7) == [2, 2, 2, 2, 1, 1, 1]
    assert encoder_strides(128, 4) == [2, 2, 2, 2]  # 8x8 bottleneck
    assert encoder_strides(128, 8, min_spatial=1) == [2] * 7 + [1]  # stops at 1x1
    cfg = SMCVAEConfig(image_size=128, conv_layers=7)
    assert cfg.bottleneck_size == 4 and cfg.widths == [32, 64, 128, 256, 512, 512, 512]


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("layers", [4, 5, 7])
def test_shapes(size, layers):
    m = SMCVAE(image_size=size, conv_layers=layers, latent_dim=8, base_width=4, max_width=16, seed=0)
    b = batch_for(m, n=2)
    out = m(b)
    for s in m.channels:
        assert out["mu"][s].shape == (2, 8) and out["logvar"][s].shape == (2, 8)
        assert out["q"][s].loc.shape == (2, 8)
        for t in m.channels:  # every latent decoded by every decoder
            xh = out["recon"][t][s]
            assert xh.shape == (2, 20, size, size)
            assert xh.abs().max() <= 1.0  # Tanh
    loss, logs = m.loss(b)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert set(logs) >= {"kl", "nll", "mse/tagging<-cine", "mse/cine<-tagging", "active_dims"}
    assert m.encode(b["cine"], "cine").mean.shape == (2, 8)
    assert m.decode(torch.zeros(5, 8), "tagging").shape == (5, 20, size, size)


def test_single_channel_vae():
    m = tiny(channels=("tagging",), variant="vae")
    b = batch_for(m, n=2)
    loss, logs = m.loss(b)
    assert torch.isfinite(loss) and set(m(b)["recon"]) == {"tagging"}
    assert m.eval().synthesise(b, source="tagging", target="tagging").shape == (2, 4, 32, 32)
    with pytest.raises(ValueError, match="not one of"):
        m.synthesise(b["tagging"], source="cine", target="tagging")


def test_thesis_configuration_builds():
    m = SMCVAE(seed=0)  # thesis: L = 7, D = 1024, 20 frames, 128 x 128
    assert m.config.latent_dim == 1024 and m.config.conv_layers == 7
    assert m.log_alpha.shape == (1, 1024)
    assert m.encoders["cine"].head.in_features == 512 * 4 * 4
    # seven depthwise-separable layers per encoder, seven transposed convs per decoder
    assert len(m.encoders["cine"].features) == 7 and len(m.decoders["tagging"].features) == 7
    dw = m.encoders["cine"].features[0][0].conv
    assert dw.groups == dw.in_channels == 20


def test_bad_config_and_inputs():
    with pytest.raises(ValueError, match="variant"):
        SMCVAEConfig(variant="nope")
    with pytest.raises(ValueError, match="channels"):
        SMCVAEConfig(channels=("cine", "cine"))
    with pytest.raises(ValueError, match="unknown keys"):
        SMCVAEConfig.from_dict({"latent_dims": 3})
    m = tiny()
    with pytest.raises(ValueError, match="shape"):
        m.encode(torch.zeros(1, 3, 32, 32), "cine")
    with pytest.raises(ValueError, match="not one of"):
        m.encode(torch.zeros(1, 4, 32, 32), "lge")
    with pytest.raises(ValueError, match="lacks channels"):
        m.loss({"cine": torch.zeros(1, 4, 32, 32)})


def test_seeded_construction_is_reproducible_and_leaves_global_rng():
    state = torch.get_rng_state()
    a, b = tiny(seed=3), tiny(seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert not torch.equal(a.log_alpha, tiny(seed=4).log_alpha)


def test_intensity_range_round_trip():
    x = torch.tensor([0.0, 0.25, 1.0])
    assert torch.equal(to_model_range(x), torch.tensor([-1.0, -0.5, 1.0]))
    assert torch.allclose(from_model_range(to_model_range(x)), x)


# ------------------------------------------------------------------------------------------
# KL terms
# ------------------------------------------------------------------------------------------


def test_kl_log_uniform_hand_values():
    # -KL = k1 sigmoid(k2 + k3 log a) - 0.5 log(1 + 1/a) - k1  (Molchanov et al. 2017, eq. 14)
    def hand(la: float) -> float:
        a = math.exp(la)
        return -(K1 / (1 + math.exp(-(K2 + K3 * la))) - 0.5 * math.log(1 + 1 / a) - K1)

    assert (K1, K2, K3) == (0.63576, 1.87320, 1.48695)
    for la in (-5.0, -1.0, 0.0, 0.7, 3.0):
        assert kl_log_uniform(torch.tensor(la, dtype=torch.float64)).item() == pytest.approx(hand(la), rel=1e-12)
    assert kl_log_uniform(torch.tensor(0.0)).item() == pytest.approx(0.431239, abs=1e-6)
    # clamped to [-8, 8]
    assert kl_log_uniform(torch.tensor(-20.0, dtype=torch.float64)).item() == pytest.approx(hand(-8.0), rel=1e-6)
    assert kl_log_uniform(torch.tensor(20.0, dtype=torch.float64)).item() == pytest.approx(hand(8.0), rel=1e-5)
    # non-negative and decreasing in alpha
    v = kl_log_uniform(torch.linspace(-8, 8, 101, dtype=torch.float64))
    assert (v >= 0).all() and (v.diff() < 0).all()


def test_kl_log_uniform_matches_exact_integral():
    """Exact -KL(N(1, a) scale family || log-uniform) = 0.5 log a - E log|1 + sqrt(a) n| + C with
    C = -(gamma + log 2) / 2 (so that it vanishes as a -> inf); Molchanov's fit is within 0.01."""

    def exact_neg_kl(la: float) -> float:
        s = math.sqrt(math.exp(la))
        f = lambda n: math.log(abs(1 + s * n)) * math.exp(-n * n / 2) / math.sqrt(2 * math.pi)  # noqa: E731
        e = integrate.quad(f, -np.inf, -1 / s, limit=200)[0] + integrate.quad(f, -1 / s, np.inf, limit=200)[0]
        return 0.5 * la - e - (np.euler_gamma + math.log(2)) / 2

    las = np.linspace(-6, 6, 13)
    approx = -kl_log_uniform(torch.tensor(las)).numpy()
    exact = np.array([exact_neg_kl(la) for la in las])
    assert np.abs(approx - exact).max() < 0.012


def test_kl_standard_normal_matches_torch():
    g = torch.Generator().manual_seed(0)
    mu, lv = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu, (0.5 * lv).exp()), torch.distributions.Normal(0.0, 1.0)
    )
    assert torch.allclose(kl_standard_normal(mu, lv), ref, atol=1e-6)


# ------------------------------------------------------------------------------------------
# loss composition (independent recomputation)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["sparse", "mcvae", "vae"])
def test_loss_equals_hand_recomputation(variant):
    m = tiny(variant=variant, beta=0.7).eval()  # eval: z = posterior mean, deterministic
    b = batch_for(m, n=3)
    loss, logs = m.loss(b)
    C = len(m.channels)
    kl_sum, nll_sum = 0.0, 0.0
    for s in m.channels:
        q = m.encode(b[s], s)
        if variant == "sparse":
            # sigma^2 = alpha mu^2 with one log alpha shared by the channels
            assert torch.allclose(q.scale**2, m.log_alpha.exp() * (q.loc.abs() + 1e-8) ** 2, rtol=1e-4)
            kl_sum += kl_log_uniform(m.log_alpha).sum()
        else:
            kl_sum += torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(1).mean()
        targets = m.channels if variant != "vae" else (s,)
        for t in targets:
            sigma = (0.5 * m.x_logvar[m.channels.index(t)]).exp()
            lik = torch.distributions.Normal(m.decode(q.loc, t), sigma)
            nll_sum += -lik.log_prob(b[t]).flatten(1).sum(1).mean()
    expect = (nll_sum + 0.7 * kl_sum) / C
    assert loss.item() == pytest.approx(expect.item(), rel=1e-5)
    assert logs["kl"].item() == pytest.approx((kl_sum / C).item(), rel=1e-5)
    if variant == "vae":
        assert "mse/tagging<-cine" not in logs
    else:
        assert "mse/tagging<-cine" in logs and "mse/cine<-tagging" in logs


def test_train_mode_samples_from_posterior():
    m = tiny(variant="sparse").train()
    b = batch_for(m, n=4)
    torch.manual_seed(0)
    out = m(b)
    eps = (out["z"]["cine"] - out["mu"]["cine"]) / (0.5 * out["logvar"]["cine"]).exp()
    assert eps.std() > 0.5  # noise actually injected, scaled by sqrt(alpha)|mu|
    assert torch.equal(m(b, sample=False)["z"]["cine"], m(b, sample=False)["mu"]["cine"])


def test_gradients_reach_log_alpha_and_both_channels():
    m = tiny(variant="sparse")
    loss, _ = m.loss(batch_for(m))
    loss.backward()
    assert m.log_alpha_raw.grad is not None and m.log_alpha_raw.grad.abs().sum() > 0
    for c in m.channels:
        assert m.encoders[c].head.weight.grad.abs().sum() > 0
        assert m.decoders[c].fc[0].weight.grad.abs().sum() > 0
    assert m.x_logvar_raw.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------
# sparsity: dropout rate, active dimensions, synthesis
# ------------------------------------------------------------------------------------------


def _set_log_alpha(m: SMCVAE, values) -> None:
    with torch.no_grad():
        m.log_alpha_raw.copy_(torch.tensor(values, dtype=torch.float32).reshape(1, -1) / m.config.log_param_scale)


def test_dropout_rate_and_active_dims():
    m = tiny(latent_dim=4)
    _set_log_alpha(m, [-3.0, 0.0, math.log(0.25), 2.0])
    alpha = torch.tensor([math.exp(-3.0), 1.0, 0.25, math.exp(2.0)])
    assert torch.allclose(m.dropout_rate(), alpha / (1 + alpha), atol=1e-6)  # 0.047, 0.5, 0.2, 0.88
    assert m.active_dims(0.2).tolist() == [True, False, False, False]  # 0.2 itself is not < 0.2
    assert m.active_dims(0.5001).tolist() == [True, True, True, False]
    with pytest.raises(ValueError, match="threshold"):
        m.active_dims(0.0)
    for v in ("mcvae", "vae"):
        with pytest.raises(ValueError, match="sparse"):
            tiny(variant=v).dropout_rate()


def test_synthesise_needs_only_the_source_channel():
    m = tiny(latent_dim=4).eval()
    x = batch_for(m, n=2)["cine"]
    y1 = m.synthesise({"cine": x}, source="cine", target="tagging")
    y2 = m.synthesise(x, source="cine", target="tagging")
    assert y1.shape == (2, 4, 32, 32) and torch.equal(y1, y2)
    assert torch.equal(y1, m.decode(m.encode(x, "cine").mean, "tagging"))
    back = m.synthesise({"tagging": y1}, source="tagging", target="cine")
    assert back.shape == y1.shape
    with pytest.raises(ValueError, match="source channel"):
        m.synthesise({"tagging": x}, source="cine", target="tagging")
    # masking the inactive dimensions
    _set_log_alpha(m, [-4.0, 3.0, -4.0, 3.0])
    mu = m.encode(x, "cine").mean
    masked = m.synthesise(x, threshold=0.2)
    assert torch.allclose(masked, m.decode(mu * torch.tensor([1.0, 0.0, 1.0, 0.0]), "tagging"))
    assert not torch.allclose(masked, m.synthesise(x))
    assert not y1.requires_grad


def test_reconstruct_averages_decoded_means():
    m = tiny().eval()
    b = batch_for(m, n=2)
    rec = m.reconstruct(b)
    mc, mt = m.encode(b["cine"], "cine").mean, m.encode(b["tagging"], "tagging").mean
    expect = (m.decode(mc, "tagging") + m.decode(mt, "tagging")) / 2
    assert torch.allclose(rec["tagging"], expect, atol=1e-6)
    only = m.reconstruct({"cine": b["cine"]})
    assert torch.allclose(only["tagging"], m.synthesise(b["cine"]), atol=1e-6)


# ------------------------------------------------------------------------------------------
# persistence and training
# ------------------------------------------------------------------------------------------


def test_save_and_load_model_round_trip(tmp_path):
    m = tiny(variant="mcvae", seed=5).eval()
    p = save_model(tmp_path / "m.pt", m, m.config_dict(), extra={"active": torch.ones(8, dtype=torch.bool)})
    loaded, cfg, extra = load_model(p)
    assert isinstance(loaded, SMCVAE) and loaded.config == m.config and cfg == m.config_dict()
    x = batch_for(m, n=2)["cine"]
    assert torch.equal(loaded.synthesise(x), m.synthesise(x))
    assert extra["active"].dtype == torch.bool


def _toy_pairs(n: int, seed: int, size: int = 32, frames: int = 4) -> PairedSliceDataset:
    """Discs of random centre and radius shrinking over the frames; tagging = left-right flip."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    c = torch.rand(n, 2, generator=g) * size * 0.5 + size * 0.25
    r = torch.rand(n, generator=g) * size * 0.15 + size * 0.1
    rr = r[:, None] * torch.linspace(1.0, 0.7, frames)[None]
    d = ((xx - c[:, 0, None, None]) ** 2 + (yy - c[:, 1, None, None]) ** 2).sqrt()
    cine = torch.nn.functional.avg_pool2d((d[:, None] < rr[:, :, None, None]).float(), 3, 1, 1)
    return PairedSliceDataset({"cine": cine, "tagging": cine.flip(-1)})


def test_tiny_training_learns_the_cross_channel_map():
    train, val = _toy_pairs(64, 1), _toy_pairs(16, 2)
    m = tiny(latent_dim=16, base_width=8, max_width=32)
    res = fit(m, train, val, loss_fn=smcvae_loss, epochs=20, batch_size=16, lr=4e-3, progress=False, seed=0)
    h = res.history
    assert h[-1]["val_loss"] < 0.3 * h[0]["val_loss"]
    vb = {k: torch.stack([val[i][k] for i in range(len(val))]) for k in ("cine", "tagging")}
    pred = res.model.synthesise({"cine": vb["cine"]})
    err = (pred - vb["tagging"]).pow(2).mean().item()
    # beats both "copy the cine" (no flip learned) and "predict the mean image"
    assert err < 0.5 * (vb["cine"] - vb["tagging"]).pow(2).mean().item()
    assert err < 0.5 * (vb["tagging"] - vb["tagging"].mean(0)).pow(2).mean().item()


def test_paired_dataset_checks_and_scaling():
    ds = PairedSliceDataset(
        {"cine": np.ones((3, 2, 4, 4)), "tagging": np.zeros((3, 2, 4, 4))}, extra={"sid": [7, 8, 9]}
    )
    item = ds[1]
    assert item["cine"].dtype == torch.float32 and item["cine"].max() == 1 and item["tagging"].min() == -1
    assert item["sid"] == 8 and len(ds) == 3
    with pytest.raises(ValueError, match="differ in length"):
        PairedSliceDataset({"cine": np.ones((3, 2, 4, 4)), "tagging": np.zeros((2, 2, 4, 4))})


# ------------------------------------------------------------------------------------------
# geometry-aware variant: the tagging decoder is given the acquisition's tag phase
# ------------------------------------------------------------------------------------------


def _phase_ramp(n: int, size: int, k=(0.9, 0.4), seed: int = 0) -> torch.Tensor:
    """Linear tag phase maps (B, 2, H, W): direction 1 along (kx, ky), direction 2 orthogonal, random offsets."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    off = torch.rand(n, 2, generator=g) * 2 * math.pi
    p1 = k[0] * xx + k[1] * yy
    p2 = -k[1] * xx + k[0] * yy
    return torch.stack([p1, p2])[None] + off[:, :, None, None]


def test_phase_warp_decoder_renders_the_grid_at_the_displaced_material_position(monkeypatch):
    """Closed form: with decoded fields a, r and a displacement v, the output is
    2 a (1 - r + r g(phi_1(x + v)) g(phi_2(x + v))) - 1, phi evaluated independently at the displaced point."""
    m = tiny(phase_channel="tagging").eval()
    dec = m.decoders["tagging"]
    size, F = 32, 4
    ph = _phase_ramp(2, size)
    a = torch.full((2, 1, size, size), 0.8)
    r = torch.full((2, F, size, size), 0.6)
    v = torch.zeros(2, F, 2, size, size)
    v[:, 2, 0] = 1.5  # frame 2: material comes from 1.5 px to the right ...
    v[:, 3, 1] = -0.7  # frame 3: ... and from 0.7 px above
    monkeypatch.setattr(dec, "fields", lambda z: {"a_ref": a, "delta": torch.zeros_like(r), "r": r, "v": v})
    out = m.decode(torch.zeros(2, 8), "tagging", ph)
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    for f, (dx, dy) in enumerate([(0, 0), (0, 0), (1.5, 0), (0, -0.7)]):
        X, Y = xx + dx, yy + dy
        psi1 = 0.9 * X + 0.4 * Y + ph[:, 0, :1, :1]
        psi2 = -0.4 * X + 0.9 * Y + ph[:, 1, :1, :1]
        g = lambda p: 0.5 - 0.5 * torch.cos(p)  # noqa: E731  the initial profile
        want = 2 * 0.8 * (1 - 0.6 + 0.6 * g(psi1) * g(psi2)) - 1
        torch.testing.assert_close(out[:, f], want, atol=2e-4, rtol=0)


def test_phase_warp_decoder_moves_the_anatomy_with_the_displacement():
    """a_t(x) = a_ref(x + v_t(x)): a vertical edge moves by the displacement, in the right direction."""
    from cmrkit.models.smcvae import PhaseWarpDecoder

    size = 16
    ref = torch.zeros(1, 1, size, size)
    ref[..., 8:] = 1.0  # bright from column 8 on
    v = torch.zeros(1, 3, 2, size, size)
    v[:, 1, 0] = 2.0  # frame 1 shows the material from 2 px to the right: the edge appears at column 6
    v[:, 2, 0] = -0.5  # frame 2: half a pixel the other way
    out = PhaseWarpDecoder.warp(ref, v)[0]
    torch.testing.assert_close(out[0], ref[0, 0])
    assert out[1, :, 5].max() < 1e-5 and out[1, :, 6].min() > 1 - 1e-5  # float32 grid normalisation
    torch.testing.assert_close(out[2, :, 8], torch.full((size,), 0.5))


def test_phase_aware_model_needs_the_phase_and_learns_through_it():
    m = tiny(phase_channel="tagging")
    b = batch_for(m, n=3)
    with pytest.raises(ValueError, match="tag phase maps"):
        m.loss(b)
    b[PHASE_KEY] = _phase_ramp(3, 32)
    with pytest.raises(ValueError, match=r"shape \(B, 2, 32, 32\)"):
        m.loss({**b, PHASE_KEY: b[PHASE_KEY][:, :1]})
    loss, _ = m.loss(b)
    loss.backward()
    dec = m.decoders["tagging"]
    assert dec.profile_cos.grad.abs().sum() > 0 and dec.profile_sin.grad.abs().sum() > 0
    # the residual and displacement outputs start at zero but receive gradient
    conv = [mod for mod in dec.trunk.features[-1].modules() if isinstance(mod, torch.nn.ConvTranspose2d)][0]
    for sl in (slice(1, 5), slice(9, None)):
        assert conv.weight[:, sl].abs().max() == 0 and conv.weight.grad[:, sl].abs().sum() > 0
    # cine->tagging synthesis takes the phase from the batch dict or the argument, never the tagging images
    m.eval()
    x = {"cine": b["cine"], PHASE_KEY: b[PHASE_KEY]}
    y1 = m.synthesise(x, source="cine", target="tagging")
    y2 = m.synthesise(b["cine"], source="cine", target="tagging", phase=b[PHASE_KEY])
    torch.testing.assert_close(y1, y2)
    assert not torch.allclose(y1, m.synthesise(x, source="cine", target="tagging", phase=b[PHASE_KEY] + 1.0))
    assert m.synthesise(b["tagging"], source="tagging", target="cine").shape == (3, 4, 32, 32)  # no phase needed
    assert set(m.reconstruct(b)) == {"cine", "tagging"}
    with pytest.raises(ValueError, match="phase_channel"):
        SMCVAEConfig(phase_channel="dense")
    with pytest.raises(ValueError, match="phase_decoder"):
        SMCVAEConfig(phase_channel="tagging", phase_decoder="film")


def test_phase_channels_decoder_builds_and_trains_one_step():
    m = tiny(phase_channel="tagging", phase_decoder="channels")
    b = {**batch_for(m, n=2), PHASE_KEY: _phase_ramp(2, 32)}
    loss, _ = m.loss(b)
    loss.backward()
    assert m.decode(torch.zeros(2, 8), "tagging", b[PHASE_KEY]).abs().max() <= 1.0


@pytest.mark.parametrize("phase_channel", ["", "tagging", "tagging+cine"])
def test_thesis_size_one_optimiser_step_on_cpu(phase_channel):
    """demo/paper sizes (128 x 128, D = 1024, L = 7, 20 frames) build and take one Adam step on CPU,
    for the thesis model and the geometry-aware one (with and without the cine-reading head)."""
    phase_channel, _, anatomy = phase_channel.partition("+")
    m = SMCVAE(seed=0, phase_channel=phase_channel, motion_channel=anatomy, anatomy_channel=anatomy)
    assert m.config.image_size == 128 and m.config.latent_dim == 1024 and m.config.conv_layers == 7
    b = batch_for(m, n=2)
    if phase_channel:
        b[PHASE_KEY] = _phase_ramp(2, 128)
    opt = torch.optim.Adam(m.parameters(), lr=5e-4, weight_decay=1e-5)
    before = m.log_alpha_raw.detach().clone()
    loss, logs = m.loss(b)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and not torch.equal(before, m.log_alpha_raw.detach())
    assert logs["active_dims"].item() >= 0


def test_motion_channel_adds_a_registration_likelihood_that_is_zero_for_the_true_motion(monkeypatch):
    """With motion_channel="cine" the loss holds -log N(cine | cine[0] o (id + v), sigma_m^2): for a cine that
    is its first frame shifted by a known displacement, that displacement gives zero squared error and a
    wrong one does not; the term reaches the displacement outputs even with tags switched off."""
    from cmrkit.models.smcvae import PhaseWarpDecoder

    m = tiny(phase_channel="tagging", motion_channel="cine")
    size, F = 32, 4
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    blob = lambda cx: torch.exp(-((xx - cx) ** 2 + (yy - 16.0) ** 2) / 20.0)  # noqa: E731
    cine = torch.stack([blob(16.0 - 1.5 * t) for t in range(F)])[None].repeat(2, 1, 1, 1)  # moves left
    v_true = torch.zeros(2, F, 2, size, size)
    v_true[:, :, 0] = 1.5 * torch.arange(F, dtype=torch.float32)[None, :, None, None]  # came from the right
    moved = PhaseWarpDecoder.warp(cine[:, :1], v_true)
    assert (moved[:, :, 4:-4, 4:-4] - cine[:, :, 4:-4, 4:-4]).abs().max() < 0.02
    b = {"cine": cine, "tagging": torch.zeros(2, F, size, size), PHASE_KEY: _phase_ramp(2, size)}
    dec = m.decoders["tagging"]
    for v, expect_small in ((v_true, True), (torch.zeros_like(v_true), False)):
        fields = {"a_ref": torch.zeros(2, 1, size, size), "delta": torch.zeros(2, F, size, size)}
        fields.update({"r": torch.zeros(2, F, size, size), "v": v})
        monkeypatch.setattr(
            dec, "fields", lambda z, f=fields: {k: torch.cat([x] * (z.shape[0] // 2)) for k, x in f.items()}
        )
        out = m.forward(b)
        assert set(out["motion"]) == {"cine", "tagging"}
        _, logs = m.loss(b)
        assert (logs["mse/motion<-cine"].item() < 1e-3) == expect_small, logs["mse/motion<-cine"]
    monkeypatch.undo()
    loss, logs = m.loss(b)
    loss.backward()
    conv = [mod for mod in dec.trunk.features[-1].modules() if isinstance(mod, torch.nn.ConvTranspose2d)][0]
    assert conv.weight.grad[:, 9:].abs().sum() > 0 and "sigma/motion" in logs
    assert m.motion_logvar_raw.grad is not None
    with pytest.raises(ValueError, match="motion_channel"):
        SMCVAEConfig(phase_channel="tagging", motion_channel="tagging")
    with pytest.raises(ValueError, match="motion_channel"):
        SMCVAEConfig(motion_channel="cine")


def test_anatomy_head_starts_as_the_identity_and_reads_only_its_own_frame():
    """anatomy_channel="cine": an untrained head leaves the decoder exactly as without it (same weights
    elsewhere); once trained, output frame t depends on cine frame t only and within 2 px (two 3x3 convs)."""
    kw = dict(phase_channel="tagging", motion_channel="cine")
    plain, m = tiny(**kw).eval(), tiny(anatomy_channel="cine", **kw).eval()
    own = {k: v for k, v in m.state_dict().items() if not k.startswith("decoders.tagging.anatomy.")}
    plain.load_state_dict(own)  # every parameter but the head's
    b = {**batch_for(m, n=2), PHASE_KEY: _phase_ramp(2, 32)}
    torch.testing.assert_close(
        m.synthesise(b, source="cine", target="tagging"), plain.synthesise(b, source="cine", target="tagging")
    )
    torch.nn.init.normal_(m.decoders["tagging"].anatomy.net[-1].weight, std=0.5)
    y0 = m.synthesise(b, source="cine", target="tagging", phase=b[PHASE_KEY])
    assert not torch.allclose(y0, plain.synthesise(b, source="cine", target="tagging"))
    z = m.encode_params(b["cine"], "cine")[0]
    cine2 = b["cine"].clone()
    cine2[:, 2, 10, 10] += 1.0  # one pixel of frame 2
    d = (m.decode(z, "tagging", b[PHASE_KEY], cine2) - m.decode(z, "tagging", b[PHASE_KEY], b["cine"])).abs()
    assert d[:, [0, 1, 3]].max() == 0 and d[:, 2].max() > 0
    rows, cols = torch.nonzero(d[:, 2].amax(0), as_tuple=True)
    assert rows.min() >= 8 and rows.max() <= 12 and cols.min() >= 8 and cols.max() <= 12


def test_anatomy_channel_is_given_in_training_synthesis_and_reconstruction():
    m = tiny(phase_channel="tagging", motion_channel="cine", anatomy_channel="cine")
    b = {**batch_for(m, n=3), PHASE_KEY: _phase_ramp(3, 32)}
    loss, _ = m.loss(b)
    loss.backward()
    head = m.decoders["tagging"].anatomy.net
    assert head[-1].weight.grad.abs().sum() > 0  # the zero-initialised output layer learns
    m.eval()
    # cine -> tagging reads the anatomy from the source itself: a dict without other channels is enough
    y = m.synthesise({"cine": b["cine"], PHASE_KEY: b[PHASE_KEY]}, source="cine", target="tagging")
    torch.testing.assert_close(y, m.synthesise(b["cine"], source="cine", target="tagging", phase=b[PHASE_KEY]))
    assert set(m.reconstruct(b)) == {"cine", "tagging"}
    # tagging -> tagging needs the cine, and says so
    with pytest.raises(ValueError, match="anatomy from channel 'cine'"):
        m.synthesise({"tagging": b["tagging"], PHASE_KEY: b[PHASE_KEY]}, source="tagging", target="tagging")
    assert m.synthesise(b, source="tagging", target="tagging").shape == (3, 4, 32, 32)
    with pytest.raises(ValueError, match=r"shape \(B, 4, 32, 32\)"):
        m.decode(torch.zeros(3, 8), "tagging", b[PHASE_KEY], b["cine"][:, :2])
    for bad in (dict(anatomy_channel="cine"), dict(phase_channel="tagging", anatomy_channel="tagging")):
        with pytest.raises(ValueError, match="anatomy_channel"):
            SMCVAEConfig(**bad)
    with pytest.raises(ValueError, match="anatomy_width"):
        SMCVAEConfig(phase_channel="tagging", anatomy_channel="cine", anatomy_width=0)


def test_tag_profile_harmonics_match_their_closed_form():
    """The Chebyshev recursion of the learned tag profile equals sum_n c_n cos(n psi) + s_n sin(n psi)."""
    for n in (1, 2, 3, 4):
        m = tiny(phase_channel="tagging", profile_harmonics=n)
        dec = m.decoders["tagging"]
        g = torch.Generator().manual_seed(n)
        with torch.no_grad():
            dec.profile_cos.copy_(torch.randn(n + 1, generator=g))
            dec.profile_sin.copy_(torch.randn(n, generator=g))
        psi = torch.linspace(-7.0, 7.0, 101)
        want = dec.profile_cos[0] + sum(
            dec.profile_cos[j] * torch.cos(j * psi) + dec.profile_sin[j - 1] * torch.sin(j * psi)
            for j in range(1, n + 1)
        )
        torch.testing.assert_close(dec.profile(psi), want, atol=1e-5, rtol=0)
