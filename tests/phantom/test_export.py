"""Phantom tagging exported in Ferdian's HDF5 layout: orientation, landmarks, and the CLI round trip
(``cmrkit phantom --export-ferdian`` then ``cmrkit strain`` / ``cmrkit track`` on the file)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from cmrkit.io.ferdian import read_ferdian_h5
from cmrkit.phantom import generate_cohort, read_ground_truth
from cmrkit.phantom.cli import build_parser, cli_main
from cmrkit.phantom.export import export_ferdian
from cmrkit.strain import green_strain_from_landmarks


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, tiny_geometry):
    out = tmp_path_factory.mktemp("export") / "cohort"
    return generate_cohort(out, 2, seed=3, geometry=tiny_geometry, workers=1, progress=False)


def test_export_layout_orientation_and_true_landmarks(cohort, tmp_path):
    f = export_ferdian(cohort, tmp_path / "tag.h5")
    d = read_ferdian_h5(f)
    assert d.image_seqs.shape[0] == 6 and d.landmark_coords.shape[:3] == (6, d.image_seqs.shape[1], 2)
    assert list(d.extra["_patients"]) == ["PH0000"] * 3 + ["PH0001"] * 3
    assert list(d.extra["_slices"]) == ["basal", "mid", "apical"] * 2
    for row, (sid, k) in enumerate([(s, k) for s in ("PH0000", "PH0001") for k in range(3)]):
        vol = nib.load(str(cohort / sid / f"tag_{k + 1}.nii.gz"))
        tag = np.asarray(vol.dataobj, np.float32)[:, :, 0, :]  # (X, Y, T)
        # Ferdian images are (T, rows = y, columns = x): pixel (x=i, y=j) of the NIfTI
        np.testing.assert_array_equal(d.image_seqs[row, 2, 5, 9], tag[9, 5, 2])
        assert d.px_spaces[row] == pytest.approx(float(vol.header.get_zooms()[0]))
        gt = read_ground_truth(cohort / sid)
        np.testing.assert_allclose(d.landmark_coords[row], gt["landmarks"]["px"][k], atol=1e-4)
        # Ferdian's strain of the exported landmarks is the phantom's landmark strain
        np.testing.assert_allclose(
            green_strain_from_landmarks(d.landmark_coords[row]).Ecc, gt["strain"]["landmark"]["ecc"][k], atol=1e-4
        )
        tag_ms, cine_ms = gt["times"]["tag_ms"], gt["times"]["cine_ms"]
        assert d.es_frame_idx[row] == np.abs(tag_ms - cine_ms[gt["attrs"]["es_frame"]]).argmin()
        assert d.ed_frame_idx[row] == 0
    assert read_ferdian_h5(export_ferdian(cohort, tmp_path / "one.h5", n_subjects=1)).n == 3


def test_export_refuses_a_folder_and_a_non_cohort(cohort, tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder"):
        export_ferdian(cohort, tmp_path)
    with pytest.raises(FileNotFoundError, match="no phantom subject folders"):
        export_ferdian(tmp_path, tmp_path / "x.h5")


def test_cli_defaults_to_smoke_and_exports_for_strain_and_track(tmp_path, capsys):
    assert build_parser().parse_args([]).profile == "smoke"
    h5 = tmp_path / "phantom_tagging.h5"
    args = ["--n", "1", "--matrix", "48", "--out", str(tmp_path / "c"), "--workers", "1", "--no-progress"]
    assert cli_main([*args, "--export-ferdian", str(h5)]) == 0
    out = capsys.readouterr().out
    assert "3 tagging slices" in out and f"cmrkit track {h5}" in out
    # again: the cohort is reused and says so (no "generated in 0.1 s" for nothing)
    assert cli_main([*args, "--export-ferdian", str(h5)]) == 0
    assert "already in" in capsys.readouterr().out
    from cmrkit.strain import cli_main as strain_cli
    from cmrkit.tagging.cli import cli_main as track_cli

    assert strain_cli([str(h5), "--json"]) == 0
    strain = json.loads(capsys.readouterr().out)
    assert min(strain["Ecc"]) < -0.05  # the phantom contracts
    assert track_cli([str(h5), "--init-from-file", "--json", "--slice", "1", "--tracker", "harp"]) == 0
    tracked = json.loads(capsys.readouterr().out)
    assert tracked["init"] == "file" and max(tracked["landmark_error_px"]) < 1.0
    # bad input
    assert cli_main([*args, "--export-ferdian", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert cli_main([*args, "--export-subjects", "1"]) == 2
    assert "needs --export-ferdian" in capsys.readouterr().err
    assert cli_main([*args, "--frames", "1"]) == 2
    assert "--frames must be >= 2" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert cli_main(["--out", str(tmp_path / "afile"), "--n", "1"]) == 2
    assert "is a file" in capsys.readouterr().err
