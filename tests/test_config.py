import pytest

from cmrkit import config
from cmrkit.config import ConfigError


def test_profiles_exist_and_share_keys():
    names = config.available_profiles()
    assert {"smoke", "cpu", "demo", "paper"} <= set(names)
    keys = {n: _flat(config.load_raw(n)) for n in ("smoke", "cpu", "demo", "paper")}
    # every profile defines exactly the same keys, so an override valid in one is valid in all
    assert set(keys["smoke"]) == set(keys["cpu"]) == set(keys["demo"]) == set(keys["paper"])


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_paper_profile_carries_thesis_hyperparameters():
    from cmrkit.report import thesis_reference

    ref = thesis_reference()
    p = config.load("paper")
    ch4 = ref["chapter4"]["data"]
    assert p.ch4.latent_dim == ch4["latent_dim"] and p.ch4.conv_layers == ch4["conv_layers"]
    assert p.ch4.lr == ch4["lr"] and p.ch4.weight_decay == ch4["weight_decay"]
    assert p.ch4.image_size == ch4["image"][0] and p.ch4.frames == ch4["frames"]
    assert p.ch5.diffusion_iterations == ref["chapter5"]["diffusion_training"]["iterations"]
    assert p.ch5.n_samples == ref["chapter5"]["generated_samples"]
    assert p.ch6.diffusion_iterations == ref["chapter6"]["diffusion_training"]["iterations"]
    assert p.ch6.samples_per_condition == ref["chapter6"]["samples_per_condition"]
    assert p.ch6.kl_weight == ref["chapter6"]["autoencoder_training"]["kl_weight"]


def test_overrides_apply_and_keep_types():
    cfg = config.load("smoke", seed=3, overrides={"ch4.epochs": 2, "phantom.pixel_mm": 2, "segmenter": {"epochs": 1}})
    assert cfg.ch4.epochs == 2 and isinstance(cfg.ch4.epochs, int)
    assert cfg.phantom.pixel_mm == 2.0 and isinstance(cfg.phantom.pixel_mm, float)
    assert cfg.segmenter.epochs == 1
    assert cfg.seed == 3 and cfg.profile == "smoke"
    # --set ch5.kl_weight=1e-6: YAML 1.1 reads a mantissa without a decimal point as a string
    over = config.parse_overrides(["ch5.kl_weight=1e-6", "ch5.ae_lr=2.0e-4"])
    assert over["ch5.kl_weight"] == "1e-6"
    cfg = config.load("smoke", overrides=over)
    assert cfg.ch5.kl_weight == 1e-6 and cfg.ch5.ae_lr == 2e-4
    # the raw profile is untouched
    assert config.load("smoke").ch4.epochs == config.load_raw("smoke")["ch4"]["epochs"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"overrides": {"ch4.epoch": 2}}, "unknown parameter 'ch4.epoch'.*known: .*epochs"),
        ({"overrides": {"chapter4.epochs": 2}}, "no key 'chapter4'"),
        ({"overrides": {"ch4.epochs": "many"}}, "must be an integer"),
        ({"overrides": {"ch4.epochs": 2.5}}, "must be an integer"),
        ({"overrides": {"ch4.ablation_latent_dims": 64}}, "must be a list"),
        ({"overrides": {"ch5.kl_weight": "small"}}, "'ch5.kl_weight' must be a number, got 'small'"),
        ({"seed": -1}, "seed must be"),
        ({"dataset": "ukb"}, "unknown dataset 'ukb'"),
        ({"device": "tpu"}, "unknown device"),
        ({"dataset": "acdc"}, "needs a data folder"),
    ],
)
def test_bad_parameters_are_clear_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        config.load("smoke", **kwargs)


def test_unknown_profile():
    with pytest.raises(ConfigError, match="unknown profile 'smok'.*smoke"):
        config.load("smok")


def test_attribute_access_error_names_key():
    cfg = config.load("smoke")
    with pytest.raises(AttributeError, match="ch4.nope"):
        _ = cfg.ch4.nope


def test_data_dir_checks(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        config.load("smoke", dataset="ukbb", data_dir=str(tmp_path / "nope"), check_data=True)
    (tmp_path / "junk.txt").write_text("x")
    with pytest.raises(ConfigError, match="does not have the 'acdc' layout"):
        config.load("smoke", dataset="acdc", data_dir=str(tmp_path), check_data=True)
    (tmp_path / "patient001").mkdir()
    (tmp_path / "patient001" / "Info.cfg").write_text("ED: 1\nES: 10\n")
    cfg = config.load("smoke", dataset="acdc", data_dir=str(tmp_path), check_data=True)
    assert cfg.data_dir == str(tmp_path)


def test_relative_data_dir_anchors_at_repo_root(repo_root):
    cfg = config.load("smoke", dataset="ukbb", data_dir="data/somewhere")
    assert cfg.data_dir == str(repo_root / "data" / "somewhere")
    assert config.load("demo").data_dir == str(repo_root / "data" / "phantom" / "demo")


def test_realdata_folders_resolve_against_the_repository_root(repo_root, tmp_path):
    import os

    cfg = config.load("smoke")
    raw = config.load_raw("smoke")["realdata"]["mnms"]
    assert cfg.realdata.mnms == os.path.normpath(repo_root / raw)  # relative -> absolute, '..' folded
    assert config.load("smoke", overrides={"realdata.mnms": ""}).realdata.mnms == ""
    assert config.load("smoke", overrides={"realdata.mnms": str(tmp_path)}).realdata.mnms == str(tmp_path)
    assert config.resolve_realdata({"mnms": None, "x": "data/x"}) == {"mnms": "", "x": str(repo_root / "data" / "x")}
    with pytest.raises(ConfigError, match="realdata.mnms must be a folder path"):
        config.resolve_realdata({"mnms": 3})
    with pytest.raises(ConfigError, match="'realdata' must be a mapping"):
        config.resolve_realdata(["mnms"], "smoke")
