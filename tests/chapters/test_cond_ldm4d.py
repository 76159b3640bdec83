"""Chapter 6 pieces (cmrkit.chapters.cond_ldm4d) and the demo/paper-size dry run on CPU."""

import numpy as np
import pandas as pd
import pytest
import torch

from cmrkit.chapters import cond_ldm4d as ch
from cmrkit.chapters.cond_ldm4d.thesis import subject_index
from cmrkit.config import load
from cmrkit.models.autoencoder import AutoencoderLoss
from cmrkit.models.cond_diffusion import (
    ConditionalDiffusionLoss,
    ConditionalLatentDataset,
    ConditionalLatentDiffusion,
    SequenceAutoencoder,
    generate_sequences,
)
from cmrkit.models.conditioning import COVARIATE_NAMES, ConditionSpace
from cmrkit.runs import SampleSet


def test_phase_frames_start_at_ed_and_cover_the_cycle():
    np.testing.assert_array_equal(ch.phase_frames(20, 10), np.arange(0, 20, 2))
    np.testing.assert_array_equal(ch.phase_frames(20, 20, ed_frame=3), (np.arange(20) + 3) % 20)
    np.testing.assert_array_equal(ch.phase_frames(50, 20)[:4], [0, 2, 5, 7])
    np.testing.assert_array_equal(ch.phase_frames(10, 20), np.repeat(np.arange(10), 2))
    with pytest.raises(ValueError):
        ch.phase_frames(0, 5)


def test_split_subjects_is_seeded_and_complete():
    ids = [f"S{i:03d}" for i in range(40)]
    a = ch.split_subjects(ids, [0.7, 0.1, 0.2], seed=1)
    assert a == ch.split_subjects(list(reversed(ids)), [0.7, 0.1, 0.2], seed=1)
    assert sorted(a.values()).count("test") == 8 and sorted(a.values()).count("val") == 4
    assert a != ch.split_subjects(ids, [0.7, 0.1, 0.2], seed=2)
    with pytest.raises(ValueError, match="summing to 1"):
        ch.split_subjects(ids, [0.5, 0.1, 0.1], seed=0)


def _data(n=12, t=4, size=8, depth=2):
    rng = np.random.default_rng(0)
    cov = pd.DataFrame(
        {
            "age": rng.uniform(45, 80, n),
            "sex": np.arange(n) % 2,
            "height_cm": rng.uniform(150, 195, n),
            "weight_kg": rng.uniform(50, 120, n),
            "smoking": np.arange(n) % 3,
            "alcohol": np.arange(n) % 3,
            "sbp": rng.uniform(100, 180, n),
            "dbp": rng.uniform(60, 100, n),
        },
        columns=list(COVARIATE_NAMES),
    )
    labels = np.zeros((n, size, size, depth, t), np.uint8)
    labels[:, 2:6, 2:6] = 1
    split = np.array(["train"] * 8 + ["val"] * 2 + ["test"] * 2)
    return ch.SequenceData(
        images=rng.random((n, size, size, depth, t), dtype=np.float32),
        labels=labels,
        subject=np.array([f"S{i}" for i in range(n)]),
        split=split,
        spacing=np.tile([2.0, 2.0, 10.0], (n, 1)),
        covariates=cov,
    )


def test_samples_are_matched_to_their_subjects():
    data = _data()
    te = data.index("test")
    cond = data.covariates.iloc[np.repeat(te, 2)][list(COVARIATE_NAMES)].to_numpy()
    ss = SampleSet(
        {"labels": data.labels[np.repeat(te, 2)]},
        np.arange(4),
        meta={"condition_names": list(COVARIATE_NAMES)},
        conditions=cond,
    )
    np.testing.assert_array_equal(subject_index(data, ss), np.repeat(te, 2))  # by identical covariates
    ss.meta["subjects"] = ["S11", "S10", "S11", "nobody"]
    np.testing.assert_array_equal(subject_index(data, ss), [11, 10, 11, -1])


def test_population_conditions_stay_in_the_allowed_ranges():
    data = _data(40)
    cfg = load("smoke")
    space = ConditionSpace.fit(data.covariates, cohort=data.covariates)
    cond, how = ch.population_conditions(cfg, data, space, 30)
    assert len(cond) == 30 and "phantom covariate model" in how["source"]
    space.validate_many(cond)  # raises if any is outside
    again, _ = ch.population_conditions(cfg, data, space, 30)
    pd.testing.assert_frame_equal(cond, again)


def _curve_labels(curves):
    """Label sequences (N, 10, 10, 2, T) whose LV (label 1) holds exactly ``curves[n][t]`` voxels."""
    curves = np.asarray(curves)
    lab = np.zeros((len(curves), 10, 10, 2, curves.shape[1]), np.uint8)
    flat = lab.reshape(len(curves), -1, curves.shape[1])  # a view: voxels x frames
    for n, c in enumerate(curves):
        for t, v in enumerate(c):
            flat[n, :v, t] = 1
    return lab


def test_curve_statistics_closed_form():
    lv = [100, 95, 80, 60, 50, 55, 70, 85, 95, 100]  # ES at frame 4, EF 50 %
    late = [90, 95, 100, 80, 60, 50, 60, 70, 80, 85]  # ED not at frame 0; ES at 0.5, EF (90 - 50) / 90
    early = [100, 40, 45, 60, 70, 80, 90, 95, 98, 100]  # ES at 0.1: outside the 25-55 % window
    ph = ch.curve_statistics(_curve_labels([lv, late, early]), (2.0, 2.0, 10.0), (45.0, 70.0))
    vox_ml = 2.0 * 2.0 * 10.0 / 1000.0
    assert ph["LVEDV"].tolist() == pytest.approx([100 * vox_ml, 90 * vox_ml, 100 * vox_ml])
    assert ph["ES_phase"].tolist() == pytest.approx([0.4, 0.5, 0.1])
    assert ph["LVEF"].tolist() == pytest.approx([50.0, 100 * 40 / 90, 60.0])
    v = np.array(lv, float)
    rough = np.abs(np.roll(v, -1) - 2 * v + np.roll(v, 1)).mean() / v[0]
    assert ph["roughness"][0] == pytest.approx(rough)
    assert ph["ed_at_0"].tolist() == [True, False, True]
    assert ph["es_ok"].tolist() == [True, True, False]
    assert ph["ef_ok"].tolist() == [True, False, True]  # 44.4 % is below the range
    assert ph["physiological"].tolist() == [True, False, False]


def test_temporal_table_adds_the_autoencoder_ceiling_when_given_one(tmp_path):
    from cmrkit.models.autoencoder import VolumeAutoencoderConfig
    from cmrkit.report import Report

    data = _data(12, t=4, size=16, depth=4)
    data.labels[..., 1:3] = 0  # LV present at ED and at the last frame only: a curve with ES inside the cycle
    ae = SequenceAutoencoder(
        VolumeAutoencoderConfig(image_size=(16, 16), depth=4, channels=(8, 16), latent_channels=2), 4, seed=0
    ).eval()
    gen = SampleSet({"labels": data.labels[:3]}, np.arange(3))
    rep = Report(profile="smoke", seed=0, dataset="unit", root=tmp_path, notebook="03_cond_ldm4d")
    cfg = load("smoke", device="cpu")
    out = ch.temporal_plausibility(cfg, rep, data, gen, gen, ch.Trained(ae, [], 0, tmp_path))
    ceiling = out["sets"]["autoencoded real test (ceiling)"]
    te = data.index("test")
    _, rec_l = ch.reconstruct(ae, data.images[te], data.labels[te])
    expect = ch.curve_statistics(rec_l, data.spacing[te], (0.0, 100.0))
    np.testing.assert_allclose(ceiling["LVEDV"], expect["LVEDV"])
    assert len(ceiling) == len(te) == 2
    rows = set(out["table"]["row"])
    assert "autoencoded real test (ceiling)" in rows and "real test" in rows
    without = ch.temporal_plausibility(cfg, rep, data, gen, gen)
    assert "autoencoded real test (ceiling)" not in without["sets"]


def test_tables_6_3_6_4_with_a_generated_set_without_a_heart(tmp_path):
    """W1 to a point mass at 0 is the real mean (closed form); KL is undefined and the table says why."""
    from cmrkit.clinical import sequence_phenotypes
    from cmrkit.report import Report

    data = _data(12, t=4)
    for i in range(len(data.labels)):  # LV of varying size, so the real phenotypes are not constant
        data.labels[i, 1 : 2 + i % 5, 1:6] = 1
    te = data.index("test")
    empty = SampleSet({"labels": np.zeros((6, *data.labels.shape[1:]), np.uint8)}, np.arange(6))
    cfg = load("smoke", device="cpu", overrides={"ch6.bootstrap": 0})
    rep = Report(profile="smoke", seed=0, dataset="unit", root=tmp_path, notebook="03_cond_ldm4d")
    out = ch.tables_6_3_6_4(cfg, rep, data, empty)
    real = sequence_phenotypes(data.labels[te], data.spacing[te])
    wd = out["table_6_4"].set_index(["row", "metric"])["value"]
    kl = out["table_6_3"].set_index(["row", "metric"])["value"]
    assert wd[("LDM", "LVEDV")] == pytest.approx(real["LVEDV"].mean())
    assert np.isnan(kl[("LDM", "LVEDV")])
    text = (tmp_path / "tables" / "table_6_3.md").read_text()
    assert "LDM LVEDV: KL undefined: every generated LVEDV is 0 (a point mass has no density)" in text


@pytest.mark.parametrize("bad", [1.0, 0, -0.5])
def test_a_bad_weight_average_decay_is_refused_before_training(bad):
    cfg = load("smoke", overrides={"ch6.diffusion_ema": bad})
    with pytest.raises(ValueError, match="ch6.diffusion_ema must be a decay in"):
        ch.train_diffusion(cfg, _data(), None)


def test_an_unknown_noise_prior_is_refused_with_the_key_named():
    cfg = load("smoke", overrides={"ch6.diffusion_prior": "pink"})
    with pytest.raises(ValueError, match="ch6.diffusion_prior must be one of isotropic, channel_covariance"):
        ch.diffusion_config(cfg, (8, 4, 4), ConditionSpace.fit(_data().covariates))


# ---------------------------------------------------------------------------------------------- dry run
@pytest.mark.slow
@pytest.mark.parametrize("profile", ["demo", "paper"])
def test_demo_and_paper_sizes_train_and_sample_one_step_on_cpu(profile):
    """The demo and paper sizes build, take one training step of each stage and one sampling step (batch 1)."""
    cfg = load(profile)
    c = cfg.ch6
    shape = (*c.image_size, int(c.slices), int(c.frames))
    torch.manual_seed(0)
    ae = SequenceAutoencoder(ch.autoencoder_config(cfg, shape), int(c.frames), seed=0, decode_chunk=5)
    assert ae.config.latent_shape[1:] == (16, 16)  # the thesis' 16 x 16 x 1 latent per frame
    assert ae.latent_shape[0] == int(c.frames) * int(c.latent_channels)
    opt = torch.optim.Adam(ae.frame.parameters(), lr=float(c.ae_lr))
    batch = {"image": torch.rand(1, *shape[:3]), "labels": torch.randint(0, 4, (1, *shape[:3]))}
    loss, _ = AutoencoderLoss(float(c.kl_weight))(ae.frame, batch)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    data = _data(12)
    space = ConditionSpace.fit(data.covariates, [str(v) for v in c.conditions])
    ldm = ConditionalLatentDiffusion(ch.diffusion_config(cfg, ae.latent_shape, space), seed=0)
    ds = ConditionalLatentDataset(
        torch.randn(1, *ae.latent_shape), torch.full((1, *ae.latent_shape), 0.1), space.encode(data.covariates.iloc[:1])
    )
    opt = torch.optim.Adam(ldm.parameters(), lr=float(c.diffusion_lr), betas=(0.9, 0.99))
    b = {k: v[None] for k, v in ds[0].items()}
    loss, _ = ConditionalDiffusionLoss()(ldm.train(), b)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    g = generate_sequences(
        ae.eval(), ldm.eval(), data.covariates.iloc[:1], [0], guidance=2.0, ddim_steps=1, batch_size=1, image_frames=[0]
    )
    assert g.labels.shape == (1, *shape) and g.images.shape == (1, *shape[:3], 1)
    assert np.isfinite(g.images).all()
