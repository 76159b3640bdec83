"""Headless reproduction: execute the chapter notebooks with papermill and write the report.

``cmrkit reproduce --profile smoke`` (what ``make reproduce`` calls) resolves the profile, makes sure
the data set is there (the phantom cohort of the profile is generated when missing), executes every
notebook in ``notebooks/`` in order with the papermill Python API, keeps each executed notebook under
``reports/<profile>/notebooks/`` (also when a cell fails, with the error in it), records status and
wall time in ``run.json`` and writes ``index.md``/``index.html``. The exit code is non-zero when any
notebook failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .config import DATASETS, Config, ConfigError, available_profiles, check_data_dir, load, parse_overrides
from .report import claim_report_dir, coverage_line, default_report_dir, write_index
from .utils import REPO_ROOT, atomic_write, git_sha, resolve_path

__all__ = [
    "NOTEBOOK_DIR",
    "PARAMETERS",
    "HEADLESS",
    "discover_notebooks",
    "execute_notebook",
    "export_html",
    "reproduce",
    "cli_main",
]

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
#: the parameters every notebook's first (``parameters``-tagged) cell defines, with their defaults:
#: what a person gets on opening a notebook in JupyterLab (sliders and interactive plots on)
PARAMETERS: dict[str, Any] = {
    "PROFILE": "smoke",
    "DATASET": "phantom",
    "DATA_DIR": "",
    "SEED": 0,
    "DEVICE": "auto",
    "REPORT_DIR": "",
    "INTERACTIVE": True,
    "OVERRIDES": {},
}
#: what every headless run (papermill through :func:`reproduce`, ``cmrkit run``, the tests) passes
#: instead: no widget front end there, so static figures (nbclient keeps ipywidgets ``Output``
#: content in the widget state, not in the cell outputs)
HEADLESS: dict[str, Any] = {"INTERACTIVE": False}


def discover_notebooks(only: Sequence[str] | None = None, folder: Path | None = None) -> list[Path]:
    """Notebooks ``NN_name.ipynb`` in execution order, optionally filtered by prefix (``["01", "03"]``)."""
    folder = folder or NOTEBOOK_DIR
    books = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if only:
        wanted = [o.strip() for o in only if o.strip()]
        unknown = [o for o in wanted if not any(p.stem.startswith(o) for p in books)]
        if unknown:
            raise ConfigError(
                f"--only {','.join(unknown)} matches no notebook; available: {', '.join(p.stem for p in books)}"
            )
        books = [p for p in books if any(p.stem.startswith(o) for o in wanted)]
    return books


def notebook_parameters(path: Path) -> dict[str, Any]:
    """Parameters declared in a notebook's ``parameters`` cell (papermill's inspection)."""
    import papermill as pm

    return {k: v for k, v in pm.inspect_notebook(str(path)).items()}


def execute_notebook(
    path: Path,
    out_path: Path,
    parameters: Mapping[str, Any],
    *,
    timeout_s: int,
    log_output: bool = True,
    progress_bar: bool = False,
) -> None:
    """Execute one notebook with papermill (kernel ``python3``, cwd = the notebook's folder).

    Raises ``papermill.PapermillExecutionError`` when a cell fails; the executed notebook, with the
    error, is saved at ``out_path`` either way.
    """
    import papermill as pm

    declared = notebook_parameters(path)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ConfigError(
            f"notebook {path.name} has no parameter(s) {', '.join(unknown)}; it declares {', '.join(sorted(declared))}"
        )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(
        str(path),
        str(out_path),
        parameters=dict(parameters),
        kernel_name="python3",
        cwd=str(path.parent),
        log_output=log_output,
        progress_bar=progress_bar,
        execution_timeout=timeout_s,
        request_save_on_cell_execute=True,
        **_kernel_transport(),
    )


def _kernel_transport() -> dict[str, Any]:
    """Engine arguments that let the kernel manager give the kernel CurveZMQ keys when both sides
    support it (jupyter_client >= 8.9 ``transport_encryption="auto"``, a kernelspec that declares
    ``supported_encryption: curve``, libzmq with CurveZMQ). The kernel then talks to papermill
    encrypted and does not print ipykernel's "Kernel is running over TCP without encryption"
    warning into ``cmrkit reproduce``'s output; elsewhere nothing changes."""
    try:
        import zmq
        from jupyter_client.manager import KernelManager
        from traitlets.config import Config as TraitletsConfig
    except ImportError:  # pragma: no cover - papermill brings all three
        return {}
    if not (KernelManager.class_traits().get("transport_encryption") and zmq.has("curve")):
        return {}
    return {"config": TraitletsConfig({"KernelManager": {"transport_encryption": "auto"}})}


def _prepare_data(cfg: Config) -> None:
    """Make sure the data set of the run is there; the phantom cohort is generated when missing."""
    if cfg.dataset == "phantom":
        try:
            from .phantom import ensure_cohort
        except ImportError:  # pragma: no cover - the phantom package is part of the kit
            raise ConfigError("the phantom generator (cmrkit.phantom) is not installed") from None
        ensure_cohort(cfg)
    check_data_dir(cfg.dataset, cfg.data_dir)


def reproduce(
    profile: str = "smoke",
    *,
    only: Sequence[str] | None = None,
    dataset: str = "phantom",
    data_dir: str | None = None,
    seed: int = 0,
    device: str = "auto",
    report_dir: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    log_output: bool = True,
    progress_bar: bool | None = None,
    notebook_dir: Path | None = None,
) -> int:
    """Run the notebooks of a profile; return the number of failed notebooks (0 = success)."""
    # a real-data folder is checked at once; the phantom cohort is generated below when missing
    cfg = load(
        profile,
        seed=seed,
        dataset=dataset,
        data_dir=data_dir,
        device=device,
        overrides=overrides,
        check_data=dataset != "phantom",
    )
    books = discover_notebooks(only, notebook_dir)
    if not books:
        raise ConfigError(f"no notebooks found in {notebook_dir or NOTEBOOK_DIR}")
    root = resolve_path(report_dir) if report_dir else default_report_dir(profile, dataset)
    claim_report_dir(root, dataset, cfg.data_dir)  # before any work: never mix two data sets in one report
    _prepare_data(cfg)
    params = {
        "PROFILE": profile,
        "DATASET": dataset,
        "DATA_DIR": str(cfg.data_dir),
        "SEED": seed,
        "DEVICE": device,
        "REPORT_DIR": str(root),
        "OVERRIDES": dict(overrides or {}),
        **HEADLESS,
    }
    if progress_bar is None:
        progress_bar = sys.stderr.isatty()
    run_file = root / "run.json"
    run: dict[str, Any] = json.loads(run_file.read_text()) if run_file.is_file() else {}
    run.update(
        profile=profile,
        seed=seed,
        dataset=dataset,
        data_dir=str(cfg.data_dir),
        git_sha=git_sha(),
        cmrkit_version=__version__,
    )
    run.setdefault("notebooks", {})
    failures = 0
    for i, nb in enumerate(books, 1):
        print(f"[{i}/{len(books)}] {nb.stem} (profile {profile}) ...", flush=True)
        t0 = time.perf_counter()
        status, error = "ok", None
        try:
            execute_notebook(
                nb,
                root / "notebooks" / nb.name,
                params,
                timeout_s=int(cfg.runner.execution_timeout_s),
                log_output=log_output,
                progress_bar=progress_bar,
            )
        except ConfigError:
            raise
        except Exception as exc:  # papermill execution errors, kernel deaths, timeouts
            failures += 1
            status, error = (
                "failed",
                f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}",
            )
        wall = time.perf_counter() - t0
        run["notebooks"][nb.stem] = {"status": status, "wall_s": round(wall, 2), "error": error}
        with atomic_write(run_file, "w") as fh:
            json.dump(run, fh, indent=2)
        page = export_html(root / "notebooks" / nb.name)
        msg = f"[{i}/{len(books)}] {nb.stem}: {status} in {wall:.1f} s"
        shown = page or root / "notebooks" / nb.name
        print(msg + (f" -> {error}\n    executed notebook with the error: {shown}" if error else ""), flush=True)
    index = write_index(root, profile)
    print(coverage_line(root))
    print(f"report: {index.with_suffix('.html')} (open it in a browser; Markdown: {index.name})")
    return failures


def export_html(executed: Path) -> Path | None:
    """Export an executed notebook to HTML next to it (nbconvert's ``lab`` template, images inline)
    so the report links a page a person can read instead of raw ``.ipynb`` JSON. Returns the page,
    or ``None`` (with a note on stderr) when the notebook is missing or nbconvert fails."""
    if not executed.is_file():
        return None
    try:
        import nbformat
        from nbconvert import HTMLExporter

        nb = nbformat.read(executed, as_version=4)
        body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    except Exception as exc:  # nbconvert missing or a template problem: the .ipynb stays linked
        print(f"    note: no HTML page for {executed.name} ({type(exc).__name__}: {exc})", file=sys.stderr)
        return None
    page = executed.with_suffix(".html")
    with atomic_write(page, "w", encoding="utf-8") as fh:
        fh.write(body)
    return page


def cli_main(argv: Sequence[str] | None = None) -> int:
    """``cmrkit reproduce``: execute the notebooks of a profile and write ``reports/<profile>/``."""
    p = argparse.ArgumentParser(prog="cmrkit reproduce", description=cli_main.__doc__)
    p.add_argument("--profile", default="smoke", help=f"one of {', '.join(available_profiles())} (default smoke)")
    p.add_argument("--only", default="", help="comma-separated notebook prefixes, e.g. 00,01")
    p.add_argument("--dataset", default="phantom", choices=DATASETS)
    p.add_argument("--data-dir", default=None, help="data folder (default: data/phantom/<profile> for the phantom)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--report-dir", default=None, help="default reports/<profile>")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a profile value, e.g. --set ch4.epochs=2 (repeatable)",
    )
    p.add_argument("--quiet", action="store_true", help="do not stream cell output to the terminal")
    args = p.parse_args(argv)
    if not args.quiet:  # papermill streams cell output through its logger
        import logging

        log = logging.getLogger("papermill")
        if not log.handlers:
            handler = logging.StreamHandler(sys.stdout)
            handler.setFormatter(logging.Formatter("    %(message)s"))
            log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    try:
        failures = reproduce(
            args.profile,
            only=args.only.split(",") if args.only else None,
            dataset=args.dataset,
            data_dir=args.data_dir,
            seed=args.seed,
            device=args.device,
            report_dir=args.report_dir,
            overrides=parse_overrides(args.overrides),
            log_output=not args.quiet,
        )
    except ConfigError as exc:
        print(f"cmrkit reproduce: error: {exc}", file=sys.stderr)
        return 2
    if failures:
        print(
            f"cmrkit reproduce: {failures} notebook(s) failed; see the executed notebooks in the report folder",
            file=sys.stderr,
        )
        return 1
    return 0
