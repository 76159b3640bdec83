"""Notebook hygiene and a smoke execution of every notebook through the real runner.

The executions use the ``smoke`` profile and the phantom cohort under ``data/phantom/smoke``
(generated once when missing) and write into a temporary report folder, then check that every
artefact the registry assigns to each notebook was written.
"""

from __future__ import annotations

import ast
import json

import nbformat
import pandas as pd
import pytest

from cmrkit import runner
from cmrkit.registry import NOTEBOOKS, for_notebook

BOOKS = runner.discover_notebooks()


def test_there_are_notebooks_and_they_are_registered():
    assert BOOKS, "no notebooks in notebooks/"
    for nb in BOOKS:
        assert nb.stem in NOTEBOOKS, f"{nb.name} is not in cmrkit.registry.NOTEBOOKS"


@pytest.mark.parametrize("path", BOOKS, ids=[b.stem for b in BOOKS])
def test_stored_without_outputs(path):
    raw = json.loads(path.read_text())
    for i, cell in enumerate(raw["cells"]):
        if cell["cell_type"] == "code":
            assert not cell.get("outputs"), f"{path.name} cell {i} is stored with outputs"
            assert cell.get("execution_count") is None, f"{path.name} cell {i} is stored with an execution count"
    assert "widgets" not in raw.get("metadata", {}), f"{path.name} stores widget state"


@pytest.mark.parametrize("path", BOOKS, ids=[b.stem for b in BOOKS])
def test_parameters_cell_is_first_and_literal(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    first = code[0]
    assert "parameters" in first.metadata.get("tags", []), f"{path.name}: first code cell is not tagged 'parameters'"
    tree = ast.parse(first.source)
    names = {}
    for node in tree.body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, f"{path.name}: only NAME = literal lines"
        names[node.targets[0].id] = ast.literal_eval(node.value)  # raises on anything but a literal
    assert names == runner.PARAMETERS, f"{path.name}: parameters differ from cmrkit.runner.PARAMETERS"
    assert "cmrkit.notebook.resolve" in code[1].source or "notebook.resolve" in code[1].source


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reports") / "smoke"
    failures = runner.reproduce("smoke", seed=0, report_dir=str(out), log_output=False)
    return out, failures


@pytest.mark.slow
def test_every_notebook_runs_under_smoke_and_writes_its_artefacts(smoke_run):
    out, failures = smoke_run
    run = json.loads((out / "run.json").read_text())
    bad = {k: v["error"] for k, v in run["notebooks"].items() if v["status"] != "ok"}
    assert failures == 0 and not bad, f"notebooks failed: {bad}"
    for nb in BOOKS:
        for art in for_notebook(nb.stem):
            folder, suffix = ("tables", ".csv") if art.kind == "table" else ("figures", ".png")
            assert (out / folder / f"{art.id}{suffix}").is_file(), f"{nb.stem} did not write {art.id}"
        executed = nbformat.read(out / "notebooks" / nb.name, as_version=4)
        kinds = {o.get("output_type") for c in executed.cells for o in c.get("outputs", [])}
        has_png = any("image/png" in o.get("data", {}) for c in executed.cells for o in c.get("outputs", []))
        assert has_png, f"{nb.stem}: no figure in the executed notebook's outputs ({kinds})"
    index = (out / "index.md").read_text()
    assert "Coverage: thesis tables" in index


@pytest.mark.slow
def test_same_profile_and_seed_give_identical_tables(smoke_run, tmp_path):
    """A second run with the same profile and seed writes identical tables (trained models are
    reloaded from their finished checkpoints under runs/, everything downstream is recomputed)."""
    out, _ = smoke_run
    again = tmp_path / "again"
    assert runner.reproduce("smoke", seed=0, report_dir=str(again), log_output=False) == 0
    compared = 0
    for nb in BOOKS:
        for art in for_notebook(nb.stem):
            if art.kind != "table":
                continue
            a = pd.read_csv(out / "tables" / f"{art.id}.csv")
            b = pd.read_csv(again / "tables" / f"{art.id}.csv")
            pd.testing.assert_frame_equal(a, b)
            compared += 1
    assert compared >= 5
