"""Contractive autoencoder (Rifai et al., 2011): loss + lambda * ||J_f(x)||_F^2.

``J_f(x)`` is the Jacobian of the code with respect to the input. For a one-layer sigmoid encoder
``h = sigmoid(W x + b)`` it has the closed form

    ||J||_F^2 = sum_j (h_j (1 - h_j))^2 * sum_i W_ij^2,

used whenever ``hidden`` is empty. Deeper encoders use a backend-agnostic stochastic estimate
without autodiff: for ``e ~ N(0, I)`` and a small ``sigma``,
``E ||f(x + sigma e) - f(x)||^2 / sigma^2 -> ||J||_F^2`` as ``sigma -> 0`` (the random directions come
from a layer-owned ``keras.random.SeedGenerator``).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from anomaly_ae.config import ContractiveConfig
from anomaly_ae.models.base import Autoencoder
from anomaly_ae.models.dense import dense_parts

#: the defaults of every hyperparameter are the config's (declared once, in anomaly_ae.config)
_DEFAULTS = ContractiveConfig()


def sigmoid_jacobian_frobenius(h: Any, kernel: Any) -> Any:
    """Per-sample ``||J||_F^2`` ``(N,)`` of ``h = sigmoid(x @ kernel + b)``; ``kernel`` ``(D, units)``."""
    return ops.sum(ops.square(h * (1.0 - h)) * ops.sum(ops.square(kernel), axis=0)[None, :], axis=1)


@keras.saving.register_keras_serializable(package="anomaly_ae")
class ContractiveAutoencoder(Autoencoder):
    """Dense autoencoder with a sigmoid code and the contractive penalty."""

    CONFIG_FIELDS = (*_DEFAULTS.hyperparameters(), "probe_sigma", "seed")

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        hidden: tuple[int, ...] = _DEFAULTS.hidden,
        latent_dim: int = _DEFAULTS.latent_dim,
        activation: str = _DEFAULTS.activation,
        contractive_weight: float = _DEFAULTS.contractive_weight,
        probe_sigma: float = 1e-2,
        loss: str = _DEFAULTS.loss,
        ssim_weight: float = _DEFAULTS.ssim_loss_weight,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        self.image_shape = tuple(int(v) for v in input_shape)
        self.hidden = tuple(int(h) for h in hidden)
        self.latent_dim = int(latent_dim)
        self.activation = activation
        self.contractive_weight = float(contractive_weight)
        self.probe_sigma = float(probe_sigma)
        self.seed = int(seed)
        encoder, decoder = dense_parts(self.image_shape, self.hidden, self.latent_dim, activation, "sigmoid")
        super().__init__(encoder=encoder, decoder=decoder, loss=loss, ssim_weight=ssim_weight, **kwargs)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def jacobian_penalty(self, x: Any, h: Any) -> Any:
        """Mean over the batch of ``||J_f(x)||_F^2`` (closed form or stochastic estimate)."""
        if not self.hidden:
            kernel = self.encoder.get_layer("latent").kernel
            return ops.mean(sigmoid_jacobian_frobenius(h, kernel))
        e = keras.random.normal(ops.shape(x), seed=self.seed_generator, dtype=x.dtype)
        moved = self.encoder(x + self.probe_sigma * e, training=True)
        return ops.mean(ops.sum(ops.square(moved - h), axis=1)) / (self.probe_sigma**2)

    def call(self, x: Any, training: bool = False) -> Any:
        x = self.corrupt(x, training)
        h = self.encoder(x, training=training)
        if training:
            self.add_loss(self.contractive_weight * self.jacobian_penalty(x, h))
        return self.decoder(h, training=training)
