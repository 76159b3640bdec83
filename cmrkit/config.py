"""Profiles and run configuration.

A *profile* (``cmrkit/profiles/<name>.yaml``) holds every size, count and iteration number of every
chapter. :func:`load` reads one, applies validated overrides and the run-level settings (seed, data
set, data folder, device) and returns a read-only :class:`Config`.

Overrides use dotted keys that must already exist in the profile::

    cfg = load("smoke", seed=1, overrides={"ch4.epochs": 2, "phantom.n_subjects": 6})
    cfg.ch4.epochs  # -> 2

Folders of real data shown beside the phantom (``realdata:``, e.g. ``realdata.mnms``) are resolved
to absolute paths relative to the repository root; ``""`` means none.

An unknown profile, an unknown or misspelt key, or a value of the wrong type raises
:class:`ConfigError` naming the key and what is allowed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from .io.readers import DATASETS
from .utils import DEVICES, REPO_ROOT, resolve_device, resolve_path

__all__ = [
    "Config",
    "ConfigError",
    "DATASETS",
    "PROFILES_DIR",
    "available_profiles",
    "load",
    "load_raw",
    "parse_overrides",
    "resolve_realdata",
]

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"


class ConfigError(ValueError):
    """A profile, parameter or data folder is invalid; the message names it and the fix."""


class Config(Mapping):
    """Read-only nested mapping with attribute access (``cfg.ch4.epochs``)."""

    def __init__(self, data: Mapping[str, Any], _path: str = "") -> None:
        self._data = {k: Config(v, f"{_path}{k}.") if isinstance(v, Mapping) else v for k, v in data.items()}
        self._path = _path

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self._data[key]
        except KeyError:
            raise AttributeError(
                f"config has no key '{self._path}{key}'; known: {', '.join(sorted(self._data))}"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain nested ``dict`` copy (for JSON sidecars and checkpoints)."""
        return {k: v.to_dict() if isinstance(v, Config) else v for k, v in self._data.items()}

    def __repr__(self) -> str:
        return f"Config({self.to_dict()!r})"


def available_profiles() -> list[str]:
    """Names of the profiles shipped in ``cmrkit/profiles``."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def load_raw(profile: str) -> dict[str, Any]:
    """Read a profile YAML as a plain dict (no overrides)."""
    path = PROFILES_DIR / f"{profile}.yaml"
    if not isinstance(profile, str) or not path.is_file():
        raise ConfigError(
            f"unknown profile {profile!r}: choose one of {', '.join(available_profiles())} (files in {PROFILES_DIR})"
        )
    with open(path) as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict):
        raise ConfigError(f"profile file {path} is not a YAML mapping")
    return data


def _set_dotted(data: dict[str, Any], key: str, value: Any, profile: str) -> None:
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(parts[:i]) or "<top level>"
            known = ", ".join(sorted(node)) if isinstance(node, dict) else "(not a section)"
            raise ConfigError(
                f"unknown parameter {key!r} for profile {profile!r}: no key {part!r} under {where}; known: {known}"
            )
        if i == len(parts) - 1:
            old = node[part]
            if isinstance(old, dict):
                if not isinstance(value, Mapping):
                    raise ConfigError(f"parameter {key!r} is a section; give a mapping or set its keys one by one")
                for sub, v in value.items():
                    _set_dotted(data, f"{key}.{sub}", v, profile)
                return
            node[part] = _coerce(key, old, value)
        else:
            node = node[part]


def _coerce(key: str, old: Any, value: Any) -> Any:
    """Keep override types consistent with the profile (int stays int, list stays list)."""
    if old is None or value is None:
        return value
    if isinstance(old, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"parameter {key!r} must be true/false, got {value!r}")
        return value
    if isinstance(old, int) and not isinstance(old, bool):
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"parameter {key!r} must be an integer, got {value!r}")
        return int(value)
    if isinstance(old, float):
        if isinstance(value, str):  # YAML 1.1 reads "1e-6" (no decimal point) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"parameter {key!r} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"parameter {key!r} must be a number, got {value!r}")
        return float(value)
    if isinstance(old, list) and not isinstance(value, (list, tuple)):
        raise ConfigError(f"parameter {key!r} must be a list, got {value!r}")
    if isinstance(old, str) and not isinstance(value, str):
        raise ConfigError(f"parameter {key!r} must be a string, got {value!r}")
    return list(value) if isinstance(value, tuple) else value


def default_data_dir(dataset: str, profile: str) -> Path:
    """Where a data set lives when no folder is given: the phantom cohort of the profile."""
    if dataset == "phantom":
        return REPO_ROOT / "data" / "phantom" / profile
    raise ConfigError(
        f"dataset {dataset!r} needs a data folder: pass data_dir=... (DATA_DIR in a notebook, "
        f"--data-dir on the command line); see data/README.md for the layout"
    )


def load(
    profile: str = "smoke",
    *,
    seed: int = 0,
    dataset: str = "phantom",
    data_dir: str | Path | None = None,
    device: str = "auto",
    overrides: Mapping[str, Any] | None = None,
    check_data: bool = False,
) -> Config:
    """Resolve a profile into a :class:`Config`.

    Parameters
    ----------
    profile
        Name of a profile in ``cmrkit/profiles`` (``smoke``, ``cpu``, ``demo``, ``paper``).
    seed
        The single seed from which every random draw of the run flows.
    dataset
        One of :data:`DATASETS`.
    data_dir
        Folder of the data set; relative paths are anchored at the repository root. Empty or
        ``None`` means the default (the profile's phantom cohort under ``data/phantom/<profile>``).
    device
        ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``mps``.
    overrides
        Dotted keys (``"ch4.epochs"``) that must exist in the profile, with values of the same type.
    check_data
        When true, the data folder must exist and hold the layout of ``dataset``.
    """
    data = load_raw(profile)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
    if device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ConfigError(f"overrides must be a mapping of dotted keys to values, got {type(overrides).__name__}")
    for key, value in (overrides or {}).items():
        if key in ("name", "seed", "dataset", "data_dir"):
            raise ConfigError(f"parameter {key!r} cannot be overridden this way; use the {key} argument")
        _set_dotted(data, key, value, profile)
    ddir = resolve_path(data_dir) if data_dir not in (None, "") else default_data_dir(dataset, profile)
    try:
        dev = str(resolve_device(device))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    data.update(seed=seed, dataset=dataset, data_dir=str(ddir), device=dev)
    data["realdata"] = resolve_realdata(data.get("realdata") or {}, profile)
    data["profile"] = data.pop("name", profile)
    data["overrides"] = dict(overrides or {})
    if check_data:
        check_data_dir(dataset, ddir)
    return Config(data)


#: a file pattern whose presence identifies each layout (see data/README.md)
_LAYOUT_MARKERS = {
    "phantom": ("manifest.csv", "*/sa.nii.gz"),
    "ukbb": ("*/sa.nii.gz",),
    "acdc": ("*/Info.cfg", "*/*/Info.cfg"),
    "mnms": ("*_sa_ED.nii.gz", "*/*_sa_ED.nii.gz", "*/*_sa.nii.gz", "*_sa.nii.gz"),
    "ferdian": ("*.h5", "*.hdf5"),
    "dicom": ("*.dcm", "*/*.dcm", "*/*/*.dcm"),
}


def resolve_realdata(section: Mapping[str, Any], profile: str = "") -> dict[str, str]:
    """The profile's ``realdata:`` folders as absolute paths (relative ones anchor at the repository
    root); ``""`` or ``null`` stays ``""`` (no such data). A folder that does not exist is kept: the
    chapters skip the parts that need it and say so in their tables."""
    if not isinstance(section, Mapping):
        raise ConfigError(f"profile {profile!r}: 'realdata' must be a mapping of data set -> folder, got {section!r}")
    out = {}
    for name, folder in section.items():
        if folder is not None and not isinstance(folder, (str, Path)):
            raise ConfigError(f"realdata.{name} must be a folder path or empty, got {folder!r}")
        out[str(name)] = os.path.normpath(resolve_path(folder)) if folder not in (None, "") else ""
    return out


def check_data_dir(dataset: str, path: str | Path) -> Path:
    """Check that ``path`` exists and looks like the layout of ``dataset``; return it resolved."""
    path = resolve_path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"data folder {path} for dataset {dataset!r} is a file; give the folder that holds the data")
    if not path.is_dir():
        hint = " (run `cmrkit phantom` or `make reproduce` to create it)" if dataset == "phantom" else ""
        raise ConfigError(f"data folder {path} for dataset {dataset!r} does not exist{hint}")
    markers = _LAYOUT_MARKERS[dataset]
    if dataset == "phantom":
        ok = (path / markers[0]).is_file() and any(path.glob(markers[1]))
    else:
        ok = any(any(path.glob(m)) for m in markers)
    if not ok and dataset == "dicom":  # scanner exports often have no .dcm suffix: the DICM mark says it
        from .io.dicom import holds_dicom

        ok = holds_dicom(path) or any(holds_dicom(p) for p in sorted(path.iterdir()) if p.is_dir())
    if not ok:
        raise ConfigError(
            f"data folder {path} does not have the {dataset!r} layout (expected {' or '.join(markers)}); "
            f"see data/README.md"
        )
    return path


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["ch4.epochs=2", "ch5.slices=8"]`` (``--set`` on the command line) -> ``{"ch4.epochs": 2, ...}``;
    values are parsed as YAML (numbers, booleans, lists)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set ch4.epochs=2")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out
