import numpy as np
import pytest

from anomaly_ae.postprocessing import (
    expected_fpr,
    f1_threshold,
    fit_threshold,
    mad_threshold,
    max_threshold,
    normalize,
)


def test_mad_threshold_hand_value():
    s = np.array([1.0, 2.0, 3.0, 4.0, 100.0])  # median 3, MAD median(|2,1,0,1,97|) = 1
    assert mad_threshold(s, 3.0) == pytest.approx(3 + 3 * 1.4826)
    assert fit_threshold(s, "mad", mad_k=2.0) == pytest.approx(3 + 2 * 1.4826)
    assert max_threshold(s) == fit_threshold(s, "max") == 100.0


def test_f1_threshold_hand_value():
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    y = np.array([0, 0, 1, 0, 1], bool)
    t, f1 = f1_threshold(s, y)
    assert f1 == pytest.approx(0.8)
    assert t == pytest.approx(0.25)  # half-way below the lowest flagged score
    assert fit_threshold(s, "f1", labels=y) == t
    with pytest.raises(ValueError, match="needs labelled"):
        fit_threshold(s, "f1")
    # quantile/mad/max ignore the anomalous examples when labels are given
    assert fit_threshold(s, "max", labels=y) == 0.4


def test_expected_fpr_conformal():
    s = np.arange(10.0)
    assert expected_fpr(s, 8.5) == pytest.approx(2 / 11)
    assert expected_fpr(s, 9.0) == pytest.approx(1 / 11)  # the max still leaves 1/(n+1)
    assert expected_fpr(s, -1.0) == pytest.approx(11 / 11)


def test_normalize_puts_threshold_at_half():
    s = np.array([0.0, 1.0, 2.0, 10.0])
    n = normalize(s, threshold=1.0, lo=0.0, hi=2.0)
    np.testing.assert_allclose(n, [0.0, 0.5, 1.0, 1.0])
    assert np.all(np.diff(normalize(np.linspace(0, 2, 9), 1.0, 0.0, 2.0)) >= 0)
