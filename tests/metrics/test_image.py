"""cmrkit.metrics.image: closed-form cases, scikit-image/MONAI references, independent NumPy
re-implementations of MS-SSIM and 4-G-r*, layouts, aggregation and input errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.signal import convolve2d
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from cmrkit.metrics import image as im


def _phantom(rng: np.random.Generator, n: int, size: int = 48, noise: float = 0.02) -> np.ndarray:
    """(n, size, size) images in [0, 1]: smooth background, two discs of random radius, noise."""
    yy, xx = np.mgrid[:size, :size] / size
    out = []
    for _ in range(n):
        img = 0.2 + 0.1 * xx
        for _ in range(2):
            c = rng.uniform(0.3, 0.7, 2)
            r = rng.uniform(0.08, 0.2)
            img = np.where((yy - c[0]) ** 2 + (xx - c[1]) ** 2 < r * r, rng.uniform(0.5, 0.9), img)
        out.append(np.clip(img + noise * rng.standard_normal(img.shape), 0, 1))
    return np.stack(out)


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ref = _phantom(rng, 6).reshape(2, 1, 3, 48, 48)
    pred = np.clip(ndimage.gaussian_filter(ref, (0, 0, 0, 1.0, 1.0)) + 0.05 * rng.standard_normal(ref.shape), 0, 1)
    return pred, ref


# --------------------------------------------------------------------------------------------
# closed forms
# --------------------------------------------------------------------------------------------
def test_identical_images(pair):
    _, ref = pair
    assert np.allclose(im.ssim(ref, ref, data_range=1.0), 1.0, atol=1e-6)
    assert np.all(np.isinf(im.psnr(ref, ref, data_range=1.0)))
    assert im.psnr(ref, ref, data_range=1.0, reduction="mean") == math.inf
    assert np.all(im.rmse(ref, ref) == 0) and np.all(im.mae(ref, ref) == 0)
    assert np.allclose(im.ms_ssim(ref, ref, data_range=1.0, weights=im.MS_SSIM_WEIGHTS[:3]), 1.0, atol=1e-5)
    assert np.allclose(im.gr4_ssim(ref, ref, data_range=1.0), 1.0, atol=1e-12)
    assert np.allclose(im.gr4_ssim(ref, ref, data_range=1.0, variant="4-G-SSIM"), 1.0, atol=1e-6)


def test_constant_offset_closed_form():
    ref = np.random.default_rng(1).random((3, 1, 16, 16))
    pred = ref + 0.1
    assert np.allclose(im.rmse(pred, ref), 0.1)
    assert np.allclose(im.mae(pred, ref), 0.1)
    assert np.allclose(im.psnr(pred, ref, data_range=1.0), 20.0)  # 10 log10(1 / 0.01)
    assert np.allclose(im.psnr(pred * 255, ref * 255, data_range=255.0), 20.0)
    assert im.rmse(pred, ref, reduction="mean") == pytest.approx(0.1)


# --------------------------------------------------------------------------------------------
# references
# --------------------------------------------------------------------------------------------
def test_ssim_matches_skimage_per_slice(pair):
    pred, ref = pair
    ours = im.ssim(pred, ref, data_range=1.0)
    expected = [
        np.mean(
            [
                structural_similarity(
                    pred[b, 0, s],
                    ref[b, 0, s],
                    data_range=1.0,
                    gaussian_weights=True,
                    sigma=1.5,
                    use_sample_covariance=False,
                )
                for s in range(3)
            ]
        )
        for b in range(2)
    ]
    assert ours.shape == (2,)
    np.testing.assert_allclose(ours, expected, atol=1e-5)  # MONAI computes in float32
    assert np.all(ours < 0.99)


def test_ssim_3d_matches_skimage():
    rng = np.random.default_rng(2)
    ref = rng.random((1, 1, 12, 20, 20))
    pred = np.clip(ref + 0.1 * rng.standard_normal(ref.shape), 0, 1)
    ours = im.ssim(pred, ref, data_range=1.0, spatial_dims=3)
    exp = structural_similarity(
        pred[0, 0], ref[0, 0], data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert ours[0] == pytest.approx(exp, abs=1e-5)
    # anisotropic window for thin stacks: runs, and differs from the per-slice 2D score
    thin = im.ssim(pred[:, :, :8], ref[:, :, :8], data_range=1.0, spatial_dims=3, win_size=(3, 11, 11))
    assert 0 < thin[0] < 1


def test_psnr_rmse_mae_match_references(pair):
    from monai.metrics import PSNRMetric

    pred, ref = pair
    ps = im.psnr(pred, ref, data_range=1.0)
    np.testing.assert_allclose(ps, [peak_signal_noise_ratio(ref[b], pred[b], data_range=1.0) for b in range(2)])
    np.testing.assert_allclose(
        ps,
        PSNRMetric(max_val=1.0, reduction="none")(torch.from_numpy(pred), torch.from_numpy(ref)).numpy().ravel(),
        rtol=1e-5,
    )
    np.testing.assert_allclose(im.rmse(pred, ref), [math.sqrt(mean_squared_error(ref[b], pred[b])) for b in range(2)])
    np.testing.assert_allclose(im.mae(pred, ref), np.abs(pred - ref).reshape(2, -1).mean(1))


# --------------------------------------------------------------------------------------------
# one image pair, as scikit-image takes it
# --------------------------------------------------------------------------------------------
def test_one_2d_pair_gives_a_float_equal_to_scikit_image(pair):
    pred, ref = pair[0][0, 0, 1], pair[1][0, 0, 1]  # (48, 48) each
    s = im.ssim(pred, ref, data_range=1.0)
    exp = structural_similarity(
        pred, ref, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert isinstance(s, float) and s == pytest.approx(exp, abs=1e-5)
    p = im.psnr(pred, ref, data_range=1.0)
    assert isinstance(p, float) and p == pytest.approx(peak_signal_noise_ratio(ref, pred, data_range=1.0))
    assert im.rmse(pred, ref) == pytest.approx(math.sqrt(mean_squared_error(ref, pred)))
    assert im.mae(pred, ref) == pytest.approx(float(np.abs(pred - ref).mean()))
    # reduction does not matter for one pair; torch tensors and lists are pairs too
    assert im.ssim(pred, ref, data_range=1.0, reduction="mean") == s
    assert im.ssim(torch.from_numpy(pred), torch.from_numpy(ref), data_range=1.0) == pytest.approx(s, abs=1e-6)
    assert im.rmse(pred.tolist(), ref.tolist()) == pytest.approx(im.rmse(pred, ref))
    # the same value as the pair given as a batch of one
    batch = (pred[None, None], ref[None, None])
    assert s == pytest.approx(im.ssim(*batch, data_range=1.0)[0], abs=1e-7)
    assert p == pytest.approx(im.psnr(*batch, data_range=1.0)[0])
    big_p, big_r = np.kron(pred, np.ones((3, 3))), np.kron(ref, np.ones((3, 3)))  # 144 x 144 for 5 scales
    assert im.ms_ssim(big_p, big_r, data_range=1.0) == pytest.approx(
        im.ms_ssim(big_p[None, None], big_r[None, None], data_range=1.0)[0]
    )
    g = im.gr4_ssim(pred, ref, data_range=1.0)
    assert isinstance(g, float) and g == pytest.approx(im.gr4_ssim(*batch, data_range=1.0)[0])
    assert im.gr4_ssim(ref, ref, data_range=1.0) == pytest.approx(1.0)


def test_one_3d_pair_with_spatial_dims_3():
    rng = np.random.default_rng(3)
    ref = rng.random((12, 20, 20))
    pred = np.clip(ref + 0.1 * rng.standard_normal(ref.shape), 0, 1)
    s = im.ssim(pred, ref, data_range=1.0, spatial_dims=3)
    exp = structural_similarity(
        pred, ref, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert isinstance(s, float) and s == pytest.approx(exp, abs=1e-5)
    assert im.psnr(pred, ref, data_range=1.0, spatial_dims=3) == pytest.approx(
        peak_signal_noise_ratio(ref, pred, data_range=1.0)
    )
    # without spatial_dims=3 a 3-D array is a batch of 2-D items, one value each
    assert im.psnr(pred, ref, data_range=1.0).shape == (12,)
    with pytest.raises(ValueError, match="one image pair with exactly 2 axes, or a batch"):
        im.ssim(pred, ref, data_range=1.0)  # (S, H, W) is neither a 2-D pair nor a batch
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        im.rmse(pred, ref, spatial_dims=4)


def _gauss2d(win: int, sigma: float) -> np.ndarray:
    x = np.arange(win) - (win - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    g /= g.sum()
    return np.outer(g, g)


def _ref_ms_ssim(x: np.ndarray, y: np.ndarray, weights, win=7, sigma=1.5, L=1.0) -> float:
    """Wang et al. 2003 written from the paper: valid Gaussian filtering, 2x2 mean down-sampling."""
    G = _gauss2d(win, sigma)
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    f = lambda a: convolve2d(a, G, mode="valid")  # noqa: E731
    terms = []
    for j, _ in enumerate(weights):
        mx, my = f(x), f(y)
        sxx, syy, sxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
        cs = (2 * sxy + c2) / (sxx + syy + c2)
        if j < len(weights) - 1:
            terms.append(max(cs.mean(), 0.0))
            h, w = x.shape[0] // 2, x.shape[1] // 2
            x = x[: 2 * h, : 2 * w].reshape(h, 2, w, 2).mean((1, 3))
            y = y[: 2 * h, : 2 * w].reshape(h, 2, w, 2).mean((1, 3))
        else:
            terms.append(max((((2 * mx * my + c1) / (mx**2 + my**2 + c1)) * cs).mean(), 0.0))
    return float(np.prod(np.power(terms, weights)))


def test_ms_ssim_matches_independent_reference(pair):
    pred, ref = pair
    w = im.MS_SSIM_WEIGHTS[:3]
    ours = im.ms_ssim(pred, ref, data_range=1.0, weights=w)
    exp = [np.mean([_ref_ms_ssim(pred[b, 0, s], ref[b, 0, s], w) for s in range(3)]) for b in range(2)]
    np.testing.assert_allclose(ours, exp, atol=5e-5)
    noisier = np.clip(ref + 0.2 * np.random.default_rng(3).standard_normal(ref.shape), 0, 1)
    assert np.all(im.ms_ssim(noisier, ref, data_range=1.0, weights=w) < ours)


def test_ms_ssim_default_fits_128_and_small_images_get_a_clear_error():
    rng = np.random.default_rng(4)
    ref = rng.random((1, 1, 128, 128)).astype(np.float32)
    assert 0 < im.ms_ssim(ref * 0.9, ref, data_range=1.0)[0] <= 1  # 5 scales, kernel 7 (thesis resolution)
    with pytest.raises(ValueError, match="fewer scales"):
        im.ms_ssim(ref[..., :64, :64], ref[..., :64, :64], data_range=1.0)


def _ref_gr4(
    pred: np.ndarray,
    ref: np.ndarray,
    variant="4-G-r*",
    L=1.0,
    win=11,
    sigma=1.5,
    tol=1e-3,
    th=(0.12, 0.06),
    w=(0.25, 0.25, 0.25, 0.25),
) -> float:
    """4-G-r* / 4-G-SSIM of one slice written from Li & Bovik 2010 / Rouse & Hemami 2008."""
    grad = lambda a: np.hypot(ndimage.sobel(a, 0, mode="nearest"), ndimage.sobel(a, 1, mode="nearest")) / 8  # noqa: E731
    gp, gr = grad(pred), grad(ref)
    G = _gauss2d(win, sigma)
    f = lambda a: convolve2d(a, G, mode="valid")  # noqa: E731
    mp, mr = f(gp), f(gr)
    vp, vr, cov = f(gp * gp) - mp**2, f(gr * gr) - mr**2, f(gp * gr) - mp * mr
    vp, vr = np.maximum(vp, 0), np.maximum(vr, 0)
    if variant == "4-G-r*":
        q = np.empty_like(cov)
        for idx in np.ndindex(q.shape):
            fp, fr = vp[idx] <= (tol * L) ** 2, vr[idx] <= (tol * L) ** 2
            q[idx] = 1.0 if (fp and fr) else 0.0 if (fp or fr) else cov[idx] / math.sqrt(vp[idx] * vr[idx])
        q = np.clip(q, -1, 1)
    else:
        c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
        mx, my = f(pred), f(ref)
        q = (2 * mx * my + c1) / (mx**2 + my**2 + c1) * (2 * cov + c2) / (vp + vr + c2)
    c = win // 2
    po, pd = gr[c:-c, c:-c], gp[c:-c, c:-c]
    t1, t2 = th[0] * gr.max(), th[1] * gr.max()
    regions = [(po > t1) & (pd > t1), ((po > t1) & (pd <= t1)) | ((po <= t1) & (pd > t1)), (po < t2) & (pd <= t1)]
    regions.append(~(regions[0] | regions[1] | regions[2]))
    num = den = 0.0
    for wk, reg in zip(w, regions):
        if reg.any():
            num += wk * q[reg].mean()
            den += wk
    return num / den


@pytest.mark.parametrize("variant", ["4-G-r*", "4-G-SSIM"])
def test_gr4_matches_independent_reference(pair, variant):
    pred, ref = pair
    ours = im.gr4_ssim(pred, ref, data_range=1.0, variant=variant)
    exp = [np.mean([_ref_gr4(pred[b, 0, s], ref[b, 0, s], variant) for s in range(3)]) for b in range(2)]
    np.testing.assert_allclose(ours, exp, atol=1e-8)
    assert np.all((ours > 0) & (ours < 1))


def test_gr4_properties(pair):
    _, ref = pair
    # r* correlates gradient magnitudes: a positive gain and an offset leave it at 1, SSIM does not
    scaled = 0.5 * ref + 0.3
    assert np.allclose(im.gr4_ssim(scaled, ref, data_range=1.0), 1.0, atol=1e-10)
    assert np.all(im.ssim(scaled, ref, data_range=1.0) < 0.95)
    # monotone in degradation
    blur1 = ndimage.gaussian_filter(ref, (0, 0, 0, 0.7, 0.7))
    blur2 = ndimage.gaussian_filter(ref, (0, 0, 0, 2.0, 2.0))
    s1, s2 = im.gr4_ssim(blur1, ref, data_range=1.0), im.gr4_ssim(blur2, ref, data_range=1.0)
    assert np.all(s2 < s1) and np.all(s1 < 1)
    # float32 on the default path agrees with float64
    s32 = im.gr4_ssim(blur1.astype(np.float32), ref.astype(np.float32), data_range=1.0)
    np.testing.assert_allclose(s32, s1, atol=2e-3)


# --------------------------------------------------------------------------------------------
# layouts and per-slice evaluation
# --------------------------------------------------------------------------------------------
def test_extra_axes_average_and_per_slice_consistency(pair):
    pred, ref = pair
    per = im.per_slice("ssim", pred, ref, data_range=1.0)
    assert per.shape == (2, 3)
    np.testing.assert_allclose(per.mean(1), im.ssim(pred, ref, data_range=1.0), atol=1e-7)
    # 2D+t: (B, C, T, S, H, W) averaged over frames and slices; per-frame scores by slice_axis
    pt = np.stack([pred, ref], axis=2)  # frame 1 is identical to its reference
    rt = np.stack([ref, ref], axis=2)
    per_frame = im.per_slice("ssim", pt, rt, slice_axis=2, data_range=1.0)
    np.testing.assert_allclose(per_frame[:, 1], 1.0, atol=1e-6)
    np.testing.assert_allclose(per_frame[:, 0], im.ssim(pred, ref, data_range=1.0), atol=1e-7)
    psnr_slices = im.per_slice("psnr", pred, ref, data_range=1.0)
    np.testing.assert_allclose(psnr_slices[1, 2], peak_signal_noise_ratio(ref[1, 0, 2], pred[1, 0, 2], data_range=1.0))


def test_torch_input_equals_numpy(pair):
    pred, ref = pair
    a = im.ssim(torch.from_numpy(pred).float(), torch.from_numpy(ref).float(), data_range=1.0)
    np.testing.assert_allclose(a, im.ssim(pred, ref, data_range=1.0), atol=1e-5)
    g = im.gr4_ssim(torch.from_numpy(pred), torch.from_numpy(ref), data_range=1.0, batch_size=2)
    np.testing.assert_allclose(g, im.gr4_ssim(pred, ref, data_range=1.0), atol=1e-12)


def test_slice_regions_and_mean_sd_by_region():
    reg = im.slice_regions(10)
    assert list(reg) == ["basal"] * 4 + ["mid"] * 3 + ["apical"] * 3
    assert list(im.slice_regions(3, base_first=False)) == ["apical", "mid", "basal"]
    vals = np.array([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])  # (B=2, S=3)
    df = im.mean_sd_by_region(vals, ["basal", "mid", "apical"])
    assert list(df.index) == ["basal", "mid", "apical"]
    assert df.loc["basal", "mean"] == 2.0 and df.loc["basal", "sd"] == pytest.approx(math.sqrt(2.0))
    assert df.loc["apical", "n"] == 2 and df.loc["apical", "mean"] == 4.0
    two = im.mean_sd_by_region({"ssim": vals, "psnr": 10 * vals}, np.array(["apical", "mid", "basal"]))
    assert two.loc["apical", "psnr_mean"] == 20.0 and two.loc["basal", "ssim_sd"] == pytest.approx(math.sqrt(2.0))
    with pytest.raises(ValueError, match="NaN"):
        im.mean_sd_by_region(np.array([1.0, np.nan, 2.0]), ["basal", "mid", "apical"])
    om = im.mean_sd_by_region(np.array([1.0, np.nan, 2.0, 4.0]), ["mid", "mid", "mid", "mid"], nan_policy="omit")
    assert om.loc["mid", "n"] == 3 and om.loc["mid", "mean"] == pytest.approx(7 / 3)
    with pytest.raises(ValueError, match="match neither"):
        im.mean_sd_by_region(vals, ["basal", "mid"])


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors(pair):
    pred, ref = pair
    bad = pred.copy()
    bad[0, 0, 0, 3, 3] = np.nan
    for fn in (im.ssim, im.psnr, im.ms_ssim, im.gr4_ssim):
        with pytest.raises(ValueError, match="pred contains 1 NaN"):
            fn(bad, ref, data_range=1.0)
    with pytest.raises(ValueError, match="NaN"):
        im.rmse(ref, bad)
    with pytest.raises(ValueError, match="same shape"):
        im.ssim(pred[:, :, :2], ref, data_range=1.0)
    with pytest.raises(ValueError, match="data_range"):
        im.psnr(pred, ref, data_range=0)
    with pytest.raises(ValueError, match="at least 4 dimensions"):
        im.ssim(pred[0, 0, 0, 0], ref[0, 0, 0, 0], data_range=1.0)  # a 1-D profile is no image
    with pytest.raises(ValueError, match="window"):
        im.ssim(pred[..., :8, :8], ref[..., :8, :8], data_range=1.0)
    with pytest.raises(ValueError, match="variant"):
        im.gr4_ssim(pred, ref, data_range=1.0, variant="4-SSIM")
    with pytest.raises(ValueError, match="unknown metric"):
        im.per_slice("lpips", pred, ref)
    with pytest.raises(ValueError, match="reduction"):
        im.mae(pred, ref, reduction="sum")
