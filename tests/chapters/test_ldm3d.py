"""Chapter 5 pipeline on a tiny phantom cohort: volumes, training and reloading through cmrkit.runs,
sample sets, bad inputs, closed-form helpers, and the thesis-resolution dry run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cmrkit import config
from cmrkit.chapters import ldm3d
from cmrkit.runs import RunMismatchError, SampleSet

TINY = {
    "phantom.n_subjects": 6,
    "phantom.matrix": 64,
    "phantom.cine_frames": 6,
    "phantom.tag_frames": 6,
    "phantom.slices": 8,
    "phantom.workers": 1,
    "ch5.image_size": [32, 32],
    "ch5.slices": 8,
    "ch5.split": [0.5, 0.17, 0.33],
    "ch5.ae_channels": [8, 16],
    "ch5.ae_epochs": 2,
    "ch5.diffusion_channels": [16, 32],
    "ch5.diffusion_iterations": 4,
    "ch5.diffusion_batch_size": 2,
    "ch5.ddim_steps": 3,
    "ch5.n_samples": [3, 4],
    "ch5.sample_batch_size": 4,
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from cmrkit.phantom import ensure_cohort

    out = tmp_path_factory.mktemp("tiny_cohort")
    cfg = config.load("smoke", data_dir=str(out), device="cpu", overrides=TINY)
    ensure_cohort(cfg)
    return cfg, ldm3d.load_volumes(cfg)


@pytest.fixture()
def runs_root(tmp_path, monkeypatch):
    """Run folders in a temporary directory (never the repository's runs/)."""
    import cmrkit.runs

    monkeypatch.setattr(cmrkit.runs, "RUNS_DIR", tmp_path / "runs")
    return tmp_path / "runs"


def test_split_subjects():
    ids = [f"S{i}" for i in range(20)]
    a = ldm3d.split_subjects(ids, [0.7, 0.1, 0.2], seed=3)
    assert a == ldm3d.split_subjects(ids[::-1], [0.7, 0.1, 0.2], seed=3)
    assert sorted(a.values()).count("train") == 14 and sorted(a.values()).count("test") == 4
    assert a != ldm3d.split_subjects(ids, [0.7, 0.1, 0.2], seed=4)
    with pytest.raises(ValueError, match="ch5.split"):
        ldm3d.split_subjects(ids, [0.5, 0.5], seed=0)
    with pytest.raises(ValueError, match="at least 3"):
        ldm3d.split_subjects(["a", "b"], [0.6, 0.2, 0.2], seed=0)


def test_volumes_on_the_roi_grid_base_first(tiny):
    cfg, data = tiny
    assert data.images.shape == data.labels.shape == (6, 32, 32, 8)
    assert data.images.dtype == np.float32 and 0 <= data.images.min() and data.images.max() <= 1
    assert set(np.unique(data.labels)) <= {0, 1, 2, 3} and (data.labels == 2).any()
    assert np.allclose(data.spacing[:, :2], 128.0 / 32, rtol=0.02)  # ch5.roi_mm / image_size (whole pixels)
    assert sorted(set(data.split)) == ["test", "train", "val"]
    for s in set(data.subject):
        assert len(set(data.split[data.subject == s])) == 1
    lv = (data.labels == 1).sum(axis=(1, 2))  # (N, Z): cavity area per slice
    assert all(row[0] >= row[np.flatnonzero(row)[-1]] for row in lv)  # slice 0 is basal
    # the heart is centred in the ROI
    c = np.argwhere(data.labels[0] > 0)[:, :2].mean(0)
    assert np.all(np.abs(c - 15.5) < 4)


def test_chapter5_cohort_of_its_own_renders_end_diastole_beside_the_data(tiny):
    cfg, data = tiny
    assert ldm3d.volume_folder(cfg) == Path(cfg.data_dir) and ldm3d.source_key(cfg) == {}
    own = _with(cfg, **{"ch5.phantom_subjects": 8})
    big = ldm3d.load_volumes(own)
    folder = Path(big.meta["folder"])
    assert folder.name == Path(cfg.data_dir).name + "-ch5" and len(big) == 8
    spec = json.loads((folder / "cohort.json").read_text())
    assert spec["n_subjects"] == 8 and spec["geometry"]["cine_frames"] == 2 and spec["status"] == "complete"
    # end-diastole of subject i is the main cohort's subject i (same anatomy, only the frames differ)
    for sid in data.subject:
        i, j = list(data.subject).index(sid), list(big.subject).index(sid)
        assert np.array_equal(data.labels[i], big.labels[j]), sid
    assert ldm3d.source_key(own) == {"phantom_subjects": 8}
    assert ldm3d.ae_payload(own, big, ldm3d.autoencoder_config(own, big.shape))["phantom_subjects"] == 8
    for bad in (-1, 2, 2.5):  # a float is refused when the configuration loads, the range here
        with pytest.raises(ValueError, match="ch5.phantom_subjects.* must be"):
            ldm3d.phantom_subjects(_with(cfg, **{"ch5.phantom_subjects": bad}))
    real = config.load(
        "smoke", dataset="ukbb", data_dir=cfg.data_dir, device="cpu", overrides={**TINY, "ch5.phantom_subjects": 8}
    )
    assert ldm3d.phantom_subjects(real) == 0  # only the phantom has a cohort of its own


def test_stack_order_is_detected():
    v = np.zeros((8, 8, 4), np.uint8)
    for z, r in enumerate((3, 3, 2, 1)):
        v[4 - r : 4 + r, 4 - r : 4 + r, z] = 1
    assert ldm3d._base_first(v) and not ldm3d._base_first(v[..., ::-1])


def test_a_data_set_without_masks_is_refused(tiny, tmp_path):
    cfg, _ = tiny
    src = sorted(p for p in Path(cfg.data_dir).iterdir() if p.is_dir())
    for p in src[:3]:  # UK Biobank layout with images only
        (tmp_path / p.name).mkdir()
        shutil.copy(p / "sa.nii.gz", tmp_path / p.name / "sa.nii.gz")
    cfg2 = config.load("smoke", dataset="ukbb", data_dir=str(tmp_path), device="cpu", overrides=TINY)
    with pytest.raises(ValueError, match="no subject has an image with an ED segmentation.*no segmentation"):
        ldm3d.load_volumes(cfg2)


def test_sample_count_of_zero_is_refused(tiny):
    cfg, _ = tiny
    bad = config.load("smoke", data_dir=cfg.data_dir, device="cpu", overrides={**TINY, "ch5.n_samples": [0, 4]})
    with pytest.raises(ValueError, match="ch5.n_samples must be a list of positive sample counts"):
        ldm3d.sample_counts(bad)


def test_scale_equivariance_setting_is_checked_and_keys_runs_only_when_on(tiny):
    cfg, data = tiny
    mcfg = ldm3d.autoencoder_config(cfg, data.shape)

    def key(value):
        c = config.load(
            "smoke", data_dir=cfg.data_dir, device="cpu", overrides={**TINY, "ch5.ae_scale_equivariance": value}
        )
        return ldm3d.ae_payload(c, data, mcfg)

    assert key(0.0) == key(0) and "scale_equivariance" not in key(0.0)  # runs trained before the option keep keys
    assert key(0.5)["scale_equivariance"] == 0.5
    for bad in ("x", -1, float("nan")):
        with pytest.raises(ValueError, match="ch5.ae_scale_equivariance.* must be a number"):
            key(bad)


def _with(cfg, **overrides):
    return config.load("smoke", data_dir=cfg.data_dir, device="cpu", overrides={**TINY, **overrides})


def test_decoder_stage_settings_are_checked_naming_the_setting(tiny):
    cfg, _ = tiny
    assert ldm3d.decoder_settings(cfg) is None  # smoke: the thesis' single stage
    assert ldm3d.decoder_settings(_with(cfg, **{"ch5.ae_decoder": {"epochs": 0, "noise": 0.5}})) is None
    got = ldm3d.decoder_settings(_with(cfg, **{"ch5.ae_decoder": {"epochs": 3, "noise": 0.5}}))
    assert got == {"epochs": 3, "noise": 0.5, "lr": 1e-4, "batch_size": 4}
    # the profile's types are checked when the configuration loads, the ranges by decoder_settings;
    # either way the message names the setting
    for bad, match in (
        ({"epochs": 2.5}, "ch5.ae_decoder.epochs.* must be an integer"),
        ({"epochs": -1}, "ch5.ae_decoder.epochs must be an integer >= 0"),
        ({"epochs": 2, "noise": -1.0}, "ch5.ae_decoder.noise must be a number >= 0"),
        ({"epochs": 2, "lr": 0.0}, "ch5.ae_decoder.lr must be a number > 0"),
        ({"epochs": 2, "batch_size": 0}, "ch5.ae_decoder.batch_size must be an integer > 0"),
        ({"epochs": 2, "sigma": 1.0}, "sigma"),
        (5, "ch5.ae_decoder"),
    ):
        with pytest.raises(ValueError, match=match):
            ldm3d.decoder_settings(_with(cfg, **{"ch5.ae_decoder": bad}))


@pytest.mark.slow
def test_decoder_stage_trains_the_decoder_only_and_reloads(tiny, runs_root):
    cfg, data = tiny
    first = ldm3d.train_autoencoder(cfg, data)
    assert ldm3d.finetune_decoder(cfg, data, first) is first  # off in the smoke profile
    on = _with(cfg, **{"ch5.ae_decoder": {"epochs": 2, "noise": 0.5, "lr": 1e-3, "batch_size": 2}})
    ae = ldm3d.train_autoencoder(on, data)  # the first stage is reloaded, then the decoder is fine-tuned
    assert ae.folder.name.startswith("decoder-") and ae.folder.parent == first.folder.parent
    assert [h["stage"] for h in ae.history] == ["autoencoder"] * 2 + ["decoder"] * 2
    dec = {id(p) for p in ae.model.decoder_parameters()}
    before, after = dict(first.model.named_parameters()), dict(ae.model.named_parameters())
    for name, p in after.items():
        assert p.requires_grad  # frozen only while training
        assert torch.equal(p, before[name]) != (id(p) in dec), name  # encoder kept, decoder trained
    # the latents (the diffusion model's data) are the first stage's
    from cmrkit.models.diffusion import encode_latents

    tr = data.index("train")
    torch.testing.assert_close(
        encode_latents(ae.model, data.images[tr], data.labels[tr])[0],
        encode_latents(first.model, data.images[tr], data.labels[tr])[0],
    )
    again = ldm3d.train_autoencoder(on, data)
    assert again.folder == ae.folder
    for k, v in ae.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k])
    # another first stage means another decoder run
    other = _with(
        cfg, **{"ch5.ae_decoder": {"epochs": 2, "noise": 0.5, "lr": 1e-3, "batch_size": 2}, "ch5.ae_lr": 5e-4}
    )
    assert ldm3d.train_autoencoder(other, data).folder != ae.folder


@pytest.mark.parametrize("bad", [1.5, 0.0, "x"])
def test_a_bad_ema_decay_is_refused_naming_the_setting(tiny, bad):
    cfg, data = tiny
    other = config.load("smoke", data_dir=cfg.data_dir, device="cpu", overrides={**TINY, "ch5.diffusion_ema": bad})
    with pytest.raises(ValueError, match="ch5.diffusion_ema must be a decay in"):
        ldm3d.train_diffusion(other, data, ldm3d.Trained(None, [], 0, None))


@pytest.mark.slow
def test_train_reload_mismatch_and_samples(tiny, runs_root):
    cfg, data = tiny
    ae = ldm3d.train_autoencoder(cfg, data)
    assert len(ae.history) == 2 and (ae.folder / "model.pt").is_file()
    again = ldm3d.train_autoencoder(cfg, data)  # finished run: reloaded, not retrained
    assert again.folder == ae.folder and again.history == ae.history
    for k, v in ae.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k])
    # a checkpoint made with other settings is refused, naming the setting
    other = config.load("smoke", data_dir=cfg.data_dir, device="cpu", overrides={**TINY, "ch5.ae_lr": 5e-4})
    with pytest.raises(RunMismatchError, match="lr"):
        ldm3d.train_autoencoder(other, data, checkpoint=ae.folder)

    ldm = ldm3d.train_diffusion(cfg, data, ae)
    assert ldm.history[-1]["step"] == 4
    from cmrkit.models.diffusion import compute_scale_factor, encode_latents
    from cmrkit.train import load_model

    tr = data.index("train")
    mu, sigma = encode_latents(ae.model, data.images[tr], data.labels[tr])
    sf = compute_scale_factor(mu, sigma, seed=cfg.seed)
    saved = load_model(ldm.folder / "model.pt")
    assert float(ldm.model.scale_factor) == sf == float(saved.model.scale_factor) == saved.extra["scale_factor"]
    assert saved.extra["autoencoder"] == ae.folder.name
    assert float(ldm3d.train_diffusion(cfg, data, ae).model.scale_factor) == sf  # reloaded with its factor

    ss = ldm3d.generate_samples(cfg, data, ae, ldm)
    assert len(ss) == 4 and ss.arrays["image"].shape == (4, 32, 32, 8) and ss.arrays["labels"].dtype == np.uint8
    from cmrkit.models.diffusion import generate, sample_seeds

    assert np.array_equal(ss.seeds, sample_seeds(cfg.seed, 4))
    back = SampleSet.load(next(runs_root.rglob("samples.npz")))
    assert np.array_equal(back.arrays["image"], ss.arrays["image"]) and back.meta["sets"] == [3, 4]
    np.testing.assert_allclose(back.affine[:3, :3], np.diag(data.reference_spacing))
    # sample 2 regenerates alone from its seed
    one, _ = generate(ae.model, ldm.model, ss.seeds[2:3], ddim_steps=3, batch_size=1)
    np.testing.assert_allclose(one[0], ss.arrays["image"][2], atol=1e-4)
    paths = back.to_nifti(runs_root / "nifti")
    assert len(paths) == 8


def test_volume_phenotypes_closed_form():
    lab = np.zeros((2, 10, 10, 4), np.uint8)
    lab[0, :5, :4, :2] = 1  # 40 LV voxels
    lab[0, 5:, :2, 0] = 2  # 10 myocardium voxels
    lab[1, :, :, :] = 3  # 400 RV voxels
    ph = ldm3d.volume_phenotypes(lab, (2.0, 2.0, 10.0))  # 40 mm^3 = 0.04 mL per voxel
    assert ph.loc[0, "LVEDV"] == pytest.approx(1.6) and ph.loc[0, "LVM"] == pytest.approx(0.4 * 1.05)
    assert ph.loc[1, "RVEDV"] == pytest.approx(16.0) and ph.loc[1, "LVEDV"] == 0


def test_nearest_distances_closed_form():
    ref = np.stack([np.zeros((4, 4, 2)), np.ones((4, 4, 2)), np.full((4, 4, 2), 0.5)])
    q = np.stack([np.full((4, 4, 2), 0.9), ref[2]])
    d, i = ldm3d.nearest_distances(q, ref)
    assert i.tolist() == [1, 2] and d[0] == pytest.approx(0.1) and d[1] == pytest.approx(0.0, abs=1e-12)
    m = ldm3d.nearest_mask_distances(
        np.stack([np.full((4, 4, 2), 1), np.full((4, 4, 2), 3)]), np.stack([np.full((4, 4, 2), 1)])
    )
    # identical LV-only masks: LV Dice 1, Myo/RV absent from both count as agreement (1) -> distance 0
    assert m[0] == pytest.approx(0.0) and m[1] == pytest.approx(1.0 - 1.0 / 3.0)


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["demo", "paper"])
def test_dry_run_at_thesis_resolution(profile):
    """Both models at the profile's sizes: one training step each on a batch of 1 and one DDIM step."""
    from cmrkit.models.autoencoder import AutoencoderLoss, VolumeAutoencoder
    from cmrkit.models.diffusion import DiffusionLoss, LatentDiffusion, generate, sample_seeds

    cfg = config.load(profile, device="cpu")
    shape = (*cfg.ch5.image_size, cfg.ch5.slices)
    ae = VolumeAutoencoder(ldm3d.autoencoder_config(cfg, shape), seed=0)
    assert ae.config.latent_shape == (4, 16, 16)
    ldm = LatentDiffusion(ldm3d.diffusion_config(cfg, ae.config.latent_shape), seed=0)
    img = torch.rand(1, *shape)
    lab = torch.randint(0, 4, (1, *shape))
    for model, loss_fn, batch, lr in (
        (ae, AutoencoderLoss(cfg.ch5.kl_weight), {"image": img, "labels": lab}, cfg.ch5.ae_lr),
        (
            ldm,
            DiffusionLoss(),
            {"mu": torch.randn(1, 4, 16, 16), "sigma": torch.ones(1, 4, 16, 16)},
            cfg.ch5.diffusion_lr,
        ),
    ):
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        before = [p.detach().clone() for p in model.parameters()]
        loss, _ = loss_fn(model, batch)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    out, labels = generate(ae.eval(), ldm.eval(), sample_seeds(0, 1), ddim_steps=1, batch_size=1)
    assert out.shape == labels.shape == (1, *shape)
