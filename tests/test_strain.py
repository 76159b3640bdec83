"""Tests for cmrkit.strain: Ferdian landmark strain in closed form and against a loop reference, and
the AHA 17-segment numbering of regional strain."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cmrkit.strain import (
    AHA_SEGMENT_NAMES,
    N_LANDMARKS,
    StrainResult,
    aha_segment,
    circumferential_segment_strains,
    cli_main,
    ferdian_strain_arrays,
    green_strain_from_landmarks,
    ideal_ring_grid,
    linear_strain_from_landmarks,
    peak_strain,
    radial_spoke_strains,
    regional_peak_ecc,
    regional_strain,
    spoke_segment_angles,
    strain_from_landmarks,
)


def _scaled(grid: np.ndarray, s: float, center=(64.0, 64.0)) -> np.ndarray:
    c = np.asarray(center)[:, None]
    return c + s * (grid - c)


def _ferdian_reference(coords: np.ndarray, linear: bool) -> tuple[np.ndarray, np.ndarray]:
    """Loop transcription of Ferdian's PredictionResult.calculate_* for one sequence (T, 2, 168)."""
    t_n = coords.shape[0]
    cc = np.zeros((t_n, 7))
    for k in range(7):
        pts = coords[:, :, k::7]
        segs = []
        for r in range(24):
            d = pts[:, :, r] - pts[:, :, (r + 1) % 24]
            l2 = d[:, 0] ** 2 + d[:, 1] ** 2
            if linear:
                l2 = np.sqrt(l2)
            ratio = l2 / l2[0]
            segs.append(ratio - 1 if linear else (ratio - 1) / 2)
        cc[:, k] = np.mean(segs, axis=0)
    rr = []
    for s in range(24):
        d = coords[:, :, 7 * s + 6] - coords[:, :, 7 * s]
        l2 = d[:, 0] ** 2 + d[:, 1] ** 2
        if linear:
            l2 = np.sqrt(l2)
        ratio = l2 / l2[0]
        rr.append(ratio - 1 if linear else (ratio - 1) / 2)
    return cc, np.mean(rr, axis=0)


def test_uniform_scaling_closed_form():
    g0 = ideal_ring_grid((64, 64), 20, 30)
    scales = [1.0, 0.8, 1.1, 0.7]
    lm = np.stack([_scaled(g0, s) for s in scales])
    res = green_strain_from_landmarks(lm)
    expect = np.array([(s**2 - 1) / 2 for s in scales])
    np.testing.assert_allclose(res.Ecc, expect, atol=1e-12)
    np.testing.assert_allclose(res.Ecc_rings, np.repeat(expect[:, None], 7, 1), atol=1e-12)
    np.testing.assert_allclose(res.Err, expect, atol=1e-12)
    lin = linear_strain_from_landmarks(lm)
    np.testing.assert_allclose(lin.Ecc, np.array(scales) - 1, atol=1e-12)
    np.testing.assert_allclose(lin.Err, np.array(scales) - 1, atol=1e-12)


def test_radial_and_circumferential_closed_form():
    """Rings moved to new radii: ring chords scale with the radius, spokes with the wall thickness."""
    r_en, r_ep, r_en2, r_ep2 = 20.0, 30.0, 14.0, 27.0
    lm = np.stack([ideal_ring_grid((50, 60), r_en, r_ep), ideal_ring_grid((50, 60), r_en2, r_ep2)])
    res = green_strain_from_landmarks(lm)
    r0 = r_en + np.arange(7) / 6 * (r_ep - r_en)
    r1 = r_en2 + np.arange(7) / 6 * (r_ep2 - r_en2)
    np.testing.assert_allclose(res.Ecc_rings[1], ((r1 / r0) ** 2 - 1) / 2, atol=1e-12)
    np.testing.assert_allclose(res.Ecc[1], np.mean(((r1 / r0) ** 2 - 1) / 2), atol=1e-12)
    np.testing.assert_allclose(res.Err[1], ((r_ep2 - r_en2) ** 2 / (r_ep - r_en) ** 2 - 1) / 2, atol=1e-12)
    assert res.Ecc[1] < 0 < res.Err[1]


def test_rigid_motion_gives_zero_strain():
    g0 = ideal_ring_grid((64, 64), 18, 27)
    rng = np.random.default_rng(0)
    g0 = g0 + rng.normal(0, 0.5, g0.shape)  # irregular grid
    th = np.deg2rad(25.0)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    lm = np.stack([g0, rot @ g0 + np.array([[7.5], [-3.25]])])
    for kind in ("green", "linear"):
        res = strain_from_landmarks(lm, kind)
        assert np.abs(res.Ecc).max() < 1e-12
        assert np.abs(res.Ecc_rings).max() < 1e-12
        assert np.abs(res.Err).max() < 1e-12


def test_index_convention_spoke_times_7_plus_k():
    """Moving the endocardial point of spoke 5 (index 5*7+0) only touches ring 0 and E_rr."""
    g0 = ideal_ring_grid((64, 64), 20, 30)
    g1 = g0.copy()
    g1[:, 5 * 7 + 0] += np.array([1.0, -0.5])
    res = green_strain_from_landmarks(np.stack([g0, g1]))
    assert abs(res.Ecc_rings[1, 0]) > 1e-3
    np.testing.assert_allclose(res.Ecc_rings[1, 1:], 0.0, atol=1e-14)
    assert abs(res.Err[1]) > 1e-4
    rr = radial_spoke_strains(np.stack([g0, g1]))
    assert np.count_nonzero(np.abs(rr[1]) > 1e-12) == 1 and abs(rr[1, 5]) > 0
    cc = circumferential_segment_strains(np.stack([g0, g1]))
    # ring 0: segments 4 (4->5) and 5 (5->6) change, nothing else
    assert set(np.flatnonzero(np.abs(cc[1, 0]) > 1e-12)) == {4, 5}
    # moving the epicardial point (k = 6) touches ring 6 only
    g2 = g0.copy()
    g2[:, 5 * 7 + 6] += 1.0
    res2 = green_strain_from_landmarks(np.stack([g0, g2]))
    np.testing.assert_allclose(res2.Ecc_rings[1, :6], 0.0, atol=1e-14)
    assert abs(res2.Ecc_rings[1, 6]) > 1e-3


@pytest.mark.parametrize("linear", [False, True])
def test_matches_loop_reference_on_random_sequences(linear):
    rng = np.random.default_rng(3)
    g0 = ideal_ring_grid((64, 64), 20, 30)
    lm = g0[None] + rng.normal(0, 1.0, (6, 2, N_LANDMARKS))
    res = strain_from_landmarks(lm, "linear" if linear else "green")
    cc, rr = _ferdian_reference(lm, linear)
    np.testing.assert_allclose(res.Ecc_rings, cc, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res.Ecc, cc.mean(1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res.Err, rr, rtol=1e-12, atol=1e-12)
    # mean of segment strains is not the perimeter strain on an irregular grid
    p = lambda x: np.sum(np.hypot(*(np.roll(x[:, 0::7], -1, 1) - x[:, 0::7])))  # noqa: E731
    per = (p(lm[3]) ** 2 / p(lm[0]) ** 2 - 1) / 2
    assert abs(per - cc[3, 0]) > 1e-4 or linear


def test_batch_dims_ferdian_arrays_and_layout():
    g0 = ideal_ring_grid((64, 64), 20, 30)
    lm = np.stack([np.stack([g0, _scaled(g0, s)]) for s in (0.9, 0.8, 1.2)])  # (3, 2, 2, 168)
    res = green_strain_from_landmarks(lm)
    assert res.Ecc.shape == (3, 2) and res.Ecc_rings.shape == (3, 2, 7) and res.Err.shape == (3, 2)
    arrs = ferdian_strain_arrays(lm)
    assert arrs["cc_strains"].shape == (3, 2, 8) and arrs["rr_strains"].shape == (3, 2, 1)
    np.testing.assert_allclose(arrs["cc_strains"][..., 7], arrs["cc_strains"][..., :7].mean(-1), atol=1e-6)
    np.testing.assert_allclose(arrs["cc_linear_strains"][:, 1, 7], [-0.1, -0.2, 0.2], atol=1e-6)
    np.testing.assert_allclose(arrs["rr_strains"][:, 1, 0], [(s**2 - 1) / 2 for s in (0.9, 0.8, 1.2)], atol=1e-6)


def test_torch_input_matches_numpy():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    lm = ideal_ring_grid((64, 64), 20, 30)[None] + rng.normal(0, 0.5, (4, 2, N_LANDMARKS))
    ref = green_strain_from_landmarks(lm)
    t = torch.tensor(lm, dtype=torch.float64, requires_grad=True)
    res = green_strain_from_landmarks(t)
    assert isinstance(res.Ecc, torch.Tensor)
    np.testing.assert_allclose(res.Ecc.detach().numpy(), ref.Ecc, atol=1e-12)
    np.testing.assert_allclose(res.Err.detach().numpy(), ref.Err, atol=1e-12)
    np.testing.assert_allclose(res.cc_strains.detach().numpy(), ref.cc_strains, atol=1e-12)
    res.Ecc.sum().backward()  # usable in a loss, as in Ferdian's loss_util
    assert t.grad is not None and torch.isfinite(t.grad).all()


def test_missing_frames_and_bad_input():
    g0 = ideal_ring_grid((64, 64), 20, 30)
    lm = np.stack([g0, _scaled(g0, 0.9), np.zeros_like(g0)])  # Ferdian pads missing frames with zeros
    res = green_strain_from_landmarks(lm)
    assert np.isnan(res.Ecc[2]) and np.isnan(res.Err[2]) and np.isnan(res.Ecc_rings[2]).all()
    assert np.isfinite(res.Ecc[:2]).all()
    with pytest.raises(ValueError, match="missing"):
        strain_from_landmarks(lm, missing="raise")
    with pytest.raises(ValueError, match="reference frame"):
        green_strain_from_landmarks(lm[::-1])
    with pytest.raises(ValueError, match=r"\(\.\.\., frames, 2, 168\)"):
        green_strain_from_landmarks(np.zeros((3, 168, 2)))
    with pytest.raises(ValueError, match="zero-length"):
        green_strain_from_landmarks(np.ones((2, 2, 168)))
    with pytest.raises(ValueError, match="kind"):
        strain_from_landmarks(lm[:2], "log")  # type: ignore[arg-type]


def test_regional_and_peak_strain():
    g0 = ideal_ring_grid((64, 64), 20, 30)
    g1 = _scaled(g0, 0.85)
    # make spokes 0-3 (region 0 of 6) contract less: move their points back towards g0
    g1r = g1.copy()
    idx = np.arange(4 * 7)
    g1r[:, idx] = 0.5 * (g0[:, idx] + g1[:, idx])
    lm = np.stack([g0, g1r, g1])
    reg = regional_strain(lm, 6)
    assert reg["Ecc"].shape == (3, 6) and reg["Err"].shape == (3, 6) and reg["Ecc_rings"].shape == (3, 7, 6)
    expect = (0.85**2 - 1) / 2
    np.testing.assert_allclose(reg["Ecc"][2], expect, atol=1e-12)
    np.testing.assert_allclose(reg["Err"][1, 1:], expect, atol=1e-12)  # untouched spokes
    assert reg["Err"][1, 0] > expect + 0.05
    # region 0 holds segments 0..3 (spoke r -> r+1): segments 0-2 are inside the modified block
    np.testing.assert_allclose(reg["Ecc"][1, 2:5], expect, atol=1e-12)
    at_es = regional_strain(lm, 6, frame=1)
    np.testing.assert_allclose(at_es["Ecc"], reg["Ecc"][1])
    shifted = regional_strain(lm, 6, start_spoke=4)
    np.testing.assert_allclose(shifted["Err"][1], np.roll(reg["Err"][1], -1), atol=1e-12)
    with pytest.raises(ValueError, match="divide 24"):
        regional_strain(lm, 5)
    pk = peak_strain(green_strain_from_landmarks(lm))
    assert pk["Ecc_frame"] == 2 and np.isclose(pk["Ecc"], expect)
    assert isinstance(green_strain_from_landmarks(lm), StrainResult)


def test_cli_json_round_trip(tmp_path, capsys):
    from cmrkit.io.ferdian import write_ferdian_h5

    g0 = ideal_ring_grid((64, 64), 20, 30)
    rng = np.random.default_rng(5)
    seqs = np.stack(
        [
            np.stack([_scaled(g0, s) for s in np.linspace(1, 0.8, 20)]),
            np.stack([g0 + rng.normal(0, 0.3, g0.shape) for _ in range(20)]),
        ]
    )
    f = tmp_path / "lm.h5"
    write_ferdian_h5(f, landmark_coords=seqs, px_spaces=[1.4, 1.4], es_frame_idx=[19, 7], ed_frame_idx=[0, 0])
    assert cli_main([str(f), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"Ecc", "Ecc_rings", "Err", "slices"} <= set(out)
    assert len(out["Ecc"]) == 20 and len(out["Ecc_rings"]) == 20 and len(out["Ecc_rings"][0]) == 7
    ref = green_strain_from_landmarks(seqs.astype(np.float32).astype(float))
    np.testing.assert_allclose(out["Ecc"], ref.Ecc[0], atol=1e-6)
    np.testing.assert_allclose(out["Err"], ref.Err[0], atol=1e-6)
    np.testing.assert_allclose(out["slices"][1]["Ecc_rings"], ref.Ecc_rings[1], atol=1e-6)
    assert np.isclose(out["Ecc_es"], (0.8**2 - 1) / 2, atol=1e-6) and out["es_frame_idx"] == 19
    assert cli_main([str(f), "--json", "--slice", "1", "--linear"]) == 0
    out1 = json.loads(capsys.readouterr().out)
    assert out1["slice"] == 1 and out1["kind"] == "linear"
    assert cli_main([str(f)]) == 0 and "slice 1" in capsys.readouterr().out


def test_cli_errors(tmp_path, capsys):
    from cmrkit.io.ferdian import write_ferdian_h5

    assert cli_main([str(tmp_path / "nope.h5")]) == 2
    assert "nope.h5" in capsys.readouterr().err
    assert cli_main([str(tmp_path)]) == 2
    assert f"{tmp_path}: is a folder" in capsys.readouterr().err
    f = tmp_path / "img_only.h5"
    write_ferdian_h5(f, image_seqs=np.zeros((1, 20, 16, 16), np.float32))
    assert cli_main([str(f), "--json"]) == 2
    assert "landmark_coords" in capsys.readouterr().err
    g = tmp_path / "one_frame.h5"
    write_ferdian_h5(g, landmark_coords=ideal_ring_grid()[None])
    assert cli_main([str(g)]) == 2
    assert "one frame" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ AHA 17 segments
@pytest.mark.parametrize(
    "angle, level, seg",
    [
        (90, "basal", 1),
        (150, "basal", 2),
        (210, "basal", 3),
        (270, "basal", 4),
        (330, "basal", 5),
        (30, "basal", 6),
        (61, "basal", 1),
        (119.9, "basal", 1),
        (120, "basal", 2),
        (59.9, "basal", 6),
        (-30, "basal", 5),
        (450, "basal", 1),
        (90, "mid", 7),
        (170, "mid", 8),
        (180, "mid", 9),
        (200, "mid", 9),
        (270, "mid", 10),
        (300, "mid", 11),
        (0, "mid", 12),
        (90, "apical", 13),
        (180, "apical", 14),
        (270, "apical", 15),
        (0, "apical", 16),
        (44, "apical", 16),
        (46, "apical", 13),
        (123, "apex", 17),
    ],
)
def test_aha_segment_numbering(angle, level, seg):
    # Cerqueira et al. 2002: segment 1 anterior at the top, counter-clockwise, septum on the left
    assert aha_segment(angle, level) == seg


def test_aha_segment_vectorised_and_names():
    segs = aha_segment(np.arange(0, 360, 60) + 30, "mid")
    assert sorted(segs.tolist()) == list(range(7, 13))
    assert AHA_SEGMENT_NAMES[2] == "basal anteroseptal" and AHA_SEGMENT_NAMES[14] == "apical septal"
    with pytest.raises(ValueError, match="level"):
        aha_segment(0, "middle")


def test_spoke_segment_angles_follow_the_phantom_frame():
    # septum at theta_rv = 0, anterior at +90 (sense +1), first spoke 45 degrees from the septum
    ang = spoke_segment_angles(0.0, 1.0, math.radians(45))
    np.testing.assert_allclose(ang[:2], [180 - 52.5, 180 - 67.5])
    assert aha_segment(ang[0], "basal") == 2 and aha_segment(ang[1], "basal") == 1
    # the other sense: anterior lies at decreasing angle, spokes still run towards increasing angle
    other = spoke_segment_angles(0.0, -1.0, math.radians(-45))
    np.testing.assert_allclose(other[:2], [180 - 37.5, 180 - 22.5])


@pytest.mark.parametrize("theta_rv, sense", [(-2.8, 1.0), (0.7, -1.0), (2.0, 1.0)])
def test_bullseye_segments_agree_with_the_phantom_regional_model(theta_rv, sense):
    from cmrkit.phantom.motion import RegionalFunction

    theta0 = theta_rv + sense * 1.1
    th = theta0 + 2 * np.pi * (np.arange(24) + 0.5) / 24
    rf = RegionalFunction(theta_septum=theta_rv, sense=sense, z_apex_en=0.0, z_base=90.0)
    for level, z in (("basal", 85.0), ("mid", 45.0), ("apical", 10.0)):
        ours = aha_segment(spoke_segment_angles(theta_rv, sense, theta0), level)
        np.testing.assert_array_equal(ours, rf.segment_of(th, np.full(24, z)))


def test_regional_peak_ecc_of_a_uniform_contraction():
    ed = ideal_ring_grid((64, 64), 20, 30)
    frames = [ed]
    for lam in (0.95, 0.85, 0.9):
        frames.append(64 + lam * (ed - 64))  # uniform in-plane scaling by lam
    lm = np.stack(frames)
    seg_angles = np.mod(180 - (np.arange(24) + 0.5) * 15.0, 360)
    out = regional_peak_ecc(lm, "basal", seg_angles)
    assert sorted(out) == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(list(out.values()), (0.85**2 - 1) / 2, rtol=1e-9)
    out4 = regional_peak_ecc(lm, "apical", seg_angles)
    assert sorted(out4) == [13, 14, 15, 16]


def test_cli_warns_about_nan_landmarks_naming_frame_and_landmark(tmp_path, capsys):
    from cmrkit.io.ferdian import write_ferdian_h5

    g0 = ideal_ring_grid((64, 64), 20, 30)
    seqs = np.stack([np.stack([_scaled(g0, s) for s in np.linspace(1, 0.8, 6)])] * 2)
    seqs[1, 4, 1, 23] = np.nan  # slice 1, frame 4, landmark 23 = spoke 3, point 2
    seqs[0, 5] = 0.0  # slice 0, frame 5 zero-filled (Ferdian's padding)
    f = tmp_path / "nan.h5"
    write_ferdian_h5(f, landmark_coords=seqs)
    assert cli_main([str(f), "--json"]) == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out)  # still valid JSON on stdout, NaN as null
    assert out["slices"][1]["Ecc"][4] is None and out["slices"][1]["Ecc"][3] is not None
    warnings = cap.err.strip().splitlines()
    assert len(warnings) == 2
    assert "slice 1 frame 4: landmark 23 (spoke 3, point 2" in warnings[0] and "nan.h5" in warnings[0]
    assert "slice 0: frame(s) 5 have no landmarks" in warnings[1]
    assert cli_main([str(f)]) == 0 and "warning" in capsys.readouterr().err  # table output warns too
