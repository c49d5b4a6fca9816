"""The fit loop: build and compile the model, resume a checkpoint, train with early stopping and the NaN guard.

Seeding, the data split and the datasets are the caller's (:meth:`anomaly_ae.detector.Detector.fit`);
this module only turns datasets into a trained model and its loss history.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np

from anomaly_ae.config import DetectorConfig
from anomaly_ae.models import build_model
from anomaly_ae.training.callbacks import EpochTimer
from anomaly_ae.training.checkpoint import (
    NanGuard,
    TrainingCheckpoint,
    TrainingDiverged,
    restore,
)


@dataclass
class TrainedModel:
    """What :func:`fit_model` returns."""

    model: keras.Model
    history: dict[str, list[float]]  # every epoch's logs, resumed epochs included
    fit_seconds: float
    initial_epoch: int  # epochs done before this call (0 unless resumed)
    epoch_seconds: list[float]  # wall seconds of each epoch this call ran


def learning_rate(base: float, milestones: Sequence[float], decay: float, epochs: int,
                  steps_per_epoch: int) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """``base``, or a step schedule multiplying it by ``decay`` after each fraction ``milestones`` of the epochs.

    The schedule counts optimizer steps (``steps_per_epoch`` per epoch), which a checkpoint stores, so a
    resumed training continues on the same rate.
    """
    bounds = sorted({max(1, round(f * epochs)) * steps_per_epoch for f in milestones})
    if not bounds:
        return base
    return keras.optimizers.schedules.PiecewiseConstantDecay(bounds, [base * decay**i for i in range(len(bounds) + 1)])


def fit_model(
    config: DetectorConfig,
    train_ds: keras.utils.PyDataset,
    val_ds: keras.utils.PyDataset,
    adapt_data: np.ndarray | Callable[[], np.ndarray],
    callbacks: Sequence[keras.callbacks.Callback] = (),
    loss_scale: float = 1.0,
    timer: EpochTimer | None = None,
) -> TrainedModel:
    """Train the autoencoder of ``config`` on ``train_ds``, early-stopped on ``val_ds``.

    Args:
        adapt_data: float32 ``(N, h, w, C)`` images in [0, 1] (or a function returning them, called only
            when needed, so that the copy is not made for other models) for models with a fitted input
            normalization (``linear``); ignored by the others.
        callbacks: Keras callbacks; a :class:`~anomaly_ae.training.checkpoint.TrainingCheckpoint` among them
            writes a checkpoint after every epoch (and, made with ``resume``, restores the newest first).
        loss_scale: factor on each step's loss (:class:`~anomaly_ae.training.distribution.Replicas`).
        timer: the :class:`~anomaly_ae.training.callbacks.EpochTimer` to record the epochs with (one is
            made when not given); it runs before ``callbacks``, which may read it.

    Raises:
        TrainingDiverged: the loss became NaN/inf; the last good checkpoint is kept.
    """
    model = build_model(config)
    model.loss_scale = loss_scale
    if hasattr(model, "adapt"):  # models with fitted input normalization (linear)
        model.adapt(adapt_data() if callable(adapt_data) else adapt_data)
    lr = learning_rate(config.train.learning_rate, config.train.lr_milestones, config.train.lr_decay,
                       config.train.epochs, len(train_ds))
    model.compile(optimizer=keras.optimizers.Adam(lr, global_clipnorm=config.train.clip_grad_norm))
    early = keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.train.patience,
                                          restore_best_weights=True)
    keeper = [c for c in callbacks if isinstance(c, TrainingCheckpoint)][:1]
    others = [c for c in callbacks if c not in keeper]
    initial_epoch = _resume(model, keeper, early, train_ds, val_ds)
    timer = timer if timer is not None else EpochTimer()
    guard = NanGuard()
    start = time.perf_counter()
    history = model.fit(
        train_ds, validation_data=val_ds, epochs=config.train.epochs, initial_epoch=initial_epoch,
        callbacks=[timer, *_model_callbacks(model), guard, early, *keeper, *others], verbose=0,
    )
    fit_seconds = time.perf_counter() - start
    if guard.fault is not None:
        last = keeper[0].last_good if keeper else None
        where = (f"the last good checkpoint (epoch {last}) is kept in {keeper[0].dir}" if last
                 else "no checkpoint was written before it")
        raise TrainingDiverged(f"training diverged: {guard.fault}; {where}. Lower train.learning_rate "
                               "or check the images, then train again (or resume=True).")
    merged = keeper[0].history if keeper else history.history
    return TrainedModel(model, {k: [float(v) for v in vals] for k, vals in merged.items()}, fit_seconds,
                        initial_epoch, list(timer.seconds))


def _resume(model: keras.Model, keeper: list[TrainingCheckpoint], early: keras.callbacks.EarlyStopping,
            train_ds: keras.utils.PyDataset, val_ds: keras.utils.PyDataset) -> int:
    """Hand the checkpoint callback (if any) the loop's early stopping and restore its checkpoint into the
    compiled ``model``; the epoch training starts at."""
    if not keeper:
        return 0
    keeper[0].early = early
    ckpt = keeper[0].resume_from
    if ckpt is None:
        return 0
    restore(model, ckpt, val_ds[0][0])
    train_ds.set_epoch(ckpt.epoch)
    return ckpt.epoch


def _model_callbacks(model: keras.Model) -> list[keras.callbacks.Callback]:
    """Callbacks a model asks for itself: the KL warm-up of a variational model."""
    if getattr(model, "kl_warmup_epochs", 0):
        from anomaly_ae.training.callbacks import KLWarmup

        return [KLWarmup(model.kl_warmup_epochs)]
    return []
