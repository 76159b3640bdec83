"""Automatic LV localisation on tagged sequences (cmrkit.tagging.localise) against known geometry."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cmrkit.io.ferdian import write_ferdian_h5
from cmrkit.strain import green_strain_from_landmarks
from cmrkit.tagging import synthetic_tagged_ring, track_landmarks
from cmrkit.tagging.cli import cli_main
from cmrkit.tagging.localise import auto_init_landmarks, localise_lv_wall

HARP = ("--tracker", "harp")  # these tests check HARP; the learned tracker has its own tests


def _ring_radii(lm: np.ndarray) -> tuple[np.ndarray, float, float]:
    g = lm.reshape(2, 24, 7)
    c = g[:, :, 0].mean(1)
    return c, float(np.hypot(*(g[:, :, 0] - c[:, None])).mean()), float(np.hypot(*(g[:, :, 6] - c[:, None])).mean())


@pytest.mark.parametrize("spacing, seed", [(4.0, 0), (5.0, 1), (6.0, 2)])
def test_ring_is_found_and_tracked_strain_matches_the_truth(spacing, seed):
    s = synthetic_tagged_ring(
        size=112, center=(51.3, 57.6), r_endo=14.0, r_epi=22.0, tag_spacing_px=spacing, noise=0.05, rng=seed
    )
    res = localise_lv_wall(s.images)
    c, r_en, r_ep = _ring_radii(res.landmarks)
    np.testing.assert_allclose(c, [51.3, 57.6], atol=1.5)
    assert abs(r_en - 14.0) < 1.0, r_en
    assert abs(r_ep - 22.0) < 2.0, r_ep
    # the mask is the frame-0 myocardium of the fixture (Dice)
    inter = (res.myo_mask & s.myo_mask).sum()
    assert 2 * inter / (res.myo_mask.sum() + s.myo_mask.sum()) > 0.8
    assert 4 <= res.es_frame <= 10  # the fixture's ES is frame 7
    tracked = track_landmarks(s.images, res.landmarks)
    est, ref = green_strain_from_landmarks(tracked), green_strain_from_landmarks(s.landmarks)
    assert abs(est.Ecc[7] - ref.Ecc[7]) < 0.015
    assert abs(est.Err[7] - ref.Err[7]) < 0.1


def test_whole_heart_translation_and_strong_fading_do_not_move_the_centre():
    """The contraction centre is found after the heart's translation is removed, and tags that fade
    to a few percent by ES (real FLASH tagging) still mark the wall: blood loses them faster."""
    from scipy import ndimage

    s = synthetic_tagged_ring(
        size=112,
        center=(55.2, 52.7),
        r_endo=14.0,
        r_epi=22.0,
        tag_spacing_px=5.0,
        t1_ms=230.0,
        t1_blood_ms=60.0,
        noise=0.02,
        rng=5,
    )
    g = np.sin(0.5 * np.pi * np.minimum(np.arange(20), 7) / 7.0) ** 2  # translation follows the contraction
    shift = np.array([3.0, -2.5])  # (x, y) px at ES
    imgs = np.stack(
        [ndimage.shift(im, (gt * shift[1], gt * shift[0]), order=3, mode="nearest") for im, gt in zip(s.images, g)]
    )
    res = localise_lv_wall(imgs)
    c, r_en, r_ep = _ring_radii(res.landmarks)
    np.testing.assert_allclose(c, [55.2, 52.7], atol=1.0)
    assert abs(r_en - 14.0) < 1.0 and abs(r_ep - 22.0) < 3.0  # the epicardium is the start's weak point
    # the contraction centre itself is the ring's, not displaced along the translation
    np.testing.assert_allclose(res.center, [55.2, 52.7], atol=2.0)


def test_zero_padding_and_offset_do_not_change_the_result():
    s = synthetic_tagged_ring(size=96, tag_spacing_px=5.0, noise=0.03, rng=3)
    big = np.zeros((s.images.shape[0], 160, 160))
    big[:, 20:116, 40:136] = s.images  # Ferdian pads to a square
    a = auto_init_landmarks(s.images)
    b = auto_init_landmarks(big)
    np.testing.assert_allclose(b - np.array([[40.0], [20.0]]), a, atol=0.25)


def test_sequences_without_contraction_or_tags_are_refused():
    still = synthetic_tagged_ring(size=96, endo_scale_es=1.0, twist_deg=0.0, noise=0.03, rng=0)
    with pytest.raises(ValueError, match="contract"):
        localise_lv_wall(still.images)
    flat = np.random.default_rng(0).normal(1.0, 0.05, (12, 96, 96))
    with pytest.raises(ValueError, match="tag directions"):
        localise_lv_wall(flat)
    with pytest.raises(ValueError, match="T >= 4"):
        localise_lv_wall(np.ones((3, 32, 32)))


def test_phantom_slice_is_localised():
    from cmrkit.phantom import Geometry, generate_subject, sample_subject_params

    geo = Geometry(matrix=64, pixel_mm=3.6, slices=10, cine_frames=10, tag_frames=20, slice_samples=1, supersample=1)
    subj = generate_subject(sample_subject_params(2, seed=1, pathology_fraction=0.0), geometry=geo)
    lm_true = np.asarray(subj.ground_truth["landmarks_px"])[1]  # (T, 2, 168), mid slice
    im = np.moveaxis(subj.tagging[1], 2, 0).swapaxes(1, 2)  # (T, Y, X): rows = y
    res = localise_lv_wall(im)
    c, r_en, r_ep = _ring_radii(res.landmarks)
    ct, t_en, t_ep = _ring_radii(lm_true[0])
    assert np.hypot(*(c - ct)) < 2.0
    assert abs(r_en - t_en) < 2.0 and abs(r_ep - t_ep) < 3.0


def test_track_cli_without_init_locates_the_wall(tmp_path, capsys):
    s = synthetic_tagged_ring(size=96, tag_spacing_px=5.0, noise=0.03, rng=4)
    f = tmp_path / "tag.h5"
    write_ferdian_h5(
        f, image_seqs=s.images[None].astype(np.float32), landmark_coords=s.landmarks[None], px_spaces=[1.4]
    )
    assert cli_main([str(f), "--json", *HARP]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["init"] == "auto"
    assert "landmark_error_mm" not in out  # spokes are numbered differently from the file's grid
    es = 7
    assert abs(out["Ecc_diff"][es]) < 0.015
    ref = green_strain_from_landmarks(s.landmarks)
    assert abs(out["Ecc"][es] - ref.Ecc[es]) < 0.015
    assert cli_main([str(f), "--init-from-file", "--json", *HARP]) == 0
    assert json.loads(capsys.readouterr().out)["init"] == "file"
