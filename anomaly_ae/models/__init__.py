"""Model registry: an explicit dict from config name to class (no discovery magic)."""

from __future__ import annotations

import keras

from anomaly_ae.config import DetectorConfig
from anomaly_ae.models.base import Autoencoder
from anomaly_ae.models.conv import ConvAutoencoder

ARCHITECTURES: dict[str, type[Autoencoder]] = {"conv": ConvAutoencoder}


def build_model(config: DetectorConfig) -> keras.Model:
    """Instantiate the configured architecture for the configured image size and channels."""
    m = config.model
    cls = ARCHITECTURES[m.name]
    h, w = config.data.image_size if config.data.patch_size is None else (None, None)
    return cls(
        input_shape=(h, w, config.data.channels),
        widths=m.widths,
        convs_per_block=m.convs_per_block,
        activation=m.activation,
        batch_norm=m.batch_norm,
        bottleneck=m.bottleneck,
        latent_channels=m.latent_channels,
        latent_dim=m.latent_dim,
        loss=m.loss,
        ssim_weight=m.ssim_weight,
        name=f"{m.name}_autoencoder",
    )


__all__ = ["ARCHITECTURES", "Autoencoder", "ConvAutoencoder", "build_model"]
