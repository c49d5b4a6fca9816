"""Keras callbacks that connect training to tracking and to the terminal."""

from __future__ import annotations

import contextlib
import os
import statistics
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


#: below this share of the usable cores (process CPU time / wall time / cores) an epoch is said to run
#: beside other work: alone, training keeps both cores of a 2-core machine 80-95% busy, beside one other
#: CPU-bound process about 50% (benchmarks/train_speed.py)
CONTENDED_SHARE = 0.4
#: epochs shorter than this never get the note: their share is mostly start-up and Python overhead, and a
#: slow-down of a short training costs the user nothing worth a line
NOTE_MIN_EPOCH_SECONDS = 5.0


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask; a container's cpuset, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def steady_rate(samples_per_epoch: int, epoch_seconds: list[float]) -> float | None:
    """Samples per second of a typical epoch after the first (which builds and compiles): the median.

    ``None`` before a second epoch has ended.
    """
    steady = epoch_seconds[1:]
    return samples_per_epoch / statistics.median(steady) if steady else None


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min 20 s``, ``1 h 05 min``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class EpochTimer(keras.callbacks.Callback):
    """Wall seconds and CPU share of every epoch (``seconds``, ``cpu_share``: process CPU time over wall
    time and :func:`usable_cores`), for the run's summary and the note about a busy machine."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self.cpu_share: list[float] = []
        self.cores = usable_cores()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        wall = time.perf_counter() - self._wall
        self.seconds.append(wall)
        self.cpu_share.append((time.process_time() - self._cpu) / max(wall * self.cores, 1e-9))


class EpochProgress(keras.callbacks.Callback):
    """One bar per epoch (batches, images/s, ETA, the epoch's running loss), then one line of its losses.

    Keras passes the running mean of the loss over the epoch so far in each batch's ``logs``: the bar
    shows that value, never the previous epoch's. From the second epoch on, the line adds the time left
    for the remaining epochs (the median epoch so far times the epochs left; early stopping may end
    sooner). When an epoch after the first, of at least :data:`NOTE_MIN_EPOCH_SECONDS`, got less than
    :data:`CONTENDED_SHARE` of the cores, one note (shown even with ``-q``) says that other processes
    hold them.
    """

    def __init__(self, progress: Progress, epochs: int, batch_size: int, unit: str = "img",
                 timer: EpochTimer | None = None, samples: int | None = None) -> None:
        super().__init__()
        self.progress = progress
        self.epochs = epochs
        self.batch_size = batch_size
        self.samples = samples  # training samples in an epoch (the last batch may be short); None: unknown
        self.unit = unit  # what a sample is: "img", or "patch" when training on patches
        self.timer = timer  # the run's EpochTimer (called before this callback), for the ETA and the note
        self._bar: contextlib.ExitStack | None = None
        self._current: Bar | None = None
        self._told_busy = False

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        total = self.samples or (self.params.get("steps") or 0) * self.batch_size
        self._bar = contextlib.ExitStack()
        self._current = self._bar.enter_context(self.progress.bar(
            f"epoch {epoch + 1}/{self.epochs}", total=total or None, unit=self.unit, loss=True))

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._current is not None:
            loss = (logs or {}).get("loss")
            step = self.batch_size  # the last batch holds what is left: the bar ends at the sample count
            if self.samples:
                step = max(0, min(step, self.samples - self._current.done))
            self._current.advance(step, loss=None if loss is None else float(loss))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        rate = self._current.rate() if self._current is not None else 0.0
        seconds = time.perf_counter() - self._current.start if self._current is not None else 0.0
        self._close()
        logs = logs or {}
        parts = [f"{k} {float(logs[k]):.5g}" for k in ("loss", "val_loss") if k in logs]
        times = self.timer.seconds if self.timer is not None else []
        left = self.epochs - epoch - 1
        eta = f", about {format_duration(statistics.median(times[1:]) * left)} left" if len(times) > 1 and left \
            else ""
        self.progress.line(f"epoch {epoch + 1}/{self.epochs}  {'  '.join(parts)}  ({seconds:.1f} s, "
                           f"{rate:,.0f} {self.unit}/s{eta})")
        self._note_busy(epoch)

    def _note_busy(self, epoch: int) -> None:
        """Once: the cores were busy with other work in this epoch (not the first: it compiles)."""
        if self.timer is None or self._told_busy or len(self.timer.cpu_share) < 2:
            return
        share = self.timer.cpu_share[-1]
        if share >= CONTENDED_SHARE or self.timer.seconds[-1] < NOTE_MIN_EPOCH_SECONDS:
            return
        self._told_busy = True
        try:
            load = f", load average {os.getloadavg()[0]:.1f}"
        except OSError:
            load = ""
        self.progress.warning(f"epoch {epoch + 1} got {share:.0%} of this machine's {self.timer.cores} CPU cores"
                              f"{load}: other processes are using them, so training runs slower than on an "
                              "idle machine (it goes on)", label="note:")

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
