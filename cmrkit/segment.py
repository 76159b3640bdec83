"""The kit's segmenter applied to data: training slices from subject records, volumes of any
resolution, and the real-data check on M&Ms.

:mod:`cmrkit.models.segmenter` is the network and its training on 2D arrays (it knows sizes, not
files). This module connects it to the rest of the kit, in the direction the data flows
(io -> preprocess -> model -> metrics):

* :func:`slices_from_subjects` -- 2D training slices from :class:`cmrkit.io.Subject` records
  through :func:`cmrkit.preprocess.prepare_subject` (the kit's one preprocessing path);
* :func:`segment_volume_at_resolution` -- resample a volume to the training pixel size, crop around
  the heart, segment, map the labels back;
* :func:`evaluate_on_mnms` / :func:`summarise_mnms` -- Dice, HD, HD95 and ASSD (mm) per subject,
  phase and structure on M&Ms ED/ES volumes (Campello et al., IEEE TMI 2021), the phantom-to-real
  gap of a phantom-trained segmenter;
* ``python -m cmrkit.segment`` (:func:`cli_main`) -- train on a cohort with the profile's
  ``segmenter:`` sizes, save the artefact, print the held-out and M&Ms numbers.

The M&Ms folder comes from the run configuration (``realdata.mnms`` of the profile); an empty or
absent folder gives an empty result whose ``attrs["note"]`` says why.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .labels import LABELS
from .models.segmenter import Segmenter, SegmenterConfig, slices_from_volumes
from .utils import resolve_path

__all__ = [
    "slices_from_subjects",
    "segment_volume_at_resolution",
    "evaluate_on_mnms",
    "summarise_mnms",
    "cli_main",
]

ArrayLike = Any


def slices_from_subjects(
    subjects: Any,
    *,
    image_size: int,
    pixel_mm: float | None = None,
    empty_slices: str = "keep",
    return_index: bool = False,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2D training slices from :class:`cmrkit.io.subject.Subject` records (phantom or real).

    Each subject goes through the kit's one preprocessing path,
    :func:`cmrkit.preprocess.prepare_subject` (``spacing=pixel_mm`` resampling when given, an
    ``image_size`` crop around the heart, intensity normalisation; no tagging), then its labelled
    frames (``labelled_frames``: every frame for the phantom, ED/ES for M&Ms/ACDC) are cut into
    slices with :func:`slices_from_volumes`. Subjects without a cine or labels are skipped.
    ``index`` rows are (position in ``subjects``, z, t).
    """
    from .preprocess import prepare_subject

    vols, labs, keep = [], [], []
    for i, subj in enumerate(subjects):
        if subj.cine is None or subj.cine_labels is None or subj.labelled_frames is None:
            continue
        ps = prepare_subject(subj, size=image_size, spacing=pixel_mm, tagging=False)
        frames = np.flatnonzero(ps.labelled_frames)
        vols.append(ps.cine)
        labs.append({int(t): ps.cine_labels[..., t] for t in frames})
        keep.append(i)
    if not vols:
        raise ValueError("slices_from_subjects: no subject with both a cine and labels")
    out = slices_from_volumes(vols, labs, empty_slices=empty_slices, return_index=True)
    x, y, idx = out  # type: ignore[misc]
    idx[:, 0] = np.asarray(keep)[idx[:, 0]]
    return (x, y, idx) if return_index else (x, y)


def _uncrop(crop: np.ndarray, origin: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros((*shape, *crop.shape[2:]), crop.dtype)
    r0, c0 = origin
    size = crop.shape[0]
    rs, cs = max(r0, 0), max(c0, 0)
    re_, ce = min(r0 + size, shape[0]), min(c0 + size, shape[1])
    if re_ > rs and ce > cs:
        out[rs:re_, cs:ce] = crop[rs - r0 : re_ - r0, cs - c0 : ce - c0]
    return out


def segment_volume_at_resolution(
    segmenter: Segmenter,
    volume: ArrayLike,
    spacing: Sequence[float],
    centre: tuple[float, float],
    *,
    pixel_mm: float | None = None,
    **predict_kwargs: Any,
) -> np.ndarray:
    """Segment a short-axis volume (X, Y, Z) of any resolution around a known heart centre.

    The volume is resampled in-plane to ``pixel_mm`` (default ``segmenter.config.pixel_mm``) with
    :func:`cmrkit.preprocess.resample_inplane` (edge-aligned grid), an ``image_size`` square is cut
    around ``centre`` with :func:`cmrkit.preprocess.crop_roi` (``(x, y)`` = (axis 0, axis 1) in
    *input* voxels, e.g. from :func:`cmrkit.preprocess.heart_center`; zero padding outside the
    image), segmented with :meth:`Segmenter.predict_volume`, pasted back and resampled to the input
    grid (nearest). Returns uint8 labels of the input shape (0 outside the window).
    """
    from .preprocess import crop_roi, resample_inplane

    v = np.asarray(volume, np.float32)
    if v.ndim != 3:
        raise ValueError(f"volume must be (X, Y, Z), got shape {v.shape}")
    if len(spacing) < 2 or min(float(s) for s in spacing[:2]) <= 0:
        raise ValueError(f"spacing must give positive in-plane voxel sizes (mm), got {spacing!r}")
    pmm = pixel_mm if pixel_mm is not None else segmenter.config.pixel_mm
    if pmm is None or pmm <= 0:
        raise ValueError("pixel_mm is needed: segmenter.config.pixel_mm is unknown (fit with pixel_mm=... or pass it)")
    sp3 = [float(spacing[0]), float(spacing[1]), float(spacing[2]) if len(spacing) > 2 else 1.0]
    res = resample_inplane(v, np.diag([*sp3, 1.0]), spacing=float(pmm))
    shape_r = res.image.shape[:2]
    # pixel centres: o = (i + 0.5) * n_out / n_in - 0.5 (edge-aligned grid)
    c_r = tuple((c + 0.5) * n_r / n - 0.5 for c, n_r, n in zip(centre, shape_r, v.shape[:2]))
    cropped = crop_roi(res.image, segmenter.config.image_size, center=c_r)
    pred = segmenter.predict_volume(cropped.image, **predict_kwargs)
    full = _uncrop(pred, (int(cropped.box.x0), int(cropped.box.y0)), shape_r)
    back = resample_inplane(None, labels=full, size=v.shape[:2])
    return np.asarray(back.labels, dtype=np.uint8)


def evaluate_on_mnms(
    segmenter: Segmenter,
    mnms_dir: str | os.PathLike[str] | None,
    *,
    pixel_mm: float | None = None,
    centre: str = "motion",
    device: str | torch.device = "auto",
    largest_component: bool = True,
    return_predictions: bool = False,
) -> Any:
    """Segment M&Ms ED/ES short-axis volumes and score them against the expert labels.

    ``mnms_dir`` is the M&Ms folder (the run's ``cfg.realdata.mnms``); ``None`` or ``""`` means no
    real data is configured. Cases are read with :func:`cmrkit.io.mnms.iter_mnms_subjects` (flat
    ``<case>_sa_{ED,ES}[_gt]`` files, or the official 4-D release); labels 1 LV, 2 Myo, 3 RV (M&Ms
    uses the kit convention: label 1 lies inside the filled label-2 ring). Cases without an image are
    skipped (listed in ``attrs["skipped"]``). For each labelled ED/ES frame:

    1. heart centre (:func:`cmrkit.preprocess.heart_center`): ``centre="motion"`` (default; uses
       no labels: the temporal variation of the subject's cine, here ED and ES only; 3–7 mm from
       the label box centre on six M&Ms volumes), ``"label"`` (centre of the bounding box of the
       expert labels of that frame: uses the ground-truth location, so it measures segmentation
       alone, not localisation) or ``"fov"`` (image centre);
    2. :func:`segment_volume_at_resolution` at ``pixel_mm`` (default
       ``segmenter.config.pixel_mm``, the resolution the network was trained at);
    3. Dice, HD, HD95 and ASSD per label on the original grid, in 3D with the NIfTI voxel spacing
       (:func:`cmrkit.metrics.segmentation.segmentation_scores`).

    Returns
    -------
    pandas.DataFrame
        Columns ``subject, phase, label, structure, dice, hd_mm, hd95_mm, assd_mm, gt_voxels,
        pred_voxels, centre, pixel_mm``. A structure the segmenter missed entirely has Dice 0 and
        infinite distances (the metrics module's convention). No folder, an absent or an empty
        folder gives an empty frame whose ``attrs["note"]`` says why. With ``return_predictions=True`` also a dict
        ``{(subject, phase): (image, gt, pred)}`` on the original grid.
    """
    import pandas as pd

    cols = [
        "subject",
        "phase",
        "label",
        "structure",
        "dice",
        "hd_mm",
        "hd95_mm",
        "assd_mm",
        "gt_voxels",
        "pred_voxels",
        "centre",
        "pixel_mm",
    ]
    if centre not in ("motion", "label", "fov"):
        raise ValueError(f"centre must be 'motion', 'label' or 'fov', got {centre!r}")
    empty = pd.DataFrame(columns=cols)
    if mnms_dir is None or str(mnms_dir) == "":
        empty.attrs["note"] = "no M&Ms folder configured (realdata.mnms is empty); nothing evaluated"
        return (empty, {}) if return_predictions else empty
    d = resolve_path(mnms_dir)
    if not d.is_dir():
        empty.attrs["note"] = f"M&Ms folder {d} not found; nothing evaluated"
        return (empty, {}) if return_predictions else empty
    pmm = pixel_mm if pixel_mm is not None else segmenter.config.pixel_mm
    if pmm is None:
        raise ValueError(
            "evaluate_on_mnms needs pixel_mm: the segmenter's config.pixel_mm is unknown (fit it with pixel_mm=...)"
        )
    from .io.mnms import MNMS_FILE_PATTERN, iter_mnms_subjects
    from .metrics.segmentation import segmentation_scores
    from .preprocess import heart_center

    folders = [d, *(p for p in d.iterdir() if p.is_dir())]
    if not any(MNMS_FILE_PATTERN.match(f.name) for folder in folders for f in folder.iterdir()):
        empty.attrs["note"] = f"no M&Ms <case>_sa*.nii.gz files in {d}; nothing evaluated"
        return (empty, {}) if return_predictions else empty
    rows, preds, skipped = [], {}, []
    for subj in iter_mnms_subjects(d):  # one subject in memory at a time
        if subj.cine is None or subj.cine_labels is None:
            skipped.append(subj.subject_id)
            continue
        sid = subj.subject_id.split("_")[-1]
        spacing = subj.spacing
        if centre == "motion":
            c_motion = heart_center(image=subj.cine, spacing=spacing[:2])
        for phase, t in (("ED", subj.ed_frame), ("ES", subj.es_frame)):
            if t is None or not subj.labelled_frames[t]:
                continue
            img, gt = subj.frame(t), subj.label(t).astype(np.uint8)
            if centre == "motion":
                c = c_motion
            elif centre == "label":
                c = heart_center(labels=gt) if gt.any() else (img.shape[0] / 2 - 0.5, img.shape[1] / 2 - 0.5)
            else:
                c = (img.shape[0] / 2 - 0.5, img.shape[1] / 2 - 0.5)
            pred = segment_volume_at_resolution(
                segmenter,
                img,
                spacing,
                (float(c[0]), float(c[1])),
                pixel_mm=pmm,
                device=device,
                largest_component=largest_component,
            )
            sc = segmentation_scores(pred, gt, spacing=spacing, labels=tuple(LABELS), names=list(LABELS.values()))
            for r in sc.itertuples(index=False):
                rows.append(
                    {
                        "subject": sid,
                        "phase": phase,
                        "label": int(r.label),
                        "structure": r.structure,
                        "dice": r.dice,
                        "hd_mm": r.hd_mm,
                        "hd95_mm": r.hd95_mm,
                        "assd_mm": r.assd_mm,
                        "gt_voxels": int(r.ref_voxels),
                        "pred_voxels": int(r.pred_voxels),
                        "centre": centre,
                        "pixel_mm": float(pmm),
                    }
                )
            if return_predictions:
                preds[(sid, phase)] = (img, gt, pred)
    df = pd.DataFrame(rows, columns=cols)
    n_vol = len(df) // len(LABELS)
    df.attrs["note"] = (
        f"{n_vol} M&Ms volumes from {d}; crop centre: {centre}"
        + (
            " (uses the ground-truth location)"
            if centre == "label"
            else " (no labels used)"
            if centre == "motion"
            else ""
        )
        + (f"; skipped (no image): {skipped}" if skipped else "")
    )
    df.attrs["skipped"] = skipped
    return (df, preds) if return_predictions else df


def summarise_mnms(df: Any) -> Any:
    """Mean ± SD of Dice and HD95 per structure (and centre mode) of an :func:`evaluate_on_mnms`
    frame; HD95 is summarised over finite values only, with the count of missed structures."""
    import pandas as pd

    if df.empty:
        return pd.DataFrame(
            columns=["centre", "structure", "n", "dice_mean", "dice_sd", "hd95_mm_mean", "hd95_mm_sd", "missed"]
        )
    g = df.assign(finite_hd=df["hd95_mm"].where(np.isfinite(df["hd95_mm"]))).groupby(
        ["centre", "structure"], sort=False
    )
    return pd.DataFrame(
        {
            "n": g["dice"].size(),
            "dice_mean": g["dice"].mean(),
            "dice_sd": g["dice"].std(ddof=1),
            "hd95_mm_mean": g["finite_hd"].mean(),
            "hd95_mm_sd": g["finite_hd"].std(ddof=1),
            "missed": g["pred_voxels"].apply(lambda v: int((v == 0).sum())),
        }
    ).reset_index()


def cli_main(argv: Sequence[str] | None = None) -> int:
    """``cmrkit segment`` (``python -m cmrkit.segment``): train the segmenter on a cohort, save it,
    and report held-out Dice and the phantom-to-real gap on M&Ms.

    Subjects are split by subject (``--val-fraction`` held out, from ``--seed``); sizes come from
    the profile's ``segmenter:`` section, the pixel size from ``--pixel-mm`` (default
    ``phantom.pixel_mm``, i.e. the phantom's native grid), the M&Ms folder from ``--mnms`` (default
    the profile's ``realdata.mnms``; ``''`` skips it).
    """
    import argparse
    import sys

    from .config import DATASETS, ConfigError, load

    ap = argparse.ArgumentParser(prog="cmrkit segment", description=cli_main.__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True, help="cohort folder (e.g. a phantom cohort with manifest.csv)")
    ap.add_argument("--dataset", default="phantom", choices=DATASETS)
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=None, help="override segmenter.epochs")
    ap.add_argument("--pixel-mm", type=float, default=None)
    ap.add_argument("--val-fraction", type=float, default=0.2)
    ap.add_argument("--no-augment", action="store_true")
    ap.add_argument("--out", default=None, help="artefact path (.pt); default: not saved")
    ap.add_argument("--mnms", default=None, help="M&Ms folder (default: the profile's realdata.mnms; '' to skip)")
    ap.add_argument("--csv", default=None, help="write the per-volume M&Ms table here")
    ap.add_argument("--progress", action="store_true")
    a = ap.parse_args(None if argv is None else list(argv))
    try:
        cfg = load(a.profile, seed=a.seed)
        over: dict[str, Any] = {}
        if a.epochs is not None:
            over["epochs"] = a.epochs
        if a.no_augment:
            over["augment"] = False
        scfg = SegmenterConfig.from_dict({**cfg.segmenter, **over})
        mnms_dir = a.mnms if a.mnms is not None else cfg.realdata.mnms
        pixel_mm = a.pixel_mm if a.pixel_mm is not None else float(cfg.phantom.pixel_mm)
        if not 0 <= a.val_fraction < 1:
            raise ValueError(f"--val-fraction must be in [0, 1), got {a.val_fraction}")
        from .io import iter_subjects

        subjects = [s for s in iter_subjects(resolve_path(a.data_dir), a.dataset)]
    except (ConfigError, ValueError, OSError) as exc:
        print(f"cmrkit segment: error: {exc}", file=sys.stderr)
        return 2
    x, y, idx = slices_from_subjects(subjects, image_size=scfg.image_size, pixel_mm=pixel_mm, return_index=True)
    ids = np.unique(idx[:, 0])
    n_val = int(round(a.val_fraction * len(ids))) if len(ids) > 1 else 0
    val_ids = np.random.default_rng(a.seed).permutation(ids)[:n_val]
    is_val = np.isin(idx[:, 0], val_ids)
    print(
        f"{len(ids)} subjects ({n_val} held out), {int((~is_val).sum())} training / {int(is_val.sum())} validation "
        f"slices at {pixel_mm:g} mm, {scfg.image_size} px; channels {scfg.channels}, {scfg.epochs} epochs"
    )
    seg = Segmenter(scfg, seed=a.seed)
    res = seg.fit(
        x[~is_val],
        y[~is_val],
        validation=(x[is_val], y[is_val]) if n_val else None,
        val_fraction=0.0,
        seed=a.seed,
        device=a.device,
        pixel_mm=pixel_mm,
        progress=a.progress,
    )
    print(f"trained in {res.seconds:.1f} s; best epoch {res.best_epoch} (val loss {res.best_val:.4f})")
    if n_val:
        from .metrics.segmentation import dice

        pred = seg.predict(x[is_val], device=a.device)
        d = dice(pred, y[is_val], labels=tuple(LABELS))
        print(
            "held-out "
            + a.dataset
            + " Dice (all slices pooled): "
            + ", ".join(f"{n} {v:.3f}" for n, v in zip(LABELS.values(), np.atleast_1d(d)))
        )
    if a.out:
        print(f"saved {seg.save(a.out)}")
    if mnms_dir:
        import pandas as pd

        frames = [evaluate_on_mnms(seg, mnms_dir, centre=c, device=a.device) for c in ("motion", "label")]
        df = pd.concat(frames, ignore_index=True)
        if df.empty:
            print(frames[0].attrs.get("note", "no M&Ms data"))
        else:
            print(frames[0].attrs["note"])
            print(summarise_mnms(df).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
            if a.csv:
                from .utils import atomic_write

                with atomic_write(resolve_path(a.csv), "w") as fh:
                    df.to_csv(fh, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main())
