"""Shared run artefacts: checkpoints and generated sample sets that chapters hand to each other.

A chapter that trains a model or generates samples asks for a *run folder* keyed by everything the
result depends on: the chapter, the artefact's name, the profile, the seed, the data set and its
folder, and a payload (model sizes, iteration counts, ...). The folder is::

    runs/<profile>/<dataset>/<chapter>/<name>-<hash>/
        manifest.json        what produced it (the key, the kit version, git SHA, "complete")
        ...                  checkpoints (cmrkit.train), samples.npz (SampleSet), ...

``<hash>`` is the SHA-1 of the canonical JSON of the key, so a run is reused only when the key
matches exactly and rebuilt otherwise; different settings never overwrite each other. Another
chapter (notebook 04 reads the samples of 02 and 03) finds the same folder by asking with the same
key (:func:`find_run`), or lists what exists (:func:`list_runs`).

Sample sets are stored as NIfTI-compatible arrays: ``(N, X, Y, Z[, T])`` voxel arrays in the kit's
axis order with one 4x4 affine and the seed of every sample (:class:`SampleSet`);
:meth:`SampleSet.to_nifti` writes them as ``.nii.gz`` files for other tools.

Everything is written atomically (temporary file, then rename): an interrupted run leaves either the
previous state or nothing, never a half-written file.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .config import Config
from .utils import REPO_ROOT, atomic_path, atomic_write, git_sha

__all__ = [
    "RUNS_DIR",
    "RunMismatchError",
    "RunKey",
    "run_key",
    "run_dir",
    "find_run",
    "list_runs",
    "mark_complete",
    "is_complete",
    "read_manifest",
    "check_manifest",
    "latest_run",
    "SampleSet",
    "ArraySpec",
    "check_samples",
]

#: where run folders live (ignored by git)
RUNS_DIR = REPO_ROOT / "runs"
MANIFEST = "manifest.json"


class RunMismatchError(ValueError):
    """A checkpoint or sample set was made with other settings than the ones asked for."""


def _canonical(obj: Any) -> Any:
    """JSON-stable form: mappings sorted, tuples as lists, numpy scalars as Python numbers."""
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


@dataclass(frozen=True)
class RunKey:
    """Everything a run artefact depends on.

    Attributes
    ----------
    chapter
        The chapter module that makes it (``"smcvae_strain"``, ``"ldm3d"``, ...).
    name
        The artefact within the chapter (``"smcvae"``, ``"autoencoder"``, ``"samples"``, ...).
    profile, seed, dataset, data_dir
        The run settings of :class:`cmrkit.config.Config`.
    payload
        The settings of the artefact itself (model sizes, iterations, sample count, ...).
    """

    chapter: str
    name: str
    profile: str
    seed: int
    dataset: str
    data_dir: str
    payload: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _canonical(
            {
                "chapter": self.chapter,
                "name": self.name,
                "profile": self.profile,
                "seed": int(self.seed),
                "dataset": self.dataset,
                "data_dir": self.data_dir,
                "payload": dict(self.payload),
            }
        )

    @property
    def hash(self) -> str:
        """First 10 hex digits of the SHA-1 of the canonical JSON key."""
        text = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:10]

    def folder(self, root: Path | None = None) -> Path:
        root = Path(root) if root is not None else RUNS_DIR
        return root / self.profile / self.dataset / self.chapter / f"{self.name}-{self.hash}"


def run_key(cfg: Config, chapter: str, name: str, payload: Mapping[str, Any] | None = None) -> RunKey:
    """The :class:`RunKey` of an artefact of ``chapter`` made under the run settings of ``cfg``."""
    for arg, v in (("chapter", chapter), ("name", name)):
        if not isinstance(v, str) or not v or "/" in v:
            raise ValueError(f"{arg} must be a non-empty name without '/', got {v!r}")
    return RunKey(chapter, name, str(cfg.profile), int(cfg.seed), str(cfg.dataset), str(cfg.data_dir), payload or {})


def _write_manifest(folder: Path, manifest: Mapping[str, Any]) -> None:
    with atomic_write(folder / MANIFEST, "w") as fh:
        json.dump(_canonical(manifest), fh, indent=1, sort_keys=True, default=str)


def run_dir(
    cfg: Config, chapter: str, name: str, payload: Mapping[str, Any] | None = None, *, root: Path | None = None
) -> Path:
    """Create (or reuse) the run folder of an artefact and return it.

    A new folder gets a manifest with ``complete: false``; call :func:`mark_complete` once the
    artefact is finished. An existing folder with the same key is returned as it is (training
    resumes from its checkpoints; a complete sample set is reused).
    """
    key = run_key(cfg, chapter, name, payload)
    folder = key.folder(root)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / MANIFEST).is_file():
        _write_manifest(
            folder,
            {
                "key": key.to_dict(),
                "hash": key.hash,
                "cmrkit_version": __version__,
                "git_sha": git_sha(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "complete": False,
            },
        )
    else:
        check_manifest(folder, key)
    return folder


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of a run folder; a clear error when it is missing or unreadable."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no run manifest (not a cmrkit run folder)")
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise RunMismatchError(f"{path}: unreadable run manifest ({exc})") from None
    if not isinstance(data, dict) or "key" not in data:
        raise RunMismatchError(f"{path}: run manifest without a 'key'")
    return data


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix.rstrip('.')}: {a!r} != {b!r}"]


def check_manifest(folder: str | Path, key: RunKey) -> dict[str, Any]:
    """Check that the run in ``folder`` was made with ``key``; raise :class:`RunMismatchError` naming
    the settings that differ (e.g. a checkpoint copied from another profile)."""
    man = read_manifest(folder)
    diffs = _diff(man["key"], key.to_dict())
    if diffs:
        shown = "; ".join(diffs[:6]) + (f"; ... ({len(diffs)} in all)" if len(diffs) > 6 else "")
        raise RunMismatchError(f"{Path(folder) / MANIFEST}: made with other settings than asked for: {shown}")
    return man


def mark_complete(folder: str | Path, **extra: Any) -> None:
    """Record that the artefact in ``folder`` is finished (with optional summary values)."""
    folder = Path(folder)
    man = read_manifest(folder)
    man.update(extra)
    man["complete"] = True
    man["completed"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _write_manifest(folder, man)


def is_complete(folder: str | Path) -> bool:
    try:
        return bool(read_manifest(folder).get("complete"))
    except (FileNotFoundError, RunMismatchError):
        return False


def find_run(
    cfg: Config, chapter: str, name: str, payload: Mapping[str, Any] | None = None, *, root: Path | None = None
) -> Path | None:
    """The complete run folder of this key, or ``None`` (nothing is created)."""
    folder = run_key(cfg, chapter, name, payload).folder(root)
    return folder if is_complete(folder) else None


def list_runs(
    cfg: Config, chapter: str | None = None, name: str | None = None, *, root: Path | None = None
) -> list[dict[str, Any]]:
    """Manifests (with ``"folder"``) of the complete runs of ``cfg``'s profile and data set, newest first,
    optionally restricted to a chapter and an artefact name; seeds and payloads may differ."""
    base = (Path(root) if root is not None else RUNS_DIR) / str(cfg.profile) / str(cfg.dataset)
    pattern = f"{chapter or '*'}/{name or '*'}-*/{MANIFEST}"
    out = []
    for path in base.glob(pattern):
        try:
            man = read_manifest(path.parent)
        except RunMismatchError:
            continue
        if man.get("complete") and (name is None or man["key"].get("name") == name):
            out.append({**man, "folder": str(path.parent)})
    return sorted(out, key=lambda m: m.get("completed", ""), reverse=True)


def latest_run(cfg: Any, chapter: str, name: str, *, root: Path | None = None) -> dict[str, Any] | None:
    """The newest complete run of ``chapter``/``name`` made with ``cfg``'s seed and data folder (any payload),
    as its manifest with ``"folder"``; ``None`` when there is none. What another chapter reads: a sample
    set of another seed or cohort is never mixed into this run's tables."""
    for man in list_runs(cfg, chapter, name, root=root):
        key = man["key"]
        if key.get("seed") == int(cfg.seed) and key.get("data_dir") == str(cfg.data_dir):
            return man
    return None


@dataclass
class SampleSet:
    """Generated volumes or sequences in the kit's voxel order, with their seeds.

    Attributes
    ----------
    arrays
        Named arrays, each ``(N, X, Y, Z)`` or ``(N, X, Y, Z, T)``: e.g. ``{"image": float32, "labels":
        uint8}`` (labels 0 background, 1 LV blood pool, 2 LV myocardium, 3 RV blood pool).
    seeds
        ``(N,)`` int64: the seed from which sample ``i`` was drawn (regenerates it alone).
    affine
        4x4 voxel-to-world matrix shared by the samples (spacing of the training data).
    meta
        JSON-serialisable description (model, sampler, guidance, conditions, ...).
    conditions
        Optional ``(N, C)`` float array of the conditions each sample was generated for.
    """

    arrays: dict[str, np.ndarray]
    seeds: np.ndarray
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    meta: dict[str, Any] = field(default_factory=dict)
    conditions: np.ndarray | None = None

    FILE = "samples.npz"

    def __post_init__(self) -> None:
        self.seeds = np.asarray(self.seeds, dtype=np.int64).reshape(-1)
        n = len(self.seeds)
        if n == 0:
            raise ValueError("a sample set needs at least one sample (seeds is empty)")
        if not self.arrays:
            raise ValueError("a sample set needs at least one array")
        for k, a in self.arrays.items():
            a = np.asarray(a)
            if a.ndim not in (4, 5) or a.shape[0] != n:
                raise ValueError(f"sample array {k!r}: expected (N={n}, X, Y, Z[, T]), got shape {a.shape}")
            if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
                raise ValueError(f"sample array {k!r} holds NaN or inf values")
            self.arrays[k] = a
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")
        if self.conditions is not None:
            self.conditions = np.asarray(self.conditions, dtype=np.float64)
            if self.conditions.shape[0] != n:
                raise ValueError(f"conditions: expected {n} rows, got shape {self.conditions.shape}")

    def __len__(self) -> int:
        return len(self.seeds)

    def save(self, folder: str | Path) -> Path:
        """Write ``samples.npz`` into ``folder`` atomically; returns its path."""
        path = Path(folder) / self.FILE
        payload = {f"array_{k}": v for k, v in self.arrays.items()}
        payload.update(seeds=self.seeds, affine=self.affine, meta=np.array(json.dumps(_canonical(self.meta))))
        if self.conditions is not None:
            payload["conditions"] = self.conditions
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **payload)
        return path

    @classmethod
    def load(cls, folder_or_file: str | Path) -> SampleSet:
        """Read a sample set written by :meth:`save` (a run folder or the ``.npz`` itself)."""
        path = Path(folder_or_file)
        if path.is_dir():
            path = path / cls.FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no sample set here")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k[len("array_") :]: z[k] for k in z.files if k.startswith("array_")}
                cond = z["conditions"] if "conditions" in z.files else None
                return cls(arrays, z["seeds"], z["affine"], json.loads(str(z["meta"])), cond)
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"{path}: not a readable cmrkit sample set ({exc})") from None

    def to_nifti(self, out_dir: str | Path, *, prefix: str = "sample") -> list[Path]:
        """Write every sample's arrays as ``<prefix>_<i>_<name>.nii.gz`` (same affine); returns the paths."""
        import nibabel as nib

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        width = len(str(len(self) - 1))
        for i in range(len(self)):
            for k, a in self.arrays.items():
                p = out_dir / f"{prefix}_{i:0{width}d}_{k}.nii.gz"
                with atomic_path(p) as tmp:
                    nib.save(nib.Nifti1Image(np.asarray(a[i]), self.affine), str(tmp))
                paths.append(p)
        return paths


@dataclass(frozen=True)
class ArraySpec:
    """What one array of a sample set must look like (:func:`check_samples`).

    Attributes
    ----------
    shape
        Shape of one sample (without the leading ``N``), e.g. the data's ``(X, Y, Z)``.
    low, high
        Allowed value range (inclusive), e.g. ``[0, 1]`` for intensities or ``[0, 3]`` for labels.
    integer
        Integer codes (labels): an integer dtype is required.
    """

    shape: tuple[int, ...]
    low: float
    high: float
    integer: bool = False


def check_samples(samples: SampleSet, specs: Mapping[str, ArraySpec], *, where: str = "sample set") -> None:
    """The bad-sample guard every generated set passes before a table uses it.

    Beyond what :class:`SampleSet` refuses on its own (NaN or inf, a wrong leading size), each array
    named in ``specs`` must exist, have the data's per-sample shape, the right kind (integer labels) and
    values inside the data's range. Raises ``ValueError`` naming ``where``, the array and what is wrong.
    """
    for name, spec in specs.items():
        if name not in samples.arrays:
            raise ValueError(f"{where}: no {name!r} array (it has {sorted(samples.arrays)})")
        a = samples.arrays[name]
        if tuple(a.shape[1:]) != tuple(spec.shape):
            raise ValueError(f"{where}: {name!r} samples have shape {tuple(a.shape[1:])}, the data {tuple(spec.shape)}")
        if spec.integer and a.dtype.kind not in "iub":
            raise ValueError(f"{where}: {name!r} must hold integer codes, got dtype {a.dtype}")
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise ValueError(f"{where}: {name!r} holds NaN or inf values")
        lo, hi = float(np.min(a)), float(np.max(a))
        if lo < spec.low or hi > spec.high:
            bad = int(np.count_nonzero((a < spec.low) | (a > spec.high)))
            raise ValueError(
                f"{where}: {name!r} values span [{lo:g}, {hi:g}], outside the data's range "
                f"[{spec.low:g}, {spec.high:g}] ({bad} values)"
            )
