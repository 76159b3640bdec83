"""Cohort generation: parallel, deterministic per (seed, index), atomic, resumable.

``generate_cohort`` writes ``out_dir/PH0000 ...`` (each subject built in a temporary folder and
renamed into place), then ``manifest.csv`` and finally ``cohort.json`` (the generation parameters
and cmrkit version, ``"status": "complete"``), each atomically. A subject depends only on
``(seed, index, geometry)``, so the number of workers never changes the result, and an interrupted
run resumes: finished subject folders whose ``subject.json`` carries the same generation key are
kept. :func:`ensure_cohort` regenerates only when the cohort is missing or was made with other
parameters.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..config import Config
from ..utils import atomic_write, make_shared, resolve_path
from .covariates import MODEL_PATH
from .geometry import Geometry
from .subject import SubjectParams, generate_subject, sample_subject_params, subject_id
from .writer import SUBJECT_FILES, write_subject

__all__ = [
    "sample_cohort_params",
    "generate_cohort",
    "ensure_cohort",
    "ensure_phantom",
    "cohort_spec",
    "read_cohort_spec",
    "MANIFEST",
    "COHORT_JSON",
]

#: revision of the phantom's rendering physics, part of the cohort spec: bump it whenever a change
#: alters the images or ground truth of the same ``(seed, index, geometry)``, so that cached cohorts
#: regenerate (2: bSSFP magnetisation-transfer/flow contrast and myocardial-SNR noise model; 3: tag grid fixed
#: in scanner coordinates by default, Geometry.tag_phase="scanner")
PHANTOM_REVISION = 3
MANIFEST = "manifest.csv"
COHORT_JSON = "cohort.json"
_SUBJECT_DIR = re.compile(r"^PH\d{4,}$")


def sample_cohort_params(
    n: int, *, seed: int = 0, pathology_fraction: float = 0.15, start: int = 0
) -> list[SubjectParams]:
    """Parameters of subjects ``start .. start+n-1`` (subject ``i`` depends only on ``seed`` and ``i``)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    return [sample_subject_params(start + i, seed=seed, pathology_fraction=pathology_fraction) for i in range(int(n))]


def _model_hash() -> str:
    return hashlib.sha256(MODEL_PATH.read_bytes()).hexdigest()[:16]


def cohort_spec(n: int, *, seed: int, geometry: Geometry, pathology_fraction: float) -> dict[str, Any]:
    """The generation parameters that identify a cohort (stored in ``cohort.json``)."""
    return {
        "n_subjects": int(n),
        "seed": int(seed),
        "pathology_fraction": float(pathology_fraction),
        "geometry": geometry.to_dict(),
        "cmrkit_version": __version__,
        "phantom_revision": PHANTOM_REVISION,
        "phenotype_model_sha256": _model_hash(),
    }


def _subject_key(spec: Mapping[str, Any]) -> str:
    """Hash of what a single subject depends on (everything but the cohort size)."""
    d = {k: v for k, v in spec.items() if k != "n_subjects"}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:20]


def read_cohort_spec(out_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``cohort.json`` of a folder, or None when it is missing or unreadable."""
    p = Path(out_dir) / COHORT_JSON
    try:
        with open(p) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _same(spec: Mapping[str, Any], stored: Mapping[str, Any] | None) -> bool:
    if not stored:
        return False
    return all(stored.get(k) == v for k, v in spec.items())


def _existing_row(folder: Path, key: str) -> dict[str, Any] | None:
    meta = folder / "subject.json"
    if not all((folder / f).is_file() for f in SUBJECT_FILES):
        return None
    try:
        with open(meta) as fh:
            d = json.load(fh)
    except (OSError, ValueError):
        return None
    if d.get("generation_key") != key:
        return None
    return d.get("manifest_row")


def _worker_init() -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"


def _generate_one(
    index: int, seed: int, pathology_fraction: float, geometry: dict[str, Any], out_dir: str, key: str
) -> dict[str, Any]:
    """Generate and write subject ``index`` into ``out_dir/PHxxxx`` atomically; return its manifest row."""
    geo = Geometry(**geometry)
    params = sample_subject_params(index, seed=seed, pathology_fraction=pathology_fraction)
    subj = generate_subject(params, geometry=geo)
    out = Path(out_dir)
    final = out / subject_id(index)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=out))
    make_shared(tmp)  # mkdtemp makes 0o700: the subject folder gets what mkdir would give under the umask
    try:
        write_subject(subj, tmp)
        meta_path = tmp / "subject.json"
        with open(meta_path) as fh:
            meta = json.load(fh)
        meta["generation_key"] = key
        with atomic_write(meta_path, "w") as fh:
            json.dump(meta, fh, indent=1)
        old = None
        if final.exists():
            old = out / f".{final.name}.old-{os.getpid()}-{time.monotonic_ns()}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return subj.manifest_row()


def generate_cohort(
    out_dir: str | os.PathLike[str],
    n: int,
    *,
    seed: int = 0,
    geometry: Geometry | None = None,
    pathology_fraction: float = 0.15,
    workers: int = 1,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Generate an ``n``-subject phantom cohort in the UK Biobank layout under ``out_dir``.

    Parameters
    ----------
    out_dir : cohort folder (relative paths are anchored at the repository root).
    n, seed : cohort size and seed; subject ``i`` is seeded from ``SeedSequence(seed, spawn_key=(i, .))``.
    geometry : :class:`Geometry` (default: UK Biobank-like, 128 x 128, 10 slices, 50 frames).
    pathology_fraction : probability that a subject has regional dysfunction.
    workers : processes (1 = in this process); the result does not depend on it.
    progress : show a tqdm progress bar.
    overwrite : regenerate every subject even when a matching cohort or subject exists.

    Returns
    -------
    pathlib.Path
        The cohort folder.
    """
    import pandas as pd

    geometry = geometry or Geometry()
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    out = resolve_path(out_dir)
    spec = cohort_spec(int(n), seed=int(seed), geometry=geometry, pathology_fraction=float(pathology_fraction))
    stored = read_cohort_spec(out)
    if (
        not overwrite
        and _same(spec, stored)
        and stored.get("status") == "complete"
        and (out / MANIFEST).is_file()
        and all((out / subject_id(i) / "ground_truth.h5").is_file() for i in range(int(n)))
    ):
        return out
    out.mkdir(parents=True, exist_ok=True)
    # leftovers of an interrupted run (temporary and replaced subject folders)
    for p in out.iterdir():
        if p.is_dir() and p.name.startswith(".PH") and (p.name.endswith(".tmp") or ".old-" in p.name):
            shutil.rmtree(p, ignore_errors=True)
    key = _subject_key(spec)
    with atomic_write(out / COHORT_JSON, "w") as fh:
        json.dump({**spec, "status": "incomplete"}, fh, indent=1)
    # stale subject folders of an earlier, larger or different cohort
    for p in out.iterdir():
        if p.is_dir() and _SUBJECT_DIR.match(p.name) and int(p.name[2:]) >= n:
            shutil.rmtree(p)
    rows: dict[int, dict[str, Any]] = {}
    todo = []
    for i in range(int(n)):
        row = None if overwrite else _existing_row(out / subject_id(i), key)
        if row is not None:
            rows[i] = row
        else:
            todo.append(i)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(n), initial=len(rows), desc="phantom", unit="subject")
    t0 = time.perf_counter()
    gdict = geometry.to_dict()
    try:
        if workers == 1 or len(todo) <= 1:
            for i in todo:
                rows[i] = _generate_one(i, int(seed), float(pathology_fraction), gdict, str(out), key)
                if bar is not None:
                    bar.update(1)
        else:
            ctx = mp.get_context("spawn")
            with ProcessPoolExecutor(
                max_workers=min(int(workers), len(todo)), mp_context=ctx, initializer=_worker_init
            ) as ex:
                futs = {
                    ex.submit(_generate_one, i, int(seed), float(pathology_fraction), gdict, str(out), key): i
                    for i in todo
                }
                for fut in as_completed(futs):
                    rows[futs[fut]] = fut.result()
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    df = pd.DataFrame([rows[i] for i in range(int(n))])
    with atomic_write(out / MANIFEST, "w") as fh:
        df.to_csv(fh, index=False)
    elapsed = time.perf_counter() - t0
    with atomic_write(out / COHORT_JSON, "w") as fh:
        json.dump(
            {**spec, "status": "complete", "generated_subjects": len(todo), "seconds": round(elapsed, 2)}, fh, indent=1
        )
    return out


def _geometry_from_section(section: Mapping[str, Any]) -> Geometry:
    return Geometry.from_mapping(section)


def ensure_cohort(cfg: Config) -> Path:
    """Make sure the phantom cohort of a :class:`cmrkit.config.Config` exists; return its folder.

    Uses ``cfg.phantom`` (n_subjects, matrix, pixel_mm, slices, slice_thickness_mm, slice_spacing_mm,
    cine_frames, tag_frames, tag_spacing_mm, pathology_fraction, workers, and any other
    :class:`Geometry` field present, e.g. ``tag_phase``), ``cfg.seed`` and
    ``cfg.data_dir``. Nothing is generated when ``cohort.json`` there records the same parameters
    and cmrkit version and the manifest exists. For a non-phantom data set the folder is returned
    unchanged.
    """
    try:
        dataset = cfg["dataset"] if "dataset" in cfg else "phantom"
        section = cfg["phantom"]
        seed = int(cfg["seed"])
        data_dir = cfg["data_dir"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"ensure_cohort needs a cmrkit Config with phantom, seed and data_dir keys ({exc})") from None
    if dataset != "phantom":
        return resolve_path(data_dir)
    return ensure_phantom(data_dir, section, seed=seed)


def ensure_phantom(data_dir: str | os.PathLike[str], section: Mapping[str, Any], *, seed: int) -> Path:
    """Make sure the cohort that a ``phantom`` profile section describes exists under ``data_dir``; return it.

    ``section`` has the keys of ``cfg.phantom`` (see :func:`ensure_cohort`); a chapter that needs another
    cohort (e.g. more subjects at end-diastole only) passes a modified copy and its own folder.
    """
    geometry = _geometry_from_section(section)
    workers = int(section.get("workers", 1)) if hasattr(section, "get") else 1
    workers = max(1, min(workers, os.cpu_count() or 1))
    return generate_cohort(
        data_dir,
        int(section["n_subjects"]),
        seed=int(seed),
        geometry=geometry,
        pathology_fraction=float(section.get("pathology_fraction", 0.15)),
        workers=workers,
        progress=True,
    )
