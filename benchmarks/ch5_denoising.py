"""Chapter-5 diffusion: from which noise level does it still find a valid heart?

Takes the test volumes' latents (the autoencoder's means, scaled as the diffusion sees them), noises
them to timestep ``t`` (``z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps``), runs the trained model's DDIM
chain from there to 0 and decodes: the share of anatomically valid masks (:mod:`cmrkit.metrics.anatomy`)
per starting timestep. Near 0 the chain only polishes the test heart; at ``T`` it is an unconditional
sample. Where validity falls tells which stage of the chain fails: the coarse layout (high noise) or the
detail (low noise). The autoencoder and the diffusion model are trained (or reloaded from ``runs/``) exactly
as notebook 02 does, with ``--set`` overrides.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/ch5_denoising.py --profile cpu --set ch5.ae_slice_width=16 \\
        --set 'ch5.ae_channels=[32,64]' --set ch5.kl_weight=1e-6 --set ch5.ae_epochs=150

Prints one JSON line.
"""

from __future__ import annotations

import json

import torch
from profile_args import load_profile, profile_parser

from cmrkit.chapters import ldm3d
from cmrkit.metrics.anatomy import check_volumes, validity_summary
from cmrkit.models.autoencoder import split_output
from cmrkit.models.diffusion import encode_latents


def main() -> None:
    ap = profile_parser(__doc__)
    ap.add_argument("--starts", default="100,300,500,700,800,900,999", help="starting timesteps, comma-separated")
    a = ap.parse_args()
    cfg, overrides = load_profile(a)
    data = ldm3d.load_volumes(cfg)
    ae = ldm3d.train_autoencoder(cfg, data)
    ldm = ldm3d.train_diffusion(cfg, data, ae).model.eval()
    model = ae.model.eval()
    te = data.index("test")
    mu, _ = encode_latents(model, data.images[te], data.labels[te])
    z0 = torch.as_tensor(mu) * ldm.scale_factor.float()
    sch = ldm.ddim_scheduler(int(cfg.ch5.ddim_steps))
    ab = sch.alphas_cumprod
    g = torch.Generator().manual_seed(int(cfg.seed))
    valid = {}
    for start in (int(s) for s in a.starts.split(",")):
        steps = [int(t) for t in sch.timesteps if int(t) <= start]
        x = ab[steps[0]].sqrt() * z0 + (1 - ab[steps[0]]).sqrt() * torch.randn(z0.shape, generator=g)
        with torch.no_grad():
            for t in steps:
                x, _ = sch.step(ldm.unet(x, torch.full((len(x),), t, dtype=torch.long)), t, x)
            _, labels = split_output(model.decode(x / ldm.scale_factor.float()).float())
        summ = validity_summary(check_volumes(labels.numpy(), apex_last=True))
        valid[str(steps[0])] = round(100 * summ["valid"], 1)
    print(
        json.dumps(
            {"profile": a.profile, "overrides": overrides, "test_volumes": int(len(te)), "valid_percent_from_t": valid}
        )
    )


if __name__ == "__main__":
    main()
