"""Shared tiny fixtures for the phantom tests (small grids, few frames: each subject < 1 s)."""

from __future__ import annotations

import pytest

from cmrkit.phantom import Geometry, generate_subject, sample_subject_params

#: tiny but complete geometry: 48 x 48 cine at 4 mm, 10 slices, 6 cine / 6 tagging frames
TINY = Geometry(
    matrix=48, pixel_mm=4.0, slices=10, cine_frames=6, tag_frames=6, tag_pixel_mm=2.0, slice_samples=1, supersample=1
)


@pytest.fixture(scope="session")
def tiny_geometry() -> Geometry:
    return TINY


@pytest.fixture(scope="session")
def normal_params():
    p = sample_subject_params(1, seed=0, pathology_fraction=0.0)
    assert p.pathology is None
    return p


@pytest.fixture(scope="session")
def pathology_params():
    p = sample_subject_params(0, seed=0, pathology_fraction=1.0)
    assert p.pathology is not None
    return p


@pytest.fixture(scope="session")
def normal_subject(normal_params, tiny_geometry):
    return generate_subject(normal_params, geometry=tiny_geometry)


@pytest.fixture(scope="session")
def pathology_subject(pathology_params, tiny_geometry):
    return generate_subject(pathology_params, geometry=tiny_geometry)
