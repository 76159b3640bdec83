"""Tag trackers of cmrkit.tagging: accuracy on the phantom, on realistic and stress sets, and slices/s on CPU.

Trackers (``cmrkit.tagging.trackers``): ``learned`` (the profile's networks, trained once and cached in
``runs/``), ``harp`` (harmonic phase + wall model), ``harp-classic``. Every tracker starts from the true
frame-0 landmarks. Sets (``--sets``):

``test``
    the chapter-4 test split (``ch4.split``, seeded by subject) of the profile's phantom cohort, every
    tagging slice as the cohort stores it (1.4 mm pixels, 6 mm tags); ``--ch4`` tracks the same slices
    resampled onto the chapter's ROI grid instead (what ``track_and_strain`` sees).
``realistic``
    phantom subjects of cohort seed 11 (never used for training: the tracker trains on seed 1000)
    under acquisitions drawn from ``TRAIN_RANGES`` (``cmrkit.tagging.acquisition``): tag fading to and
    beyond the real UK Biobank ES/ED contrast, SNR 8-30, 256^2 zero-padded frames, missing frames ...
``stress``
    seed 12 under ``STRESS_RANGES``: stronger fading, SNR 5-10, tag spacing 5-8 mm and pixels 1.15-1.8 mm
    outside the training ranges, stronger shading and blur -- never seen in training.

Printed per set and tracker: mean landmark error (px and mm; frames 1..T-1, missing frames excluded;
mean over slices), the same over systole (frames 1..ES), ES E_cc and E_rr bias (tracked - true landmark
strain) with their SD, the ES/ED tag-contrast ratio of the set (``tag_contrast_ratio``; real UK Biobank
slice: 0.12), and the tracking speed (slices/s, one process, ``OMP_NUM_THREADS`` threads).

``--refine-iter 0,2`` evaluates the learned tracker without and with its Lagrangian refiner (applied
twice); the shipped profiles train no refiner, so give ``--set tagging.refiner_steps=3000`` with it.

Run (CPU; the first run of a profile trains its learned tracker)::

    OMP_NUM_THREADS=2 python benchmarks/tracking.py --profile cpu --n-test 0 --n 8      # realistic + stress
    OMP_NUM_THREADS=2 python benchmarks/tracking.py --profile cpu --sets test --n-test 32
    OMP_NUM_THREADS=2 python benchmarks/tracking.py --profile cpu --trackers learned --n 4 --n-test 8 \
        --set tagging.refiner_steps=3000 --refine-iter 0,2
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from cmrkit.strain import green_strain_from_landmarks
from cmrkit.tagging import landmark_error
from cmrkit.tagging.acquisition import (
    STRESS_RANGES,
    TRAIN_RANGES,
    TaggedSlice,
    phantom_tagged_slices,
    tag_contrast_ratio,
)
from cmrkit.tagging.trackers import TRACKERS, get_tracker


def _test_split_slices(cfg: Any, n: int, ch4: bool) -> list[TaggedSlice]:
    """The chapter-4 test split (``ch4.split``, by subject, seeded by ``cfg.seed``) of the profile's phantom
    cohort as :class:`TaggedSlice` records: each test subject is generated in memory exactly as the cohort
    generates it (same seed, parameters and geometry), so the cohort need not be on disk; with ``ch4``
    the chapter's ROI grid of an on-disk cohort instead."""
    from cmrkit.chapters.smcvae_strain import load_pairs, split_by_subject
    from cmrkit.phantom import Geometry, generate_subject, sample_cohort_params
    from cmrkit.tagging.acquisition import Acquisition

    if ch4:
        from cmrkit.phantom import ensure_cohort

        ensure_cohort(cfg)
        data = load_pairs(cfg)
        idx = data.index("test")[: 3 * n if n else None]
        out = []
        for i in idx:
            lm = data.landmarks[i]
            ecc = np.asarray(green_strain_from_landmarks(lm).Ecc)
            out.append(
                TaggedSlice(
                    data.tagging[i],
                    lm,
                    data.px_mm,
                    6.0 / data.px_mm,
                    int(np.nanargmin(ecc)),
                    str(data.subject[i]),
                    str(data.region[i]),
                    Acquisition(pixel_mm=data.px_mm),
                )
            )
        return out
    ph = cfg.phantom
    params = sample_cohort_params(
        int(ph.n_subjects), seed=int(cfg.seed), pathology_fraction=float(ph.pathology_fraction)
    )
    split = split_by_subject([p.subject_id for p in params], cfg.ch4.split, cfg.seed)
    test = [p for p in params if split[p.subject_id] == "test"][: n or None]
    geo = Geometry.from_mapping(ph)
    out = []
    for p in test:
        subj = generate_subject(p, geometry=geo)
        lms = np.asarray(subj.ground_truth["landmarks_px"], float)
        px = float(geo.tag_pixel_mm)
        for k in range(subj.tagging.shape[0]):
            im = np.transpose(subj.tagging[k], (2, 1, 0)).astype(np.float32)  # (T, rows = y, cols = x)
            ecc = np.asarray(green_strain_from_landmarks(lms[k]).Ecc)
            out.append(
                TaggedSlice(
                    im,
                    lms[k],
                    px,
                    geo.tag_spacing_mm / px,
                    int(np.nanargmin(ecc)),
                    p.subject_id,
                    ("basal", "mid", "apical")[k],
                    Acquisition(pixel_mm=px),
                )
            )
    return out


def _generated(ranges: Any, seed: int, n: int) -> list[TaggedSlice]:
    return [ts for i in range(n) for ts in phantom_tagged_slices(i, seed=seed, acquisition=ranges)]


def _evaluate(tracker: Any, slices: Iterable[TaggedSlice]) -> tuple[np.ndarray, float]:
    rows, t_total, n = [], 0.0, 0
    for ts in slices:
        t0 = time.perf_counter()
        try:
            tr = tracker.track(ts.images, ts.landmarks[0])
        except ValueError as exc:
            print(f"    {ts.subject} {ts.region}: FAILED ({exc})")
            continue
        t_total += time.perf_counter() - t0
        n += 1
        ok = np.isfinite(ts.landmarks[:, 0, 0]) & np.isfinite(tr[:, 0, 0])
        e = landmark_error(tr[ok], ts.landmarks[ok])
        es = ts.es_frame
        g, s = green_strain_from_landmarks(ts.landmarks), green_strain_from_landmarks(tr)
        rows.append(
            [e[1:].mean(), e[1:].mean() * ts.px_mm, e[1 : es + 1].mean(), s.Ecc[es] - g.Ecc[es], s.Err[es] - g.Err[es]]
        )
    return np.asarray(rows, float), (n / t_total if t_total > 0 else float("nan"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu", help="profile of the learned tracker and of the test cohort")
    ap.add_argument("--trackers", default=",".join(TRACKERS), help="comma-separated tracker names")
    ap.add_argument("--sets", default="test,realistic,stress", help="comma-separated: test, realistic, stress")
    ap.add_argument("--n", type=int, default=8, help="subjects (3 slices each) of the realistic and stress sets")
    ap.add_argument("--n-test", type=int, default=0, help="test-split subjects (0 = all)")
    ap.add_argument("--ch4", action="store_true", help="test split on the chapter-4 ROI grid instead")
    ap.add_argument(
        "--refine-iter",
        default="",
        help="comma-separated refiner passes of the learned tracker, one row each (needs a trained refiner)",
    )
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="profile override (repeatable)")
    a = ap.parse_args()
    from cmrkit.config import load, parse_overrides

    cfg = load(a.profile, overrides=parse_overrides(a.set))
    trackers = []
    for t in a.trackers.split(","):
        trk = get_tracker(t, cfg, log=print)
        if t != "learned" or not a.refine_iter:
            trackers.append(trk)
            continue
        if getattr(trk, "refiner", None) is None:
            raise SystemExit("--refine-iter: this profile's learned tracker has no refiner (tagging.refiner_steps: 0)")
        for r in (int(v) for v in a.refine_iter.split(",")):
            trackers.append(dataclasses.replace(trk, refine_iter=r, name=f"learned+refiner x{r}" if r else "learned"))
    sets = {}
    for name in a.sets.split(","):
        t0 = time.perf_counter()
        if name == "test":
            sets[name] = _test_split_slices(cfg, a.n_test, a.ch4)
        elif name == "realistic":
            sets[name] = _generated(TRAIN_RANGES, 11, a.n)
        elif name == "stress":
            sets[name] = _generated(STRESS_RANGES, 12, a.n)
        else:
            raise SystemExit(f"unknown set {name!r}")
        ratios = []
        for ts in sets[name]:
            try:
                ratios.append(tag_contrast_ratio(ts))
            except ValueError:
                pass
        shape = sets[name][0].images.shape
        print(
            f"== {name}: {len(sets[name])} slices {shape}, built in {time.perf_counter() - t0:.0f} s; "
            f"ES/ED tag contrast {np.median(ratios):.3f} (IQR {np.percentile(ratios, 25):.3f}-"
            f"{np.percentile(ratios, 75):.3f}; real UK Biobank slice 0.12)",
            flush=True,
        )
        for trk in trackers:
            r, speed = _evaluate(trk, sets[name])
            if not len(r):
                print(f"  {trk.name:13s} no slice tracked")
                continue
            print(
                f"  {trk.name:13s} landmark error {r[:, 0].mean():.3f} px = {r[:, 1].mean():.3f} mm "
                f"(worst slice {r[:, 0].max():.2f} px; systole {r[:, 2].mean():.3f} px) | "
                f"ES E_cc bias {r[:, 3].mean():+.4f} (sd {r[:, 3].std(ddof=1) if len(r) > 1 else 0:.4f}) | "
                f"ES E_rr bias {r[:, 4].mean():+.4f} (sd {r[:, 4].std(ddof=1) if len(r) > 1 else 0:.4f}) | "
                f"{speed:.2f} slices/s",
                flush=True,
            )


if __name__ == "__main__":
    main()
