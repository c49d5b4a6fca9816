import numpy as np
import pytest
from reference_metrics import exact_aupro
from sklearn.metrics import f1_score, roc_auc_score

from anomaly_ae.evaluation.metrics import PixelAccumulator, image_metrics, integrate_to


def _hand_case():
    """2 images of 2x4 px: region R1 (2 px) in image 1, R2 (1 px) in image 2, 13 good pixels."""
    m1 = np.array([[0.8, 0.4, 0.7, 0.1], [0.1, 0.1, 0.1, 0.1]])
    k1 = np.array([[1, 1, 0, 0], [0, 0, 0, 0]], bool)
    m2 = np.array([[0.5, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.6]])
    k2 = np.array([[0, 0, 0, 0], [0, 0, 0, 1]], bool)
    return [m1, m2], [k1, k2]


def test_aupro_hand_worked():
    # Thresholds from the top: 0.8 -> (FPR 0, PRO 1/4); 0.7 -> (1/13, 1/4); 0.6 -> (1/13, 3/4);
    # 0.5 -> (2/13, 3/4); 0.4 -> (2/13, 1); then PRO stays 1. Area to 0.3:
    # 1/4 * 1/13 + 3/4 * 1/13 + 1 * (0.3 - 2/13) = 0.3 - 1/13; normalized: 1 - 1/3.9.
    maps, masks = _hand_case()
    acc = PixelAccumulator()
    for a, k in zip(maps, masks, strict=True):
        acc.add(a, k)
    assert len(acc.regions) == 2 and acc.region_sizes == [2, 1]
    expected = (0.3 - 1 / 13) / 0.3
    assert acc.aupro(0.3) == pytest.approx(expected, abs=1e-9)
    assert exact_aupro(maps, masks) == pytest.approx(expected, abs=1e-12)
    # a perfect map (defects above every good pixel) has AUPRO 1; an inverted one 0
    perfect = PixelAccumulator()
    inverted = PixelAccumulator()
    for k in masks:
        perfect.add(k.astype(float) + 0.1, k)
        inverted.add(1.1 - k.astype(float), k)
    assert perfect.aupro() == pytest.approx(1.0)
    assert inverted.aupro() == pytest.approx(0.0)


def test_regions_are_connected_components():
    acc = PixelAccumulator()
    mask = np.zeros((6, 6), bool)
    mask[0:2, 0:2] = True  # region of 4
    mask[4, 4] = mask[5, 5] = True  # diagonal neighbours: one region with 8-connectivity
    acc.add(np.random.default_rng(0).random((6, 6)), mask)
    assert sorted(acc.region_sizes) == [2, 4]


def test_streaming_metrics_match_exact_ones_on_random_maps():
    rng = np.random.default_rng(3)
    maps, masks = [], []
    acc = PixelAccumulator()
    for i in range(6):
        mask = np.zeros((24, 24), bool)
        if i % 2:
            y, x = rng.integers(2, 18, 2)
            mask[y : y + rng.integers(2, 6), x : x + rng.integers(2, 6)] = True
        amap = rng.gamma(2.0, 0.01, (24, 24)) + mask * rng.uniform(0.0, 0.05)
        maps.append(amap)
        masks.append(mask)
        acc.add(amap, mask)
    y = np.concatenate([k.ravel() for k in masks])
    v = np.concatenate([a.ravel() for a in maps])
    auc, bound = acc.pixel_auroc()
    assert abs(auc - roc_auc_score(y, v)) <= bound + 1e-9
    assert bound < 1e-3
    assert acc.aupro(0.3) == pytest.approx(exact_aupro(maps, masks, 0.3), abs=2e-3)
    f1, t = acc.pixel_f1_max()
    assert f1 == pytest.approx(f1_score(y, v >= t), abs=1e-9)
    brute = max(f1_score(y, v >= u) for u in np.unique(v)[::7])
    assert f1 >= brute - 5e-3


def test_merge_adds_everything():
    maps, masks = _hand_case()
    a, b, both = PixelAccumulator(), PixelAccumulator(), PixelAccumulator()
    a.add(maps[0], masks[0])
    b.add(maps[1], masks[1])
    for m, k in zip(maps, masks, strict=True):
        both.add(m, k)
    merged = a.merge(b)
    np.testing.assert_array_equal(merged.neg, both.neg)
    assert merged.aupro() == both.aupro() and merged.pixel_auroc() == both.pixel_auroc()


def test_binning_puts_values_in_order():
    acc = PixelAccumulator()
    v = np.array([0.0, 1e-12, 1e-9, 1e-3, 1e-3 * 1.01, 5.0, 1e5])
    idx = acc.bin_index(v)
    assert idx[0] == idx[1] == 0 and np.all(np.diff(idx[1:]) >= 0) and idx[3] < idx[4]
    assert idx[-1] == acc.n_bins - 1
    assert acc.edge(idx[3]) <= 1e-3 < acc.edge(idx[3] + 1)


def test_image_metrics_against_hand_values():
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    y = np.array([0, 0, 1, 0, 1], bool)
    m = image_metrics(s, y)
    assert m["image_auroc"] == pytest.approx(roc_auc_score(y, s)) == pytest.approx(5 / 6)
    assert m["image_f1_max"] == pytest.approx(0.8)  # flag >= 0.3: TP 2, FP 1, FN 0
    assert m["image_f1_threshold"] == pytest.approx(0.3)
    with pytest.raises(ValueError):
        image_metrics(s, np.zeros(5, bool))


def test_integrate_to_interpolates_at_the_limit():
    assert integrate_to(np.array([0, 1.0]), np.array([0, 1.0]), 0.5) == pytest.approx(0.125)
    assert integrate_to(np.array([0, 0.2, 1.0]), np.array([1.0, 1.0, 1.0]), 0.3) == pytest.approx(0.3)
