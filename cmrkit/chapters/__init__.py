"""Chapter pipelines: the step functions the notebooks walk through, runnable without Jupyter.

The chapter contract, written once here and checked by ``tests/chapters/test_contract.py``:

- one module per notebook, named after it: ``notebooks/NN_<name>.ipynb`` <-> ``cmrkit/chapters/<name>.py``, or a
  package ``cmrkit/chapters/<name>/`` whose ``__init__`` holds the contract when the chapter is more than one job
  (``smcvae_strain``: data, synthesis, tracking and strain, checks, example figures and viewers, dry runs;
  ``cond_ldm4d``: data, generation, the thesis' tables, the checks beyond them, sliders)
  (the notebooks are registered in :data:`cmrkit.registry.NOTEBOOKS`, the one place that lists them);
- the module defines ``NOTEBOOK`` (the notebook stem), ``STEPS`` (the names of its public step
  functions in the order the notebook calls them) and ``run_all(cfg, rep, *, interactive=False,
  progress=False) -> dict`` which runs every step and writes the notebook's registered artefacts;
- chapters exchange models and samples only through :mod:`cmrkit.runs`;
- a chapter declares what its artefacts need from the run's data set in ``NEEDS``: artefact id ->
  names of :data:`cmrkit.io.cohort.FEATURES` (``{"table_4_1": ("cine", "tagging"), ...}``). When the
  data set lacks a need, the artefact is left out with the reason (:func:`leave_out`, which calls
  :meth:`cmrkit.report.Report.skip`: "needs tagging; this data set has none") and the index lists it
  so, instead of as missing. A chapter none of whose artefacts can be made raises
  :class:`NotApplicable` after recording them; ``cmrkit reproduce`` then marks the notebook "not
  applicable" (not failed) and ``cmrkit run`` says why in one line. Parts of an artefact (subjects,
  panels) that a data set cannot provide are named in its notes or caption (``left_out=``);
- a chapter that trains models defines ``dry_runs(cfg: Config) -> list[DryRun]``: one
  :class:`DryRun` per model it trains, built at the sizes of ``cfg``'s profile. Each ``run()`` builds
  the model on the CPU, takes one training step and one synthesis/prediction step with a batch of
  1-2 random inputs through the chapter's own code, and returns its outputs by name; ``expected``
  gives their shapes. ``tests/test_dryrun.py`` runs every chapter's dry runs at the ``demo`` and
  ``paper`` sizes (:func:`dry_runs`), so a shape or memory-layout error at the thesis resolution
  (128 x 128) shows up without a GPU. Adding a chapter's models to it means writing that one
  function; models of equal sizes in two profiles (equal ``key``) are run once.

``cmrkit run smcvae_strain --profile demo`` therefore runs the same steps as
``notebooks/01_smcvae_strain.ipynb`` and writes the same artefacts, so a GPU machine needs the
package but not Jupyter.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from ..config import DATASETS, ConfigError, available_profiles, load, parse_overrides
from ..io.cohort import FEATURES, needs_reason
from ..registry import NOTEBOOKS, for_notebook
from ..utils import DEVICES

__all__ = [
    "Chapter",
    "CHAPTERS",
    "chapter",
    "DryRun",
    "dry_runs",
    "NotApplicable",
    "check_needs",
    "leave_out",
    "cli_main",
]


class NotApplicable(RuntimeError):
    """The run's data set lacks what every artefact of a chapter needs (e.g. tagging for chapter 4).

    Raised after the artefacts were recorded as left out (:func:`leave_out`); ``reason`` is the
    report's wording ("needs tagging; this data set has none"). The runner marks the notebook "not
    applicable" instead of failed.
    """

    def __init__(self, notebook: str, reason: str, detail: str = "") -> None:
        self.notebook, self.reason = notebook, reason
        super().__init__(f"{notebook} {reason}" + (f"\n{detail}" if detail else ""))


def check_needs(notebook: str, needs: Mapping[str, Sequence[str]]) -> None:
    """Check a chapter's ``NEEDS``: artefacts of ``notebook`` mapped to :data:`FEATURES` names."""
    own = {a.id for a in for_notebook(notebook)}
    for art, feats in needs.items():
        if art not in own:
            raise ValueError(f"NEEDS of {notebook}: {art!r} is not one of its registered artefacts")
        unknown = [f for f in feats if f not in FEATURES]
        if unknown:
            raise ValueError(f"NEEDS of {notebook}: {art!r} needs {unknown}; known: {list(FEATURES)}")


def leave_out(rep: Any, needs: Mapping[str, Sequence[str]], provides: Collection[str]) -> dict[str, str]:
    """Record every artefact whose ``needs`` the data set does not meet as left out
    (:meth:`cmrkit.report.Report.skip`, with :func:`cmrkit.io.cohort.needs_reason`'s wording) and
    return ``{artefact id: reason}``; ``provides`` are the :data:`FEATURES` the data set has."""
    out = {}
    for art, feats in needs.items():
        missing = [f for f in feats if f not in provides]
        if missing:
            out[art] = needs_reason(missing)
            rep.skip(art, out[art])
    return out


@dataclass(frozen=True)
class Chapter:
    """A notebook and the module that does its work."""

    name: str
    notebook: str
    purpose: str

    @property
    def module_name(self) -> str:
        return f"{__name__}.{self.name}"

    @property
    def available(self) -> bool:
        """True when the chapter's module exists in this version of the kit."""
        return importlib.util.find_spec(self.module_name) is not None

    def load(self) -> ModuleType:
        if not self.available:
            raise ConfigError(f"chapter {self.name!r} (notebook {self.notebook}) is not written yet")
        return importlib.import_module(self.module_name)


#: chapter name -> :class:`Chapter`, in notebook order (derived from :data:`cmrkit.registry.NOTEBOOKS`)
CHAPTERS: dict[str, Chapter] = {
    stem.split("_", 1)[1]: Chapter(stem.split("_", 1)[1], stem, purpose) for stem, purpose in NOTEBOOKS.items()
}


def chapter(name: str) -> Chapter:
    """The chapter called ``name`` (``"smcvae_strain"``) or numbered ``"01"``; a clear error otherwise."""
    for ch in CHAPTERS.values():
        if name in (ch.name, ch.notebook, ch.notebook[:2]):
            return ch
    raise ConfigError(f"unknown chapter {name!r}; chapters: {', '.join(CHAPTERS)}")


@dataclass(frozen=True)
class DryRun:
    """One model of a chapter at one profile's sizes, for the CPU dry run.

    Attributes
    ----------
    chapter, name
        The chapter and the model (e.g. ``"smcvae_strain"``, ``"smcvae D=1024 L=7"``).
    key
        The model's sizes as a string (e.g. the JSON of its config): dry runs with equal keys are the
        same model and are run once.
    expected
        Output name -> shape that ``run()`` must return.
    run
        Builds the model on the CPU, takes one training step and one synthesis/prediction step with a
        batch of 1-2, and returns ``{output name: array}`` (the training loss included).
    """

    chapter: str
    name: str
    key: str
    expected: Mapping[str, tuple[int, ...]] = field(repr=False)
    run: Callable[[], Mapping[str, np.ndarray]] = field(repr=False)


def dry_runs(profile: str, *, chapters: Sequence[str] | None = None) -> list[DryRun]:
    """The :class:`DryRun` of every written chapter (or of ``chapters``) at the sizes of ``profile``,
    from each chapter module's ``dry_runs(cfg)``; chapters without models contribute none."""
    cfg = load(profile, device="cpu")
    out: list[DryRun] = []
    for ch in CHAPTERS.values():
        if (chapters is not None and ch.name not in chapters) or not ch.available:
            continue
        fn = getattr(ch.load(), "dry_runs", None)
        if fn is not None:
            out += list(fn(cfg))
    return out


def _listing() -> str:
    width = max(map(len, CHAPTERS))
    rows = []
    for ch in CHAPTERS.values():
        status = "" if ch.available else "  (not written yet)"
        rows.append(f"  {ch.name:<{width}}  {ch.notebook}.ipynb: {ch.purpose}{status}")
    return "chapters:\n" + "\n".join(rows)


def cli_main(argv: Sequence[str] | None = None) -> int:
    """``cmrkit run CHAPTER``: run a chapter's steps headless and write its tables and figures."""
    p = argparse.ArgumentParser(
        prog="cmrkit run",
        description=cli_main.__doc__,
        epilog=_listing(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("chapter", help="a chapter name (or its notebook number, e.g. 01); see the list below")
    p.add_argument("--profile", default="smoke", help=f"one of {', '.join(available_profiles())}")
    p.add_argument("--dataset", default="phantom", choices=DATASETS)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--report-dir", default=None, help="default reports/<profile>")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--progress", action="store_true", help="show training progress bars")
    args = p.parse_args(argv)
    from ..notebook import resolve
    from ..report import write_index
    from ..runner import HEADLESS

    try:
        ch = chapter(args.chapter)
        module = ch.load()
        ns = {
            "PROFILE": args.profile,
            "DATASET": args.dataset,
            "DATA_DIR": args.data_dir or "",
            "SEED": args.seed,
            "DEVICE": args.device,
            "REPORT_DIR": args.report_dir or "",
            "OVERRIDES": parse_overrides(args.overrides),
            **HEADLESS,
        }
        cfg, rep = resolve(ch.notebook, ns)
    except ConfigError as exc:
        print(f"cmrkit run: error: {exc}", file=sys.stderr)
        return 2
    try:
        module.run_all(cfg, rep, progress=args.progress)
    except NotApplicable as exc:
        write_index(rep.root, cfg.profile)
        msg = f"{ch.notebook} {exc.reason}; its artefacts are listed as left out in {rep.root}"
        print(f"cmrkit run: {msg}", file=sys.stderr)
        return 3
    write_index(rep.root, cfg.profile)
    print(f"artefacts written under {rep.root}")
    return 0
