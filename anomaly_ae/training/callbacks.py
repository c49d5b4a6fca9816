"""Keras callbacks that connect training to tracking and to the terminal."""

from __future__ import annotations

from typing import Any

import keras

from anomaly_ae.tracking import Tracker


class TrackingCallback(keras.callbacks.Callback):
    """Logs every epoch's logs (``loss``, ``val_loss``, ...) to a tracker, step = epoch number (0-based)."""

    def __init__(self, tracker: Tracker) -> None:
        super().__init__()
        self.tracker = tracker

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs:
            self.tracker.log_metrics({k: float(v) for k, v in logs.items()}, step=epoch)


class RichProgress(keras.callbacks.Callback):
    """A rich progress bar over batches, with the last epoch's losses in its description."""

    def __init__(self, progress: Any, epochs: int) -> None:
        super().__init__()
        self.progress = progress
        self.epochs = epochs
        self.task: Any = None
        self.last = ""

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        steps = self.params.get("steps") or 1
        desc = f"epoch {epoch + 1}/{self.epochs}{self.last}"
        if self.task is None:
            self.task = self.progress.add_task(desc, total=steps)
        else:
            self.progress.reset(self.task, total=steps, description=desc)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.progress.update(self.task, completed=batch + 1)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        parts = [f"{k} {float(logs[k]):.5f}" for k in ("loss", "val_loss") if k in logs]
        self.last = "  " + "  ".join(parts) if parts else ""
        self.progress.update(self.task, description=f"epoch {epoch + 1}/{self.epochs}{self.last}")
        self.progress.console.print(f"epoch {epoch + 1}/{self.epochs}{self.last}")


class KLWarmup(keras.callbacks.Callback):
    """Sets a VAE's ``kl_scale`` to ``min(1, (epoch + 1) / epochs)`` at the start of every epoch."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = max(1, int(epochs))

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.model.kl_scale.assign(min(1.0, (epoch + 1) / self.epochs))
