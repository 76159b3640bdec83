"""Phantom cohort speed (subjects/s) and phenotype agreement, printed as numbers.

Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/phantom.py            # smoke + demo geometry
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/phantom.py --quick    # fewer subjects
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/phantom.py --realism  # section 4 only (~30 s)

Sections
--------
1. per-subject time in this process (generate in memory, write to disk) at the smoke geometry
   (128 x 128, 10 slices, 20 cine frames) and the demo geometry (50 cine frames);
2. a small cohort through :func:`cmrkit.phantom.generate_cohort` with 1 and 2 worker processes
   (wall clock including process start-up), subjects/s;
3. agreement of label-measured volumes with the model targets over N subjects at the demo geometry
   (labels only, ED and ES), and how often the drawn peak E_cc target was realised exactly;
4. realism (``--realism`` runs only this): myocardial tag modulation per frame of the mid tagging
   slice (noise-free), as the spectral peak of :func:`cmrkit.metrics.realism.tag_period_and_contrast` and as
   the depth fitted to the known pattern (:func:`cmrkit.phantom.render.myocardial_tag_depth`), both
   relative to the first frame, next to T1 relaxation alone, for ``slice_samples`` 1 and 3; and the
   ED blood/myocardium ratio and myocardial SNR of the cine (:mod:`cmrkit.metrics.realism`).
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

from cmrkit.metrics.realism import expected_tag_contrast, snr, tag_period_and_contrast, tissue_contrast  # noqa: E402
from cmrkit.phantom import (
    Geometry,
    build_scene,
    generate_cohort,
    generate_subject,
    sample_subject_params,
    write_subject,
)  # noqa: E402
from cmrkit.phantom.anatomy import MYO_DENSITY  # noqa: E402
from cmrkit.phantom.contrast import TISSUES  # noqa: E402
from cmrkit.phantom.render import myocardial_tag_depth, render_cine, render_labels, render_tagging  # noqa: E402
from cmrkit.phantom.subject import _rngs  # noqa: E402

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
            "lvedv_ml": (lab[..., 0] == 1).sum() * vox,
            "lvesv_ml": (lab[..., 1] == 1).sum() * vox,
            "lvm_g": (lab[..., 0] == 2).sum() * vox * MYO_DENSITY,
            "rvedv_ml": (lab[..., 0] == 3).sum() * vox,
            "rvesv_ml": (lab[..., 1] == 3).sum() * vox,
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
    print(
        f"    peak Ecc: drawn target realised (|diff| < 0.001) in {ecc_hit}/{len(e)} healthy subjects; "
        f"mean |realised - drawn| {np.abs(e).mean():.4f}, max {np.abs(e).max():.4f}"
    )


def _myo_masks(scene) -> np.ndarray:
    """Centre-plane myocardium of the mid tagging slice per tagging frame, (T, n, n) indexed [t, i, j]."""
    heart, grid = scene.heart, scene.tag_grid
    x, y = grid.xy()
    x, y = x.astype(np.float32).ravel(), y.astype(np.float32).ravel()
    r, th = np.hypot(x, y), np.arctan2(y, x)
    ang = heart.angular_terms(th)
    z = np.asarray([[scene.tag_levels[1]]], np.float32)
    return np.stack(
        [
            (heart.labels(r, heart.layers(r, th, ang, z, heart.state(float(t)), grid.pixel)) == 2).reshape(
                grid.n, grid.n
            )
            for t in scene.tag_times_ms
        ]
    )


def realism(n: int) -> None:
    print(
        f"\n[4a] myocardial tag modulation of the mid tagging slice relative to frame 0, {n} healthy subjects "
        f"(noise-free); T1 {TISSUES['myocardium'].t1:.0f} ms"
    )
    for ns in (1, 3):
        geo = Geometry(noise=False, slice_samples=ns, cine_frames=2)
        spec, fit, relax, spec_exp = [], [], [], []
        for i in range(n):
            scene, _, _ = build_scene(sample_subject_params(i, seed=0, pathology_fraction=0.0), geo)
            img = render_tagging(scene, geo, np.random.default_rng(0))
            m = _myo_masks(scene)
            c = tag_period_and_contrast(
                img[1].transpose(2, 1, 0), m.transpose(0, 2, 1), px_mm=geo.tag_pixel_mm
            ).contrast
            d = myocardial_tag_depth(scene, img)
            t = scene.tag_times_ms
            es = int(np.argmin(np.abs(t - scene.heart.cycle.t_es_ms)))
            k = np.arange(es + 1)
            spec.append(c[k] / c[0])
            fit.append(d[k] / d[0])
            relax.append(np.exp(-(t[k] - t[0]) / TISSUES["myocardium"].t1))
            e = expected_tag_contrast(t[k], TISSUES["myocardium"].t1, order=2)
            spec_exp.append(e / e[0])
        L = min(len(v) for v in spec)
        mean = lambda v: np.mean([a[:L] for a in v], axis=0)
        fmt = lambda v: " ".join(f"{x:.2f}" for x in v)
        print(f"    slice_samples={ns}, frames 0..{L - 1} (to ES):")
        print(f"      spectral peak  {fmt(mean(spec))}")
        print(f"        relax. only  {fmt(mean(spec_exp))}   (realism.expected_tag_contrast)")
        print(f"      fitted depth   {fmt(mean(fit))}")
        print(f"        T1 exp(-t/T1) {fmt(mean(relax))}")
        print(
            f"      at ES: spectral/relaxation-only {np.mean([s[-1] / r[-1] for s, r in zip(spec, spec_exp)]):.2f}, "
            f"fitted/relaxation {np.mean([f[-1] / r[-1] for f, r in zip(fit, relax)]):.2f}"
        )
    geo = Geometry(cine_frames=2)
    ratio, sn = [], []
    for i in range(2 * n):
        p = sample_subject_params(i, seed=0)
        scene, _, _ = build_scene(p, geo)
        img, lab = render_cine(scene, geo, _rngs(0, i)[1])
        ratio.append(tissue_contrast(img[..., 0], lab[..., 0]).summary()["ratio"])
        sn.append(snr(img[..., 0], lab[..., 0], method="residual").summary()["snr"])
    r, s = np.asarray(ratio), np.asarray(sn)
    print(
        f"[4b] cine ED, {2 * n} subjects: blood/myocardium ratio {r.mean():.2f} +- {r.std():.2f} "
        f"[{r.min():.2f}, {r.max():.2f}]; myocardial SNR (residual) {s.mean():.1f} +- {s.std():.1f} "
        f"[{s.min():.1f}, {s.max():.1f}]  (M&Ms: ratio 4.7 +- 1.4, 3.3-6.1; SNR ~19, 15-29)"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--realism", action="store_true", help="only section 4 (tag fading, cine contrast and SNR)")
    args = ap.parse_args(argv)
    if args.realism:
        realism(4 if args.quick else 8)
        return 0
    n = 3 if args.quick else 6
    print(f"cpus: {os.cpu_count()}  OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    for name, g in (("smoke (128x128x10, 20 frames)", SMOKE), ("demo (128x128x10, 50 frames)", DEMO)):
        r = per_subject(g, n)
        tot = r["generate_s"] + r["write_s"]
        print(
            f"[1] {name}: generate {r['generate_s']:.2f} s + write {r['write_s']:.2f} s per subject "
            f"= {1 / tot:.2f} subjects/s in one process; {r['MB_per_subject']:.1f} MB per subject"
        )
    m = 6 if args.quick else 10
    for name, g in (("smoke", SMOKE), ("demo", DEMO)):
        for w in (1, 2):
            print(
                f"[2] generate_cohort {name} geometry, {m} subjects, {w} worker(s): {cohort_rate(g, m, w):.2f} "
                "subjects/s"
            )
    agreement(20 if args.quick else 60)
    realism(4 if args.quick else 8)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
