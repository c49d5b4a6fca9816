import keras
import numpy as np
import pytest

from anomaly_ae.config import DetectorConfig
from anomaly_ae.models import ARCHITECTURES, ConvAutoencoder, build_model


@pytest.mark.parametrize("bottleneck", ["conv", "dense"])
def test_conv_autoencoder_shapes_and_parts(bottleneck):
    cfg = DetectorConfig().with_overrides(
        {"data.image_size": 32, "data.channels": 3, "model.widths": [8, 16], "model.bottleneck": bottleneck,
         "model.latent_channels": 2, "model.latent_dim": 10, "model.convs_per_block": 2}
    )
    model = build_model(cfg)
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype(np.float32)
    y = keras.ops.convert_to_numpy(model(x))
    assert y.shape == x.shape
    assert (y >= 0).all() and (y <= 1).all()
    z = keras.ops.convert_to_numpy(model.encoder(x))
    assert z.shape == ((2, 8, 8, 2) if bottleneck == "conv" else (2, 10))
    assert model.encoder.name == "encoder" and model.decoder.name == "decoder"
    convs = [lay for lay in model.encoder.layers if isinstance(lay, keras.layers.Conv2D) and lay.kernel_size == (3, 3)]
    assert [c.filters for c in convs] == [8, 8, 16, 16]


def test_registry_is_explicit():
    assert list(ARCHITECTURES) == ["conv", "dense", "linear", "sparse", "contractive", "denoising", "vae",
                                  "feature"]
    assert ARCHITECTURES["conv"] is ConvAutoencoder


def test_rejects_indivisible_input():
    with pytest.raises(ValueError, match="divisible"):
        ConvAutoencoder(input_shape=(30, 32, 1), widths=(8, 16))


@pytest.mark.parametrize("loss", ["mse", "ssim_l1"])
def test_save_load_round_trip_identical_outputs(tmp_path, loss):
    cfg = DetectorConfig().with_overrides(
        {"data.image_size": 32, "model.widths": [8, 16], "model.batch_norm": True, "model.loss": loss}
    )
    model = build_model(cfg)
    model.compile(optimizer="adam")
    x = np.random.default_rng(0).random((8, 32, 32, 1)).astype(np.float32)
    model.fit(x, x, epochs=1, batch_size=4, verbose=0)  # non-trivial weights and BN statistics
    ref = keras.ops.convert_to_numpy(model(x))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    assert isinstance(loaded, ConvAutoencoder)
    assert loaded.reconstruction_loss == loss and loaded.batch_norm
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x)), ref)


def test_training_reduces_loss():
    cfg = DetectorConfig().with_overrides({"data.image_size": 16, "model.widths": [8]})
    model = build_model(cfg)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    x = np.tile(np.linspace(0, 1, 16, dtype=np.float32)[None, :, None, None], (16, 1, 16, 1))
    hist = model.fit(x, x, epochs=15, batch_size=8, verbose=0).history["loss"]
    assert hist[-1] < 0.5 * hist[0]


def test_mixed_bfloat16_precision_trains_scores_and_round_trips(tiny_config, tmp_path):
    import keras

    from anomaly_ae.detector import Detector

    cfg = tiny_config.with_overrides({"train.precision": "mixed_bfloat16", "train.epochs": 1})
    x = (np.random.default_rng(0).random((12, 32, 32, 1)) * 255).astype(np.uint8)
    det = Detector(cfg).fit(x)
    conv = det.model_.encoder.get_layer("enc1_conv1")
    assert conv.compute_dtype == "bfloat16" and conv.variable_dtype == "float32"
    assert det.model_.decoder.get_layer("reconstruction").compute_dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"  # the global policy is left as it was
    assert np.isfinite(det.history_["loss"]).all()
    scores = det.score(x[:4])
    assert scores.dtype == np.float64 and np.isfinite(scores).all()
    again = Detector.load(det.save(tmp_path / "run"))
    assert again.model_.encoder.get_layer("enc1_conv1").compute_dtype == "bfloat16"
    np.testing.assert_allclose(again.score(x[:4]), scores, rtol=1e-6)
