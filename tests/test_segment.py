"""cmrkit.segment: training slices from subject records, segmentation of volumes of any resolution,
the M&Ms evaluation and its command line (the real-data tests run where the M&Ms cases are)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from cmrkit.models.segmenter import Segmenter, toy_slices
from cmrkit.segment import (
    cli_main,
    evaluate_on_mnms,
    segment_volume_at_resolution,
    slices_from_subjects,
    summarise_mnms,
)

from .conftest import dice_ref


@pytest.fixture(scope="module")
def trained(trained_segmenter):
    return trained_segmenter


def test_slices_from_subjects_resamples_and_crops():
    from cmrkit.io.subject import Subject

    x, y = toy_slices(4, 64, rng=2)
    # a 2-slice, 2-frame subject at 0.9 mm: toy slices up-sampled 2x inside a 160 x 150 canvas
    cine = np.zeros((160, 150, 2, 2), np.float32)
    lab = np.zeros((160, 150, 2, 2), np.uint8)
    for z in range(2):
        for t in range(2):
            k = 2 * z + t
            cine[20:148, 10:138, z, t] = np.kron(x[k], np.ones((2, 2)))
            lab[20:148, 10:138, z, t] = np.kron(y[k], np.ones((2, 2)))
    lab[..., 1] = 0  # only frame 0 labelled
    subj = Subject("s0", "phantom", cine, lab, np.diag([0.9, 0.9, 8.0, 1.0]), labelled_frames=np.array([True, False]))
    none = Subject("s1", "phantom", cine, None, np.diag([0.9, 0.9, 8.0, 1.0]))
    xs, ys, idx = slices_from_subjects([none, subj], image_size=64, pixel_mm=1.8, return_index=True)
    assert xs.shape == (2, 64, 64) and idx.tolist() == [[1, 0, 0], [1, 1, 0]]

    # back at 1.8 mm the labels are the original toy labels, shifted (the same for both slices)
    # so that the bounding box of all labelled voxels is centred in the 64 px window
    def box_centre(a):
        r, c = np.nonzero(a)
        return (r.min() + r.max()) / 2, (c.min() + c.max()) / 2

    (r0, c0), (r1, c1) = box_centre(ys.any(0)), box_centre((y[0] > 0) | (y[2] > 0))
    assert abs(r0 - 31.5) <= 1 and abs(c0 - 31.5) <= 1
    for k in range(2):
        moved = np.roll(ys[k], (round(r1 - r0), round(c1 - c0)), (0, 1))
        assert min(dice_ref(moved, y[2 * k], lab) for lab in (1, 2, 3)) > 0.9


def test_evaluate_on_mnms_without_data_says_why(trained, tmp_path):
    df = evaluate_on_mnms(trained[0], tmp_path / "nope")
    assert df.empty and df.attrs["note"] == f"M&Ms folder {tmp_path / 'nope'} not found; nothing evaluated"
    for none in (None, ""):
        df, preds = evaluate_on_mnms(trained[0], none, return_predictions=True)
        assert df.empty and preds == {} and "no M&Ms folder configured" in df.attrs["note"]
    (tmp_path / "empty").mkdir()
    assert "no M&Ms <case>_sa" in evaluate_on_mnms(trained[0], tmp_path / "empty").attrs["note"]


def test_segment_volume_at_resolution(trained):
    """Toy slices drawn at 1.8 mm, shown at 0.9 mm inside a larger off-centre canvas, come back
    segmented on the fine grid (resample -> crop -> predict -> paste -> resample)."""
    seg, xt, yt = trained
    fine_x = np.kron(xt[:3], np.ones((2, 2), np.float32))  # (3, 128, 128) at 0.9 mm
    fine_y = np.kron(yt[:3], np.ones((2, 2), np.uint8))
    canvas = np.zeros((3, 200, 170), np.float32)
    lab = np.zeros((3, 200, 170), np.uint8)
    canvas[:, 60:188, 20:148], lab[:, 60:188, 20:148] = fine_x, fine_y
    vol, gt = canvas.transpose(1, 2, 0), lab.transpose(1, 2, 0)
    centre = (60 + 63.5, 20 + 63.5)  # heart-window centre in fine voxels
    pred = segment_volume_at_resolution(seg, vol, (0.9, 0.9, 10.0), centre)
    assert pred.shape == vol.shape and pred.dtype == np.uint8
    assert min(dice_ref(pred, gt, k) for k in (1, 2, 3)) > 0.75
    with pytest.raises(ValueError, match="pixel_mm"):
        segment_volume_at_resolution(Segmenter(), vol, (0.9, 0.9, 10.0), centre)


@pytest.mark.realdata
def test_mnms_label_convention(mnms_dir):
    """M&Ms labels: 1 LV blood pool lies inside the label-2 myocardial ring; RV (3) outside it."""
    from cmrkit.io.mnms import iter_mnms_subjects

    n = 0
    for subj in iter_mnms_subjects(mnms_dir):
        for t in np.flatnonzero(subj.labelled_frames):
            gt = subj.label(t)
            filled = np.stack([ndi.binary_fill_holes(gt[..., z] == 2) for z in range(gt.shape[2])], -1)
            assert filled[gt == 1].mean() > 0.85 and not filled[gt == 3].any(), subj.subject_id
            n += 1
    assert n >= 6


@pytest.mark.realdata
def test_evaluate_on_mnms_real_files(trained, mnms_dir):
    seg = trained[0]
    for centre in ("motion", "label"):
        df, preds = evaluate_on_mnms(seg, mnms_dir, centre=centre, return_predictions=True)
        n = len(preds)
        assert n >= 4 and len(df) == 3 * n and set(df["structure"]) == {"LV", "Myo", "RV"}
        assert np.all(np.isfinite(df["dice"])) and df["dice"].between(0, 1).all()
        assert (df["gt_voxels"] > 0).all() and np.allclose(df["pixel_mm"], 1.8)
        for (_, _), (img, gt, pred) in preds.items():
            assert pred.shape == gt.shape == img.shape
        row = df.iloc[0]
        _, gt, pred = preds[(row["subject"], row["phase"])]
        assert row["dice"] == pytest.approx(
            dice_ref(pred, gt, int(row["label"])) if (pred == row["label"]).any() else 0.0
        )
    assert "ground-truth" in df.attrs["note"]
    assert df.attrs["skipped"]  # the label-only case A5P5W0


@pytest.mark.realdata
def test_cli_trains_saves_and_reports(tmp_path, capsys, mnms_dir):
    out = tmp_path / "seg.pt"
    rc = cli_main(
        [
            "--data-dir",
            str(mnms_dir),
            "--dataset",
            "mnms",
            "--epochs",
            "1",
            "--pixel-mm",
            "2.0",
            "--val-fraction",
            "0.34",
            "--out",
            str(out),
            "--csv",
            str(tmp_path / "m.csv"),
            "--mnms",
            str(mnms_dir),
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0 and out.is_file() and (tmp_path / "m.csv").is_file()
    assert "held-out mnms Dice" in text and "dice_mean" in text
    assert Segmenter.load(out).config.pixel_mm == pytest.approx(2.0)
    assert cli_main(["--data-dir", str(mnms_dir), "--profile", "nosuchprofile"]) == 2


def test_summarise_mnms():
    import pandas as pd

    df = pd.DataFrame(
        {
            "centre": ["motion"] * 4,
            "structure": ["LV", "LV", "RV", "RV"],
            "dice": [0.5, 0.7, 0.0, 0.4],
            "hd95_mm": [10.0, 20.0, np.inf, 8.0],
            "pred_voxels": [5, 6, 0, 9],
        }
    )
    s = summarise_mnms(df).set_index("structure")
    assert s.loc["LV", "dice_mean"] == pytest.approx(0.6) and s.loc["LV", "hd95_mm_mean"] == pytest.approx(15.0)
    assert s.loc["RV", "hd95_mm_mean"] == pytest.approx(8.0) and s.loc["RV", "missed"] == 1


def test_segment_is_a_cmrkit_command(capsys):
    from cmrkit.cli import main

    assert main(["segment", "--data-dir", "nowhere", "--profile", "nosuchprofile"]) == 2
    assert "cmrkit segment: error: unknown profile 'nosuchprofile'" in capsys.readouterr().err
