"""Custom layers: training-time input corruption and the VAE's reparameterised sampling."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

CORRUPTIONS = ("gaussian", "salt_pepper", "mask", "erase")


@keras.saving.register_keras_serializable(package="anomaly_ae")
class Corruption(keras.layers.Layer):
    """Corrupts images in [0, 1] during training only; the identity at inference.

    ``gaussian``: add N(0, level^2) noise and clip to [0, 1]; ``salt_pepper``: a fraction ``level`` of
    the pixels set to 0 or 1 (half each); ``mask``: a fraction ``level`` of the pixels set to 0;
    ``erase``: one random rectangle per image, of about ``level`` of its area, set to 0 (random erasing).
    Randomness comes from a layer-owned ``keras.random.SeedGenerator`` (reproducible, jit-safe).
    """

    def __init__(self, kind: str = "gaussian", level: float = 0.1, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if kind not in CORRUPTIONS:
            raise ValueError(f"unknown corruption {kind!r}; choose one of {', '.join(CORRUPTIONS)}")
        self.kind = kind
        self.level = float(level)
        self.seed = int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def call(self, x: Any, training: bool = False) -> Any:
        if not training or self.level <= 0:
            return x
        if self.kind == "gaussian":
            noise = keras.random.normal(ops.shape(x), stddev=self.level, seed=self.seed_generator, dtype=x.dtype)
            return ops.clip(x + noise, 0.0, 1.0)
        if self.kind == "erase":
            return self._erase(x)
        u = keras.random.uniform(ops.shape(x), seed=self.seed_generator, dtype=x.dtype)
        if self.kind == "salt_pepper":
            x = ops.where(u < self.level / 2, ops.zeros_like(x), x)
            return ops.where(u > 1.0 - self.level / 2, ops.ones_like(x), x)
        return ops.where(u < self.level, ops.zeros_like(x), x)

    def _erase(self, x: Any) -> Any:
        shape = ops.shape(x)
        n, h, w = shape[0], shape[1], shape[2]
        side = self.level**0.5  # rectangle sides as fractions: area ~ level
        r = keras.random.uniform((n, 2), seed=self.seed_generator, dtype="float32") * (1.0 - side)
        top = ops.reshape(r[:, 0] * h, (-1, 1, 1, 1))
        left = ops.reshape(r[:, 1] * w, (-1, 1, 1, 1))
        rows = ops.reshape(ops.cast(ops.arange(h), "float32"), (1, -1, 1, 1))
        cols = ops.reshape(ops.cast(ops.arange(w), "float32"), (1, 1, -1, 1))
        inside = (rows >= top) & (rows < top + side * h) & (cols >= left) & (cols < left + side * w)
        return ops.where(inside, ops.zeros_like(x), x)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "kind": self.kind, "level": self.level, "seed": self.seed}


@keras.saving.register_keras_serializable(package="anomaly_ae")
class Sampling(keras.layers.Layer):
    """``z = mean + exp(log_var / 2) * eps``, ``eps ~ N(0, I)`` from a layer-owned SeedGenerator."""

    def __init__(self, seed: int = 1337, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seed = int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def call(self, inputs: Any) -> Any:
        z_mean, z_log_var = inputs
        eps = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator, dtype=z_mean.dtype)
        return z_mean + ops.exp(0.5 * z_log_var) * eps

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "seed": self.seed}
