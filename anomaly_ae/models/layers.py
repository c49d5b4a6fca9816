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


def _linear_upsample_axis(x: Any, factor: int, axis: int) -> Any:
    """Linear interpolation by ``factor`` along ``axis`` (1 or 2) of ``(N, H, W, C)``, half-pixel centres and
    clamped edges (as ``tf.image.resize`` / ``cv2.resize`` bilinear); works with unknown sides."""
    n = ops.shape(x)[axis]
    first = x[:, :1] if axis == 1 else x[:, :, :1]
    last = x[:, -1:] if axis == 1 else x[:, :, -1:]
    xp = ops.concatenate([first, x, last], axis=axis)
    prev, cur, nxt = ((xp[:, i : i + n] if axis == 1 else xp[:, :, i : i + n]) for i in range(3))
    parts = []
    for r in range(factor):
        d = (r + 0.5) / factor - 0.5  # source offset of output r within its input cell
        parts.append(cur * (1 - d) + nxt * d if d >= 0 else prev * (-d) + cur * (1 + d))
    y = ops.stack(parts, axis=axis + 1)  # (N, H, f, W, C) or (N, H, W, f, C)
    shape = ops.shape(x)
    if axis == 1:
        return ops.reshape(y, (-1, shape[1] * factor, shape[2], shape[3]))
    return ops.reshape(y, (-1, shape[1], shape[2] * factor, shape[3]))


@keras.saving.register_keras_serializable(package="anomaly_ae")
class BilinearUpsample(keras.layers.Layer):
    """Bilinear up-sampling of ``(N, H, W, C)`` by a whole ``factor``; unlike ``UpSampling2D`` it takes images
    whose sides are unknown until run time (a graph traced once for every size)."""

    def __init__(self, factor: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.factor = int(factor)

    def call(self, x: Any) -> Any:
        if self.factor == 1:
            return x
        return _linear_upsample_axis(_linear_upsample_axis(x, self.factor, 1), self.factor, 2)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        n, h, w, c = input_shape
        return (n, None if h is None else h * self.factor, None if w is None else w * self.factor, c)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="anomaly_ae")
class CropLike(keras.layers.Layer):
    """``[x, like]`` -> ``x`` ``(N, H', W', C)`` cut to the sides of ``like`` ``(N, H, W, ...)`` (``H' >= H``).

    A layer, so the sides are read when it runs: in a functional graph traced for unknown sides, a slice
    written in Python would be fixed to the symbolic (unknown) sides and cut nothing.
    """

    def call(self, inputs: list[Any]) -> Any:
        x, like = inputs
        shape = ops.shape(like)
        return x[:, : shape[1], : shape[2], :]

    def compute_output_shape(self, input_shapes: list[tuple]) -> tuple:
        x, like = input_shapes
        return (x[0], like[1], like[2], x[3])
