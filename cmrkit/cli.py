"""The ``cmrkit`` command line: one entry point, subcommands implemented next to their code.

Each subcommand is a ``cli_main(argv) -> int`` function in the module that owns the work, so the
command line and the notebooks call the same code.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

__all__ = ["SUBCOMMANDS", "main"]

#: subcommand -> (module with ``cli_main``, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "reproduce": ("cmrkit.runner", "execute the notebooks of a profile headless and write reports/<profile>/"),
    "run": (
        "cmrkit.chapters",
        "run a chapter's steps without Jupyter (cmrkit run smcvae_strain --profile demo)",
    ),
    "phantom": ("cmrkit.phantom.cli", "generate the embedded phantom cohort (UK Biobank layout + ground truth)"),
    "phenotypes": ("cmrkit.clinical", "LV/RV volumes, EF and mass from ED/ES label volumes"),
    "strain": ("cmrkit.strain", "Green strain from landmark grids in a Ferdian-format HDF5 file"),
    "track": ("cmrkit.tagging.cli", "track tags in a Ferdian-format HDF5 file and report strain"),
    "segment": ("cmrkit.segment", "train the kit's segmenter on a cohort and score it on real M&Ms volumes"),
}


def _usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, help_) in SUBCOMMANDS.items())
    return (
        f"usage: cmrkit <command> [options]\n\ncommands:\n{rows}\n\n'cmrkit <command> --help' for a command's options."
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from . import __version__

        print(f"cmrkit {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"cmrkit: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, _ = SUBCOMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        print(f"cmrkit {name}: not available in this installation ({exc})", file=sys.stderr)
        return 2
    try:
        return int(module.cli_main(rest) or 0)
    except BrokenPipeError:  # output piped into `head` etc.: not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
