"""Automatic LV localisation on tagged images (cmrkit.tagging.localise): accuracy and speed.

For the first N subjects of a phantom cohort (all three tagging slices), each sequence is embedded
in a 256x256 zero-padded frame as Ferdian's HDF5 files hold UK Biobank tagging, the LV wall is
located on the images alone, and HARP tracking starts once from that grid and once from the true
frame-0 landmarks. Printed per slice and as means: centre error (px), endo/epi mean-radius error
(px, + = too large), ES E_cc and E_rr bias (tracked - phantom landmark truth) for both starts, and
the localisation time.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tag_localise.py --data-dir data/phantom/smoke --n 10
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cmrkit.io import iter_subjects
from cmrkit.phantom import read_ground_truth
from cmrkit.strain import green_strain_from_landmarks
from cmrkit.tagging import track_landmarks
from cmrkit.tagging.localise import localise_lv_wall


def _radii(lm: np.ndarray) -> tuple[np.ndarray, float, float]:
    g = lm.reshape(2, 24, 7)
    c = g[:, :, 0].mean(1)
    return c, float(np.hypot(*(g[:, :, 0] - c[:, None])).mean()), float(np.hypot(*(g[:, :, 6] - c[:, None])).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="data/phantom/smoke")
    ap.add_argument("--n", type=int, default=10, help="subjects")
    ap.add_argument("--pad", type=int, default=256, help="zero-padded square size (0: no padding)")
    a = ap.parse_args()
    cols = ["centre_px", "endo_px", "epi_px", "time_s", "dEcc_auto", "dEcc_file", "dErr_auto", "dErr_file"]
    rows, fails = [], 0
    for si, s in enumerate(iter_subjects(a.data_dir, "phantom")):
        if si >= a.n:
            break
        lms = np.asarray(read_ground_truth(s.sources["ground_truth"])["landmarks"]["px"])
        for k, t in enumerate(s.tagging):
            im = np.moveaxis(t.image, 2, 0).swapaxes(1, 2).astype(float)  # (T, rows = y, cols = x)
            lm = lms[k]
            if a.pad:
                big = np.zeros((im.shape[0], a.pad, a.pad))
                oy, ox = (a.pad - im.shape[1]) // 2, (a.pad - im.shape[2]) // 3
                big[:, oy : oy + im.shape[1], ox : ox + im.shape[2]] = im
                im, lm = big, lm + np.array([ox, oy])[None, :, None]
            t0 = time.perf_counter()
            try:
                res = localise_lv_wall(im)
            except ValueError as exc:
                print(f"{s.subject_id} slice {k}: FAILED ({exc})")
                fails += 1
                continue
            dt = time.perf_counter() - t0
            ct, t_en, t_ep = _radii(lm[0])
            ca, a_en, a_ep = _radii(res.landmarks)
            g = green_strain_from_landmarks(lm)
            es = int(np.argmin(g.Ecc))
            sa = green_strain_from_landmarks(track_landmarks(im, res.landmarks))
            sf = green_strain_from_landmarks(track_landmarks(im, lm[0]))
            row = [
                float(np.hypot(*(ca - ct))),
                a_en - t_en,
                a_ep - t_ep,
                dt,
                sa.Ecc[es] - g.Ecc[es],
                sf.Ecc[es] - g.Ecc[es],
                sa.Err[es] - g.Err[es],
                sf.Err[es] - g.Err[es],
            ]
            rows.append(row)
            print(f"{s.subject_id} slice {k}: " + " ".join(f"{c}={v:+.3f}" for c, v in zip(cols, row)), flush=True)
    r = np.array(rows)
    print(f"\n{len(r)} slices localised, {fails} failed (padding {a.pad or 'none'})")
    for c, m, sd in zip(cols, r.mean(0), r.std(0, ddof=1)):
        print(f"  {c:10s} mean {m:+.3f}  sd {sd:.3f}")


if __name__ == "__main__":
    main()
