"""Deployable detector export (ONNX, SavedModel) and encoder graph formats.

Parity tests (``pytest -k parity``) load the exported files with the runtimes a line engineer would
use (onnxruntime, TensorFlow) and compare with ``Detector.score`` / ``Detector.anomaly_maps``.
"""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from anomaly_ae.cli.main import app
from anomaly_ae.config import DetectorConfig
from anomaly_ae.data.images import read_image
from anomaly_ae.deploy.encoder import ExportError, export_encoder, multiscale_encoder
from anomaly_ae.deploy.graph import export_detector
from anomaly_ae.detector import Detector
from anomaly_ae.scoring import maps as scoring
from anomaly_ae.scoring import ops as scoring_ops

ort = pytest.importorskip("onnxruntime")
tf = pytest.importorskip("tensorflow")
runner = CliRunner()

# Three detectors covering every branch of the graph: whole-image gray L2 + top-k (the tiny
# fixture), RGB 1-SSIM + max with float input, and a fully convolutional patch model whose odd
# image size needs reflect padding, with SSIM+L1 maps, channel max and mean reduction.
RGB_SSIM = {
    "data": {"image_size": 32, "channels": 3, "holdout_fraction": 0.25},
    "model": {"widths": [8, 16], "latent_channels": 4},
    "train": {"epochs": 1, "batch_size": 8, "seed": 0},
    "scoring": {"metric": "ssim", "smoothing_sigma": 2.0, "reduction": "max", "batch_size": 8},
}
PATCH_PADDED = {
    "data": {"image_size": [30, 44], "channels": 1, "patch_size": 16, "patches_per_image": 4},
    "model": {"widths": [4, 8], "latent_channels": 4},
    "train": {"epochs": 1, "batch_size": 8, "seed": 0},
    "scoring": {"metric": "ssim_l1", "channel_reduction": "max", "smoothing_sigma": 3.0, "reduction": "mean",
                "batch_size": 4},
}

# DRAEM-style: repair training on synthetic defects and the learned map of a discriminator U-Net whose
# depth (3 blocks) needs more padding than the autoencoder's (2 blocks) on a 30x44 image.
PATCH_LEARNED = {
    "data": {"image_size": [30, 44], "channels": 1, "patch_size": 16, "patches_per_image": 4},
    "model": {"widths": [4, 8], "latent_channels": 4, "discriminator": [4, 8, 8]},
    "train": {"epochs": 1, "batch_size": 8, "seed": 0, "synthetic_anomalies": {"probability": 0.5}},
    "scoring": {"metric": "learned", "smoothing_sigma": 2.0, "reduction": "topk_mean", "batch_size": 4},
}


# the pretrained-feature autoencoder (Lite0 backbone, gray input repeated to RGB), on a size that is not
# a multiple of its 16-pixel stride
FEATURE = {
    "data": {"image_size": [40, 56], "channels": 1, "holdout_fraction": 0.25},
    "model": {"name": "feature", "widths": [16], "latent_channels": 4},
    "train": {"epochs": 2, "batch_size": 4, "seed": 0},
    "scoring": {"smoothing_sigma": 2.0, "reduction": "topk_mean", "batch_size": 4},
}


def _test_images(data_dir, det):
    """The tiny set's test images (good and defective), converted to the model's size and channels."""
    return _images(sorted((data_dir / "test").rglob("*.png")), det)


def _images(paths, det):
    pre = det.preprocessing_
    return np.stack([pre.resize(pre.convert_channels(read_image(p, 3))) for p in paths])


@pytest.fixture(scope="module")
def detectors(tiny_detector, tiny_data):
    rgb = Detector(DetectorConfig.model_validate(RGB_SSIM)).fit(tiny_data / "train" / "good")
    patch = Detector(DetectorConfig.model_validate(PATCH_PADDED)).fit(tiny_data / "train" / "good")
    learned = Detector(DetectorConfig.model_validate(PATCH_LEARNED)).fit(tiny_data / "train" / "good")
    # the learned map with the image score normalized per position (scoring.position_norm): the reference
    # is fitted on training images, as Detector.fit does
    positioned = Detector.from_state(learned.to_state())
    positioned.config_ = positioned.config_.model_copy(update={"scoring": positioned.config_.scoring.model_copy(
        update={"position_norm": True})})
    train = _images(sorted((tiny_data / "train" / "good").glob("*.png"))[:12], positioned)
    positioned.fit_scoring(learned.holdout_images_, select=False, reference=train)
    positioned.calibrate(learned.holdout_images_)
    feature = Detector(DetectorConfig.model_validate(FEATURE)).fit(tiny_data / "train" / "good")
    return {"feature": (feature, "uint8"), "gray_l2_topk": (tiny_detector, "uint8"), "rgb_ssim_max": (rgb, "float32"),
            "patch_padded_ssim_l1": (patch, "uint8"), "patch_learned": (learned, "uint8"),
            "patch_learned_position": (positioned, "uint8")}


def _score_atol(det):
    """1e-4, the maps' tolerance, carried through the score: position_norm divides the map by its reference's
    scale, which multiplies float32 differences of the map by up to 1 / scale."""
    if not det.config_.scoring.position_norm:
        return 1e-4
    return 1e-4 / min(1.0, float(det.scorer_.position_reference().scale.min()))


def _reference(det, images):
    return det.score(images), det.anomaly_maps(images)


def _feed(images, input_dtype):
    return images if input_dtype == "uint8" else images.astype(np.float32) / 255.0


@pytest.mark.parametrize("case", ["gray_l2_topk", "rgb_ssim_max", "patch_padded_ssim_l1", "patch_learned",
                                  "patch_learned_position", "feature"])
def test_onnx_parity_with_detector(detectors, tiny_data, tmp_path, case):
    det, input_dtype = detectors[case]
    images = _test_images(tiny_data, det)
    scores, maps = _reference(det, images)
    info = export_detector(det, tmp_path / "onnx", "onnx", input_dtype)
    sess = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["images"]
    got_maps, got_scores = sess.run(["anomaly_map", "score"], {"images": _feed(images, input_dtype)})
    assert got_maps.shape == maps.shape == (len(images), *det.preprocessing_.image_size)
    np.testing.assert_allclose(got_scores, scores, rtol=0, atol=_score_atol(det))
    np.testing.assert_allclose(got_maps, maps, rtol=0, atol=1e-4)
    # the decision made with deploy.json's threshold is the detector's decision
    np.testing.assert_array_equal(got_scores > info["threshold"], det.predict(images))
    assert json.loads((tmp_path / "onnx" / "deploy.json").read_text())["input"]["dtype"] == input_dtype


@pytest.mark.parametrize("case", ["gray_l2_topk", "patch_padded_ssim_l1", "patch_learned", "patch_learned_position",
                                  "feature"])
def test_savedmodel_parity_with_detector(detectors, tiny_data, tmp_path, case):
    det, input_dtype = detectors[case]
    images = _test_images(tiny_data, det)
    scores, maps = _reference(det, images)
    export_detector(det, tmp_path / "sm", "savedmodel", input_dtype)
    loaded = tf.saved_model.load(str(tmp_path / "sm" / "saved_model"))
    out = loaded.signatures["serving_default"](images=tf.constant(_feed(images, input_dtype)))
    np.testing.assert_allclose(out["score"].numpy(), scores, rtol=0, atol=_score_atol(det))
    np.testing.assert_allclose(out["anomaly_map"].numpy(), maps, rtol=0, atol=1e-4)


def test_onnx_encoder_parity_with_keras_features(tiny_detector, tmp_path):
    info = export_encoder(tiny_detector, tmp_path / "enc", formats=["onnx", "savedmodel", "keras"])
    assert info["files"] == ["encoder.keras", "encoder.weights.h5", "encoder.onnx", "encoder_savedmodel"]
    x = np.random.default_rng(3).random((3, 32, 32, 1)).astype(np.float32)
    want = [np.asarray(f) for f in multiscale_encoder(tiny_detector.model_)(x)]
    sess = ort.InferenceSession(str(tmp_path / "enc" / "encoder.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(["block1", "block2", "latent"], {"image": x})
    sm = tf.saved_model.load(str(tmp_path / "enc" / "encoder_savedmodel")).signatures["serving_default"](
        image=tf.constant(x))
    for name, w, g in zip(["block1", "block2", "latent"], want, got, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-5)
        np.testing.assert_allclose(sm[name].numpy(), w, atol=1e-5)


def test_graph_maps_equal_numpy_maps_on_random_inputs():
    """The keras.ops twins of scoring.py, checked on their own (borders, odd sizes, large sigma)."""
    rng = np.random.default_rng(0)
    x = rng.random((2, 13, 21, 3)).astype(np.float32)
    y = np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1).astype(np.float32)
    for metric in scoring.METRICS:
        for red in scoring.CHANNEL_REDUCTIONS:
            want = scoring.residual_map(x, y, metric, red, 0.3)
            got = np.asarray(scoring_ops.residual_map(x, y, metric, red, 0.3))
            np.testing.assert_allclose(got, want, atol=2e-5, err_msg=f"{metric}/{red}")
    maps = rng.random((2, 13, 21)).astype(np.float32)
    for sigma in [(0.0, 0.0), (0.4, 0.7), (3.0, 2.0), (5.0, 5.0)]:  # 5: kernel wider than the map
        np.testing.assert_allclose(np.asarray(scoring_ops.smooth(maps, *sigma)), scoring.smooth(maps, sigma),
                                   atol=1e-5, err_msg=str(sigma))
    for red in scoring.REDUCTIONS:
        np.testing.assert_allclose(np.asarray(scoring_ops.image_score(maps, red, 0.05)),
                                   scoring.image_score(maps, red, 0.05), atol=1e-6)


def test_unsupported_exports_are_refused_with_a_reason(tiny_detector, tiny_config, tmp_path):
    with pytest.raises(ExportError, match="format 'tflite' is not supported"):
        export_detector(tiny_detector, tmp_path / "x", "tflite")
    with pytest.raises(ExportError, match="input dtype 'int16'"):
        export_detector(tiny_detector, tmp_path / "x", "onnx", "int16")
    def fitted_copy(config, model=None):
        det = Detector(config)
        det.config_ = config
        for attr in ("model_", "preprocessing_", "postprocessor_"):
            setattr(det, attr, getattr(tiny_detector, attr))
        det.model_ = model or det.model_
        return det

    tiled = fitted_copy(tiny_detector.config_.with_overrides({"scoring.tile_size": 16, "scoring.tile_overlap": 4}))
    with pytest.raises(ExportError, match="tile_size"):
        export_detector(tiled, tmp_path / "x", "onnx")
    bf16 = fitted_copy(tiny_detector.config_, type(tiny_detector.model_).from_config(
        {**tiny_detector.model_.get_config(), "precision": "mixed_bfloat16"}))
    with pytest.raises(ExportError, match="ONNX export needs a float32 model"):
        export_detector(bf16, tmp_path / "x", "onnx")
    with pytest.raises(ExportError, match="format 'pb' is not supported"):
        export_encoder(tiny_detector, tmp_path / "enc", formats=["pb"])
    assert not (tmp_path / "x").exists()


def test_cli_export_and_usage_errors(tiny_detector, tmp_path):
    run = tiny_detector.save(tmp_path / "run")
    res = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "dep"), "--format", "onnx"])
    assert res.exit_code == 0, res.output
    info = json.loads((tmp_path / "dep" / "deploy.json").read_text())
    assert info["file"] == "model.onnx" and (tmp_path / "dep" / "model.onnx").stat().st_size > 1000
    assert info["threshold"] == pytest.approx(tiny_detector.threshold_)
    assert info["input"]["shape"] == [None, 32, 32, 1] and info["input"]["channel_order"] == "gray"
    res = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "d2"), "--format", "tflite"])
    one_line = " ".join(res.output.replace("│", " ").split())
    assert res.exit_code == 2 and "'tflite' is not one of 'onnx', 'savedmodel'" in one_line
    res = runner.invoke(app, ["export-encoder", str(run), "--out", str(tmp_path / "e"), "--format", "pb"])
    one_line = " ".join(res.output.replace("│", " ").split())
    assert res.exit_code == 2 and "'pb' is not one of 'onnx', 'savedmodel'" in one_line


def test_readme_deploy_snippet_runs_and_agrees_with_the_detector(tiny_detector, tiny_data, tmp_path):
    """The README's onnxruntime + NumPy + OpenCV snippet, run as written on an exported detector."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    snippet = re.search(r"<!-- deploy-snippet -->\n```python\n(.*?)```", readme, re.S).group(1)
    assert len(snippet.strip().splitlines()) <= 11
    assert {m for m in re.findall(r"import ([\w, .]+)", snippet)[0].replace(" as ort", "").split(", ")} == {
        "json", "sys", "cv2", "numpy as np", "onnxruntime"}
    export_detector(tiny_detector, tmp_path / "runs" / "deploy", "onnx")
    (tmp_path / "snippet.py").write_text(snippet + "print('mask', mask.shape, int(mask.sum()))\n")
    image = sorted((tiny_data / "test" / "scratch").glob("*.png"))[0]
    out = subprocess.run([sys.executable, "snippet.py", str(image)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    score = float(re.search(r"score (\S+)", out).group(1))
    assert score == pytest.approx(float(tiny_detector.score(image)[0]), abs=1e-4)
    verdict = "ANOMALOUS" if tiny_detector.predict(image)[0] else "good"
    assert verdict in out
    n_mask = int(re.search(r"mask \(32, 32\) (\d+)", out).group(1))
    assert n_mask == int(tiny_detector.predict_masks(image)[0].sum())
