"""The chapter contract (cmrkit.chapters): one module per notebook, same name, same step functions."""

import inspect
import json

import pytest

from cmrkit.chapters import CHAPTERS, NotApplicable, chapter, check_needs, leave_out
from cmrkit.config import ConfigError
from cmrkit.registry import NOTEBOOKS
from cmrkit.runner import NOTEBOOK_DIR


def test_every_registered_notebook_is_a_chapter_in_order():
    assert [c.notebook for c in CHAPTERS.values()] == list(NOTEBOOKS)
    assert [c.name for c in CHAPTERS.values()] == [s.split("_", 1)[1] for s in NOTEBOOKS]


@pytest.mark.parametrize("ch", [c for c in CHAPTERS.values() if c.available], ids=lambda c: c.name)
def test_written_chapters_follow_the_contract(ch):
    mod = ch.load()
    assert mod.NOTEBOOK == ch.notebook
    assert (NOTEBOOK_DIR / f"{ch.notebook}.ipynb").is_file(), "a chapter module needs its notebook"
    params = inspect.signature(mod.run_all).parameters
    assert list(params)[:2] == ["cfg", "rep"]
    assert {"interactive", "progress"} <= set(params)
    assert all(params[k].kind is inspect.Parameter.KEYWORD_ONLY for k in ("interactive", "progress"))
    assert len(mod.STEPS) >= 3 and len(set(mod.STEPS)) == len(mod.STEPS)
    for name in mod.STEPS:
        assert callable(getattr(mod, name)), f"{ch.name}.{name} is listed in STEPS but missing"
        assert name in mod.__all__
    if hasattr(mod, "NEEDS"):  # what its artefacts need from the data set: its own artefacts, known features
        assert "NEEDS" in mod.__all__
        check_needs(ch.notebook, mod.NEEDS)
    if hasattr(mod, "dry_runs"):  # a chapter that trains models lists them for the CPU dry run
        assert "dry_runs" in mod.__all__ and list(inspect.signature(mod.dry_runs).parameters) == ["cfg"]
    # the notebook calls the steps in the listed order (each at least once)
    nb = json.loads((NOTEBOOK_DIR / f"{ch.notebook}.ipynb").read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    pos = [code.find(f".{name}(") for name in mod.STEPS]
    assert all(p >= 0 for p in pos), [n for n, p in zip(mod.STEPS, pos) if p < 0]
    assert pos == sorted(pos), "the notebook calls the steps in another order than STEPS lists them"


def test_chapter_lookup():
    assert chapter("01").name == "smcvae_strain"
    assert chapter("00_background").name == "background"
    with pytest.raises(ConfigError, match="unknown chapter 'ch4'"):
        chapter("ch4")
    missing = [c for c in CHAPTERS.values() if not c.available]
    for c in missing:
        with pytest.raises(ConfigError, match="not written yet"):
            c.load()


def test_run_with_a_missing_gpu_fails_in_one_line_before_any_data(tmp_path, capsys, monkeypatch):
    """``cmrkit run smcvae_strain --device cuda`` on a machine without CUDA: one line, exit 2, and
    neither the phantom cohort nor the report folder is touched."""
    import torch

    from cmrkit.chapters import cli_main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def no_data(*_a, **_k):
        raise AssertionError("data prepared before the device was checked")

    monkeypatch.setattr("cmrkit.phantom.ensure_cohort", no_data)
    report = tmp_path / "rep"
    assert cli_main(["smcvae_strain", "--device", "cuda", "--report-dir", str(report)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no CUDA GPU" in err and err.startswith("cmrkit run: error:")
    assert not report.exists()


def test_needs_are_checked_and_unmet_ones_left_out(tmp_path):
    from cmrkit.report import Report

    with pytest.raises(ValueError, match="'bg_indices' is not one of its registered artefacts"):
        check_needs("01_smcvae_strain", {"bg_indices": ("labels",)})
    with pytest.raises(ValueError, match=r"needs \['covariates'\]; known"):
        check_needs("00_background", {"bg_indices": ("covariates",)})
    rep = Report(profile="smoke", seed=0, dataset="x", root=tmp_path, notebook="01_smcvae_strain")
    needs = {"table_4_1": ("cine", "tagging"), "fig_4_11": ("cine", "tagging", "ground_truth"), "fig_4_4": ("cine",)}
    out = leave_out(rep, needs, {"cine", "tagging"})
    assert out == {"fig_4_11": "needs ground truth (the phantom's true motion and strain); this data set has none"}
    assert rep.skipped() == out
    exc = NotApplicable("01_smcvae_strain", "needs tagging; this data set has none", "S1: no tagging")
    assert str(exc).splitlines() == ["01_smcvae_strain needs tagging; this data set has none", "S1: no tagging"]


def test_chapter_4_on_a_folder_without_tagging_says_so_and_leaves_its_artefacts_out(tmp_path, capsys):
    """``cmrkit run smcvae_strain --dataset mnms``: no training, one line on stderr, exit 3, and every
    artefact of the notebook listed as left out with the reason in the report."""
    from cmrkit.chapters import cli_main
    from cmrkit.registry import for_notebook
    from tests.io.test_mnms import write_byod_mnms

    write_byod_mnms(tmp_path / "mnms")
    report = tmp_path / "rep"
    rc = cli_main(
        ["smcvae_strain", "--dataset", "mnms", "--data-dir", str(tmp_path / "mnms"), "--report-dir", str(report)]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 3 and err.count("\n") == 0
    assert err.startswith("cmrkit run: 01_smcvae_strain needs tagging; this data set has none; its artefacts")
    skipped = {p.stem for p in (report / "skipped").glob("*.json")}
    assert skipped == {a.id for a in for_notebook("01_smcvae_strain")}
    md = (report / "index.md").read_text()
    assert (
        "| table_4_1 | Table 4.1: reconstruction and cross-synthesis quality by region | 01_smcvae_strain | "
        "left out: needs tagging; this data set has none |" in md
    )
    assert "needs tagging and ground truth" in md  # fig_4_11 needs both


#: chapter packages and their modules in import order: each module imports only the ones before it
PACKAGE_ORDER = {
    "smcvae_strain": ["data", "synthesis", "tracking", "checks", "examples", "dryrun"],
    "cond_ldm4d": ["data", "generation", "thesis", "checks", "sliders"],
}


@pytest.mark.parametrize("name", sorted(PACKAGE_ORDER))
def test_chapter_packages_import_one_way(name):
    import ast
    from pathlib import Path

    order = PACKAGE_ORDER[name]
    pkg = Path(chapter(name).load().__file__).parent
    assert {p.stem for p in pkg.glob("*.py")} - {"__init__"} == set(order), "a new module needs its place in the order"
    for i, mod in enumerate(order):
        tree = ast.parse((pkg / f"{mod}.py").read_text())
        local = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1}
        assert local <= set(order[:i]), f"{name}.{mod} imports {sorted(local - set(order[:i]))}"


def test_every_chapter_package_has_an_import_order():
    packages = {c.name for c in CHAPTERS.values() if c.available and c.load().__file__.endswith("__init__.py")}
    assert packages == set(PACKAGE_ORDER)
