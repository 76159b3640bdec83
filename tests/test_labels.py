"""cmrkit.labels: the one label convention, its ACDC remap, and the modules that rely on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmrkit import labels as L


def test_convention_values_names_and_colours():
    assert (L.BACKGROUND, L.LV_BLOOD, L.LV_MYO, L.RV_BLOOD) == (0, 1, 2, 3)
    assert L.LABELS == {1: "LV", 2: "Myo", 3: "RV"} and L.N_CLASSES == 4
    assert set(L.LABEL_NAMES) == set(L.LABEL_COLOURS) == set(L.LABELS)
    assert len(set(L.LABEL_COLOURS.values())) == 3  # one distinct colour per structure


def test_acdc_remap_swaps_the_ventricles_and_is_an_involution():
    lab = np.array([0, 1, 2, 3], np.uint8)
    np.testing.assert_array_equal(L.remap_acdc_labels(lab), [0, 3, 2, 1])
    np.testing.assert_array_equal(L.remap_acdc_labels(L.remap_acdc_labels(lab)), lab)
    assert L.remap_acdc_labels(lab).dtype == np.uint8
    with pytest.raises(ValueError, match="0..3"):
        L.remap_acdc_labels(np.array([0, 4]))


def test_users_of_the_convention_agree():
    from cmrkit.clinical import to_kit_labels
    from cmrkit.io.nifti import LABEL_VALUES
    from cmrkit.metrics.segmentation import segmentation_scores
    from cmrkit.models.segmenter import SegmenterConfig, build_network

    assert LABEL_VALUES == (0, 1, 2, 3)
    np.testing.assert_array_equal(to_kit_labels(np.array([1, 3]), "acdc"), [3, 1])
    lab = np.zeros((1, 8, 8), np.uint8)
    lab[0, 2:4, 2:4] = L.LV_BLOOD
    lab[0, 5:7, 5:7] = L.RV_BLOOD
    df = segmentation_scores(lab, lab, spacing=(1.0, 1.0))
    assert list(df["structure"]) == ["LV", "Myo", "RV"]
    net = build_network(SegmenterConfig(image_size=16, channels=(4, 8)))
    assert net(torch.zeros(1, 1, 16, 16)).shape[1] == L.N_CLASSES
