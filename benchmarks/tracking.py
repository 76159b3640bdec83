"""Tag-tracking speed (slices/s) and accuracy of cmrkit.tagging.

Speed: HARP tracking of 20-frame 128x128 grid-tagged sequences (the thesis' tagging format), for the
default ``method="model"`` and the plain ``method="classic"`` HARP, on CPU (the tracker is numpy;
there is no GPU path, so the number is the same on a GPU machine).

Accuracy: on :func:`cmrkit.tagging.synthetic_tagged_ring` sequences with exact ground truth, and,
with ``--phantom N``, on the first N subjects of the kit's phantom (all three tagging slices, starting
from the phantom's frame-0 landmarks): mean landmark error (px and mm), ES E_cc / E_rr bias of the
tracked landmarks against the phantom's landmark strain.

Run::

    OMP_NUM_THREADS=1 python benchmarks/tracking.py                 # speed + synthetic accuracy
    OMP_NUM_THREADS=1 python benchmarks/tracking.py --phantom 4     # + phantom accuracy
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cmrkit.strain import green_strain_from_landmarks
from cmrkit.tagging import landmark_error, synthetic_tagged_ring, track_landmarks


def _speed(n: int, method: str) -> float:
    seqs = [
        synthetic_tagged_ring(size=128, n_frames=20, r_endo=16, r_epi=24, tag_spacing_px=4.3, noise=0.05, rng=i)
        for i in range(n)
    ]
    track_landmarks(seqs[0].images, seqs[0].landmarks[0], method=method)  # warm-up
    t0 = time.perf_counter()
    for s in seqs:
        track_landmarks(s.images, s.landmarks[0], method=method)
    return n / (time.perf_counter() - t0)


def _report(rows: list[tuple], label: str, unit: str = "px") -> None:
    r = np.array([x[1:] for x in rows], float)
    print(
        f"  {label:8s} n={len(r):3d}  landmark error mean {r[:, 0].mean():.3f} {unit} "
        f"(worst slice mean {r[:, 0].max():.3f}, worst point-frame {r[:, 1].max():.2f} {unit}) "
        f"| ES E_cc bias {r[:, 2].mean():+.4f} (sd {r[:, 2].std():.4f}) "
        f"| ES E_rr bias {r[:, 3].mean():+.4f} (sd {r[:, 3].std():.4f}) "
        f"| mean |dE_cc| all frames {r[:, 4].mean():.4f}"
    )


def _evaluate(images: np.ndarray, truth: np.ndarray, method: str, px_mm: float = 1.0) -> tuple:
    tr = track_landmarks(images, truth[0], method=method)
    e = landmark_error(tr, truth)
    d_all = np.sqrt(((tr - truth) ** 2).sum(-2))
    g, s = green_strain_from_landmarks(truth), green_strain_from_landmarks(tr)
    es = int(np.argmin(g.Ecc))
    return (
        method,
        e.mean() * px_mm,
        d_all.max() * px_mm,
        s.Ecc[es] - g.Ecc[es],
        s.Err[es] - g.Err[es],
        np.abs(s.Ecc - g.Ecc).mean(),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=6, help="slices for the speed test")
    ap.add_argument("--synthetic", type=int, default=4, help="synthetic sequences per setting for accuracy")
    ap.add_argument("--phantom", type=int, default=0, help="phantom subjects for accuracy (0 = skip)")
    ap.add_argument("--seed", type=int, default=0, help="phantom cohort seed")
    args = ap.parse_args()

    print("== speed: 20-frame 128x128 sequences, CPU ==")
    for method in ("model", "classic"):
        print(f"  {method:8s} {_speed(args.n, method):7.2f} slices/s")

    print("== accuracy: synthetic ring (tag spacing / noise), errors in px ==")
    for spacing, noise in ((3.4, 0.05), (4.3, 0.05), (5.0, 0.1)):
        print(f" spacing {spacing} px, noise {noise}")
        for method in ("model", "classic"):
            rows = []
            for i in range(args.synthetic):
                syn = synthetic_tagged_ring(
                    size=96, r_endo=14, r_epi=21, tag_spacing_px=spacing, noise=noise, rng=100 + i
                )
                rows.append(_evaluate(syn.images, syn.landmarks, method))
            _report(rows, method)

    if args.phantom > 0:
        from cmrkit.phantom.subject import generate_subject, sample_subject_params

        print(
            f"== accuracy: phantom subjects 0..{args.phantom - 1} (seed {args.seed}), 3 tagging slices each, "
            "errors in mm =="
        )
        rows: dict[str, list] = {"model": [], "classic": []}
        for i in range(args.phantom):
            sub = generate_subject(sample_subject_params(i, seed=args.seed))
            px = float(sub.geometry.tag_pixel_mm)
            lm = sub.ground_truth["landmarks_px"].astype(float)
            for s in range(sub.tagging.shape[0]):
                images = np.transpose(sub.tagging[s], (2, 1, 0)).astype(float)  # (T, y=j, x=i)
                for method in rows:
                    try:
                        rows[method].append(_evaluate(images, lm[s], method, px))
                    except ValueError as exc:  # e.g. no tag peaks found
                        print(f"  subject {i} slice {s} {method}: failed: {exc}")
        for method, r in rows.items():
            if r:
                _report(r, method, "mm")


if __name__ == "__main__":
    main()
