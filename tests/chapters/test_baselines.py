"""cmrkit.chapters.baselines: profile mapping, collapse flags, the summary's verdicts, the registry's co-writer
rule for the comparison tables, and the dry runs at smoke sizes (demo/paper: tests/test_dryrun.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cmrkit.chapters import baselines
from cmrkit.config import load
from cmrkit.report import Report, TableRow


@pytest.mark.parametrize("profile", ["smoke", "cpu", "demo", "paper"])
def test_every_profile_maps_on_valid_model_sizes(profile):
    cfg = load(profile)
    c5 = baselines.baseline_config(cfg, 5, (*cfg.ch5.image_size, cfg.ch5.slices))
    c6 = baselines.baseline_config(cfg, 6, (*cfg.ch6.image_size, cfg.ch6.slices, cfg.ch6.frames), cond_dim=16)
    assert c5.shape == (*cfg.ch5.image_size, cfg.ch5.slices) and not c5.fold_slices and c5.frames == 1
    assert c6.frames == cfg.ch6.frames and c6.fold_slices and c6.cond_dim == 16
    assert c5.latent_dim == c6.latent_dim == cfg.baselines.latent_dim
    assert str(cfg.baselines.cgan_loss) in ("bce", "least_squares")
    with pytest.raises(ValueError, match="chapter must be 5 or 6"):
        baselines.baseline_config(cfg, 4, (8, 8, 8))


def test_collapse_flags():
    assert baselines.collapse_flags(0.9, 0.8) == []
    assert len(baselines.collapse_flags(0.1, 0.8)) == 1
    assert len(baselines.collapse_flags(0.1, 0.1)) == 2
    assert baselines.collapse_flags(math.nan, math.nan) == []


def test_missing_structures_flags_a_set_without_a_heart():
    names = {1: "LV", 2: "Myo", 3: "RV"}
    lab = np.zeros((4, 6, 6, 2), np.uint8)
    lab[:, 1:3, 1:3] = 1
    lab[:, 3:5, 3:5] = 2
    lab[:1, 0, 0] = 3  # an RV in one volume of four
    assert baselines.missing_structures(lab, names) == ["no RV in 3 of 4 volumes"]
    lab[:2, 0, 0] = 3  # in half of them: not flagged
    assert baselines.missing_structures(lab, names) == []
    empty = np.zeros((3, 6, 6, 2, 5), np.uint8)  # all background, like an untrained decoder
    assert baselines.missing_structures(empty, names, what="sequences") == [
        "no LV in 3 of 3 sequences",
        "no Myo in 3 of 3 sequences",
        "no RV in 3 of 3 sequences",
    ]


def _frame(rows):
    return pd.DataFrame([{"row": r, "metric": m, "value": v} for r, m, v in rows])


def test_summary_names_the_best_model_and_the_failures(tmp_path):
    cfg = load("smoke")
    rep = Report("smoke", 0, "phantom", root=tmp_path, notebook="04_baselines")
    t51 = _frame(
        [
            ("LDM", "FID", 3.0),
            ("3D VAE", "FID", 5.0),
            ("3D LSGAN", "FID", 9.0),
            ("LDM", "IR", 0.5),
            ("3D VAE", "IR", 0.7),
            ("3D LSGAN", "IR", 0.0),
        ]
    )
    empty = pd.DataFrame(columns=["row", "metric", "value"])
    checks = {"table": empty, "flags": {"LDM": [], "3D VAE": [], "3D LSGAN": ["samples 0.05x as far apart"]}}
    out = baselines.summary(cfg, rep, ch5=object(), t51=t51, checks5=checks)
    df = out["table"]
    assert len(df[df["row"] == "ch5: FID (Table 5.1)"]) == 3
    assert "ch5: FID (Table 5.1): best LDM (3; lower is better)" in out["verdicts"]
    assert "ch5: improved recall (Table 5.1): best 3D VAE (0.7; higher is better)" in out["verdicts"]
    assert "ch5: valid anatomy: no model has a finite value" in out["verdicts"]
    assert any(v.startswith("FAILURE ch5 3D LSGAN: collapsed") for v in out["verdicts"])
    assert (tmp_path / "tables" / "baselines_summary.md").is_file()
    with pytest.raises(ValueError, match="nothing to summarise"):
        baselines.summary(cfg, rep)


def test_notebook_04_may_rewrite_the_comparison_tables_and_nothing_else_of_another_notebook(tmp_path):
    rep4 = Report("smoke", 0, "phantom", root=tmp_path, notebook="04_baselines")
    rep4.save_table("table_5_1", [TableRow("3D VAE", "FID", 1.0)])
    rep4.save_table("table_6_4", [TableRow("CHeart", "LVEDV", 1.0)])
    with pytest.raises(ValueError, match="belongs to notebook '02_ldm3d'"):
        rep4.save_table("ch5_generated_checks", [TableRow("x", "y", 1.0)])
    rep3 = Report("smoke", 0, "phantom", root=tmp_path, notebook="03_cond_ldm4d")
    with pytest.raises(ValueError, match="belongs to notebook '04_baselines'"):
        rep3.save_table("baselines_summary", [TableRow("x", "y", 1.0)])
    df = pd.read_csv(tmp_path / "tables" / "table_5_1.csv")
    assert df["thesis_value"].iloc[0] == pytest.approx(32.74)  # the thesis' 3D VAE FID beside this run's


def test_training_curves_figure(tmp_path):
    rep = Report("smoke", 0, "phantom", root=tmp_path, notebook="04_baselines")
    hist_vae = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e} for e in (1, 2, 3)]
    hist_gan = [
        {
            "epoch": e,
            "train_loss": 0.3,
            "val_loss": math.nan,
            "train/d_loss": 0.2,
            "train/d/real": 0.6,
            "train/d/fake": 0.4,
        }
        for e in (1, 2)
    ]
    models = {
        "vae3d": baselines.Trained("vae3d", "3D VAE", None, hist_vae, 3, tmp_path),
        "lsgan3d": baselines.Trained("lsgan3d", "3D LSGAN", None, hist_gan, 2, tmp_path),
    }
    baselines.training_curves(rep, models)
    assert (tmp_path / "figures" / "baselines_training_curves.png").is_file()


def test_dry_runs_cover_the_five_baselines_and_run_at_smoke_sizes():
    runs = baselines.dry_runs(load("smoke", device="cpu"))
    assert [r.name for r in runs] == ["3D VAE", "3D LSGAN", "CGAN", "CVAE", "CHeart"]
    for r in runs:
        out = r.run()
        assert set(out) == set(r.expected)
        for name, shape in r.expected.items():
            assert np.asarray(out[name]).shape == shape
            assert np.all(np.isfinite(np.asarray(out[name], dtype=float)))
        assert out["image"].min() >= 0 and out["image"].max() <= 1 and out["labels"].max() <= 3


@pytest.mark.parametrize("profile", ["demo", "paper"])
def test_dry_runs_at_thesis_resolution_are_registered(profile):
    """The one-step runs themselves are executed by tests/test_dryrun.py (every chapter's dry runs)."""
    cfg = load(profile, device="cpu")
    runs = baselines.dry_runs(cfg)
    assert len(runs) == 5 and all(r.chapter == "baselines" for r in runs)
    assert runs[0].expected["image"] == (1, 128, 128, 10)
    assert runs[-1].expected["labels"] == (1, 128, 128, 10, int(cfg.ch6.frames))
