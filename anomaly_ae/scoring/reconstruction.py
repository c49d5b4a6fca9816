"""Running a trained autoencoder on model-size images: fixed-size batches, border margin, padding to the
down-sampling factor, tiles, and the learned map's discriminator.

Plain functions of a Keras model and the scoring settings (the :class:`~anomaly_ae.detector.Detector` holds
both and calls them); the maps themselves are :mod:`anomaly_ae.scoring.maps`.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

from anomaly_ae.scoring.tiling import pad_margin, tiled_predict


def is_fully_convolutional(model: keras.Model) -> bool:
    """The model takes any image size (trained on patches): its ``image_shape`` has ``None`` sides."""
    return None in tuple(getattr(model, "image_shape", (0,)))


def has_learned_map(model: keras.Model) -> bool:
    """The model has a discriminator that maps (image, reconstruction) to a defect probability."""
    return bool(getattr(model, "has_learned_map", False))


def border_margin(model: keras.Model, margin: int) -> int:
    """Mirrored pixels around the image for the autoencoder: ``margin`` (``scoring.border_margin``) when it is
    fully convolutional (takes any size) and scored by its reconstruction error, else 0.

    A model with a learned map gets none (``benchmarks/border_margin.py``): mirroring around the U-Net's
    input raised its border response, and mirroring around the autoencoder's alone lowered the
    self-check's image AUROC at a fixed scoring (sample_data 0.954 -> 0.944, BSData 0.971 -> 0.970)
    and moved ``select: auto`` to another smoothing, where for an ``l2`` model it rose 0.78 -> 0.94.
    """
    return margin if is_fully_convolutional(model) and not has_learned_map(model) else 0


def pad_factor(model: keras.Model, size_factor: int) -> int:
    """Image sides are padded to a multiple of this before reconstruction (1: no padding).

    Fully convolutional (patch) models take any size divisible by their down-sampling, ``size_factor`` (2 **
    blocks); a learned map's U-Net takes any multiple of its depth.
    """
    return size_factor if is_fully_convolutional(model) or has_learned_map(model) else 1


def predict_batched(model: keras.Model, x: np.ndarray, batch_size: int) -> np.ndarray:
    """``model`` on ``x`` ``(N, ...)`` in batches of exactly ``batch_size`` (the last one zero-padded: one
    compiled graph, no retracing); float32 outputs stacked."""
    out: np.ndarray | None = None
    for i in range(0, len(x), batch_size):
        batch = x[i : i + batch_size]
        n = len(batch)
        if n < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - n, *x.shape[1:]), x.dtype)])
        y = keras.ops.convert_to_numpy(model.predict_on_batch(batch))[:n]
        if out is None:
            out = np.empty((len(x), *y.shape[1:]), dtype=np.float32)
        out[i : i + n] = y
    return out if out is not None else np.empty(x.shape, np.float32)


def uint8_input(model: keras.Model, channels: int) -> keras.Model:
    """``model`` behind a ``Rescaling(1 / 255)`` of uint8 inputs (never saved)."""
    shape = tuple(getattr(model, "image_shape", (None, None, channels)))
    return keras.Sequential([keras.Input(shape, dtype="uint8"), keras.layers.Rescaling(1 / 255), model])


def reconstruct(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, margin: int, factor: int,
                tile_size: int | None = None, tile_overlap: int = 0) -> np.ndarray:
    """Reconstructions ``(N, h, w, C)`` of model-size ``x``: ``margin`` mirrored pixels around each image and
    sides reflect-padded to a multiple of ``factor`` (:func:`~anomaly_ae.scoring.tiling.pad_margin`), in
    overlapping tiles when the padded image is larger than ``tile_size``; ``predict``: the batched model."""
    h, w = x.shape[1:3]
    xp = pad_margin(x, margin, factor)
    if tile_size is not None and max(xp.shape[1:3]) > tile_size:
        out = tiled_predict(predict, xp, tile_size, tile_overlap)
    else:
        out = predict(xp)
    return out[:, margin : margin + h, margin : margin + w]


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function without overflow, float32."""
    return (0.5 * (1.0 + np.tanh(0.5 * z.astype(np.float64)))).astype(np.float32)


def learned_maps(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, x_hat: np.ndarray,
                 factor: int) -> np.ndarray:
    """Defect probability ``(N, h, w)`` from a discriminator (``predict``: batched, logits ``(N, H, W, 1)``) on
    image and reconstruction side by side, padded to a multiple of ``factor``."""
    h, w = x.shape[1:3]
    joined = pad_margin(np.concatenate([x, x_hat], axis=-1), 0, factor)
    return sigmoid(predict(joined)[:, :h, :w, 0])
