"""Chapter-6 conditional 4D latent diffusion throughput and slider latency at a profile's sizes.

* autoencoder training: frames/s for forward + backward + Adam step of the frame-wise image + mask
  AutoencoderKL (L1 + CE + KL) at ``ch6.ae_batch_size``; one frame = ``(2, X, Y, Z)`` in;
* diffusion training: sequences/s for one noise-prediction step (cross-attention UNet + condition
  encoder, condition dropout) at ``ch6.diffusion_batch_size`` on cached sequence latents;
* sampling: sequences/s for a DDIM chain of ``ch6.ddim_steps`` steps plus frame-wise decoding of all
  ``ch6.frames`` frames, at ``--sample-batch`` sequences per chain, guidance 1 (conditional only) and 2
  (classifier-free guidance doubles the UNet batch);
* slider latency: one slider move -> new sequence drawn, i.e. :func:`cmrkit.condition_sliders.render`
  (one sequence, batch 1) plus drawing its matplotlib figure to PNG, and separately the 3-D heart
  (:func:`cmrkit.condition_sliders.heart_figure`, marching cubes at ED and ES).

Models are built from the profile exactly as the chapter builds them
(:func:`cmrkit.chapters.cond_ldm4d.autoencoder_config` / :func:`~cmrkit.chapters.cond_ldm4d.diffusion_config`).
With ``--from-runs`` the latest complete trained pair of ``runs/<profile>/phantom/cond_ldm4d`` is used
(the slider then draws a real heart, so the marching cubes do real work); otherwise untrained weights
(throughput does not depend on them). bf16 autocast on CUDA by default.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/cond_ldm4d.py --profile cpu --device cpu --from-runs
    OMP_NUM_THREADS=2 python benchmarks/cond_ldm4d.py --profile demo --device cpu --iters 1 --sample-batch 1
    python benchmarks/cond_ldm4d.py --profile demo --device cuda --iters 50            # one GPU
    python benchmarks/cond_ldm4d.py --profile paper --device cuda --iters 20 --sample-batch 64

Prints one JSON line with the settings and the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import time

import numpy as np
import pandas as pd
import torch

from cmrkit import config
from cmrkit.chapters.cond_ldm4d import autoencoder_config, diffusion_config
from cmrkit.condition_sliders import Generator, heart_figure, render
from cmrkit.models.autoencoder import AutoencoderLoss
from cmrkit.models.cond_diffusion import (
    ConditionalDiffusionLoss,
    ConditionalLatentDiffusion,
    SequenceAutoencoder,
    generate_sequences,
)
from cmrkit.models.conditioning import COVARIATE_NAMES, ConditionSpace
from cmrkit.models.diffusion import sample_seeds
from cmrkit.runs import list_runs
from cmrkit.train import load_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, iters: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(device)
    return time.perf_counter() - t0


def _cohort(n: int = 64) -> pd.DataFrame:
    """A covariate table spanning UK Biobank-like ranges (for untrained models' normalisation)."""
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "age": rng.uniform(45, 80, n),
            "sex": np.arange(n) % 2,
            "height_cm": rng.uniform(150, 195, n),
            "weight_kg": rng.uniform(50, 120, n),
            "smoking": np.arange(n) % 3,
            "alcohol": np.arange(n) % 3,
            "sbp": rng.uniform(100, 180, n),
            "dbp": rng.uniform(60, 100, n),
        },
        columns=list(COVARIATE_NAMES),
    )


def _trained(cfg) -> tuple[SequenceAutoencoder, ConditionalLatentDiffusion, str] | None:
    runs = list_runs(cfg, "cond_ldm4d", "diffusion")
    if not runs:
        return None
    ldm_folder = runs[0]["folder"]
    ae_name = runs[0]["key"]["payload"]["autoencoder"]
    ae = load_model(f"{ldm_folder}/../{ae_name}/model.pt").model
    ldm = load_model(f"{ldm_folder}/model.pt").model
    return ae, ldm, ldm_folder


def bench(
    profile: str,
    device: str,
    *,
    iters: int,
    warmup: int,
    sample_batch: int,
    amp: str,
    from_runs: bool,
    slider_moves: int,
) -> dict:
    cfg = config.load(profile, device=device)
    dev = torch.device(cfg.device)
    c = cfg.ch6
    shape = (*[int(v) for v in c.image_size], int(c.slices), int(c.frames))
    use_amp = amp == "bf16" or (amp == "auto" and dev.type == "cuda")
    ctx = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if use_amp else contextlib.nullcontext
    g = torch.Generator().manual_seed(0)
    out: dict = {
        "profile": profile,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "amp": "bf16" if use_amp else "fp32",
        "shape_xyzt": list(shape),
    }
    # ---- stage 1
    ae = SequenceAutoencoder(autoencoder_config(cfg, shape), shape[3], seed=0).to(dev)
    bs = int(c.ae_batch_size)
    batch = {
        "image": torch.rand(bs, *shape[:3], generator=g).to(dev),
        "labels": torch.randint(0, 4, (bs, *shape[:3]), generator=g).to(dev),
    }
    loss_fn, opt = AutoencoderLoss(float(c.kl_weight)), torch.optim.Adam(ae.frame.parameters(), lr=float(c.ae_lr))

    def ae_step() -> None:
        with ctx():
            loss, _ = loss_fn(ae.frame, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    ae.train()
    out["ae_train_frames_per_s"] = iters * bs / _timed(ae_step, iters, warmup, dev)
    # ---- stage 2
    cohort = _cohort()
    space = ConditionSpace.fit(cohort, [str(v) for v in c.conditions])
    ldm = ConditionalLatentDiffusion(diffusion_config(cfg, ae.latent_shape, space), seed=0).to(dev)
    dbs = int(c.diffusion_batch_size)
    feats = torch.from_numpy(space.encode(cohort.iloc[np.arange(dbs) % len(cohort)])).to(dev)
    dbatch = {
        "mu": torch.randn(dbs, *ae.latent_shape, generator=g).to(dev),
        "sigma": torch.full((dbs, *ae.latent_shape), 0.1).to(dev),
        "cond": feats,
    }
    dloss, dopt = ConditionalDiffusionLoss(), torch.optim.Adam(ldm.parameters(), lr=float(c.diffusion_lr))

    def ldm_step() -> None:
        with ctx():
            loss, _ = dloss(ldm, dbatch)
        dopt.zero_grad(set_to_none=True)
        loss.backward()
        dopt.step()

    ldm.train()
    out["diffusion_train_sequences_per_s"] = iters * dbs / _timed(ldm_step, iters, warmup, dev)
    # ---- sampling (trained weights when asked and present)
    ae.eval()
    ldm.eval()
    if from_runs:
        found = _trained(cfg)
        out["weights"] = found[2] if found else "untrained (no complete run found)"
        if found:
            ae, ldm = found[0].to(dev).eval(), found[1].to(dev).eval()
            space = ldm.space
    else:
        out["weights"] = "untrained"
    steps = int(c.ddim_steps)
    conds = pd.DataFrame([space.defaults()] * sample_batch)
    seeds = sample_seeds(0, sample_batch)
    for w in (1.0, 2.0):
        secs = _timed(
            lambda w=w: generate_sequences(
                ae,
                ldm,
                conds,
                seeds,
                guidance=w,
                ddim_steps=steps,
                batch_size=sample_batch,
                image_frames=[],
                device=dev,
            ),
            1,
            0,
            dev,
        )
        out[f"sampling_sequences_per_s_guidance_{w:g}"] = sample_batch / secs
    out["ddim_steps"] = steps
    out["sample_batch"] = sample_batch
    # ---- slider latency: one move = render (1 sequence) + drawing its figure
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gen = Generator(ae, ldm, (2.0, 2.0, 10.0), ddim_steps=steps, device=str(dev), true_model=True)
    base = space.defaults()
    lat, gen_s, heart = [], [], []
    lo, hi = (
        (space.stats["weight_kg"]["min"], space.stats["weight_kg"]["max"]) if "weight_kg" in space.names else (0, 0)
    )
    for k in range(slider_moves + 1):
        cond = dict(base)
        if "weight_kg" in cond:
            cond["weight_kg"] = round(lo + (hi - lo) * (k + 0.5) / (slider_moves + 1), 1)
        t0 = time.perf_counter()
        r = render(gen, cond, seed=0, guidance=1.0)
        buf = io.BytesIO()
        r.figure.savefig(buf, format="png", dpi=72)
        t1 = time.perf_counter()
        heart_figure(r.labels, gen.spacing, [0, r.es_frame], ["ED", "ES"]).to_json()
        t2 = time.perf_counter()
        plt.close(r.figure)
        if k:  # the first call warms up
            lat.append(t1 - t0)
            gen_s.append(r.seconds)
            heart.append(t2 - t1)
    out["slider_move_to_drawn_s_median"] = float(np.median(lat))
    out["slider_move_to_drawn_s_max"] = float(np.max(lat))
    out["slider_generation_s_median"] = float(np.median(gen_s))
    out["slider_heart_3d_s_median"] = float(np.median(heart))
    out["slider_moves"] = slider_moves
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", default="cpu")
    p.add_argument("--device", default="cpu")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--sample-batch", type=int, default=8)
    p.add_argument("--slider-moves", type=int, default=5)
    p.add_argument("--amp", choices=("auto", "bf16", "none"), default="auto")
    p.add_argument("--from-runs", action="store_true", help="sample with the latest trained pair in runs/")
    a = p.parse_args()
    res = bench(
        a.profile,
        a.device,
        iters=a.iters,
        warmup=a.warmup,
        sample_batch=a.sample_batch,
        amp=a.amp,
        from_runs=a.from_runs,
        slider_moves=a.slider_moves,
    )
    print(json.dumps(res))


if __name__ == "__main__":
    main()
