"""Preprocessing: every grid change must keep ``world = affine @ voxel`` consistent."""

from __future__ import annotations

import numpy as np
import pytest

from cmrkit.io.subject import Subject, TaggingSlice
from cmrkit.preprocess import (
    Box,
    crop_roi,
    heart_center,
    map_cine_to_tagging,
    matching_cine_slice,
    normalise_intensity,
    prepare_subject,
    resample_inplane,
    resample_tagging_to_cine_roi,
    tagging_roi_from_cine,
    to_slices,
)


def oblique_affine(spacing=(1.8, 1.8, 10.0), origin=(-40.0, 30.0, 12.0), a=0.4, b=-0.7):
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    aff = np.eye(4)
    aff[:3, :3] = rz @ rx * np.asarray(spacing)
    aff[:3, 3] = origin
    return aff


def world_grid(aff, shape):
    """World coordinates (…, 3) of every voxel centre of a 3-D grid."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(float)
    return idx @ aff[:3, :3].T + aff[:3, 3]


def linear_field(world):
    return 0.3 * world[..., 0] - 0.2 * world[..., 1] + 0.1 * world[..., 2] + 5.0


def disk_labels(shape, center, r):
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    rr = np.hypot(x - center[0], y - center[1])
    sl = np.zeros(shape[:2], np.uint8)
    sl[rr < r + 2] = 2
    sl[rr < r] = 1
    return np.repeat(sl[:, :, None], shape[2], axis=2)


# ----------------------------------------------------------------------------- crop
def test_crop_roi_centres_on_labels_and_shifts_affine():
    aff = oblique_affine()
    lab = disk_labels((60, 50, 3), (40, 20), 6)
    img = linear_field(world_grid(aff, lab.shape)).astype(np.float32)
    res = crop_roi(img, 16, labels=lab, affine=aff)
    assert res.box == Box(32, 12, 48, 28) and res.image.shape == (16, 16, 3)
    # same voxel content, and the new affine gives the same world positions
    np.testing.assert_array_equal(res.image, img[32:48, 12:28])
    np.testing.assert_allclose(res.image, linear_field(world_grid(res.affine, res.image.shape)), atol=1e-4)
    assert res.labels[8, 8, 0] == 1


def test_crop_roi_pads_outside_the_image():
    img = np.arange(100, dtype=np.float32).reshape(10, 10) + 1
    res = crop_roi(img, (6, 4), center=(1, 8), affine=np.eye(4))
    assert res.box == Box(-2, 6, 4, 10)
    np.testing.assert_array_equal(res.image[:2], 0)
    np.testing.assert_array_equal(res.image[2:, :], img[0:4, 6:10])
    np.testing.assert_allclose(res.affine[:3, 3], [-2, 6, 0])


def test_heart_center_from_motion_without_labels():
    rng = np.random.default_rng(0)
    X, Y, T = 64, 64, 12
    x, y = np.meshgrid(np.arange(X), np.arange(Y), indexing="ij")
    static = rng.uniform(0, 1, size=(X, Y))  # bright static anatomy
    seq = np.empty((X, Y, 2, T), np.float32)
    for t in range(T):
        r = 6 + 3 * np.sin(2 * np.pi * t / T)
        frame = static + 2.0 * (np.hypot(x - 40, y - 24) < r)
        seq[..., t] = (frame + 0.05 * rng.normal(size=(X, Y)))[..., None]
    cx, cy = heart_center(image=seq)
    assert abs(cx - 40) < 1.5 and abs(cy - 24) < 1.5
    with pytest.raises(ValueError, match="time axis"):
        heart_center(image=seq[..., 0, :1])


# ----------------------------------------------------------------------------- resampling
@pytest.mark.parametrize(
    "kw, shape_out, spacing_out",
    [
        ({"size": (20, 15)}, (20, 15), (3.6, 3.6)),
        ({"spacing": 3.6}, (20, 15), (3.6, 3.6)),
        ({"spacing": 2.7}, (27, 20), (1.8 * 40 / 27, 2.7)),  # FOV kept: size rounded, spacing adjusted
        ({"size": 64}, (64, 64), (1.8 * 40 / 64, 1.8 * 30 / 64)),  # upsampling
    ],
)
def test_resample_inplane_preserves_world_mapping(kw, shape_out, spacing_out):
    aff = oblique_affine()
    shape = (40, 30, 3)
    img = linear_field(world_grid(aff, shape)).astype(np.float32)[..., None].repeat(2, axis=-1)  # (X, Y, Z, T)
    lab = disk_labels(shape, (20, 15), 7)[..., None].repeat(2, axis=-1)
    res = resample_inplane(img, aff, labels=lab, **kw)
    assert res.image.shape == (*shape_out, 3, 2) and res.labels.shape == (*shape_out, 3, 2)
    np.testing.assert_allclose(np.linalg.norm(res.affine[:3, :3], axis=0), [*spacing_out, 10.0], atol=1e-9)
    expect = linear_field(world_grid(res.affine, (*shape_out, 3)))
    inner = (slice(2, -2), slice(2, -2))  # a linear field survives linear interpolation and smoothing away from edges
    np.testing.assert_allclose(res.image[inner + (slice(None), 0)], expect[inner], atol=1e-3)
    assert set(np.unique(res.labels)) <= {0, 1, 2} and res.labels.dtype == np.uint8
    cx, cy = (np.array(shape_out) - 1) / 2.0  # the disk centre (19.5, 14.5 in input pixels) is the image centre
    assert res.labels[int(round(cx)), int(round(cy)), 0, 0] == 1
    assert abs((res.labels == 1).sum() / (lab == 1).sum() - np.prod(shape_out) / (40 * 30)) < 0.15


def test_resample_inplane_argument_checks():
    with pytest.raises(ValueError, match="exactly one of size= or spacing="):
        resample_inplane(np.zeros((4, 4)), np.eye(4))
    with pytest.raises(ValueError, match="affine: required"):
        resample_inplane(np.zeros((4, 4)), None, spacing=2.0)


def test_to_slices_crop_pad_and_resample():
    aff = oblique_affine()
    shape = (8, 8, 12)
    img = linear_field(world_grid(aff, shape)).astype(np.float32)
    lab = np.zeros(shape, np.uint8)
    lab[3:5, 3:5, 8:11] = 1  # labelled slices 8..10, centre 9
    res = to_slices(img, 5, affine=aff, labels=lab)
    np.testing.assert_array_equal(res.image, img[:, :, 7:12])
    np.testing.assert_allclose(res.affine[:3, 3], (aff @ [0, 0, 7, 1])[:3])
    np.testing.assert_array_equal(to_slices(img, 6, labels=lab).labels.sum(), lab.sum())
    np.testing.assert_array_equal(to_slices(img, 4, center_slice=20).image, img[:, :, 8:])  # clamped inside the stack
    pad = to_slices(img[:, :, :4], 8, affine=aff)
    np.testing.assert_array_equal(pad.image[:, :, 2:6], img[:, :, :4])
    assert not pad.image[:, :, :2].any() and not pad.image[:, :, 6:].any()
    np.testing.assert_allclose(
        pad.image[:, :, 2:6], linear_field(world_grid(pad.affine, (8, 8, 8)))[:, :, 2:6], atol=1e-4
    )
    rs = to_slices(img, 6, affine=aff, mode="resample")
    np.testing.assert_allclose(np.linalg.norm(rs.affine[:3, 2]), 20.0)
    np.testing.assert_allclose(
        rs.image[:, :, 1:-1], linear_field(world_grid(rs.affine, (8, 8, 6)))[:, :, 1:-1], atol=1e-3
    )
    with pytest.raises(ValueError, match="mode"):
        to_slices(img, 6, mode="zoom")


# ----------------------------------------------------------------------------- intensity
def test_normalise_intensity():
    x = np.arange(101, dtype=np.float32)
    y = normalise_intensity(x, percentiles=(10, 90))
    assert y.min() == 0 and y.max() == 1 and y.dtype == np.float32
    np.testing.assert_allclose(y[50], 0.5)
    np.testing.assert_allclose(y[30], 0.25)
    assert not normalise_intensity(np.full(5, 3.0)).any()
    mask = x < 50
    np.testing.assert_allclose(normalise_intensity(x, (0, 100), mask=mask)[49], 1.0)
    with pytest.raises(ValueError, match="NaN"):
        normalise_intensity(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="percentiles"):
        normalise_intensity(x, (90, 10))


# ----------------------------------------------------------------------------- cine <-> tagging
def tag_affine_for(cine_aff, z, in_plane_angle=0.5, spacing=1.4, offset_mm=0.0, origin_px=(3.0, -2.0)):
    """Tagging plane parallel to cine slice z (shifted by offset_mm along the normal), rotated in-plane."""
    u = cine_aff[:3, 0] / np.linalg.norm(cine_aff[:3, 0])
    v = cine_aff[:3, 1] / np.linalg.norm(cine_aff[:3, 1])
    n = np.cross(u, v)
    c, s = np.cos(in_plane_angle), np.sin(in_plane_angle)
    ta = np.eye(4)
    ta[:3, 0] = (c * u + s * v) * spacing
    ta[:3, 1] = (-s * u + c * v) * spacing
    ta[:3, 2] = n * 8.0
    ta[:3, 3] = (cine_aff @ [origin_px[0], origin_px[1], z, 1])[:3] + offset_mm * n
    return ta


def test_map_cine_to_tagging_agrees_with_world_coordinates():
    ca = oblique_affine()
    ta = tag_affine_for(ca, 4)
    pts = np.array([[10.0, 5.0, 4.0], [0.0, 0.0, 4.0], [3.5, 7.25, 4.0], [1.0, 1.0, 6.0]])
    t = map_cine_to_tagging(pts, ca, ta)
    world_c = (np.column_stack([pts, np.ones(4)]) @ ca.T)[:, :3]
    world_t = (np.column_stack([t, np.ones(4)]) @ ta.T)[:, :3]
    np.testing.assert_allclose(world_c, world_t, atol=1e-9)
    np.testing.assert_allclose(t[:3, 2], 0.0, atol=1e-9)  # in the tagging plane
    np.testing.assert_allclose(t[3, 2], 20.0 / 8.0)  # two cine slices (20 mm) above, in 8 mm tagging units
    np.testing.assert_allclose(map_cine_to_tagging(pts[:, :2], ca, ta, cine_slice=4)[:3], t[:3])


def test_matching_cine_slice():
    ca = oblique_affine()
    shape = (32, 30, 9)
    assert matching_cine_slice(ca, shape, tag_affine_for(ca, 4)) == 4
    z, d = matching_cine_slice(ca, shape, tag_affine_for(ca, 6, offset_mm=3.0), return_distance=True)
    assert z == 6 and d == pytest.approx(3.0)
    z, d = matching_cine_slice(ca, shape, tag_affine_for(ca, 2, offset_mm=-6.0), return_distance=True)
    assert z == 1 and d == pytest.approx(4.0)


def test_tagging_roi_from_cine_same_orientation_scales_and_centres():
    ca = oblique_affine()
    ta = tag_affine_for(ca, 3, in_plane_angle=0.0, spacing=0.9)  # half the cine pixel size
    box = Box(10, 6, 26, 22)
    tb = tagging_roi_from_cine(ca, ta, box, cine_slice=3)
    assert tb.size == pytest.approx((32.0, 32.0))
    wc = ca @ [*box.center, 3, 1]
    wt = ta @ [*tb.center, 0, 1]
    np.testing.assert_allclose(wc, wt, atol=1e-9)


def test_resample_tagging_to_cine_roi_samples_the_same_world_points():
    ca = oblique_affine()
    z = 3
    ta = tag_affine_for(ca, z, in_plane_angle=0.3, spacing=1.4, origin_px=(-10.0, -10.0))
    tag_shape = (60, 60, 2)
    tag = linear_field(world_grid(ta, tag_shape[:2] + (1,)))[:, :, 0]
    tag_seq = np.stack([tag, 2 * tag], axis=-1)
    crop = crop_roi(np.zeros((40, 40, 6)), 16, center=(15, 15), affine=ca)
    out, aff = resample_tagging_to_cine_roi(tag_seq, ta, crop.affine, z, (16, 16))
    assert out.shape == (16, 16, 2)
    expect = linear_field(world_grid(aff, (16, 16, 1)))[:, :, 0]
    np.testing.assert_allclose(out[2:-2, 2:-2, 0], expect[2:-2, 2:-2], rtol=1e-3, atol=2e-2)
    np.testing.assert_allclose(out[..., 1], 2 * out[..., 0], rtol=1e-5, atol=1e-4)


# ----------------------------------------------------------------------------- pipeline
def make_subject():
    rng = np.random.default_rng(1)
    aff = oblique_affine()
    shape = (48, 44, 6)
    T = 4
    lab = np.stack([disk_labels(shape, (30, 18), r) for r in (7, 6, 5, 6)], axis=-1)
    lab[:, :, 0] = 0  # apical slice without labels
    img = (np.choose(lab, [0.2, 1.0, 0.4, 0.9]) * 100 + rng.normal(size=lab.shape)).astype(np.float32)
    ta = tag_affine_for(aff, 3, in_plane_angle=0.2, spacing=1.4, origin_px=(5.0, -4.0))
    tag_img = rng.uniform(size=(50, 50, 5)).astype(np.float32)
    lm = np.stack([rng.uniform(10, 40, size=(2, 168)) for _ in range(5)])
    tag = TaggingSlice(image=tag_img, affine=ta, name="mid", landmarks=lm)
    return Subject(
        "s1", "phantom", img, lab, aff, ed_frame=0, es_frame=2, labelled_frames=np.ones(T, bool), tagging=[tag]
    )


def test_prepare_subject_end_to_end():
    s = make_subject()
    out = prepare_subject(s, 24, n_slices=4)
    assert out.cine.shape == (24, 24, 4, 4) and out.cine_labels.shape == (24, 24, 4, 4)
    assert out.cine.min() >= 0 and out.cine.max() <= 1
    assert s.cine.shape == (48, 44, 6, 4)  # the input is not modified
    # labels and image moved together: the LV stays at the crop centre
    assert out.cine_labels[12, 12, 2, 0] == 1
    # labelled slices 1..5 (centre 3) -> window 2..5; every labelled slice holds the same disk
    assert (out.cine_labels == 1).sum() == (s.cine_labels == 1).sum() * 4 // 5
    t = out.tagging[0]
    assert t.image.shape == (24, 24, 5)
    assert t.meta["cine_slice"] == 1 == matching_cine_slice(out.affine, out.shape, s.tagging[0].affine)
    assert t.meta["cine_plane_distance_mm"] == pytest.approx(0.0, abs=1e-9)
    # landmarks point at the same world positions as before
    src = s.tagging[0]
    w_src = np.column_stack([src.landmarks[2].T, np.zeros(168), np.ones(168)]) @ src.affine.T
    w_new = np.column_stack([t.landmarks[2].T, np.zeros(168), np.ones(168)]) @ t.affine.T
    np.testing.assert_allclose(w_src, w_new, atol=1e-6)


def test_prepare_unlabelled_dicom_subject_uses_motion_heuristic():
    from cmrkit.io import load_subject
    from cmrkit.utils import REPO_ROOT

    s = load_subject(REPO_ROOT / "tests" / "data" / "sunnybrook" / "SCD0000301", dataset="dicom", contours=False)
    out = prepare_subject(s, 56, spacing=2.5)  # 140 mm field of view
    assert out.cine.shape == (56, 56, 2, 3) and out.cine_labels is None
    np.testing.assert_allclose(out.spacing[:2], (144.38 / 58, 144.38 / 58), atol=1e-3)  # 112 px x 1.2891 mm -> 58 px
    assert out.cine.min() == 0.0 and out.cine.max() == 1.0
    # the heuristic centres on the moving LV + RV pair (RV to the left in this view); the LV
    # (endocardial contour centroid at about pixel (59, 52)) lies inside the ROI with a margin
    lv_out = np.linalg.solve(out.affine, s.affine @ [59, 52, 0, 1])
    assert 6 <= lv_out[0] <= 50 and 6 <= lv_out[1] <= 50


@pytest.mark.realdata
def test_motion_heuristic_roi_holds_the_whole_lv_on_the_full_sunnybrook_series(realdata):
    from cmrkit.io import load_subject
    from cmrkit.io.dicom import read_contour_txt

    base = realdata / "sunnybrook" / "final_data"
    s = load_subject(base / "dicoms" / "SCD0000301", dataset="dicom", contours=False)  # no labels: motion only
    out = prepare_subject(s, 128, spacing=1.8)  # the chapters' setting: 128 px at 1.8 mm; centre from motion only
    pts = np.concatenate(
        [read_contour_txt(p) for p in sorted((base / "contourfiles" / "SC-HF-I-4" / "o-contours").glob("*.txt"))]
    )
    # epicardial contour points (native pixels, any slice) mapped into the ROI grid
    native = np.column_stack([pts, np.zeros(len(pts)), np.ones(len(pts))])
    roi = np.linalg.solve(out.affine, s.affine @ native.T).T
    assert roi[:, :2].min() >= 10 and roi[:, :2].max() <= 117
