import json

import keras
import numpy as np
import pytest
from typer.testing import CliRunner

from anomaly_ae.cli.main import app
from anomaly_ae.deploy.encoder import ExportError, export_encoder, load_encoder, multiscale_encoder
from anomaly_ae.detector import Detector


def test_multiscale_encoder_outputs_and_shared_weights(tiny_detector):
    enc = multiscale_encoder(tiny_detector.model_)
    x = np.random.default_rng(0).random((2, 32, 32, 1)).astype(np.float32)
    feats = [keras.ops.convert_to_numpy(f) for f in enc(x)]
    assert [f.shape for f in feats] == [(2, 32, 32, 8), (2, 16, 16, 16), (2, 8, 8, 4)]
    np.testing.assert_allclose(feats[-1], keras.ops.convert_to_numpy(tiny_detector.model_.encoder(x)), atol=1e-6)


def test_export_round_trip_gives_the_same_features(tiny_detector, tmp_path):
    info = export_encoder(tiny_detector, tmp_path / "enc")
    assert {p.name for p in (tmp_path / "enc").iterdir()} == {"encoder.keras", "encoder.weights.h5", "encoder.json",
                                                             ".anomaly-ae-manifest.json"}
    assert json.loads((tmp_path / "enc" / "encoder.json").read_text()) == json.loads(json.dumps(info))
    assert [o["shape"] for o in info["outputs"]] == [[32, 32, 8], [16, 16, 16], [8, 8, 4]]
    assert [o["downsampling"] for o in info["outputs"]] == [1, 2, 4]
    assert [o["name"] for o in info["outputs"]] == ["block1", "block2", "latent"]
    assert info["channels"] == 1 and info["value_range"] == [0.0, 1.0]
    loaded = load_encoder(tmp_path / "enc")
    x = np.random.default_rng(1).random((3, 32, 32, 1)).astype(np.float32)
    for a, b in zip(loaded(x), multiscale_encoder(tiny_detector.model_)(x), strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_dense_models_cannot_export_a_spatial_encoder(tiny_config, tmp_path):
    cfg = tiny_config.with_overrides({"model.name": "dense", "model.hidden": [16], "model.latent_dim": 4,
                                      "train.epochs": 1})
    det = Detector(cfg).fit((np.random.default_rng(0).random((8, 32, 32, 1)) * 255).astype(np.uint8))
    with pytest.raises(ExportError, match="no spatial encoder"):
        export_encoder(det, tmp_path / "enc")
    run = det.save(tmp_path / "run")
    res = CliRunner().invoke(app, ["export-encoder", str(run), "--out", str(tmp_path / "e")])
    assert res.exit_code == 2 and "no spatial encoder" in res.output


def test_export_encoder_cli(tiny_detector, tmp_path):
    run = tiny_detector.save(tmp_path / "run")
    res = CliRunner().invoke(app, ["export-encoder", str(run), "--out", str(tmp_path / "e")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "e" / "encoder.keras").is_file() and "1/4" in res.output


def test_build_segmenter_trains_one_step_with_a_frozen_encoder(tiny_detector, tmp_path):
    from anomaly_ae.segmentation.model import build_segmenter, unfreeze

    export_encoder(tiny_detector, tmp_path / "enc")
    seg = build_segmenter(tmp_path / "enc", num_classes=1, freeze_encoder=True)
    rng = np.random.default_rng(0)
    x = rng.random((4, 32, 32, 1)).astype(np.float32)
    y = np.zeros((4, 32, 32, 1), np.float32)
    y[:, 8:16, 8:16] = 1.0
    out = keras.ops.convert_to_numpy(seg(x))
    assert out.shape == (4, 32, 32, 1) and (out >= 0).all() and (out <= 1).all()
    # the head starts near the 1% foreground prior, not at 0.5 (rare defects; see build_segmenter)
    assert 0.002 < float(np.median(out)) < 0.05
    enc = seg.get_layer("multiscale_encoder")
    enc_before = [keras.ops.convert_to_numpy(w).copy() for w in enc.weights]
    head_before = keras.ops.convert_to_numpy(seg.get_layer("mask").kernel).copy()
    seg.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    seg.train_on_batch(x, y)
    for a, b in zip(enc_before, enc.weights, strict=True):
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(b))  # frozen
    assert not np.allclose(head_before, keras.ops.convert_to_numpy(seg.get_layer("mask").kernel))
    n_frozen = len(seg.trainable_weights)
    unfreeze(seg, 1)
    trainable = {w.path for w in seg.trainable_weights}
    assert len(seg.trainable_weights) > n_frozen
    assert any("enc2_conv1" in p for p in trainable) and not any("enc1_conv1" in p for p in trainable)
    unfreeze(seg, 2)
    assert any("enc1_conv1" in w.path for w in seg.trainable_weights)


def test_random_init_segmenter_has_the_same_architecture_and_fresh_weights(tiny_detector, tmp_path):
    from anomaly_ae.segmentation.model import build_segmenter

    export_encoder(tiny_detector, tmp_path / "enc")
    pre = build_segmenter(tmp_path / "enc").get_layer("multiscale_encoder")
    rnd = build_segmenter(tmp_path / "enc", pretrained=False).get_layer("multiscale_encoder")
    assert [w.shape for w in pre.weights] == [w.shape for w in rnd.weights]
    kernels = [(a, b) for a, b in zip(pre.weights, rnd.weights, strict=True) if len(a.shape) == 4]
    assert kernels and all(not np.allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
                           for a, b in kernels)
