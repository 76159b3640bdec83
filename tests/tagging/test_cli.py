"""``cmrkit track``: bad options are refused up front, in one line naming the argument or file."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

import cmrkit.io.ferdian
from cmrkit.io.ferdian import write_ferdian_h5
from cmrkit.tagging import synthetic_tagged_ring
from cmrkit.tagging.cli import cli_main


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    s = synthetic_tagged_ring(size=64, n_frames=6, es_frame=3, r_endo=10.0, r_epi=16.0, rng=0)
    f = tmp_path_factory.mktemp("track") / "tag.h5"
    write_ferdian_h5(f, image_seqs=s.images[None], landmark_coords=s.landmarks[None], px_spaces=[1.2])
    return f, s


@pytest.fixture()
def no_work(monkeypatch):
    """Fail the test if the file is read or tracked: the refusal must come before any work."""

    def boom(*_a, **_k):
        raise AssertionError("the command did work before refusing its options")

    monkeypatch.setattr(cmrkit.io.ferdian, "read_ferdian_h5", boom)
    monkeypatch.setattr("cmrkit.tagging.cli.track_all", boom)


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, f"expected one line, got:\n{err}"
    return err


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--bandwidth", "0"], "--bandwidth 0: .* must lie in \\(0, 0.5\\)"),
        (["--bandwidth", "-0.1"], "--bandwidth -0.1"),
        (["--bandwidth", "0.7"], "--bandwidth 0.7"),
        (["--bandwidth", "nan"], "--bandwidth nan"),
        (["--jobs", "0"], "--jobs 0: give a number of worker processes >= 1, or -1"),
        (["--jobs", "-3"], "--jobs -3"),
        (["--tag-spacing-px", "0"], "--tag-spacing-px 0: a tag period must be more than 2 pixels"),
        (["--init-from-file", "--mask", "m.npy"], "either --init-from-file or --mask"),
    ],
)
def test_bad_numbers_are_refused_before_any_work(tagged, no_work, capsys, args, expected):
    import re

    f, _ = tagged
    assert cli_main([str(f), *args]) == 2
    assert re.search(expected, _err(capsys))


def test_out_existing_folder_or_the_input_is_refused_before_any_work(tagged, no_work, tmp_path, capsys):
    f, _ = tagged
    assert cli_main([str(f), "--init-from-file", "--out", str(tmp_path)]) == 2
    err = _err(capsys)
    assert f"--out {tmp_path}: is a folder" in err and ".h5" in err
    assert cli_main([str(f), "--init-from-file", "--out", str(f)]) == 2
    assert "is the input file" in _err(capsys)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli_main([str(f), "--init-from-file", "--out", str(blocker / "sub" / "o.h5")]) == 2
    assert "cannot write a file there" in _err(capsys)


def test_mask_that_is_not_numpy_names_the_file_and_format(tagged, tmp_path, capsys, no_work):
    f, _ = tagged
    txt = tmp_path / "notnifti.txt"
    txt.write_text("hello\n")
    assert cli_main([str(f), "--mask", str(txt)]) == 2
    err = _err(capsys)
    assert str(txt) in err and ".npy" in err and ".npz" in err and "pickle" not in err
    assert cli_main([str(f), "--mask", str(tmp_path / "missing.npy")]) == 2
    assert "missing.npy: file not found" in _err(capsys)


def test_mask_with_npy_suffix_but_other_content(tagged, tmp_path, capsys):
    f, s = tagged
    fake = tmp_path / "fake.npy"
    fake.write_text("not numpy")
    assert cli_main([str(f), "--mask", str(fake)]) == 2
    err = _err(capsys)
    assert str(fake) in err and "not a readable NumPy .npy/.npz mask" in err
    empty = tmp_path / "empty.npy"
    np.save(empty, np.zeros((64, 64), np.uint8))
    assert cli_main([str(f), "--mask", str(empty)]) == 2
    assert f"--mask {empty} slice 0" in _err(capsys)
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((32, 32), np.uint8))
    assert cli_main([str(f), "--mask", str(wrong)]) == 2
    assert "matching the images" in _err(capsys)
    good = tmp_path / "good.npz"
    np.savez(good, mask=s.myo_mask.astype(np.uint8))
    assert cli_main([str(f), "--mask", str(good), "--json", "--tracker", "harp"]) == 0
    assert json.loads(capsys.readouterr().out)["init"] == "mask"


def test_slice_and_tag_spacing_checked_before_tracking(tagged, monkeypatch, capsys):
    f, _ = tagged

    def boom(*_a, **_k):
        raise AssertionError("tracked before checking --slice")

    monkeypatch.setattr("cmrkit.tagging.cli.track_all", boom)
    assert cli_main([str(f), "--init-from-file", "--slice", "3"]) == 2
    assert "--slice 3 out of range" in _err(capsys)
    assert cli_main([str(f), "--init-from-file", "--tag-spacing-px", "40"]) == 2
    assert "at least two tags must fit" in _err(capsys)


def test_corrupt_chunk_names_the_file_and_dataset(tagged, tmp_path, capsys):
    f, _ = tagged
    bad = tmp_path / "corrupt.h5"
    bad.write_bytes(f.read_bytes())
    with h5py.File(bad, "r") as h:
        ds = h["image_seqs"]
        assert ds.compression == "gzip"
        info = ds.id.get_chunk_info(0)
    with open(bad, "r+b") as fh:  # scribble over the middle of the first compressed chunk
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(b"\0" * 64)
    assert cli_main([str(bad), "--init-from-file"]) == 2
    err = _err(capsys)
    assert str(bad) in err and "'image_seqs'" in err and "corrupt" in err
    from cmrkit.strain import cli_main as strain_cli

    assert strain_cli([str(bad)]) == 2
    err = _err(capsys)
    assert str(bad) in err and "'image_seqs'" in err and "corrupt" in err
