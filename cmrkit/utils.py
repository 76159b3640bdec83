"""Small shared helpers: repository paths, atomic writes, optional imports, seeding.

Everything that writes a file in cmrkit goes through :func:`atomic_write` (write to a temporary
sibling, then ``os.replace``) so that an interrupted run never leaves a half-written artefact. The
temporary file that becomes the artefact gets the permissions an ordinary ``open(path, "w")`` would
give it (``0o666`` less the process umask; :func:`shared_mode`), not ``mkstemp``'s private ``0o600``,
so colleagues sharing a folder can read what the kit wrote when their umask allows it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import random
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEVICES",
    "resolve_device",
    "REPO_ROOT",
    "repo_root",
    "resolve_path",
    "atomic_write",
    "current_umask",
    "shared_mode",
    "make_shared",
    "optional_import",
    "seed_everything",
    "git_sha",
]


def repo_root() -> Path:
    """Return the repository root (the folder holding ``pyproject.toml`` above the package).

    ``CMRKIT_ROOT`` overrides it (useful for an installed, non-editable package).
    """
    env = os.environ.get("CMRKIT_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parent
    for cand in (here.parent, *here.parents):
        if (cand / "pyproject.toml").is_file() and (cand / "cmrkit").is_dir():
            return cand
    return Path.cwd().resolve()


REPO_ROOT = repo_root()


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """Anchor a relative path at the repository root (never at the current directory)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (REPO_ROOT / p)


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (``/proc/self/status`` on
    Linux); elsewhere it is set and restored at once under a lock."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def shared_mode(directory: bool = False) -> int:
    """Permission bits a new file (``0o666``) or folder (``0o777``) gets under the current umask."""
    return (0o777 if directory else 0o666) & ~current_umask()


def make_shared(path: str | os.PathLike[str]) -> None:
    """Give a file or folder made by ``tempfile`` (``0o600``/``0o700``) the mode that ``open`` or
    ``mkdir`` would have given it under the current umask (:func:`shared_mode`)."""
    p = Path(path)
    os.chmod(p, shared_mode(directory=p.is_dir()))


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb", encoding: str | None = None) -> Iterator[Any]:
    """Open a temporary sibling of ``path`` for writing and rename it over ``path`` on success.

    Text modes write UTF-8 unless ``encoding`` says otherwise (never the locale's encoding, so a
    report written under ``LANG=C`` is the same file).

    On any exception the temporary file is removed and ``path`` is left untouched.

    Examples
    --------
    >>> with atomic_write("/tmp/x.txt", "w") as fh:  # doctest: +SKIP
    ...     fh.write("hello")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.fchmod(fd, shared_mode())  # mkstemp makes 0o600; the artefact gets what open() would give
        text = "b" not in mode
        with os.fdopen(fd, mode, encoding=(encoding or "utf-8") if text else None) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` for libraries that write by file name
    (nibabel, h5py, matplotlib); it is renamed over ``path`` when the block succeeds, with the mode
    an ordinary ``open`` would have given it under the umask (:func:`shared_mode`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # keep the real suffixes (e.g. ".nii.gz") so libraries pick the right format
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # libraries may truncate the placeholder (keeping mkstemp's 0o600) or recreate it: set the mode last
        os.chmod(tmp, shared_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


__all__.append("atomic_path")


def optional_import(module: str, extra: str | None = None) -> Any:
    """Import ``module`` or raise an ImportError that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on environment
        hint = f"pip install 'cmrkit[{extra}]'" if extra else f"pip install {module.split('.')[0]}"
        raise ImportError(f"cmrkit needs the optional package '{module}' here: {hint}") from exc


def seed_everything(seed: int) -> np.random.Generator:
    """Seed python, numpy and torch global RNGs and return a fresh numpy Generator."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover
        pass
    return np.random.default_rng(seed)


def git_sha(short: bool = True) -> str:
    """Git SHA of the repository checkout, with ``-dirty`` when there are local changes;
    ``"unknown"`` outside a git checkout."""
    try:
        args = ["git", "-C", str(REPO_ROOT), "rev-parse"] + (["--short"] if short else []) + ["HEAD"]
        sha = subprocess.run(args, capture_output=True, text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


#: device names accepted wherever the kit takes a ``device`` argument
DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: Any = "auto", *tensors: Any, local_rank: int | None = None) -> Any:
    """The one device resolver of the kit: ``"auto"`` (or ``None``) -> the device of the first torch
    tensor among ``tensors``, else CUDA when available, else the CPU.

    ``"cuda"``/``"mps"`` on a machine without them is a :class:`ValueError` that says so (raised before
    any work, so a run fails in its first second, not after loading data). ``local_rank`` picks the GPU
    of a DDP process.
    """
    import torch

    if device is None or (isinstance(device, str) and device == "auto"):
        for t in tensors:
            if isinstance(t, torch.Tensor):
                return t.device
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if isinstance(device, str) and device.split(":")[0] not in DEVICES:
        raise ValueError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r} asked for, but this machine has no CUDA GPU; use device 'cpu' or 'auto'"
            )
        if local_rank is not None:
            dev = torch.device("cuda", local_rank)
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r} asked for, but MPS is not available here; use device 'cpu' or 'auto'")
    return dev
