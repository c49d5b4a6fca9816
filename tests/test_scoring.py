import numpy as np
import pytest

from anomaly_ae.scoring import image_score, residual_map, resize_map, smooth
from anomaly_ae.thresholds import ScoreStats, fit_threshold, quantile_threshold


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
