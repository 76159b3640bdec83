"""Parameter resolution in the notebooks' second cell and the chapter CLI."""

import json

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


def test_a_report_folder_of_another_data_set_is_refused_before_any_data_work(tmp_path, monkeypatch):
    from cmrkit.report import claim_report_dir

    rep_dir = tmp_path / "rep"
    claim_report_dir(rep_dir, "mnms", tmp_path / "mnms")

    def no_data(*_a, **_k):
        raise AssertionError("the phantom was prepared before the report folder was checked")

    monkeypatch.setattr("cmrkit.phantom.ensure_cohort", no_data)
    with pytest.raises(ConfigError, match="holds a run on mnms"):
        notebook.resolve("00_background", {**PARAMETERS, "REPORT_DIR": str(rep_dir)})
    assert json.loads((rep_dir / "dataset.json").read_text())["dataset"] == "mnms"  # untouched


def test_notebooks_default_to_interactive_and_headless_runs_do_not():
    from cmrkit.runner import HEADLESS

    assert PARAMETERS["INTERACTIVE"] is True and HEADLESS == {"INTERACTIVE": False}
