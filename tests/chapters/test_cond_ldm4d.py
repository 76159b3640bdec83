"""Chapter 6 pieces (cmrkit.chapters.cond_ldm4d) and the demo/paper-size dry run on CPU."""

import numpy as np
import pandas as pd
import pytest
import torch

from cmrkit.chapters import cond_ldm4d as ch
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


def _data(n=12, t=4):
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
    labels = np.zeros((n, 8, 8, 2, t), np.uint8)
    labels[:, 2:6, 2:6] = 1
    split = np.array(["train"] * 8 + ["val"] * 2 + ["test"] * 2)
    return ch.SequenceData(
        images=rng.random((n, 8, 8, 2, t), dtype=np.float32),
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
    np.testing.assert_array_equal(ch._subject_index(data, ss), np.repeat(te, 2))  # by identical covariates
    ss.meta["subjects"] = ["S11", "S10", "S11", "nobody"]
    np.testing.assert_array_equal(ch._subject_index(data, ss), [11, 10, 11, -1])


def test_population_conditions_stay_in_the_allowed_ranges():
    data = _data(40)
    cfg = load("smoke")
    space = ConditionSpace.fit(data.covariates, cohort=data.covariates)
    cond, how = ch.population_conditions(cfg, data, space, 30)
    assert len(cond) == 30 and "phantom covariate model" in how["source"]
    space.validate_many(cond)  # raises if any is outside
    again, _ = ch.population_conditions(cfg, data, space, 30)
    pd.testing.assert_frame_equal(cond, again)


@pytest.mark.parametrize("bad", [1.0, 0, -0.5])
def test_a_bad_weight_average_decay_is_refused_before_training(bad):
    cfg = load("smoke", overrides={"ch6.diffusion_ema": bad})
    with pytest.raises(ValueError, match="ch6.diffusion_ema must be a decay in"):
        ch.train_diffusion(cfg, _data(), None)


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
