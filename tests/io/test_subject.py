"""Subject record, dispatch, and the Ferdian tagging HDF5 -> Subject conversion."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from cmrkit.io import DATASETS, MissingFileError, Subject, iter_subjects, load_subject
from cmrkit.io.nifti import DataError


def write_ferdian(path, n=1, T=4, H=12, W=10, patients=None, slices=None):
    rng = np.random.default_rng(n)
    imgs = rng.integers(0, 1000, size=(n, T, H, W)).astype(np.uint16)
    lm = rng.uniform(0, 10, size=(n, T, 2, 168))
    with h5py.File(path, "w") as fh:
        fh["image_seqs"] = imgs
        fh["landmark_coords"] = lm
        fh["px_spaces"] = np.full(n, 1.3671875)
        fh["ed_frame_idx"] = np.zeros(n, int)
        fh["es_frame_idx"] = np.full(n, 2)
        if patients is not None:
            fh["_patients"] = np.array(patients, dtype=object).astype("S")
        if slices is not None:
            fh["_slices"] = np.array(slices, dtype=object).astype("S")
    return imgs, lm


def test_ferdian_single_row(tmp_path):
    imgs, lm = write_ferdian(tmp_path / "train_example.h5")
    s = load_subject(tmp_path / "train_example.h5", dataset="ferdian")
    assert s.subject_id == "train_example" and s.cine is None and len(s.tagging) == 1
    t = s.tagging[0]
    assert t.image.shape == (10, 12, 4)  # (X = W, Y = H, T)
    # image[x, y, t] == image_seqs[0, t, y, x], the frame the landmark (x, y) refers to
    np.testing.assert_array_equal(t.image[7, 3, 2], imgs[0, 2, 3, 7])
    np.testing.assert_allclose(t.landmarks, lm[0])
    assert (t.ed_frame, t.es_frame) == (0, 2) and (s.ed_frame, s.es_frame) == (0, 2)
    np.testing.assert_allclose(t.spacing, (1.3671875, 1.3671875))
    assert t.meta["affine_is_synthetic"]


def test_ferdian_rows_grouped_by_patient(tmp_path):
    write_ferdian(tmp_path / "a.h5", n=4, patients=["P1", "P1", "P1", "P2"], slices=["base", "mid", "apex", "mid"])
    write_ferdian(tmp_path / "b.h5", n=2)
    subs = list(iter_subjects(tmp_path, "ferdian"))
    assert [s.subject_id for s in subs] == ["P1", "P2", "b_0", "b_1"]
    assert [t.name for t in subs[0].tagging] == ["base", "mid", "apex"]
    with pytest.raises(DataError, match="holds 2 subjects"):
        load_subject(tmp_path / "a.h5", dataset="ferdian")
    one = load_subject(tmp_path / "a.h5", dataset="ferdian", index=3)
    assert one.subject_id == "P2" and one.meta["h5_rows"] == [3]


def test_dispatch_errors(tmp_path):
    assert set(DATASETS) == {"phantom", "ukbb", "acdc", "mnms", "ferdian", "dicom"}
    with pytest.raises(ValueError, match="dataset: expected one of"):
        load_subject(tmp_path, dataset="kaggle")
    with pytest.raises(MissingFileError):
        load_subject(tmp_path / "none", dataset="ukbb")
    with pytest.raises(MissingFileError):
        list(iter_subjects(tmp_path / "none", "acdc"))


def test_subject_validate_and_views():
    cine = np.zeros((4, 4, 2, 3), np.float32)
    lab = np.zeros((4, 4, 2, 3), np.uint8)
    lab[1, 1, 0, 2] = 1
    s = Subject(
        "x", "ukbb", cine, lab, np.eye(4), ed_frame=0, es_frame=2, labelled_frames=np.array([False, False, True])
    )
    assert s.validate() is s and s.shape == (4, 4, 2, 3) and s.n_frames == 3
    assert s.label_es[1, 1, 0] == 1
    with pytest.raises(ValueError, match="frame 0 is not labelled"):
        _ = s.label_ed
    with pytest.raises(ValueError, match="es_frame=5 outside"):
        s.copy_with(es_frame=5).validate()
    with pytest.raises(ValueError, match="cine_labels shape"):
        s.copy_with(cine_labels=lab[:, :3]).validate()
    assert s.heart_rate_bpm is None
    assert s.copy_with(covariates={"heart_rate": 70}).heart_rate_bpm == 70.0
