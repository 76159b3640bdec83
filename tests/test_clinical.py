"""Clinical indices against hand-computed volumes, the CLI, and the real M&Ms files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cmrkit.clinical import PHENOTYPE_KEYS, cli_main, phenotypes, volume_curve, wall_thickness
from cmrkit.io import save_nifti

SPACING = (1.5, 1.25, 8.0)  # voxel 15 mm^3 = 0.015 mL


def box_labels(lv, myo, rv, shape=(40, 40, 20)):
    """Three disjoint blocks of exactly lv, myo and rv voxels."""
    assert lv + myo + rv <= np.prod(shape)
    lab = np.zeros(shape, np.uint8)
    flat = lab.reshape(-1)
    flat[:lv] = 1
    flat[lv : lv + myo] = 2
    flat[lv + myo : lv + myo + rv] = 3
    return lab


def test_hand_computed_phenotypes():
    ed = box_labels(lv=8000, myo=6000, rv=9000)
    es = box_labels(lv=3000, myo=6200, rv=4000)
    p = phenotypes(ed, es, SPACING, heart_rate=72)
    v = 1.5 * 1.25 * 8.0 / 1000.0  # mL per voxel
    assert list(p)[:9] == list(PHENOTYPE_KEYS)
    assert p["LVEDV"] == pytest.approx(8000 * v)  # 120 mL
    assert p["LVESV"] == pytest.approx(3000 * v)  # 45 mL
    assert p["LVSV"] == pytest.approx(75.0)
    assert p["LVEF"] == pytest.approx(62.5)
    assert p["LVM"] == pytest.approx(6000 * v * 1.05)  # 94.5 g, ED myocardium only
    assert p["RVEDV"] == pytest.approx(135.0) and p["RVESV"] == pytest.approx(60.0)
    assert p["RVSV"] == pytest.approx(75.0) and p["RVEF"] == pytest.approx(100 * 75 / 135)
    assert p["CO"] == pytest.approx(72 * 75.0 / 1000)  # 5.4 L/min


def test_affine_gives_same_volumes_as_spacing_and_acdc_remap():
    ed = box_labels(lv=1000, myo=500, rv=2000)
    es = box_labels(lv=400, myo=500, rv=900)
    a, b = 0.5, 0.9
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]) @ np.array(
        [[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]]
    )
    aff = np.eye(4)
    aff[:3, :3] = rot * np.array(SPACING)
    aff[:3, 3] = (10, 20, 30)
    assert phenotypes(ed, es, aff) == pytest.approx(phenotypes(ed, es, SPACING))
    swap = np.array([0, 3, 2, 1], np.uint8)  # kit -> ACDC
    acdc = phenotypes(swap[ed], swap[es], SPACING, labels="acdc")
    assert acdc == pytest.approx(phenotypes(ed, es, SPACING))
    assert "CO" not in acdc


def test_empty_ventricle_gives_nan_ef_and_bad_inputs_raise():
    ed = box_labels(lv=100, myo=10, rv=0)
    p = phenotypes(ed, ed, SPACING)
    assert p["LVEF"] == 0.0 and np.isnan(p["RVEF"]) and p["RVEDV"] == 0.0
    with pytest.raises(ValueError, match="label_es: shape"):
        phenotypes(ed, ed[:-1], SPACING)
    bad = ed.copy()
    bad[0, 0, 0] = 5
    with pytest.raises(ValueError, match=r"label values \[5\]"):
        phenotypes(bad, ed, SPACING)
    with pytest.raises(ValueError, match="heart_rate"):
        phenotypes(ed, ed, SPACING, heart_rate=-1)
    with pytest.raises(ValueError, match="labels: expected one of"):
        phenotypes(ed, ed, SPACING, labels="xyz")


def test_volume_curve():
    frames = [box_labels(lv=n, myo=200, rv=2 * n) for n in (1000, 600, 400, 800)]
    lab = np.stack(frames, axis=-1)
    v = volume_curve(lab, SPACING)
    np.testing.assert_allclose(v["LV"], np.array([1000, 600, 400, 800]) * 0.015)
    np.testing.assert_allclose(v["RV"], np.array([2000, 1200, 800, 1600]) * 0.015)
    np.testing.assert_allclose(v["LVM"], 200 * 0.015 * 1.05)
    masked = volume_curve(lab, SPACING, labelled_frames=np.array([True, False, True, False]))
    assert np.isnan(masked["LV"][1]) and masked["LV"][2] == pytest.approx(6.0)
    with pytest.raises(ValueError, match=r"\(X, Y, Z, T\)"):
        volume_curve(lab[..., 0], SPACING)


def annulus(shape, r_in, r_out, center=(32, 32)):
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    r = np.hypot(x - center[0], y - center[1])
    sl = np.zeros(shape, np.uint8)
    sl[r < r_out] = 2
    sl[r < r_in] = 1
    return sl


@pytest.mark.parametrize("r_in, r_out", [(10, 16), (12, 20), (8, 11)])
def test_wall_thickness_of_an_annulus(r_in, r_out):
    sl = annulus((64, 64), r_in, r_out)
    assert wall_thickness(sl, (1.5, 1.5)) == pytest.approx((r_out - r_in) * 1.5, abs=0.75)  # within half a pixel


def test_wall_thickness_per_slice_skips_slices_without_cavity():
    vol = np.stack([annulus((64, 64), 10, 16), annulus((64, 64), 0, 8), np.zeros((64, 64), np.uint8)], axis=-1)
    per = wall_thickness(vol, np.diag([1.2, 1.2, 8.0, 1.0]), per_slice=True)
    assert per[0] == pytest.approx(6 * 1.2, abs=0.6) and np.isnan(per[1]) and np.isnan(per[2])
    assert wall_thickness(vol, (1.2, 1.2, 8.0)) == pytest.approx(per[0])
    assert np.isnan(wall_thickness(np.zeros((8, 8, 2), np.uint8), (1, 1)))


# ----------------------------------------------------------------------------- CLI
@pytest.fixture()
def ed_es_files(tmp_path):
    aff = np.diag([*SPACING, 1.0])
    ed = box_labels(lv=8000, myo=6000, rv=9000)
    es = box_labels(lv=3000, myo=6200, rv=4000)
    return save_nifti(tmp_path / "label_sa_ED.nii.gz", ed, aff, kind="label"), save_nifti(
        tmp_path / "label_sa_ES.nii.gz", es, aff, kind="label"
    )


def test_cli_json_keys_and_values(ed_es_files, capsys):
    ed, es = ed_es_files
    assert cli_main(["--ed", str(ed), "--es", str(es), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["LVEDV", "LVESV", "LVSV", "LVEF", "LVM", "RVEDV", "RVESV", "RVSV", "RVEF"]
    assert (
        out["LVEDV"] == pytest.approx(120.0)
        and out["LVEF"] == pytest.approx(62.5)
        and out["LVM"] == pytest.approx(94.5)
    )


def test_cli_table_heart_rate_and_dispatch(ed_es_files, capsys):
    from cmrkit.cli import main

    ed, es = ed_es_files
    assert main(["phenotypes", "--ed", str(ed), "--es", str(es), "--heart-rate", "60"]) == 0
    text = capsys.readouterr().out
    assert "LVEDV       120.0  mL" in text and "CO            4.5  L/min" in text
    assert cli_main(["--ed", str(ed), "--es", str(es), "--labels", "acdc", "--json"]) == 0
    swapped = json.loads(capsys.readouterr().out)
    assert swapped["LVEDV"] == pytest.approx(135.0)  # ACDC reading swaps LV and RV


def test_cli_bad_inputs_exit_2_with_one_line(ed_es_files, tmp_path, capsys):
    ed, es = ed_es_files
    four_d = save_nifti(tmp_path / "four.nii.gz", np.zeros((4, 4, 3, 2)), np.eye(4), kind="label")
    truncated = tmp_path / "trunc.nii.gz"
    truncated.write_bytes(ed.read_bytes()[: ed.stat().st_size // 2])
    other = save_nifti(tmp_path / "other.nii.gz", np.zeros((5, 5, 5)), np.eye(4), kind="label")
    cases = [
        (["--ed", str(tmp_path / "missing.nii.gz"), "--es", str(es)], "missing.nii.gz: file not found"),
        (["--ed", str(four_d), "--es", str(es)], "expected a 3-D label volume, got 4-D"),
        (["--ed", str(ed), "--es", str(truncated)], "trunc.nii.gz: file is truncated or corrupt"),
        (["--ed", str(ed), "--es", str(other)], "other.nii.gz: shape (5, 5, 5) does not match"),
    ]
    for argv, needle in cases:
        assert cli_main(argv) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1 and err.startswith("cmrkit phenotypes: error: ")
    assert cli_main(["--ed", str(ed)]) == 2  # argparse: --es missing
    assert "--es" in capsys.readouterr().err


def test_cli_refuses_swapped_ed_es_naming_both_files(ed_es_files, capsys):
    ed, es = ed_es_files
    assert cli_main(["--ed", str(es), "--es", str(ed)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "look swapped" in err and str(ed) in err and str(es) in err
    assert "--allow-swapped" in err
    # with --allow-swapped: the numbers as given, and a loud warning on stderr naming both files
    assert cli_main(["--ed", str(es), "--es", str(ed), "--json", "--allow-swapped"]) == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out)
    assert out["LVSV"] == pytest.approx(-75.0) and out["LVEF"] < 0
    assert "WARNING" in cap.err and str(ed) in cap.err and str(es) in cap.err


def test_cli_quotes_the_label_convention_asked_for(tmp_path, capsys):
    aff = np.diag([*SPACING, 1.0])
    bad = box_labels(lv=8000, myo=6000, rv=9000)
    bad[0, 0, 0] = 4
    f = save_nifti(tmp_path / "bad.nii.gz", bad.astype(np.float32), aff)
    assert cli_main(["--ed", str(f), "--es", str(f), "--labels", "acdc"]) == 2
    err = capsys.readouterr().err
    assert "ACDC convention: 0 background, 1 RV, 2 Myo, 3 LV" in err and "bad.nii.gz" in err
    assert cli_main(["--ed", str(f), "--es", str(f)]) == 2
    assert "UK Biobank convention: 0 background, 1 LV, 2 Myo, 3 RV" in capsys.readouterr().err
    assert cli_main(["--ed", str(f), "--es", str(f), "--labels", "mnms"]) == 2
    assert "M&Ms convention" in capsys.readouterr().err


# ----------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_cli_on_real_mnms_case(realdata, capsys):
    d = realdata / "mnms"
    assert (
        cli_main(
            [
                "--ed",
                str(d / "better_G1K1V3_sa_ED_gt.nii.gz"),
                "--es",
                str(d / "better_G1K1V3_sa_ES_gt.nii.gz"),
                "--json",
            ]
        )
        == 0
    )
    p = json.loads(capsys.readouterr().out)
    assert p["LVEDV"] == pytest.approx(158.9, abs=0.06) and p["LVESV"] == pytest.approx(70.8, abs=0.06)
    assert 50 <= p["LVEF"] <= 60 and 80 <= p["LVM"] <= 120


@pytest.mark.realdata
def test_real_mnms_wall_thickness_is_physiological(realdata):
    from cmrkit.io import iter_subjects

    for s in iter_subjects(realdata / "mnms", "mnms"):
        ed, es = wall_thickness(s.label_ed, s.affine), wall_thickness(s.label_es, s.affine)
        assert 4.0 <= ed <= 12.0 and es > ed  # the wall thickens in systole
