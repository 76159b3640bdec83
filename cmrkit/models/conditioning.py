"""The eight covariates of thesis ch. 6 as a model input: validation, encoding and the condition encoder.

A generated sequence of chapter 6 is conditioned on age, sex, height, weight, smoking, alcohol, SBP
and DBP (thesis §6.3.1). This module turns a mapping such as ``{"age": 62, "sex": "F", ...}`` into the
cross-attention tokens of a :class:`monai.networks.nets.DiffusionModelUNet` (``with_conditioning=True``)
in three steps, each its own piece:

1. :meth:`ConditionSpace.validate` -- every covariate present, of the right kind and **inside the range
   the model was trained on**; anything else raises :class:`ConditionError` naming the covariate, the
   value and the allowed range or levels. Nothing is clipped or guessed: a model trained on 45-80 year
   olds has no business drawing a 12 year old's heart.
2. :meth:`ConditionSpace.encode` -- a feature vector per condition set: continuous covariates as
   z-scores ``(v - mean) / sd`` with the training cohort's mean and sd, binary and categorical ones
   one-hot (sex: female, male; smoking and alcohol: never, previous, current -- codes 0, 1, 2 as in
   thesis §6.3.1 and UK Biobank field 20116), so that "previous" is not the midpoint of "never" and
   "current". The statistics live in :meth:`ConditionSpace.to_dict`, which the chapter stores in the
   model's checkpoint config: a reloaded model normalises exactly as it was trained.
3. :class:`ConditionEncoder` -- the thesis' conditional mapping network ``tau_theta`` (§6.2.2,
   eq. 6.5): an MLP from the feature vector to ``n_tokens`` context tokens of width
   ``cross_attention_dim``, ``(B, n_tokens, D)``, trained jointly with the UNet. Several tokens rather
   than one: with a single key the softmax of the cross-attention is identically 1 and the condition
   acts as a position-independent bias (Pinaya et al. 2022 use one token); ``n_tokens > 1`` lets each
   UNet position weigh different summaries of the covariates.

Classifier-free guidance (Ho & Salimans 2022) needs an "unconditional" context: MONAI's
:meth:`monai.inferers.DiffusionInferer.sample` builds it by filling the context tensor with
``cfg_fill_value``; :data:`NULL_FILL` is that value, used both in training (condition dropout) and at
sampling, see :mod:`cmrkit.models.cond_diffusion`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "Covariate",
    "COVARIATES",
    "COVARIATE_NAMES",
    "THESIS_RANGES",
    "NULL_FILL",
    "ConditionError",
    "ConditionSpace",
    "ConditionEncoder",
]

#: value of every element of the "no condition" context (MONAI ``cfg_fill_value``)
NULL_FILL = -1.0


@dataclass(frozen=True)
class Covariate:
    """One covariate: its key (the phantom manifest's column), units and kind.

    ``kind`` is ``"continuous"``, ``"binary"`` or ``"categorical"``; ``levels`` names the integer codes
    ``0 .. K-1`` of the last two (e.g. ``("female", "male")``).
    """

    name: str
    units: str
    kind: str
    levels: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()

    @property
    def continuous(self) -> bool:
        return self.kind == "continuous"


#: the eight covariates of thesis §6.3.1, keyed as in the phantom manifest (and UK Biobank layouts)
COVARIATES: tuple[Covariate, ...] = (
    Covariate("age", "years", "continuous"),
    Covariate("sex", "", "binary", ("female", "male"), ("F", "M", "f", "m", "woman", "man")),
    Covariate("height_cm", "cm", "continuous"),
    Covariate("weight_kg", "kg", "continuous"),
    Covariate("smoking", "", "categorical", ("never", "previous", "current")),
    Covariate("alcohol", "", "categorical", ("never", "previous", "current")),
    Covariate("sbp", "mmHg", "continuous"),
    Covariate("dbp", "mmHg", "continuous"),
)
COVARIATE_NAMES: tuple[str, ...] = tuple(c.name for c in COVARIATES)
_BY_NAME = {c.name: c for c in COVARIATES}
#: short names a user may type, with the key they mean (only for the error message)
_HINTS = {
    "height": "height_cm",
    "weight": "weight_kg",
    "gender": "sex",
    "smoke": "smoking",
    "alcohol_status": "alcohol",
}
#: covariate ranges of the thesis' UK Biobank cohort (§6.3.1), shown beside the model's own ranges
THESIS_RANGES: dict[str, tuple[float, float]] = {
    "age": (40.0, 69.0),
    "weight_kg": (49.0, 116.0),
    "height_cm": (147.0, 195.0),
    "sbp": (95.0, 191.0),
    "dbp": (60.0, 106.0),
}


class ConditionError(ValueError):
    """A condition set the model cannot take: missing, unknown, malformed or out-of-range covariates."""


def _fmt(v: float) -> str:
    return f"{v:g}" if abs(v) >= 1 or v == 0 else f"{v:.3g}"


class ConditionSpace:
    """The covariates a model is conditioned on, with the training cohort's statistics and ranges.

    Parameters
    ----------
    names
        Covariate keys in model order (a subset of :data:`COVARIATE_NAMES`, no repeats).
    stats
        Per continuous covariate ``{"mean", "sd", "min", "max"}`` (the allowed range is ``[min, max]``);
        per binary/categorical covariate ``{"observed": [codes seen in training]}``.

    Build it from the training cohort with :meth:`fit`; store it with :meth:`to_dict`.
    """

    def __init__(self, names: Sequence[str], stats: Mapping[str, Mapping[str, Any]]):
        names = [str(n) for n in names]
        if not names:
            raise ConditionError("a condition space needs at least one covariate")
        unknown = [n for n in names if n not in _BY_NAME]
        if unknown:
            raise ConditionError(f"unknown covariate(s) {unknown}; the model covariates are {list(COVARIATE_NAMES)}")
        if len(set(names)) != len(names):
            raise ConditionError(f"covariates listed twice in {names}")
        self.names: tuple[str, ...] = tuple(names)
        self.stats: dict[str, dict[str, Any]] = {}
        for n in self.names:
            if n not in stats:
                raise ConditionError(f"no training statistics for covariate {n!r}")
            s = dict(stats[n])
            cov = _BY_NAME[n]
            if cov.continuous:
                for k in ("mean", "sd", "min", "max"):
                    if k not in s or not math.isfinite(float(s[k])):
                        raise ConditionError(f"covariate {n!r}: statistic {k!r} missing or not finite in {s}")
                    s[k] = float(s[k])
                if not s["sd"] > 0:
                    raise ConditionError(f"covariate {n!r} has sd {s['sd']} in the training cohort (it must vary)")
                if not s["min"] <= s["mean"] <= s["max"]:
                    raise ConditionError(
                        f"covariate {n!r}: mean {s['mean']} outside [min, max] = [{s['min']}, {s['max']}]"
                    )
            else:
                obs = sorted({int(v) for v in s.get("observed", range(len(cov.levels)))})
                if not obs or min(obs) < 0 or max(obs) >= len(cov.levels):
                    raise ConditionError(f"covariate {n!r}: observed codes {obs} outside 0..{len(cov.levels) - 1}")
                s["observed"] = obs
            self.stats[n] = s

    # ------------------------------------------------------------------ construction
    @classmethod
    def fit(cls, table: Any, names: Sequence[str] = COVARIATE_NAMES, *, cohort: Any = None) -> ConditionSpace:
        """Statistics of the training split ``table`` (a DataFrame or a mapping of columns).

        Continuous covariates: mean and sample sd of ``table`` (the normalisation) and the allowed range
        ``[min, max]`` of ``cohort`` (default ``table``), rounded outwards to 0.1. Binary and categorical:
        the codes observed in ``cohort``. Pass the whole data set's covariates as ``cohort`` to allow what
        the cohort covers (as the thesis' §6.3.1 ranges describe the whole cohort) while normalising with
        the training split. Missing, non-finite or non-integer codes are an error naming the covariate
        and the first offending row.
        """
        stats: dict[str, dict[str, Any]] = {}
        for n in names:
            if n not in _BY_NAME:
                raise ConditionError(f"unknown covariate {n!r}; the model covariates are {list(COVARIATE_NAMES)}")
            col, allc = _column(table, n, "training split"), _column(table if cohort is None else cohort, n, "cohort")
            if len(col) < 2:
                raise ConditionError(f"the training split needs at least 2 subjects, got {len(col)}")
            cov = _BY_NAME[n]
            if cov.continuous:
                lo, hi = min(col.min(), allc.min()), max(col.max(), allc.max())
                lo, hi = math.floor(float(lo) * 10) / 10, math.ceil(float(hi) * 10) / 10
                stats[n] = {"mean": float(col.mean()), "sd": float(col.std(ddof=1)), "min": lo, "max": hi}
            else:
                for c, what in ((col, "training split"), (allc, "cohort")):
                    if np.any(c != np.round(c)) or c.min() < 0 or c.max() >= len(cov.levels):
                        raise ConditionError(f"{what} column {n!r} has codes outside {_levels(cov)}")
                stats[n] = {"observed": sorted({int(v) for v in np.concatenate([col, allc])})}
        return cls(names, stats)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (stored in the checkpoint config)."""
        return {"names": list(self.names), "stats": {n: dict(self.stats[n]) for n in self.names}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConditionSpace:
        return cls(d["names"], d["stats"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConditionSpace) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"ConditionSpace({list(self.names)})"

    # ------------------------------------------------------------------ description
    def covariate(self, name: str) -> Covariate:
        return _BY_NAME[name]

    def allowed(self, name: str) -> str:
        """Human description of the allowed values of one covariate."""
        cov, s = _BY_NAME[name], self.stats[name]
        if cov.continuous:
            return f"[{_fmt(s['min'])}, {_fmt(s['max'])}] {cov.units}".rstrip() + " (the cohort's range)"
        return _levels(cov, s["observed"])

    def defaults(self) -> dict[str, float]:
        """A typical condition set: the training mean of continuous covariates (rounded to 0.1) and the
        lowest observed code of binary/categorical ones (0 = female / never where seen)."""
        out: dict[str, float] = {}
        for n in self.names:
            s = self.stats[n]
            out[n] = round(s["mean"], 1) if _BY_NAME[n].continuous else float(s["observed"][0])
        return out

    @property
    def feature_dim(self) -> int:
        """Length of the encoded feature vector."""
        return sum(1 if _BY_NAME[n].continuous else len(_BY_NAME[n].levels) for n in self.names)

    def feature_names(self) -> list[str]:
        out = []
        for n in self.names:
            cov = _BY_NAME[n]
            out += [n] if cov.continuous else [f"{n}={lv}" for lv in cov.levels]
        return out

    # ------------------------------------------------------------------ validation and encoding
    def _value(self, name: str, raw: Any) -> float:
        cov, s = _BY_NAME[name], self.stats[name]
        if isinstance(raw, str):
            key = raw.strip()
            if cov.continuous:
                try:
                    raw = float(key)
                except ValueError:
                    raise ConditionError(f"{name}={raw!r} is not a number; allowed: {self.allowed(name)}") from None
            else:
                names = {lv.lower(): i for i, lv in enumerate(cov.levels)}
                if cov.name == "sex":
                    names.update({"f": 0, "woman": 0, "m": 1, "man": 1})
                if key.lower() not in names:
                    raise ConditionError(f"{name}={raw!r} is not one of {_levels(cov)}")
                raw = names[key.lower()]
        if isinstance(raw, bool) or raw is None:
            raise ConditionError(f"{name}={raw!r} is not a valid value; allowed: {self.allowed(name)}")
        try:
            v = float(raw)
        except (TypeError, ValueError):
            raise ConditionError(f"{name}={raw!r} is not a number; allowed: {self.allowed(name)}") from None
        if not math.isfinite(v):
            raise ConditionError(f"{name}={raw!r} is not a finite number; allowed: {self.allowed(name)}")
        if cov.continuous:
            if not s["min"] <= v <= s["max"]:
                raise ConditionError(f"{name}={_fmt(v)} is outside the allowed range {self.allowed(name)}")
            return v
        if v != round(v) or int(v) not in range(len(cov.levels)):
            raise ConditionError(f"{name}={raw!r} is not one of {_levels(cov)}")
        if int(v) not in s["observed"]:
            raise ConditionError(
                f"{name}={cov.levels[int(v)]!r} does not occur in the cohort; allowed: {self.allowed(name)}"
            )
        return float(int(v))

    def validate(self, conditions: Mapping[str, Any]) -> dict[str, float]:
        """Check one condition set and return its numeric form ``{name: value}`` (model order).

        Raises
        ------
        ConditionError
            A missing or unknown key, a value that is not a number (or a known level name), NaN,
            a continuous value outside the training range, or a code outside the levels. The
            message names the covariate, the value and what is allowed.
        """
        if not isinstance(conditions, Mapping):
            raise ConditionError(f"conditions must be a mapping of covariate -> value, got {type(conditions).__name__}")
        keys = [str(k) for k in conditions]
        unknown = [k for k in keys if k not in self.names]
        if unknown:
            hints = [f"{k!r} (did you mean {_HINTS[k]!r}?)" if k in _HINTS else repr(k) for k in unknown]
            raise ConditionError(f"unknown covariate(s) {', '.join(hints)}; the model takes {list(self.names)}")
        missing = [n for n in self.names if n not in conditions]
        if missing:
            raise ConditionError(
                f"missing covariate(s) {missing}; the model needs all of {list(self.names)} "
                f"(e.g. {missing[0]} in {self.allowed(missing[0])})"
            )
        return {n: self._value(n, conditions[n]) for n in self.names}

    def validate_many(self, conditions: Iterable[Mapping[str, Any]] | Any) -> list[dict[str, float]]:
        """:meth:`validate` for a list of mappings, or for the rows of a DataFrame (whose other columns,
        e.g. ``subject_id``, are ignored); the failing row is named in the error."""
        if hasattr(conditions, "columns") and hasattr(conditions, "to_dict"):
            missing = [n for n in self.names if n not in conditions.columns]
            if missing:
                raise ConditionError(f"the table has no column(s) {missing}; the model needs all of {list(self.names)}")
            conditions = conditions[list(self.names)].to_dict("records")
        out = []
        for i, row in enumerate(conditions):
            try:
                out.append(self.validate(row))
            except ConditionError as exc:
                raise ConditionError(f"condition set {i}: {exc}") from None
        return out

    def encode(self, conditions: Iterable[Mapping[str, Any]] | Mapping[str, Any] | Any) -> np.ndarray:
        """Feature matrix ``(B, feature_dim)`` float32 of validated condition sets.

        Continuous covariates become ``(v - mean) / sd``; binary and categorical ones one-hot over their
        levels (in :meth:`feature_names` order). A single mapping gives ``(1, feature_dim)``.
        """
        if isinstance(conditions, Mapping):
            conditions = [conditions]
        rows = self.validate_many(conditions)
        out = np.zeros((len(rows), self.feature_dim), dtype=np.float32)
        for i, row in enumerate(rows):
            j = 0
            for n in self.names:
                cov, s = _BY_NAME[n], self.stats[n]
                if cov.continuous:
                    out[i, j] = (row[n] - s["mean"]) / s["sd"]
                    j += 1
                else:
                    out[i, j + int(row[n])] = 1.0
                    j += len(cov.levels)
        return out

    def decode(self, features: np.ndarray) -> list[dict[str, float]]:
        """Inverse of :meth:`encode` (for round-trip checks and for reading a sample set)."""
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or f.shape[1] != self.feature_dim:
            raise ConditionError(f"features: expected (B, {self.feature_dim}), got shape {f.shape}")
        out = []
        for row in f:
            d, j = {}, 0
            for n in self.names:
                cov, s = _BY_NAME[n], self.stats[n]
                if cov.continuous:
                    d[n] = float(row[j] * s["sd"] + s["mean"])
                    j += 1
                else:
                    d[n] = float(np.argmax(row[j : j + len(cov.levels)]))
                    j += len(cov.levels)
            out.append(d)
        return out

    def as_array(self, conditions: Iterable[Mapping[str, Any]] | Any) -> np.ndarray:
        """``(B, len(names))`` float64 of validated raw values (e.g. :attr:`cmrkit.runs.SampleSet.conditions`)."""
        return np.array([[row[n] for n in self.names] for row in self.validate_many(conditions)], dtype=np.float64)


def _column(table: Any, name: str, what: str) -> np.ndarray:
    try:
        col = np.asarray(table[name], dtype=np.float64).ravel()
    except KeyError:
        raise ConditionError(f"the {what} has no column {name!r}") from None
    except (TypeError, ValueError) as exc:
        raise ConditionError(f"{what} column {name!r} is not numeric ({exc})") from None
    bad = np.flatnonzero(~np.isfinite(col))
    if bad.size:
        raise ConditionError(f"{what} column {name!r} has {bad.size} missing value(s) (first at row {bad[0]})")
    if col.size == 0:
        raise ConditionError(f"the {what} is empty")
    return col


def _levels(cov: Covariate, observed: Sequence[int] | None = None) -> str:
    codes = range(len(cov.levels)) if observed is None else observed
    return ", ".join(f"{i} or {cov.levels[i]!r}" for i in codes)


class ConditionEncoder(nn.Module):
    """The conditional mapping network ``tau_theta``: covariate features -> cross-attention tokens.

    ``tokens = reshape(MLP(f), (n_tokens, dim))`` with ``MLP = Linear(F, h) - SiLU - Linear(h, h) - SiLU
    - Linear(h, n_tokens * dim)``. The output feeds ``context`` of a
    :class:`monai.networks.nets.DiffusionModelUNet` built with ``cross_attention_dim = dim``.

    Parameters
    ----------
    in_features
        :attr:`ConditionSpace.feature_dim`.
    dim
        Token width (the UNet's ``cross_attention_dim``).
    n_tokens
        Number of context tokens.
    hidden
        Width of the hidden layers.
    """

    def __init__(self, in_features: int, dim: int, n_tokens: int = 8, hidden: int = 128) -> None:
        super().__init__()
        for name, v in (("in_features", in_features), ("dim", dim), ("n_tokens", n_tokens), ("hidden", hidden)):
            if int(v) < 1:
                raise ValueError(f"ConditionEncoder: {name} must be >= 1, got {v}")
        self.in_features, self.dim, self.n_tokens = int(in_features), int(dim), int(n_tokens)
        self.net = nn.Sequential(
            nn.Linear(self.in_features, int(hidden)),
            nn.SiLU(),
            nn.Linear(int(hidden), int(hidden)),
            nn.SiLU(),
            nn.Linear(int(hidden), self.n_tokens * self.dim),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 2 or features.shape[1] != self.in_features:
            raise ValueError(
                f"ConditionEncoder: expected features (B, {self.in_features}), got {tuple(features.shape)}"
            )
        return self.net(features).reshape(features.shape[0], self.n_tokens, self.dim)
