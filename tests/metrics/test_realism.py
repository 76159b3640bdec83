"""cmrkit.metrics.realism: closed-form contrast, noise, SNR, tag period/fading and phenotype comparisons."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from cmrkit.metrics import realism as R


def _heart(h: int = 96, w: int = 96, blood: float = 300.0, myo: float = 100.0, bg: float = 150.0):
    """A disc of blood inside a myocardial ring on a flat tissue background, and its labels."""
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(yy - h / 2, xx - w / 2)
    lab = np.zeros((h, w), np.uint8)
    lab[r < 14] = 1
    lab[(r >= 14) & (r < 22)] = 2
    img = np.full((h, w), bg)
    img[lab == 1] = blood
    img[lab == 2] = myo
    return img, lab


def _rician(a: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return np.hypot(a + sigma * rng.standard_normal(a.shape), sigma * rng.standard_normal(a.shape))


# ------------------------------------------------------------------------------------------ contrast
def test_contrast_ratio_is_exact_without_noise_and_nan_where_labels_are_missing():
    img, lab = _heart()
    vol = np.stack([img, img * 2.0, img], axis=-1)
    labs = np.stack([lab, lab, np.zeros_like(lab)], axis=-1)
    c = R.tissue_contrast(vol, labs, noise="residual")
    assert c.ratio.shape == (3,)
    np.testing.assert_allclose(c.ratio[:2], 3.0)
    np.testing.assert_allclose(c.blood[:2], [300.0, 600.0])
    assert np.isnan(c.ratio[2]) and c.summary()["n_planes"] == 2


def test_cnr_matches_closed_form_with_known_noise():
    rng = np.random.default_rng(0)
    img, lab = _heart(160, 160)
    sigma = 5.0
    noisy = img + sigma * rng.standard_normal(img.shape)
    c = R.tissue_contrast(noisy, lab, noise="residual")
    assert c.sigma == pytest.approx(sigma, rel=0.08)
    assert c.cnr == pytest.approx(200.0 / sigma, rel=0.08)


def test_contrast_rejects_mismatched_shapes():
    img, lab = _heart()
    with pytest.raises(ValueError, match="labels"):
        R.tissue_contrast(img, lab[:-1])


# ------------------------------------------------------------------------------------------ noise
@pytest.mark.parametrize("quantise", [False, True])
def test_residual_noise_estimate_ignores_smooth_shading_and_quantisation(quantise):
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:128, 0:128]
    clean = 200.0 + 0.8 * xx + 0.5 * yy  # linear shading is annihilated by the kernel
    clean[40:80, 40:80] += 150.0  # edges are outliers for the median
    img = clean + 4.0 * rng.standard_normal(clean.shape)
    if quantise:
        img = np.round(img)
    s, used, n = R.noise_sigma(img, "residual")
    assert used == "residual" and n > 1000
    assert s == pytest.approx(4.0, rel=0.05)


def _body_in_air(sigma: float, rng: np.random.Generator, smooth: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    img, lab = _heart(128, 128)
    yy, xx = np.mgrid[0:128, 0:128]
    body = np.hypot((yy - 64) / 40.0, (xx - 64) / 50.0) < 1
    clean = np.where(body, img, 0.0)
    re = sigma * rng.standard_normal(clean.shape)
    im = sigma * rng.standard_normal(clean.shape)
    if smooth:
        re, im = (ndimage.gaussian_filter(a, smooth) / np.sqrt(1 / (4 * np.pi * smooth**2)) for a in (re, im))
    return np.hypot(clean + re, im), np.where(body, lab, 0)


def test_air_noise_from_rayleigh_background():
    img, lab = _body_in_air(6.0, np.random.default_rng(2))
    s, used, n = R.noise_sigma(img, "air")
    assert used == "air" and n >= 300
    assert s == pytest.approx(6.0, rel=0.06)
    assert R.noise_sigma(img, "auto")[1] == "air"


def test_correlated_air_noise_is_rejected_and_auto_falls_back_to_residual():
    img, _ = _body_in_air(6.0, np.random.default_rng(3), smooth=1.5)
    s, used, _ = R.noise_sigma(img, "air")
    assert used == "air" and math.isnan(s)
    assert R.noise_sigma(img, "auto")[1] == "residual"


def test_rayleigh_check_accepts_rayleigh_and_rejects_gaussian_offset():
    rng = np.random.default_rng(4)
    ok, s_sd, s_med = R.rayleigh_check(rng.rayleigh(3.0, 20000))
    assert ok and s_sd == pytest.approx(3.0, rel=0.03) and s_med == pytest.approx(3.0, rel=0.03)
    assert not R.rayleigh_check(50 + 3 * rng.standard_normal(20000))[0]


def test_acquired_support_excludes_zero_filled_borders_only():
    img = np.zeros((40, 50))
    img[10:30, 5:45] = 1.0
    img[15, 20] = 0.0  # a zero inside the field of view stays in
    sup = R.acquired_support(img)
    assert sup.sum() == 20 * 40 and sup[15, 20] and not sup[5, 20]


# ------------------------------------------------------------------------------------------ SNR
def test_snr_is_rician_corrected_and_close_to_truth():
    rng = np.random.default_rng(5)
    img, lab = _body_in_air(5.0, rng)
    clean, _ = _heart(128, 128)
    res = R.snr(img, lab, method="air")
    # myocardium amplitude 100, sigma 5 -> SNR 20
    assert float(res.snr) == pytest.approx(20.0, rel=0.08)
    assert str(res.method) == "air"
    low = R.snr(_rician(np.full((64, 64), 10.0), 5.0, rng), np.full((64, 64), 2, np.uint8), method="residual")
    raw_mean = 10.0  # amplitude; the uncorrected Rician mean would be ~11.2
    assert float(low.signal) == pytest.approx(raw_mean, rel=0.1)


# ------------------------------------------------------------------------------------------ tagging
def _grid(T, h, w, period_px, depth, angle_deg=0.0, a=100.0):
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    th = math.radians(angle_deg)
    u = xx * math.cos(th) + yy * math.sin(th)
    v = -xx * math.sin(th) + yy * math.cos(th)
    k = 2 * math.pi / period_px
    out = np.empty((T, h, w))
    for t in range(T):
        m = depth[t]
        out[t] = a * (1 + m * np.cos(k * u)) * (1 + m * np.cos(k * v))
    return out


@pytest.mark.parametrize("angle", [0.0, 30.0])
def test_tag_period_and_modulation_depth_closed_form(angle):
    depth = 0.8 * np.exp(-np.arange(6) / 4.0)
    seq = _grid(6, 96, 96, period_px=8.0, depth=depth, angle_deg=angle)
    m = R.tag_period_and_contrast(seq, px_mm=0.75)  # period 8 px x 0.75 mm = 6 mm
    assert m.period_mm == pytest.approx(6.0, rel=0.01)
    assert len(m.periods_mm) == 2
    np.testing.assert_allclose(m.contrast, depth, rtol=0.03)
    np.testing.assert_allclose(m.fading, depth / depth[0], rtol=0.03)


def test_tag_contrast_inside_a_ring_mask():
    depth = np.array([0.6, 0.3])
    seq = _grid(2, 128, 128, period_px=6.0, depth=depth)
    yy, xx = np.mgrid[0:128, 0:128]
    r = np.hypot(yy - 64, xx - 64)
    ring = (r > 15) & (r < 40)
    m = R.tag_period_and_contrast(seq, ring, px_mm=1.0)
    assert m.period_mm == pytest.approx(6.0, rel=0.02)
    np.testing.assert_allclose(m.contrast, depth, rtol=0.08)
    assert m.meta["window"] == "mask"


def test_tag_detection_errors():
    flat = np.full((3, 64, 64), 100.0) + np.random.default_rng(0).standard_normal((3, 64, 64))
    with pytest.raises(ValueError, match="no tag peak"):
        R.tag_period_and_contrast(flat, px_mm=1.0)
    with pytest.raises(ValueError, match="tag_seq"):
        R.tag_period_and_contrast(np.zeros((64, 64)), px_mm=1.0)
    with pytest.raises(ValueError, match="myo_mask"):
        R.tag_period_and_contrast(flat, np.zeros((64, 64)), px_mm=1.0)


def test_line_tags_give_one_direction():
    yy, xx = np.mgrid[0:96, 0:96]
    seq = np.stack([100 * (1 + 0.5 * np.cos(2 * np.pi * xx / 8.0))] * 2)
    m = R.tag_period_and_contrast(seq, px_mm=1.0)
    assert len(m.periods_mm) == 1 and m.period_mm == pytest.approx(8.0, rel=0.01)
    np.testing.assert_allclose(m.contrast, 0.5, rtol=0.03)


def test_spamm_relaxation_model_closed_form():
    a0, a1 = R.spamm_harmonics(90.0, order=1)  # 1-1 SPAMM: cos^2(45) - sin^2(45) cos p
    assert a0 == pytest.approx(0.5, abs=1e-9) and a1 == pytest.approx(-0.5, abs=1e-9)
    t1 = 1000.0
    t = np.array([0.0, 300.0, 900.0])
    e = np.exp(-t / t1)
    np.testing.assert_allclose(R.expected_tag_contrast(t, t1, order=1, grid=False), (e / 2) / (1 - e / 2))
    np.testing.assert_allclose(R.expected_tag_contrast(t, t1, order=1, grid=True), (e / 4) / (1 - 3 * e / 4))
    assert R.expected_tag_contrast(0.0, t1, order=1) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        R.expected_tag_contrast(t, 0.0)


# ------------------------------------------------------------------------------------------ phenotypes
def _manifest():
    return pd.DataFrame(
        {
            "subject_id": ["a", "b", "c", "d"],
            "sex": [0, 0, 1, 1],
            "bsa": [1.6, 1.8, 2.0, 2.0],
            "lvedv_ml_measured": [120.0, 140.0, 150.0, 170.0],
            "lvesv_ml_measured": [50.0, 50.0, 60.0, 70.0],
            "lvef_pct_measured": [58.3, 64.3, 60.0, 58.8],
            "lvm_g_measured": [64.0, 90.0, 100.0, 120.0],
            "rvedv_ml_measured": [130.0, 150.0, 180.0, 200.0],
            "rvesv_ml_measured": [50.0, 60.0, 80.0, 90.0],
            "rvef_pct_measured": [61.5, 60.0, 55.6, 55.0],
        }
    )


def test_phenotype_comparison_numbers():
    refs = (
        R.ReferenceValue("LVEDV", "female", "mL", "test", "verified", mean=100.0, sd=20.0),
        R.ReferenceValue("LVSV", "male", "mL", "test", "verified", lo=80.0, hi=95.0),
        R.ReferenceValue("LVMi", "female", "g/m²", "test", "verified", mean=45.0, sd=5.0),
    )
    out = R.phenotype_comparison(_manifest(), refs).set_index(["phenotype", "sex"])
    r = out.loc[("LVEDV", "female")]
    assert (
        r.n == 2 and r.cohort_mean == pytest.approx(130.0) and r.cohort_sd == pytest.approx(np.std([120, 140], ddof=1))
    )
    assert r.std_diff == pytest.approx(1.5) and r.frac_in_range == pytest.approx(0.5)  # 140 > 100 + 1.96 * 20
    sv = out.loc[("LVSV", "male")]  # EDV - ESV = 90, 100
    assert sv.cohort_mean == pytest.approx(95.0) and sv.frac_in_range == pytest.approx(0.5) and np.isnan(sv.std_diff)
    mi = out.loc[("LVMi", "female")]  # 64 / 1.6 = 40, 90 / 1.8 = 50
    assert mi.cohort_mean == pytest.approx(45.0) and mi.std_diff == pytest.approx(0.0)


def test_phenotype_comparison_subset_and_errors():
    m = _manifest()
    refs = (R.ReferenceValue("LVEDV", "male", "mL", "t", "verified", mean=150.0, sd=10.0),)
    out = R.phenotype_comparison(m, refs, subset=[True, True, True, False])
    assert out.loc[0, "n"] == 1 and out.loc[0, "cohort_mean"] == pytest.approx(150.0)
    with pytest.raises(ValueError, match="no manifest column"):
        R.phenotype_comparison(m.drop(columns="lvedv_ml_measured"), refs)
    with pytest.raises(ValueError, match="sex column"):
        R.phenotype_comparison(m.assign(sex=["x", "y", "z", "w"]), refs)
    with pytest.raises(ValueError, match="subset"):
        R.phenotype_comparison(m, refs, subset=[True])


def test_default_reference_is_sourced_and_consistent():
    df = R.reference_frame()
    assert set(df["status"]) <= {"verified", "transcribed", "loose"}
    assert (df["range_lo"] < df["range_hi"]).all()
    lvef = df[(df.phenotype == "LVEF") & (df.sex == "female")].iloc[0]
    assert lvef["mean"] == 61.0 and lvef["sd"] == 5.0 and "Petersen" in lvef["source"]
    # the default reference works on a manifest with the phantom's columns
    out = R.phenotype_comparison(_manifest())
    assert len(out) == len(R.UKB_REFERENCE) and out["n"].gt(0).all()


# ------------------------------------------------------------------------------------------ real data
@pytest.mark.realdata
def test_real_mnms_contrast_and_noise(realdata):
    from cmrkit.io import iter_subjects

    subs = [s for s in iter_subjects(realdata / "mnms", "mnms") if s.cine is not None]
    assert subs
    s = subs[0]
    c = R.tissue_contrast(s.frame(s.ed_frame), s.label_ed, noise="residual").summary()
    assert 2.0 < c["ratio"] < 9.0 and c["n_planes"] >= 5
    snr = R.snr(s.frame(s.ed_frame), s.label_ed, method="residual").summary()
    assert 5.0 < snr["snr"] < 60.0


def test_spamm_profile_nulls_tag_lines_at_90_degrees():
    for order in (1, 2, 3):
        np.testing.assert_allclose(R.spamm_profile([0.0, np.pi], 90.0, order), [0.0, 1.0], atol=1e-12)
    # a smaller flip leaves magnetisation on the tag lines: cos(theta) for every order at phase 0
    assert R.spamm_profile(0.0, 60.0, 2) == pytest.approx(0.5)
