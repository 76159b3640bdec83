"""render(conditions), the readout and the slider widget (cmrkit.condition_sliders) on a tiny model."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from cmrkit.condition_sliders import ConditionSliders, Generator, heart_figure, readout_text, render
from cmrkit.models.autoencoder import VolumeAutoencoderConfig
from cmrkit.models.cond_diffusion import ConditionalDiffusionConfig, ConditionalLatentDiffusion, SequenceAutoencoder
from cmrkit.models.conditioning import ConditionError, ConditionSpace
from cmrkit.models.diffusion import LatentDiffusionConfig


@pytest.fixture(scope="module")
def generator():
    rng = np.random.default_rng(0)
    n = 20
    cohort = pd.DataFrame(
        {
            "age": rng.uniform(45, 80, n),
            "sex": np.arange(n) % 2,
            "height_cm": rng.uniform(150, 195, n),
            "weight_kg": rng.uniform(50, 120, n),
            "smoking": np.arange(n) % 3,
            "alcohol": np.arange(n) % 3,
            "sbp": rng.uniform(100, 180, n),
            "dbp": rng.uniform(60, 100, n),
        }
    )
    ae = SequenceAutoencoder(
        VolumeAutoencoderConfig(image_size=(16, 16), depth=4, channels=(8, 16), latent_channels=2), 4, seed=0
    )
    cfg = ConditionalDiffusionConfig(
        base=LatentDiffusionConfig(
            latent_shape=ae.latent_shape,
            channels=(16, 32),
            attention_levels=(False, True),
            num_res_blocks=1,
            num_head_channels=8,
            timesteps=50,
        ),
        space=ConditionSpace.fit(cohort).to_dict(),
        cross_attention_dim=8,
        n_tokens=2,
        encoder_hidden=16,
    )
    ldm = ConditionalLatentDiffusion(cfg, seed=0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # MONAI zero-initialises attention outputs: wake them so covariates matter
        for p in ldm.unet.parameters():
            if p.abs().sum() == 0:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
        ldm.encoder.net[-1].weight.mul_(20.0)
        # a decoder bias that draws a "heart" (LV label) so the phenotypes are not all zero
        ae.frame.net.decoder.blocks[-1].conv.bias[4 * 2 : 4 * 3].add_(3.0)
    return Generator(ae.eval(), ldm.eval(), (2.0, 2.0, 10.0), ddim_steps=3, true_model=True)


def test_render_returns_a_deterministic_sequence_with_its_views(generator):
    defaults = generator.space.defaults()
    r = render(generator, defaults, seed=3)
    assert r.images.shape == (16, 16, 4, 4) and r.labels.shape == (16, 16, 4, 4)
    assert set(r.curves) == {"LV", "RV"} and r.curves["LV"].shape == (4,)
    assert r.phenotypes["LVEDV"] == pytest.approx(r.curves["LV"][0])
    assert 0 <= r.es_frame < 4
    assert set(r.expected) >= {"LVEDV", "LVESV", "LVEF", "LVM"}
    again = render(generator, defaults, seed=3, figure=False)
    assert again.key == r.key and again.figure is None
    assert again.phenotypes["LVEDV"] == r.phenotypes["LVEDV"] and again.phenotypes["LVM"] == r.phenotypes["LVM"]
    assert render(generator, defaults, seed=4, figure=False).key != r.key
    html = r.readout_html()
    assert f'data-lvedv="{r.phenotypes["LVEDV"]:.1f}"' in html and f'data-key="{r.key}"' in html
    assert r.readout == readout_text(r.phenotypes, r.expected)
    assert "(model " in r.readout
    assert len(r.figure.axes) == 7  # ED and ES at three slices, the volume curves (the readout is text)
    plt.close(r.figure)


def test_render_refuses_bad_conditions(generator):
    bad = {**generator.space.defaults(), "age": 12}
    with pytest.raises(ConditionError, match="age=12 is outside the allowed range"):
        render(generator, bad)
    with pytest.raises(ConditionError, match="sex='x'"):
        render(generator, {**generator.space.defaults(), "sex": "x"})


def test_heart_figure_has_meshes_for_both_frames(generator):
    r = render(generator, generator.space.defaults(), seed=1, figure=False)
    fig = heart_figure(r.labels, generator.spacing, [0, r.es_frame], ["ED", "ES"])
    kinds = {t.type for t in fig.data}
    assert kinds == {"mesh3d"}
    assert {t.scene for t in fig.data} == {"scene", "scene2"}


def test_slider_widget_rerenders_once_per_change(generator):
    ui = ConditionSliders(generator, seed=2, heart=False)
    box = ui.widget()
    assert ui.last is not None and "cmrkit-readout" in ui.readout.value
    first = ui.last.key
    calls = []
    orig = ui.update
    ui.update = lambda: calls.append(1) or orig()
    w = ui.controls["weight_kg"]
    assert w.continuous_update is False  # sliders report on release, not per drag event
    w.value = w.max
    assert len(calls) == 1 and ui.last.conditions["weight_kg"] == pytest.approx(w.max)
    assert ui.last.key != first
    before = ui.readout.value
    ui.guidance.value = 3.0
    assert len(calls) == 2 and ui.last.guidance == 3.0 and ui.readout.value != before
    ui.controls["sex"].value = 1
    assert ui.last.conditions["sex"] == 1.0
    assert "cmrkit-condition-sliders" in box._dom_classes
    plt.close("all")
