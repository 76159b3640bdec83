"""Tests for cmrkit.tagging.acquisition: phantom tagging with the variation of real acquisitions."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cmrkit.tagging.acquisition import (
    STRESS_RANGES,
    TRAIN_RANGES,
    Acquisition,
    degrade,
    phantom_tagged_slices,
    sample_acquisition,
    tag_contrast_ratio,
    wall_mask,
)

PLAIN = Acquisition(snr=1e6, gain=1000.0)  # no fading, blur, remap, padding or missing frames; ~no noise


def _sinusoid(t_n: int = 6, h: int = 48, w: int = 40, period: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    U = np.full((t_n, h, w), 2.0)
    D = np.broadcast_to(-0.5 * (1 - np.cos(2 * np.pi * xx / period)), (t_n, h, w)).copy()
    return U, D


def _amplitude(img: np.ndarray, period: float = 5.0) -> float:
    """First-harmonic amplitude of a frame along x (projection on the known cosine)."""
    xx = np.arange(img.shape[1], dtype=float)
    c = np.cos(2 * np.pi * xx / period)
    rows = img - img.mean(axis=1, keepdims=True)
    return float(2 * (rows * c).mean())


def test_truth_equals_the_phantom_ground_truth():
    from cmrkit.phantom import Geometry, generate_subject, sample_subject_params

    geo = Geometry(matrix=128, pixel_mm=1.8, slices=10, cine_frames=20, tag_frames=20)
    acq = Acquisition(pixel_mm=geo.tag_pixel_mm, tag_spacing_mm=geo.tag_spacing_mm, matrix=geo.tag_matrix_resolved)
    slices = phantom_tagged_slices(1, seed=3, acquisition=acq, pathology_fraction=0.2)
    subj = generate_subject(sample_subject_params(1, seed=3, pathology_fraction=0.2), geometry=geo)
    truth = subj.ground_truth["landmarks_px"]
    np.testing.assert_allclose(np.stack([s.landmarks for s in slices]), truth, atol=1e-3)
    assert [s.region for s in slices] == ["basal", "mid", "apical"]
    # noise-free tagged render + the kit's noise is the phantom's image up to noise: same tag pattern
    img = slices[1].images
    ref = np.transpose(subj.tagging[1], (2, 1, 0))
    assert img.shape == ref.shape
    assert np.corrcoef(img[0].ravel(), ref[0].ravel())[0, 1] > 0.9


def test_plain_acquisition_recombines_anatomy_and_tags():
    U, D = _sinusoid()
    m = np.zeros(U.shape[1:], bool)
    m[10:20, 10:20] = True
    img, info = degrade(U, D, PLAIN, m, rng=0)
    # the frame-0 myocardium (the mask) is scaled to a mean of ``gain``
    scale = 1000.0 / (U[0] + D[0])[m].mean()
    np.testing.assert_allclose(img, np.round((U + D) * scale), atol=1.0)
    assert info["box"] == (0, U.shape[1], 0, U.shape[2])
    assert not info["missing"].any()


def test_rf_fading_scales_the_tag_modulation_geometrically():
    U, D = _sinusoid(t_n=8)
    m = np.ones(U.shape[1:], bool)
    acq = dataclasses.replace(PLAIN, rf_fade=0.8, gain=1000.0)
    img, _ = degrade(U, D, acq, m, rng=0)
    amp = np.array([_amplitude(f) for f in img])
    np.testing.assert_allclose(amp / amp[0], 0.8 ** np.arange(8), rtol=0.02, atol=0.01)
    # the anatomy (mean) is untouched apart from the lost modulation offset
    assert abs(img[-1].mean() - 1000.0 * 2.0 / (U[0] + D[0]).mean()) < 0.2 * img[-1].mean()


def test_temporal_blur_mixes_neighbouring_frames():
    t_n, h, w = 5, 16, 16
    U = np.ones((t_n, h, w))
    D = np.zeros((t_n, h, w))
    D[2] = -0.5  # one dark frame
    acq = dataclasses.replace(PLAIN, temporal_blur=0.25, gain=1000.0)
    img, _ = degrade(U, D, acq, np.ones((h, w), bool), rng=0)
    f = img.mean(axis=(1, 2)) / 1000.0
    np.testing.assert_allclose(f, [1.0, 0.875, 0.75, 0.875, 1.0], atol=2e-3)


def test_noise_level_matches_the_snr():
    U = np.ones((2, 64, 64))
    D = np.zeros_like(U)
    acq = dataclasses.replace(PLAIN, snr=20.0, gain=400.0)
    img, info = degrade(U, D, acq, np.ones((64, 64), bool), rng=1)
    assert info["sigma"] == pytest.approx(400.0 / 20.0)
    # Rician at SNR 20 is close to Gaussian around the signal
    assert img.std() == pytest.approx(20.0, rel=0.08)
    assert img.mean() == pytest.approx(400.0, rel=0.01)


def test_field_of_view_and_missing_frames_are_zero():
    U, D = _sinusoid(t_n=6, h=40, w=50)
    acq = dataclasses.replace(PLAIN, fov_fraction=0.6, missing_frames=2, gain=100.0)
    m = np.ones(U.shape[1:], bool)
    for seed in range(4):
        img, info = degrade(U, D, acq, m, rng=seed)
        y0, y1, x0, x1 = info["box"]
        assert (y1 - y0 == 24 and x1 - x0 == 50) or (y1 - y0 == 40 and x1 - x0 == 30)
        inside = np.zeros(U.shape[1:], bool)
        inside[y0:y1, x0:x1] = True
        assert (img[:, ~inside] == 0).all()
        assert (img[:4][:, inside] > 0).all()
        assert (img[4:] == 0).all()
        np.testing.assert_array_equal(info["missing"], [False] * 4 + [True] * 2)


def test_degrade_rejects_bad_input():
    U, D = _sinusoid()
    with pytest.raises(ValueError, match="myo_mask"):
        degrade(U, D, PLAIN, np.zeros(U.shape[1:], bool))
    with pytest.raises(ValueError, match="both be"):
        degrade(U, D[:, :-1], PLAIN, np.ones(U.shape[1:], bool))


def test_sample_acquisition_stays_in_its_ranges_and_is_seeded():
    for ranges in (TRAIN_RANGES, STRESS_RANGES):
        draws = [sample_acquisition(ranges, rng=s) for s in range(30)]
        for name in ("pixel_mm", "tag_spacing_mm", "rf_fade", "snr", "psf_px", "coil_depth_mm", "fov_fraction"):
            lo, hi = getattr(ranges, name)
            vals = [getattr(a, name) for a in draws]
            assert lo - 1e-9 <= min(vals) and max(vals) <= hi + 1e-9, name
        assert sample_acquisition(ranges, rng=5) == sample_acquisition(ranges, rng=5)
    # the stress set is harder than anything in training: stronger fading, lower SNR
    assert STRESS_RANGES.rf_fade[0] < TRAIN_RANGES.rf_fade[0] and STRESS_RANGES.snr[0] < TRAIN_RANGES.snr[0]


def test_stronger_fading_lowers_the_measured_tag_contrast_ratio():
    base = Acquisition(pixel_mm=1.4, tag_spacing_mm=6.0, matrix=128, snr=40.0)
    ratios = []
    for fade in (1.0, 0.85):
        (ts,) = [
            s
            for s in phantom_tagged_slices(0, seed=2, acquisition=dataclasses.replace(base, rf_fade=fade))
            if s.region == "mid"
        ]
        assert ts.images.shape == (20, 128, 128)
        assert wall_mask(ts.landmarks[0], ts.images.shape[1:]).sum() > 50
        ratios.append(tag_contrast_ratio(ts))
    assert ratios[1] < 0.75 * ratios[0]
