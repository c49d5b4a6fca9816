import numpy as np
import pytest

from anomaly_ae.postprocessing import ScoreStats, fit_threshold, quantile_threshold
from anomaly_ae.scoring.maps import image_score, residual_map, resize_map, smooth


def test_residual_map_averages_channels():
    x = np.zeros((1, 2, 2, 3), np.float32)
    x_hat = np.zeros_like(x)
    x_hat[0, 0, 0] = [0.3, 0.0, 0.6]
    l2 = residual_map(x, x_hat, "l2")
    l1 = residual_map(x, x_hat, "l1")
    assert l2.shape == (1, 2, 2)
    assert l2[0, 0, 0] == pytest.approx((0.09 + 0.36) / 3)
    assert l1[0, 0, 0] == pytest.approx(0.9 / 3)
    assert l2[0, 1, 1] == 0
    with pytest.raises(ValueError):
        residual_map(x, x_hat[..., :1])


def test_smooth_keeps_constants_and_mass():
    const = np.full((2, 9, 9), 0.25, np.float32)
    np.testing.assert_allclose(smooth(const, 2.0), 0.25, rtol=1e-6)
    spike = np.zeros((1, 31, 31), np.float32)
    spike[0, 15, 15] = 1.0
    s = smooth(spike, 1.5)
    assert s.sum() == pytest.approx(1.0, rel=1e-4)
    assert s[0, 15, 15] == s.max() < 0.1
    np.testing.assert_array_equal(smooth(spike, 0.0), spike)


def test_image_score_reducers():
    m = np.zeros((2, 10, 10), np.float32)
    m[0, 0, :5] = [5, 4, 3, 2, 1]
    m[1] = 1.0
    np.testing.assert_allclose(image_score(m, "max"), [5, 1])
    np.testing.assert_allclose(image_score(m, "mean"), [15 / 100, 1])
    np.testing.assert_allclose(image_score(m, "topk_mean", 0.03), [4, 1])  # top 3 of 100
    np.testing.assert_allclose(image_score(m, "topk_mean", 0.001), [5, 1])  # at least one pixel
    with pytest.raises(ValueError):
        image_score(m, "median")


def test_resize_map():
    m = np.arange(4, dtype=np.float32).reshape(2, 2)
    r = resize_map(m, (4, 6))
    assert r.shape == (4, 6)
    assert r.max() <= 3 and r.min() >= 0


def test_quantile_threshold_and_stats():
    s = np.arange(101, dtype=float)  # 0..100
    assert quantile_threshold(s, 0.99) == pytest.approx(99.0)
    assert quantile_threshold(s, 1.0) == 100.0
    assert fit_threshold(s, "quantile", 0.5) == 50.0
    # about 1 - q of the good scores lie above the threshold
    assert np.mean(s > quantile_threshold(s, 0.9)) == pytest.approx(0.1, abs=0.011)
    st = ScoreStats.of(np.array([1.0, 2.0, 3.0, 4.0]))
    assert (st.count, st.mean, st.min, st.max) == (4, 2.5, 1.0, 4.0)
    assert st.std == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert st.quantiles["q0.5"] == 2.5
    assert ScoreStats.from_dict(st.to_dict()) == st
    with pytest.raises(ValueError):
        quantile_threshold(np.array([1.0, np.nan]), 0.9)
    with pytest.raises(ValueError):
        quantile_threshold(np.array([]), 0.9)
    with pytest.raises(ValueError):
        fit_threshold(s, "otsu")


def test_local_ssim_map_matches_skimage_full_map():
    from skimage.metrics import structural_similarity

    from anomaly_ae.scoring.maps import local_ssim

    rng = np.random.default_rng(5)
    a = rng.random((1, 30, 26, 1)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.15, a.shape), 0, 1).astype(np.float32)
    ours = local_ssim(a, b)[0, :, :, 0]
    _, ref = structural_similarity(a[0, :, :, 0], b[0, :, :, 0], data_range=1.0, gaussian_weights=True,
                                   sigma=1.5, use_sample_covariance=False, full=True)
    np.testing.assert_allclose(ours, ref, atol=2e-4)
    assert ours.shape == (30, 26)
    np.testing.assert_allclose(local_ssim(a, a), 1.0, atol=1e-4)


def test_ssim_and_channel_reduction_in_residual_map():
    rng = np.random.default_rng(6)
    x = rng.random((1, 20, 20, 3)).astype(np.float32)
    x_hat = x.copy()
    x_hat[0, 5:10, 5:10, 1] = 1.0 - x_hat[0, 5:10, 5:10, 1]  # damage one channel in one square
    ssim_map = residual_map(x, x_hat, "ssim")
    assert ssim_map.shape == (1, 20, 20)
    assert ssim_map[0, 7, 7] > 0.1 and abs(ssim_map[0, 18, 18]) < 1e-3
    mean_l1 = residual_map(x, x_hat, "l1", "mean")
    max_l1 = residual_map(x, x_hat, "l1", "max")
    np.testing.assert_allclose(max_l1, 3 * mean_l1, rtol=1e-5)  # only one channel differs
    mix = residual_map(x, x_hat, "ssim_l1", ssim_weight=0.25)
    np.testing.assert_allclose(mix, 0.25 * ssim_map + 0.75 * mean_l1, rtol=1e-4, atol=1e-6)


def test_anisotropic_sigma_conversion():
    from anomaly_ae.scoring.maps import model_sigma

    assert model_sigma(4.0, (128, 128), (460, 1130)) == pytest.approx((4 * 128 / 460, 4 * 128 / 1130))
    spike = np.zeros((1, 41, 41), np.float32)
    spike[0, 20, 20] = 1
    s = smooth(spike, (4.0, 1.0))
    assert s[0, 20 + 4, 20] > s[0, 20, 20 + 4]  # wider along y
