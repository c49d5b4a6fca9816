"""Training batches as a ``keras.utils.PyDataset`` (works on every Keras backend, no ``tf.data``)."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from anomaly_ae.config import AugmentConfig
from anomaly_ae.data.anomalies import AnomalySynthesizer, synthesize_batch
from anomaly_ae.data.augment import build_augmentation
from anomaly_ae.data.images import Preprocessing, read_image


class ImageDataset(keras.utils.PyDataset):
    """Yields ``(x, x)`` float32 batches ``(B, h, w, C)`` in [0, 1] for autoencoder training.

    With ``synthetic`` (repair training), a ``synthetic_probability`` of the inputs get a synthetic
    defect (:mod:`anomaly_ae.data.anomalies`) and the batch is ``(x_with_defects, clean)``, or
    ``(x_with_defects, {"image": clean, "mask": (B, h, w) float32})`` with ``masks`` (the learned map).
    The defects (and the augmentation) of batch ``i`` of epoch ``e`` are drawn from ``(seed, e, i)``:
    reproducible in any worker order, and fixed for validation (``shuffle`` off).

    With ``patch_size`` set, each item is a random ``patch_size`` square crop of a (resized) image,
    ``patches_per_image`` per image and epoch; the crops are drawn again every epoch when ``shuffle``
    is on, and stay fixed otherwise (validation).

    Args:
        source: uint8 ``(N, h, w, C)`` images already at model size (cached), or a list whose items are
            such images or file paths decoded on every access (the part of a folder beyond ``data.cache_mb``).
        preprocessing: resize/channels/scaling.
        batch_size: items per batch; the last batch may be smaller.
        augment: albumentations settings; ``None`` or all-off means no augmentation.
        shuffle: reshuffle (and redraw patches) at every epoch; epoch ``e``'s order is drawn from
            ``(seed, e)``, so a run resumed at epoch ``e`` (:meth:`set_epoch`) sees the same batches.
        seed: seeds the order, the patches and the augmentation.
        patch_size: crop side in pixels, or ``None`` for whole images.
        patches_per_image: crops per image and epoch.
    """

    def __init__(
        self,
        source: np.ndarray | Sequence[np.ndarray | Path],
        preprocessing: Preprocessing,
        batch_size: int,
        augment: AugmentConfig | None = None,
        shuffle: bool = False,
        seed: int = 0,
        patch_size: int | None = None,
        patches_per_image: int = 1,
        synthetic: AnomalySynthesizer | None = None,
        synthetic_probability: float = 0.5,
        masks: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.synthetic = synthetic
        self.synthetic_probability = synthetic_probability
        self.masks = masks
        self.source = source
        self.preprocessing = preprocessing
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.patch_size = patch_size
        self.patches_per_image = patches_per_image if patch_size else 1
        self.seed = seed
        self._epoch = 0
        self._augment = build_augmentation(augment, seed) if augment is not None and augment.enabled else None
        self._augment_lock = threading.Lock()  # the workers are threads; the pipeline's seed is shared state
        self._items = self._draw_items()

    def set_epoch(self, epoch: int) -> None:
        """Draw the order (and patches) of ``epoch`` (0-based), e.g. when training resumes there."""
        self._epoch = epoch
        self._items = self._draw_items()

    def _draw_items(self) -> np.ndarray:
        """``(M, 3)`` int array of (image index, top, left)."""
        self._rng = np.random.default_rng([self.seed, self._epoch if self.shuffle else 0])
        n = len(self.source)
        idx = np.repeat(np.arange(n), self.patches_per_image)
        items = np.zeros((len(idx), 3), np.int64)
        items[:, 0] = idx
        if self.patch_size:
            h, w = self.preprocessing.image_size
            items[:, 1] = self._rng.integers(0, h - self.patch_size + 1, len(idx))
            items[:, 2] = self._rng.integers(0, w - self.patch_size + 1, len(idx))
        if self.shuffle:
            self._rng.shuffle(items)
        return items

    @property
    def items(self) -> np.ndarray:
        """``(M, 3)`` int array of this epoch's (image index, top, left): one row per sample."""
        return self._items

    def __len__(self) -> int:
        return math.ceil(len(self._items) / self.batch_size)

    def _image(self, i: int) -> np.ndarray:
        item = self.source[i]
        if isinstance(item, np.ndarray):  # a row of an array, or an image kept decoded in a list
            return item
        return self.preprocessing.resize(read_image(item, self.preprocessing.channels))

    def __getitem__(self, index: int) -> tuple[np.ndarray, Any]:
        rows = self._items[index * self.batch_size : (index + 1) * self.batch_size]
        images = []
        for i, top, left in rows:
            im = self._image(int(i))
            if self.patch_size:
                im = im[top : top + self.patch_size, left : left + self.patch_size]
            images.append(im)
        if self._augment is not None:
            # reseeded per batch from (seed, epoch, index): the same augmentation in any worker order and
            # after a resume (the pipeline's own generator would follow the order batches are made in)
            with self._augment_lock:
                self._augment.set_random_seed(int(self._batch_rng(104729, index).integers(2**31)))
                images = [self._augment(image=im)["image"].reshape(im.shape) for im in images]
        if self.synthetic is not None:
            return self._repair_batch(np.stack(images), index)
        x = self.preprocessing(np.stack(images)) if not self.patch_size else _scale(np.stack(images))
        return x, x

    def _batch_rng(self, stream: int, index: int) -> np.random.Generator:
        """The generator of batch ``index`` of this epoch (fixed across epochs for validation) for one use."""
        return np.random.default_rng([self.seed, stream, self._epoch if self.shuffle else 0, index])

    def _repair_batch(self, clean: np.ndarray, index: int) -> tuple[np.ndarray, Any]:
        rng = self._batch_rng(7919, index)
        dirty, masks = synthesize_batch(clean, self.synthetic, rng, self.synthetic_probability)
        target = _scale(clean)
        y = {"image": target, "mask": masks.astype(np.float32)} if self.masks else target
        return _scale(dirty), y

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self.set_epoch(self._epoch + 1)


def _scale(images: np.ndarray) -> np.ndarray:
    """Already-cropped model-resolution images to float32 in [0, 1] (no resize)."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    return images.astype(np.float32)
