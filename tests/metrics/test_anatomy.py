"""Rule-based anatomical validity (cmrkit.metrics.anatomy) on hand-made valid and broken hearts."""

from __future__ import annotations

import numpy as np
import pytest

from cmrkit.metrics.anatomy import RULES, check_volume, check_volumes, validity_summary


def _disc(shape, cx, cy, r):
    x, y = np.mgrid[: shape[0], : shape[1]]
    return (x - cx) ** 2 + (y - cy) ** 2 <= r**2


def heart(n_slices: int = 8, size: int = 48) -> np.ndarray:
    """A valid stack (X, Y, Z), base first: LV cavity inside a myocardial ring, an RV crescent attached
    to its side, radii shrinking to an apical cap of myocardium only, one empty slice past the apex."""
    vol = np.zeros((size, size, n_slices), np.uint8)
    for z in range(n_slices - 1):
        r_lv = 10 - z  # 10 .. 4
        s = np.zeros((size, size), np.uint8)
        if z < n_slices - 3:  # the RV stops before the apex
            rv = _disc((size, size), 24, 24 - r_lv - 4, r_lv + 3) & ~_disc((size, size), 24, 24, r_lv + 3)
            s[rv] = 3
        s[_disc((size, size), 24, 24, r_lv + 3)] = 2
        if z < n_slices - 2:  # the last heart slice is the apical cap (myocardium only)
            s[_disc((size, size), 24, 24, r_lv)] = 1
        vol[..., z] = s
    return vol


def test_valid_heart_passes_every_rule_in_both_orientations():
    v = heart()
    r = check_volume(v)
    assert r.valid, r.failures
    assert set(r.rules) == set(RULES)
    assert check_volume(v[..., ::-1], apex_last=False).valid
    assert check_volume(np.moveaxis(v, 2, 0), slice_axis=0).valid


def test_fragments_are_found_and_single_pixels_ignored():
    v = heart()
    v[2, 2, 1] = 3  # one stray pixel: below the resolution, not a fragment
    assert check_volume(v).valid
    v[2:4, 2:4, 1] = 3  # a 4-pixel RV island is a second component
    r = check_volume(v)
    assert not r.rules["one_component"] and r.rules["no_holes"]
    assert any("RV in 2 pieces" in f for f in r.failures)
    assert check_volume(v, min_fragment_px=5).rules["one_component"]  # a 4-pixel island is ignored at 5


def test_holes():
    v = heart()
    v[24, 24, 0] = 0  # hole in the LV cavity
    r = check_volume(v)
    assert not r.rules["no_holes"] and not r.rules["myo_closes_lv"]  # the cavity also touches background
    v = heart()
    v[24, 24 + 11, 0] = 0  # hole inside the myocardial wall
    assert not check_volume(v).rules["no_holes"]


def test_cavity_must_be_enclosed_by_myocardium():
    v = heart()
    s = v[..., 2]
    s[24, 24 + 8 : 24 + 12][s[24, 24 + 8 : 24 + 12] == 2] = 0  # cut the ring: cavity touches background
    r = check_volume(v)
    assert not r.rules["myo_closes_lv"] and "slice 2" in " ".join(r.failures)
    v = heart()
    s = v[..., 1]
    s[(s == 2) & _disc(s.shape, 24, 24, 12) & (np.mgrid[:48, :48][1] < 24)] = 3  # RV replaces the septum
    assert not check_volume(v).rules["myo_closes_lv"]


def test_rv_must_touch_the_myocardium():
    v = heart()
    rv = v[..., 0] == 3
    v[..., 0][rv] = 0
    v[..., 0][np.roll(rv, -8, axis=1)] = 3  # moved away from the ring
    r = check_volume(v)
    assert not r.rules["rv_beside_lv"]


def test_stack_rules():
    v = heart()
    gap = v.copy()
    gap[..., 3] = 0  # an empty slice inside the heart
    assert not check_volume(gap).rules["contiguous"]
    flipped = v[..., ::-1]  # apex first while base first is expected
    r = check_volume(flipped)
    assert not r.rules["base_to_apex"] and any("apical half" in f for f in r.failures)
    two_peaks = v.copy()
    two_peaks[..., 4] = two_peaks[..., 0]  # a basal-sized slice near the apex
    assert not check_volume(two_peaks).rules["base_to_apex"]
    cap_at_base = v.copy()
    cap_at_base[..., 0][cap_at_base[..., 0] == 1] = 2  # myocardium without cavity at the base
    assert not check_volume(cap_at_base).rules["base_to_apex"]
    rv_long = v.copy()
    rv_long[2:6, 2:6, 7] = 3  # RV on the slice past the apex
    assert not check_volume(rv_long).rules["base_to_apex"]


def test_area_growth_towards_the_apex_within_tolerance():
    v = heart()
    s = v[..., 3]  # cavity radius 7 inside a myocardium of radius 10
    s[_disc(s.shape, 24, 24, 9)] = 1  # cavity radius 9: larger than slice 2's (8), by ~17 % of the peak area
    assert check_volume(v).rules["myo_closes_lv"]
    assert not check_volume(v, area_tol=0.1).rules["base_to_apex"]
    assert check_volume(v, area_tol=0.25).rules["base_to_apex"]


def test_summary_and_bad_input():
    good, bad = heart(), heart()
    bad[..., 3] = 0
    reps = check_volumes(np.stack([good, bad, good, good]))
    s = validity_summary(reps)
    assert s["valid"] == 0.75 and s["contiguous"] == 0.75 and s["no_holes"] == 1.0
    assert not check_volume(np.zeros((8, 8, 4), np.uint8)).valid
    with pytest.raises(ValueError, match="outside 0..3"):
        check_volume(np.full((4, 4, 2), 5))
    with pytest.raises(ValueError, match="3-D"):
        check_volume(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="no reports"):
        validity_summary([])
