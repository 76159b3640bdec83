"""Covariate validation, encoding and the condition encoder (cmrkit.models.conditioning)."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from cmrkit.models.conditioning import COVARIATE_NAMES, ConditionEncoder, ConditionError, ConditionSpace


@pytest.fixture
def cohort():
    rng = np.random.default_rng(0)
    n = 40
    return pd.DataFrame(
        {
            "subject_id": [f"S{i}" for i in range(n)],
            "age": rng.uniform(45, 80, n).round(1),
            "sex": rng.integers(0, 2, n),
            "height_cm": rng.uniform(150, 195, n).round(1),
            "weight_kg": rng.uniform(50, 120, n).round(1),
            "smoking": np.tile([0, 1, 2], n)[:n],
            "alcohol": np.tile([0, 1, 2, 2], n)[:n],
            "sbp": rng.uniform(100, 180, n).round(0),
            "dbp": rng.uniform(60, 100, n).round(0),
        }
    )


@pytest.fixture
def space(cohort):
    return ConditionSpace.fit(cohort.iloc[:30], cohort=cohort)


def _one(cohort, **change):
    row = {k: cohort.iloc[0][k] for k in COVARIATE_NAMES}
    row.update(change)
    return row


def test_fit_statistics_and_ranges(cohort, space):
    tr = cohort.iloc[:30]
    s = space.stats["age"]
    assert s["mean"] == pytest.approx(tr["age"].mean())
    assert s["sd"] == pytest.approx(tr["age"].std(ddof=1))
    # the allowed range covers the whole cohort (rounded outwards to 0.1), not only the training split
    assert s["min"] <= cohort["age"].min() and s["max"] >= cohort["age"].max()
    assert s["max"] - cohort["age"].max() < 0.1 + 1e-9
    assert space.stats["smoking"]["observed"] == [0, 1, 2]
    assert space.feature_dim == 5 + 2 + 3 + 3


def test_encode_decode_round_trip(cohort, space):
    f = space.encode(cohort)
    assert f.shape == (len(cohort), space.feature_dim) and f.dtype == np.float32
    back = pd.DataFrame(space.decode(f))
    for k in COVARIATE_NAMES:
        np.testing.assert_allclose(back[k], cohort[k].astype(float), atol=1e-3, err_msg=k)
    # continuous features are z-scores with the training statistics; categorical ones one-hot
    names = space.feature_names()
    j = names.index("weight_kg")
    s = space.stats["weight_kg"]
    np.testing.assert_allclose(f[:, j], (cohort["weight_kg"] - s["mean"]) / s["sd"], rtol=1e-5)
    onehot = f[:, names.index("smoking=never") : names.index("smoking=current") + 1]
    np.testing.assert_array_equal(onehot.sum(1), 1.0)
    np.testing.assert_array_equal(onehot.argmax(1), cohort["smoking"])


def test_level_names_are_accepted(cohort, space):
    a = space.validate(_one(cohort, sex="F", smoking="current", alcohol="Never"))
    b = space.validate(_one(cohort, sex=0, smoking=2, alcohol=0))
    assert a == b
    assert space.validate(_one(cohort, sex="male"))["sex"] == 1.0
    assert space.validate(_one(cohort, age="61.5"))["age"] == 61.5


@pytest.mark.parametrize(
    "change, match",
    [
        ({"age": 12}, r"age=12 is outside the allowed range \[4\d\.\d, \d\d\.\d\] years"),
        ({"age": math.nan}, r"age=nan is not a finite number"),
        ({"sex": "x"}, r"sex='x' is not one of 0 or 'female', 1 or 'male'"),
        ({"sex": 2}, r"sex=2 is not one of"),
        ({"smoking": 1.5}, r"smoking=1.5 is not one of 0 or 'never', 1 or 'previous', 2 or 'current'"),
        ({"weight_kg": "heavy"}, r"weight_kg='heavy' is not a number"),
        ({"sbp": None}, r"sbp=None is not a valid value"),
        ({"sex": True}, r"sex=True is not a valid value"),
        ({"dbp": 1e6}, r"dbp=1e\+06 is outside the allowed range"),
    ],
)
def test_bad_values_name_the_covariate_and_what_is_allowed(cohort, space, change, match):
    with pytest.raises(ConditionError, match=match):
        space.validate(_one(cohort, **change))


def test_missing_and_unknown_keys(cohort, space):
    row = _one(cohort)
    del row["dbp"]
    with pytest.raises(ConditionError, match=r"missing covariate\(s\) \['dbp'\]"):
        space.validate(row)
    with pytest.raises(ConditionError, match=r"unknown covariate\(s\) 'height' \(did you mean 'height_cm'\?\)"):
        space.validate({**_one(cohort), "height": 170})
    with pytest.raises(ConditionError, match="condition set 1: age=12"):
        space.validate_many([_one(cohort), _one(cohort, age=12)])
    with pytest.raises(ConditionError, match="must be a mapping"):
        space.validate([1, 2, 3])


def test_unseen_level_is_refused():
    tab = pd.DataFrame({"age": [50.0, 60, 70], "smoking": [0, 0, 1]})
    sp = ConditionSpace.fit(tab, ["age", "smoking"])
    with pytest.raises(ConditionError, match="smoking='current' does not occur in the cohort"):
        sp.validate({"age": 55, "smoking": 2})


def test_fit_rejects_bad_cohorts(cohort):
    bad = cohort.copy()
    bad.loc[3, "age"] = np.nan
    with pytest.raises(ConditionError, match=r"column 'age' has 1 missing value\(s\) \(first at row 3\)"):
        ConditionSpace.fit(bad)
    with pytest.raises(ConditionError, match="has no column 'dbp'"):
        ConditionSpace.fit(cohort.drop(columns="dbp"))
    with pytest.raises(ConditionError, match="unknown covariate"):
        ConditionSpace.fit(cohort, ["age", "bmi"])
    const = cohort.assign(age=60.0)
    with pytest.raises(ConditionError, match="sd 0.0"):
        ConditionSpace.fit(const)


def test_serialisation_round_trip_and_defaults(cohort, space):
    d = json.loads(json.dumps(space.to_dict()))
    again = ConditionSpace.from_dict(d)
    assert again == space
    np.testing.assert_array_equal(again.encode(cohort), space.encode(cohort))
    defaults = space.defaults()
    assert space.validate(defaults) == defaults


def test_condition_encoder_tokens():
    enc = ConditionEncoder(13, dim=16, n_tokens=4, hidden=8)
    out = enc(torch.zeros(3, 13))
    assert out.shape == (3, 4, 16)
    with pytest.raises(ValueError, match=r"expected features \(B, 13\)"):
        enc(torch.zeros(3, 12))
    with pytest.raises(ValueError, match="n_tokens must be >= 1"):
        ConditionEncoder(13, dim=16, n_tokens=0)
