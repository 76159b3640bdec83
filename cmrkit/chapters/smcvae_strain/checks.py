"""Chapter 4 checks: Tables 4.3 and 4.4 (ablations of the latent dimension and of the number of conv layers) and the
segmentation check (§4.3.7, Figs 4.6-4.7, the same segmenter on real M&Ms volumes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...config import Config
from ...report import Report, TableRow
from ...runs import mark_complete, run_dir
from .data import CHAPTER, PairData
from .synthesis import image_metrics, predict, train_smcvae


# --------------------------------------------------------------------------------------------- ablation
def ablation(cfg: Config, rep: Report, data: PairData, *, progress: bool = False) -> dict[str, pd.DataFrame]:
    """Tables 4.3 (latent dimension) and 4.4 (conv layers): cine->tagging quality on the test split."""
    c = cfg.ch4
    idx = data.index("test")
    out = {}
    for table, key, values in (
        ("table_4_3", "latent_dim", c.ablation_latent_dims),
        ("table_4_4", "conv_layers", c.ablation_conv_layers),
    ):
        rows = []
        for v in values:
            kw = {key: int(v)}
            res = train_smcvae(
                cfg, data, epochs=int(c.ablation_epochs), name=f"ablation-{key}-{v}", progress=progress, **kw
            )
            pred = predict(res.model, data, idx, ("cine",), "tagging")
            m = image_metrics(pred, data.tagging[idx])
            for metric in ("PSNR", "SSIM", "RMSE"):
                vals = np.asarray(m[metric])
                vals = vals[np.isfinite(vals)]
                rows.append(
                    TableRow(
                        str(v),
                        metric,
                        float(vals.mean()),
                        float(vals.std(ddof=1)) if vals.size > 1 else None,
                        n=int(vals.size),
                        units="dB" if metric == "PSNR" else "",
                    )
                )
        other = "conv_layers" if key == "latent_dim" else "latent_dim"
        out[table] = rep.save_table(
            table,
            rows,
            notes=[
                f"cine->tagging on the test split; each row trained for {int(c.ablation_epochs)} epochs "
                f"({other} = {getattr(c, other)}).",
            ],
        )
    return out


# --------------------------------------------------------------------------------------------- segmentation
def segmentation_check(
    cfg: Config,
    rep: Report,
    data: PairData,
    recon_cine: np.ndarray,
    *,
    mnms_dir: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train the kit's segmenter on training cine, compare segmentations of original and reconstructed
    cine on the test split (Dice, HD95 in mm), and score it on real M&Ms volumes when present.

    The segmenter's sizes come from the profile's ``segmenter:`` section; the M&Ms folder is
    ``mnms_dir`` or else the run's ``realdata.mnms`` (none configured or absent: no M&Ms rows).
    """
    from ...figures import segmentation_overlay, show
    from ...metrics.segmentation import segmentation_scores
    from ...models.segmenter import Segmenter, SegmenterConfig
    from ...segment import evaluate_on_mnms, summarise_mnms

    seg = Segmenter(SegmenterConfig.from_dict(cfg.segmenter), seed=cfg.seed)
    tr, va, te = data.index("train"), data.index("val"), data.index("test")

    def frames(idx):
        ok = data.labelled[idx]
        return data.cine[idx][ok], data.labels[idx][ok]

    x_tr, y_tr = frames(tr)
    run = run_dir(cfg, CHAPTER, "segmenter", {"seg": seg.config.to_dict(), "n": len(x_tr)})
    seg.fit(
        x_tr,
        y_tr,
        validation=frames(va) if len(va) else None,
        seed=cfg.seed,
        device=cfg.device,
        checkpoint_dir=run,
        progress=progress,
        pixel_mm=data.px_mm,
    )
    mark_complete(run)
    n, f = len(te), data.cine.shape[1]
    orig = data.cine[te].reshape(n * f, *data.cine.shape[2:])
    recon = recon_cine.reshape(n * f, *recon_cine.shape[2:])
    p_orig, p_rec = seg.predict(orig, device=cfg.device), seg.predict(recon, device=cfg.device)
    gt = data.labels[te].reshape(n * f, *data.labels.shape[2:])
    ok = data.labelled[te].reshape(-1)
    sp = (data.px_mm, data.px_mm)
    rows = []
    for name, a, b, sel in (
        ("reconstructed_vs_original", p_rec, p_orig, np.ones(n * f, bool)),
        ("original_vs_ground_truth", p_orig, gt, ok),
    ):
        if not sel.any():
            continue
        sc = segmentation_scores(a[sel], b[sel], spacing=sp)
        per_item = sc.replace([np.inf, -np.inf], np.nan).groupby("item")[["dice", "hd_mm", "hd95_mm"]].mean()
        missed = int(np.isinf(sc["hd_mm"]).sum())
        for metric, col, units in (("Dice", "dice", ""), ("HD", "hd_mm", "mm"), ("HD95", "hd95_mm", "mm")):
            v = per_item[col].dropna()
            rows.append(
                TableRow(
                    name,
                    metric,
                    float(v.mean()),
                    float(v.std(ddof=1)) if len(v) > 1 else None,
                    n=int(len(v)),
                    units=units,
                    note=f"{missed} structure(s) found in only one of the two maps (excluded from HD)"
                    if missed and col != "dice"
                    else "",
                    thesis_key=(metric,) if name == "reconstructed_vs_original" else ("-",),
                )
            )
    mn = evaluate_on_mnms(seg, mnms_dir if mnms_dir is not None else cfg.realdata.mnms, device=cfg.device)
    if len(mn):
        s = summarise_mnms(mn)
        for r in s.itertuples(index=False):
            rows.append(
                TableRow(
                    f"mnms_real/{r.structure}",
                    "Dice",
                    float(r.dice_mean),
                    None if pd.isna(r.dice_sd) else float(r.dice_sd),
                    n=int(r.n),
                    note="real M&Ms volumes (phantom-to-real gap)",
                    thesis_key=("-",),
                )
            )
    table = rep.save_table(
        "ch4_segmentation",
        rows,
        notes=[
            "Dice, Hausdorff distance (HD) and its 95th percentile (HD95) in mm, averaged over LV, Myo and RV per 2D "
            "frame of the test split. The thesis segmented with the UK Biobank network of Bai et al.; the kit trains "
            "its "
            "own MONAI UNet on phantom cine.",
        ],
    )
    i = int(te[0]) if len(te) else 0
    j = 0
    fr = int(np.argmax(data.labelled[i])) if data.labelled[i].any() else 0
    fig = segmentation_overlay(
        [data.cine[i, fr], data.cine[i, fr], data.cine[i, fr]],
        [data.labels[i, fr], p_orig[j * f + fr], np.zeros_like(p_orig[0])],
        ["ground truth", "segmenter", "image"],
        title="Segmentation of original cine",
    )
    rep.save_figure(fig, "fig_4_6", caption="Original test cine with ground-truth and predicted labels")
    show(fig)
    fig = segmentation_overlay(
        [data.cine[i, fr], recon_cine[j, fr], recon_cine[j, fr]],
        [p_orig[j * f + fr], p_rec[j * f + fr], np.zeros_like(p_orig[0])],
        ["original + its seg.", "reconstructed + its seg.", "reconstructed"],
        title="Segmentation of reconstructed cine",
    )
    rep.save_figure(fig, "fig_4_7", caption="Reconstructed test cine and its segmentation vs the original's")
    show(fig)
    return {"segmenter": seg, "table": table, "mnms": mn}
