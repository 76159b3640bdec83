"""Chapter 6 beyond the thesis, with the phantom's true covariate -> anatomy model: recovered covariate effects,
condition recovery, counterfactuals (Monteiro et al. 2023 soundness) and the plausibility of the volume curves."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ...clinical import sequence_phenotypes
from ...clinical import sequence_volume_curves as volume_curves
from ...report import Report, TableRow
from ...runs import SampleSet
from .data import STRUCTURES, SequenceData, Trained
from .generation import guidance_weight, reconstruct

# =============================================================================================== beyond the thesis
#: (phenotype, term) pairs of the issue's quality bar: sex and body-size effects on LVEDV and LVM
BAR_EFFECTS = (("LVEDV", "sex"), ("LVEDV", "log_bsa"), ("LVM", "sex"), ("LVM", "log_bsa"))
EFFECT_TERMS = (
    "sex",
    "log_bsa",
    "age",
    "age_x_sex",
    "sbp",
    "dbp",
    "smoking_previous",
    "smoking_current",
    "alcohol_previous",
    "alcohol_current",
)
#: the main-effect design used when there are too few sequences for every term
MAIN_TERMS = ("sex", "log_bsa", "age", "sbp")


def covariate_effects(cfg: Any, rep: Report, data: SequenceData, population: SampleSet) -> dict[str, Any]:
    """Recovered covariate effects (table ``ch6_covariate_effects``, figure ``ch6_effects_forest``).

    The same regression (:func:`cmrkit.effects.fit_effects`: log volumes / mass, EF in points, on sex,
    log BSA, age, age x sex, SBP, DBP, smoking and alcohol levels) fitted to (i) the generated population
    set, (ii) the real cohort (all subjects, phenotypes measured the same way) and, on the phantom,
    (iii) the true model (:func:`cmrkit.effects.true_effects`, 20,000 draws). Coefficients with 95 %
    intervals; the ``bar`` rows give generated / true for the sex and body-size effects on LVEDV and LVM
    (issue bar: true sign and within ±50 %).
    """
    import matplotlib.pyplot as plt

    from ...effects import PHENOTYPE_SCALE, TERM_LABELS, fit_effects, true_effects
    from ...figures import show

    names = list(population.meta["condition_names"])
    gcov = pd.DataFrame(population.conditions, columns=names)
    gph = sequence_phenotypes(population.arrays["labels"], data.reference_spacing)
    rph = sequence_phenotypes(data.labels, data.spacing)
    # the full design needs enough sequences; small sets (smoke) fit the main effects only
    n_min = min(len(gph), len(rph))
    terms = None if n_min >= 3 * (len(EFFECT_TERMS) + 1) else MAIN_TERMS
    if n_min <= len(MAIN_TERMS) + 2:
        raise ValueError(
            f"covariate_effects: {n_min} sequences are too few for a regression on {len(MAIN_TERMS)} terms"
        )
    gen = fit_effects(gcov, gph, names=names, terms=terms)
    real = fit_effects(data.covariates, rph, names=names, terms=terms)
    true = true_effects(names=names, terms=terms, seed=int(cfg.seed)) if cfg.dataset == "phantom" else None
    rows: list[TableRow] = []
    for key in PHENOTYPE_SCALE:
        units = "log-scale (relative) effect" if PHENOTYPE_SCALE[key] == "log" else "%-points"
        for term in EFFECT_TERMS:
            if term not in gen[key].terms:
                continue
            row = f"{key}/{TERM_LABELS[term]}"
            if true is not None and term in true[key].terms:
                rows.append(TableRow(row, "true (phantom model)", true[key][term]["coef"], units=units))
            g = gen[key][term]
            rows.append(TableRow(row, "generated", g["coef"], g["se"], n=gen[key].n, units=units))
            rows.append(TableRow(row, "generated 95% CI low", g["low"], units=units))
            rows.append(TableRow(row, "generated 95% CI high", g["high"], units=units))
            if term in real[key].terms:
                r = real[key][term]
                rows.append(TableRow(row, "real cohort", r["coef"], r["se"], n=real[key].n, units=units))
                rows.append(TableRow(row, "real cohort 95% CI low", r["low"], units=units))
                rows.append(TableRow(row, "real cohort 95% CI high", r["high"], units=units))
    bars: dict[str, dict[str, float]] = {}
    if true is not None:
        for key, term in BAR_EFFECTS:
            if term not in gen[key].terms:
                continue
            t, g = true[key][term]["coef"], gen[key][term]["coef"]
            ratio = g / t if t != 0 else math.nan
            ok = float(np.sign(g) == np.sign(t) and abs(ratio - 1) <= 0.5)
            bars[f"{key}/{term}"] = {"true": t, "generated": g, "ratio": ratio, "pass": ok}
            rows.append(
                TableRow(f"bar/{key}/{TERM_LABELS[term]}", "generated / true", ratio, note="bar: true sign and 0.5-1.5")
            )
            rows.append(TableRow(f"bar/{key}/{TERM_LABELS[term]}", "meets bar (1 = yes)", ok))
    for key in PHENOTYPE_SCALE:
        rows.append(TableRow(f"{key}/R²", "generated", gen[key].r2, n=gen[key].n))
        rows.append(TableRow(f"{key}/R²", "real cohort", real[key].r2, n=real[key].n))
        if true is not None:
            rows.append(TableRow(f"{key}/R²", "true (phantom model)", true[key].r2, n=true[key].n))
    notes = [
        "Regression of each phenotype on the covariates (cmrkit.effects.fit_effects): log LVEDV, LVESV, RVEDV, RVESV "
        "and LVM (a coefficient of 0.1 is +10.5 %), LVEF in %-points; terms sex (male = 1), log BSA (Mosteller), "
        "age and age x male per 10 y from 60, SBP per 10 mmHg from 130, DBP per 10 mmHg from 80, smoking and alcohol "
        "levels vs never. ± = standard error; 95 % Student-t intervals as separate metrics."
        + ("" if terms is None else f" Too few sequences for every term: main effects {list(MAIN_TERMS)} only."),
        f"generated: the {len(gph)} sequences of the population set ({population.meta.get('source', '')}), phenotypes "
        f"from their masks; real cohort: all {len(rph)} real subjects measured the same way (ROI grid, "
        "cmrkit.clinical.sequence_phenotypes).",
    ]
    if true is not None:
        notes.append(
            "true: the phantom's covariate -> phenotype model (phenotype_model.yaml) fitted on 20,000 of its own draws "
            "(cmrkit.effects.true_effects); for LVEDV and LVM these are the yaml's parameters (sex at equal BSA, BSA "
            "exponent, age, SBP). The real cohort also holds regional-dysfunction cases (lower EF, higher ESV) that "
            "the model's healthy targets do not."
        )
    else:
        notes.append(f"No true model for data set {cfg.dataset!r}: generated vs real cohort only.")
    for who, fits in (("generated", gen), ("real cohort", real)):
        notes += [f"{who} {key}: {fits[key].note} (shown as '-')" for key in PHENOTYPE_SCALE if not fits[key].estimable]
    df = rep.save_table("ch6_covariate_effects", rows, notes=notes)
    # forest plot of the main terms
    show_terms = [t for t in ("sex", "log_bsa", "age", "sbp") if t in gen["LVEDV"].terms]
    keys = [k for k in ("LVEDV", "LVESV", "RVEDV", "LVM") if k in gen]
    fig, axes = plt.subplots(1, len(show_terms), figsize=(3.2 * len(show_terms), 3.4), squeeze=False)
    for ax, term in zip(axes[0], show_terms):
        for j, key in enumerate(keys):
            for off, fit, color, label in ((-0.2, gen, "#c0392b", "generated"), (0.0, real, "#2f6fb0", "real cohort")):
                e = fit[key][term]
                ax.errorbar(
                    e["coef"],
                    j + off,
                    xerr=[[e["coef"] - e["low"]], [e["high"] - e["coef"]]],
                    fmt="o",
                    color=color,
                    ms=4,
                    label=label if j == 0 else None,
                )
            if true is not None:
                ax.plot(true[key][term]["coef"], j + 0.2, "k*", ms=8, label="true (phantom)" if j == 0 else None)
        ax.axvline(0, color="0.7", lw=0.8)
        ax.set_yticks(range(len(keys)))
        ax.set_yticklabels([f"log {k}" for k in keys], fontsize=8)
        ax.set_title(TERM_LABELS[term], fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7, frameon=False)
    fig.suptitle(
        "Covariate effects: generated sequences vs real cohort vs the phantom's true model (95 % CI)", fontsize=9
    )
    fig.tight_layout()
    rep.save_figure(
        fig,
        "ch6_effects_forest",
        caption="Regression coefficients of phenotypes on covariates, generated vs real vs true",
    )
    show(fig)
    return {"table": df, "generated": gen, "real": real, "true": true, "bars": bars}


#: phenotype features of the condition-recovery predictors
RECOVERY_FEATURES = ("LVEDV", "LVESV", "RVEDV", "RVESV", "LVM", "LVEF", "RVEF")


def _recovery_features(ph: pd.DataFrame) -> np.ndarray:
    x = ph[list(RECOVERY_FEATURES)].to_numpy(float).copy()
    for j, k in enumerate(RECOVERY_FEATURES):
        if k not in ("LVEF", "RVEF"):
            x[:, j] = np.log(np.clip(x[:, j], 1e-3, None))
    return np.nan_to_num(x, nan=0.0)


@dataclass
class Predictors:
    """Per-covariate predictors trained on real training phenotypes (frozen afterwards)."""

    models: dict[str, Any]
    kinds: dict[str, str]

    def predict(self, ph: pd.DataFrame) -> dict[str, np.ndarray]:
        """Continuous: predicted values; binary/categorical: class probabilities ``(n, K)``."""
        x = _recovery_features(ph)
        return {
            n: (m.predict(x) if self.kinds[n] == "continuous" else m.predict_proba(x)) for n, m in self.models.items()
        }

    def score(self, name: str, ph: pd.DataFrame, truth: Any) -> float:
        """R² (continuous) or ROC AUC (binary; one-vs-rest macro for 3 levels) of covariate ``name`` predicted
        from phenotypes ``ph`` against ``truth`` (NaN with fewer than 3 values or one class only)."""
        kind = self.kinds[name]
        y = np.asarray(truth, float)
        return _score(kind, self.models[name], _recovery_features(ph), y if kind == "continuous" else y.astype(int))


def recovery_predictors(data: SequenceData, names: Sequence[str]) -> tuple[Predictors, dict[str, str]]:
    """Per-covariate predictors trained on the real training subjects' phenotypes (see
    :func:`condition_recovery`); also returns ``{covariate: reason}`` for those that cannot be trained."""
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ...models.conditioning import COVARIATES

    kinds = {c.name: c.kind for c in COVARIATES}
    tr = data.index("train")
    x_tr = _recovery_features(sequence_phenotypes(data.labels[tr], data.spacing[tr]))
    models: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for n in names:
        y_tr = data.covariates[n].to_numpy(float)[tr]
        if kinds[n] == "continuous":
            m = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
        else:
            y_tr = y_tr.astype(int)
            if len(np.unique(y_tr)) < 2:
                skipped[n] = "one class only in the training split"
                continue
            m = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        m.fit(x_tr, y_tr)
        models[n] = m
    return Predictors(models, {n: kinds[n] for n in models}), skipped


def _score(kind: str, model: Any, x: np.ndarray, y: np.ndarray) -> float:
    from sklearn.metrics import r2_score, roc_auc_score

    if len(y) < 3:
        return math.nan
    if kind == "continuous":
        return float(r2_score(y, model.predict(x)))
    classes = list(model.classes_)
    present = [c for c in classes if np.any(y == c)]
    if len(present) < 2:
        return math.nan
    p = model.predict_proba(x)
    if len(classes) == 2:
        return float(roc_auc_score(y, p[:, 1]))
    keep = np.isin(y, classes)
    return float(roc_auc_score(y[keep], p[keep], multi_class="ovr", average="macro", labels=classes))


def condition_recovery(
    cfg: Any, rep: Report, data: SequenceData, population: SampleSet, samples: SampleSet
) -> dict[str, Any]:
    """Condition recovery (table ``ch6_condition_recovery``): can a covariate be read back from a generated heart?

    For each covariate a predictor is trained on the real training subjects' phenotypes (log LVEDV,
    LVESV, RVEDV, RVESV, LVM, LVEF, RVEF; standardised): ridge regression (alpha by cross-validation) for
    continuous covariates, logistic regression for sex, smoking and alcohol. Frozen, it is applied to the
    held-out real subjects (validation + test) and to the generated sets with the covariates they were
    generated for as the truth: R² (continuous) or ROC AUC (sex; one-vs-rest macro AUC for the 3-level
    smoking and alcohol). A generator that learned the covariates scores about as the held-out real
    hearts do; what real hearts do not reveal (e.g. smoking) should not be recoverable either.
    """
    names = list(population.meta["condition_names"])
    tr = data.index("train")
    held = np.concatenate([data.index("val"), data.index("test")])
    held_ph = sequence_phenotypes(data.labels[held], data.spacing[held])
    sets = {
        "generated (population set)": (population, pd.DataFrame(population.conditions, columns=names)),
        "generated (test covariates)": (
            samples,
            pd.DataFrame(samples.conditions, columns=list(samples.meta["condition_names"])),
        ),
    }
    gen_ph = {k: sequence_phenotypes(ss.arrays["labels"], data.reference_spacing) for k, (ss, _) in sets.items()}
    predictors, skipped = recovery_predictors(data, names)
    rows: list[TableRow] = []
    for n in names:
        if n in skipped:
            for who in ("real held-out", *sets):
                rows.append(TableRow(n, who, math.nan, note=skipped[n]))
            continue
        metric = "R²" if predictors.kinds[n] == "continuous" else "AUC"
        rows.append(
            TableRow(
                n,
                f"real held-out {metric}",
                predictors.score(n, held_ph, data.covariates[n].to_numpy()[held]),
                n=len(held),
            )
        )
        for who, (_, cov) in sets.items():
            rows.append(TableRow(n, f"{who} {metric}", predictors.score(n, gen_ph[who], cov[n]), n=len(cov)))
    df = rep.save_table(
        "ch6_condition_recovery",
        rows,
        notes=[
            f"Predictors trained on the {len(tr)} real training subjects' phenotypes (log LVEDV, LVESV, RVEDV, "
            "RVESV, LVM; "
            "LVEF, RVEF; standardised), frozen, then applied to the held-out real subjects (validation + test, n = "
            f"{len(held)}) and to generated sequences with the covariates they were generated for as the truth.",
            "Continuous covariates: ridge regression (alpha by leave-one-out CV), R² (can be negative). Sex: logistic "
            "regression, ROC AUC. Smoking, alcohol: multinomial logistic regression, one-vs-rest macro ROC AUC over "
            "the "
            "levels present. 0.5 = chance.",
            "Reference points from the literature: EchoDiffusion reports R² up to 0.93 for the ejection fraction it is "
            "conditioned on (Reynaud et al. 2023); phenotypes the covariates barely determine cannot be recovered from "
            "any heart, real or generated.",
        ],
    )
    return {"table": df, "predictors": predictors}


def _sequence_dice(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean Dice over LV, Myo, RV and frames of label sequences ``(N, X, Y, Z, T)`` -> ``(N,)``."""
    out = np.empty(len(a))
    for i in range(len(a)):
        d = []
        for k in STRUCTURES:
            x, y = a[i] == k, b[i] == k
            den = x.sum(axis=(0, 1, 2)) + y.sum(axis=(0, 1, 2))
            inter = (x & y).sum(axis=(0, 1, 2))
            d.append(np.where(den > 0, 2.0 * inter / np.maximum(den, 1), np.nan))
        out[i] = float(np.nanmean(np.stack(d)))
    return out


def intervention_endpoints(
    space: Any, name: str, wanted: tuple[float, float], data: SequenceData
) -> tuple[tuple[float, float], str]:
    """An intervention's two values of covariate ``name``: ``wanted`` when both are allowed, else the cohort's
    10th/90th percentiles (with the reason)."""
    s = space.stats[name]
    if s["min"] <= wanted[0] <= s["max"] and s["min"] <= wanted[1] <= s["max"]:
        return wanted, ""
    lo, hi = np.percentile(data.covariates[name], [10, 90])
    return (
        round(float(lo)),
        round(float(hi)),
    ), f"{wanted} outside the allowed range {space.allowed(name)}; cohort 10th/90th percentiles used"


def counterfactuals(
    cfg: Any,
    rep: Report,
    data: SequenceData,
    autoencoder: Trained,
    diffusion: Trained,
    recovery: Mapping[str, Any] | None = None,
    *,
    progress: bool = False,
) -> dict[str, Any]:
    """Counterfactuals (table ``ch6_counterfactuals``, figure ``ch6_counterfactual_pairs``).

    **Same noise, one covariate moved** (``ch6.counterfactual_seeds`` seeds; the other covariates those of
    a test subject, cycled): weight 60 -> 100 kg (height kept) and sex female -> male (height and weight
    kept). Per phenotype the generated change against the phantom model's own counterfactual (the same
    residual draw under both covariate sets, :func:`cmrkit.effects.true_counterfactual`), and the share
    of seeds whose LVEDV moved in the true direction (issue bar: >= 90 %). A null change (same covariates,
    same noise) regenerates the sequence exactly: DDIM with ``eta = 0`` is deterministic.

    **Soundness on real subjects** (Monteiro et al. 2023; ``ch6.n_abduction`` test subjects): abduction by
    DDIM inversion of the subject's latent under its own covariates (:func:`cmrkit.models.cond_diffusion.ddim_invert`),
    then *composition* (null intervention: regenerated vs the autoencoded original, mean Dice over LV, Myo,
    RV and frames), *effectiveness* (after do(sex := other sex) or do(weight := weight + 20 kg), the frozen
    condition-recovery predictors move towards the new value; LVEDV moves in the model's direction) and
    *reversibility* (invert the counterfactual under the new covariates, regenerate under the old ones:
    Dice with the null-intervention sequence).
    """
    import torch

    from ...effects import true_counterfactual
    from ...models.cond_diffusion import ddim_invert, encode_sequences, generate_sequences
    from ...models.diffusion import sample_seeds
    from ...utils import resolve_device

    ae, ldm = autoencoder.model, diffusion.model
    space = ldm.space
    names = list(space.names)
    steps, w = int(cfg.ch6.ddim_steps), guidance_weight(cfg)
    kw = {
        "guidance": w,
        "ddim_steps": steps,
        "batch_size": int(cfg.ch6.sample_batch_size),
        "device": cfg.device,
        "image_frames": [],
    }
    n_seeds = int(cfg.ch6.counterfactual_seeds)
    if n_seeds < 1:
        raise ValueError(f"ch6.counterfactual_seeds must be >= 1, got {n_seeds}")
    te = data.index("test")
    base = data.covariates.iloc[te[np.arange(n_seeds) % len(te)]][names].reset_index(drop=True)
    seeds = sample_seeds(int(cfg.seed), n_seeds, stream=66)
    phantom = cfg.dataset == "phantom"
    rows: list[TableRow] = []
    notes: list[str] = []
    interventions = []
    if "weight_kg" in names:
        (w0, w1), why = intervention_endpoints(space, "weight_kg", (60.0, 100.0), data)
        interventions.append((f"weight {w0:g} -> {w1:g} kg", {"weight_kg": w0}, {"weight_kg": w1}))
        if why:
            notes.append(f"weight: {why}.")
    if "sex" in names and len(space.stats["sex"]["observed"]) == 2:
        interventions.append(("sex F -> M", {"sex": 0.0}, {"sex": 1.0}))
    out: dict[str, Any] = {"seed_based": {}}
    keys = ("LVEDV", "LVESV", "RVEDV", "LVM", "LVEF")
    for label, a_set, b_set in interventions:
        ca, cb = base.assign(**a_set), base.assign(**b_set)
        ga = generate_sequences(ae, ldm, ca, seeds, progress=progress, **kw)
        gb = generate_sequences(ae, ldm, cb, seeds, progress=progress, **kw)
        pa = sequence_phenotypes(ga.labels, data.reference_spacing)
        pb = sequence_phenotypes(gb.labels, data.reference_spacing)
        dgen = pb[list(keys)] - pa[list(keys)]
        rel = 100.0 * dgen / pa[list(keys)].where(pa[list(keys)] != 0)
        res = {"generated": dgen, "relative": rel}
        if phantom:
            tr_a, tr_b = zip(
                *[
                    true_counterfactual(ca.iloc[i].to_dict(), cb.iloc[i].to_dict(), seed=int(seeds[i]))
                    for i in range(n_seeds)
                ]
            )
            ta, tb = pd.DataFrame(tr_a)[list(keys)], pd.DataFrame(tr_b)[list(keys)]
            dtrue = tb - ta
            res["true"] = dtrue
            rows.append(
                TableRow(
                    f"{label}/LVEDV",
                    "direction right (% of seeds)",
                    100.0 * float(np.mean(np.sign(dgen["LVEDV"]) == np.sign(dtrue["LVEDV"]))),
                    n=n_seeds,
                    units="%",
                    note="bar: >= 90 %",
                )
            )
        for k in keys:
            units = "%-points" if k == "LVEF" else ("g" if k == "LVM" else "mL")
            rows.append(TableRow.summary(f"{label}/{k}", "generated change", dgen[k], units=units))
            if phantom:
                rows.append(TableRow.summary(f"{label}/{k}", "true model change", res["true"][k], units=units))
            if k != "LVEF":
                rows.append(TableRow.summary(f"{label}/{k}", "generated change (%)", rel[k], units="%"))
                if phantom:
                    rows.append(
                        TableRow.summary(
                            f"{label}/{k}", "true model change (%)", 100.0 * res["true"][k] / ta[k], units="%"
                        )
                    )
        out["seed_based"][label] = res
    # null intervention: same covariates and seeds again (in another batch split)
    g0 = generate_sequences(
        ae, ldm, base, seeds, **{**kw, "batch_size": max(1, int(cfg.ch6.sample_batch_size) // 2 + 1)}
    )
    g1 = generate_sequences(ae, ldm, base, seeds, **kw)
    same = np.all(g0.labels == g1.labels, axis=(1, 2, 3, 4))
    rows.append(
        TableRow(
            "null change (same noise and covariates)",
            "identical masks (% of seeds)",
            100.0 * float(same.mean()),
            n=n_seeds,
            units="%",
        )
    )
    rows.append(
        TableRow(
            "null change (same noise and covariates)",
            "max |latent difference|",
            float(np.abs(g0.latents - g1.latents).max()),
        )
    )
    # ---- abduction on real test subjects
    n_ab = min(int(cfg.ch6.n_abduction), len(te))
    ab = te[:n_ab]
    if n_ab >= 1:
        mu, _ = encode_sequences(ae, data.images[ab], data.labels[ab], device=cfg.device)
        own = data.covariates.iloc[ab][names].reset_index(drop=True)
        dev = resolve_device(cfg.device)
        ldm.to(dev)
        f_own = torch.from_numpy(space.encode(own)).to(dev)
        noise = ddim_invert(ldm, mu.to(dev), f_own, ddim_steps=steps).cpu()
        kw1 = {**kw, "guidance": 1.0}
        rec_ae = reconstruct(ae, data.images[ab], data.labels[ab], device=cfg.device)[1]
        null = generate_sequences(ae, ldm, own, noise=noise, **kw1)
        comp = _sequence_dice(null.labels, rec_ae)
        lat_err = np.linalg.norm((null.latents - mu.numpy()).reshape(n_ab, -1), axis=1) / np.linalg.norm(
            mu.numpy().reshape(n_ab, -1), axis=1
        )
        rows.append(TableRow.summary("abduction/composition (null intervention)", "Dice vs autoencoded original", comp))
        rows.append(TableRow.summary("abduction/composition (null intervention)", "relative latent error", lat_err))
        rows.append(
            TableRow.summary(
                "abduction/composition (null intervention)",
                "Dice autoencoded vs real masks",
                _sequence_dice(rec_ae, data.labels[ab]),
                note="the autoencoder's own ceiling",
            )
        )
        preds = recovery["predictors"] if recovery else None
        ph_null = sequence_phenotypes(null.labels, data.reference_spacing)
        for label, change in (("do(sex := other)", "sex"), ("do(weight := weight + 20 kg)", "weight_kg")):
            if change not in names:
                continue
            new = own.copy()
            if change == "sex":
                new["sex"] = 1.0 - new["sex"]
            else:
                new["weight_kg"] = new["weight_kg"] + 20.0
            s = space.stats[change]
            ok = np.ones(n_ab, bool) if change == "sex" else (new[change] <= s["max"]).to_numpy()
            if change == "sex" and len(s["observed"]) < 2:
                continue
            if ok.sum() < 1:
                rows.append(
                    TableRow(
                        f"abduction/{label}",
                        "subjects",
                        0,
                        note="the new value is outside the allowed range for every subject",
                    )
                )
                continue
            idx = np.flatnonzero(ok)
            cf = generate_sequences(ae, ldm, new.iloc[idx], noise=noise[idx], **kw1)
            f_new = torch.from_numpy(space.encode(new.iloc[idx])).to(dev)
            noise2 = ddim_invert(ldm, torch.from_numpy(cf.latents).to(dev), f_new, ddim_steps=steps).cpu()
            back = generate_sequences(ae, ldm, own.iloc[idx], noise=noise2, **kw1)
            ph_cf = sequence_phenotypes(cf.labels, data.reference_spacing)
            rows.append(
                TableRow.summary(
                    f"abduction/{label}",
                    "reversibility: Dice back vs null",
                    _sequence_dice(back.labels, null.labels[idx]),
                )
            )
            rows.append(
                TableRow.summary(
                    f"abduction/{label}",
                    "Dice counterfactual vs null",
                    _sequence_dice(cf.labels, null.labels[idx]),
                    note="how much the intervention changed",
                )
            )
            d_lvedv = ph_cf["LVEDV"].to_numpy() - ph_null["LVEDV"].to_numpy()[idx]
            if phantom:
                tdir = []
                for i in idx:
                    before, after = true_counterfactual(own.iloc[i].to_dict(), new.iloc[i].to_dict(), seed=int(i))
                    tdir.append(np.sign(after["LVEDV"] - before["LVEDV"]))
                rows.append(
                    TableRow(
                        f"abduction/{label}",
                        "effectiveness: LVEDV in the true direction (%)",
                        100.0 * float(np.mean(np.sign(d_lvedv) == tdir)),
                        n=len(idx),
                        units="%",
                    )
                )
            if preds is not None and change in preds.models:
                p0 = preds.predict(ph_null.iloc[idx])[change]
                p1 = preds.predict(ph_cf)[change]
                if change == "sex":
                    target = new["sex"].to_numpy()[idx].astype(int)
                    moved = p1[np.arange(len(idx)), target] > p0[np.arange(len(idx)), target]
                    rows.append(
                        TableRow(
                            f"abduction/{label}",
                            "effectiveness: P(new sex) rises (%)",
                            100.0 * float(moved.mean()),
                            n=len(idx),
                            units="%",
                        )
                    )
                else:
                    rows.append(
                        TableRow.summary(
                            f"abduction/{label}",
                            "effectiveness: predicted weight change",
                            p1 - p0,
                            units="kg",
                            note="true change +20 kg",
                        )
                    )
        out["abduction"] = {"composition_dice": comp, "latent_error": lat_err}
    notes = [
        f"Seed-based: {n_seeds} seeds, each with the other covariates of a test subject (cycled); both covariate sets "
        f"generated from the same initial noise (DDIM {steps} steps, eta 0, guidance {w:g}). Changes = after - before, "
        "mean ± sd over seeds; phenotypes as in Table 6.2.",
        *notes,
    ]
    if phantom:
        notes.append(
            "true model change: the phantom's covariate -> phenotype model with the same residual draw under both "
            "covariate sets (cmrkit.effects.true_counterfactual); direction right = sign of the generated LVEDV change "
            "equals the true one."
        )
    notes.append(
        "Abduction (Monteiro et al. 2023, 'Measuring axiomatic soundness of counterfactual image models'): DDIM "
        "inversion of each real test subject's latent under its own covariates, guidance 1. Composition: regenerating "
        "without a change should return the subject (Dice with its autoencoded masks). Effectiveness: after the "
        "intervention the frozen condition-recovery predictors should move to the new value and LVEDV in the model's "
        "direction. Reversibility: inverting the counterfactual and undoing the change should return the null result."
    )
    df = rep.save_table("ch6_counterfactuals", rows, notes=notes)
    _figure_counterfactuals(cfg, rep, data, ae, ldm, base, seeds, interventions)
    out["table"] = df
    return out


def _figure_counterfactuals(
    cfg: Any,
    rep: Report,
    data: SequenceData,
    ae: Any,
    ldm: Any,
    base: pd.DataFrame,
    seeds: np.ndarray,
    interventions: list,
) -> None:
    import matplotlib.pyplot as plt

    from ...figures import show
    from ...models.cond_diffusion import generate_sequences

    if not interventions:
        return
    zmid = data.shape[2] // 2
    fig, axes = plt.subplots(len(interventions), 5, figsize=(11, 2.4 * len(interventions)), squeeze=False)
    for r, (label, a_set, b_set) in enumerate(interventions):
        conds = pd.concat([base.iloc[:1].assign(**a_set), base.iloc[:1].assign(**b_set)], ignore_index=True)
        g = generate_sequences(
            ae,
            ldm,
            conds,
            [int(seeds[0])] * 2,
            guidance=guidance_weight(cfg),
            ddim_steps=int(cfg.ch6.ddim_steps),
            device=cfg.device,
        )
        ph = sequence_phenotypes(g.labels, data.reference_spacing)
        curves = volume_curves(g.labels, np.array(data.reference_spacing))["LV"]
        for c, (k, f, what) in enumerate(
            ((0, 0, "before, ED"), (1, 0, "after, ED"), (0, None, "before, ES"), (1, None, "after, ES"))
        ):
            frame = int(ph["ES_frame"][k]) if f is None else f
            ax = axes[r, c]
            ax.imshow(g.images[k][:, :, zmid, frame].T, cmap="gray", vmin=0, vmax=1)
            ax.contour(
                (g.labels[k][:, :, zmid, frame] == 2).T.astype(float), levels=[0.5], colors=["#2ca02c"], linewidths=0.8
            )
            ax.set_title(f"{what} (LVEDV {ph['LVEDV'][k]:.0f} mL)" if f == 0 else what, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=8)
        ax = axes[r, 4]
        for k, (name, col) in enumerate((("before", "#2f6fb0"), ("after", "#c0392b"))):
            ax.plot(curves[k], color=col, label=name)
        ax.set_xlabel("frame", fontsize=7)
        ax.set_ylabel("LV volume (mL)", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=6, frameon=False)
    fig.suptitle("Counterfactuals: the same noise, one covariate moved (mid slice, myocardium in green)", fontsize=9)
    fig.tight_layout()
    rep.save_figure(
        fig, "ch6_counterfactual_pairs", caption="Same seed, one covariate moved: ED/ES images and LV volume curves"
    )
    show(fig)


def cohort_ef_range(phenotypes: pd.DataFrame) -> tuple[float, float]:
    """The LVEF range (%) of the real cohort's :func:`sequence_phenotypes` (all subjects): the EF window of a
    physiological volume curve in :func:`curve_statistics`."""
    return float(np.nanmin(phenotypes["LVEF"])), float(np.nanmax(phenotypes["LVEF"]))


def curve_statistics(labels: np.ndarray, spacing: Any, ef_range: tuple[float, float]) -> pd.DataFrame:
    """Per sequence: the phenotypes, ``roughness`` (mean |second difference| of the LV curve, cyclic, / LVEDV),
    ``ed_at_0`` (frame 0 within 2 % of the largest LV volume), ``es_ok`` (ES phase in [0.25, 0.55]),
    ``ef_ok`` (LVEF within ``ef_range``) and ``physiological`` (both) -- see :func:`temporal_plausibility`."""
    ph = sequence_phenotypes(labels, spacing)
    lv = volume_curves(labels, np.asarray(spacing))["LV"]
    edv = np.where(lv[:, 0] > 0, lv[:, 0], np.nan)
    second = np.roll(lv, -1, axis=1) - 2 * lv + np.roll(lv, 1, axis=1)
    ph["roughness"] = np.abs(second).mean(axis=1) / edv
    ph["ed_at_0"] = lv[:, 0] >= 0.98 * lv.max(axis=1)
    ph["es_ok"] = (ph["ES_phase"] >= 0.25) & (ph["ES_phase"] <= 0.55)
    ph["ef_ok"] = (ph["LVEF"] >= ef_range[0]) & (ph["LVEF"] <= ef_range[1])
    ph["physiological"] = ph["es_ok"] & ph["ef_ok"]
    return ph


def curve_rows(who: str, stats: pd.DataFrame, rough_hi: float, *, note: str) -> list[TableRow]:
    """The shares (%) of :func:`curve_statistics` ``stats`` that pass each check -- physiological (with
    ``note``), ES timing, LVEF range, ED at frame 0, roughness at most ``rough_hi`` -- as rows of ``who``."""
    n = len(stats)

    def pct(ok: Any) -> float:
        return 100.0 * float(np.mean(ok))

    return [
        TableRow(who, "physiological curve (%)", pct(stats["physiological"]), n=n, units="%", note=note),
        TableRow(who, "ES in 25-55 % of the cycle (%)", pct(stats["es_ok"]), n=n, units="%"),
        TableRow(who, "LVEF in the cohort's range (%)", pct(stats["ef_ok"]), n=n, units="%"),
        TableRow(who, "ED at frame 0 (%)", pct(stats["ed_at_0"]), n=n, units="%"),
        TableRow(who, "roughness <= cohort 95th percentile (%)", pct(stats["roughness"] <= rough_hi), n=n, units="%"),
    ]


def temporal_plausibility(
    cfg: Any,
    rep: Report,
    data: SequenceData,
    samples: SampleSet,
    population: SampleSet,
    autoencoder: Trained | None = None,
) -> dict[str, Any]:
    """Volume curves of generated sequences against the cohort's (table ``ch6_temporal``, figure ``ch6_volume_curves``).

    Per sequence: ES timing = frame of minimal LV volume / T; LVEF; ED at frame 0 (frame 0 within 2 % of
    the largest LV volume); roughness = mean |second difference| of the LV curve (cyclic) / LVEDV.
    Physiological = ES between 25 % and 55 % of the cycle and LVEF within the real cohort's range (issue
    bar: >= 90 % of generated sequences); the real test sequences are scored the same way, and with
    ``autoencoder`` also their reconstructions (decoded latent means): the curves the decoder can give at
    best, which separates what the autoencoder loses from what the diffusion model gets wrong.
    """
    import matplotlib.pyplot as plt

    from ...figures import show

    real_all = sequence_phenotypes(data.labels, data.spacing)
    ef_lo, ef_hi = cohort_ef_range(real_all)

    def stats(labels: np.ndarray, spacing: Any) -> pd.DataFrame:
        return curve_statistics(labels, spacing, (ef_lo, ef_hi))

    sets = {
        "generated (test covariates)": stats(samples.arrays["labels"], data.reference_spacing),
        "generated (population set)": stats(population.arrays["labels"], data.reference_spacing),
        "real test": stats(data.labels[data.index("test")], data.spacing[data.index("test")]),
    }
    if autoencoder is not None:
        te = data.index("test")
        _, rec_l = reconstruct(autoencoder.model, data.images[te], data.labels[te], device=cfg.device)
        sets["autoencoded real test (ceiling)"] = stats(rec_l, data.spacing[te])
    rough_hi = float(np.nanpercentile(stats(data.labels, data.spacing)["roughness"], 95))
    rows: list[TableRow] = []
    for who, ph in sets.items():
        rows += curve_rows(who, ph, rough_hi, note="bar: >= 90 % (generated)")
        rows.append(TableRow.summary(who, "ES phase", ph["ES_phase"]))
        rows.append(TableRow.summary(who, "LVEF", ph["LVEF"], units="%"))
        rows.append(TableRow.summary(who, "roughness", ph["roughness"]))
    df = rep.save_table(
        "ch6_temporal",
        rows,
        notes=[
            f"LV blood-pool volume per frame from the masks (T = {data.frames} frames, frame 0 = ED). ES phase = "
            "frame of "
            "minimal LV volume / T. Physiological: ES phase in [0.25, 0.55] and LVEF within the real cohort's range "
            f"[{ef_lo:.1f}, {ef_hi:.1f}] %.",
            f"Roughness = mean |V(t+1) - 2 V(t) + V(t-1)| / LVEDV over the cycle (cyclic); the cohort's 95th "
            f"percentile is {rough_hi:.4f}.",
        ],
    )
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    t = np.arange(data.frames) / data.frames
    lv_real = volume_curves(data.labels, data.spacing)["LV"]
    lv_gen = volume_curves(samples.arrays["labels"], np.array(data.reference_spacing))["LV"]
    for curve in lv_real:
        axes[0].plot(t, curve / max(curve[0], 1e-6), color="0.6", lw=0.5, alpha=0.5)
    for curve in lv_gen[:: max(1, len(lv_gen) // 100)]:
        axes[0].plot(t, curve / max(curve[0], 1e-6), color="#c0392b", lw=0.5, alpha=0.4)
    axes[0].plot([], [], color="0.6", label="real")
    axes[0].plot([], [], color="#c0392b", label="generated")
    axes[0].set_xlabel("phase (frame / T)")
    axes[0].set_ylabel("LV volume / LVEDV")
    axes[0].legend(fontsize=7, frameon=False)
    gen = sets["generated (test covariates)"]
    axes[1].hist(
        [real_all["ES_phase"], gen["ES_phase"]],
        bins=np.linspace(0, 1, 21),
        density=True,
        label=["real", "generated"],
        color=["0.6", "#c0392b"],
    )
    axes[1].axvspan(0.25, 0.55, color="#2ca02c", alpha=0.1)
    axes[1].set_xlabel("ES phase")
    axes[2].hist(
        [real_all["LVEF"].dropna(), gen["LVEF"].dropna()],
        bins=20,
        density=True,
        label=["real", "generated"],
        color=["0.6", "#c0392b"],
    )
    axes[2].axvspan(ef_lo, ef_hi, color="#2ca02c", alpha=0.1)
    axes[2].set_xlabel("LVEF (%)")
    for ax in axes[1:]:
        ax.legend(fontsize=7, frameon=False)
    fig.suptitle("Temporal plausibility: LV volume curves, ES timing and EF (green: physiological window)", fontsize=9)
    fig.tight_layout()
    rep.save_figure(
        fig, "ch6_volume_curves", caption="LV volume curves, ES timing and EF of generated vs real sequences"
    )
    show(fig)
    return {"table": df, "sets": sets}
