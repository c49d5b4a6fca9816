"""Per-position normalization of the image score (scoring.position_norm, anomaly_ae.scoring.position)."""

import json

import numpy as np
import pytest

from anomaly_ae.detector import Detector
from anomaly_ae.scoring.maps import image_score
from anomaly_ae.scoring.position import SIDE, PositionReference


def _good_maps(n=30, h=40, w=100, seed=0):
    """Good maps where one column always answers (a groove that collects dirt) over low noise."""
    rng = np.random.default_rng(seed)
    maps = rng.uniform(0, 0.1, (n, h, w)).astype(np.float32)
    maps[:, :, 70] += rng.uniform(0.5, 0.9, (n, 1)).astype(np.float32)
    return maps


def test_normalized_score_ranks_a_small_defect_above_the_usual_hot_spot():
    good = _good_maps()
    ref = PositionReference.fit(good[:20])
    test_good = good[20:]
    defect = test_good.copy()
    defect[:, 10, 20] = 0.45  # weaker than the column, but where good maps never answer
    raw_good, raw_bad = test_good.max(axis=(1, 2)), defect.max(axis=(1, 2))
    assert (raw_bad <= raw_good).all()  # the plain maximum cannot tell them apart: it is the column's
    z_good = ref.normalize(test_good).max(axis=(1, 2))
    z_bad = ref.normalize(defect).max(axis=(1, 2))
    assert z_bad.min() > z_good.max()


def test_reference_is_small_rounded_and_round_trips_exactly():
    maps = _good_maps(h=208, w=512)
    ref = PositionReference.fit(maps)
    assert max(ref.mean.shape) == SIDE and ref.mean.shape == (26, 64)
    assert ref.scale.min() > 0
    back = PositionReference.from_dict(json.loads(json.dumps(ref.to_dict())))
    np.testing.assert_array_equal(back.mean, ref.mean)  # fit rounds as it is stored: saved == fitted
    np.testing.assert_array_equal(back.scale, ref.scale)
    z = ref.normalize(maps[:2])
    assert z.shape == (2, 208, 512) and z.dtype == np.float32


def test_scale_floor_is_the_mean_spread():
    maps = np.zeros((10, 8, 8), np.float32)
    maps[:, :, :4] = np.linspace(0, 1, 10)[:, None, None]  # left half varies, right half never does
    ref = PositionReference.fit(maps)
    assert np.allclose(ref.scale[:, 4:], ref.scale[:, :4].mean() / 2, rtol=1e-5)  # floor = mean std over all
    assert np.isfinite(ref.normalize(maps)).all()


@pytest.mark.parametrize("bad", [{"shape": [2, 2], "mean": [[0, 0], [0, 0]], "scale": [[1, 0], [1, 1]]},
                                 {"shape": [2, 2], "mean": [[0, 0], [0, float("nan")]], "scale": [[1, 1], [1, 1]]},
                                 {"shape": [2, 3], "mean": [[0, 0], [0, 0]], "scale": [[1, 1], [1, 1]]}])
def test_malformed_reference_is_refused(bad):
    with pytest.raises(ValueError):
        PositionReference.from_dict(bad)


def test_fit_needs_two_maps():
    with pytest.raises(ValueError, match="at least 2"):
        PositionReference.fit(np.zeros((1, 4, 4), np.float32))


@pytest.fixture(scope="module")
def positioned(tiny_detector, tiny_data):
    """The tiny detector with position_norm on, its reference fitted on 12 of its training images."""
    det = Detector.from_state(tiny_detector.to_state())
    det.config_ = det.config_.model_copy(update={"scoring": det.config_.scoring.model_copy(
        update={"position_norm": True})})
    train = np.stack(_train(tiny_data, det)[:12])
    check = det.fit_scoring(tiny_detector.holdout_images_, select=False, reference=train)
    det.calibrate(tiny_detector.holdout_images_)
    return det, check


def test_detector_scores_the_normalized_map_and_keeps_the_plain_heatmap(positioned, tiny_detector, tiny_data):
    det, check = positioned
    assert check["position_norm"] is True and det.position_reference_ is not None
    images = tiny_detector.holdout_images_
    maps = det.anomaly_maps(images)
    np.testing.assert_allclose(maps, tiny_detector.anomaly_maps(images), atol=1e-6)  # the heatmap is unchanged
    s = det.config_.scoring
    expected = image_score(det.scorer_.position_reference().normalize(maps), s.reduction, s.topk_fraction)
    np.testing.assert_allclose(det.score(images), expected, rtol=1e-6)
    assert not np.allclose(det.score(images), tiny_detector.score(images))


def test_position_reference_survives_save_and_load(positioned, tmp_path, tiny_data):
    det, _ = positioned
    det.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "detector.json").read_text())
    assert meta["config"]["scoring"]["position_norm"] is True and meta["position_reference"]["shape"] == [32, 32]
    back = Detector.load(tmp_path / "m")
    images = sorted((tiny_data / "test").rglob("*.png"))
    np.testing.assert_allclose(back.score(images), det.score(images), rtol=0, atol=1e-6)
    assert back.threshold_ == det.threshold_


def test_position_norm_without_a_reference_says_what_to_do(tiny_detector):
    det = Detector.from_state(tiny_detector.to_state())
    det.position_reference_ = None
    det.config_ = det.config_.model_copy(update={"scoring": det.config_.scoring.model_copy(
        update={"position_norm": True})})
    with pytest.raises(ValueError, match="no position reference"):
        det.score(tiny_detector.holdout_images_)


def test_select_auto_tries_position_norm_only_with_a_reference(tiny_detector, tiny_data):
    det = Detector.from_state(tiny_detector.to_state())
    det.fit_scoring(tiny_detector.holdout_images_)
    assert not any(r.position_norm for r in det.candidates_)
    n_plain = len(det.candidates_)
    det = Detector.from_state(tiny_detector.to_state())
    det.fit_scoring(tiny_detector.holdout_images_, reference=np.stack(_train(tiny_data, det)[:8]))
    assert sum(r.position_norm for r in det.candidates_) == n_plain  # every plain candidate, normalized
    best = det.candidates_[0]
    assert det.config_.scoring.position_norm == best.position_norm
    assert (det.position_reference_ is not None) == best.position_norm


def _train(tiny_data, det):
    from anomaly_ae.data.images import list_images, read_image

    pre = det.preprocessing_
    return [pre.resize(pre.convert_channels(read_image(p, 1))) for p in list_images(tiny_data / "train" / "good")]


def test_reference_images_are_a_seeded_bounded_subset_of_the_training_images():
    from anomaly_ae.scoring.position import MAX_IMAGES, reference_indices

    train = np.arange(3, 300, 2)
    idx = reference_indices(train, seed=0)
    assert len(idx) == MAX_IMAGES and set(idx) <= set(train) and (np.diff(idx) > 0).all()
    np.testing.assert_array_equal(idx, reference_indices(train, seed=0))
    assert not np.array_equal(idx, reference_indices(train, seed=1))
    np.testing.assert_array_equal(reference_indices(train[:5], seed=0), train[:5])  # fewer: all of them
