"""Sparse autoencoder: sigmoid code units kept mostly inactive by a KL-divergence penalty.

    penalty = beta * sum_j KL(rho || rho_hat_j),   rho_hat_j = mean over the batch of unit j,
    KL(rho || q) = rho log(rho / q) + (1 - rho) log((1 - rho) / (1 - q))

(Ng's sparse autoencoder notes). An L1 activity penalty on the code is the alternative
(``sparsity: l1``). The penalty is added with ``add_loss`` in ``call`` during training, so it is part
of the loss on every backend (``compute_loss`` adds ``self.losses``).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from anomaly_ae.config import SparseConfig
from anomaly_ae.models.base import Autoencoder
from anomaly_ae.models.dense import dense_parts

#: the defaults of every hyperparameter are the config's (declared once, in anomaly_ae.config)
_DEFAULTS = SparseConfig()


def kl_sparsity(h: Any, rho: float, eps: float = 1e-7) -> Any:
    """``sum_j KL(rho || mean_batch(h[:, j]))`` for activations ``h`` ``(N, units)`` in (0, 1)."""
    q = ops.clip(ops.mean(h, axis=0), eps, 1.0 - eps)
    return ops.sum(rho * ops.log(rho / q) + (1.0 - rho) * ops.log((1.0 - rho) / (1.0 - q)))


@keras.saving.register_keras_serializable(package="anomaly_ae")
class SparseAutoencoder(Autoencoder):
    """Dense autoencoder with a sigmoid code and a KL (or L1) sparsity penalty on it."""

    CONFIG_FIELDS = tuple(_DEFAULTS.hyperparameters())

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        hidden: tuple[int, ...] = _DEFAULTS.hidden,
        latent_dim: int = _DEFAULTS.latent_dim,
        activation: str = _DEFAULTS.activation,
        sparsity: str = _DEFAULTS.sparsity,
        sparsity_target: float = _DEFAULTS.sparsity_target,
        sparsity_weight: float = _DEFAULTS.sparsity_weight,
        loss: str = _DEFAULTS.loss,
        ssim_weight: float = _DEFAULTS.ssim_loss_weight,
        **kwargs: Any,
    ) -> None:
        if sparsity not in ("kl", "l1"):
            raise ValueError("sparsity must be 'kl' or 'l1'")
        self.image_shape = tuple(int(v) for v in input_shape)
        self.hidden = tuple(int(h) for h in hidden)
        self.latent_dim = int(latent_dim)
        self.activation = activation
        self.sparsity = sparsity
        self.sparsity_target = float(sparsity_target)
        self.sparsity_weight = float(sparsity_weight)
        encoder, decoder = dense_parts(self.image_shape, self.hidden, self.latent_dim, activation, "sigmoid")
        super().__init__(encoder=encoder, decoder=decoder, loss=loss, ssim_weight=ssim_weight, **kwargs)

    def sparsity_penalty(self, h: Any) -> Any:
        """The weighted penalty for code activations ``h`` ``(N, latent_dim)``."""
        if self.sparsity == "kl":
            return self.sparsity_weight * kl_sparsity(h, self.sparsity_target)
        return self.sparsity_weight * ops.mean(ops.sum(ops.abs(h), axis=1))

    def call(self, x: Any, training: bool = False) -> Any:
        x = self.corrupt(x, training)
        h = self.encoder(x, training=training)
        if training:
            self.add_loss(self.sparsity_penalty(h))
        return self.decoder(h, training=training)
