"""Tag rendering: persistence through systole, tag-grid placement (random / anchored), cine contrast."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from cmrkit.metrics.realism import snr, tissue_contrast
from cmrkit.phantom import Geometry, build_scene, generate_subject, sample_subject_params
from cmrkit.phantom.contrast import TISSUES
from cmrkit.phantom.render import myocardial_tag_depth, render_tagging

from .conftest import TINY


def _wrap(a):
    return (np.asarray(a) + np.pi) % (2.0 * np.pi) - np.pi


@pytest.mark.parametrize("slice_samples", [1, 3])
def test_myocardial_tags_persist_through_systole(slice_samples):
    """Fitted myocardial tag depth at ES / first frame stays within 12 % of T1 relaxation alone.

    Guards against tag fading by the through-slab averaging (slice_samples = 3, the default):
    within an 8 mm slab the twist gradient moves material < 1 mm, far below the 6 mm tag spacing.
    """
    geo = replace(TINY, tag_pixel_mm=1.4, tag_frames=10, noise=False, slice_samples=slice_samples)
    scene, _, _ = build_scene(sample_subject_params(2, seed=0, pathology_fraction=0.0), geo)
    img = render_tagging(scene, geo, np.random.default_rng(0))
    depth = myocardial_tag_depth(scene, img)
    t = scene.tag_times_ms
    es = int(np.argmin(np.abs(t - scene.heart.cycle.t_es_ms)))
    assert es >= 6  # the sequence reaches end-systole
    relax = np.exp(-(t - t[0]) / TISSUES["myocardium"].t1)
    ratio = depth / depth[0] / relax
    assert 0.88 < ratio[es] <= 1.02, ratio
    assert np.all(np.diff(depth[: es + 1]) < 0)  # monotone T1 fading, no collapse
    assert depth[0] > 0.75  # blur and pixels cost < 25 % at t0


def _centre_phase(scene, img2d):
    """Demodulated phase of the two grid directions in a 9 mm disc around the LV long axis."""
    x, y = scene.tag_grid.xy()
    rr = np.hypot(x, y)
    w = np.where(rr < 9.0, np.cos(0.5 * np.pi * rr / 9.0) ** 2, 0.0)
    k = 2.0 * math.pi / scene.tag["spacing_mm"]
    a = scene.tag["angle"]
    out = []
    for ex, ey in ((math.cos(a), math.sin(a)), (-math.sin(a), math.cos(a))):
        z = (w * (img2d - (w * img2d).sum() / w.sum()) * np.exp(-1j * k * (ex * x + ey * y))).sum()
        out.append(float(np.angle(z)))
    return np.array(out)


def _mid_first_frame_phase(index, geo):
    scene, _, _ = build_scene(sample_subject_params(index, seed=0, pathology_fraction=0.0), geo)
    img = render_tagging(scene, geo, np.random.default_rng(index))
    return _centre_phase(scene, img[1, :, :, 0]), scene


def test_anchored_tag_grid_has_the_same_phase_at_every_lv_centre():
    geo = replace(TINY, tag_phase="anchored", tag_frames=2)
    pa, sa = _mid_first_frame_phase(1, geo)
    pb, sb = _mid_first_frame_phase(2, geo)
    for sc in (sa, sb):
        assert sc.tag["angle"] == pytest.approx(math.radians(45.0)) and tuple(sc.tag["offsets"]) == (0.0, 0.0)
    # a tag-line crossing (f = 0, dark) on the long axis: the first harmonic has phase pi there
    assert np.all(np.abs(_wrap(pa - np.pi)) < 0.35), pa
    assert np.all(np.abs(_wrap(pb - pa)) < 0.35), (pa, pb)


def test_random_tag_grid_phase_follows_the_subject_draws():
    geo = replace(TINY, tag_frames=2)
    pa, sa = _mid_first_frame_phase(1, geo)
    pb, sb = _mid_first_frame_phase(2, geo)
    for p, sc, i in ((pa, sa, 1), (pb, sb, 2)):
        d = sample_subject_params(i, seed=0, pathology_fraction=0.0).draws
        assert sc.tag["angle"] == pytest.approx(math.radians(d["tag_angle_deg"]))
        assert tuple(sc.tag["offsets"]) == tuple(d["tag_offsets"])
        # the image shows the drawn offsets (+ pi: tag lines are dark)
        assert np.all(np.abs(_wrap(p - np.asarray(d["tag_offsets"]) - np.pi)) < 0.35), (p, d["tag_offsets"])
    assert np.max(np.abs(_wrap(pa - pb))) > 1.0  # unpredictable from the anatomy


def test_tag_phase_changes_only_the_tagging(normal_params, normal_subject, tiny_geometry):
    anch = generate_subject(normal_params, geometry=replace(tiny_geometry, tag_phase="anchored"))
    assert np.array_equal(anch.cine, normal_subject.cine) and np.array_equal(anch.labels, normal_subject.labels)
    for k in ("landmarks_px", "ecc_exact", "displacement"):
        assert np.array_equal(anch.ground_truth[k], normal_subject.ground_truth[k]), k
    assert not np.array_equal(anch.tagging, normal_subject.tagging)
    assert anch.info["tag_phase"] == "anchored" and anch.info["tag_offsets"] == [0.0, 0.0]
    assert normal_subject.info["tag_phase"] == "random"


def test_tag_phase_is_validated_and_read_from_mappings():
    assert Geometry().tag_phase == "random"
    assert Geometry.from_mapping({"tag_phase": "anchored", "n_subjects": 3}).tag_phase == "anchored"
    with pytest.raises(ValueError, match="tag_phase"):
        Geometry(tag_phase="fixed")
    with pytest.raises(ValueError, match="tag_phase"):
        Geometry.from_mapping({"tag_phase": 1})


def test_cine_contrast_and_snr_sit_in_the_real_bssfp_range():
    """Blood/myocardium ratio and myocardial SNR (cmrkit.metrics.realism) inside the M&Ms range (3.3-6.1; SNR 15-29)."""
    geo = Geometry(cine_frames=2, slices=6, slice_samples=1, supersample=1, matrix=96)
    ratios, snrs = [], []
    for i in range(3):
        s = generate_subject(sample_subject_params(i, seed=0), geometry=geo)
        ratios.append(tissue_contrast(s.cine[..., 0], s.labels[..., 0]).summary()["ratio"])
        snrs.append(snr(s.cine[..., 0], s.labels[..., 0], method="residual").summary()["snr"])
    assert all(3.0 < r < 6.5 for r in ratios), ratios
    assert all(11.0 < v < 26.0 for v in snrs), snrs
    assert np.ptp(ratios) > 0.2  # subjects differ


def test_tag_phase_is_part_of_the_cohort_spec_and_the_cli(tmp_path):
    import json

    from cmrkit.phantom import COHORT_JSON, cohort_spec
    from cmrkit.phantom.cli import cli_main
    from cmrkit.phantom.cohort import _same

    a = cohort_spec(2, seed=0, geometry=TINY, pathology_fraction=0.1)
    b = cohort_spec(2, seed=0, geometry=replace(TINY, tag_phase="anchored"), pathology_fraction=0.1)
    assert a["geometry"]["tag_phase"] == "random" and b["geometry"]["tag_phase"] == "anchored"
    assert not _same(b, a) and _same(a, a)  # ensure_cohort regenerates on change
    out = tmp_path / "anch"
    assert (
        cli_main(
            [
                "--profile",
                "smoke",
                "--n",
                "1",
                "--matrix",
                "48",
                "--frames",
                "2",
                "--out",
                str(out),
                "--workers",
                "1",
                "--no-progress",
                "--tag-phase",
                "anchored",
            ]
        )
        == 0
    )
    assert json.loads((out / COHORT_JSON).read_text())["geometry"]["tag_phase"] == "anchored"
    assert cli_main(["--n", "1", "--out", str(out), "--tag-phase", "fixed"]) != 0
