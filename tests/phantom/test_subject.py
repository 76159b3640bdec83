"""Generated subjects: labels, volumes, ground truth, tagging, affines, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from cmrkit.phantom import Geometry, build_scene, generate_subject, landmark_strain, sample_subject_params
from cmrkit.phantom.anatomy import MYO_DENSITY
from cmrkit.phantom.render import render_labels


def test_shapes_dtypes_and_labels_on_every_frame(normal_subject, tiny_geometry):
    s, g = normal_subject, tiny_geometry
    assert s.cine.shape == (g.matrix, g.matrix, g.slices, g.cine_frames) and s.cine.dtype == np.float32
    assert s.labels.shape == s.cine.shape and s.labels.dtype == np.uint8
    assert s.tagging.shape == (3, g.tag_matrix_resolved, g.tag_matrix_resolved, g.tag_frames)
    assert set(np.unique(s.labels)) <= {0, 1, 2, 3}
    mid = s.tag_slice_index[1]
    for t in range(g.cine_frames):
        present = set(np.unique(s.labels[:, :, mid, t]))
        assert {1, 2, 3} <= present, f"frame {t} lacks a structure: {present}"
    assert s.cine.min() >= 0 and 200 < s.cine.max() < 5000  # scanner-like magnitude range
    assert np.all(s.cine == np.round(s.cine))


def test_blood_brighter_than_myocardium(normal_subject):
    s = normal_subject
    lv = s.cine[s.labels == 1]
    myo = s.cine[s.labels == 2]
    # bSSFP blood/myocardium ratio (with partial volume at 4 mm pixels) well above 1.5
    assert np.median(lv) > 1.5 * np.median(myo)


def test_volume_curve_ed_es(normal_subject, pathology_subject):
    for s in (normal_subject, pathology_subject):
        target = s.ground_truth["lv_volume_target_ml"]
        assert s.ed_frame == 0 and target[0] == pytest.approx(target.max())
        assert s.es_frame == int(np.argmin(target)) and s.es_frame > 0
        lv = s.ground_truth["lv_volume_ml"]
        assert lv[0] > lv[s.es_frame]
        assert s.measured["lvef_pct"] == pytest.approx(100 * (lv[0] - lv[s.es_frame]) / lv[0])
    # regional dysfunction lowers the ejection fraction below the healthy model value
    p = pathology_subject.params
    assert pathology_subject.targets["lvef_pct"] < p.targets["lvef_pct"] - 2


@pytest.mark.parametrize("index", [1, 2, 3, 4])
def test_measured_volumes_match_targets_at_default_geometry(index):
    """Label volumes at the UK Biobank-like geometry (128 px at 1.8 mm, 10 x 10 mm) vs the targets."""
    g = Geometry(cine_frames=4)
    p = sample_subject_params(index, seed=0, pathology_fraction=0.0)
    scene, realised, _ = build_scene(p, g)
    cyc = scene.heart.cycle
    lab = render_labels(scene, np.array([0.0, cyc.t_es_ms]))
    vox = g.pixel_mm**2 * g.slice_spacing_mm / 1000.0
    edv, esv = [(lab[..., t] == 1).sum() * vox for t in (0, 1)]
    lvm = (lab[..., 0] == 2).sum() * vox * MYO_DENSITY
    rvedv = (lab[..., 0] == 3).sum() * vox
    assert edv == pytest.approx(realised["lvedv_ml"], rel=0.02)
    assert esv == pytest.approx(realised["lvesv_ml"], rel=0.04)
    assert lvm == pytest.approx(realised["lvm_g"], rel=0.04)
    assert rvedv == pytest.approx(realised["rvedv_ml"], rel=0.03)
    # healthy subjects realise the model's volume targets exactly (only EF/strain may be projected)
    for k in ("lvedv_ml", "lvesv_ml", "lvm_g", "rvedv_ml", "rvesv_ml"):
        assert realised[k] == pytest.approx(p.targets[k], rel=1e-6)


def test_landmark_strain_equals_exact_strain(normal_subject, pathology_subject):
    for s, tol_cc in ((normal_subject, 1e-6), (pathology_subject, 0.01)):
        gt = s.ground_truth
        assert gt["landmarks_px"].shape == (3, s.tagging.shape[3], 2, 168)
        assert np.abs(gt["ecc_landmark"] - gt["ecc_exact"]).max() < tol_cc
        assert np.abs(gt["ecc_ring_landmark"] - gt["ecc_ring_exact"]).max() < tol_cc + 0.005
        # E_rr: Ferdian's endo->epi chord strain vs the wall-mean of the pointwise strain agree within
        # the chord/continuum difference (Green strain is not linear in the stretch)
        assert np.abs(gt["err_landmark"] - gt["err_exact"]).max() < 0.05 + 0.1 * np.abs(gt["err_exact"]).max()
        assert np.allclose(gt["ecc_exact"][:, 0], 0) and np.allclose(gt["err_exact"][:, 0], 0)
        assert gt["ecc_exact"].min() < -0.08 and gt["err_exact"].max() > 0.15
        # own landmark strain function == the stored values
        again = landmark_strain(gt["landmarks_mm"])
        assert np.allclose(again["ecc"], gt["ecc_landmark"], atol=1e-6)


def test_landmarks_lie_on_the_myocardium_and_follow_the_rings(normal_subject):
    s = normal_subject
    gt = s.ground_truth
    mask = gt["myocardium_mask_ed"]
    stride = int(gt["displacement_stride"])
    lm = gt["landmarks_px"][:, 0]  # ED
    for sl in range(3):
        i = np.clip(np.round(lm[sl, 0, 3::7] / stride).astype(int), 0, mask.shape[1] - 1)
        j = np.clip(np.round(lm[sl, 1, 3::7] / stride).astype(int), 0, mask.shape[2] - 1)
        assert mask[sl, i, j].mean() > 0.9  # mid-wall ring inside the wall
    # ring 0 (endocardium) is inside ring 6 (epicardium) on every spoke and frame
    c = gt["landmarks_mm"].mean(axis=-1, keepdims=True)
    r = np.hypot(*(gt["landmarks_mm"] - c).transpose(2, 0, 1, 3))
    assert np.all(r[..., 0::7] < r[..., 6::7])


def test_displacement_field_carries_the_landmarks(normal_subject):
    """The dense Lagrangian displacement at the landmark ED positions moves them to their later positions."""
    s = normal_subject
    gt = s.ground_truth
    stride = int(gt["displacement_stride"])
    px = s.geometry.tag_pixel_mm
    lm = gt["landmarks_px"]
    t_es = int(np.argmin(gt["ecc_exact"][1]))  # tagging frame of peak contraction
    assert t_es > 0
    for sl in range(3):
        for t in (t_es, lm.shape[1] - 1):
            coords = lm[sl, 0] / stride
            u = np.stack([ndimage.map_coordinates(gt["displacement"][sl, t, k], coords, order=1) for k in range(2)])
            moved = lm[sl, 0] + u / px
            err = np.abs(moved - lm[sl, t])[:, 1::7]  # away from the wall edges
            assert np.median(err) < 0.15 and err.max() < 1.0


def test_tag_slices_share_the_cine_patient_frame(normal_subject):
    s = normal_subject
    inv = np.linalg.inv(s.affine)
    for sl, k in enumerate(s.tag_slice_index):
        A = s.tag_affines[sl]
        # same slice normal, centre plane of cine slice k, different in-plane pixel size
        n_tag = A[:3, 2] / np.linalg.norm(A[:3, 2])
        n_cine = s.affine[:3, 2] / np.linalg.norm(s.affine[:3, 2])
        assert abs(abs(n_tag @ n_cine) - 1) < 1e-9
        assert np.linalg.norm(A[:3, 0]) == pytest.approx(s.geometry.tag_pixel_mm)
        corners = A @ np.array([[0, 0, 0, 1], [s.tagging.shape[1] - 1, 7, 0, 1]]).T
        assert np.allclose((inv @ corners)[2], k, atol=1e-6)
        # landmarks: pixel -> world through the tag affine equals the stored world coordinates,
        # and at ED the mid-wall points fall on the cine myocardium label of slice k
        px = s.ground_truth["landmarks_px"][sl, 0]
        w = (A @ np.vstack([px, np.zeros(168), np.ones(168)]))[:3]
        assert np.abs(w - s.ground_truth["landmarks_world"][sl, 0]).max() < 1e-3
        v = np.round(inv @ np.vstack([w, np.ones(168)])).astype(int)
        labs = s.labels[v[0], v[1], v[2], s.ed_frame]
        assert (labs[3::7] == 2).mean() > 0.8
    assert s.tag_slice_index[0] < s.tag_slice_index[1] < s.tag_slice_index[2]


def test_same_seed_same_subject(normal_params, tiny_geometry, normal_subject):
    again = generate_subject(normal_params, geometry=tiny_geometry)
    assert np.array_equal(again.cine, normal_subject.cine)
    assert np.array_equal(again.labels, normal_subject.labels)
    assert np.array_equal(again.tagging, normal_subject.tagging)
    assert np.array_equal(again.ground_truth["landmarks_px"], normal_subject.ground_truth["landmarks_px"])
    other = generate_subject(sample_subject_params(2, seed=0), geometry=tiny_geometry)
    assert not np.array_equal(other.cine, normal_subject.cine)
    noisy = generate_subject(normal_params, geometry=tiny_geometry, rng=123)
    assert np.array_equal(noisy.labels, normal_subject.labels) and not np.array_equal(noisy.cine, normal_subject.cine)


def _harmonic_phase(img: np.ndarray, kij: np.ndarray, k: float) -> np.ndarray:
    n = img.shape[0]
    f = np.fft.fftfreq(n) * 2 * np.pi
    KI, KJ = np.meshgrid(f, f, indexing="ij")
    win = np.exp(-((KI - kij[0]) ** 2 + (KJ - kij[1]) ** 2) / (2 * (0.35 * k) ** 2))
    return np.fft.ifft2(np.fft.fft2(img, axes=(0, 1)) * win[..., None], axes=(0, 1))


def test_tags_move_with_material_points():
    """Harmonic (HARP) phase of the rendered tag image is constant at the ground-truth landmarks.

    Independent of the inverse map used to render: the image is band-passed around each tag
    frequency (Osman et al.); at landmarks the phase stays put, at fixed pixels it drifts.
    """
    g = Geometry(
        matrix=48,
        pixel_mm=4.0,
        cine_frames=4,
        tag_frames=12,
        tag_pixel_mm=1.4,
        tag_matrix=112,
        noise=False,
        slice_samples=1,
        supersample=1,
    )
    p = sample_subject_params(1, seed=0, pathology_fraction=0.0)
    s = generate_subject(p, geometry=g)
    scene, _, _ = build_scene(p, g)
    img = s.tagging[1]
    k = 2 * math.pi / g.tag_spacing_mm * g.tag_pixel_mm
    ang = scene.tag["angle"]
    ax = scene.tag_grid.axes_xy()
    lm = s.ground_truth["landmarks_px"][1]
    mid = np.arange(168) % 7 == 3
    for e in (np.array([math.cos(ang), math.sin(ang)]), np.array([-math.sin(ang), math.cos(ang)])):
        c = _harmonic_phase(img, k * (ax.T @ e), k)

        def sample(t: int, pts: np.ndarray) -> np.ndarray:
            return ndimage.map_coordinates(c[..., t].real, pts, order=1) + 1j * ndimage.map_coordinates(
                c[..., t].imag, pts, order=1
            )

        ref = sample(0, lm[0][:, mid])
        drift_lm = [np.median(np.abs(np.angle(sample(t, lm[t][:, mid]) * np.conj(ref)))) for t in range(img.shape[2])]
        drift_fix = [np.median(np.abs(np.angle(sample(t, lm[0][:, mid]) * np.conj(ref)))) for t in range(img.shape[2])]
        assert max(drift_lm) < 0.35
        assert max(drift_fix) > 1.0


def test_landmark_strain_agrees_with_cmrkit_strain(pathology_subject):
    strain = pytest.importorskip("cmrkit.strain")
    lm = pathology_subject.ground_truth["landmarks_mm"].astype(float)
    ref = strain.green_strain_from_landmarks(lm)
    own = landmark_strain(lm)
    assert np.allclose(ref.Ecc, own["ecc"], atol=1e-9)
    assert np.allclose(ref.Ecc_rings, own["ecc_ring"], atol=1e-9)
    assert np.allclose(ref.Err, own["err"], atol=1e-9)


def test_chosen_regional_dysfunction_reduces_local_strain(normal_params, tiny_geometry):
    from cmrkit.phantom import with_pathology

    sick = with_pathology(normal_params, {7: 0.0, 8: 0.0, 9: 0.0, 10: 0.0, 11: 0.0, 12: 0.0}, kind="akinetic")
    scene_n, real_n, _ = build_scene(normal_params, tiny_geometry)
    scene_s, real_s, _ = build_scene(sick, tiny_geometry)
    assert real_s["lvedv_ml"] == pytest.approx(real_n["lvedv_ml"])  # same ED anatomy
    assert real_s["lvef_pct"] < real_n["lvef_pct"] - 10  # a whole akinetic mid ring
    assert real_s["peak_ecc"] > real_n["peak_ecc"] + 0.05  # less circumferential shortening
    with pytest.raises(ValueError):
        with_pathology(normal_params, {18: 0.0})
    assert with_pathology(sick, None).pathology is None
