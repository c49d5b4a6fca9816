"""Per-epoch training checkpoints (resume after a crash) and the guard against NaN/inf losses.

``CHECKPOINT_DIR/`` holds, from the start of training::

    config.yaml    the resolved config (what ``train --resume`` trains with)
    run.json       the image folder and MLflow run id (so a run interrupted before its first
                   epoch ended can be restarted by ``train --resume`` alone)

and ``CHECKPOINT_DIR/epoch-NNNN/``, after epoch NNNN::

    model.weights.h5  model weights and optimizer state (Adam moments, iteration count, seed generators)
    best.npz       early stopping's best weights so far (``restore_best_weights``)
    state.json     epoch, loss history, early-stopping counters, extra state

An epoch folder is written under a hidden temporary name and renamed when complete, so a crash
never leaves half a checkpoint. Only the newest complete folder is kept. Data order needs no
saved state: each epoch's shuffle is drawn from ``(seed, epoch)`` (see
:class:`~anomaly_ae.data.dataset.ImageDataset`), so a resumed run sees the batches an uninterrupted
one would have seen.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from anomaly_ae.io.files import make_temp_dir, write_bytes_atomic, write_json_atomic
from anomaly_ae.io.folders import OutputConflict, read_manifest, record_outputs
from anomaly_ae.io.names import (
    CHECKPOINT_BEST,
    CHECKPOINT_EPOCH,
    CHECKPOINT_EPOCH_GLOB,
    CHECKPOINT_RUN,
    CHECKPOINT_STATE,
    CHECKPOINT_WEIGHTS,
    CONFIG_FILE,
)

STATE_FILE = CHECKPOINT_STATE  # the names this module's readers knew them by
RUN_FILE = CHECKPOINT_RUN


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names where and the last good checkpoint."""


@dataclass
class Checkpoint:
    """A complete checkpoint folder and its ``state.json``."""

    path: Path
    state: dict[str, Any]

    @property
    def epoch(self) -> int:
        """Epochs completed."""
        return int(self.state["epoch"])


def read_checkpoint(folder: Path) -> Checkpoint | None:
    """``folder`` as a complete checkpoint of anomaly-ae's (its ``state.json`` read), else ``None``."""
    try:
        state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
        int(state["epoch"]), state["history"], state["early_stopping"]  # noqa: B018 - a complete state
        return Checkpoint(folder, state)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def latest_checkpoint(checkpoint_dir: Path) -> Checkpoint | None:
    """The newest ``epoch-*`` folder that has its ``state.json``, or ``None``."""
    if not checkpoint_dir.is_dir():
        return None
    for folder in sorted(checkpoint_dir.glob(CHECKPOINT_EPOCH_GLOB), reverse=True):
        ckpt = read_checkpoint(folder)
        if ckpt is not None:
            return ckpt
    return None


def start_checkpoints(checkpoint_dir: Path, config: Any, state: dict[str, Any]) -> None:
    """Begin a fresh training's checkpoint folder: the config and ``state`` (image folder, run id).

    An earlier checkpoint folder of anomaly-ae's there (an interrupted training being started over)
    is removed; one it did not write raises :class:`~anomaly_ae.io.folders.OutputConflict`. The folder is
    recorded in the model directory's manifest as anomaly-ae's own.
    """
    if os.path.lexists(checkpoint_dir):
        if checkpoint_dir.name not in read_manifest(checkpoint_dir.parent).get("model", []):
            raise OutputConflict(f"{checkpoint_dir} was not written by anomaly-ae; it is never replaced: move it away "
                                 "or choose another out_dir")
        shutil.rmtree(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True)
    record_outputs(checkpoint_dir.parent, "model", [checkpoint_dir.name])
    write_bytes_atomic(checkpoint_dir / CONFIG_FILE, config.yaml_text().encode("utf-8"))
    write_json_atomic(checkpoint_dir / RUN_FILE, state)


def read_run_state(checkpoint_dir: Path) -> dict[str, Any]:
    """What :func:`start_checkpoints` recorded (``{}`` when absent or unreadable)."""
    try:
        state = json.loads((checkpoint_dir / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


class NanGuard(keras.callbacks.TerminateOnNaN):
    """Keras' ``TerminateOnNaN`` that also watches the validation loss and records where it stopped.

    ``fault`` names the first non-finite loss (``None`` while training is sound), so the caller can
    say where training diverged and which checkpoint is the last good one; the stop is graceful
    (``stop_training``), so the other callbacks end cleanly and the last good checkpoint stays.
    """

    def __init__(self) -> None:
        super().__init__(raise_error=False)
        self.fault: str | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch

    def on_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self._stop(f"loss is {float(loss)} at epoch {self._epoch + 1}, batch {batch + 1}")

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        val = (logs or {}).get("val_loss")
        if val is not None and not math.isfinite(float(val)):
            self._stop(f"validation loss is {float(val)} at epoch {epoch + 1}")

    def _stop(self, fault: str) -> None:
        if self.fault is None:  # the first fault is the one to report
            self.fault = fault
        self.model.stop_training = True


class TrainingCheckpoint(keras.callbacks.Callback):
    """Writes a checkpoint after every epoch whose losses are finite; with ``resume``, training continues from
    the newest one (weights, optimizer, data order, early stopping and the loss history).

    Checkpointing arrives at :meth:`Detector.fit <anomaly_ae.detector.Detector.fit>` as this callback::

        Detector(config).fit(good, callbacks=[TrainingCheckpoint("runs/a/checkpoint", resume=True)])

    The training loop (:func:`~anomaly_ae.training.loop.fit_model`) finds it among the callbacks, hands it
    its ``EarlyStopping`` and restores the model from :attr:`resume_from`.

    Not ``keras.callbacks.BackupAndRestore``: that one keeps neither early stopping's counters and best
    weights nor the loss history, writes its files in place (a crash mid-write leaves a broken backup),
    deletes the backup when ``fit`` returns and resumes only inside a later ``fit`` of the same process
    setup; a resumed ``train --resume`` needs all of those.

    The loop runs it right after the ``EarlyStopping`` callback: its ``on_train_begin`` runs after early
    stopping has reset itself, and puts back the counters and best weights of the resumed run.

    Args:
        checkpoint_dir: where the ``epoch-NNNN`` checkpoints go (only complete ones of ours are ever removed).
        resume: continue from the newest complete checkpoint there.
        extra_state: JSON-ready entries stored in every checkpoint (e.g. the image folder, the MLflow run id).

    Raises:
        FileNotFoundError: ``resume`` without a complete checkpoint.
    """

    def __init__(self, checkpoint_dir: str | Path, resume: bool = False,
                 extra_state: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.dir = Path(checkpoint_dir)
        resume_from = latest_checkpoint(self.dir) if resume else None
        if resume and resume_from is None:
            raise FileNotFoundError(f"no complete checkpoint to resume from in {self.dir}")
        self.early: keras.callbacks.EarlyStopping | None = None  # the loop's, set by fit_model
        self.resume_from = resume_from
        self.extra_state = extra_state or {}
        self.history: dict[str, list[float]] = dict(resume_from.state["history"]) if resume_from else {}
        self.last_good: int | None = resume_from.epoch if resume_from else None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.early is None:
            raise RuntimeError("TrainingCheckpoint runs inside fit_model, which hands it its EarlyStopping")
        if self.resume_from is None:
            return
        es = self.resume_from.state["early_stopping"]
        self.early.wait = int(es["wait"])
        self.early.best = float(es["best"]) if es["best"] is not None else self.early.best
        self.early.best_epoch = int(es["best_epoch"])
        best = self.resume_from.path / CHECKPOINT_BEST
        if best.is_file():
            with np.load(best, allow_pickle=False) as f:
                self.early.best_weights = [f[f"w{i}"] for i in range(len(f.files))]

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        for k, v in logs.items():
            self.history.setdefault(k, []).append(float(v))
        if not all(math.isfinite(float(v)) for v in logs.values()):
            return  # never overwrite the last good checkpoint with a diverged one
        folder = self.dir / CHECKPOINT_EPOCH.format(epoch=epoch + 1)
        tmp = make_temp_dir(self.dir, f".{folder.name}.tmp-")  # renamed when complete: never half a checkpoint
        try:
            self._write(tmp, epoch)
            if read_checkpoint(folder) is not None:  # our own, from an earlier run; anything else stays
                shutil.rmtree(folder, ignore_errors=True)
            os.rename(tmp, folder)  # fails on a non-empty folder that is not ours: nothing of it is lost
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for old in self.dir.glob(CHECKPOINT_EPOCH_GLOB):
            if old != folder and read_checkpoint(old) is not None:  # only complete checkpoints of ours
                shutil.rmtree(old, ignore_errors=True)
        self.last_good = epoch + 1

    def _write(self, folder: Path, epoch: int) -> None:
        self.model.save_weights(folder / CHECKPOINT_WEIGHTS)
        if self.early.best_weights is not None:
            best_weights = {f"w{i}": np.asarray(w) for i, w in enumerate(self.early.best_weights)}
            np.savez(folder / CHECKPOINT_BEST, **best_weights)
        best = self.early.best
        state = {
            "epoch": epoch + 1,
            "history": self.history,
            "early_stopping": {
                "wait": int(self.early.wait),
                "best": float(best) if best is not None and math.isfinite(float(best)) else None,
                "best_epoch": int(self.early.best_epoch),
            },
            **self.extra_state,
        }
        write_json_atomic(folder / STATE_FILE, state)


def restore(model: keras.Model, ckpt: Checkpoint, sample: np.ndarray) -> None:
    """Load a checkpoint's weights and optimizer state into a freshly built, compiled ``model``."""
    model(sample[:1])  # build the model's variables
    model.optimizer.build(model.trainable_variables)
    model.load_weights(ckpt.path / CHECKPOINT_WEIGHTS)
