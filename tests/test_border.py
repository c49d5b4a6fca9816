"""Border artefacts: the autoencoder's zero padding raised the anomaly map along the image border."""

from __future__ import annotations

import json

import numpy as np
import pytest

from anomaly_ae.config import DetectorConfig
from anomaly_ae.detector import Detector
from anomaly_ae.scoring.tiling import pad_margin

PATCH_L2 = {
    "data": {"image_size": 32, "channels": 1, "patch_size": 16, "patches_per_image": 4, "holdout_fraction": 0.25},
    "model": {"widths": [8, 16], "latent_channels": 4},
    "train": {"epochs": 2, "batch_size": 8, "seed": 0},
    "scoring": {"metric": "l2", "smoothing_sigma": 1.0, "reduction": "max", "batch_size": 8},
}


@pytest.fixture(scope="module")
def patch_model(tiny_data):
    return Detector(DetectorConfig.model_validate(PATCH_L2)).fit(tiny_data / "train" / "good")


def _with_margin(det: Detector, margin: int) -> Detector:
    det.config_ = det.config_.model_copy(update={"scoring": det.config_.scoring.model_copy(
        update={"border_margin": margin})})
    return det


def _border_and_centre(det: Detector, value: int) -> tuple[float, float]:
    m = det.anomaly_maps(np.full((32, 32, 1), value, np.uint8))[0]
    band = np.r_[m[:4].ravel(), m[-4:].ravel(), m[:, :4].ravel(), m[:, -4:].ravel()]
    return float(band.max()), float(m[8:-8, 8:-8].max())


@pytest.mark.parametrize("value", [60, 128, 200])
def test_a_uniform_good_image_is_no_hotter_at_the_border_than_in_the_centre(patch_model, value):
    det = _with_margin(patch_model, 16)  # wider than this network's reach: every pixel sees the same plane
    border, centre = _border_and_centre(det, value)
    assert border <= centre * (1 + 1e-3) + 1e-7
    # without the margin the zero padding shows (so the check above can fail)
    raw_border, raw_centre = _border_and_centre(_with_margin(det, 0), value)
    assert raw_border > raw_centre * (1 + 1e-2)


def test_pad_margin_mirrors_and_the_crop_gives_the_image_back():
    x = np.arange(2 * 5 * 7, dtype=np.float32).reshape(1, 5, 7, 2)
    p = pad_margin(x, 3, 4)
    assert p.shape == (1, 12, 16, 2)  # 5 + 6 -> 12, 7 + 6 -> 16 (multiples of 4)
    np.testing.assert_array_equal(p[:, 3:8, 3:10], x)
    np.testing.assert_array_equal(p[:, 2, 3:10], x[:, 0])  # symmetric: the edge row repeats first
    np.testing.assert_array_equal(p[:, 3:8, 0], x[:, :, 2])


def test_the_default_mirrors_8_pixels_and_a_model_saved_before_keeps_none(patch_model, tmp_path):
    det = _with_margin(patch_model, 8)
    assert DetectorConfig().scoring.border_margin == 8 and det.scorer_.border_margin() == 8
    run = det.save(tmp_path / "run")
    assert Detector.load(run).scorer_.border_margin() == 8
    meta = json.loads((run / "detector.json").read_text())
    del meta["config"]["scoring"]["border_margin"]  # as an older anomaly-ae wrote it
    (run / "detector.json").write_text(json.dumps(meta))
    old = Detector.load(run)
    assert old.config_.scoring.border_margin == 0  # its maps, and so its thresholds, are as they were
    x = np.full((1, 32, 32, 1), 128, np.uint8)
    assert not np.allclose(old.anomaly_maps(x), det.anomaly_maps(x))
