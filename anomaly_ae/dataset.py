"""Training batches as a ``keras.utils.PyDataset`` (works on every Keras backend, no ``tf.data``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from anomaly_ae.augment import build_augmentation
from anomaly_ae.config import AugmentConfig
from anomaly_ae.data import Preprocessing, read_image


class ImageDataset(keras.utils.PyDataset):
    """Yields ``(x, x)`` float32 batches ``(B, h, w, C)`` in [0, 1] for autoencoder training.

    Args:
        source: uint8 ``(N, h, w, C)`` images already at model size (cached), or file paths that are
            decoded on every access (for folders too large for RAM).
        preprocessing: resize/channels/scaling.
        batch_size: images per batch; the last batch may be smaller.
        augment: albumentations settings; ``None`` or all-off means no augmentation.
        shuffle: reshuffle the order at every epoch (seeded).
        seed: seeds the order and the augmentation.
    """

    def __init__(
        self,
        source: np.ndarray | Sequence[Path],
        preprocessing: Preprocessing,
        batch_size: int,
        augment: AugmentConfig | None = None,
        shuffle: bool = False,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.preprocessing = preprocessing
        self.batch_size = batch_size
        self.shuffle = shuffle
        self._rng = np.random.default_rng(seed)
        self._order = np.arange(len(source))
        self._augment = build_augmentation(augment, seed) if augment is not None and augment.enabled else None
        if shuffle:
            self._rng.shuffle(self._order)

    def __len__(self) -> int:
        return math.ceil(len(self.source) / self.batch_size)

    def _image(self, i: int) -> np.ndarray:
        if isinstance(self.source, np.ndarray):
            return self.source[i]
        return self.preprocessing.resize(read_image(self.source[i], self.preprocessing.channels))

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        idx = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        images = [self._image(int(i)) for i in idx]
        if self._augment is not None:
            images = [self._augment(image=im)["image"].reshape(im.shape) for im in images]
        x = self.preprocessing(np.stack(images))
        return x, x

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self._rng.shuffle(self._order)
