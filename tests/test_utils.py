"""Atomic writes keep the umask: every file and folder the kit writes gets the mode ``open``/``mkdir``
would give it (0644/0755 under umask 022, 0600/0700 under 077), never ``mkstemp``'s private 0600."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from cmrkit.utils import atomic_path, atomic_write, current_umask, make_shared, shared_mode


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _check_tree(root: Path, mask: int) -> int:
    """Every file below ``root`` has 0o666 & ~mask, every folder 0o777 & ~mask; returns the file count."""
    files = 0
    for p in [root, *root.rglob("*")]:
        want = (0o777 if p.is_dir() else 0o666) & ~mask
        assert _mode(p) == want, f"{p.relative_to(root.parent)}: mode {oct(_mode(p))}, expected {oct(want)}"
        files += p.is_file()
    return files


def test_current_umask_reads_without_changing(umask):
    assert current_umask() == umask
    assert current_umask() == umask
    assert shared_mode() == 0o666 & ~umask
    assert shared_mode(directory=True) == 0o777 & ~umask


def test_atomic_write_and_atomic_path_respect_the_umask(tmp_path, umask):
    with atomic_write(tmp_path / "a.txt", "w") as fh:
        fh.write("x")
    with atomic_path(tmp_path / "b.npy") as tmp:
        np.save(tmp, np.arange(3))
    with atomic_path(tmp_path / "sub" / "c.bin") as tmp:  # a library that removes and recreates the file
        os.unlink(tmp)
        tmp.write_bytes(b"1")
    assert _mode(tmp_path / "a.txt") == 0o666 & ~umask
    assert _mode(tmp_path / "b.npy") == 0o666 & ~umask
    assert _mode(tmp_path / "sub" / "c.bin") == 0o666 & ~umask
    assert np.array_equal(np.load(tmp_path / "b.npy"), np.arange(3))
    assert not list(tmp_path.rglob("*.part*")), "temporary files left behind"


def test_make_shared_on_tempfile_folders(tmp_path, umask):
    import tempfile

    d = Path(tempfile.mkdtemp(dir=tmp_path))
    assert _mode(d) == 0o700
    make_shared(d)
    assert _mode(d) == 0o777 & ~umask


def test_report_files_respect_the_umask(tmp_path, umask):
    import matplotlib.pyplot as plt

    from cmrkit.report import Report, TableRow, write_index

    rep = Report(profile="smoke", seed=0, dataset="unit", root=tmp_path / "rep", notebook="01_smcvae_strain")
    rep.save_table("table_4_3", [TableRow("D=4", "SSIM", 0.5)])
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    rep.save_figure(fig, "fig_4_4")
    plt.close(fig)
    write_index(rep.root, "smoke")
    assert _check_tree(rep.root, umask) >= 7


def test_phantom_cohort_respects_the_umask(tmp_path, umask):
    from cmrkit.config import load_raw
    from cmrkit.phantom import Geometry, generate_cohort

    geo = Geometry.from_mapping(load_raw("smoke")["phantom"])
    out = generate_cohort(tmp_path / "cohort", 1, seed=0, geometry=geo, workers=1, progress=False)
    assert _check_tree(Path(out), umask) >= 10


def test_checkpoints_and_track_output_respect_the_umask(tmp_path, umask):
    import torch

    from cmrkit.config import load
    from cmrkit.io.ferdian import write_ferdian_h5
    from cmrkit.runs import mark_complete, run_dir
    from cmrkit.train import save_model

    folder = run_dir(load("smoke"), "unit", "model", {"width": 2}, root=tmp_path / "runs")
    save_model(folder / "model.pt", torch.nn.Linear(2, 2), {"in_features": 2, "out_features": 2})
    mark_complete(folder)
    write_ferdian_h5(folder / "track.h5", landmark_coords=np.ones((1, 2, 2, 168)))
    assert _check_tree(tmp_path / "runs", umask) >= 3
