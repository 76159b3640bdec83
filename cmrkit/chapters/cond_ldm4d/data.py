"""Chapter 6 data: cine sequences with a mask on every frame and eight covariates, their split, and the
records the other steps of :mod:`cmrkit.chapters.cond_ldm4d` share (:class:`SequenceData`, :class:`Trained`)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...runs import is_complete, mark_complete, run_dir

CHAPTER = "cond_ldm4d"
#: label -> name (kit convention)
STRUCTURES = {1: "LV", 2: "Myo", 3: "RV"}
#: Tables 6.1-6.4 baseline rows: (run name in chapter "baselines", row label)
BASELINES = (("cgan", "CGAN"), ("cvae", "CVAE"), ("cheart", "CHeart"))
#: phenotypes of Tables 6.2-6.4 and Figs 6.4-6.5: (key, units)
PHENOTYPES = (("LVEDV", "mL"), ("LVESV", "mL"), ("RVEDV", "mL"), ("RVESV", "mL"), ("LVM", "g"))


# =============================================================================================== data
@dataclass
class SequenceData:
    """Cine sequences with masks on one grid, their covariates and split.

    Attributes
    ----------
    images : (N, X, Y, Z, T) float32 in [0, 1]
    labels : (N, X, Y, Z, T) uint8
    subject : (N,) str
    split : (N,) str -- ``train`` / ``val`` / ``test``
    spacing : (N, 3) float -- voxel size (mm); in-plane equal for all
    covariates : DataFrame -- one row per sequence, the columns of :data:`cmrkit.models.conditioning.COVARIATE_NAMES`
    meta : dict -- ``dropped`` (subject: reason), ``flipped``, ``n_subjects``, ``pixel_mm``, ``source_frames``
    """

    images: np.ndarray
    labels: np.ndarray
    subject: np.ndarray
    split: np.ndarray
    spacing: np.ndarray
    covariates: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    def index(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(int(v) for v in self.images.shape[1:])  # type: ignore[return-value]

    @property
    def frames(self) -> int:
        return int(self.images.shape[-1])

    @property
    def reference_spacing(self) -> tuple[float, float, float]:
        """Voxel size given to generated sequences: the in-plane pixel and the median slice spacing."""
        return tuple(float(v) for v in np.median(self.spacing, axis=0))  # type: ignore[return-value]

    @property
    def reference_affine(self) -> np.ndarray:
        return np.diag([*self.reference_spacing, 1.0])


@dataclass
class Trained:
    """A trained (or reloaded) model of the chapter with its training history and run folder."""

    model: Any
    history: list[dict[str, float]]
    best_epoch: int
    folder: Path


def split_subjects(subjects: Sequence[str], fractions: Sequence[float], seed: int) -> dict[str, str]:
    """Assign subjects to train/val/test with the given fractions (seeded permutation, stream 6).

    Every split with a positive share gets at least one subject; fewer than three subjects is an error.
    """
    uniq = sorted(set(subjects))
    if len(fractions) != 3 or not np.isclose(sum(fractions), 1.0) or min(fractions) < 0:
        raise ValueError(f"ch6.split must be three fractions (train, val, test) summing to 1, got {list(fractions)}")
    n = len(uniq)
    if n < 3:
        raise ValueError(f"need at least 3 subjects with segmented sequences and covariates, got {n}")
    order = [uniq[i] for i in np.random.default_rng([int(seed), 6]).permutation(n)]
    n_val = max(1, int(round(fractions[1] * n))) if fractions[1] > 0 else 0
    n_test = max(1, int(round(fractions[2] * n)))
    n_train = n - n_val - n_test
    if n_train < 2:
        raise ValueError(f"ch6.split {list(fractions)} leaves fewer than 2 training subjects among {n}")
    return dict(zip(order, ["train"] * n_train + ["val"] * n_val + ["test"] * n_test))


def _base_first(labels: np.ndarray) -> bool:
    """True when a label stack (X, Y, Z) runs base -> apex (more LV + myocardium in the first half)."""
    area = np.isin(labels, (1, 2)).reshape(-1, labels.shape[2]).sum(axis=0).astype(float)
    z = np.flatnonzero(area > 0)
    if z.size < 2:
        return True
    a = area[z[0] : z[-1] + 1]
    h = len(a) // 2
    return a[:h].sum() >= a[len(a) - h :].sum()


def phase_frames(n_source: int, n_target: int, ed_frame: int = 0) -> np.ndarray:
    """Source frame of each of ``n_target`` frames spread evenly over the cycle from ED (nearest phase).

    ``k -> (ed_frame + floor(k * n_source / n_target)) mod n_source``: frame 0 is ED, and the cycle is
    subsampled (or frames repeated) without interpolating images or masks.
    """
    if n_source < 1 or n_target < 1:
        raise ValueError(f"frame counts must be >= 1, got {n_source} -> {n_target}")
    return (int(ed_frame) + (np.arange(n_target) * n_source) // n_target) % n_source


def _fingerprint(data_dir: Path) -> str:
    """Hash of the names, sizes and modification times of the files of a data folder (two levels)."""
    h = hashlib.sha1()
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    for p in sorted(root.iterdir()):
        items = sorted(p.iterdir()) if p.is_dir() else [p]
        for q in items:
            if q.is_file():
                st = q.stat()
                h.update(f"{q.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:12]


def condition_names(cfg: Any) -> list[str]:
    from ...models.conditioning import COVARIATE_NAMES

    names = [str(v) for v in cfg.ch6.conditions]
    bad = [n for n in names if n not in COVARIATE_NAMES]
    if bad or not names:
        raise ValueError(f"ch6.conditions: unknown covariate(s) {bad}; choose from {list(COVARIATE_NAMES)}")
    return names


def load_sequences(cfg: Any, *, max_subjects: int | None = None, progress: bool = False) -> SequenceData:
    """Read the segmented cine sequences and covariates of ``cfg``'s data set (module docstring, step 1).

    Subjects without an image, without a label on every frame, or missing a covariate of
    ``ch6.conditions`` are dropped (``meta["dropped"]`` says why); a data set where none remains raises
    ``ValueError`` naming the reasons (chapter 6 trains on image + mask sequences with covariates: the
    phantom, or a UK Biobank layout with per-frame ``label_sa.nii.gz`` and a ``manifest.csv``).
    """
    c = cfg.ch6
    size = tuple(int(v) for v in c.image_size)
    if len(size) != 2:
        raise ValueError(f"ch6.image_size must be [X, Y], got {list(c.image_size)}")
    names = condition_names(cfg)
    payload = {
        "image_size": list(size),
        "slices": int(c.slices),
        "frames": int(c.frames),
        "roi_mm": float(c.roi_mm),
        "split": [float(v) for v in c.split],
        "conditions": names,
        "max_subjects": max_subjects,
        "fingerprint": _fingerprint(Path(cfg.data_dir)),
    }
    folder = run_dir(cfg, CHAPTER, "sequences", payload)
    cache = folder / "sequences.npz"
    if is_complete(folder) and cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return SequenceData(
                images=z["images"],
                labels=z["labels"],
                subject=z["subject"].astype(str),
                split=z["split"].astype(str),
                spacing=z["spacing"],
                covariates=pd.DataFrame(z["covariates"], columns=list(z["covariate_names"].astype(str))),
                meta=meta,
            )
    data = _read_sequences(cfg, size, names, max_subjects=max_subjects, progress=progress)
    from ...utils import atomic_path

    with atomic_path(cache) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                images=data.images,
                labels=data.labels,
                subject=data.subject,
                split=data.split,
                spacing=data.spacing,
                covariates=data.covariates.to_numpy(dtype=np.float64),
                covariate_names=np.array(list(data.covariates.columns)),
                meta=np.array(json.dumps(data.meta)),
            )
    mark_complete(folder, n=len(data))
    return data


def _read_sequences(
    cfg: Any, size: tuple[int, int], names: list[str], *, max_subjects: int | None, progress: bool
) -> SequenceData:
    from tqdm.auto import tqdm

    from ...io import iter_subjects
    from ...models.conditioning import COVARIATE_NAMES
    from ...preprocess import prepare_subject

    c = cfg.ch6
    n_slices, n_frames = int(c.slices), int(c.frames)
    px = float(c.roi_mm) / size[0]
    images, labels, subjects, spacing, covs = [], [], [], [], []
    dropped: dict[str, str] = {}
    flipped = 0
    source_frames: set[int] = set()
    for i, subj in enumerate(tqdm(iter_subjects(cfg.data_dir, cfg.dataset), desc="sequences", disable=not progress)):
        if max_subjects is not None and i >= max_subjects:
            break
        sid = subj.subject_id
        if subj.cine is None:
            dropped[sid] = "no image"
            continue
        if subj.cine_labels is None or subj.labelled_frames is None or not bool(np.all(subj.labelled_frames)):
            dropped[sid] = "not every frame is segmented (chapter 6 needs masks over the whole cycle)"
            continue
        missing = [n for n in names if subj.covariates.get(n) is None or not np.isfinite(_num(subj.covariates.get(n)))]
        if missing:
            dropped[sid] = f"missing covariate(s) {missing}"
            continue
        t_src = subj.cine.shape[3]
        if t_src < 2:
            dropped[sid] = f"{t_src} frame(s): not a cine sequence"
            continue
        idx = phase_frames(t_src, n_frames, int(subj.ed_frame or 0))
        one = subj.copy_with(
            cine=np.ascontiguousarray(subj.cine[..., idx]),
            cine_labels=np.ascontiguousarray(subj.cine_labels[..., idx]),
            labelled_frames=np.ones(n_frames, bool),
            ed_frame=0,
            es_frame=None,
            tagging=[],
        )
        prep = prepare_subject(one, size=size, n_slices=n_slices, spacing=px, tagging=False)
        img, lab = prep.cine.astype(np.float32), prep.cine_labels.astype(np.uint8)
        if not np.any(lab[..., 0]):
            dropped[sid] = "empty ED segmentation after cropping"
            continue
        if not _base_first(lab[..., 0]):
            img, lab = img[:, :, ::-1], lab[:, :, ::-1]
            flipped += 1
        images.append(np.ascontiguousarray(img))
        labels.append(np.ascontiguousarray(lab))
        subjects.append(sid)
        spacing.append(np.linalg.norm(np.asarray(prep.affine)[:3, :3], axis=0))
        covs.append({n: _num(subj.covariates.get(n)) if n in names else math.nan for n in COVARIATE_NAMES})
        source_frames.add(int(t_src))
    if not images:
        reasons = "; ".join(f"{k}: {v}" for k, v in list(dropped.items())[:5]) or "no subjects found"
        raise ValueError(
            f"{cfg.data_dir} ({cfg.dataset}): no subject has a cine segmented on every frame with the covariates "
            f"{names}; chapter 6 needs image + mask sequences with covariates (phantom, or a UK Biobank layout with "
            f"label_sa.nii.gz and a manifest.csv). Dropped: {reasons}"
        )
    split_of = split_subjects(subjects, [float(v) for v in c.split], int(cfg.seed))
    return SequenceData(
        images=np.stack(images),
        labels=np.stack(labels),
        subject=np.array(subjects),
        split=np.array([split_of[s] for s in subjects]),
        spacing=np.array(spacing, dtype=np.float64),
        covariates=pd.DataFrame(covs, columns=list(COVARIATE_NAMES)),
        meta={
            "dropped": dropped,
            "flipped": flipped,
            "n_subjects": len(subjects),
            "pixel_mm": px,
            "source_frames": sorted(source_frames),
            "conditions": names,
        },
    )


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def subjects_hash(data: SequenceData, split: str) -> str:
    ids = sorted(data.subject[data.index(split)].tolist())
    return hashlib.sha1(json.dumps(ids).encode()).hexdigest()[:10]
