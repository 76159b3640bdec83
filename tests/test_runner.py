"""The papermill runner on tiny throwaway notebooks (the real notebooks run in test_notebooks.py)."""

import json

import nbformat
import pytest

from cmrkit import runner
from cmrkit.cli import main as cli
from cmrkit.config import ConfigError


def _nb(
    path,
    body,
    params="PROFILE = 'smoke'\nDATASET = 'phantom'\nDATA_DIR = ''\nSEED = 0\nDEVICE = 'auto'\n"
    "REPORT_DIR = ''\nINTERACTIVE = False\nOVERRIDES = {}",
):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture()
def fake_data(tmp_path):
    d = tmp_path / "ukbb"
    (d / "S1").mkdir(parents=True)
    (d / "S1" / "sa.nii.gz").write_bytes(b"")
    return d


@pytest.mark.slow
def test_runner_executes_saves_and_fails_loudly(tmp_path, fake_data):
    books = tmp_path / "nbs"
    books.mkdir()
    _nb(
        books / "00_ok.ipynb",
        "from pathlib import Path\nPath(REPORT_DIR, 'seen.txt').write_text(f'{PROFILE} {SEED} {DATA_DIR}')",
    )
    _nb(books / "01_bad.ipynb", "raise RuntimeError('boom in cell')")
    out = tmp_path / "rep"
    failures = runner.reproduce(
        "smoke",
        dataset="ukbb",
        data_dir=str(fake_data),
        seed=7,
        report_dir=str(out),
        notebook_dir=books,
        log_output=False,
    )
    assert failures == 1
    assert (out / "seen.txt").read_text() == f"smoke 7 {fake_data}"
    run = json.loads((out / "run.json").read_text())
    assert run["notebooks"]["00_ok"]["status"] == "ok"
    assert run["notebooks"]["01_bad"]["status"] == "failed" and "boom" in run["notebooks"]["01_bad"]["error"]
    # the failing notebook is still saved, with the error in it
    saved = nbformat.read(out / "notebooks" / "01_bad.ipynb", as_version=4)
    assert any(o.get("ename") == "RuntimeError" for c in saved.cells for o in c.get("outputs", []))
    assert (out / "index.md").is_file()
    # --only selects by prefix
    assert (
        runner.reproduce(
            "smoke",
            only=["00"],
            dataset="ukbb",
            data_dir=str(fake_data),
            report_dir=str(out),
            notebook_dir=books,
            log_output=False,
        )
        == 0
    )


def test_unknown_notebook_parameter_is_an_error(tmp_path):
    _nb(tmp_path / "00_x.ipynb", "pass", params="PROFILE = 'smoke'")
    with pytest.raises(ConfigError, match="has no parameter.*SEED"):
        runner.execute_notebook(
            tmp_path / "00_x.ipynb", tmp_path / "out.ipynb", {"PROFILE": "smoke", "SEED": 1}, timeout_s=60
        )


def test_only_must_match(tmp_path):
    _nb(tmp_path / "00_x.ipynb", "pass")
    with pytest.raises(ConfigError, match="--only 07 matches no notebook"):
        runner.discover_notebooks(["07"], tmp_path)
    assert [p.stem for p in runner.discover_notebooks(["00"], tmp_path)] == ["00_x"]


def test_cli_errors_are_one_line_and_nonzero(capsys, tmp_path):
    assert cli(["reproduce", "--profile", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown profile 'nope'" in err
    assert cli(["reproduce", "--dataset", "ukbb", "--data-dir", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli(["reproduce", "--set", "ch4.epochz=3"]) == 2
    assert "unknown parameter 'ch4.epochz'" in capsys.readouterr().err
    assert cli(["frobnicate"]) == 2
    assert cli([]) == 0 and "reproduce" in capsys.readouterr().out
    afile = tmp_path / "afile"
    afile.write_text("x")
    for command in (["reproduce"], ["run", "background"]):
        assert cli([*command, "--report-dir", str(afile)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"report folder {afile} is a file" in err
    assert cli(["reproduce", "--dataset", "mnms", "--data-dir", str(afile)]) == 2
    assert f"data folder {afile} for dataset 'mnms' is a file" in capsys.readouterr().err


def test_readme_test_command_is_what_ci_runs(repo_root):
    ci = (repo_root / ".ci" / "run").read_text()
    readme = (repo_root / "README.md").read_text()
    assert "make test" in readme
    assert "\nmake test\n" in ci


@pytest.mark.slow
def test_kernel_prints_no_tcp_warning(tmp_path):
    """``cmrkit reproduce --quiet`` is quiet: the kernel papermill starts gets CurveZMQ keys where
    jupyter_client and the kernelspec support it, so ipykernel prints no "running over TCP without
    encryption" warning to the terminal (the kernel inherits our stderr, hence the subprocess)."""
    import subprocess
    import sys

    _nb(tmp_path / "00_x.ipynb", "print('cell ran', SEED)")
    code = (
        "from pathlib import Path; from cmrkit.runner import execute_notebook; "
        f"execute_notebook(Path({str(tmp_path / '00_x.ipynb')!r}), Path({str(tmp_path / 'out.ipynb')!r}), "
        "{'SEED': 3}, timeout_s=120, log_output=False)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "without encryption" not in res.stderr and "IPKernelApp" not in res.stderr, res.stderr
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert "cell ran 3" in out.cells[-1].outputs[0]["text"]


def test_make_lab_as_root_passes_allow_root_with_a_notice(repo_root):
    import os
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(["make", "-n", "lab"], cwd=repo_root, capture_output=True, text=True, timeout=60).stdout
    lab = [ln for ln in out.splitlines() if "jupyter lab" in ln]
    assert lab, out
    if os.geteuid() == 0:
        assert "--allow-root" in lab[-1] and "running as root" in out
    else:
        assert "--allow-root" not in lab[-1]
