"""Covariates and the covariate -> phenotype model of the phantom cohort.

The eight covariates of thesis chapter 6 (age, sex, height, weight, smoking, alcohol, SBP, DBP;
thesis §6.3.1) are drawn from UK Biobank-like distributions, then the cardiac phenotypes
(LVEDV, LVEF, LV mass, RV/LV volume ratio, RVEF, heart rate, peak circumferential strain, LV length)
from a log-linear model whose parameters live in ``phenotype_model.yaml`` next to this file, with
their sources. The anatomy (:mod:`cmrkit.phantom.anatomy`) then builds a heart that realises
these targets.

Model, for a phenotype ``y`` with ``scale: log`` (``linear`` is the same with additive terms)::

    log y = log base[sex] + b_bsa log(BSA / BSA_ref[sex]) + b_h log(height / height_ref[sex])
            + b_age (age - 60) / 10 + b_sbp (SBP - 130) / 10 + b_smk[smoking] + b_alc[alcohol] + eps

``eps ~ N(0, residual_sd)``, optionally correlated (``rho``) with the residual of a phenotype drawn
earlier; the result is clipped to ``[min, max]``. BSA is Mosteller's ``sqrt(height * weight / 3600)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml

__all__ = [
    "MODEL_PATH",
    "COVARIATES",
    "load_phenotype_model",
    "bsa_mosteller",
    "sample_covariates",
    "phenotype_targets",
    "sample_pathology",
]

MODEL_PATH = Path(__file__).resolve().parent / "phenotype_model.yaml"

#: covariate names in manifest order (thesis §6.3.1 plus units in the names)
COVARIATES = ("age", "sex", "height_cm", "weight_kg", "smoking", "alcohol", "sbp", "dbp")


@lru_cache(maxsize=8)
def _load_cached(path: str) -> dict[str, Any]:
    with open(path) as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict) or "phenotypes" not in data or "covariates" not in data:
        raise ValueError(f"phenotype model {path} must be a mapping with 'covariates' and 'phenotypes'")
    return data


def load_phenotype_model(path: str | Path | None = None) -> dict[str, Any]:
    """Read the covariate -> phenotype model (default: the shipped ``phenotype_model.yaml``)."""
    p = Path(path) if path is not None else MODEL_PATH
    if not p.is_file():
        raise FileNotFoundError(f"phenotype model file {p} does not exist")
    return _load_cached(str(p.resolve()))


def bsa_mosteller(height_cm: float | np.ndarray, weight_kg: float | np.ndarray) -> float | np.ndarray:
    """Body-surface area (m^2), Mosteller 1987: ``sqrt(height_cm * weight_kg / 3600)``."""
    return np.sqrt(np.asarray(height_cm, float) * np.asarray(weight_kg, float) / 3600.0)


def _clip(x: float, lo: float, hi: float) -> float:
    return float(min(max(x, lo), hi))


def _trunc_normal(rng: np.random.Generator, mean: float, sd: float, lo: float, hi: float) -> float:
    """Normal draw restricted to [lo, hi] by resampling (then clipping as a last resort)."""
    for _ in range(100):
        x = rng.normal(mean, sd)
        if lo <= x <= hi:
            return float(x)
    return _clip(rng.normal(mean, sd), lo, hi)


def sample_covariates(rng: np.random.Generator, model: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Draw one subject's covariates.

    Returns
    -------
    dict
        ``age`` (years), ``sex`` (0 female, 1 male), ``height_cm``, ``weight_kg``, ``smoking`` and
        ``alcohol`` (0 never, 1 previous, 2 current), ``sbp``, ``dbp`` (mmHg) and the derived
        ``bsa`` (m^2, Mosteller). Distributions and sources: ``phenotype_model.yaml``.
    """
    m = (model or load_phenotype_model())["covariates"]
    sex = int(rng.random() < m["sex"]["p_male"])
    a = m["age"]
    age = _trunc_normal(rng, a["mean"], a["sd"], a["min"], a["max"])
    h = m["height_cm"]
    hs = h["male" if sex else "female"]
    height = _trunc_normal(rng, hs["mean"], hs["sd"], h["min"], h["max"])
    b = m["bmi"]
    bmi = _trunc_normal(rng, b["mean"], b["sd"], b["min"], b["max"])
    weight = _clip(bmi * (height / 100.0) ** 2, m["weight_kg"]["min"], m["weight_kg"]["max"])
    s = m["sbp"]
    sbp_mean = s["mean"] + s["age_slope_per_year"] * (age - s["reference_age"]) + s["male_offset"] * (sex - 0.48)
    z_sbp = rng.standard_normal()
    sbp = _clip(sbp_mean + s["sd"] * z_sbp, s["min"], s["max"])
    d = m["dbp"]
    r = d["corr_with_sbp"]
    dbp = (
        d["mean"]
        + d["male_offset"] * (sex - 0.48)
        + d["sd"] * (r * z_sbp + math.sqrt(1 - r * r) * rng.standard_normal())
    )
    dbp = _clip(dbp, d["min"], min(d["max"], sbp - d["min_pulse_pressure"]))
    smoking = int(rng.choice(3, p=m["smoking"]["p"]))
    alcohol = int(rng.choice(3, p=m["alcohol"]["p"]))
    cov = {
        "age": round(age, 1),
        "sex": sex,
        "height_cm": round(height, 1),
        "weight_kg": round(weight, 1),
        "smoking": smoking,
        "alcohol": alcohol,
        "sbp": round(sbp, 0),
        "dbp": round(dbp, 0),
    }
    cov["bsa"] = round(float(bsa_mosteller(cov["height_cm"], cov["weight_kg"])), 4)
    return cov


def _by_sex(value: Any, sex: int) -> float:
    if isinstance(value, Mapping):
        return float(value["male" if sex else "female"])
    return float(value)


def phenotype_targets(
    cov: Mapping[str, float], rng: np.random.Generator, model: Mapping[str, Any] | None = None
) -> dict[str, float]:
    """Draw the phenotype targets of one subject from its covariates.

    Parameters
    ----------
    cov
        Output of :func:`sample_covariates` (needs ``bsa``).
    rng
        Source of the residual noise.

    Returns
    -------
    dict
        The model phenotypes (``lvedv_ml``, ``lvef_pct``, ``lvm_g``, ``rv_lv_ratio``, ``rvef_pct``,
        ``heart_rate_bpm``, ``peak_ecc``, ``lv_length_mm``) and the derived ``lvesv_ml``,
        ``rvedv_ml``, ``rvesv_ml``. These are healthy-heart targets; regional dysfunction and the
        geometric feasibility step of the anatomy may change EF, ESV and strain (the manifest stores
        the realised targets).
    """
    mdl = model or load_phenotype_model()
    sex = int(cov["sex"])
    bsa_ref = _by_sex(mdl["reference_bsa_m2"], sex)
    h_ref = _by_sex(mdl["reference_height_cm"], sex)
    out: dict[str, float] = {}
    z_res: dict[str, float] = {}
    for name, p in mdl["phenotypes"].items():
        log_scale = p.get("scale", "linear") == "log"
        base = _by_sex(p["base"], sex)
        terms = 0.0
        if "bsa_exponent" in p:
            terms += float(p["bsa_exponent"]) * math.log(cov["bsa"] / bsa_ref)
        if "height_exponent" in p:
            terms += float(p["height_exponent"]) * math.log(cov["height_cm"] / h_ref)
        if "age_per_decade" in p:
            terms += _by_sex(p["age_per_decade"], sex) * (cov["age"] - 60.0) / 10.0
        if "sbp_per_10mmhg" in p:
            terms += float(p["sbp_per_10mmhg"]) * (cov["sbp"] - 130.0) / 10.0
        if "smoking" in p:
            terms += float(p["smoking"][int(cov["smoking"])])
        if "alcohol" in p:
            terms += float(p["alcohol"][int(cov["alcohol"])])
        z = float(rng.standard_normal())
        corr = p.get("correlate_with")
        if corr:
            other = corr["phenotype"]
            if other not in z_res:
                raise ValueError(f"phenotype {name!r} correlates with {other!r}, which must be listed before it")
            rho = float(corr["rho"])
            z = rho * z_res[other] + math.sqrt(1.0 - rho * rho) * z
        z_res[name] = z
        eps = float(p.get("residual_sd", 0.0)) * z
        y = math.exp(math.log(base) + terms + eps) if log_scale else base + terms + eps
        out[name] = _clip(y, float(p["min"]), float(p["max"]))
    out["lvesv_ml"] = out["lvedv_ml"] * (1.0 - out["lvef_pct"] / 100.0)
    out["rvedv_ml"] = out["rv_lv_ratio"] * out["lvedv_ml"]
    out["rvesv_ml"] = out["rvedv_ml"] * (1.0 - out["rvef_pct"] / 100.0)
    return out


def sample_pathology(rng: np.random.Generator, model: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Draw a regional dysfunction: a coronary territory, a kind and per-segment motion factors.

    Returns
    -------
    dict
        ``territory`` (LAD/RCA/LCX), ``kind`` (hypokinetic/akinetic), ``segments`` (AHA numbers)
        and ``factors`` (fraction of normal endocardial excursion kept per segment, 0 = akinetic).
    """
    pm = (model or load_phenotype_model())["pathology"]
    terr_names = list(pm["territories"])
    p_terr = np.array([pm["territories"][t]["p"] for t in terr_names], float)
    terr = terr_names[int(rng.choice(len(terr_names), p=p_terr / p_terr.sum()))]
    kind_names = list(pm["kinds"])
    p_kind = np.array([pm["kinds"][k]["p"] for k in kind_names], float)
    kind = kind_names[int(rng.choice(len(kind_names), p=p_kind / p_kind.sum()))]
    segs = list(pm["territories"][terr]["segments"])
    keep = rng.random(len(segs)) < float(pm["segment_keep_probability"])
    if not keep.any():
        keep[int(rng.integers(len(segs)))] = True
    segs = [s for s, k in zip(segs, keep) if k]
    lo, hi = pm["kinds"][kind]["motion_factor"]
    factors = [round(float(rng.uniform(lo, hi)), 3) for _ in segs]
    return {"territory": terr, "kind": kind, "segments": segs, "factors": factors}
