"""Phantom cohort speed (subjects/s) and phenotype agreement, printed as numbers.

Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/phantom.py            # smoke + demo geometry
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/phantom.py --quick    # fewer subjects

Sections
--------
1. per-subject time in this process (generate in memory, write to disk) at the smoke geometry
   (128 x 128, 10 slices, 20 cine frames) and the demo geometry (50 cine frames);
2. a small cohort through :func:`cmrkit.phantom.generate_cohort` with 1 and 2 worker processes
   (wall clock including process start-up), subjects/s;
3. agreement of label-measured volumes with the model targets over N subjects at the demo geometry
   (labels only, ED and ES), and how often the drawn peak E_cc target was realised exactly.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmrkit.phantom import Geometry, build_scene, generate_cohort, generate_subject, sample_subject_params, write_subject  # noqa: E402
from cmrkit.phantom.anatomy import MYO_DENSITY  # noqa: E402
from cmrkit.phantom.render import render_labels  # noqa: E402

SMOKE = Geometry(cine_frames=20)
DEMO = Geometry(cine_frames=50)


def per_subject(geometry: Geometry, n: int, pathology_fraction: float = 0.15) -> dict[str, float]:
    gen, wr = [], []
    with tempfile.TemporaryDirectory() as d:
        for i in range(n):
            p = sample_subject_params(i, seed=0, pathology_fraction=pathology_fraction)
            t0 = time.perf_counter()
            s = generate_subject(p, geometry=geometry)
            t1 = time.perf_counter()
            write_subject(s, Path(d) / s.subject_id)
            t2 = time.perf_counter()
            gen.append(t1 - t0)
            wr.append(t2 - t1)
        size = sum(f.stat().st_size for f in Path(d).rglob("*") if f.is_file()) / n / 1e6
    return {"generate_s": float(np.mean(gen)), "write_s": float(np.mean(wr)), "MB_per_subject": size}


def cohort_rate(geometry: Geometry, n: int, workers: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        generate_cohort(d, n, seed=0, geometry=geometry, workers=workers, progress=False)
        return n / (time.perf_counter() - t0)


def agreement(n: int) -> None:
    g = DEMO
    vox = g.pixel_mm**2 * g.slice_spacing_mm / 1000.0
    rel = {k: [] for k in ("lvedv_ml", "lvesv_ml", "lvm_g", "rvedv_ml", "rvesv_ml")}
    ecc_hit, ecc_dev = 0, []
    for i in range(n):
        p = sample_subject_params(i, seed=0, pathology_fraction=0.15)
        scene, real, _ = build_scene(p, g)
        lab = render_labels(scene, np.array([0.0, scene.heart.cycle.t_es_ms]))
        meas = {
            "lvedv_ml": (lab[..., 0] == 1).sum() * vox, "lvesv_ml": (lab[..., 1] == 1).sum() * vox,
            "lvm_g": (lab[..., 0] == 2).sum() * vox * MYO_DENSITY,
            "rvedv_ml": (lab[..., 0] == 3).sum() * vox, "rvesv_ml": (lab[..., 1] == 3).sum() * vox,
        }
        for k in rel:
            rel[k].append(100.0 * (meas[k] - real[k]) / real[k])
        if p.pathology is None:
            d = real["peak_ecc"] - p.targets["peak_ecc"]
            ecc_dev.append(d)
            ecc_hit += abs(d) < 1e-3
    print(f"\n[3] label-measured vs target volumes, {n} subjects at 128x128x10 (1.8 mm, 10 mm), percent error")
    for k, v in rel.items():
        v = np.asarray(v)
        print(f"    {k:9s} mean {v.mean():+6.2f} %  sd {v.std():5.2f} %  max |err| {np.abs(v).max():5.2f} %")
    e = np.asarray(ecc_dev)
    print(f"    peak Ecc: drawn target realised (|diff| < 0.001) in {ecc_hit}/{len(e)} healthy subjects; "
          f"mean |realised - drawn| {np.abs(e).mean():.4f}, max {np.abs(e).max():.4f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    n = 3 if args.quick else 6
    print(f"cpus: {os.cpu_count()}  OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    for name, g in (("smoke (128x128x10, 20 frames)", SMOKE), ("demo (128x128x10, 50 frames)", DEMO)):
        r = per_subject(g, n)
        tot = r["generate_s"] + r["write_s"]
        print(f"[1] {name}: generate {r['generate_s']:.2f} s + write {r['write_s']:.2f} s per subject "
              f"= {1 / tot:.2f} subjects/s in one process; {r['MB_per_subject']:.1f} MB per subject")
    m = 6 if args.quick else 10
    for name, g in (("smoke", SMOKE), ("demo", DEMO)):
        for w in (1, 2):
            print(f"[2] generate_cohort {name} geometry, {m} subjects, {w} worker(s): {cohort_rate(g, m, w):.2f} subjects/s")
    agreement(20 if args.quick else 60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
