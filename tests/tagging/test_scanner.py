"""Scanner-fixed SPAMM grid: phase from the header, residual demodulation, grid estimation (closed forms)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cmrkit.phantom.geometry import rotation_about
from cmrkit.tagging.scanner import (
    ScannerTagGrid,
    estimate_scanner_tag_grid,
    tag_directions,
    tag_phase_at,
    tag_phase_map,
    tag_phase_residual,
)


def _oblique_affine(origin, pixel=(1.4, 1.5), axis=(0.3, -0.5, 0.8), angle=0.7):
    """An in-plane-anisotropic, obliquely oriented slice affine."""
    R = rotation_about(np.asarray(axis), angle)
    A = np.eye(4)
    A[:3, 0], A[:3, 1], A[:3, 2] = R[:, 0] * pixel[0], R[:, 1] * pixel[1], R[:, 2] * 8.0
    A[:3, 3] = origin
    return A


def _spamm(phase):
    """1-2-1 SPAMM grid with 90 degrees in total: dark lines where the phase is 0 (mod 2 pi)."""
    f = [np.cos(0.5 * np.pi * np.abs(np.cos(0.5 * p)) ** 2) for p in phase]
    return 100.0 * f[0] * f[1] + 20.0


def test_directions_are_orthonormal_in_plane_at_the_protocol_angle():
    A = _oblique_affine((10.0, -20.0, 30.0))
    e = tag_directions(A, 30.0)
    assert e @ e.T == pytest.approx(np.eye(2), abs=1e-12)
    n = np.cross(A[:3, 0], A[:3, 1])
    assert e @ n == pytest.approx([0.0, 0.0], abs=1e-9)
    u = A[:3, 0] / np.linalg.norm(A[:3, 0])
    assert float(e[0] @ u) == pytest.approx(math.cos(math.radians(30.0)))
    with pytest.raises(ValueError, match="parallel"):
        B = A.copy()
        B[:3, 1] = B[:3, 0]
        tag_directions(B, 0.0)


def test_phase_map_is_k_e_dot_p_plus_offset_and_ignores_the_through_plane_component():
    A = _oblique_affine((10.0, -20.0, 30.0))
    grid = ScannerTagGrid(6.0, 20.0, (0.3, -1.0))
    ph = tag_phase_map(A, (5, 7), A, grid)
    e = tag_directions(A, 20.0)
    p = A @ np.array([3.0, 4.0, 0.0, 1.0])
    k = 2 * np.pi / 6.0
    assert ph[:, 3, 4] == pytest.approx(k * (e @ p[:3]) + np.array([0.3, -1.0]))
    # a point off the plane (along the normal) has the phase of its projection
    n = np.cross(A[:3, 0], A[:3, 1])
    assert tag_phase_at(p[:3] + 5.0 * n / np.linalg.norm(n), A, grid) == pytest.approx(ph[:, 3, 4])
    # the phase advances by k * (e . pixel step) per voxel
    assert ph[0, 4, 4] - ph[0, 3, 4] == pytest.approx(k * e[0] @ A[:3, 0])


def test_residual_of_a_rendered_grid_is_the_injected_shift():
    A = _oblique_affine((0.0, 0.0, 0.0))
    grid = ScannerTagGrid(6.0, 45.0)
    ph = tag_phase_map(A, (96, 96), A, grid)
    shift = np.array([0.8, -2.0])
    img = _spamm(ph + shift[:, None, None])
    assert tag_phase_residual(img, ph) == pytest.approx(shift, abs=0.02)
    with pytest.raises(ValueError, match="untagged"):
        tag_phase_residual(np.ones((16, 16)), ph[:, :16, :16])
    with pytest.raises(ValueError, match=r"\(2, X, Y\)"):
        tag_phase_residual(img, ph[0])


def test_estimation_recovers_spacing_angle_and_offsets_across_slice_positions():
    rng = np.random.default_rng(0)
    truth = ScannerTagGrid(6.0, 35.0, (1.1, -0.4))
    frames, affines = [], []
    for _ in range(6):
        A = _oblique_affine(rng.normal(0.0, 40.0, 3), angle=float(rng.uniform(0, 1)))
        ph = tag_phase_map(A, (100, 100), A, truth)
        frames.append(_spamm(ph) + rng.normal(0.0, 3.0, (100, 100)))
        affines.append(A)
    fit = estimate_scanner_tag_grid(frames, affines)
    assert fit.grid.spacing_mm == pytest.approx(6.0, abs=0.05)
    assert fit.grid.angle_deg == pytest.approx(35.0, abs=0.5)
    assert fit.grid.offsets_rad == pytest.approx(truth.offsets_rad, abs=0.05)
    assert fit.used.all() and np.all(fit.concentration > 0.99)
    assert np.max(fit.residual_mm) < 0.05
    # known protocol values are used as given
    fixed = estimate_scanner_tag_grid(frames, affines, spacing_mm=6.0, angle_deg=35.0)
    assert (fixed.grid.spacing_mm, fixed.grid.angle_deg) == (6.0, 35.0)


def test_estimation_errors_name_the_problem():
    A = _oblique_affine((0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="one affine per frame"):
        estimate_scanner_tag_grid([np.zeros((32, 32))], [])
    with pytest.raises(ValueError, match="no frame shows a detectable tag grid"):
        estimate_scanner_tag_grid([np.random.default_rng(0).normal(size=(64, 64))], [A])
    with pytest.raises(ValueError, match=r"frames\[0\]"):
        estimate_scanner_tag_grid([np.zeros((4, 4, 2))], [A])
    with pytest.raises(ValueError, match="spacing_mm"):
        ScannerTagGrid(0.0, 10.0)
