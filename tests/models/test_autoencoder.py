"""Image + mask KL autoencoder (cmrkit.models.autoencoder): shapes at every profile size, the depth
folding, the loss terms, persistence and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmrkit import config
from cmrkit.models.autoencoder import (
    AutoencoderLoss,
    EncodedVolumeDataset,
    NoisyLatentDecoderLoss,
    VolumeAutoencoder,
    VolumeAutoencoderConfig,
    VolumeDataset,
    kl_divergence,
    split_output,
    to_input,
)


@pytest.mark.parametrize("profile", ["smoke", "cpu", "demo", "paper"])
def test_round_trip_is_exact_in_shape_at_every_profile_size(profile):
    from cmrkit.chapters.ldm3d import autoencoder_config

    cfg = config.load(profile, device="cpu")
    x, y = cfg.ch5.image_size
    z = cfg.ch5.slices
    mcfg = autoencoder_config(cfg, (x, y, z))
    model = VolumeAutoencoder(mcfg, seed=0).eval()
    inp = torch.rand(1, 2, x, y, z)
    with torch.no_grad():
        mu, sigma = model.encode(inp)
        out = model.decode(mu)
    assert mu.shape == sigma.shape == (1, *mcfg.latent_shape)
    assert out.shape == (1, 5, x, y, z)  # image + 4 mask logits, every slice kept
    if profile in ("demo", "paper"):  # the thesis latent: 16 x 16 x (depth 1) x 4 for 128 x 128 x 10
        assert (x, y, z) == (128, 128, 10) and mcfg.latent_shape == (4, 16, 16)


def test_fold_unfold_are_inverse_and_slice_ordered():
    m = VolumeAutoencoder(VolumeAutoencoderConfig(image_size=(8, 8), depth=3, channels=(8, 8)), seed=0)
    x = torch.arange(2 * 5 * 8 * 8 * 3, dtype=torch.float32).reshape(2, 5, 8, 8, 3)
    f = m.fold(x)
    assert f.shape == (2, 15, 8, 8)
    # channel c*Z + z holds channel c of slice z
    assert torch.equal(f[:, 1 * 3 + 2], x[:, 1, :, :, 2])
    assert torch.equal(m.unfold(f), x)


def test_first_layer_equals_a_3d_convolution_spanning_the_stack():
    """The documented depth handling: a 2D conv on the folded stack is a 3D conv with a 3 x 3 x Z kernel
    and no padding along the slices (depth Z -> 1 in one layer)."""
    z, cin, cout = 4, 2, 6
    x = torch.randn(1, cin, 7, 9, z, dtype=torch.float64)
    w3 = torch.randn(cout, cin, 3, 3, z, dtype=torch.float64)
    y3 = torch.nn.functional.conv3d(x, w3, padding=(1, 1, 0))  # (1, cout, 7, 9, 1)
    m = VolumeAutoencoder(VolumeAutoencoderConfig(image_size=(8, 8), depth=z, channels=(8, 8)), seed=0)
    w2 = w3.permute(0, 1, 4, 2, 3).reshape(cout, cin * z, 3, 3)  # input channel c*Z + z
    y2 = torch.nn.functional.conv2d(m.fold(x), w2, padding=1)
    torch.testing.assert_close(y2, y3[..., 0])


def test_kl_closed_form():
    mu, sigma = torch.zeros(3, 4, 2, 2), torch.ones(3, 4, 2, 2)
    assert float(kl_divergence(mu, sigma)) == pytest.approx(0.0, abs=1e-12)
    # 0.5 * (1 + 1 - 0 - 1) per element = 0.5; 16 elements per item, mean over the batch
    assert float(kl_divergence(torch.ones(3, 4, 2, 2), sigma)) == pytest.approx(8.0)
    s = torch.full((1, 1, 1, 1), 2.0)
    assert float(kl_divergence(torch.zeros(1, 1, 1, 1), s)) == pytest.approx(0.5 * (4 - np.log(4) - 1))


def test_slice_stem_and_head_work_slice_by_slice_with_shared_weights():
    """With ``slice_width`` the full resolution is handled per slice: a slice's stem features depend on that
    slice only, permuting the slices permutes the features (one set of weights), and the head turns the
    block of folded output maps of slice z into output slice z alone."""
    z, s = 4, 8
    mcfg = VolumeAutoencoderConfig(image_size=(16, 16), depth=z, channels=(8, 16), slice_width=s)
    m = VolumeAutoencoder(mcfg, seed=0).eval()
    assert mcfg.factor == 4 and mcfg.latent_shape == (4, 4, 4)  # stem halves, then one AutoencoderKL level
    x = torch.rand(2, 2, 16, 16, z)
    with torch.no_grad():
        f = m.fold(x)
        assert f.shape == (2, s * z, 8, 8)
        per = f.reshape(2, s, z, 8, 8)  # channel c*Z + z, as the plain fold
        x2 = x.clone()
        x2[..., 1] = torch.rand(2, 2, 16, 16)
        changed = (m.fold(x2).reshape(2, s, z, 8, 8) - per).abs().sum(dim=(0, 1, 3, 4))
        assert changed[1] > 0 and torch.all(changed[[0, 2, 3]] == 0)
        perm = torch.tensor([2, 0, 3, 1])
        torch.testing.assert_close(m.fold(x[..., perm]).reshape(2, s, z, 8, 8), per[:, :, perm])
        y = torch.randn(2, s * z, 8, 8)
        out = m.unfold(y)
        assert out.shape == (2, 5, 16, 16, z)
        y2 = y.clone()
        y2.view(2, s, z, 8, 8)[:, :, 2] += 1.0
        diff = (m.unfold(y2) - out).abs().sum(dim=(0, 1, 2, 3))
        assert diff[2] > 0 and torch.all(diff[[0, 1, 3]] == 0)
        assert m.reconstruct(x).shape == (2, 5, 16, 16, z)


@pytest.mark.parametrize("slice_width", [0, 8])
def test_loss_terms_and_overfitting_a_tiny_batch(slice_width):
    torch.manual_seed(0)
    mcfg = VolumeAutoencoderConfig(
        image_size=(16, 16), depth=4, channels=(16, 16), latent_channels=4, slice_width=slice_width
    )
    model = VolumeAutoencoder(mcfg, seed=0)
    lab = torch.zeros(2, 16, 16, 4, dtype=torch.long)
    lab[:, 4:12, 4:12] = 2
    lab[:, 6:10, 6:10] = 1
    lab[:, 12:15, 4:12, :2] = 3
    img = 0.2 + 0.6 * (lab == 1).float() + 0.3 * (lab == 3).float()
    batch = {"image": img, "labels": lab}
    loss_fn = AutoencoderLoss(kl_weight=1e-4)
    loss, logs = loss_fn(model, batch)
    assert float(loss.detach()) == pytest.approx(float(logs["l1"] + logs["ce"] + 1e-4 * logs["kl"]), rel=1e-5)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss, logs = loss_fn(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        img_hat, lab_hat = split_output(model.reconstruct(to_input(img, lab)))
    assert (lab_hat == lab).float().mean() > 0.97
    assert (img_hat - img).abs().mean() < 0.05


@pytest.mark.parametrize("slice_width", [0, 8])
def test_decode_rescaled_is_decode_at_the_models_own_size_and_scales_the_output(slice_width):
    mcfg = VolumeAutoencoderConfig(image_size=(16, 16), depth=3, channels=(8, 8), slice_width=slice_width)
    m = VolumeAutoencoder(mcfg, seed=0).eval()
    z = torch.randn(2, *mcfg.latent_shape)
    with torch.no_grad():
        torch.testing.assert_close(m.decode_rescaled(z), m.decode(z))
        half = m.decode_rescaled(torch.nn.functional.avg_pool2d(z, 2))
    assert half.shape == (2, 5, 8, 8, 3)  # half the in-plane size, every slice kept
    with pytest.raises(ValueError, match=r"decode_rescaled\(z\): expected \(B, 4, h, w\)"):
        m.decode_rescaled(torch.zeros(1, 3, 4, 4))


def _reference_downscaled_loss(out, image, labels):
    """Independent reference: 2 x 2 block means by reshaping, soft cross-entropy written out."""
    b, x, y, z = image.shape
    img2 = image.reshape(b, x // 2, 2, y // 2, 2, z).mean(dim=(2, 4))
    onehot = torch.nn.functional.one_hot(labels, 4).float()  # (B, X, Y, Z, K)
    p = onehot.reshape(b, x // 2, 2, y // 2, 2, z, 4).mean(dim=(2, 4)).permute(0, 4, 1, 2, 3)
    logp = torch.log_softmax(out[:, 1:], dim=1)
    return (out[:, 0] - img2).abs().mean() + (-(p * logp).sum(1)).mean()


def test_scale_equivariance_term_matches_an_independent_computation():
    mcfg = VolumeAutoencoderConfig(image_size=(16, 16), depth=3, channels=(8, 8), slice_width=8)
    m = VolumeAutoencoder(mcfg, seed=0)
    g = torch.Generator().manual_seed(1)
    image = torch.rand(2, 16, 16, 3, generator=g)
    labels = torch.randint(0, 4, (2, 16, 16, 3), generator=g)
    mu = torch.randn(2, *mcfg.latent_shape, generator=g)
    sigma = torch.zeros_like(mu)  # no draw: the decoded latent is the 2 x 2 mean of mu
    got = AutoencoderLoss.downscaled_loss(m, {"image": image, "labels": labels}, mu, sigma)
    with torch.no_grad():
        out = m.decode_rescaled(mu.reshape(2, 4, 2, 2, 2, 2).mean(dim=(3, 5)))
    torch.testing.assert_close(got.detach(), _reference_downscaled_loss(out, image, labels))


def test_scale_equivariance_weight_adds_the_term_in_training_only():
    mcfg = VolumeAutoencoderConfig(image_size=(16, 16), depth=3, channels=(8, 8), slice_width=8)
    m = VolumeAutoencoder(mcfg, seed=0)
    batch = {"image": torch.rand(2, 16, 16, 3), "labels": torch.randint(0, 4, (2, 16, 16, 3))}
    m.train()
    torch.manual_seed(5)
    loss, logs = AutoencoderLoss(1e-4, 0.5)(m, batch)
    assert float(loss.detach()) == pytest.approx(
        float(logs["l1"] + logs["ce"] + 1e-4 * logs["kl"] + 0.5 * logs["se"]), rel=1e-5
    )
    torch.manual_seed(5)
    plain, plain_logs = AutoencoderLoss(1e-4)(m, batch)
    assert "se" not in plain_logs and float(plain_logs["l1"]) == pytest.approx(float(logs["l1"]))
    m.eval()  # validation: the plain reconstruction loss, so the kept epoch is chosen as before
    with torch.no_grad():
        ev, ev_logs = AutoencoderLoss(1e-4, 0.5)(m, batch)
        ev0, _ = AutoencoderLoss(1e-4)(m, batch)
    assert "se" not in ev_logs and float(ev) == float(ev0)
    with pytest.raises(ValueError, match="scale_equivariance"):
        AutoencoderLoss(1e-4, -0.1)
    small = VolumeAutoencoder(VolumeAutoencoderConfig(image_size=(6, 6), depth=2, channels=(8, 8)), seed=0).train()
    assert small.config.latent_shape == (4, 3, 3)
    with pytest.raises(ValueError, match="even latent size"):
        AutoencoderLoss(1e-4, 0.5)(
            small, {"image": torch.rand(1, 6, 6, 2), "labels": torch.randint(0, 4, (1, 6, 6, 2))}
        )


class _RecordingDecoder(torch.nn.Module):
    """Stands in for the autoencoder: records the latent it is asked to decode."""

    def __init__(self, n_classes=4):
        super().__init__()
        self.config = VolumeAutoencoderConfig(image_size=(8, 8), depth=2, channels=(8, 8), n_classes=n_classes)
        self.seen = []

    def decode(self, z):
        self.seen.append(z.detach().clone())
        return torch.zeros(z.shape[0], 1 + self.config.n_classes, 8, 8, 2) + z.mean()


def test_noisy_latent_decoder_loss_perturbs_by_the_channel_spread_in_training_only():
    sd = torch.tensor([1.0, 2.0, 0.5, 4.0])
    mu = torch.randn(4000, 4, 2, 2)
    sigma = torch.full_like(mu, 0.01)
    loss_fn = NoisyLatentDecoderLoss(0.6, sd)
    torch.manual_seed(0)
    dz = loss_fn.perturb(mu, sigma) - mu
    # u ~ U(0, 1) per volume times N(0, (0.6 sd)^2), plus the posterior draw: E[u^2] = 1/3
    expected = torch.sqrt(0.6**2 * sd**2 / 3 + 0.01**2)
    torch.testing.assert_close(dz.std(dim=(0, 2, 3)), expected, rtol=0.05, atol=0)
    # the scale is shared by every position of a volume (one u per volume)
    per_volume = dz.abs().mean(dim=(1, 2, 3))
    assert per_volume.max() > 5 * per_volume.min()
    # noise 0: the posterior draw only
    dz0 = NoisyLatentDecoderLoss(0.0, sd).perturb(mu, sigma) - mu
    torch.testing.assert_close(dz0.std(), torch.tensor(0.01), rtol=0.05, atol=0)

    rec = _RecordingDecoder()
    batch = {
        "mu": mu[:2],
        "sigma": sigma[:2],
        "image": torch.rand(2, 8, 8, 2),
        "labels": torch.randint(0, 4, (2, 8, 8, 2)),
    }
    rec.eval()  # validation decodes mu itself: the plain reconstruction loss
    loss, logs = loss_fn(rec, batch)
    assert torch.equal(rec.seen[-1], mu[:2])
    out = torch.zeros(2, 5, 8, 8, 2) + mu[:2].mean()
    ref = (out[:, 0] - batch["image"]).abs().mean() + torch.nn.functional.cross_entropy(out[:, 1:], batch["labels"])
    torch.testing.assert_close(loss, ref)
    assert set(logs) >= {"l1", "ce"}
    rec.train()
    loss_fn(rec, batch)
    assert not torch.equal(rec.seen[-1], mu[:2])
    with pytest.raises(ValueError, match="noise must be"):
        NoisyLatentDecoderLoss(-0.1, sd)
    with pytest.raises(ValueError, match="channel_sd"):
        NoisyLatentDecoderLoss(0.5, torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="3 channels, channel_sd 4"):
        loss_fn.perturb(mu[:, :3], sigma[:, :3])


def test_decoder_parameters_are_the_decoding_path_and_training_them_leaves_the_encoder():
    mcfg = VolumeAutoencoderConfig(image_size=(16, 16), depth=3, channels=(8, 8), slice_width=8)
    m = VolumeAutoencoder(mcfg, seed=0)
    dec = {id(p) for p in m.decoder_parameters()}
    enc = [p for p in m.parameters() if id(p) not in dec]
    assert dec and enc
    assert {id(p) for p in m.head.parameters()} <= dec and not ({id(p) for p in m.stem.parameters()} & dec)
    x = to_input(torch.rand(2, 16, 16, 3), torch.randint(0, 4, (2, 16, 16, 3)))
    mu, sigma = m.encode(x)
    # no gradient reaches the decoder parameters through the encoder, and every decoder parameter gets one
    loss, _ = NoisyLatentDecoderLoss(0.5, mu.detach().std(dim=(0, 2, 3)))(
        m, {"mu": mu.detach(), "sigma": sigma.detach(), "image": x[:, 0], "labels": torch.zeros(2, 16, 16, 3).long()}
    )
    loss.backward()
    assert all(p.grad is None for p in enc)
    assert all(p.grad is not None for p in m.decoder_parameters())
    ds = EncodedVolumeDataset(mu.detach(), sigma.detach(), np.random.rand(2, 16, 16, 3), np.zeros((2, 16, 16, 3)))
    item = ds[1]
    assert set(item) == {"image", "labels", "mu", "sigma"} and torch.equal(item["mu"], mu.detach()[1])
    with pytest.raises(ValueError, match="one latent per volume"):
        EncodedVolumeDataset(mu.detach()[:1], sigma.detach()[:1], np.random.rand(2, 16, 16, 3), None)


def test_split_output_and_inputs():
    out = torch.zeros(1, 5, 2, 2, 1)
    out[:, 0] = 1.7  # clipped to 1
    out[:, 3, 0, 0, 0] = 5.0  # label 2 there
    img, lab = split_output(out)
    assert float(img.max()) == 1.0 and lab.dtype == torch.uint8 and int(lab[0, 0, 0, 0]) == 2
    x = to_input(torch.zeros(1, 2, 2, 1), torch.full((1, 2, 2, 1), 3))
    assert x.shape == (1, 2, 2, 2, 1) and float(x[:, 1].max()) == 1.0


def test_save_and_load_round_trip(tmp_path):
    from cmrkit.train import load_model, save_model

    mcfg = VolumeAutoencoderConfig(image_size=(16, 16), depth=3, channels=(8, 16), attention=True, slice_width=8)
    m = VolumeAutoencoder(mcfg, seed=3).eval()
    x = torch.rand(2, 2, 16, 16, 3)
    path = save_model(tmp_path / "ae.pt", m, mcfg.to_dict())
    back = load_model(path)
    assert isinstance(back.model, VolumeAutoencoder) and back.model.config == mcfg
    with torch.no_grad():
        torch.testing.assert_close(back.model.reconstruct(x), m.reconstruct(x))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image_size": (62, 64), "channels": (8, 8, 8)}, "divisible"),
        ({"n_classes": 1}, "n_classes"),
        ({"depth": 0}, "depth"),
        ({"slice_width": -1}, "slice_width"),
        ({"image_size": (18, 18), "channels": (8, 8), "slice_width": 8}, "divisible by 4"),
        ({"channels": (12, 16), "norm_num_groups": 8}, "norm_num_groups"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VolumeAutoencoderConfig(**kwargs)


def test_bad_input_shapes():
    m = VolumeAutoencoder(VolumeAutoencoderConfig(image_size=(16, 16), depth=3, channels=(8, 8)), seed=0)
    with pytest.raises(ValueError, match=r"encode\(x\): expected \(B, 2, 16, 16, 3\)"):
        m.encode(torch.zeros(1, 2, 16, 16, 4))
    with pytest.raises(ValueError, match="decode"):
        m.decode(torch.zeros(1, 4, 4, 4))
    with pytest.raises(ValueError, match="labels shape"):
        VolumeDataset(np.zeros((2, 4, 4, 2)), np.zeros((2, 4, 4, 3)))
    with pytest.raises(ValueError, match="kl_weight"):
        AutoencoderLoss(-1.0)


def test_log_variance_head_starts_small():
    x = torch.rand(2, 2, 16, 16, 3)
    kw = {"image_size": (16, 16), "depth": 3, "channels": (8, 8)}
    new = VolumeAutoencoder(VolumeAutoencoderConfig(**kw), seed=0)
    old = VolumeAutoencoder(VolumeAutoencoderConfig(**kw, init_log_var=None), seed=0)
    with torch.no_grad():
        (_, s_new), (_, s_old) = new.encode(x), old.encode(x)
    b_old = old.net.quant_conv_log_sigma.conv.bias.view(1, -1, 1, 1)
    # same weights, only the bias differs: log sigma^2 shifts by -6 - b_old
    torch.testing.assert_close(2 * torch.log(s_new) - 2 * torch.log(s_old), (-6.0 - b_old).expand_as(s_new))
    assert float(s_new.median()) < 0.1 < 0.3 < float(s_old.median())
