"""Linear autoencoder: ``x_hat = W2 (W1 x + b1) + b2`` trained with squared error.

Inputs are normalized (``adapt``: per-pixel training mean, one global scale), which is what makes
plain gradient descent converge in reasonable time on images in [0, 1]. The optimum spans the same
subspace as the top ``latent_dim`` principal components of the training images (Baldi & Hornik,
1989): the rows of the decoder kernel ``W2`` span the principal subspace (they need not be
orthonormal, nor the components themselves).
``tests/test_family.py`` checks that the principal angles between the two subspaces are near zero.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from anomaly_ae.config import LinearConfig
from anomaly_ae.models.base import Autoencoder
from anomaly_ae.models.dense import dense_parts

#: the defaults of every hyperparameter are the config's (declared once, in anomaly_ae.config)
_DEFAULTS = LinearConfig()


@keras.saving.register_keras_serializable(package="anomaly_ae")
class LinearAutoencoder(Autoencoder):
    """Linear encoder and decoder (no activations, unbounded output), MSE loss."""

    CONFIG_FIELDS = tuple(_DEFAULTS.hyperparameters())

    def __init__(self, input_shape: tuple[int, int, int], latent_dim: int = _DEFAULTS.latent_dim,
                 loss: str = _DEFAULTS.loss, ssim_weight: float = _DEFAULTS.ssim_loss_weight, **kwargs: Any) -> None:
        self.image_shape = tuple(int(v) for v in input_shape)
        self.latent_dim = int(latent_dim)
        encoder, decoder = dense_parts(self.image_shape, (), self.latent_dim, "linear", "linear",
                                       output_activation="linear")
        super().__init__(encoder=encoder, decoder=decoder, loss=loss, ssim_weight=ssim_weight, **kwargs)
        # input normalization (x - mean) / scale, fitted by adapt(); saved with the weights
        self.input_mean = self.add_weight(shape=self.image_shape, initializer="zeros", trainable=False,
                                          name="input_mean")
        self.input_scale = self.add_weight(shape=(), initializer="ones", trainable=False, name="input_scale")

    def adapt(self, x: np.ndarray) -> None:
        """Fit the normalization on training images ``(N, H, W, C)``: per-pixel mean, one global std."""
        x = np.asarray(x, np.float32)
        mean = x.mean(axis=0)
        self.input_mean.assign(mean)
        self.input_scale.assign(float(max((x - mean).std(), 1e-6)))

    def call(self, x: Any, training: bool = False) -> Any:
        """Normalize, project, reconstruct, de-normalize (the output is in image units)."""
        xn = (self.corrupt(x, training) - self.input_mean) / self.input_scale
        return self.decoder(self.encoder(xn, training=training), training=training) * self.input_scale + self.input_mean

    def decoder_basis(self) -> np.ndarray:
        """Decoder kernel ``(latent_dim, H*W*C)``: its rows span the learned subspace."""
        return keras.ops.convert_to_numpy(self.decoder.get_layer("reconstruction").kernel)
