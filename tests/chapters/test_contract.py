"""The chapter contract (cmrkit.chapters): one module per notebook, same name, same step functions."""

import inspect
import json

import pytest

from cmrkit.chapters import CHAPTERS, chapter
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
