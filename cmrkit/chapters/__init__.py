"""Chapter pipelines: the step functions the notebooks walk through, runnable without Jupyter.

``cmrkit run ch4 --profile demo`` runs the same steps as ``notebooks/01_smcvae_strain.ipynb`` and
writes the same artefacts, so a GPU machine needs the package but not Jupyter.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..config import DATASETS, ConfigError, available_profiles

__all__ = ["CHAPTERS", "cli_main"]

#: chapter name -> (module, notebook stem)
CHAPTERS = {"bg": ("cmrkit.chapters.background", "00_background"), "ch4": ("cmrkit.chapters.ch4", "01_smcvae_strain")}


def cli_main(argv: Sequence[str] | None = None) -> int:
    """``cmrkit run CHAPTER``: run a chapter's steps headless and write its tables and figures."""
    p = argparse.ArgumentParser(prog="cmrkit run", description=cli_main.__doc__)
    p.add_argument("chapter", choices=sorted(CHAPTERS))
    p.add_argument("--profile", default="smoke", help=f"one of {', '.join(available_profiles())}")
    p.add_argument("--dataset", default="phantom", choices=DATASETS)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--report-dir", default=None, help="default reports/<profile>")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    from ..notebook import resolve
    from ..runner import _parse_overrides

    module, stem = CHAPTERS[args.chapter]
    try:
        ns = {
            "PROFILE": args.profile,
            "DATASET": args.dataset,
            "DATA_DIR": args.data_dir or "",
            "SEED": args.seed,
            "DEVICE": args.device,
            "REPORT_DIR": args.report_dir or "",
            "INTERACTIVE": False,
            "OVERRIDES": _parse_overrides(args.overrides),
        }
        cfg, rep = resolve(stem, ns)
    except ConfigError as exc:
        print(f"cmrkit run: error: {exc}", file=sys.stderr)
        return 2
    importlib.import_module(module).run_all(cfg, rep)
    from ..report import write_index

    write_index(rep.root, cfg.profile)
    print(f"artefacts written under {rep.root}")
    return 0
