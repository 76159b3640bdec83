"""cmrkit.runs: run folders keyed by settings, manifests, sample sets."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from cmrkit import runs


def _cfg(**kw):
    base = dict(profile="smoke", seed=0, dataset="phantom", data_dir="/data/x")
    base.update(kw)
    return SimpleNamespace(**base)


def test_run_dir_is_keyed_by_every_setting(tmp_path):
    a = runs.run_dir(_cfg(), "ldm3d", "autoencoder", {"epochs": 2}, root=tmp_path)
    assert a == runs.run_dir(_cfg(), "ldm3d", "autoencoder", {"epochs": 2}, root=tmp_path)
    assert a.parent == tmp_path / "smoke" / "phantom" / "ldm3d"
    others = [
        runs.run_dir(_cfg(seed=1), "ldm3d", "autoencoder", {"epochs": 2}, root=tmp_path),
        runs.run_dir(_cfg(data_dir="/data/y"), "ldm3d", "autoencoder", {"epochs": 2}, root=tmp_path),
        runs.run_dir(_cfg(), "ldm3d", "autoencoder", {"epochs": 3}, root=tmp_path),
        runs.run_dir(_cfg(), "ldm3d", "diffusion", {"epochs": 2}, root=tmp_path),
    ]
    assert len({a, *others}) == 5
    # key order and tuple/list spelling do not change the hash
    k1 = runs.run_key(_cfg(), "c", "n", {"a": 1, "b": (1, 2)})
    k2 = runs.run_key(_cfg(), "c", "n", {"b": [1, 2], "a": 1})
    assert k1.hash == k2.hash and len(k1.hash) == 10


def test_complete_find_and_list(tmp_path):
    cfg = _cfg()
    assert runs.find_run(cfg, "ldm3d", "samples", {"n": 4}, root=tmp_path) is None
    d = runs.run_dir(cfg, "ldm3d", "samples", {"n": 4}, root=tmp_path)
    assert not runs.is_complete(d) and runs.find_run(cfg, "ldm3d", "samples", {"n": 4}, root=tmp_path) is None
    runs.mark_complete(d, n_samples=4)
    assert runs.find_run(cfg, "ldm3d", "samples", {"n": 4}, root=tmp_path) == d
    listed = runs.list_runs(cfg, "ldm3d", "samples", root=tmp_path)
    assert [m["folder"] for m in listed] == [str(d)] and listed[0]["n_samples"] == 4
    assert runs.list_runs(cfg, "ldm3d", "autoencoder", root=tmp_path) == []


def test_mismatched_manifest_is_refused(tmp_path):
    d = runs.run_dir(_cfg(), "ldm3d", "autoencoder", {"epochs": 2}, root=tmp_path)
    man = json.loads((d / "manifest.json").read_text())
    man["key"]["payload"]["epochs"] = 9  # a folder copied from a run with other settings
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(runs.RunMismatchError, match=r"payload.epochs: 9 != 2"):
        runs.run_dir(_cfg(), "ldm3d", "autoencoder", {"epochs": 2}, root=tmp_path)
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(runs.RunMismatchError, match="unreadable run manifest"):
        runs.read_manifest(d)
    with pytest.raises(ValueError, match="chapter must be"):
        runs.run_key(_cfg(), "a/b", "x")


def test_sample_set_round_trip_and_nifti(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.random((3, 8, 6, 4), dtype=np.float32)
    lab = rng.integers(0, 4, (3, 8, 6, 4)).astype(np.uint8)
    aff = np.diag([1.5, 1.5, 8.0, 1.0])
    s = runs.SampleSet({"image": img, "labels": lab}, seeds=[5, 6, 7], affine=aff, meta={"sampler": "ddim"})
    s.save(tmp_path)
    t = runs.SampleSet.load(tmp_path)
    assert np.array_equal(t.arrays["image"], img) and t.arrays["labels"].dtype == np.uint8
    assert t.seeds.tolist() == [5, 6, 7] and np.allclose(t.affine, aff) and t.meta == {"sampler": "ddim"}
    paths = t.to_nifti(tmp_path / "nii")
    assert len(paths) == 6
    import nibabel as nib

    back = nib.load(str(paths[1]))
    assert np.array_equal(np.asarray(back.dataobj), lab[0]) and np.allclose(back.affine, aff)


def test_sample_set_guards(tmp_path):
    ok = np.zeros((2, 4, 4, 2), np.float32)
    with pytest.raises(ValueError, match="at least one sample"):
        runs.SampleSet({"image": ok[:0]}, seeds=[])
    with pytest.raises(ValueError, match=r"expected \(N=2"):
        runs.SampleSet({"image": ok[0]}, seeds=[0, 1])
    bad = ok.copy()
    bad[1, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        runs.SampleSet({"image": bad}, seeds=[0, 1])
    (tmp_path / "samples.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable cmrkit sample set"):
        runs.SampleSet.load(tmp_path)


def test_check_samples_guards_shape_kind_and_range():
    from cmrkit.runs import ArraySpec, check_samples

    ok = runs.SampleSet(
        {"image": np.full((2, 4, 4, 3), 0.5, np.float32), "labels": np.zeros((2, 4, 4, 3), np.uint8)}, [1, 2]
    )
    specs = {"image": ArraySpec((4, 4, 3), 0.0, 1.0), "labels": ArraySpec((4, 4, 3), 0.0, 3.0, integer=True)}
    check_samples(ok, specs)
    bad_shape = runs.SampleSet({"image": ok.arrays["image"][:, :, :2], "labels": ok.arrays["labels"]}, [1, 2])
    with pytest.raises(ValueError, match=r"'image' samples have shape \(4, 2, 3\), the data \(4, 4, 3\)"):
        check_samples(bad_shape, specs, where="vae3d")
    hot = runs.SampleSet({"image": ok.arrays["image"] * 3, "labels": ok.arrays["labels"]}, [1, 2])
    with pytest.raises(ValueError, match=r"outside the data's range \[0, 1\] \(96 values\)"):
        check_samples(hot, specs)
    floaty = runs.SampleSet({"image": ok.arrays["image"], "labels": ok.arrays["labels"].astype(np.float32)}, [1, 2])
    with pytest.raises(ValueError, match="integer codes"):
        check_samples(floaty, specs)
    with pytest.raises(ValueError, match="no 'labels' array"):
        check_samples(runs.SampleSet({"image": ok.arrays["image"]}, [1, 2]), specs)


def test_latest_run_only_takes_this_seed_and_data_folder(tmp_path):
    from cmrkit.config import load
    from cmrkit.runs import latest_run

    cfg = load("smoke", data_dir=str(tmp_path / "cohort_a"))
    other_seed = load("smoke", seed=3, data_dir=str(tmp_path / "cohort_a"))
    other_data = load("smoke", data_dir=str(tmp_path / "cohort_b"))
    for c in (other_seed, other_data):
        runs.mark_complete(runs.run_dir(c, "baselines", "vae3d", {"n": 1}, root=tmp_path))
    assert latest_run(cfg, "baselines", "vae3d", root=tmp_path) is None
    folder = runs.run_dir(cfg, "baselines", "vae3d", {"n": 2}, root=tmp_path)
    assert latest_run(cfg, "baselines", "vae3d", root=tmp_path) is None  # not complete yet
    runs.mark_complete(folder)
    assert latest_run(cfg, "baselines", "vae3d", root=tmp_path)["folder"] == str(folder)
