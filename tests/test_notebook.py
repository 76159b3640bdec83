"""Parameter resolution in the notebooks' second cell and the chapter CLI."""

import pytest

from cmrkit import notebook
from cmrkit.chapters import cli_main as run_cli
from cmrkit.config import ConfigError
from cmrkit.runner import PARAMETERS


def test_resolve_rejects_misspelt_parameters():
    ns = {**PARAMETERS, "PROFLE": "demo", "np": object()}
    with pytest.raises(ConfigError, match="unknown notebook parameter.*PROFLE"):
        notebook.resolve("00_background", ns, prepare_data=False)


def test_resolve_rejects_unknown_notebook_and_override():
    with pytest.raises(ConfigError, match="unknown notebook"):
        notebook.resolve("09_nope", dict(PARAMETERS), prepare_data=False)
    with pytest.raises(ConfigError, match="unknown parameter 'ch4.epoch'"):
        notebook.resolve("01_smcvae_strain", {**PARAMETERS, "OVERRIDES": {"ch4.epoch": 1}}, prepare_data=False)


def test_resolve_returns_config_and_report(tmp_path):
    ns = {**PARAMETERS, "SEED": 5, "REPORT_DIR": str(tmp_path / "rep"), "OVERRIDES": {"ch4.epochs": 1}}
    cfg, rep = notebook.resolve("01_smcvae_strain", ns, prepare_data=False)
    assert cfg.seed == 5 and cfg.ch4.epochs == 1 and rep.notebook == "01_smcvae_strain"
    assert rep.root == tmp_path / "rep" and (tmp_path / "rep" / "tables").is_dir()
    assert rep.dataset == "phantom (smoke)"


def test_resolve_checks_real_data_folder(tmp_path):
    ns = {**PARAMETERS, "DATASET": "ukbb", "DATA_DIR": str(tmp_path / "missing")}
    with pytest.raises(ConfigError, match="does not exist"):
        notebook.resolve("00_background", ns)


def test_run_cli_bad_input(capsys, tmp_path):
    assert run_cli(["smcvae_strain", "--set", "ch4.nope=1"]) == 2
    assert "unknown parameter 'ch4.nope'" in capsys.readouterr().err
    assert run_cli(["smcvae_strain", "--dataset", "acdc", "--data-dir", str(tmp_path / "x")]) == 2
    capsys.readouterr()
    assert run_cli(["ch9"]) == 2
    assert "unknown chapter 'ch9'" in capsys.readouterr().err
    assert run_cli(["smcvae_strain", "--device", "cuda"]) == 2 or __import__("torch").cuda.is_available()
