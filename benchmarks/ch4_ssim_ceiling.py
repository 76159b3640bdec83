"""What SSIM can cine->tagging synthesis reach on the phantom? The noise ceiling of Table 4.1's measure.

Table 4.1 scores generated tagging against the *noisy* original. A perfect synthesis would produce the
noise-free tagging, which still differs from the original by its Rician noise; this script measures that
ceiling through the chapter's own preprocessing (``load_pairs``: ROI, resampling, intensity scaling):

1. it writes a copy of the profile's phantom cohort whose tagging has no noise -- same seed, parameters and
   textures: the renderer still draws the noise (so every later random draw is the same) but returns the
   image without it;
2. it loads the test split of both cohorts with :func:`cmrkit.chapters.smcvae_strain.load_pairs`, puts each
   clean slice on its noisy slice's intensity scale (least squares), and prints the SSIM (and PSNR) of the
   clean tagging against the original by region, also after in-plane Gaussian blurs, so a model's SSIM can be
   read as "as sharp as the truth blurred by so many pixels".

::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/ch4_ssim_ceiling.py --profile cpu
    .venv/bin/python benchmarks/ch4_ssim_ceiling.py --profile cpu --data-dir data/phantom/cpu --out /tmp/clean_cpu
"""

from __future__ import annotations

import argparse
from pathlib import Path
from unittest import mock

import numpy as np


def write_clean_cohort(cfg, out: Path) -> Path:
    """The cohort of ``cfg`` with noise-free tagging in ``out`` (one process, so the renderer can be wrapped)."""
    import cmrkit.phantom.render as render
    import cmrkit.phantom.subject as subject
    from cmrkit.phantom import Geometry
    from cmrkit.phantom.cohort import generate_cohort

    in_tagging = {"on": False}
    noisy = render.add_rician_noise
    tagging = render.render_tagging

    def add_noise(img, sigma, rng):
        out_img = noisy(img, sigma, rng)  # draw it either way: the random stream stays the cohort's
        return img if in_tagging["on"] else out_img

    def render_tagging(scene, geometry, rng):
        in_tagging["on"] = True
        try:
            return tagging(scene, geometry, rng)
        finally:
            in_tagging["on"] = False

    ph = cfg.phantom
    with (
        mock.patch.object(render, "add_rician_noise", add_noise),
        mock.patch.object(render, "render_tagging", render_tagging),
        mock.patch.object(subject, "render_tagging", render_tagging),
    ):
        generate_cohort(
            out,
            int(ph.n_subjects),
            seed=int(cfg.seed),
            geometry=Geometry.from_mapping(ph),
            pathology_fraction=float(ph.pathology_fraction),
            workers=1,
            progress=False,
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--data-dir", default=None, help="the noisy cohort (default: the profile's, built if missing)")
    ap.add_argument("--out", default=None, help="where the noise-free copy goes (default /tmp/cmrkit_clean_<profile>)")
    ap.add_argument("--blur", default="0.5,0.75,1.0,1.5", help="in-plane Gaussian sigmas (pixels) of the blurred rows")
    a = ap.parse_args()
    from scipy import ndimage

    from cmrkit.chapters.smcvae_strain import image_metrics, load_pairs
    from cmrkit.config import load
    from cmrkit.phantom import ensure_cohort

    cfg = load(a.profile, data_dir=a.data_dir)
    ensure_cohort(cfg)
    out = Path(a.out or f"/tmp/cmrkit_clean_{a.profile}")
    if not (out / "cohort.json").is_file():
        write_clean_cohort(cfg, out)
    noisy, clean = load_pairs(cfg), load_pairs(load(a.profile, data_dir=out))
    idx = noisy.index("test")
    if list(noisy.subject[idx]) != list(clean.subject[idx]):
        raise SystemExit(f"{out}: not a copy of {cfg.data_dir} (other test subjects)")
    x, y = noisy.tagging[idx].astype(float), clean.tagging[idx].astype(float)
    scale = (x * y).sum((1, 2, 3)) / np.maximum((y * y).sum((1, 2, 3)), 1e-12)
    y = np.clip(y * scale[:, None, None, None], 0.0, 1.0)
    regions = noisy.region[idx]
    print(f"{len(idx)} test slices {x.shape[1:]}; intensity scale noisy/clean {scale.mean():.3f} ({scale.std():.3f})")
    rows = [("noise-free tagging", y)]
    rows += [
        (f"noise-free, blurred {s:g} px", np.clip(ndimage.gaussian_filter(y, (0, 0, s, s)), 0, 1))
        for s in (float(v) for v in a.blur.split(","))
    ]
    for name, pred in rows:
        m = image_metrics(pred, x)
        by = " ".join(f"{r} {m['SSIM'][regions == r].mean():.3f}" for r in ("basal", "mid", "apical"))
        print(f"  {name:28s} SSIM {m['SSIM'].mean():.3f} ({by}) | PSNR {m['PSNR'].mean():.1f} dB", flush=True)


if __name__ == "__main__":
    main()
