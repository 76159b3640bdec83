"""Tests for cmrkit.tagging.trackers: the trackers by name, running over rows, comparing trackers."""

from __future__ import annotations

import numpy as np
import pytest

from cmrkit.strain import green_strain_from_landmarks
from cmrkit.tagging import landmark_error, synthetic_tagged_ring, track_landmarks
from cmrkit.tagging.trackers import TRACKERS, HarpTracker, compare_trackers, get_tracker, track_all


def _rings(n: int = 2) -> list:
    return [
        synthetic_tagged_ring(size=80, n_frames=10, r_endo=12, r_epi=19, tag_spacing_px=4.5, noise=0.03, rng=i)
        for i in range(n)
    ]


def test_get_tracker_by_name():
    assert TRACKERS[0] == "learned"
    assert get_tracker("harp").name == "harp" and get_tracker("harp-classic").name == "harp-classic"
    assert get_tracker("harp", tag_spacing_px=4.5).tag_spacing_px == 4.5
    with pytest.raises(ValueError, match="unknown tracker 'kalman'"):
        get_tracker("kalman")
    with pytest.raises(ValueError, match="needs a profile"):
        get_tracker("learned")


def test_harp_tracker_is_track_landmarks_and_track_all_runs_rows():
    rings = _rings()
    imgs = np.stack([r.images for r in rings])
    x0 = np.stack([r.landmarks[0] for r in rings])
    for method in ("model", "classic"):
        trk = HarpTracker(method)
        one = trk.track(imgs[0], x0[0])
        np.testing.assert_array_equal(one, track_landmarks(imgs[0], x0[0], method=method))
        serial = track_all(trk, imgs, x0)
        assert serial.shape == (2, 10, 2, 168)
        np.testing.assert_allclose(track_all(trk, imgs, x0, n_jobs=2), serial, atol=1e-9)
    with pytest.raises(ValueError, match="starting grids"):
        track_all(HarpTracker(), imgs, x0[:1])


def test_compare_trackers_table_matches_direct_computation():
    rings = _rings()
    imgs = np.stack([r.images for r in rings])
    truth = np.stack([r.landmarks for r in rings])
    trackers = {"harp": HarpTracker("model"), "classic": HarpTracker("classic")}
    table, tracked = compare_trackers(trackers, imgs, truth[:, 0], truth=truth, px_mm=1.5)
    assert list(table.index) == ["harp", "classic"]
    es = [int(np.argmin(green_strain_from_landmarks(t).Ecc)) for t in truth]
    for name in trackers:
        lms = tracked[name]
        err = np.mean([landmark_error(a, b)[1:].mean() for a, b in zip(lms, truth)])
        assert table.loc[name, "landmark error (px)"] == pytest.approx(err)
        assert table.loc[name, "landmark error (mm)"] == pytest.approx(1.5 * err)
        bias = np.mean(
            [
                green_strain_from_landmarks(a).Ecc[e] - green_strain_from_landmarks(b).Ecc[e]
                for a, b, e in zip(lms, truth, es)
            ]
        )
        assert table.loc[name, "ES E_cc bias"] == pytest.approx(bias)
    # the wall-model HARP is the more accurate of the two on this ring (module notes)
    assert table.loc["harp", "landmark error (px)"] < table.loc["classic", "landmark error (px)"]
    no_truth, _ = compare_trackers(trackers, imgs, truth[:, 0])
    assert "ES E_cc bias" not in no_truth.columns and "ES E_cc" in no_truth.columns
