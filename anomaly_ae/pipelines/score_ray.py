"""``score_folder(..., engine="ray")``: the same per-batch scoring core, run by Ray Data actors.

::

    score_folder("runs/plate", "/shared/line3", "/shared/scores",
                 ScoreOptions(engine="ray", address="10.0.0.5:6379", actors=8, gpus_per_actor=1))

The driver lists the folder, keeps what an earlier run scored (:mod:`anomaly_ae.pipelines.score_resume`) and
hands the rest to Ray Data as a list of file paths. ``map_batches`` runs :class:`ScoringActor`: each
actor loads the detector once and calls :func:`~anomaly_ae.pipelines.score_batch.score_batch` on a batch, which
writes the heatmaps / masks / maps under ``OUT_DIR`` and returns the rows. The driver hands the rows to
the same :class:`~anomaly_ae.pipelines.score_rows.RowSink` as the local engine, in input order (Ray Data's
``preserve_order``) as they arrive, so an interrupted run resumes exactly as a single-process one does.
Input files, the model directory and ``OUT_DIR`` must be on storage every node sees (NFS, a shared volume)
under the same paths. An actor that dies is restarted
by Ray and its batch is run again (the output writes are atomic and idempotent).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from anomaly_ae.data.uris import UriError, UriFile, UriInput, is_uri
from anomaly_ae.io.remote import connect_timeout
from anomaly_ae.pipelines.options import ScoreOptions
from anomaly_ae.pipelines.score_batch import score_batch
from anomaly_ae.pipelines.score_rows import RowSink

#: the one line shown when Ray is not installed
RAY_MISSING = "the Ray engine needs Ray: pip install 'anomaly-ae[ray]'"


class RayMissing(ImportError):
    """Ray is not installed (the message names the extra to install)."""


def require_ray() -> Any:
    """The ``ray`` module, with Ray Data.

    Raises:
        RayMissing: one line naming the extra.
    """
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayMissing(RAY_MISSING) from None
    return ray


def check_ray_address(address: str, timeout: float | None = None) -> None:
    """Refuse, within ``timeout`` seconds, an ``--address`` where nothing listens (``ray.init`` would wait for
    minutes, holding the output folder). ``HOST:PORT`` is Ray's GCS (port 6379 by default), ``ray://HOST[:PORT]``
    its client server (10001); ``auto`` and ``local`` are left to Ray.

    Raises:
        RayUnreachable: one line with the address and the wait (``ANOMALY_AE_CONNECT_TIMEOUT`` sets it).
    """
    import socket

    if address in ("auto", "local"):
        return
    client = address.startswith("ray://")
    rest = address[len("ray://"):] if client else address
    host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
    try:
        port_number = int(port) if port else (10001 if client else 6379)
    except ValueError:
        raise RayUnreachable(f"address={address}: not HOST:PORT") from None
    wait = connect_timeout() if timeout is None else timeout
    try:
        with socket.create_connection((host or "127.0.0.1", port_number), timeout=wait):
            pass
    except OSError as err:
        raise RayUnreachable(f"address={address}: no Ray cluster answers there ({err.strerror or err}; "
                             f"waited up to {wait:g} s); start it, or leave address unset to start a local "
                             "Ray") from None


class RayUnreachable(UriError):
    """``--address`` names a place where no Ray cluster listens (a remote location that cannot be reached, as
    an unreachable input URI is)."""


class ScoringActor:
    """A Ray Data actor: loads the detector once, then scores batches of ``{"path": [...]}``."""

    def __init__(self, run_dir: str, input_dir: str, out: str, options: ScoreOptions) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        from anomaly_ae.backend import import_tensorflow_quietly

        import_tensorflow_quietly()
        import cv2

        from anomaly_ae.detector import Detector

        self.det = Detector.load(run_dir)
        cv2.setNumThreads(1)  # this process only scores: one image per thread (see batch.one_opencv_thread)
        # a URI input is opened once per actor (credentials, connection), its files named by relative path
        self.input_dir = UriInput.open(input_dir) if is_uri(input_dir) else Path(input_dir)
        self.out = Path(out)
        self.options = options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if isinstance(self.input_dir, UriInput):
            paths: list[Path | UriFile] = [self.input_dir.file(str(p), int(s), int(m)) for p, s, m in
                                           zip(batch["path"], batch["size"], batch["mtime"], strict=True)]
        else:
            paths = [Path(p) for p in batch["path"]]
        rows = score_batch(self.det, paths, self.input_dir, self.out, self.options)
        return {
            "rel": np.array([r.rel for r in rows], dtype=object),
            "score": np.array([np.nan if r.score is None else r.score for r in rows], np.float64),
            "error": np.array([r.error or "" for r in rows], dtype=object),
            "size": np.array([-1 if r.stat is None else r.stat[0] for r in rows], np.int64),
            "mtime": np.array([-1 if r.stat is None else r.stat[1] for r in rows], np.int64),
        }


def score_todo_ray(run_dir: Path, todo: Sequence[Path | UriFile], input_dir: Path | UriInput, out: Path,
                   options: ScoreOptions, sink: RowSink, quiet: bool = False) -> None:
    """Score ``todo`` on Ray (``options.address``, ``options.actors``, ``options.batch_size`` images a batch: the
    caller sets it) and add its rows to ``sink`` in input order. ``quiet``: Ray's own warnings off too."""
    ray = require_ray()
    logs = _QuietRayLogs(quiet)
    started = not ray.is_initialized()
    if started:
        # "local": a new instance even when another Ray was started on this machine (a stale one included)
        init = {"address": options.address} if options.address else {"address": "local", "include_dashboard": False}
        ray.init(**init, log_to_driver=False, configure_logging=False, ignore_reinit_error=True)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # rows come back in input order, like the single process
        ctx.enable_progress_bars = False  # anomaly-ae shows its own bar
        batch_size = options.batch_size  # set by the caller (the model's scoring.batch_size by default)
        ds = ray.data.from_items(_items(todo), override_num_blocks=max(1, len(todo) // batch_size))
        where = input_dir.uri if isinstance(input_dir, UriInput) else os.path.abspath(input_dir)
        scored = ds.map_batches(
            ScoringActor, fn_constructor_args=(os.path.abspath(run_dir), where, os.path.abspath(out), options),
            batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=options.actors),
            num_gpus=options.gpus_per_actor or None, num_cpus=1, batch_format="numpy",
        )  # Ray Data restarts a dead actor and reruns its batch (max_restarts / max_task_retries -1 by default)
        for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
            for rel, score, error, size, mtime in zip(batch["rel"], batch["score"], batch["error"], batch["size"],
                                                      batch["mtime"], strict=True):
                stat = None if size < 0 else (int(size), int(mtime))
                sink.add(str(rel), float(score), str(error) or None, stat)
    finally:
        if started:
            ray.shutdown()
        logs.restore()


def _items(todo: Sequence[Path | UriFile]) -> list[dict[str, Any]]:
    """Ray Data rows naming the inputs: an absolute local path (links not followed: the actors' working
    folder is not the driver's), or a URI file's relative path with the size and time it was listed with."""
    return [{"path": p.rel, "size": p.size, "mtime": p.mtime_ns} if isinstance(p, UriFile)
            else {"path": os.path.abspath(p), "size": -1, "mtime": -1} for p in todo]


class _QuietRayLogs:
    """Ray's INFO lines (execution plans, log folders) off while anomaly-ae shows its own progress; with
    ``quiet`` (``-q``) its warnings too (token authentication, disabled progress bars): errors only."""

    def __init__(self, quiet: bool = False) -> None:
        import logging

        self.loggers = [logging.getLogger(name) for name in ("ray", "ray.data")]
        self.levels = [lg.level for lg in self.loggers]
        for lg in self.loggers:
            lg.setLevel(logging.ERROR if quiet else logging.WARNING)

    def restore(self) -> None:
        for lg, level in zip(self.loggers, self.levels, strict=True):
            lg.setLevel(level)
