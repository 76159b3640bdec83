"""Command-line arguments shared by the benchmark scripts that run a chapter at a profile."""

from __future__ import annotations

import argparse
from typing import Any

from cmrkit import config


def profile_parser(doc: str) -> argparse.ArgumentParser:
    """A parser with ``--profile``, ``--device``, ``--data-dir`` and repeatable ``--set KEY=VALUE``; its
    description is the first line of ``doc``."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data-dir", default=None, help="phantom cohort folder (default: the profile's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="profile override, repeatable")
    return ap


def load_profile(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The profile's :class:`cmrkit.config.Config` with the ``--set`` overrides, and the overrides."""
    overrides = config.parse_overrides(args.set)
    return config.load(args.profile, device=args.device, overrides=overrides, data_dir=args.data_dir), overrides
