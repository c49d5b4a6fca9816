"""Keras callbacks that connect training to tracking and to the terminal."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import keras

from anomaly_ae.progress import Bar, Progress
from anomaly_ae.tracking import Tracker


class TrackingCallback(keras.callbacks.Callback):
    """Logs every epoch's logs (``loss``, ``val_loss``, ...) to a tracker, step = the epoch number as the
    console shows it (1-based)."""

    def __init__(self, tracker: Tracker) -> None:
        super().__init__()
        self.tracker = tracker

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs:
            self.tracker.log_metrics({k: float(v) for k, v in logs.items()}, step=epoch + 1)


class EpochProgress(keras.callbacks.Callback):
    """One bar per epoch (batches, images/s, ETA, the epoch's running loss), then one line of its losses.

    Keras passes the running mean of the loss over the epoch so far in each batch's ``logs``: the bar
    shows that value, never the previous epoch's.
    """

    def __init__(self, progress: Progress, epochs: int, batch_size: int, unit: str = "img") -> None:
        super().__init__()
        self.progress = progress
        self.epochs = epochs
        self.batch_size = batch_size
        self.unit = unit  # what a sample is: "img", or "patch" when training on patches
        self._bar: contextlib.ExitStack | None = None
        self._current: Bar | None = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        steps = self.params.get("steps") or 0
        self._bar = contextlib.ExitStack()
        self._current = self._bar.enter_context(self.progress.bar(
            f"epoch {epoch + 1}/{self.epochs}", total=steps * self.batch_size or None, unit=self.unit, loss=True))

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._current is not None:
            loss = (logs or {}).get("loss")
            self._current.advance(self.batch_size, loss=None if loss is None else float(loss))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        rate = self._current.rate() if self._current is not None else 0.0
        seconds = time.perf_counter() - self._current.start if self._current is not None else 0.0
        self._close()
        logs = logs or {}
        parts = [f"{k} {float(logs[k]):.5g}" for k in ("loss", "val_loss") if k in logs]
        self.progress.line(f"epoch {epoch + 1}/{self.epochs}  {'  '.join(parts)}  ({seconds:.1f} s, "
                           f"{rate:,.0f} {self.unit}/s)")

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar, self._current = None, None


class KLWarmup(keras.callbacks.Callback):
    """Sets a VAE's ``kl_scale`` to ``min(1, (epoch + 1) / epochs)`` at the start of every epoch."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = max(1, int(epochs))

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.model.kl_scale.assign(min(1.0, (epoch + 1) / self.epochs))
