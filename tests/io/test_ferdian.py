"""Tests for cmrkit.io.ferdian: Ferdian-format HDF5 read/write."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from cmrkit.io.ferdian import FerdianData, FerdianFormatError, read_ferdian_h5, write_ferdian_h5


def _landmarks(n: int, t: int, rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(20, 40, (n, t, 2, 168))


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.random((2, 20, 24, 24)).astype(np.float32)
    lm = _landmarks(2, 20, rng)
    f = tmp_path / "sub" / "x.h5"
    out = write_ferdian_h5(
        f,
        image_seqs=imgs,
        landmark_coords=lm,
        px_spaces=[1.4, 1.5],
        ed_frame_idx=[0, 0],
        es_frame_idx=[7, 8],
        extra={"_patients": np.array(["a", "b"]), "bbox_corners": np.ones((2, 4))},
    )
    assert out == f and f.is_file()
    assert not list(f.parent.glob(".*part*"))  # no temporary left behind
    d = read_ferdian_h5(f)
    assert d.n == 2 and d.n_frames == 20 and d.has_all_landmark_frames
    np.testing.assert_array_equal(d.image_seqs, imgs)
    np.testing.assert_allclose(d.landmark_coords, lm, atol=1e-4)  # stored float32 like Ferdian
    np.testing.assert_allclose(d.px_spaces, [1.4, 1.5], atol=1e-6)
    np.testing.assert_array_equal(d.es_frame_idx, [7, 8])
    assert list(d.extra["_patients"]) == ["a", "b"] and d.extra["bbox_corners"].shape == (2, 4)
    # FerdianData.write round trip keeps everything
    g = d.write(tmp_path / "y.h5")
    d2 = read_ferdian_h5(g)
    np.testing.assert_allclose(d2.landmark_coords, d.landmark_coords, atol=1e-4)
    assert list(d2.extra["_patients"]) == ["a", "b"]
    # resizable along rows, as Ferdian's _save_to_h5 makes them (his code appends)
    with h5py.File(g, "r") as fh:
        assert fh["image_seqs"].maxshape[0] is None and fh["landmark_coords"].dtype == np.float32


def test_reads_file_written_like_ferdian(tmp_path):
    """A file made the way prepare_data.py does it (appending, vlen strings, (n,20,256,256))."""
    rng = np.random.default_rng(1)
    f = tmp_path / "train_example.h5"
    imgs = rng.random((1, 20, 64, 64)).astype(np.float32)
    lm = _landmarks(1, 20, rng).astype(np.float32)
    with h5py.File(f, "a") as hf:
        hf.create_dataset(
            "_patients", data=np.array(["p1"], dtype=object), maxshape=(None,), dtype=h5py.special_dtype(vlen=str)
        )
        for name, arr in (
            ("image_seqs", imgs),
            ("landmark_coords", lm),
            ("px_spaces", np.array([1.4], np.float32)),
            ("ed_frame_idx", np.array([0])),
            ("es_frame_idx", np.array([6])),
            ("regions", np.ones((1, 20, 168))),
        ):
            hf.create_dataset(name, data=arr, maxshape=(None,) + arr.shape[1:])
    d = read_ferdian_h5(f)
    assert d.image_seqs.shape == (1, 20, 64, 64) and d.landmark_coords.shape == (1, 20, 2, 168)
    assert d.extra["_patients"][0] == "p1" and d.extra["regions"].shape == (1, 20, 168)
    assert d.es_frame_idx.dtype == np.int64 and d.px_spaces.dtype == np.float64


def test_layouts_frames_last_single_frame_and_transposed(tmp_path):
    rng = np.random.default_rng(2)
    imgs = rng.random((2, 20, 32, 32)).astype(np.float32)
    f = tmp_path / "nhwt.h5"
    with h5py.File(f, "w") as hf:
        hf["image_seqs"] = np.moveaxis(imgs, 1, 3)  # (n, H, W, T)
        hf["landmark_coords"] = _landmarks(2, 1, rng)[:, 0]  # (n, 2, 168): frame 0 only
    d = read_ferdian_h5(f)
    np.testing.assert_array_equal(d.image_seqs, imgs)
    assert d.landmark_coords.shape == (2, 1, 2, 168) and not d.has_all_landmark_frames
    np.testing.assert_array_equal(read_ferdian_h5(f, image_layout="nhwt").image_seqs, imgs)
    g = tmp_path / "transposed.h5"
    lm = _landmarks(2, 20, rng)
    with h5py.File(g, "w") as hf:
        hf["image_seqs"] = imgs
        hf["landmark_coords"] = np.swapaxes(lm, 2, 3)  # (n, T, 168, 2)
    np.testing.assert_allclose(read_ferdian_h5(g).landmark_coords, lm)
    h = tmp_path / "thw.h5"
    with h5py.File(h, "w") as hf:
        hf["image_seqs"] = imgs[0]
    with pytest.raises(FerdianFormatError, match="image_layout='thw'"):
        read_ferdian_h5(h)
    assert read_ferdian_h5(h, image_layout="thw").image_seqs.shape == (1, 20, 32, 32)


def test_landmark_frame_valid_flags_zero_padding(tmp_path):
    rng = np.random.default_rng(3)
    lm = _landmarks(1, 20, rng)
    lm[0, 15:] = 0.0  # Ferdian zero-fills frames missing from short sequences
    f = write_ferdian_h5(tmp_path / "pad.h5", image_seqs=np.zeros((1, 20, 8, 8)), landmark_coords=lm)
    d = read_ferdian_h5(f)
    np.testing.assert_array_equal(d.landmark_frame_valid[0], np.arange(20) < 15)


def test_errors_name_file_and_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        read_ferdian_h5(tmp_path / "missing.h5")
    bad = tmp_path / "not_h5.h5"
    bad.write_text("hello")
    with pytest.raises(FerdianFormatError, match="not_h5.h5.*HDF5"):
        read_ferdian_h5(bad)
    f = tmp_path / "lm_only.h5"
    with h5py.File(f, "w") as hf:
        hf["landmark_coords"] = np.zeros((1, 20, 2, 168))
    with pytest.raises(FerdianFormatError, match="lm_only.h5.*'image_seqs'"):
        read_ferdian_h5(f)
    assert read_ferdian_h5(f, require_images=False).image_seqs is None
    g = tmp_path / "bad_shape.h5"
    with h5py.File(g, "w") as hf:
        hf["image_seqs"] = np.zeros((1, 20, 16, 16))
        hf["landmark_coords"] = np.zeros((1, 20, 3, 168))
    with pytest.raises(FerdianFormatError, match="bad_shape.h5.*'landmark_coords'.*\\(1, 20, 3, 168\\)"):
        read_ferdian_h5(g)
    h = tmp_path / "rows.h5"
    with h5py.File(h, "w") as hf:
        hf["image_seqs"] = np.zeros((2, 20, 16, 16))
        hf["px_spaces"] = np.ones(3)
    with pytest.raises(FerdianFormatError, match="'px_spaces' has 3 rows"):
        read_ferdian_h5(h)
    k = tmp_path / "frames.h5"
    with h5py.File(k, "w") as hf:
        hf["image_seqs"] = np.zeros((1, 20, 16, 16))
        hf["landmark_coords"] = np.zeros((1, 5, 2, 168))
    with pytest.raises(FerdianFormatError, match="5 frames"):
        read_ferdian_h5(k)


def test_write_validates_and_is_atomic(tmp_path):
    f = tmp_path / "keep.h5"
    write_ferdian_h5(f, landmark_coords=np.ones((1, 2, 2, 168)))
    before = f.read_bytes()
    with pytest.raises(ValueError, match="extra dataset 'bbox_corners' must have 1 rows"):
        write_ferdian_h5(f, landmark_coords=np.zeros((1, 2, 2, 168)), extra={"bbox_corners": np.zeros((3, 4))})
    with pytest.raises(ValueError, match="image_seqs must be"):
        write_ferdian_h5(f, image_seqs=np.zeros((20, 8, 8)))
    with pytest.raises(ValueError, match="px_spaces must have shape"):
        write_ferdian_h5(f, landmark_coords=np.zeros((1, 2, 2, 168)), px_spaces=[1.0, 2.0])
    with pytest.raises(ValueError, match="need image_seqs"):
        write_ferdian_h5(f, FerdianData())
    assert f.read_bytes() == before
    assert not list(tmp_path.glob(".*part*"))


def test_cropped_variant_rescales_pixel_spacing(tmp_path):
    rng = np.random.default_rng(4)
    f = tmp_path / "crop.h5"
    write_ferdian_h5(
        f,
        image_seqs=np.zeros((1, 20, 64, 64)),
        landmark_coords=_landmarks(1, 20, rng),
        px_spaces=[1.4],
        extra={
            "cropped_image_seqs": np.zeros((1, 20, 128, 128)),
            "cropped_landmark_coords": _landmarks(1, 20, rng),
            "bbox_corners": np.array([[10.2, 20.7, 74.9, 84.1]]),
        },
    )
    d = read_ferdian_h5(f, cropped=True)
    assert d.image_seqs.shape == (1, 20, 128, 128)
    side = np.ceil(84.1) - np.floor(20.7)  # rows of the crop that was resized to 128
    np.testing.assert_allclose(d.px_spaces, [1.4 * side / 128], rtol=1e-6)
