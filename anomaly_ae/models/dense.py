"""Fully connected autoencoder: flatten -> Dense stack -> latent -> mirrored Dense stack -> image.

``latent_dim`` smaller than the input makes it under-complete, larger over-complete (then only the
regularisers stop it from copying its input). Regularisation from the config: L1/L2 kernel
regularisers on every Dense layer, an L1 activity regulariser on the latent code, dropout.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import keras
from keras import layers

from anomaly_ae.config import DenseConfig
from anomaly_ae.models.base import Autoencoder

#: the defaults of every hyperparameter are the config's (declared once, in anomaly_ae.config)
_DEFAULTS = DenseConfig()


class Regularization(NamedTuple):
    """Penalties of the dense layers: ``l1`` / ``l2`` on the kernels, ``activity_l1`` on the latent code,
    ``dropout`` after each hidden layer."""

    l1: float = 0.0
    l2: float = 0.0
    activity_l1: float = 0.0
    dropout: float = 0.0


NO_REGULARIZATION = Regularization()


def dense_parts(
    image_shape: tuple[int, int, int],
    hidden: tuple[int, ...],
    latent_dim: int,
    activation: str,
    latent_activation: str,
    regularization: Regularization = NO_REGULARIZATION,
    use_bias: bool = True,
    output_activation: str = "sigmoid",
) -> tuple[keras.Model, keras.Model]:
    """Encoder ``(H, W, C) -> (latent_dim,)`` and decoder ``(latent_dim,) -> (H, W, C)``."""
    n_pixels = math.prod(image_shape)
    l1, l2, activity_l1, dropout = regularization

    def reg() -> Any:
        return keras.regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None

    inp = keras.Input(shape=image_shape, name="image")
    x = layers.Flatten(name="flatten")(inp)
    for i, units in enumerate(hidden):
        x = layers.Dense(units, activation=activation, kernel_regularizer=reg(), use_bias=use_bias,
                         name=f"enc_dense{i + 1}")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"enc_dropout{i + 1}")(x)
    z = layers.Dense(
        latent_dim,
        activation=latent_activation,
        kernel_regularizer=reg(),
        activity_regularizer=keras.regularizers.L1(activity_l1) if activity_l1 else None,
        use_bias=use_bias,
        name="latent",
    )(x)
    encoder = keras.Model(inp, z, name="encoder")

    z_in = keras.Input(shape=(latent_dim,), name="latent")
    y = z_in
    for i, units in reversed(list(enumerate(hidden))):
        y = layers.Dense(units, activation=activation, kernel_regularizer=reg(), use_bias=use_bias,
                         name=f"dec_dense{i + 1}")(y)
        if dropout:
            y = layers.Dropout(dropout, name=f"dec_dropout{i + 1}")(y)
    y = layers.Dense(n_pixels, activation=output_activation, kernel_regularizer=reg(), use_bias=use_bias,
                     dtype="float32", name="reconstruction")(y)
    out = layers.Reshape(image_shape, name="image_out")(y)
    decoder = keras.Model(z_in, out, name="decoder")
    return encoder, decoder


@keras.saving.register_keras_serializable(package="anomaly_ae")
class DenseAutoencoder(Autoencoder):
    """Dense autoencoder for ``(H, W, C)`` images in [0, 1] (sigmoid output)."""

    CONFIG_FIELDS = tuple(_DEFAULTS.hyperparameters())

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        hidden: tuple[int, ...] = _DEFAULTS.hidden,
        latent_dim: int = _DEFAULTS.latent_dim,
        activation: str = _DEFAULTS.activation,
        latent_activation: str = _DEFAULTS.latent_activation,
        l1: float = _DEFAULTS.l1,
        l2: float = _DEFAULTS.l2,
        activity_l1: float = _DEFAULTS.activity_l1,
        dropout: float = _DEFAULTS.dropout,
        loss: str = _DEFAULTS.loss,
        ssim_weight: float = _DEFAULTS.ssim_loss_weight,
        **kwargs: Any,
    ) -> None:
        self.image_shape = tuple(int(v) for v in input_shape)
        self.hidden = tuple(int(h) for h in hidden)
        self.latent_dim = int(latent_dim)
        self.activation = activation
        self.latent_activation = latent_activation
        self.l1, self.l2, self.activity_l1, self.dropout = float(l1), float(l2), float(activity_l1), float(dropout)
        encoder, decoder = dense_parts(
            self.image_shape, self.hidden, self.latent_dim, activation, latent_activation,
            Regularization(self.l1, self.l2, self.activity_l1, self.dropout),
        )
        super().__init__(encoder=encoder, decoder=decoder, loss=loss, ssim_weight=ssim_weight, **kwargs)

