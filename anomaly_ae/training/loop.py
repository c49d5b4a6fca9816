"""The fit loop: build and compile the model, resume a checkpoint, train with early stopping and the NaN guard.

Seeding, the data split and the datasets are the caller's (:meth:`anomaly_ae.detector.Detector.fit`);
this module only turns datasets into a trained model and its loss history.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from anomaly_ae.config import DetectorConfig
from anomaly_ae.models import build_model
from anomaly_ae.training.callbacks import EpochTimer
from anomaly_ae.training.checkpoint import (
    NanGuard,
    TrainingCheckpoint,
    TrainingDiverged,
    latest_checkpoint,
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
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    checkpoint_state: dict[str, Any] | None = None,
    loss_scale: float = 1.0,
    timer: EpochTimer | None = None,
) -> TrainedModel:
    """Train the autoencoder of ``config`` on ``train_ds``, early-stopped on ``val_ds``.

    Args:
        adapt_data: float32 ``(N, h, w, C)`` images in [0, 1] (or a function returning them, called only
            when needed, so that the copy is not made for other models) for models with a fitted input
            normalization (``linear``); ignored by the others.
        checkpoint_dir: write a checkpoint there after every epoch (:mod:`anomaly_ae.training.checkpoint`).
        resume: continue from the newest checkpoint in ``checkpoint_dir``.
        checkpoint_state: extra JSON-ready state stored in every checkpoint.
        loss_scale: factor on each step's loss (:class:`~anomaly_ae.training.distribution.Replicas`).
        timer: the :class:`~anomaly_ae.training.callbacks.EpochTimer` to record the epochs with (one is
            made when not given); it runs before ``callbacks``, which may read it.

    Raises:
        TrainingDiverged: the loss became NaN/inf; the last good checkpoint is kept.
        FileNotFoundError: ``resume`` without a complete checkpoint.
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
    ckpt = latest_checkpoint(checkpoint_dir) if resume and checkpoint_dir is not None else None
    if resume and ckpt is None:
        raise FileNotFoundError(f"no complete checkpoint to resume from in {checkpoint_dir}")
    initial_epoch = 0
    if ckpt is not None:
        restore(model, ckpt, val_ds[0][0])
        initial_epoch = ckpt.epoch
        train_ds.set_epoch(initial_epoch)
    extra: list[keras.callbacks.Callback] = []
    if getattr(model, "kl_warmup_epochs", 0):
        from anomaly_ae.training.callbacks import KLWarmup

        extra.append(KLWarmup(model.kl_warmup_epochs))
    timer = timer if timer is not None else EpochTimer()
    guard = NanGuard()
    keeper = [TrainingCheckpoint(checkpoint_dir, early, ckpt, checkpoint_state)] if checkpoint_dir is not None else []
    start = time.perf_counter()
    history = model.fit(
        train_ds, validation_data=val_ds, epochs=config.train.epochs, initial_epoch=initial_epoch,
        callbacks=[timer, *extra, guard, early, *keeper, *callbacks], verbose=0,
    )
    fit_seconds = time.perf_counter() - start
    if guard.fault is not None:
        last = keeper[0].last_good if keeper else None
        where = (f"the last good checkpoint (epoch {last}) is kept in {checkpoint_dir}" if last
                 else "no checkpoint was written before it")
        raise TrainingDiverged(f"training diverged: {guard.fault}; {where}. Lower train.learning_rate "
                               "or check the images, then train again (or --resume).")
    merged = keeper[0].history if keeper else history.history
    return TrainedModel(model, {k: [float(v) for v in vals] for k, vals in merged.items()}, fit_seconds,
                        initial_epoch, list(timer.seconds))
