"""Glue for the chapter notebooks: resolve and validate the papermill parameters.

Every notebook's first code cell is tagged ``parameters`` and holds literals only (see
:data:`cmrkit.runner.PARAMETERS`). The next cell calls::

    cfg, rep = cmrkit.notebook.resolve("01_smcvae_strain", globals())

which rejects unknown or misspelt upper-case parameters (papermill only warns about them), loads the
profile with the overrides, checks the data folder (generating the phantom cohort when it is the data
set and missing) and returns the :class:`~cmrkit.config.Config` and a :class:`~cmrkit.report.Report`
bound to the notebook.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .config import Config, ConfigError, check_data_dir, load
from .registry import NOTEBOOKS
from .report import Report, claim_report_dir, default_report_dir
from .runner import PARAMETERS
from .utils import resolve_path

__all__ = ["resolve", "dataset_label"]


def dataset_label(cfg: Config, n_subjects: int | None = None) -> str:
    """Human label of a run's data set for tables, e.g. ``"phantom (smoke, 10 subjects)"``."""
    n = f", {n_subjects} subjects" if n_subjects is not None else ""
    if cfg.dataset == "phantom":
        return f"phantom ({cfg.profile}{n})"
    return f"{cfg.dataset} ({cfg.data_dir}{n})"


def resolve(notebook: str, namespace: Mapping[str, Any], *, prepare_data: bool = True) -> tuple[Config, Report]:
    """Validate the notebook's parameters and return ``(cfg, report)``.

    Parameters
    ----------
    notebook
        The notebook's stem (must be registered in :data:`cmrkit.registry.NOTEBOOKS`).
    namespace
        The notebook's ``globals()``; every upper-case name that does not start with ``_`` is taken as
        a parameter and must be one of :data:`cmrkit.runner.PARAMETERS`.
    prepare_data
        Generate the phantom cohort when it is the data set and missing; check a real data folder.
    """
    if notebook not in NOTEBOOKS:
        raise ConfigError(f"unknown notebook {notebook!r}; registered: {', '.join(NOTEBOOKS)}")
    params = {k: v for k, v in namespace.items() if k.isupper() and not k.startswith("_")}
    unknown = sorted(set(params) - set(PARAMETERS))
    if unknown:
        raise ConfigError(
            f"unknown notebook parameter(s) {', '.join(unknown)}; allowed: {', '.join(PARAMETERS)} "
            f"(profile values go in OVERRIDES, e.g. OVERRIDES = {{'ch4.epochs': 2}})"
        )
    p = {**PARAMETERS, **params}
    cfg = load(
        p["PROFILE"],
        seed=p["SEED"],
        dataset=p["DATASET"],
        data_dir=p["DATA_DIR"] or None,
        device=p["DEVICE"],
        overrides=p["OVERRIDES"],
    )
    root = resolve_path(p["REPORT_DIR"]) if p["REPORT_DIR"] else default_report_dir(cfg.profile, cfg.dataset)
    claim_report_dir(root, cfg.dataset, cfg.data_dir, write=False)  # a bad REPORT_DIR fails before any data work
    if prepare_data:
        if cfg.dataset == "phantom":
            from .phantom import ensure_cohort

            ensure_cohort(cfg)
        check_data_dir(cfg.dataset, cfg.data_dir)
    rep = Report.from_config(cfg, notebook=notebook, root=p["REPORT_DIR"] or None, dataset_label=dataset_label(cfg))
    return cfg, rep
