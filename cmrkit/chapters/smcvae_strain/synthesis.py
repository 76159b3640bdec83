"""Chapter 4 synthesis: the smcVAE (the thesis model and the kit's geometry-aware variant), trained and cached in
``runs/``, its outputs in the four Table 4.1 scenarios, their image metrics and Table 4.1."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ...config import Config
from ...report import Report, TableRow
from ...runs import mark_complete, run_dir
from .data import CHAPTER, REGIONS, PairData

#: name of the geometry-aware model's rows and tracked source (tagging decoder given the header's tag phase)
GEOMETRY = "geometry_aware"
#: Table 4.1 scenarios: (name, source channels given to the model, output channel)
SCENARIOS = (
    ("reconstruction_tagging", ("cine", "tagging"), "tagging"),
    ("reconstruction_cine", ("cine", "tagging"), "cine"),
    ("only_cine_to_tagging", ("cine",), "tagging"),
    ("only_tagging_to_cine", ("tagging",), "cine"),
)


# --------------------------------------------------------------------------------------------- model
def smcvae_config(
    cfg: Config, *, latent_dim: int | None = None, conv_layers: int | None = None, geometry: bool = False
) -> Any:
    """The :class:`cmrkit.models.smcvae.SMCVAEConfig` of the profile's ``ch4`` section (frames,
    image size, conv layers L, latent dimension D, base width, variant, initial log alpha);
    ``latent_dim`` / ``conv_layers`` replace D / L (the ablations). ``geometry=True`` gives the kit's
    geometry-aware variant: the tagging decoder is a :class:`cmrkit.models.smcvae.PhaseWarpDecoder` given
    the tag phase from the header, and its displacement also explains the cine's motion
    (``motion_channel="cine"``); with ``ch4.geometry_anatomy: cine`` that decoder also reads the cine frames
    for the anatomy and the tag depth (``anatomy_channel``)."""
    from ...models.smcvae import SMCVAEConfig

    c = cfg.ch4
    return SMCVAEConfig(
        in_frames=int(c.frames),
        image_size=int(c.image_size),
        conv_layers=int(conv_layers or c.conv_layers),
        latent_dim=int(latent_dim or c.latent_dim),
        base_width=int(c.base_width),
        variant=str(c.variant),
        log_alpha_init=float(c.log_alpha_init),
        phase_channel="tagging" if geometry else "",
        motion_channel="cine" if geometry else "",
        anatomy_channel=str(c.geometry_anatomy) if geometry else "",
    )


def train_smcvae(
    cfg: Config,
    data: PairData,
    *,
    geometry: bool = False,
    latent_dim: int | None = None,
    conv_layers: int | None = None,
    epochs: int | None = None,
    name: str | None = None,
    progress: bool = False,
) -> Any:
    """Train the smcVAE of the profile (optionally another D / L / epochs); returns ``FitResult``.

    ``geometry=False`` is the thesis model (cine and tagging channels, plain decoders).
    ``geometry=True`` is the kit's geometry-aware variant: the tagging decoder is also given each slice's
    tag phase maps predicted from the header (``data.tag_phase``; :class:`cmrkit.models.smcvae.PhaseWarpDecoder`).
    Validation-loss model selection on the ``val`` subjects; checkpoints under ``runs/`` so that an
    interrupted run resumes and a finished one is not trained again.
    """
    from ...models.smcvae import PHASE_KEY, SMCVAE, PairedSliceDataset, smcvae_loss
    from ...train import fit

    c = cfg.ch4
    if geometry and data.tag_phase is None:
        raise ValueError(
            "the geometry-aware smcVAE needs the tag phase of every slice, but the data set gave none "
            f"({data.meta.get('tag_grid', {}).get('error', 'no tagging affines')})"
        )
    mcfg = smcvae_config(cfg, latent_dim=latent_dim, conv_layers=conv_layers, geometry=geometry)
    model = SMCVAE(mcfg, seed=cfg.seed)
    name = name or ("smcvae-geometry" if geometry else "smcvae")
    tr, va = data.index("train"), data.index("val")

    def ds(idx: np.ndarray) -> Any:
        extra = {PHASE_KEY: data.tag_phase[idx]} if geometry else None
        return PairedSliceDataset({"cine": data.cine[idx], "tagging": data.tagging[idx]}, extra=extra)

    n_epochs = int(epochs or c.epochs)
    run = run_dir(
        cfg,
        CHAPTER,
        name,
        {
            "model": mcfg.to_dict(),
            "epochs": n_epochs,
            "bs": int(c.batch_size),
            "lr": float(c.lr),
            "wd": float(c.weight_decay),
            "n": len(data),
            "data": data.meta.get("fingerprint", ""),
        },
    )
    res = fit(
        model,
        ds(tr),
        ds(va) if len(va) else None,
        loss_fn=smcvae_loss,
        epochs=n_epochs,
        batch_size=int(c.batch_size),
        lr=float(c.lr),
        weight_decay=float(c.weight_decay),
        device=cfg.device,
        seed=cfg.seed,
        checkpoint_dir=run,
        resume=True,
        progress=progress,
    )
    mark_complete(run, best_epoch=int(res.best_epoch))  # finished: find_run / list_runs see it
    return res


def active_threshold(cfg: Config) -> float | None:
    """Dropout-rate threshold that selects the active latent dimensions (sparse variant only).

    Synthesis uses the full posterior mean by default (the decoders learn to ignore dimensions with a
    high dropout rate); pass this as ``threshold`` to restrict the latent to the active dimensions.
    """
    return float(cfg.ch4.dropout_threshold) if cfg.ch4.variant == "sparse" else None


def predict(
    model: Any,
    data: PairData,
    idx: np.ndarray,
    sources: Sequence[str],
    target: str,
    batch_size: int = 16,
    threshold: float | None = None,
) -> np.ndarray:
    """Model output for ``target`` from the given source channels, in [0, 1], (n, F, H, W); the
    latent means are restricted to the active dimensions when ``threshold`` is given."""
    import torch

    from ...models.smcvae import PHASE_KEY, from_model_range, to_model_range

    dev = next(model.parameters()).device
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(idx), batch_size):
            b = idx[s : s + batch_size]
            x = {ch: to_model_range(torch.from_numpy(getattr(data, ch)[b])).to(dev) for ch in sources}
            if getattr(model, "phase_aware", False):  # acquisition geometry, not an image channel
                x[PHASE_KEY] = torch.from_numpy(data.tag_phase[b]).to(dev)
            if len(sources) == 1:
                y = model.synthesise(x, source=sources[0], target=target, threshold=threshold)
            else:
                y = model.reconstruct(x, threshold=threshold)[target]
            out.append(from_model_range(y.float()).clamp(0, 1).cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def synthesis_scenarios(
    model: Any, data: PairData, split: str = "test", *, threshold: float | None = None
) -> dict[str, np.ndarray]:
    """Outputs of the four Table 4.1 scenarios on one split, keyed by scenario name."""
    idx = data.index(split)
    return {name: predict(model, data, idx, src, tgt, threshold=threshold) for name, src, tgt in SCENARIOS}


def image_metrics(pred: np.ndarray, ref: np.ndarray) -> dict[str, np.ndarray]:
    """Per-slice SSIM/PSNR/RMSE/MAE over the 2D+t sequence on the [0, 1] scale (data_range 1)."""
    from ...metrics import image as im

    p, r = pred[:, None], ref[:, None]  # (n, 1, F, H, W): SSIM per 2D frame, averaged per item
    return {
        "SSIM": im.ssim(p, r, data_range=1.0),
        "PSNR": im.psnr(p, r, data_range=1.0),
        "RMSE": im.rmse(p, r),
        "MAE": im.mae(p, r),
    }


def _table_4_1_rows(
    data: PairData, idx: np.ndarray, outputs: Mapping[str, np.ndarray], prefix: str = ""
) -> list[TableRow]:
    rows = []
    for name, _, tgt in SCENARIOS:
        if name not in outputs:
            continue
        ref = getattr(data, tgt)[idx]
        m = image_metrics(outputs[name], ref)
        for region in REGIONS:
            sel = data.region[idx] == region
            for metric, vals in m.items():
                v = np.asarray(vals, dtype=float)[sel]
                if not np.isfinite(v).any():
                    continue
                units = "dB" if metric == "PSNR" else "[0,1] intensity" if metric in ("RMSE", "MAE") else ""
                thesis_key = ("-",) if prefix else None
                rows.append(TableRow.summary(f"{prefix}{name}/{region}", metric, v, units=units, thesis_key=thesis_key))
    return rows


def table_4_1(
    rep: Report,
    data: PairData,
    outputs: Mapping[str, np.ndarray],
    outputs_geometry: Mapping[str, np.ndarray] | None = None,
    split: str = "test",
) -> pd.DataFrame:
    """Table 4.1: the four scenarios x three regions x SSIM/PSNR/RMSE/MAE (mean ± sd over slices).

    ``outputs`` are the thesis model's (cine and tagging images only); ``outputs_geometry``, when given,
    the geometry-aware model's (rows ``geometry_aware/<scenario>/<region>``, no thesis counterpart).
    """
    idx = data.index(split)
    rows = _table_4_1_rows(data, idx, outputs)
    if outputs_geometry is not None:
        rows += _table_4_1_rows(data, idx, outputs_geometry, prefix=f"{GEOMETRY}/")
    notes = [
        f"{split} split, {len(idx)} slices; metrics over each 20-frame slice on the [0, 1] intensity scale "
        "(SSIM per 2D frame averaged over frames; data_range 1).",
        "Thesis MAE values (~160) are on an unstated scale (see anomaly); ours are on [0, 1].",
    ]
    if outputs_geometry is not None:
        notes.append(
            f"'{GEOMETRY}' rows: the kit's geometry-aware smcVAE, whose tagging decoder is also given the tag phase "
            "predicted from the tagging header (scanner-fixed SPAMM grid); the thesis model synthesises from the cine "
            "images alone. Both see only cine at synthesis; the phase is acquisition geometry, not image content."
        )
    return rep.save_table("table_4_1", rows, notes=notes)
