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
from cmrkit.registry import NOTEBOOKS, REGISTRY, for_notebook

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


# ----------------------------------------------------------------------------- your own data
@pytest.fixture(scope="session")
def mnms_run(tmp_path_factory):
    """Notebooks 00 and 01 on a synthetic M&Ms folder as real ones come: no covariates, the first
    subject with labels but no image, no tagging."""
    from tests.io.test_mnms import write_byod_mnms

    root = tmp_path_factory.mktemp("byod")
    write_byod_mnms(root / "mnms")
    out = root / "reports" / "mnms"
    failures = runner.reproduce(
        "smoke", only=["00", "01"], dataset="mnms", data_dir=str(root / "mnms"), report_dir=str(out), log_output=False
    )
    return out, failures


def _outputs(path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "\n".join(
        o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "stream"
    )


@pytest.mark.slow
def test_notebooks_on_an_mnms_folder_without_covariates(mnms_run):
    out, failures = mnms_run
    run = json.loads((out / "run.json").read_text())["notebooks"]
    assert failures == 0 and run["00_background"]["status"] == "ok"
    assert run["01_smcvae_strain"] == {
        "status": "not applicable",
        "wall_s": run["01_smcvae_strain"]["wall_s"],
        "error": None,
        "reason": "needs tagging; this data set has none",
    }
    text = _outputs(out / "notebooks" / "00_background.ipynb")
    assert "AAA000: no cine image" in text and "a 'sex' covariate: 0 of 4 subjects" in text
    assert "bg_phenotypes_vs_reference left out: needs a 'sex' covariate; this data set has none" in text
    assert "left out: needs a 'sex' covariate" in text  # the artefact status table of the last cell
    assert "table_4_1 left out: needs tagging; this data set has none" in _outputs(
        out / "notebooks" / "01_smcvae_strain.ipynb"
    )
    # the index describes this run only: 8 of the 9 artefacts of notebook 00, nothing of the phantom's
    n01 = len(for_notebook("01_smcvae_strain"))
    n_kit = sum(not a.thesis_item for a in REGISTRY)
    index = (out / "index.md").read_text()
    assert index.splitlines()[2] == (
        "Coverage: thesis tables 0/10, thesis figures 0/16, "
        f"kit artefacts 8/{n_kit}, left out for this data set {n01 + 1}"
    )
    assert "| 01_smcvae_strain" in index and "not applicable: needs tagging; this data set has none" in index


@pytest.mark.slow
def test_notebook_00_on_a_dicom_folder(tmp_path):
    from cmrkit.utils import REPO_ROOT

    out = tmp_path / "reports" / "dicom"
    data = REPO_ROOT / "tests" / "data" / "sunnybrook"
    assert (
        runner.reproduce(
            "smoke", only=["00"], dataset="dicom", data_dir=str(data), report_dir=str(out), log_output=False
        )
        == 0
    )
    text = _outputs(out / "notebooks" / "00_background.ipynb")
    assert "1 subjects (dicom): 1 with a cine and labels at ED and ES" in text
    assert "SCD0000301: ED frame 2, ES frame 1" in text and "not delineated in the labels: MYO at ES, RV" in text
    st = {
        a.id: (out / ("tables" if a.kind == "table" else "figures") / f"{a.id}.json").is_file()
        for a in for_notebook("00_background")
    }
    assert [k for k, v in st.items() if not v] == ["bg_phenotypes_vs_reference"]
