"""Convolutional variational autoencoder (Kingma & Welling, 2014), backend-agnostic.

The encoder (VGG-style conv blocks, flatten) gives ``z_mean`` and ``z_log_var``; training samples
``z`` with the reparameterisation trick (:class:`~anomaly_ae.models.layers.Sampling`, a layer-owned
SeedGenerator) and adds ``beta * KL / n_pixels`` with

    KL = -1/2 * sum_j (1 + log_var_j - mean_j^2 - exp(log_var_j))     (per image, mean over the batch)

(times a warm-up factor rising linearly to 1 over ``kl_warmup_epochs``, see
:class:`~anomaly_ae.training.callbacks.KLWarmup`) — divided by the number of pixels because the
reconstruction loss is a per-pixel mean; ``beta = 1`` is then the usual ELBO with a Gaussian decoder
of fixed variance, up to a constant. Inference (scoring) reconstructs from ``z_mean``, so scores are
deterministic; :meth:`kl_divergence` gives the KL term per image for use as an extra image score.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import layers, ops

from anomaly_ae.config import VAEConfig
from anomaly_ae.models.base import Autoencoder
from anomaly_ae.models.conv import vgg_down, vgg_up
from anomaly_ae.models.layers import Sampling

#: the defaults of every hyperparameter are the config's (declared once, in anomaly_ae.config)
_DEFAULTS = VAEConfig()


def kl_divergence(z_mean: Any, z_log_var: Any) -> Any:
    """KL(N(mean, exp(log_var)) || N(0, I)) per sample, ``(N,)``."""
    return -0.5 * ops.sum(1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=1)


@keras.saving.register_keras_serializable(package="anomaly_ae")
class VariationalAutoencoder(Autoencoder):
    """Conv VAE for ``(H, W, C)`` images in [0, 1]; ``encoder(x) -> [z_mean, z_log_var]``."""

    CONFIG_FIELDS = (*_DEFAULTS.hyperparameters(), "sampling_seed")

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        widths: tuple[int, ...] = _DEFAULTS.widths,
        convs_per_block: int = _DEFAULTS.convs_per_block,
        activation: str = _DEFAULTS.activation,
        latent_dim: int = _DEFAULTS.latent_dim,
        beta: float = _DEFAULTS.beta,
        kl_warmup_epochs: int = _DEFAULTS.kl_warmup_epochs,
        sampling_seed: int = 1337,
        loss: str = _DEFAULTS.loss,
        ssim_weight: float = _DEFAULTS.ssim_loss_weight,
        **kwargs: Any,
    ) -> None:
        self.image_shape = tuple(int(v) for v in input_shape)
        self.widths = tuple(int(w) for w in widths)
        self.convs_per_block = int(convs_per_block)
        self.activation = activation
        self.latent_dim = int(latent_dim)
        self.beta = float(beta)
        self.kl_warmup_epochs = int(kl_warmup_epochs)
        self.sampling_seed = int(sampling_seed)
        encoder, decoder = self._build_parts()
        super().__init__(encoder=encoder, decoder=decoder, loss=loss, ssim_weight=ssim_weight, **kwargs)
        self.sampling = Sampling(self.sampling_seed, name="sampling")
        # KL warm-up: the KL weight is beta * kl_scale; KLWarmup raises kl_scale from 1/warmup to 1
        self.kl_scale = self.add_weight(shape=(), trainable=False, name="kl_scale",
                                        initializer="zeros" if self.kl_warmup_epochs else "ones")

    def _build_parts(self) -> tuple[keras.Model, keras.Model]:
        h, w, c = self.image_shape
        factor = 2 ** len(self.widths)
        if h % factor or w % factor:
            raise ValueError(f"input {h}x{w} is not divisible by {factor} (2 ** number of blocks)")
        inp = keras.Input(shape=self.image_shape, name="image")
        x = vgg_down(inp, self.widths, self.convs_per_block, self.activation, False)
        x = layers.Flatten(name="flatten")(x)
        z_mean = layers.Dense(self.latent_dim, name="z_mean")(x)
        z_log_var = layers.Dense(self.latent_dim, name="z_log_var")(x)
        encoder = keras.Model(inp, [z_mean, z_log_var], name="encoder")

        bh, bw = h // factor, w // factor
        z_in = keras.Input(shape=(self.latent_dim,), name="z")
        y = layers.Dense(bh * bw * self.widths[-1], name="expand")(z_in)
        y = layers.Reshape((bh, bw, self.widths[-1]), name="unflatten")(y)
        y = layers.Activation(self.activation, name="expand_act")(y)
        out = vgg_up(y, self.widths, self.convs_per_block, self.activation, False, c)
        return encoder, keras.Model(z_in, out, name="decoder")

    def call(self, x: Any, training: bool = False) -> Any:
        z_mean, z_log_var = self.encoder(self.corrupt(x, training), training=training)
        if not training:
            return self.decoder(z_mean, training=False)
        z = self.sampling([z_mean, z_log_var])
        n_pixels = math.prod(self.image_shape)
        self.add_loss(self.beta * self.kl_scale * ops.mean(kl_divergence(z_mean, z_log_var)) / n_pixels)
        return self.decoder(z, training=True)

    def kl_divergence(self, x: Any) -> Any:
        """KL term per image ``(N,)`` (an optional extra anomaly score: higher = further from the prior)."""
        z_mean, z_log_var = self.encoder(x, training=False)
        return kl_divergence(z_mean, z_log_var)

    def sample(self, n: int, seed: int = 0) -> Any:
        """``n`` images decoded from ``z ~ N(0, I)`` drawn with ``seed``."""
        z = keras.random.normal((n, self.latent_dim), seed=seed)
        return self.decoder(z, training=False)
