"""Model registry: an explicit dict from config name to class (no discovery magic).

Every class takes ``input_shape`` plus exactly the fields of its config class
(:data:`anomaly_ae.config.MODEL_CONFIGS`, ``hyperparameters()``), whose defaults are its defaults,
and round-trips through ``get_config``.
"""

from __future__ import annotations

import keras

from anomaly_ae.config import FEATURE_MODELS, DetectorConfig
from anomaly_ae.models.base import Autoencoder, dtype_policy_scope
from anomaly_ae.models.contractive import ContractiveAutoencoder
from anomaly_ae.models.conv import ConvAutoencoder
from anomaly_ae.models.denoising import DenoisingAutoencoder
from anomaly_ae.models.dense import DenseAutoencoder
from anomaly_ae.models.feature import FeatureAutoencoder
from anomaly_ae.models.linear import LinearAutoencoder
from anomaly_ae.models.sparse import SparseAutoencoder
from anomaly_ae.models.vae import VariationalAutoencoder

ARCHITECTURES: dict[str, type[keras.Model]] = {
    "conv": ConvAutoencoder,
    "dense": DenseAutoencoder,
    "linear": LinearAutoencoder,
    "sparse": SparseAutoencoder,
    "contractive": ContractiveAutoencoder,
    "denoising": DenoisingAutoencoder,
    "vae": VariationalAutoencoder,
    "feature": FeatureAutoencoder,
}


def build_model(config: DetectorConfig, pretrained: bool = False) -> keras.Model:
    """Instantiate the configured architecture for the configured image size and channels.

    ``train.precision`` sets the layers' dtype policy (``mixed_bfloat16``: bf16 compute, float32
    weights); the reconstruction layer always computes in float32, and so do the losses. ``pretrained``:
    a ``feature`` model's backbone gets its published weights (training; a saved model has its own).
    """
    m = config.model
    cls = ARCHITECTURES[m.name]
    if m.name in FEATURE_MODELS:  # any image size; the backbone stays frozen
        return cls(input_shape=(None, None, config.data.channels), **m.hyperparameters(), loss=m.loss,
                   pretrained=pretrained, name=f"{m.name}_autoencoder")
    h, w = config.data.image_size if config.data.patch_size is None else (None, None)
    with dtype_policy_scope(config.train.precision):  # layers take the policy when they are built
        return cls(
            input_shape=(h, w, config.data.channels),
            **m.hyperparameters(),
            loss=m.loss,
            ssim_weight=m.ssim_loss_weight,
            noise=m.noise,
            noise_level=m.noise_level,
            noise_seed=config.train.seed,
            precision=config.train.precision,
            name=f"{m.name}_autoencoder",
        )


__all__ = [
    "ARCHITECTURES",
    "Autoencoder",
    "ContractiveAutoencoder",
    "ConvAutoencoder",
    "DenoisingAutoencoder",
    "DenseAutoencoder",
    "FeatureAutoencoder",
    "LinearAutoencoder",
    "SparseAutoencoder",
    "VariationalAutoencoder",
    "build_model",
]
