"""Chapter 4 data: paired cine/tagging slices on one pixel grid, their split by subject, the tag phase maps predicted
from the tagging headers (and how well they predict the tags), the phantom's ground truth, and the records the other
steps of :mod:`cmrkit.chapters.smcvae_strain` share (:class:`PairData`, :data:`REGIONS`)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from ...config import Config
from ...io.cohort import needs_reason
from ...registry import for_notebook
from ...report import Report, TableRow
from .. import NotApplicable, leave_out

NOTEBOOK = "01_smcvae_strain"
CHAPTER = "smcvae_strain"
#: what the artefacts need from the data set (the chapter contract): paired cine and tagging, and for
#: the comparison with the true strain (Fig 4.11, kit version) the phantom's ground truth
NEEDS: dict[str, tuple[str, ...]] = {
    **{a.id: ("cine", "tagging") for a in for_notebook(NOTEBOOK)},
    "fig_4_11": ("cine", "tagging", "ground_truth"),
}
REGIONS = ("basal", "mid", "apical")


# --------------------------------------------------------------------------------------------- data
@dataclass
class PairData:
    """Paired cine/tagging slices on one pixel grid.

    Attributes
    ----------
    cine, tagging : (N, F, H, W) float32 in [0, 1]
    labels : (N, F, H, W) uint8 cine labels at the tagging frames (zeros where unlabelled)
    labelled : (N, F) bool, which label frames are real
    landmarks : (N, F, 2, 168) float or None -- ground-truth landmarks in pixels of this grid
    true_strain : dict of arrays or None -- true ``Ecc`` (N, F), ``Err`` (N, F), ``Ecc_rings`` (N, F, 7)
        (Ferdian definitions on the true landmarks) and ``Ecc_exact``/``Err_exact`` (analytic)
    region, subject : (N,) str
    es_frame : (N,) int -- ES frame of the tagging sequence
    split : (N,) str -- ``train`` / ``val`` / ``test`` (by subject)
    px_mm : float -- pixel size of the grid
    tag_phase : (N, 2, H, W) float32 or None -- SPAMM tag phase (radians) of each slice on this grid,
        predicted from the tagging header with the scanner grid fitted on the training slices
        (:func:`cmrkit.tagging.scanner.estimate_scanner_tag_grid`); None when the data have no affines
    tag_residual_mm : (N, 2) or None -- per slice and tag direction, how far (mm) the header-predicted
        tag lines lie from the observed ones on the first tagging frame
    """

    cine: np.ndarray
    tagging: np.ndarray
    labels: np.ndarray
    labelled: np.ndarray
    landmarks: np.ndarray | None
    true_strain: dict[str, np.ndarray] | None
    region: np.ndarray
    subject: np.ndarray
    es_frame: np.ndarray
    split: np.ndarray
    px_mm: float
    meta: dict[str, Any] = field(default_factory=dict)
    tag_phase: np.ndarray | None = None
    tag_residual_mm: np.ndarray | None = None

    def index(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    def __len__(self) -> int:
        return len(self.cine)


def phase_frames(n_cine: int, n_tag: int) -> np.ndarray:
    """Cine frame nearest to each tagging frame when both sample one cycle from ED at equal steps."""
    return np.round(np.arange(n_tag) * n_cine / n_tag).astype(int) % n_cine


def split_by_subject(subjects: Sequence[str], fractions: Sequence[float], seed: int) -> dict[str, str]:
    """Assign each subject to train/val/test with the given fractions (seeded permutation).

    Every split gets at least one subject; fewer than three subjects is an error.
    """
    uniq = sorted(set(subjects))
    if len(fractions) != 3 or not np.isclose(sum(fractions), 1.0) or min(fractions) < 0:
        raise ValueError(f"ch4.split must be three fractions summing to 1, got {list(fractions)}")
    rng = np.random.default_rng([seed, 4])
    order = [uniq[i] for i in rng.permutation(len(uniq))]
    n = len(order)
    if n < 3:
        raise ValueError(f"need at least 3 subjects for a train/val/test split, got {n}")
    n_val = max(1, int(round(fractions[1] * n)))
    n_test = max(1, int(round(fractions[2] * n)))
    n_train = n - n_val - n_test
    if n_train < 1:
        raise ValueError(f"split {list(fractions)} leaves no training subject among {n}")
    names = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    return dict(zip(order, names))


def load_pairs(
    cfg: Config, *, max_subjects: int | None = None, progress: bool = False, rep: Report | None = None
) -> PairData:
    """Read the data set of ``cfg`` into paired slices (see the package docstring, step 1).

    Needs subjects with cine and tagging (phantom, UK Biobank layout). Tagging slices without a
    cine slice within half a slice spacing of their plane are dropped (reported in ``meta``). A data
    set without cine or without any tagging (M&Ms, ACDC, DICOM cine) raises
    :class:`cmrkit.chapters.NotApplicable` ("needs tagging; this data set has none") after recording
    every artefact of the chapter as left out in ``rep``.
    """
    from ...io import iter_subjects
    from ...preprocess import matching_cine_slice, prepare_subject, resample_inplane

    c = cfg.ch4
    size, spacing = int(c.image_size), float(c.roi_mm) / int(c.image_size)
    frames = int(c.frames)
    px_mm = spacing
    rows: dict[str, list] = {
        k: []
        for k in (
            "cine",
            "tagging",
            "labels",
            "labelled",
            "landmarks",
            "ecc",
            "err",
            "ecc_rings",
            "ecc_exact",
            "err_exact",
            "region",
            "subject",
            "es",
            "tag_f0",
            "tag_affine",
            "roi_affine",
        )
    }
    dropped: list[str] = []
    has_truth = True
    provides: set[str] = set()
    for i, subj in enumerate(iter_subjects(cfg.data_dir, cfg.dataset)):
        if max_subjects is not None and i >= max_subjects:
            break
        provides |= {f for f, ok in (("cine", subj.cine is not None), ("tagging", bool(subj.tagging))) if ok}
        if subj.cine is None or not subj.tagging:
            dropped.append(f"{subj.subject_id}: no cine or no tagging")
            continue
        truth = _ground_truth(subj)
        if truth is None:
            has_truth = False
        else:  # attach the true landmarks so preprocessing maps them onto the new grid
            subj = subj.copy_with(
                tagging=[replace(t, landmarks=truth["landmarks"][k]) for k, t in enumerate(subj.tagging)]
            )
        n_tag = min(t.image.shape[-1] for t in subj.tagging)
        # the acquired tagging headers fix the scanner's tag directions; the first frame checks the phase
        native = [(np.asarray(t.image[..., 0], np.float32), np.asarray(t.affine, float)) for t in subj.tagging]
        cf_all = truth["cine_frames"] if truth is not None else phase_frames(subj.cine.shape[3], n_tag)
        # only the cine slices and frames that pair with tagging are preprocessed (much less work)
        center_world = _lv_center_world(subj)
        subj = _subset(
            subj, [matching_cine_slice(subj.affine, subj.shape, t.affine) for t in subj.tagging], cf_all[:frames]
        )
        # resample, then centre the ROI on the LV (the tracked structure) when labels allow it
        subj = resample_inplane(subj, spacing=spacing)
        center = None if center_world is None else tuple((np.linalg.inv(subj.affine) @ center_world)[:2])
        prep = prepare_subject(subj, size=size, center=center)
        px_mm = float(np.linalg.norm(prep.affine[:3, 0]))
        for k, t in enumerate(prep.tagging):
            z = t.meta.get("cine_slice")
            dist = t.meta.get("cine_plane_distance_mm", 0.0)
            if z is None or dist > 0.5 * float(np.linalg.norm(prep.affine[:3, 2])):
                dropped.append(f"{subj.subject_id}/{t.name}: no cine slice in its plane ({dist:.1f} mm)")
                continue
            tag = np.moveaxis(t.image, 2, 0)[:frames]  # (F, X, Y)
            if tag.shape[0] < frames:
                dropped.append(f"{subj.subject_id}/{t.name}: {tag.shape[0]} tagging frames < {frames}")
                continue
            cine = np.moveaxis(prep.cine[:, :, z, :], 2, 0)  # the subset holds the paired frames in order
            if prep.cine_labels is not None:
                lab = np.moveaxis(prep.cine_labels[:, :, z, :], 2, 0)
                lab_ok = prep.labelled_frames if prep.labelled_frames is not None else np.ones(frames, bool)
            else:
                lab, lab_ok = np.zeros(cine.shape, np.uint8), np.zeros(frames, bool)
            # (F, X, Y) -> (F, H=Y, W=X): rows are y, columns x
            rows["cine"].append(np.swapaxes(cine, 1, 2))
            rows["tagging"].append(np.swapaxes(tag, 1, 2))
            rows["labels"].append(np.swapaxes(lab, 1, 2).astype(np.uint8))
            rows["labelled"].append(np.asarray(lab_ok, bool))
            rows["region"].append(t.name or REGIONS[k])
            rows["tag_f0"].append(native[k][0])
            rows["tag_affine"].append(native[k][1])
            rows["roi_affine"].append(np.asarray(t.affine, float))
            rows["subject"].append(subj.subject_id)
            es = t.es_frame
            if truth is not None:
                rows["landmarks"].append(np.asarray(t.landmarks[:frames], np.float64))
                rows["ecc"].append(truth["Ecc"][k][:frames])
                rows["err"].append(truth["Err"][k][:frames])
                rows["ecc_rings"].append(truth["Ecc_rings"][k][:frames])
                rows["ecc_exact"].append(truth["Ecc_exact"][k][:frames])
                rows["err_exact"].append(truth["Err_exact"][k][:frames])
                if es is None:
                    es = truth["es_tag"]
            rows["es"].append(-1 if es is None else int(es))
    if not rows["cine"]:
        lacks = [f for f in ("cine", "tagging") if f not in provides]
        if lacks:
            if rep is not None:
                leave_out(rep, NEEDS, provides)
            raise NotApplicable(NOTEBOOK, needs_reason(lacks), f"{cfg.data_dir}: {'; '.join(dropped[:3])}")
        raise ValueError(f"no cine/tagging pairs found in {cfg.data_dir} ({cfg.dataset}); dropped: {dropped[:5]}")
    split_of = split_by_subject(rows["subject"], c.split, cfg.seed)
    split = np.array([split_of[s] for s in rows["subject"]])
    truth_ok = has_truth and len(rows["landmarks"]) == len(rows["cine"])
    phase, residual, grid_meta = _tag_phase_maps(rows, split, size)
    cine_arr, tag_arr = np.stack(rows["cine"]).astype(np.float32), np.stack(rows["tagging"]).astype(np.float32)
    # identifies the data a model is trained on (part of the run key: a regenerated cohort retrains)
    fingerprint = hashlib.sha256(
        np.ascontiguousarray(cine_arr[:, 0]).tobytes() + np.ascontiguousarray(tag_arr[:, 0]).tobytes()
    ).hexdigest()[:16]
    return PairData(
        cine=cine_arr,
        tagging=tag_arr,
        labels=np.stack(rows["labels"]),
        labelled=np.stack(rows["labelled"]),
        landmarks=np.stack(rows["landmarks"]) if truth_ok else None,
        true_strain={
            "Ecc": np.stack(rows["ecc"]),
            "Err": np.stack(rows["err"]),
            "Ecc_rings": np.stack(rows["ecc_rings"]),
            "Ecc_exact": np.stack(rows["ecc_exact"]),
            "Err_exact": np.stack(rows["err_exact"]),
        }
        if truth_ok
        else None,
        region=np.array(rows["region"]),
        subject=np.array(rows["subject"]),
        es_frame=np.array(rows["es"]),
        split=split,
        px_mm=px_mm,
        meta={
            "dropped": dropped,
            "n_subjects": len(split_of),
            "roi_mm": float(c.roi_mm),
            "tag_grid": grid_meta,
            "fingerprint": fingerprint,
        },
        tag_phase=phase,
        tag_residual_mm=residual,
    )


def _tag_phase_maps(
    rows: Mapping[str, list], split: np.ndarray, size: int
) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, Any]]:
    """Fit the scanner-fixed tag grid on the training slices' first frames and predict every slice's
    tag phase on the model grid from its header (``(N, 2, H, W)``, rows = y), plus each slice's
    residual (mm) of the header prediction on its own first frame."""
    from ...tagging.scanner import estimate_scanner_tag_grid, tag_phase_map, tag_phase_residual

    train = np.flatnonzero(split == "train")
    try:
        fit = estimate_scanner_tag_grid([rows["tag_f0"][i] for i in train], [rows["tag_affine"][i] for i in train])
    except ValueError as exc:
        return None, None, {"error": str(exc)}
    grid = fit.grid
    maps, res = [], []
    for f0, taff, raff in zip(rows["tag_f0"], rows["tag_affine"], rows["roi_affine"]):
        ph = tag_phase_map(raff, (size, size), taff, grid)  # (2, X, Y) on the model grid
        ph = ph - 2 * np.pi * np.round(ph.mean(axis=(1, 2), keepdims=True) / (2 * np.pi))
        maps.append(np.swapaxes(ph, 1, 2).astype(np.float32))  # rows = y, columns = x
        try:
            res.append(np.abs(tag_phase_residual(f0, tag_phase_map(taff, f0.shape, taff, grid))) / grid.k)
        except ValueError:
            res.append(np.full(2, np.nan))
    meta = {**grid.to_dict(), "concentration_train": fit.concentration.tolist(), "n_train_slices": int(len(train))}
    return np.stack(maps), np.stack(res), meta


def _lv_center_world(subj: Any) -> np.ndarray | None:
    """World position (homogeneous, 4,) of the LV centre (blood pool + myocardium voxels at ED, all
    slices), or None without labels (the preprocessing heuristic then finds the heart)."""
    if subj.cine_labels is None:
        return None
    ed = subj.ed_frame if subj.ed_frame is not None else 0
    if subj.labelled_frames is not None and not subj.labelled_frames[ed]:
        return None
    xyz = np.argwhere(np.isin(subj.cine_labels[..., ed], (1, 2)))
    return None if not len(xyz) else subj.affine @ np.r_[xyz.mean(axis=0), 1.0]


def _subset(subj: Any, slices: Sequence[int], frames: np.ndarray) -> Any:
    """The subject restricted to the contiguous cine slice range covering ``slices`` and to
    ``frames`` (in that order); the affine moves with the first kept slice."""
    z0, z1 = int(min(slices)), int(max(slices)) + 1
    aff = np.array(subj.affine, dtype=float)
    aff[:3, 3] = aff[:3, :3] @ np.array([0.0, 0.0, z0]) + aff[:3, 3]
    fr = np.asarray(frames, dtype=int)
    return subj.copy_with(
        cine=np.ascontiguousarray(subj.cine[:, :, z0:z1][..., fr]),
        cine_labels=None if subj.cine_labels is None else np.ascontiguousarray(subj.cine_labels[:, :, z0:z1][..., fr]),
        labelled_frames=None if subj.labelled_frames is None else np.asarray(subj.labelled_frames)[fr],
        affine=aff,
        ed_frame=0 if fr[0] == (subj.ed_frame or 0) else None,
        es_frame=None,
    )


def _ground_truth(subj: Any) -> dict[str, Any] | None:
    """The phantom's per-slice truth, else None.

    ``landmarks`` are in tagging pixels; ``Ecc``/``Err``/``Ecc_rings`` apply Ferdian's definitions to
    the true landmarks (the same definitions as tracked strain, so differences are tracking error);
    ``Ecc_exact``/``Err_exact`` are the analytic strains of the motion (E_rr as the wall mean).
    """
    path = subj.sources.get("ground_truth") if subj.sources else None
    if path is None:
        return None
    from ...phantom import read_ground_truth

    gt = read_ground_truth(path)
    lm, ex = gt["strain"]["landmark"], gt["strain"]["exact"]
    tag_ms, cine_ms = np.asarray(gt["times"]["tag_ms"]), np.asarray(gt["times"]["cine_ms"])
    es_cine = int(gt["attrs"]["es_frame"])
    return {
        "landmarks": np.asarray(gt["landmarks"]["px"], np.float64),
        "Ecc": np.asarray(lm["ecc"]),
        "Err": np.asarray(lm["err"]),
        "Ecc_rings": np.asarray(lm["ecc_ring"]),
        "Ecc_exact": np.asarray(ex["ecc"]),
        "Err_exact": np.asarray(ex["err"]),
        "cine_frames": np.abs(cine_ms[None, :] - tag_ms[:, None]).argmin(axis=1),
        "es_tag": int(np.abs(tag_ms - cine_ms[es_cine]).argmin()),
    }


def tag_phase_table(rep: Report, data: PairData) -> pd.DataFrame:
    """How well the tagging header predicts where the tag lines are (kit table ``ch4_tag_phase``).

    The scanner-fixed grid (spacing, angle, constant offsets) is fitted on the training slices
    (:func:`cmrkit.tagging.scanner.estimate_scanner_tag_grid`); each slice's residual is the distance (mm)
    between the header-predicted and the observed tag lines on its first frame, by split and region.
    """
    g = data.meta.get("tag_grid", {})
    if data.tag_residual_mm is None:
        why = g.get("error", "the data set has no tagging affines")
        return rep.save_table(
            "ch4_tag_phase",
            [TableRow("fitted_grid", "training slices with a detectable grid", 0.0, n=0, note=why)],
            notes=[f"No tag phase from the headers: {why}. The geometry-aware model is not trained."],
        )
    rows = [
        TableRow("fitted_grid", "spacing (mm)", float(g["spacing_mm"]), units="mm", n=int(g["n_train_slices"])),
        TableRow("fitted_grid", "angle (deg)", float(g["angle_deg"]), units="deg", n=int(g["n_train_slices"])),
    ]
    for d in range(2):
        rows.append(
            TableRow(
                "fitted_grid",
                f"offset {d + 1} (deg)",
                float(np.degrees(g["offsets_rad"][d])),
                units="deg",
                n=int(g["n_train_slices"]),
            )
        )
        rows.append(
            TableRow(
                "fitted_grid",
                f"concentration {d + 1}",
                float(g["concentration_train"][d]),
                n=int(g["n_train_slices"]),
            )
        )
    for split in ("train", "test"):
        for region in (*REGIONS, "all"):
            sel = (data.split == split) & ((data.region == region) if region != "all" else True)
            r = data.tag_residual_mm[sel]
            r = r[np.isfinite(r).all(axis=1)]
            if len(r) == 0:
                continue
            rows.append(
                TableRow(
                    f"header_residual/{split}/{region}",
                    "mean (mm)",
                    float(r.mean()),
                    float(r.mean(axis=1).std(ddof=1)) if len(r) > 1 else None,
                    n=int(len(r)),
                    units="mm",
                )
            )
            rows.append(TableRow(f"header_residual/{split}/{region}", "max (mm)", float(r.max()), n=int(len(r))))
    return rep.save_table(
        "ch4_tag_phase",
        rows,
        notes=[
            "SPAMM tags are written by gradients, so the grid is fixed in scanner coordinates: the tag phase of a "
            "pixel is k e.p + c, p its world position (mm from the isocentre), e the protocol's tag direction in the "
            "image plane, c a constant of the system. Spacing, angle and c are fitted on the training slices' first "
            "tagging frames; 'header_residual' is, per slice, the mean over the two directions of the distance "
            "between the tag lines predicted from the header alone and those observed (first frame).",
            "'concentration' is the mean resultant length of the per-slice phase offsets: 1 = the same offset on "
            "every slice (the header predicts the tags), about 0 = a random grid (no header predicts it). For "
            f"uniformly random tag positions the mean residual would be a quarter period ({0.25 * g['spacing_mm']:.2f} "
            "mm).",
        ],
    )
