"""Denoising autoencoder: the convolutional body trained to reconstruct clean images from corrupted ones.

Corruption (``noise``: gaussian | salt_pepper | mask, strength ``noise_level``) is a
:class:`~anomaly_ae.models.layers.Corruption` layer that acts in training only, so scoring always sees the
real image. The same corruption is available to every model (``model.noise`` in the config), e.g. a
dense denoising autoencoder is ``name: dense`` with ``noise: gaussian``.
"""

from __future__ import annotations

from typing import Any

import keras

from anomaly_ae.models.conv import ConvAutoencoder


@keras.saving.register_keras_serializable(package="anomaly_ae")
class DenoisingAutoencoder(ConvAutoencoder):
    """:class:`ConvAutoencoder` that always corrupts its training inputs (default Gaussian, sigma 0.1)."""

    def __init__(self, *args: Any, noise: str | None = "gaussian", noise_level: float = 0.1, **kwargs: Any) -> None:
        if not noise or noise_level <= 0:
            raise ValueError("a denoising autoencoder needs a corruption: noise and noise_level > 0")
        super().__init__(*args, noise=noise, noise_level=noise_level, **kwargs)
