"""Train a detector's autoencoder from good images: size rule, hold-out split, data sets, replicas, the
loop with its callbacks and checkpoints.

:meth:`Detector.fit <anomaly_ae.detector.Detector.fit>` runs this, then the self-check and the
calibration on the held-out images this returns. Like Keras's ``Trainer`` under ``Model``, this sits below
the detector and never imports it: it returns plain values (:class:`TrainedAutoencoder`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from anomaly_ae.config import FEATURE_MODELS, DetectorConfig
from anomaly_ae.data.dataset import ImageDataset
from anomaly_ae.data.images import Preprocessing, folder_fingerprint, split_holdout
from anomaly_ae.data.loading import ImagesLike, TrainingSet, load_training_set, original_sizes
from anomaly_ae.progress import Progress
from anomaly_ae.scoring.position import reference_indices
from anomaly_ae.training.callbacks import EpochProgress, EpochTimer, steady_rate
from anomaly_ae.training.checkpoint import TrainingCheckpoint
from anomaly_ae.training.distribution import replicas
from anomaly_ae.training.features import fit_feature_model
from anomaly_ae.training.loop import TrainedModel, fit_model
from anomaly_ae.training.seeding import set_seed


@dataclass
class TrainedAutoencoder:
    """What training gives the detector.

    ``holdout``: uint8 ``(n_val, h, w, C)`` good images at model size never trained on (the self-check's and
    the thresholds'); ``reference``: uint8 ``(M, h, w, C)`` seeded training images whose maps give
    ``scoring.position_norm`` its reference (``None`` with fewer than 2); ``info``: the ``train_info_``
    entries known once training ends.
    """

    config: DetectorConfig  # the config trained, ``image_size`` concrete
    model: keras.Model
    preprocessing: Preprocessing
    history: dict[str, list[float]]
    holdout: np.ndarray
    reference: np.ndarray | None
    info: dict[str, Any]


def train_autoencoder(
    config: DetectorConfig,
    good: ImagesLike,
    progress: Progress,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainedAutoencoder:
    """Train ``config``'s autoencoder on the good images ``good`` (a folder, array or list); see
    :meth:`Detector.fit <anomaly_ae.detector.Detector.fit>` for the arguments."""
    progress.stage(f"reading the training images{f' from {good}' if isinstance(good, str | Path) else ''}")
    cfg = config
    if cfg.data.image_size == "auto":  # the size follows the images; the saved config is concrete
        cfg = cfg.with_image_size(original_sizes(good, cfg.data.channels))
        if (note := config.patch_note(cfg)) is not None:
            progress.warning(note, label="note:")
    set_seed(cfg.train.seed)
    pre = Preprocessing(cfg.data.image_size, cfg.data.channels, aspect=cfg.data.aspect)
    data = load_training_set(good, pre, cfg.data.cache_mb)
    for path, error in data.skipped:
        progress.warning(f"{path}: {error} (left out of training)", label="skipped")
    pre = pre.with_source_size(data.sizes)
    train_idx, val_idx = split_holdout(len(data.images), cfg.data.holdout_fraction, cfg.train.seed)
    train_src = data.take(train_idx)
    val_images = np.stack([data.at_model_size(i, pre) for i in val_idx])
    # good training images whose maps give scoring.position_norm its per-position reference (a seeded
    # subset: bounded time); the held-out images stay unseen by it, for the self-check and thresholds
    ref_idx = reference_indices(train_idx, cfg.train.seed)

    if cfg.model.name in FEATURE_MODELS:  # features extracted once, then seconds of training
        plain = [c for c in callbacks if not isinstance(c, TrainingCheckpoint)]  # seconds of training: none kept
        trained = fit_feature_model(cfg, lambda i: data.at_model_size(int(train_idx[i]), pre), len(train_idx),
                                    val_images, progress, plain)
        return TrainedAutoencoder(cfg, trained.model, pre, trained.history, val_images, _reference(data, ref_idx, pre),
                                  _info(cfg, good, data, train_idx, val_idx, trained, len(train_idx)))

    trained, samples = _fit_loop(cfg, pre, train_src, val_images, progress, callbacks)
    if cfg.train.distribution == "multi_worker":  # the rest runs in this process alone
        trained.model = _local_copy(trained.model, cfg, pre(val_images[:1]))
    info = _info(cfg, good, data, train_idx, val_idx, trained, samples)
    return TrainedAutoencoder(cfg, trained.model, pre, trained.history, val_images, _reference(data, ref_idx, pre),
                              info)


def _fit_loop(cfg: DetectorConfig, pre: Preprocessing, train_src: Any, val_images: np.ndarray, progress: Progress,
              callbacks: Sequence[keras.callbacks.Callback]) -> tuple[TrainedModel, int]:
    """The Keras loop on the training images (``train_src``) and the held-out ones, data-parallel over the
    replicas of ``train.distribution``; the trained model and how many samples an epoch holds."""
    patches = {"patch_size": cfg.data.patch_size, "patches_per_image": cfg.data.patches_per_image,
               "workers": cfg.train.workers}
    patches.update(_repair_options(cfg))
    with replicas(cfg.train.distribution) as shard:  # data-parallel: the global batch grows with the replicas
        bs = cfg.train.batch_size * shard.n
        train_ds = ImageDataset(train_src, pre, bs, augment=cfg.data.augment, shuffle=True,
                                seed=cfg.train.seed, **patches)
        val_ds = ImageDataset(val_images, pre, bs, seed=cfg.train.seed + 1, **patches)

        def adapt() -> np.ndarray:  # only models with a fitted input normalization (linear) ask for it
            return pre(train_src) if isinstance(train_src, np.ndarray) else val_images.astype(np.float32) / 255

        size = "x".join(map(str, cfg.data.image_size))
        on = f", {shard.n} devices" if shard.n > 1 else ""
        progress.stage(f"training the {cfg.model.name} autoencoder at {size}x{cfg.data.channels} on "
                       f"{len(train_src)} images ({len(val_images)} held out){on}, up to {cfg.train.epochs} epochs")
        timer = EpochTimer()
        if progress.verbose:
            unit = "patch" if cfg.data.patch_size else "img"
            callbacks = [EpochProgress(progress, cfg.train.epochs, bs, unit, timer, len(train_ds.items)),
                         *callbacks]
        return fit_model(cfg, train_ds, val_ds, adapt, callbacks, shard.loss_scale, timer), len(train_ds.items)


def _reference(data: TrainingSet, ref_idx: np.ndarray, pre: Preprocessing) -> np.ndarray | None:
    """uint8 ``(M, h, w, C)`` training images of the position reference (``None`` with fewer than 2)."""
    return np.stack([data.at_model_size(i, pre) for i in ref_idx]) if len(ref_idx) >= 2 else None


def _info(cfg: DetectorConfig, good: ImagesLike, data: TrainingSet, train_idx: np.ndarray, val_idx: np.ndarray,
          trained: TrainedModel, samples: int) -> dict[str, Any]:
    """The ``train_info_`` entries known once training ends (``samples``: training samples in an epoch)."""
    val_loss = trained.history.get("val_loss", [float("nan")])
    return {
        "n_train": int(len(train_idx)),
        "n_val": int(len(val_idx)),
        "epochs_run": len(val_loss),
        "best_epoch": int(np.nanargmin(val_loss)) + 1,
        "best_val_loss": float(np.nanmin(val_loss)),
        "fit_seconds": round(trained.fit_seconds, 2),
        # what one training sample is and how many a steady epoch (not the first) trained per second
        "sample_unit": "patch" if cfg.data.patch_size else "image",
        "samples_per_second": _rounded(steady_rate(samples, trained.epoch_seconds)),
        "resumed_at_epoch": trained.initial_epoch or None,
        "skipped": [{"path": str(p), "error": e} for p, e in data.skipped],
        **_source_record(good),
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _source_record(good: ImagesLike) -> dict[str, str]:
    """Where the training images came from, when a folder: its absolute path and the
    :func:`~anomaly_ae.data.images.folder_fingerprint` of its files (``calibrate`` warns when given them)."""
    if not isinstance(good, str | Path) or not Path(good).is_dir():
        return {}
    return {"good_dir": str(Path(good).resolve()), "good_dir_sha256": folder_fingerprint(good)}


def _repair_options(cfg: DetectorConfig) -> dict[str, Any]:
    """``ImageDataset`` arguments of repair training (synthetic defects in the inputs), empty when off."""
    syn = cfg.train.synthetic_anomalies
    if syn is None:
        return {}
    from anomaly_ae.data.anomalies import AnomalySynthesizer, load_textures  # only repair training needs them

    textures = load_textures(cfg.data.anomaly_source_dir, cfg.data.channels) if cfg.data.anomaly_source_dir else []
    if cfg.data.anomaly_source_dir and not textures:
        raise ValueError(f"data.anomaly_source_dir {cfg.data.anomaly_source_dir}: no readable images")
    synth = AnomalySynthesizer(dict(syn.shapes), dict(syn.sources), syn.blend, syn.min_change, textures,
                               seed=cfg.train.seed)
    masks = getattr(cfg.model, "discriminator", None) is not None
    return {"synthetic": synth, "synthetic_probability": syn.probability, "masks": masks}


def _local_copy(model: keras.Model, cfg: DetectorConfig, sample: np.ndarray) -> keras.Model:
    """A model of this process only, with the weights of ``model`` trained across processes (each process
    holds a full replica of every weight, so its own copy is read; no collective is needed)."""
    from anomaly_ae.models import build_model

    weights = [np.asarray(v.value.addressable_data(0)) for v in model.weights]
    local = build_model(cfg)
    local(sample)
    local.set_weights(weights)
    return local
