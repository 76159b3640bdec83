"""``cmrkit phantom``: generate a phantom cohort from the command line.

Examples
--------
::

    cmrkit phantom                                   # the smoke cohort under data/phantom/smoke
    cmrkit phantom --profile demo --n 200 --seed 0   # data/phantom/demo
    cmrkit phantom --out /tmp/phantom_smoke --workers 2
    cmrkit phantom --profile demo --n 20 --frames 25 --out data/phantom/try
    cmrkit phantom --tag-phase anchored --out data/phantom/smoke_anchored
    cmrkit phantom --export-ferdian phantom_tagging.h5 --export-subjects 2

The profile (``smoke`` | ``cpu`` | ``demo`` | ``paper``, default ``smoke`` like every other entry point)
gives the geometry, the cohort size and the number of workers; ``--n``, ``--frames``, ``--workers``,
``--matrix`` and ``--tag-phase`` (:attr:`cmrkit.phantom.Geometry.tag_phase`) override it.
``--export-ferdian`` also writes the cohort's tagging slices with their true landmarks in Ferdian's
HDF5 layout (:func:`cmrkit.phantom.export.export_ferdian`), the input of ``cmrkit strain`` and
``cmrkit track``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

__all__ = ["cli_main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cmrkit phantom",
        description=(
            "Generate the embedded phantom cohort (UK Biobank layout: sa/label_sa/sa_ED/ES, tag_1..3 NIfTI, "
            "ground_truth.h5 per subject, manifest.csv and cohort.json)."
        ),
    )
    p.add_argument("--n", type=int, default=None, help="number of subjects (default: the profile's n_subjects)")
    p.add_argument("--seed", type=int, default=0, help="cohort seed (default 0)")
    p.add_argument("--out", default=None, help="output folder (default data/phantom/<profile>)")
    p.add_argument(
        "--profile", default="smoke", help="smoke | cpu | demo | paper (geometry, size, workers); default smoke"
    )
    p.add_argument(
        "--frames", type=int, default=None, help="cine frames per cycle (default: the profile's cine_frames)"
    )
    p.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: the profile's, capped at the CPUs)"
    )
    p.add_argument("--matrix", type=int, default=None, help="cine in-plane matrix (default: the profile's)")
    p.add_argument("--pathology-fraction", type=float, default=None, help="share of subjects with regional dysfunction")
    p.add_argument(
        "--tag-phase",
        default=None,
        metavar="{random,anchored}",
        help="tag grid placement: random per subject (default, as acquired) or anchored to the LV centre",
    )
    p.add_argument("--force", action="store_true", help="regenerate even if a matching cohort exists")
    p.add_argument(
        "--export-ferdian",
        default=None,
        metavar="OUT.h5",
        help="also write the tagging slices with their true landmarks in Ferdian's HDF5 layout "
        "(try `cmrkit strain OUT.h5` and `cmrkit track OUT.h5 --init-from-file`)",
    )
    p.add_argument(
        "--export-subjects",
        type=int,
        default=None,
        metavar="N",
        help="with --export-ferdian: the first N subjects only (3 tagging slices each; default all)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def cli_main(argv: list[str] | None = None) -> int:
    """Entry point of ``cmrkit phantom``; returns 0 on success, 2 on bad input."""
    args = build_parser().parse_args(argv)
    try:
        from ..config import load_raw
        from ..utils import resolve_path
        from .cohort import COHORT_JSON, generate_cohort, read_cohort_spec
        from .geometry import Geometry

        for flag, v in (("--frames", args.frames), ("--matrix", args.matrix)):
            if v is not None and v < 2:
                raise ValueError(f"{flag} must be >= 2, got {v}")
        raw = load_raw(args.profile)
        section = dict(raw.get("phantom", {}))
        if args.frames is not None:
            section["cine_frames"] = args.frames
        if args.matrix is not None:
            section["matrix"] = args.matrix
        if args.tag_phase is not None:
            section["tag_phase"] = args.tag_phase
        geometry = Geometry.from_mapping(section)
        n = args.n if args.n is not None else int(section.get("n_subjects", 10))
        workers = args.workers if args.workers is not None else int(section.get("workers", 1))
        workers = max(1, min(workers, os.cpu_count() or 1)) if args.workers is None else workers
        frac = (
            args.pathology_fraction
            if args.pathology_fraction is not None
            else float(section.get("pathology_fraction", 0.15))
        )
        out = args.out or f"data/phantom/{args.profile}"
        if n < 1:
            raise ValueError(f"--n must be >= 1, got {n}")
        if workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers}")
        if not 0.0 <= frac <= 1.0:
            raise ValueError(f"--pathology-fraction must be in [0, 1], got {frac}")
        if args.export_subjects is not None and args.export_ferdian is None:
            raise ValueError("--export-subjects needs --export-ferdian OUT.h5")
        if args.export_subjects is not None and args.export_subjects < 1:
            raise ValueError(f"--export-subjects must be >= 1, got {args.export_subjects}")
        if args.export_ferdian is not None and os.path.isdir(args.export_ferdian):
            raise ValueError(f"--export-ferdian {args.export_ferdian}: is a folder; give the .h5 file to write")
        if os.path.isfile(out):
            raise ValueError(f"--out {out}: is a file; give the folder to write the cohort into")
        spec_file = Path(resolve_path(out)) / COHORT_JSON
        before = spec_file.stat().st_mtime_ns if spec_file.is_file() else None
        t0 = time.perf_counter()
        folder = generate_cohort(
            out,
            n,
            seed=args.seed,
            geometry=geometry,
            pathology_fraction=frac,
            workers=workers,
            progress=not args.no_progress,
            overwrite=args.force,
        )
        dt = time.perf_counter() - t0
        if before is not None and spec_file.stat().st_mtime_ns == before:
            print(f"phantom cohort: {n} subjects already in {folder} with these settings (--force regenerates)")
        else:
            spec = read_cohort_spec(folder) or {}
            made = spec.get("generated_subjects", 0)
            print(
                f"phantom cohort: {n} subjects in {folder} ({made} generated in {dt:.1f} s"
                + (f", {made / dt:.2f} subjects/s" if made and dt > 0 else "")
                + f"; {COHORT_JSON} written)"
            )
        if args.export_ferdian is not None:
            from .export import export_ferdian

            h5 = export_ferdian(folder, args.export_ferdian, n_subjects=args.export_subjects)
            rows = min(args.export_subjects or n, n) * 3
            print(
                f"Ferdian HDF5: {h5} ({rows} tagging slices with their true landmarks); "
                f"try `cmrkit strain {h5}` and `cmrkit track {h5} --init-from-file`"
            )
        return 0
    except (ValueError, OSError) as exc:  # ConfigError is a ValueError; FileNotFoundError an OSError
        print(f"cmrkit phantom: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(cli_main())
