import json
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from cmrkit import report
from cmrkit.registry import REGISTRY, by_id
from cmrkit.report import Report, TableRow, thesis_value, write_index

N_KIT = sum(not a.thesis_item for a in REGISTRY)  # kit artefacts (not thesis items) in the registry


def test_registry_covers_every_thesis_table_and_figure():
    ids = {a.id for a in REGISTRY}
    tables = {
        "table_4_1",
        "table_4_2",
        "table_4_3",
        "table_4_4",
        "table_5_1",
        "table_6_1",
        "table_6_2",
        "table_6_3",
        "table_6_4",
        "table_6_5",
    }
    figures = (
        {f"fig_4_{i}" for i in range(4, 12)} | {f"fig_5_{i}" for i in range(2, 5)} | {f"fig_6_{i}" for i in range(2, 7)}
    )
    assert tables <= ids and figures <= ids
    assert len(ids) == len(REGISTRY), "duplicate artefact ids"
    thesis_tables = [a for a in REGISTRY if a.thesis_item and a.kind == "table"]
    thesis_figs = [a for a in REGISTRY if a.thesis_item and a.kind == "figure"]
    assert len(thesis_tables) == 10 and len(thesis_figs) == 16
    # every thesis path resolves in the reference YAML
    for a in REGISTRY:
        if a.thesis:
            assert report._lookup(a.thesis.split(".")) is not None, a.id


def test_thesis_lookup_values():
    assert thesis_value("chapter4.table_4_1", ("only_cine_to_tagging", "mid", "SSIM")) == (0.86, 0.05)
    assert thesis_value("chapter4.table_4_3", ("2048", "PSNR")) == (25.94, 4.4)
    assert thesis_value("chapter5.table_5_1", ("LDM", "FID")) == (28.37, None)
    assert thesis_value("chapter4.table_4_2", ("basal", "Ec", "generated")) == (-0.1897, 0.029)
    assert thesis_value("chapter4.table_4_1", ("nope", "mid", "SSIM")) == (None, None)


def _report(tmp_path, notebook="01_smcvae_strain"):
    return Report(
        profile="smoke", seed=0, dataset="phantom (test)", root=tmp_path, notebook=notebook, parameters={"a": 1}
    )


def test_save_table_writes_csv_md_json_with_thesis_values(tmp_path):
    rep = _report(tmp_path)
    rows = [
        TableRow("reconstruction_tagging/apical", "SSIM", 0.5, 0.1, n=4),
        TableRow("basal/original", "Ec", -0.2, thesis_key=("basal", "Ec", "original")),
    ]
    rep_rows = rep.save_table("table_4_1", rows[:1])
    assert rep_rows.loc[0, "thesis_value"] == 0.86 and rep_rows.loc[0, "thesis_sd"] == 0.04
    df = pd.read_csv(tmp_path / "tables" / "table_4_1.csv")
    assert list(df.columns[:4]) == ["row", "metric", "value", "sd"]
    assert df.loc[0, "value"] == 0.5 and df.loc[0, "dataset"] == "phantom (test)"
    assert df.loc[0, "thesis_dataset"] == report.THESIS_DATASET
    md = (tmp_path / "tables" / "table_4_1.md").read_text()
    assert "0.500 ± 0.100" in md and "0.860 ± 0.040" in md and "Thesis anomaly" in md
    meta = json.loads((tmp_path / "tables" / "table_4_1.json").read_text())
    assert meta["profile"] == "smoke" and meta["parameters"] == {"a": 1}
    df2 = rep.save_table("table_4_2", rows[1:])
    assert df2.loc[0, "thesis_value"] == -0.2057
    # a thesis table whose rows have no thesis counterpart (a reduced ablation grid) still shows the
    # thesis column and says which rows the thesis has
    rep.save_table("table_4_3", [TableRow("32", "SSIM", 0.1, n=2)])
    md3 = (tmp_path / "tables" / "table_4_3.md").read_text()
    assert f"thesis ({report.THESIS_DATASET})" in md3
    assert "| 32 | SSIM | 0.100 | - |" in md3
    assert "the thesis reports rows 128, 256, 512, 1024, 2048" in md3


def test_table_errors(tmp_path):
    rep = _report(tmp_path)
    with pytest.raises(KeyError, match="not in cmrkit.registry"):
        rep.save_table("table_9_9", [TableRow("a", "b", 1.0)])
    with pytest.raises(ValueError, match="belongs to notebook"):
        rep.save_table("table_5_1", [TableRow("LDM", "FID", 1.0)])
    with pytest.raises(ValueError, match="is registered as a figure"):
        rep.save_table("fig_4_4", [TableRow("a", "b", 1.0)])
    with pytest.raises(ValueError, match="has no rows"):
        rep.save_table("table_4_1", [])


def test_save_figure_png_and_sidecar_are_deterministic(tmp_path):
    rep = _report(tmp_path)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    p = rep.save_figure(fig, "fig_4_4", caption="c")
    b1 = p.read_bytes()
    rep.save_figure(fig, "fig_4_4", caption="c")
    plt.close(fig)
    assert p.read_bytes() == b1 and b1[:8] == b"\x89PNG\r\n\x1a\n"
    meta = json.loads(p.with_suffix(".json").read_text())
    assert {"git_sha", "profile", "seed", "dataset", "parameters", "caption"} <= set(meta)
    assert not list(tmp_path.rglob("*.part"))


def test_index_reports_missing_honestly(tmp_path):
    rep = _report(tmp_path)
    rep.save_table("table_4_1", [TableRow("reconstruction_tagging/apical", "SSIM", 0.5)])
    fig, _ = plt.subplots()
    rep.save_figure(fig, "fig_4_4")
    plt.close(fig)
    (tmp_path / "tables" / "stray.csv").write_text("x\n")
    idx = write_index(tmp_path, "smoke").read_text()
    assert "Coverage: thesis tables 1/10, thesis figures 1/16" in idx
    assert "| table_4_2 |" in idx and "missing" in idx
    assert "Unregistered files" in idx and "stray" in idx
    html = (tmp_path / "index.html").read_text()
    assert "<table>" in html and "href='tables/table_4_1.md'" in html


def _md_row_cells(line: str) -> list[str]:
    """Cells of a Markdown table row, honouring escaped pipes."""
    import re

    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def test_index_is_a_page_to_read(tmp_path):
    rep = _report(tmp_path)
    rep.save_table("table_4_1", [TableRow("reconstruction_tagging/apical", "SSIM", 0.5, 0.1, n=4)], notes=["a note"])
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    rep.save_figure(fig, "fig_4_4", caption="cap <b>")
    plt.close(fig)
    nb = tmp_path / "notebooks"
    nb.mkdir()
    (nb / "01_smcvae_strain.ipynb").write_text("{}")
    (nb / "01_smcvae_strain.html").write_text("<html></html>")
    (tmp_path / "run.json").write_text(
        json.dumps(
            {
                "profile": "smoke",
                "seed": 0,
                "dataset": "phantom",
                "data_dir": "/d",
                "notebooks": {"01_smcvae_strain": {"status": "ok", "wall_s": 12.5, "error": None}},
            }
        )
    )
    md = write_index(tmp_path, "smoke").read_text()
    lines = md.splitlines()
    # the coverage line comes right after the heading (and stays the last line); no backticks in headings
    assert lines[0] == "# cmrkit report: profile smoke" and lines[2].startswith("Coverage: thesis tables 1/10")
    assert lines[-1].startswith("Coverage:")
    assert not [ln for ln in lines if ln.startswith("#") and "`" in ln]
    # |real - synthetic| in a title does not split its row: every row of the artefact tables has 4 cells
    row62 = next(ln for ln in lines if ln.startswith("| table_6_2 "))
    assert _md_row_cells(row62) == [
        "table_6_2",
        by_id("table_6_2").title.replace("|", "\\|"),
        by_id("table_6_2").notebook,
        "missing",
    ]
    for ln in lines:
        if ln.startswith("| ") and ("table_" in ln or "fig_" in ln or "bg_" in ln or "ch4_" in ln):
            assert len(_md_row_cells(ln)) == 4, ln
    assert "[01_smcvae_strain](notebooks/01_smcvae_strain.html) ([ipynb](notebooks/01_smcvae_strain.ipynb))" in md
    html = (tmp_path / "index.html").read_text()
    head, body = html.split("<h2 id='notebooks'>", 1)
    assert "Coverage: thesis tables 1/10, thesis figures 1/16" in head and "`" not in html.split("<main>")[0]
    assert "data set phantom (/d), seed 0" in head
    assert "<a href='notebooks/01_smcvae_strain.html'>01_smcvae_strain</a>" in body
    assert "<img src='figures/fig_4_4.png'" in body and "cap &lt;b&gt;" in body  # thumbnail, escaped caption
    # the table is rendered as HTML with this run's and the thesis value, and its notes
    assert "<td class='num'>0.500 ± 0.100</td>" in body and "<td class='num'>0.860 ± 0.040</td>" in body
    assert "<li>a note</li>" in body
    title62 = by_id("table_6_2").title
    assert f"<td>{title62}</td>" in body  # whole, in one cell, in the missing list
    assert "missing: 04_baselines did not write it" in body  # written notebooks that did not run here


def test_report_folders_never_mix_data_sets(tmp_path):
    from cmrkit.config import ConfigError

    root = tmp_path / "rep"
    report.claim_report_dir(root, "phantom", tmp_path / "ph")
    report.claim_report_dir(root, "phantom", tmp_path / "ph")  # the same run again: fine
    with pytest.raises(ConfigError, match="holds a run on phantom .* not on mnms .*REPORT_DIR"):
        report.claim_report_dir(root, "mnms", tmp_path / "mm")
    with pytest.raises(ConfigError, match="holds a run on phantom"):
        report.claim_report_dir(root, "phantom", tmp_path / "other_cohort")
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        report.claim_report_dir(f, "phantom", tmp_path / "ph")
    # a Report built from a run configuration claims its folder
    Report(profile="smoke", seed=0, dataset="x", root=tmp_path / "r2", parameters={"dataset": "acdc", "data_dir": "/a"})
    with pytest.raises(ConfigError, match="holds a run on acdc"):
        Report(
            profile="smoke", seed=0, dataset="x", root=tmp_path / "r2", parameters={"dataset": "mnms", "data_dir": "/m"}
        )
    # default folders: reports/<profile> for the phantom, reports/<profile>/<dataset> otherwise
    assert report.default_report_dir("smoke").name == "smoke"
    assert report.default_report_dir("smoke", "mnms").parts[-2:] == ("smoke", "mnms")


def test_artefact_status_lists_the_notebooks_artefacts(tmp_path):
    from cmrkit.registry import for_notebook

    rep = Report(profile="smoke", seed=0, dataset="phantom", root=tmp_path, notebook="01_smcvae_strain")
    rep.save_table("table_4_1", [TableRow("reconstruction_tagging/apical", "SSIM", 0.5)])
    st = rep.artefact_status()
    assert list(st["id"]) == [a.id for a in for_notebook("01_smcvae_strain")]
    assert list(st.loc[st["written"], "id"]) == ["table_4_1"]
    with pytest.raises(RuntimeError, match="artefacts not written under .*table_4_2"):
        rep.artefact_status(require=True)
    with pytest.raises(ValueError, match="bound to a notebook"):
        Report(profile="smoke", seed=0, dataset="phantom", root=tmp_path).artefact_status()


def test_by_id_unknown():
    with pytest.raises(KeyError):
        by_id("fig_9_9")
    assert by_id("fig_4_4").kind == "figure"


def test_fmt_handles_inf_and_nan():
    assert report._fmt(math.inf) == "inf" and report._fmt(float("nan")) == "-"


# ---------------------------------------------------------------------- artefacts left out for a reason
def test_skip_records_the_reason_and_the_index_lists_it_apart_from_missing(tmp_path, capsys):
    from cmrkit.registry import for_notebook

    rep = _report(tmp_path)
    rep.save_table("table_4_1", [TableRow("reconstruction_tagging/apical", "SSIM", 0.5)])  # an earlier run's
    rep.skip("table_4_1", "needs tagging; this data set has none")
    assert capsys.readouterr().out.strip() == "table_4_1 left out: needs tagging; this data set has none"
    # the stale files of the earlier run are gone: the index describes this run
    assert not any((tmp_path / "tables").glob("table_4_1.*"))
    rec = json.loads((tmp_path / report.SKIPPED_DIR / "table_4_1.json").read_text())
    assert rec["reason"] == "needs tagging; this data set has none" and rec["notebook"] == "01_smcvae_strain"
    assert rec["dataset"] == "phantom (test)" and "git_sha" in rec
    for a in for_notebook("01_smcvae_strain"):
        if a.id not in ("table_4_1", "fig_4_4"):
            rep.skip(a.id, "needs tagging; this data set has none")
    fig, _ = plt.subplots()
    rep.save_figure(fig, "fig_4_4")
    plt.close(fig)
    assert rep.skipped()["table_4_2"] == "needs tagging; this data set has none" and "fig_4_4" not in rep.skipped()
    st = rep.artefact_status(require=True)  # left out for a reason: not an error
    assert st.set_index("id").loc["table_4_1", "status"] == "left out: needs tagging; this data set has none"
    assert st.set_index("id").loc["fig_4_4", "status"] == "written"
    n_left = len(for_notebook("01_smcvae_strain")) - 1
    cov = report.coverage(tmp_path)
    assert cov["left_out"][0] == n_left and cov["figures"][0] == 1 and cov["tables"][0] == 0
    assert report.coverage_line(tmp_path).endswith(f", left out for this data set {n_left}")
    md = write_index(tmp_path, "smoke").read_text()
    assert (
        "| table_4_1 | Table 4.1: reconstruction and cross-synthesis quality by region | 01_smcvae_strain | "
        "left out: needs tagging; this data set has none |" in md
    )
    owner = by_id("table_5_1").notebook
    assert f"| table_5_1 | Table 5.1: 3D generation fidelity and diversity | {owner} | missing |" in md
    html = (tmp_path / "index.html").read_text()
    left = html.split(f"<h2 id='left-out'>Left out for this data set ({n_left})</h2>")[1].split("<h2")[0]
    assert "<td>table_4_1</td>" in left and "<td class='left-out'>needs tagging; this data set has none</td>" in left
    missing = html.split("<h2 id='missing'>")[1]
    assert "table_4_1" not in missing and "table_5_1" in missing
    # saving the artefact later (e.g. the data set gained tagging) drops the record
    rep.save_table("table_4_1", [TableRow("reconstruction_tagging/apical", "SSIM", 0.5)])
    assert not (tmp_path / report.SKIPPED_DIR / "table_4_1.json").exists() and "table_4_1" not in rep.skipped()


def test_skip_needs_a_reason_and_the_notebooks_own_artefact(tmp_path):
    rep = _report(tmp_path)
    with pytest.raises(ValueError, match="give the reason"):
        rep.skip("table_4_1", "  ")
    with pytest.raises(ValueError, match="belongs to notebook '00_background'"):
        rep.skip("bg_indices", "needs labels")
    with pytest.raises(KeyError, match="not in cmrkit.registry.REGISTRY"):
        rep.skip("table_9_9", "x")


def test_left_out_subjects_are_named_in_notes_caption_and_index(tmp_path, capsys):
    rep = _report(tmp_path, notebook="00_background")
    rep.save_table(
        "bg_indices", [TableRow("B", "LVEDV", 150.0)], notes=["n1"], left_out={"A": "no labels at ED and ES"}
    )
    fig, _ = plt.subplots()
    rep.save_figure(fig, "bg_cine_viewer", caption="cap", left_out={"A": "no cine image"})
    plt.close(fig)
    out = capsys.readouterr().out
    assert (
        "bg_indices: Left out: A (no labels at ED and ES)" in out
        and "bg_cine_viewer: Left out: A (no cine image)" in out
    )
    md = (tmp_path / "tables" / "bg_indices.md").read_text()
    assert "- n1\n- Left out: A (no labels at ED and ES)" in md
    assert json.loads((tmp_path / "tables" / "bg_indices.json").read_text())["left_out"] == {
        "A": "no labels at ED and ES"
    }
    assert json.loads((tmp_path / "figures" / "bg_cine_viewer.json").read_text())["left_out"] == {"A": "no cine image"}
    index = write_index(tmp_path, "smoke").read_text()
    assert "| present; left out: A (no cine image) |" in index
    html = (tmp_path / "index.html").read_text()
    assert "<div class='left-out'>Left out: A (no cine image)</div>" in html
    assert "<li>Left out: A (no labels at ED and ES)</li>" in html


def test_a_run_on_another_data_set_never_counts_the_phantom_run(tmp_path, monkeypatch):
    """reports/<profile>/ holds the phantom run, reports/<profile>/<dataset>/ a run on real data: the
    coverage line and the index of the latter describe that run only."""
    monkeypatch.setattr(report, "REPO_ROOT", tmp_path)
    phantom = Report(
        profile="smoke",
        seed=0,
        dataset="phantom",
        notebook="00_background",
        parameters={"dataset": "phantom", "data_dir": str(tmp_path / "ph")},
    )
    assert phantom.root == tmp_path / "reports" / "smoke"
    for art in ("bg_indices", "bg_realism"):
        phantom.save_table(art, [TableRow("x", "y", 1.0)])
    fig, _ = plt.subplots()
    phantom.save_figure(fig, "bg_cine_viewer")
    plt.close(fig)
    mnms = Report(
        profile="smoke",
        seed=0,
        dataset="mnms",
        notebook="00_background",
        parameters={"dataset": "mnms", "data_dir": str(tmp_path / "mm")},
    )
    assert mnms.root == tmp_path / "reports" / "smoke" / "mnms"
    mnms.save_table("bg_indices", [TableRow("x", "y", 2.0)])
    mnms.skip("bg_phenotypes_vs_reference", "needs a 'sex' covariate; this data set has none")
    write_index(phantom.root, "smoke")
    write_index(mnms.root, "smoke")
    assert report.coverage_line(mnms.root) == (
        f"Coverage: thesis tables 0/10, thesis figures 0/16, kit artefacts 1/{N_KIT}, left out for this data set 1"
    )
    assert report.coverage_line(phantom.root) == (
        f"Coverage: thesis tables 0/10, thesis figures 0/16, kit artefacts 3/{N_KIT}"
    )
    md = (mnms.root / "index.md").read_text()
    assert "data set mnms" in md and "[bg_indices]" in md and "[bg_realism]" not in md and "[bg_cine_viewer]" not in md
    html = (mnms.root / "index.html").read_text()
    assert "bg_realism.csv" not in html and "figures/bg_cine_viewer.png" not in html
    assert "needs a &#x27;sex&#x27; covariate" in html
    ph_md = (phantom.root / "index.md").read_text()
    assert "left out" not in ph_md  # the phantom run is untouched, and links the other run
    assert f"Runs on other data sets, reported apart: [mnms ({tmp_path / 'mm'})](mnms/index.md)" in ph_md
    assert "<a href='mnms/index.html'>" in (phantom.root / "index.html").read_text()


def test_table_row_summary_is_mean_and_sample_sd_of_the_finite_values():
    r = TableRow.summary("a/b", "Dice", [1.0, 2.0, np.nan, 4.0, np.inf], units="mm", thesis_key=("x",))
    assert r.value == pytest.approx(7.0 / 3.0)
    assert r.sd == pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1))
    assert (r.n, r.units, r.thesis_key, r.note) == (3, "mm", ("x",), "")
    one = TableRow.summary("a", "m", np.array([[5.0]]))
    assert (one.value, one.sd, one.n) == (5.0, None, 1)
    none = TableRow.summary("a", "m", [np.nan])
    assert np.isnan(none.value) and none.n == 0 and none.note == "no finite value"
    assert TableRow.summary("a", "m", [], note="skipped").note == "skipped"
