"""cmrkit.metrics.segmentation: analytic shapes (shifted cubes, concentric spheres) with anisotropic
spacing, an independent KD-tree surface-distance reference, MONAI agreement, empty masks, errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

from cmrkit.metrics import segmentation as seg

SPACING = (3.0, 1.25, 0.75)  # anisotropic (D, H, W) voxel size in mm


def _cube(shape=(16, 24, 24), lo=(4, 6, 6), size=(8, 10, 10), shift=(0, 0, 0)) -> np.ndarray:
    m = np.zeros(shape, dtype=np.int64)
    sl = tuple(slice(lo[i] + shift[i], lo[i] + shift[i] + size[i]) for i in range(3))
    m[sl] = 1
    return m


def _surface(mask: np.ndarray) -> np.ndarray:
    st = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=st, border_value=0)


def _ref_distances(a: np.ndarray, b: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    pa = np.argwhere(_surface(a.astype(bool))) * np.asarray(spacing)
    pb = np.argwhere(_surface(b.astype(bool))) * np.asarray(spacing)
    return cKDTree(pb).query(pa)[0], cKDTree(pa).query(pb)[0]


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_shifted_cubes_closed_form(axis):
    shift = [0, 0, 0]
    shift[axis] = 2
    a, b = _cube(), _cube(shift=tuple(shift))
    size = (8, 10, 10)[axis]
    assert seg.dice(a, b) == pytest.approx((size - 2) / size)  # overlap shrinks by the shift along one axis
    assert seg.hausdorff(a, b, spacing=SPACING) == pytest.approx(2 * SPACING[axis])
    d1, d2 = _ref_distances(a, b, SPACING)
    assert seg.assd(a, b, spacing=SPACING) == pytest.approx((d1.sum() + d2.sum()) / (d1.size + d2.size))
    hd95 = max(np.quantile(d1, 0.95), np.quantile(d2, 0.95))
    assert seg.hausdorff(a, b, spacing=SPACING, percentile=95) == pytest.approx(hd95)
    # symmetric metrics
    assert seg.assd(b, a, spacing=SPACING) == pytest.approx(seg.assd(a, b, spacing=SPACING))


def test_concentric_spheres_with_anisotropic_spacing():
    sp = (2.0, 1.0, 1.0)
    z, y, x = np.meshgrid(*(np.arange(n) * s for n, s in zip((30, 48, 48), sp)), indexing="ij")
    r = np.sqrt((z - 30.0) ** 2 + (y - 24.0) ** 2 + (x - 24.0) ** 2)
    inner, outer = (r <= 10.0).astype(int), (r <= 14.0).astype(int)
    dsc = seg.dice(inner, outer)
    assert dsc == pytest.approx(2 * 10**3 / (10**3 + 14**3), abs=0.03)
    hd = seg.hausdorff(inner, outer, spacing=sp)
    asd = seg.assd(inner, outer, spacing=sp)
    assert 3.0 <= asd <= hd <= 5.5  # radii differ by 4 mm, discretised at 1-2 mm
    assert asd == pytest.approx(4.0, abs=0.6)


def test_multilabel_batch_and_monai_agreement():
    rng = np.random.default_rng(0)
    ref = np.zeros((2, 12, 20, 20), dtype=np.int64)
    ref[:, 3:9, 4:14, 4:12] = 1
    ref[:, 3:9, 5:13, 12:16] = 2
    ref[:, 2:10, 6:12, 16:19] = 3
    pred = np.where(rng.random(ref.shape) < 0.03, rng.integers(0, 4, ref.shape), ref)
    hd = seg.hausdorff(pred, ref, spacing=SPACING, labels=(1, 2, 3))
    hd95 = seg.hausdorff(pred, ref, spacing=SPACING, labels=(1, 2, 3), percentile=95)
    asd = seg.assd(pred, ref, spacing=SPACING, labels=(1, 2, 3))
    dsc = seg.dice(pred, ref, labels=(1, 2, 3), spatial_dims=3)
    assert hd.shape == hd95.shape == asd.shape == dsc.shape == (2, 3)

    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance
    from monai.networks.utils import one_hot

    oh = lambda m: one_hot(torch.from_numpy(m)[:, None], num_classes=4)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI's own deprecation notices
        m_hd = compute_hausdorff_distance(oh(pred), oh(ref), spacing=list(SPACING)).numpy()
        m_hd95 = compute_hausdorff_distance(oh(pred), oh(ref), spacing=list(SPACING), percentile=95).numpy()
        m_asd = compute_average_surface_distance(oh(pred), oh(ref), symmetric=True, spacing=list(SPACING)).numpy()
    np.testing.assert_allclose(hd, m_hd, rtol=1e-5)
    np.testing.assert_allclose(hd95, m_hd95, rtol=1e-5)
    np.testing.assert_allclose(asd, m_asd, rtol=1e-5)
    for b in range(2):
        for j, lab in enumerate((1, 2, 3)):
            p, r = pred[b] == lab, ref[b] == lab
            assert dsc[b, j] == pytest.approx(2 * (p & r).sum() / (p.sum() + r.sum()))
    df = seg.segmentation_scores(pred, ref, spacing=SPACING)
    assert list(df.structure[:3]) == ["LV", "Myo", "RV"]
    np.testing.assert_allclose(df.hd95_mm.to_numpy().reshape(2, 3), hd95)
    np.testing.assert_allclose(df.assd_mm.to_numpy().reshape(2, 3), asd)
    np.testing.assert_allclose(df.dice.to_numpy().reshape(2, 3), dsc)
    np.testing.assert_allclose(df.hd_mm.to_numpy().reshape(2, 3), hd)


def test_per_slice_2d_layout():
    a, b = _cube(), _cube(shift=(0, 1, 0))
    per = seg.hausdorff(a, b, spacing=SPACING[1:], labels=1)  # (D, H, W) read as D slices of 2D masks
    assert per.shape == (16,)
    assert np.isnan(per[0]) and per[6] == pytest.approx(SPACING[1])
    dsc = seg.dice(a, b, spatial_dims=2)
    assert dsc.shape == (16,) and dsc[6] == pytest.approx(0.9) and np.isnan(dsc[0])


def test_empty_masks_documented_values():
    a, z = _cube(), np.zeros((16, 24, 24), dtype=int)
    assert math.isnan(seg.dice(z, z)) and seg.dice(a, z) == 0.0
    assert math.isnan(seg.hausdorff(z, z, spacing=SPACING))
    assert seg.hausdorff(a, z, spacing=SPACING) == math.inf
    assert seg.hausdorff(z, a, spacing=SPACING, percentile=95) == math.inf
    assert seg.assd(a, z, spacing=SPACING, one_empty=math.nan) != seg.assd(a, z, spacing=SPACING, one_empty=math.nan)
    assert math.isnan(seg.assd(z, z, spacing=SPACING))


def test_binary_single_volume_contract_used_by_segmenter():
    a, b = _cube().astype(bool), _cube(shift=(1, 0, 0)).astype(bool)
    assert isinstance(seg.dice(a, b), float)
    assert isinstance(seg.hausdorff(a, b, spacing=SPACING, percentile=95), float)
    assert float(seg.assd(a, b, spacing=SPACING)) > 0


def test_bad_inputs_raise_clear_errors():
    a, b = _cube(), _cube(shift=(1, 0, 0))
    with pytest.raises(ValueError, match=r"label values \[2\]"):
        seg.dice(a, 2 * b)
    with pytest.raises(ValueError, match=r"neither background \(0\) nor in labels"):
        seg.dice(a, 5 * b, labels=(1, 2, 3))
    assert seg.dice(a, 5 * b, labels=(1,), strict=False) == 0.0
    with pytest.raises(ValueError, match="non-integer"):
        seg.dice(a * 0.5, b)
    nan = a.astype(float)
    nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        seg.dice(nan, b)
    with pytest.raises(ValueError, match="same shape"):
        seg.dice(a[:-1], b)
    with pytest.raises(ValueError, match="needs spacing"):
        seg.hausdorff(a, b, spacing=None)
    with pytest.raises(ValueError, match="one value per spatial axis"):
        seg.assd(a, b, spacing=1.0)
    with pytest.raises(ValueError, match="positive"):
        seg.assd(a, b, spacing=(1.0, -1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        seg.dice(a, b, labels=(0, 1))
    with pytest.raises(ValueError, match="percentile"):
        seg.hausdorff(a, b, spacing=SPACING, percentile=101)
