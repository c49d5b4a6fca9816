"""Common base of every autoencoder: ``encoder`` -> ``decoder``, loss in ``compute_loss``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import keras
from keras import ops

from anomaly_ae.models.layers import Corruption
from anomaly_ae.models.losses import LOSSES, reconstruction_loss


@contextmanager
def dtype_policy_scope(policy: str) -> Iterator[None]:
    """Layers created inside take ``policy`` (e.g. ``mixed_bfloat16``); the global policy is restored after."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


class Autoencoder(keras.Model):
    """``x -> decoder(encoder(x))``; trained with ``fit(x, x)`` on images in [0, 1].

    Subclasses build ``encoder`` and ``decoder`` (functional sub-models) from plain constructor
    arguments and extend :meth:`get_config` with them, so ``.keras`` files load with ``safe_mode=True``.
    The reconstruction loss is chosen by name and computed in :meth:`compute_loss`, which every Keras
    backend calls (no per-backend ``train_step``).
    """

    def __init__(
        self,
        encoder: keras.Model,
        decoder: keras.Model,
        loss: str,
        ssim_weight: float,
        noise: str | None = None,
        noise_level: float = 0.0,
        noise_seed: int = 0,
        precision: str = "float32",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.precision = precision
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
        self.encoder = encoder
        self.decoder = decoder
        self.reconstruction_loss = loss
        self.ssim_weight = float(ssim_weight)
        self.noise = noise
        self.noise_level = float(noise_level)
        self.noise_seed = int(noise_seed)
        self.corruption = Corruption(noise, noise_level, noise_seed, name="corruption") if noise else None

    def corrupt(self, x: Any, training: bool = False) -> Any:
        """Training-time corruption of the input (denoising); the identity at inference."""
        return self.corruption(x, training=training) if self.corruption is not None else x

    def call(self, x: Any, training: bool = False) -> Any:
        """``(N, H, W, C)`` -> reconstruction ``(N, H, W, C)`` (of the corrupted input when training)."""
        return self.decoder(self.encoder(self.corrupt(x, training), training=training), training=training)

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Any:
        """:meth:`objective` times ``loss_scale``: 1, or 1 / replicas under ``tf.distribute``, which sums the
        replicas' gradients (Keras' own losses are scaled the same way); set by the training loop."""
        loss = self.objective(x, y, y_pred, training)
        return loss if self.loss_scale == 1.0 else ops.multiply(loss, ops.cast(self.loss_scale, loss.dtype))

    def objective(self, x: Any, y: Any, y_pred: Any, training: bool = True) -> Any:
        """Reconstruction loss between ``y`` (the clean image) and ``y_pred``, plus layer losses (a scalar:
        the mean over the batch).

        ``y`` may be ``{"image": clean, "mask": defect mask}`` (repair training on synthetic defects,
        :class:`~anomaly_ae.data.dataset.ImageDataset`): the model is asked to return the clean image.
        """
        target = x if y is None else (y["image"] if isinstance(y, dict) else y)
        loss = reconstruction_loss(self.reconstruction_loss, target, y_pred, self.ssim_weight)
        if self.losses:
            loss = loss + ops.sum(ops.stack([ops.cast(v, loss.dtype) for v in self.losses]))
        return loss

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Autoencoder:
        """Rebuild under the recorded dtype policy, so mixed-precision layers come back as they were."""
        with dtype_policy_scope(config.get("precision", "float32")):
            return cls(**config)

    #: constructor arguments that ``get_config`` records, read from attributes of the same name
    CONFIG_FIELDS: tuple[str, ...] = ()
    #: factor on the loss of one training step (the training loop's business: not saved, not in the config)
    loss_scale: float = 1.0

    def get_config(self) -> dict[str, Any]:
        """Plain constructor arguments: the base ones, ``input_shape`` and the class's ``CONFIG_FIELDS``."""
        config = self._base_config()
        if hasattr(self, "image_shape"):
            config["input_shape"] = list(self.image_shape)  # None dims for fully convolutional models
        for field in self.CONFIG_FIELDS:
            value = getattr(self, field)
            config[field] = list(value) if isinstance(value, tuple) else value
        return config

    def _base_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "loss": self.reconstruction_loss,
            "ssim_weight": self.ssim_weight,
            "noise": self.noise,
            "noise_level": self.noise_level,
            "noise_seed": self.noise_seed,
            "precision": self.precision,
        }
