"""The autoencoder family: serialisation of every model and each one's defining mathematics."""

import keras
import numpy as np
import pytest
from keras import ops

from anomaly_ae.config import DetectorConfig
from anomaly_ae.models import ARCHITECTURES, build_model
from anomaly_ae.models.contractive import ContractiveAutoencoder, sigmoid_jacobian_frobenius
from anomaly_ae.models.linear import LinearAutoencoder
from anomaly_ae.models.sparse import SparseAutoencoder, kl_sparsity

SMALL = {"data.image_size": 16, "model.widths": [4, 8], "model.hidden": [32], "model.latent_dim": 8}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_every_model_round_trips_with_identical_outputs(name, tmp_path):
    extra = {"model.noise": "gaussian", "model.noise_level": 0.1} if name == "denoising" else {}
    cfg = DetectorConfig().with_overrides({**SMALL, "model.name": name, **extra})
    model = build_model(cfg)
    model.compile(optimizer="adam")
    x = np.random.default_rng(0).random((8, 16, 16, 1)).astype(np.float32)
    model.fit(x, x, epochs=1, batch_size=4, verbose=0)
    ref = keras.ops.convert_to_numpy(model(x))
    assert ref.shape == x.shape
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True, compile=False)
    assert type(loaded) is ARCHITECTURES[name]
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x)), ref)


def test_dense_regularisers_and_dropout_come_from_the_config():
    cfg = DetectorConfig().with_overrides({**SMALL, "model.name": "dense", "model.l1": 1e-4, "model.l2": 1e-3,
                                           "model.activity_l1": 1e-2, "model.dropout": 0.2})
    model = build_model(cfg)
    x = np.random.default_rng(0).random((4, 16, 16, 1)).astype(np.float32)
    model(x, training=True)
    assert len(model.losses) == 5  # 4 kernel regularisers + 1 activity regulariser
    assert any(isinstance(lay, keras.layers.Dropout) for lay in model.encoder.layers)
    under = build_model(DetectorConfig().with_overrides({**SMALL, "model.name": "dense"}))
    assert under.losses == []


def test_linear_autoencoder_spans_the_pca_subspace():
    """Baldi & Hornik: the trained decoder spans the top-k principal subspace."""
    from scipy.linalg import subspace_angles
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    d, k, n = 16, 3, 512
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
    scales = np.r_[[1.0, 0.7, 0.5], np.full(d - k, 0.05)]  # distinct top-3 variances, small rest
    data = 0.5 + 0.1 * (rng.normal(size=(n, d)) * scales) @ basis.T  # image-like: around 0.5, small spread
    x = data.reshape(n, 4, 4, 1).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = LinearAutoencoder(input_shape=(4, 4, 1), latent_dim=k)
    model.adapt(x)  # the model's own input normalization
    model.compile(optimizer=keras.optimizers.Adam(3e-2))
    model.fit(x, x, epochs=60, batch_size=32, verbose=0)
    pcs = PCA(k).fit(data).components_  # (k, d)
    angles = subspace_angles(model.decoder_basis().T, pcs.T)
    assert np.all(np.cos(angles) > 0.99), np.cos(angles)
    # reconstructions come back in image units and equal the PCA reconstruction
    pca_rec = PCA(k).fit(data).inverse_transform(PCA(k).fit(data).transform(data))
    rec = ops.convert_to_numpy(model(x)).reshape(n, d)
    assert np.mean((rec - pca_rec) ** 2) < 0.01 * np.mean((data - data.mean(0)) ** 2)


def test_kl_sparsity_matches_closed_form():
    h = np.array([[0.1, 0.5, 0.02], [0.3, 0.5, 0.04], [0.2, 0.5, 0.03]], np.float32)
    rho = 0.05
    q = h.mean(axis=0)  # 0.2, 0.5, 0.03
    expected = np.sum(rho * np.log(rho / q) + (1 - rho) * np.log((1 - rho) / (1 - q)))
    assert float(ops.convert_to_numpy(kl_sparsity(ops.convert_to_tensor(h), rho))) == pytest.approx(expected, rel=1e-5)
    at_target = np.full((4, 3), rho, np.float32)
    assert float(ops.convert_to_numpy(kl_sparsity(ops.convert_to_tensor(at_target), rho))) == pytest.approx(0, abs=1e-6)


def test_sparse_training_drives_mean_activation_to_rho():
    rng = np.random.default_rng(1)
    x = rng.random((256, 8, 8, 1)).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = SparseAutoencoder(input_shape=(8, 8, 1), hidden=(), latent_dim=32, sparsity_target=0.05,
                              sparsity_weight=3.0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    h0 = float(np.mean(ops.convert_to_numpy(model.encoder(x))))
    model.fit(x, x, epochs=40, batch_size=64, verbose=0)
    h = ops.convert_to_numpy(model.encoder(x))
    assert abs(h0 - 0.5) < 0.1  # sigmoid units start near 0.5
    assert abs(float(h.mean()) - 0.05) < 0.02, h.mean()


def _numeric_jacobian_sq(encoder, x, eps=1e-3):
    """Sum over samples of ||J||_F^2 by central differences (float64 numpy)."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    total = np.zeros(len(x))
    for i in range(flat.shape[1]):
        plus, minus = flat.copy(), flat.copy()
        plus[:, i] += eps
        minus[:, i] -= eps
        fp = ops.convert_to_numpy(encoder(plus.reshape(x.shape).astype(np.float32))).astype(np.float64)
        fm = ops.convert_to_numpy(encoder(minus.reshape(x.shape).astype(np.float32))).astype(np.float64)
        total += np.sum(((fp - fm) / (2 * eps)) ** 2, axis=1)
    return total


def test_contractive_closed_form_matches_finite_differences():
    keras.utils.set_random_seed(0)
    model = ContractiveAutoencoder(input_shape=(3, 3, 1), hidden=(), latent_dim=5)
    x = np.random.default_rng(2).random((4, 3, 3, 1)).astype(np.float32)
    h = model.encoder(x)
    closed = ops.convert_to_numpy(sigmoid_jacobian_frobenius(h, model.encoder.get_layer("latent").kernel))
    np.testing.assert_allclose(closed, _numeric_jacobian_sq(model.encoder, x), rtol=2e-2)
    assert float(ops.convert_to_numpy(model.jacobian_penalty(x, h))) == pytest.approx(closed.mean(), rel=1e-6)


def test_contractive_estimator_for_deep_encoders():
    keras.utils.set_random_seed(0)
    model = ContractiveAutoencoder(input_shape=(3, 3, 1), hidden=(6,), latent_dim=4, activation="tanh",
                                   probe_sigma=1e-2)
    x = np.random.default_rng(3).random((4, 3, 3, 1)).astype(np.float32)
    h = model.encoder(x)
    estimates = [float(ops.convert_to_numpy(model.jacobian_penalty(x, h))) for _ in range(300)]
    exact = _numeric_jacobian_sq(model.encoder, x).mean()
    assert np.mean(estimates) == pytest.approx(exact, rel=0.1)


def test_penalties_enter_the_training_loss():
    x = np.random.default_rng(4).random((8, 4, 4, 1)).astype(np.float32)
    for model in (SparseAutoencoder(input_shape=(4, 4, 1), hidden=(), latent_dim=4, sparsity_weight=5.0),
                  ContractiveAutoencoder(input_shape=(4, 4, 1), latent_dim=4, contractive_weight=1.0)):
        y = model(x, training=True)
        assert len(model.losses) == 1
        with_penalty = float(ops.convert_to_numpy(model.compute_loss(x, x, y)))
        plain = float(np.mean((x - ops.convert_to_numpy(y)) ** 2))
        assert with_penalty > plain + 1e-4
        model(x, training=False)
        assert model.losses == []  # inference adds no penalty


def test_corruption_only_in_training():
    from anomaly_ae.models.layers import Corruption

    x = np.full((2, 8, 8, 1), 0.5, np.float32)
    for kind in ("gaussian", "salt_pepper", "mask", "erase"):
        layer = Corruption(kind, 0.3, seed=1)
        np.testing.assert_array_equal(ops.convert_to_numpy(layer(x, training=False)), x)
        y = ops.convert_to_numpy(layer(x, training=True))
        changed = np.mean(y != x)
        assert changed > (0.9 if kind == "gaussian" else 0.15), (kind, changed)
        assert y.min() >= 0 and y.max() <= 1
    with pytest.raises(ValueError):
        Corruption("blur")


def test_denoising_model_corrupts_in_training_and_never_when_scoring():
    from anomaly_ae.detector import Detector

    cfg = DetectorConfig().with_overrides({**SMALL, "model.name": "denoising", "model.noise": "mask",
                                           "model.noise_level": 0.5, "train.epochs": 1})
    x = (np.random.default_rng(0).random((8, 16, 16, 1)) * 255).astype(np.uint8)
    det = Detector(cfg).fit(x)
    model = det.model_
    xf = x.astype(np.float32) / 255
    inference = ops.convert_to_numpy(model(xf, training=False))
    np.testing.assert_array_equal(ops.convert_to_numpy(model(xf, training=False)), inference)
    clean_path = ops.convert_to_numpy(model.decoder(model.encoder(xf)))
    np.testing.assert_allclose(inference, clean_path, atol=1e-6)  # scoring sees the real image
    corrupted = model.corrupt(xf, training=True)
    assert float(np.mean(ops.convert_to_numpy(corrupted) == 0)) > 0.4
    np.testing.assert_allclose(det.scorer_.reconstruct(xf), inference, atol=1e-6)
    with pytest.raises(ValueError, match="needs model.noise"):
        DetectorConfig().with_overrides({**SMALL, "model.name": "denoising"})


def test_vae_kl_closed_form_and_reproducible_sampling():
    from anomaly_ae.models.layers import Sampling
    from anomaly_ae.models.vae import kl_divergence

    mu = np.array([[0.0, 1.0], [2.0, -1.0]], np.float32)
    log_var = np.array([[0.0, 0.5], [-1.0, 0.0]], np.float32)
    expected = -0.5 * np.sum(1 + log_var - mu**2 - np.exp(log_var), axis=1)
    got = ops.convert_to_numpy(kl_divergence(ops.convert_to_tensor(mu), ops.convert_to_tensor(log_var)))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert got[0] == pytest.approx(0.5 * (1.0 + np.exp(0.5) - 1 - 0.5))  # first dim contributes 0
    a = ops.convert_to_numpy(Sampling(seed=7)([mu, log_var]))
    b = ops.convert_to_numpy(Sampling(seed=7)([mu, log_var]))
    c = ops.convert_to_numpy(Sampling(seed=8)([mu, log_var]))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_vae_scores_from_the_mean_and_samples_from_the_prior():
    cfg = DetectorConfig().with_overrides({**SMALL, "model.name": "vae"})
    model = build_model(cfg)
    x = np.random.default_rng(0).random((4, 16, 16, 1)).astype(np.float32)
    y1 = ops.convert_to_numpy(model(x))
    np.testing.assert_array_equal(y1, ops.convert_to_numpy(model(x)))  # inference is deterministic
    mu, _ = model.encoder(x)
    np.testing.assert_allclose(y1, ops.convert_to_numpy(model.decoder(mu)), atol=1e-6)
    model(x, training=True)
    assert len(model.losses) == 1  # the KL term
    s1 = ops.convert_to_numpy(model.sample(3, seed=5))
    assert s1.shape == (3, 16, 16, 1)
    np.testing.assert_array_equal(s1, ops.convert_to_numpy(model.sample(3, seed=5)))
    assert ops.convert_to_numpy(model.kl_divergence(x)).shape == (4,)


def test_vae_kl_warmup_raises_the_kl_weight_per_epoch():
    from anomaly_ae.detector import Detector

    cfg = DetectorConfig().with_overrides({**SMALL, "model.name": "vae", "model.kl_warmup_epochs": 4,
                                           "train.epochs": 2, "train.patience": 5})
    x = (np.random.default_rng(0).random((8, 16, 16, 1)) * 255).astype(np.uint8)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(float(ops.convert_to_numpy(self.model.kl_scale)))

    det = Detector(cfg).fit(x, callbacks=[Record()])
    assert det.train_info_["epochs_run"] == 2
    assert seen == pytest.approx([0.25, 0.5])  # epochs 1 and 2 of a 4-epoch warm-up
    no_warmup = build_model(DetectorConfig().with_overrides({**SMALL, "model.name": "vae"}))
    assert float(ops.convert_to_numpy(no_warmup.kl_scale)) == 1.0


def test_erase_corruption_blanks_one_rectangle_of_the_requested_area():
    from anomaly_ae.models.layers import Corruption

    x = np.ones((16, 20, 20, 1), np.float32)
    y = ops.convert_to_numpy(Corruption("erase", 0.25, seed=2)(x, training=True))
    zeros = (y == 0)[..., 0]
    for z in zeros:
        rows, cols = np.where(z)
        assert z.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)  # one filled rectangle
        assert 0.15 < z.mean() < 0.35


def test_vae_kl_term_as_an_extra_image_score():
    from anomaly_ae.detector import Detector

    cfg = DetectorConfig().with_overrides({**SMALL, "model.name": "vae", "train.epochs": 1})
    x = (np.random.default_rng(0).random((8, 16, 16, 1)) * 255).astype(np.uint8)
    det = Detector(cfg).fit(x)
    plain = det.score(x)
    det.config_ = det.config_.with_overrides({"scoring.kl_weight": 0.5})
    kl = ops.convert_to_numpy(det.model_.kl_divergence(x.astype(np.float32) / 255))
    np.testing.assert_allclose(det.score(x), plain + 0.5 * kl, rtol=1e-5)
