import keras
import numpy as np
import pytest

from anomaly_ae.config import DetectorConfig
from anomaly_ae.detector import Detector
from anomaly_ae.models import build_model
from anomaly_ae.scoring.tiling import pad_to_multiple, tiled_predict

PATCH = {
    "data": {"image_size": [32, 56], "channels": 1, "patch_size": 16, "patches_per_image": 4},
    "model": {"widths": [4, 8], "latent_channels": 4},
    "train": {"epochs": 1, "batch_size": 8},
    "scoring": {"batch_size": 4, "smoothing_sigma": 1.0},
}


def test_patch_config_checks():
    with pytest.raises(ValueError, match="divisible"):
        DetectorConfig.model_validate({**PATCH, "data": {**PATCH["data"], "patch_size": 18}})
    with pytest.raises(ValueError, match="fully convolutional"):
        DetectorConfig.model_validate({**PATCH, "model": {**PATCH["model"], "bottleneck": "dense"}})
    # image size need not be divisible when patches are used (whole images are padded)
    cfg = DetectorConfig.model_validate({**PATCH, "data": {**PATCH["data"], "image_size": [30, 50]}})
    assert build_model(cfg).image_shape == (None, None, 1)


def test_patch_model_trains_on_patches_and_scores_whole_images(tmp_path):
    cfg = DetectorConfig.model_validate(PATCH)
    x = (np.random.default_rng(0).random((10, 64, 112)) * 255).astype(np.uint8)
    det = Detector(cfg).fit(x)
    assert det.train_info_["n_train"] == 8
    assert det.preprocessing_.source_size == (64, 112)
    maps = det.anomaly_maps(x[:3])
    assert maps.shape == (3, 64, 112) and np.isfinite(maps).all()
    run = det.save(tmp_path / "run")
    again = Detector.load(run)
    np.testing.assert_array_equal(again.score(x[:3]), det.score(x[:3]))


def test_pad_to_multiple():
    x = np.arange(2 * 5 * 7, dtype=np.float32).reshape(1, 5, 7, 2)
    p, hw = pad_to_multiple(x, 4)
    assert p.shape == (1, 8, 8, 2) and hw == (5, 7)
    np.testing.assert_array_equal(p[:, :5, :7], x)


def test_tiled_predict_is_exact_for_pointwise_functions():
    x = np.random.default_rng(1).random((2, 40, 72, 3)).astype(np.float32)
    y = tiled_predict(lambda t: 2 * t + 1, x, tile=16, overlap=4)
    np.testing.assert_allclose(y, 2 * x + 1, rtol=1e-6)
    assert tiled_predict(lambda t: t, x, tile=64, overlap=8).shape == x.shape


def test_tiled_reconstruction_close_to_whole_image():
    cfg = DetectorConfig.model_validate({**PATCH, "scoring": {**PATCH["scoring"], "tile_size": 24, "tile_overlap": 8}})
    model = build_model(cfg)
    x = np.random.default_rng(2).random((1, 48, 96, 1)).astype(np.float32)
    whole = keras.ops.convert_to_numpy(model(x))
    tiled = tiled_predict(lambda t: keras.ops.convert_to_numpy(model(t)), x, tile=24, overlap=8)
    assert tiled.shape == whole.shape
    # an untrained network with zero padding differs only near tile borders, and little
    assert np.mean(np.abs(tiled - whole)) < 0.01
