"""The plotly views of cmrkit.interactive on tiny synthetic inputs with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cmrkit import interactive


def _ball(shape, centre_vox, radius_mm, spacing):
    grid = np.indices(shape).astype(float)
    d = np.sqrt(sum(((grid[a] - centre_vox[a]) * spacing[a]) ** 2 for a in range(3)))
    return d <= radius_mm


def test_mask_surface_of_a_ball_lies_at_its_radius():
    sp = (1.5, 1.5, 4.0)
    mask = _ball((24, 24, 10), (11.5, 11.5, 4.5), 12.0, sp)
    verts, faces = interactive.mask_surface(mask, sp)
    assert faces.shape[1] == 3 and faces.max() < len(verts)
    r = np.linalg.norm(verts - np.array([11.5, 11.5, 4.5]) * sp, axis=1)
    # the 0.5 level sits half a voxel outside the last inside voxel centre: within one voxel of the radius
    assert abs(np.median(r) - 12.0) < 1.5 and r.max() < 12.0 + 4.0
    # resampling to 1 mm and smoothing keeps the radius and gives a finer mesh
    v2, f2 = interactive.mask_surface(mask, sp, resample_mm=1.0, smooth_mm=1.0)
    r2 = np.linalg.norm(v2 - np.array([11.5, 11.5, 4.5]) * sp, axis=1)
    assert abs(np.median(r2) - 12.0) < 1.5 and len(f2) > len(faces)


def test_mask_surface_box_extent_and_affine():
    mask = np.zeros((10, 8, 6), bool)
    mask[2:6, 3:5, 1:4] = True  # voxels x 2..5, y 3..4, z 1..3
    sp = (2.0, 1.0, 5.0)
    v, _ = interactive.mask_surface(mask, sp)
    lo, hi = v.min(0), v.max(0)
    # the surface passes halfway between inside and outside voxel centres
    np.testing.assert_allclose(lo, np.array([1.5, 2.5, 0.5]) * sp, atol=1e-6)
    np.testing.assert_allclose(hi, np.array([5.5, 4.5, 3.5]) * sp, atol=1e-6)
    aff = np.diag([*sp, 1.0])
    aff[:3, 3] = [10.0, -20.0, 30.0]
    vw, _ = interactive.mask_surface(mask, sp, affine=aff)
    np.testing.assert_allclose(vw, v + [10.0, -20.0, 30.0], atol=1e-6)
    ve, fe = interactive.mask_surface(np.zeros((4, 4, 4), bool))
    assert ve.shape == (0, 3) and fe.shape == (0, 3)
    with pytest.raises(ValueError, match="3-D"):
        interactive.mask_surface(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="spacing"):
        interactive.mask_surface(mask, (1.0, 0.0, 1.0))


def test_heart_mesh_one_trace_per_structure_and_frames_behind_a_slider():
    lab = np.zeros((16, 16, 5, 3), np.uint8)
    lab[4:12, 4:12, 1:4, :] = 2  # myocardium block
    lab[6:10, 6:10, 1:4, :] = 1  # LV cavity inside it
    lab[6:10, 6:10, 1:4, 2] = 2  # frame 2: no cavity left
    fig = interactive.heart_mesh(lab, (1.8, 1.8, 8.0), frames=[0, 2], frame_names=["ED", "ES"], title="t")
    names = [t.name for t in fig.data]
    assert names == ["LV blood pool", "LV myocardium", "RV blood pool"]
    assert all(t.type == "mesh3d" for t in fig.data)
    assert len(fig.data[0].x) > 0 and len(fig.data[2].x) == 0  # no RV in this volume: empty mesh
    assert [f.name for f in fig.frames] == ["ED", "ES"]
    assert len(fig.frames[1].data[0].x) == 0  # the ES frame has no LV cavity
    assert [s["label"] for s in fig.layout.sliders[0].steps] == ["ED", "ES"]
    single = interactive.heart_mesh(lab[..., 0], (1.8, 1.8, 8.0), resample_mm=None, smooth_mm=0)
    assert not single.frames and len(single.data) == 3
    # mesh coordinates are in mm: the myocardium spans x voxels 4..11 -> 3.5..11.5 voxel units
    x = np.asarray(single.data[1].x)
    assert x.min() == pytest.approx(3.5 * 1.8) and x.max() == pytest.approx(11.5 * 1.8)
    with pytest.raises(ValueError, match="outside"):
        interactive.heart_mesh(lab, frames=[5])
    with pytest.raises(ValueError, match="expected"):
        interactive.heart_mesh(np.zeros((4, 4)))


def test_volume_curves_values_time_axis_and_markers():
    v = {"LV": np.array([120.0, 90.0, 60.0, 100.0]), "RV": np.array([130.0, 95.0, 65.0, 110.0])}
    fig = interactive.volume_curves(v, frame_ms=40.0, ed=0, es=2)
    assert [t.name for t in fig.data] == ["LV (mL)", "RV (mL)"]
    np.testing.assert_allclose(fig.data[0].y, v["LV"])
    np.testing.assert_allclose(fig.data[0].x, [0, 40, 80, 120])
    xs = sorted(s.x0 for s in fig.layout.shapes)
    assert xs == [0.0, 80.0]
    mass = interactive.volume_curves({**v, "LVM": np.array([80.0, 81.0, 82.0, 80.0])})
    assert mass.data[2].name == "LVM (g)" and mass.data[2].yaxis == "y2" and mass.layout.yaxis2.title.text == "mass (g)"
    with pytest.raises(ValueError, match="different lengths"):
        interactive.volume_curves({"a": [1, 2], "b": [1, 2, 3]})
    with pytest.raises(ValueError, match="ES frame 9"):
        interactive.volume_curves(v, es=9)


def test_strain_curves_rows_and_nan_aware_mean():
    a = np.array([[0.0, -0.1, -0.2], [0.0, -0.3, np.nan]])
    b = np.zeros((2, 3))
    fig = interactive.strain_curves({"original": a, "truth": b}, names=["s1", "s2"], es=[2, 1])
    rows = [t for t in fig.data if t.mode == "lines" and t.line.width == 1]
    means = [t for t in fig.data if t.mode == "lines" and t.line.width == 3]
    assert len(rows) == 4 and len(means) == 2
    np.testing.assert_allclose(means[0].y, [0.0, -0.2, -0.2])
    assert "s2" in rows[1].name
    es_marks = [t for t in fig.data if t.mode == "markers"]
    np.testing.assert_allclose(es_marks[0].y, [-0.2, -0.3])
    with pytest.raises(ValueError, match="names"):
        interactive.strain_curves({"x": a}, names=["only one"])
    with pytest.raises(ValueError, match="differ in shape"):
        interactive.strain_curves({"x": a, "y": np.zeros((3, 3))})


def test_phenotype_distributions_groups_subjects_and_reference():
    df = pd.DataFrame(
        {
            "subject_id": ["A", "B", "C", "D"],
            "sex": [0, 1, 0, 1],
            "LVEDV": [100.0, 150.0, 110.0, 160.0],
            "LVEF": [60.0, 55.0, 62.0, 58.0],
        }
    )
    ref = pd.DataFrame(
        {
            "phenotype": ["LVEDV", "LVEDV"],
            "sex": ["female", "male"],
            "ref_mean": [120.0, 150.0],
            "ref_sd": [10.0, 20.0],
            "range_lo": [np.nan, np.nan],
            "range_hi": [np.nan, np.nan],
            "source": ["Hudsmith 2005", "Hudsmith 2005"],
        }
    )
    fig = interactive.phenotype_distributions(
        df, {"LVEDV": "LVEDV (mL)", "LVEF": "LVEF (%)"}, group_names={0: "female", 1: "male"}, reference=ref
    )
    boxes = [t for t in fig.data if t.type == "box"]
    assert len(boxes) == 4  # 2 phenotypes x 2 groups
    female_edv = boxes[0]
    assert female_edv.name == "female" and list(female_edv.y) == [100.0, 110.0]
    assert list(female_edv.hovertext) == ["A", "C"]
    refs = [t for t in fig.data if t.type == "scatter"]
    assert len(refs) == 2  # LVEDV only
    assert [t.showlegend for t in refs] == [True, False]  # one legend entry for the references
    assert refs[0].y[0] == 120.0 and refs[0].error_y.array[0] == pytest.approx(19.6)
    with pytest.raises(ValueError, match="no column"):
        interactive.phenotype_distributions(df, ["LVM"])
