"""Training of a ``feature`` model: extract the frozen backbone's features of the good images once, fit the
per-channel standardization, then train the small feature autoencoder on those arrays for seconds.

Nothing of the image autoencoders' loop applies (patches, repair training, checkpoints per epoch): the
expensive part is the one extraction, and a whole training costs less than resuming one would. With
``data.augment`` on, one seeded augmented copy of each training image is extracted beside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import keras
import numpy as np

from anomaly_ae.config import DetectorConfig
from anomaly_ae.models import build_model
from anomaly_ae.progress import Progress
from anomaly_ae.scoring.reconstruction import predict_batched
from anomaly_ae.training.callbacks import EpochProgress, EpochTimer
from anomaly_ae.training.checkpoint import NanGuard, TrainingDiverged
from anomaly_ae.training.loop import TrainedModel

#: feature vectors a per-position (1x1) autoencoder trains on at most (a seeded sample): 300 images at 1024 px
#: hold ~1.8 million, largely repeats of the same surface; more costs proportionally more seconds per epoch
MAX_TRAIN_VECTORS = 100_000
#: a 1x1 autoencoder's batch is ``train.batch_size`` times this many vectors (one image's worth of positions)
VECTORS_PER_IMAGE_BATCH = 256
#: augmented copies of each training image whose features are extracted too, when ``data.augment`` is on
AUGMENTED_COPIES = 1
#: images per extraction batch (the backbone's activations of a batch of 512 px images fit in ~1 GB)
EXTRACT_BATCH = 8


def extract(model: keras.Model, image_at: Callable[[int], np.ndarray], n: int, progress: Progress,
            what: str) -> np.ndarray:
    """Raw features ``(n, h, w, F)`` float32 of ``n`` model-size uint8 images (``image_at(i)`` -> ``(H, W, C)``)."""
    extractor = model.feature_extractor()
    out: np.ndarray | None = None
    with progress.bar(f"features of the {what}", total=n, unit="img") as bar:
        for start in range(0, n, EXTRACT_BATCH):
            batch = np.stack([image_at(i) for i in range(start, min(n, start + EXTRACT_BATCH))])
            f = predict_batched(extractor, batch.astype(np.float32) * np.float32(1 / 255), EXTRACT_BATCH)
            if out is None:
                out = np.empty((n, *f.shape[1:]), np.float32)
            out[start : start + len(f)] = f
            bar.advance(len(f))
    assert out is not None
    return out


def with_augmented_copies(config: DetectorConfig, train_at: Callable[[int], np.ndarray],
                          n_train: int) -> tuple[Callable[[int], np.ndarray], int]:
    """The training images and, with ``data.augment`` on, :data:`AUGMENTED_COPIES` seeded augmented copies of
    each after them (features are extracted once, so the augmentation is drawn once too): ``(image_at, n)``."""
    if not config.data.augment.enabled:
        return train_at, n_train
    from anomaly_ae.data.augment import build_augmentation  # imports albumentations: only when asked for

    augment = build_augmentation(config.data.augment, config.train.seed)

    def image_at(i: int) -> np.ndarray:
        image = train_at(i % n_train)
        return image if i < n_train else augment(image=image)["image"].reshape(image.shape)

    return image_at, n_train * (1 + AUGMENTED_COPIES)


def _vectors(features: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """At most ``limit`` positions of ``(N, h, w, F)`` features, seeded, as ``(M, 1, 1, F)`` (1x1 "images")."""
    flat = features.reshape(-1, 1, 1, features.shape[-1])
    if len(flat) <= limit:
        return flat
    return flat[np.sort(np.random.default_rng(seed).choice(len(flat), limit, replace=False))]


def channel_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation ``(F,)`` of features ``(N, h, w, F)`` (float64 sums)."""
    flat = features.reshape(-1, features.shape[-1])
    return flat.mean(axis=0, dtype=np.float64), flat.std(axis=0, dtype=np.float64)


def fit_feature_model(
    config: DetectorConfig,
    train_at: Callable[[int], np.ndarray],
    n_train: int,
    val_images: np.ndarray,
    progress: Progress,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainedModel:
    """Train ``config``'s feature model on ``n_train`` good images (``train_at(i)``: uint8 at model size),
    early-stopped on the held-out ``val_images`` ``(n_val, H, W, C)`` uint8.

    Raises:
        TrainingDiverged: the loss became NaN/inf.
    """
    t = config.train
    model = build_model(config, pretrained=True)
    start = time.perf_counter()
    image_at, n_images = with_augmented_copies(config, train_at, n_train)
    train_f = extract(model, image_at, n_images, progress, f"{n_images} training images"
                      + (" (augmented copies included)" if n_images > n_train else ""))
    val_f = extract(model, lambda i: val_images[i], len(val_images), progress, f"{len(val_images)} held-out images")
    mean, scale = model.standardize.set_statistics(*channel_statistics(train_f))
    for f in (train_f, val_f):  # in place: no second copy of the largest arrays of the run
        f -= mean
        f /= scale
    if model.kernel_size == 1:  # a per-position autoencoder: train on a seeded sample of feature vectors
        train_f, val_f = (_vectors(f, limit, t.seed + k) for k, (f, limit) in
                          enumerate(((train_f, MAX_TRAIN_VECTORS), (val_f, MAX_TRAIN_VECTORS // 4))))
    batch = t.batch_size * (VECTORS_PER_IMAGE_BATCH if model.kernel_size == 1 else 1)
    ae = model.feature_autoencoder()
    loss = "mse" if model.reconstruction_loss == "mse" else "mae"
    ae.compile(optimizer=keras.optimizers.Adam(t.learning_rate, global_clipnorm=t.clip_grad_norm), loss=loss)
    early = keras.callbacks.EarlyStopping(monitor="val_loss", patience=t.patience, restore_best_weights=True)
    timer, guard = EpochTimer(), NanGuard()
    unit = "vec" if model.kernel_size == 1 else "img"
    if progress.verbose:
        callbacks = [EpochProgress(progress, t.epochs, batch, unit, timer, len(train_f)), *callbacks]
    shape = "x".join(map(str, train_f.shape[1:]))
    what = (f"{len(train_f)} feature vectors ({train_f.shape[-1]} channels) of {n_train} images"
            if model.kernel_size == 1 else f"the features of {n_train} images ({shape})")
    progress.stage(f"training the feature autoencoder on {what}, up to {t.epochs} epochs")
    history = ae.fit(train_f, train_f, batch_size=batch, epochs=t.epochs, validation_data=(val_f, val_f),
                     shuffle=True, callbacks=[timer, guard, early, *callbacks], verbose=0)
    if guard.fault is not None:
        raise TrainingDiverged(f"training diverged: {guard.fault}. Lower train.learning_rate and train again.")
    seconds = time.perf_counter() - start
    return TrainedModel(model, {k: [float(v) for v in vals] for k, vals in history.history.items()}, seconds, 0,
                        list(timer.seconds))
