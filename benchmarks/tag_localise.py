"""Automatic LV localisation on tagged images (cmrkit.tagging.localise): accuracy, failures and speed.

Sets:

* a phantom cohort (``--data-dir``, all three tagging slices of the first ``--n`` subjects), each sequence
  embedded in a 256x256 zero-padded frame as Ferdian's HDF5 files hold UK Biobank tagging;
* ``--realistic N`` / ``--stress N``: N phantom subjects rendered under the training / stress ranges of
  :mod:`cmrkit.tagging.acquisition` (strong tag fading as on the real UK Biobank slice, bright chest wall
  from coil shading, other contrasts, low SNR, 256^2 frames with a zero-padded field of view, missing
  frames; seeds 11 and 12).

Per slice and as means: centre error (px), endo/epi mean-radius error (px, + = too large), localisation
time, failures (the clear error the CLI reports); with ``--tracker NAME`` also the ES E_cc and E_rr bias
after tracking from the automatic grid and from the true frame-0 grid.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tag_localise.py --data-dir data/phantom/smoke --n 10
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tag_localise.py --n 0 --realistic 6 --stress 6
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from cmrkit.strain import green_strain_from_landmarks
from cmrkit.tagging.localise import localise_lv_wall


def _radii(lm: np.ndarray) -> tuple[np.ndarray, float, float]:
    g = lm.reshape(2, 24, 7)
    c = g[:, :, 0].mean(1)
    return c, float(np.hypot(*(g[:, :, 0] - c[:, None])).mean()), float(np.hypot(*(g[:, :, 6] - c[:, None])).mean())


def _cohort(data_dir: str, n: int, pad: int) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    from cmrkit.io import iter_subjects
    from cmrkit.phantom import read_ground_truth

    for si, s in enumerate(iter_subjects(data_dir, "phantom")):
        if si >= n:
            break
        lms = np.asarray(read_ground_truth(s.sources["ground_truth"])["landmarks"]["px"])
        for k, t in enumerate(s.tagging):
            im = np.moveaxis(t.image, 2, 0).swapaxes(1, 2).astype(float)  # (T, rows = y, cols = x)
            lm = lms[k]
            if pad:
                big = np.zeros((im.shape[0], pad, pad))
                oy, ox = (pad - im.shape[1]) // 2, (pad - im.shape[2]) // 3
                big[:, oy : oy + im.shape[1], ox : ox + im.shape[2]] = im
                im, lm = big, lm + np.array([ox, oy])[None, :, None]
            yield f"{s.subject_id} slice {k}", im, lm


def _rendered(ranges: Any, seed: int, n: int) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    from cmrkit.tagging.acquisition import phantom_tagged_slices

    for i in range(n):
        for ts in phantom_tagged_slices(i, seed=seed, acquisition=ranges):
            yield f"{ts.subject} {ts.region} (seed {seed})", ts.images, ts.landmarks


def _run(name: str, items: Iterator[tuple[str, np.ndarray, np.ndarray]], tracker: Any) -> None:
    cols = ["centre_px", "endo_px", "epi_px", "time_s"]
    if tracker is not None:
        cols += ["dEcc_auto", "dEcc_file", "dErr_auto", "dErr_file"]
    rows, fails = [], 0
    for label, im, lm in items:
        t0 = time.perf_counter()
        try:
            res = localise_lv_wall(im)
        except ValueError as exc:
            print(f"{label}: FAILED ({exc})", flush=True)
            fails += 1
            continue
        dt = time.perf_counter() - t0
        ct, t_en, t_ep = _radii(lm[0])
        ca, a_en, a_ep = _radii(res.landmarks)
        row = [float(np.hypot(*(ca - ct))), a_en - t_en, a_ep - t_ep, dt]
        if tracker is not None:
            g = green_strain_from_landmarks(lm)
            es = int(np.nanargmin(g.Ecc))
            sa = green_strain_from_landmarks(tracker.track(im, res.landmarks))
            sf = green_strain_from_landmarks(tracker.track(im, lm[0]))
            row += [sa.Ecc[es] - g.Ecc[es], sf.Ecc[es] - g.Ecc[es], sa.Err[es] - g.Err[es], sf.Err[es] - g.Err[es]]
        rows.append(row)
        print(f"{label}: " + " ".join(f"{c}={v:+.3f}" for c, v in zip(cols, row)), flush=True)
    r = np.array(rows)
    print(f"\n== {name}: {len(r)} slices localised, {fails} failed")
    if len(r) > 1:
        for c, m, sd in zip(cols, r.mean(0), r.std(0, ddof=1)):
            print(f"  {c:10s} mean {m:+.3f}  sd {sd:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="data/phantom/smoke")
    ap.add_argument("--n", type=int, default=10, help="cohort subjects (0 = skip the cohort)")
    ap.add_argument("--pad", type=int, default=256, help="zero-padded square size for the cohort (0: no padding)")
    ap.add_argument("--realistic", type=int, default=0, help="subjects rendered under TRAIN_RANGES (seed 11)")
    ap.add_argument("--stress", type=int, default=0, help="subjects rendered under STRESS_RANGES (seed 12)")
    ap.add_argument("--tracker", default=None, help="also track from both starts (learned, harp, harp-classic)")
    ap.add_argument("--profile", default="cpu", help="profile of the learned tracker")
    a = ap.parse_args()
    tracker = None
    if a.tracker:
        from cmrkit.config import load
        from cmrkit.tagging.trackers import get_tracker

        tracker = get_tracker(a.tracker, load(a.profile), log=print)
    if a.n:
        _run(f"cohort {a.data_dir} (padding {a.pad or 'none'})", _cohort(a.data_dir, a.n, a.pad), tracker)
    if a.realistic or a.stress:
        from cmrkit.tagging.acquisition import STRESS_RANGES, TRAIN_RANGES

        if a.realistic:
            _run("realistic (TRAIN_RANGES)", _rendered(TRAIN_RANGES, 11, a.realistic), tracker)
        if a.stress:
            _run("stress (STRESS_RANGES)", _rendered(STRESS_RANGES, 12, a.stress), tracker)


if __name__ == "__main__":
    main()
