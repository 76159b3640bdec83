"""``cmrkit track``: tag tracking and strain of a Ferdian-format HDF5 file from the command line."""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..strain import N_LANDMARKS, StrainResult, slice_report, strain_from_landmarks
from .grid import init_landmarks_from_mask
from .tracker import landmark_error
from .trackers import TRACKERS, get_tracker, track_all

__all__ = ["cli_main"]


# ----------------------------------------------------------------------------------------------
# CLI: cmrkit track FILE.h5 [--init-from-file] [--json]
# ----------------------------------------------------------------------------------------------
def cli_main(argv: list[str] | None = None) -> int:
    """``cmrkit track FILE.h5 [--init-from-file | --mask MASK] [--tracker T] [--json] [--out OUT.h5]``.

    Tracks the 24x7 landmark grid through every slice of a Ferdian-format HDF5 file and reports
    per-frame Green strains (``Ecc``, ``Ecc_rings``, ``Err``) and the tracked landmarks. The tracker
    (``--tracker``, :mod:`cmrkit.tagging.trackers`) defaults to the profile's ``tagging.tracker``:
    ``learned`` at cpu/demo/paper, networks the kit trains on phantom tagging with realistic acquisition
    variation, trained once per ``--profile`` (default ``cpu``: ~20 min on 2 idle CPU cores, about an
    hour on a busy machine, announced on stderr) and cached in ``runs/``; chosen because it holds on
    degraded tagging where HARP breaks down (benchmarks/README.md). ``--tracker harp`` (harmonic phase +
    wall model) needs no training and is about 20 times faster.
    Frame-0 landmarks come from the images alone by default (:mod:`cmrkit.tagging.localise`: the LV wall
    as the ring of tissue that keeps its tags and contracts), from a myocardium mask with ``--mask``,
    or from the file with ``--init-from-file`` (the accurate path when annotations exist); the JSON
    says which under ``init``. With ``--init-from-file`` the
    file has landmarks for every frame, the mean landmark error per frame (``landmark_error_mm``,
    ``landmark_error_px``) and the strain differences tracked − file (``Ecc_diff``, ``Ecc_rings_diff``,
    ``Err_diff``) are reported too. ``--out`` writes the tracked landmarks (``landmark_coords``) and
    Ferdian's strain datasets (``cc_strains``, ``rr_strains``, ``*_linear_strains``).
    """
    from ..io.ferdian import read_ferdian_h5, write_ferdian_h5
    from ..strain import ferdian_strain_arrays

    parser = argparse.ArgumentParser(
        prog="cmrkit track",
        description="Tracking of Ferdian 24x7 landmark grids through tagged sequences (Ferdian HDF5).",
    )
    parser.add_argument("file", help="HDF5 file with image_seqs (n, frames, H, W)")
    parser.add_argument(
        "--init-from-file",
        action="store_true",
        help="start from the file's frame-0 landmark_coords (default: locate the LV wall on the tagged images)",
    )
    parser.add_argument(
        "--mask",
        help="frame-0 myocardium mask(s) (.npy/.npz (H, W) or (n, H, W); "
        "label 2 = myocardium in label maps) to initialise landmarks",
    )
    parser.add_argument(
        "--tag-spacing-px", type=float, default=None, help="tag spacing in pixels (default: detected from the spectrum)"
    )
    parser.add_argument("--bandwidth", type=float, default=0.3, help="HARP band-pass width / |k| (harp trackers)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--slice", type=int, default=0, help="slice reported at the JSON top level")
    parser.add_argument(
        "--tracker",
        choices=TRACKERS,
        default=None,
        help="learned (the profile's default at cpu/demo/paper: networks trained by the kit on first use, "
        "cached in runs/), harp (harmonic phase + wall model, no training) or harp-classic",
    )
    parser.add_argument(
        "--profile",
        default="cpu",
        help="profile whose 'tagging' section sets the learned tracker's training (default cpu; trained once)",
    )
    parser.add_argument(
        "--method",
        choices=("model", "classic"),
        default=None,
        help="HARP variant (implies --tracker harp / harp-classic; kept for older scripts)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="worker processes for multi-slice files (-1: all)")
    parser.add_argument("--out", help="write tracked landmarks + strains to this HDF5 file")
    args = parser.parse_args(argv)

    def fail(msg: str) -> int:
        print(f"cmrkit track: error: {msg}", file=sys.stderr)
        return 2

    # everything that can be checked without reading the images is refused before any work
    problem = _check_options(args)
    if problem:
        return fail(problem)
    if args.method is not None:
        implied = "harp" if args.method == "model" else "harp-classic"
        if args.tracker not in (None, implied):
            return fail(f"--method {args.method} is a HARP option; it contradicts --tracker {args.tracker}")
        args.tracker = implied
    try:
        from ..config import load as load_config

        cfg = load_config(args.profile)
    except ValueError as exc:
        return fail(f"--profile: {exc}")
    tracker_name = args.tracker or str(cfg.tagging.tracker)
    init_mode = "file" if args.init_from_file else "mask" if args.mask else "auto"
    try:
        data = read_ferdian_h5(args.file)
        imgs = data.image_seqs
        assert imgs is not None
        n = imgs.shape[0]
        if not -n <= args.slice < n:
            raise ValueError(f"--slice {args.slice} out of range: {args.file} has {n} slice(s)")
        if args.tag_spacing_px is not None and args.tag_spacing_px >= min(imgs.shape[2:]) / 2:
            raise ValueError(
                f"--tag-spacing-px {args.tag_spacing_px:g}: at least two tags must fit in the "
                f"{imgs.shape[3]}x{imgs.shape[2]} images of {args.file}"
            )
        if args.init_from_file:
            if data.landmark_coords is None:
                raise ValueError(f"{args.file}: --init-from-file but the file has no 'landmark_coords'")
            valid = data.landmark_frame_valid
            if not valid[:, 0].all():
                bad = ", ".join(map(str, np.flatnonzero(~valid[:, 0])[:10]))
                raise ValueError(f"{args.file}: frame-0 landmarks are missing (all zeros or NaN) for slice(s) {bad}")
            init = data.landmark_coords[:, 0]
        elif args.mask:
            mp = Path(args.mask)
            mk = _read_mask(mp)
            if mk.ndim == 2:
                mk = np.broadcast_to(mk, (n,) + mk.shape)
            if mk.ndim != 3 or mk.shape != (n,) + imgs.shape[2:]:
                raise ValueError(
                    f"--mask {mp}: mask must be (H, W) or (n, H, W) matching the images {imgs.shape} of "
                    f"{args.file} as (n, T, H, W), got {mk.shape}"
                )
            init = np.empty((n, 2, N_LANDMARKS))
            for i in range(n):
                try:
                    init[i] = init_landmarks_from_mask(mk[i])
                except ValueError as exc:
                    raise ValueError(f"--mask {mp} slice {i}: {exc}") from None
        else:  # from the tagged images alone: tag persistence + contraction (cmrkit.tagging.localise)
            from .localise import auto_init_landmarks

            init = np.empty((n, 2, N_LANDMARKS))
            for i in range(n):
                try:
                    init[i] = auto_init_landmarks(imgs[i], tag_spacing_px=args.tag_spacing_px)
                except ValueError as exc:
                    raise ValueError(
                        f"{args.file} slice {i}: automatic LV localisation failed ({exc}); "
                        "pass --init-from-file or --mask"
                    ) from None
        tracker = get_tracker(
            tracker_name,
            cfg,
            tag_spacing_px=args.tag_spacing_px,
            bandwidth=args.bandwidth,
            log=lambda msg: print(f"cmrkit track: {msg}", file=sys.stderr, flush=True),
        )
        tracked = track_all(tracker, imgs, init, n_jobs=args.jobs)
    except (OSError, ValueError, KeyError) as exc:
        return fail(str(exc))

    res = strain_from_landmarks(tracked, "green")
    # landmarks of the file for every frame: strain differences always (they do not depend on how
    # the spokes are numbered); landmark errors only when tracking started from the file's grid
    truth = data.landmark_coords if data.landmark_coords is not None and data.has_all_landmark_frames else None
    slices = []
    for i in range(n):
        ed = data.ed_frame_idx[i] if data.ed_frame_idx is not None else None
        es = data.es_frame_idx[i] if data.es_frame_idx is not None else None
        rep = slice_report(StrainResult(res.Ecc[i], res.Ecc_rings[i], res.Err[i], "green"), ed, es)
        rep["landmarks"] = _json_list(np.round(tracked[i], 4))
        if truth is not None and args.init_from_file:
            valid = data.landmark_frame_valid[i]
            err_px = landmark_error(tracked[i], truth[i])
            err_px = np.where(valid, err_px, np.nan)
            rep["landmark_error_px"] = _json_list(err_px)
            if data.px_spaces is not None:
                rep["landmark_error_mm"] = _json_list(err_px * data.px_spaces[i])
            else:
                rep["landmark_error_mm"] = None
                rep["note"] = "file has no px_spaces: landmark_error_mm unavailable"
        if truth is not None:
            ref = strain_from_landmarks(truth[i], "green")
            rep["Ecc_diff"] = _json_list(res.Ecc[i] - ref.Ecc)
            rep["Ecc_rings_diff"] = _json_list(res.Ecc_rings[i] - ref.Ecc_rings)
            rep["Err_diff"] = _json_list(res.Err[i] - ref.Err)
        slices.append(rep)
    if args.out:
        try:
            write_ferdian_h5(
                args.out,
                landmark_coords=tracked,
                px_spaces=data.px_spaces,
                ed_frame_idx=data.ed_frame_idx,
                es_frame_idx=data.es_frame_idx,
                extra={"landmark_predictions": tracked.astype(np.float32), **ferdian_strain_arrays(tracked)},
            )
        except (OSError, ValueError) as exc:
            return fail(str(exc))
    if args.json:
        out: dict[str, Any] = {
            "file": str(Path(args.file)),
            "n_slices": n,
            "slice": args.slice % n,
            "kind": "green",
            "tracker": tracker.name,
            "init": init_mode,
        }
        out.update(slices[args.slice])
        out["slices"] = slices
        print(json.dumps(out, allow_nan=False))
    else:
        for i, rep in enumerate(slices):
            has_err = "landmark_error_px" in rep
            print(f"# {args.file} slice {i}: landmarks tracked by {tracker.name} (init: {init_mode}), Green strain")
            print(f"{'frame':>5} {'Ecc':>8} {'Err':>8}" + (f" {'err_px':>8}" if has_err else ""))
            for t in range(len(rep["Ecc"])):
                line = f"{t:5d} {_fmt(rep['Ecc'][t])} {_fmt(rep['Err'][t])}"
                if has_err:
                    line += f" {_fmt(rep['landmark_error_px'][t])}"
                print(line)
    return 0


def _check_options(args: argparse.Namespace) -> str | None:
    """The first problem with the command-line options that needs no data to see, else ``None``."""
    if args.init_from_file and args.mask:
        return "give either --init-from-file or --mask, not both"
    if not (math.isfinite(args.bandwidth) and 0 < args.bandwidth < 0.5):
        return (
            f"--bandwidth {args.bandwidth:g}: the HARP band-pass width is a fraction of the tag frequency "
            "and must lie in (0, 0.5) (default 0.3) so that it passes the harmonic peak and excludes the DC term"
        )
    if args.tag_spacing_px is not None and not (math.isfinite(args.tag_spacing_px) and args.tag_spacing_px > 2):
        return f"--tag-spacing-px {args.tag_spacing_px:g}: a tag period must be more than 2 pixels"
    if args.jobs == 0 or args.jobs < -1:
        return f"--jobs {args.jobs}: give a number of worker processes >= 1, or -1 for all cores"
    src = Path(args.file)
    if not src.is_file():
        return f"{src}: " + ("is a folder, not an HDF5 file" if src.is_dir() else "file not found")
    if args.mask:
        mp = Path(args.mask)
        if not mp.is_file():
            return f"--mask {mp}: " + ("is a folder" if mp.is_dir() else "file not found")
        if mp.suffix.lower() not in (".npy", ".npz"):
            return (
                f"--mask {mp}: expected a NumPy .npy or .npz file holding an (H, W) or (n, H, W) mask "
                "(label 2 = myocardium in label maps)"
            )
    if args.out:
        out = Path(args.out)
        if out.is_dir():
            return f"--out {out}: is a folder; give the .h5 file to write (e.g. {out / (src.stem + '.result.h5')})"
        if out.exists() and src.exists() and out.resolve() == src.resolve():
            return f"--out {out}: is the input file; write the result to another file (e.g. {src.stem}.result.h5)"
        try:  # the folder must take a file now, not after minutes of tracking
            out.absolute().parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=out.absolute().parent):
                pass
        except OSError as exc:
            return f"--out {out}: cannot write a file there ({exc.strerror or exc})"
    return None


def _read_mask(path: Path) -> np.ndarray:
    """The array of a ``.npy`` or ``.npz`` mask file (first array of an ``.npz``), or a ValueError
    that names the file and the expected format."""
    try:
        mk = np.load(path, allow_pickle=False)
        if isinstance(mk, np.lib.npyio.NpzFile):
            with mk:
                if not mk.files:
                    raise ValueError("the .npz file holds no array")
                mk = mk[mk.files[0]]
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(
            f"--mask {path}: not a readable NumPy .npy/.npz mask (an (H, W) or (n, H, W) integer or boolean "
            f"array; label 2 = myocardium in label maps): {' '.join(str(exc).split())[:160]}"
        ) from None
    mk = np.asarray(mk)
    if mk.dtype.kind not in "biuf" or (mk.dtype.kind == "f" and not np.all(np.isfinite(mk))):
        raise ValueError(f"--mask {path}: expected a numeric mask without NaN, got dtype {mk.dtype}")
    return mk


def _fmt(v: float | None) -> str:
    return "     nan" if v is None else f"{v:8.4f}"


def _json_list(a: np.ndarray) -> list:
    return (
        [None if not np.isfinite(v) else float(v) for v in np.asarray(a, float).reshape(-1)]
        if np.ndim(a) <= 1
        else [_json_list(r) for r in np.asarray(a)]
    )
