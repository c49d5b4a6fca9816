"""Experiment tracking: runs, their params, metrics, tags and models (``mlflow`` imported lazily).

The MLflow model flavour itself is :mod:`anomaly_ae.deploy.mlflow_model`.

Logging is explicit through ``MlflowClient`` (no ``autolog``, no global active run): autolog patches
``Model.fit`` and needs TensorBoard, and a global run leaks between tests and library users. Only
``log_model`` needs MLflow's fluent API; it runs inside :func:`fluent_tracking_uri`, which puts the
global URI and ``MLFLOW_TRACKING_URI`` back as they were.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol


class Tracker(Protocol):
    """What training needs from a tracker."""

    run_id: str | None
    uri: str | None

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_model(self, log: Callable[[], Any]) -> None: ...
    def set_alias(self, name: str, alias: str, version: str | int) -> None: ...


class NullTracker:
    """Tracks nothing (``--no-track``)."""

    run_id: str | None = None
    uri: str | None = None
    disabled = True  # as an MlflowTracker whose store failed

    def log_params(self, params: dict[str, Any]) -> None:
        """Ignore."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Ignore."""

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Ignore."""

    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None:
        """Ignore."""

    def set_tags(self, tags: dict[str, str]) -> None:
        """Ignore."""

    def log_model(self, log: Callable[[], Any]) -> None:
        """Ignore."""

    def set_alias(self, name: str, alias: str, version: str | int) -> None:
        """Ignore."""


def local_store_uri(folder: str | Path) -> str:
    """The default store: ``sqlite:///<folder>/mlflow.db`` (artifacts go to ``<folder>/mlruns``)."""
    return f"sqlite:///{Path(folder).resolve() / 'mlflow.db'}"


def default_tracking_uri(folder: str | Path | None = None) -> str:
    """Where a run is tracked when the caller names no store: ``MLFLOW_TRACKING_URI`` when set (MLflow's own
    rule), else the local store of ``folder`` (default: the working folder), :func:`local_store_uri`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or local_store_uri(Path.cwd() if folder is None else folder)


def local_fallback(uri: str, folder: str | Path | None = None) -> str | None:
    """Where a run goes when ``uri`` fails: the local store of ``folder`` (default: the working folder), or
    ``None`` when that is ``uri`` itself."""
    local = local_store_uri(Path.cwd() if folder is None else folder)
    return None if uri == local else local


@contextlib.contextmanager
def open_run(experiment: str, run_name: str | None = None, uri: str | None = None, *, run_id: str | None = None,
             resumed_run: bool = False, fallback: bool = True,
             on_warning: Callable[[str], None] | None = None) -> Iterator[MlflowTracker]:
    """A tracked MLflow run that never costs the work: ``uri`` (default :func:`default_tracking_uri`); a
    server that fails falls back to the local store (unless ``fallback`` is off), a store that cannot be
    written turns tracking off with one warning to ``on_warning``. ``run_id``: add to that run when it exists;
    ``resumed_run``: end it when the block ends (a resumed training)."""
    uri = uri or default_tracking_uri()
    with MlflowTracker(uri, experiment, run_name=run_name, run_id=run_id, end_resumed_run=resumed_run,
                       fallback_uri=local_fallback(uri) if fallback else None, on_fallback=on_warning,
                       off_on_failure=True) as tracker:
        yield tracker


def _param_value(v: Any) -> str:
    s = str(v)
    return s if len(s) <= 6000 else s[:5997] + "..."


#: bounded retries for remote stores, unless the user set their own (MLflow's default retries for minutes)
REMOTE_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


class TrackingUnavailable(RuntimeError):
    """The tracking server does not answer."""


def probe(uri: str, timeout: float = 3.0) -> None:
    """Raise :class:`TrackingUnavailable` unless an ``http(s)`` tracking server answers ``/health`` in time."""
    import urllib.error
    import urllib.request

    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as r:  # noqa: S310
            if r.status >= 500:
                raise TrackingUnavailable(f"{uri} answered HTTP {r.status}")
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingUnavailable(f"{uri} is unreachable ({reason})") from None


def store_write_problem(uri: str) -> str | None:
    """Why the local MLflow store ``uri`` cannot be written (one line), or ``None`` when it can or is remote.

    A ``sqlite:///`` store needs its database file and its folder (SQLite writes a journal beside it), a
    ``file:`` store or plain path its folder; a server is asked nothing here (:func:`probe` checks it answers).
    Checked up front, because MLflow finds out only after a minute of retries, or after the work is done.
    """
    from urllib.parse import unquote, urlparse

    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        places = [db, db.parent] if db.exists() else [db.parent]
    elif uri.startswith("file:") or "://" not in uri:
        places = [Path(unquote(urlparse(uri).path) if uri.startswith("file:") else uri)]
        places = places if places[0].exists() else [places[0].parent]
    else:
        return None
    for where in places:
        if where.exists() and not os.access(where, os.W_OK):
            return f"{where} is not writable"
    return None


class MlflowTracker:
    """One MLflow run, used as a context manager; the run ends FINISHED, or FAILED on an exception.

    A tracking server that is down never costs the work: with ``fallback_uri`` set, an unreachable
    server (checked with a 3 s probe, then bounded retries) switches the run to the local store
    ``fallback_uri``, replaying what was already logged, and ``on_fallback`` is told once why.

    Args:
        tracking_uri: store or server URI. A ``sqlite:///`` URI gets its experiments' artifacts in an
            ``mlruns`` folder beside the database.
        experiment: experiment name, created when missing.
        run_name: optional display name.
        run_id: add to this run when it exists (evaluation, resumed training); else a new run.
        end_resumed_run: mark a reopened run FINISHED/FAILED on exit too (resumed training).
        fallback_uri: local store to use when ``tracking_uri`` fails (``None``: errors propagate).
        on_fallback: receives the one-line warning when the fallback is taken (default: ``warnings.warn``).
        off_on_failure: when the store and the fallback both fail (a read-only working folder, a
            broken database), warn once through ``on_fallback`` and track nothing more instead of
            raising: the work goes on (``disabled`` is then true and ``run_id`` ``None``).
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        run_name: str | None = None,
        run_id: str | None = None,
        end_resumed_run: bool = False,
        fallback_uri: str | None = None,
        on_fallback: Any = None,
        off_on_failure: bool = False,
    ) -> None:
        if tracking_uri.startswith(("http://", "https://")):
            for k, v in REMOTE_DEFAULTS.items():
                os.environ.setdefault(k, v)
        self.end_resumed_run = end_resumed_run
        self.fallback_uri = fallback_uri
        self.fell_back = False
        self._experiment, self._run_name = experiment, run_name
        self._on_fallback = on_fallback
        self._journal: list[tuple[str, tuple[Any, ...]]] = []
        self.disabled, self._off_on_failure, self.resumed = False, off_on_failure, False
        self.model_info: Any = None  # MLflow's ModelInfo once log_model has run
        self.uri, self.run_id = tracking_uri, None
        try:
            try:
                probe(tracking_uri)
                self._open(tracking_uri, run_id)
            except Exception as err:  # noqa: BLE001 - any store failure: fall back or re-raise
                if fallback_uri is None:
                    raise
                self._fall_back(err)
        except Exception as err:  # noqa: BLE001
            self._turn_off(err)

    def _turn_off(self, err: BaseException) -> None:
        """Nothing more is tracked (``off_on_failure``), or ``err`` is raised."""
        if not self._off_on_failure:
            raise err
        self.disabled, self.run_id = True, None
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        msg = (f"MLflow tracking is off for this run: the store {self.uri} cannot be written ({first}); "
               "the work goes on and its results are written as usual (tracking=False skips tracking)")
        if self._on_fallback is not None:
            self._on_fallback(msg)
        else:
            import warnings

            warnings.warn(msg, RuntimeWarning, stacklevel=3)

    def _open(self, tracking_uri: str, run_id: str | None) -> None:
        from mlflow.tracking import MlflowClient

        if tracking_uri.startswith("sqlite:///") and (problem := store_write_problem(tracking_uri)) is not None:
            raise PermissionError(problem)  # at once, not after MLflow's minute of retries

        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.resumed = False
        if run_id is not None and self._run_exists(run_id):  # add to an existing run (e.g. evaluation)
            self.run_id: str | None = run_id
            self.experiment_id = self.client.get_run(run_id).info.experiment_id
            self.resumed = True
            return
        exp = self.client.get_experiment_by_name(self._experiment)
        if exp is None:
            artifact_location = None
            if tracking_uri.startswith("sqlite:///"):
                db = Path(tracking_uri[len("sqlite:///") :])
                artifact_location = (db.parent / "mlruns").resolve().as_uri()
            exp_id = self.client.create_experiment(self._experiment, artifact_location=artifact_location)
        else:
            exp_id = exp.experiment_id
        self.experiment_id = exp_id
        # the user at creation: MLflow fills the run's user_id from this tag only then ("unknown" otherwise)
        self.run_id = self.client.create_run(exp_id, run_name=self._run_name, tags=user_tag()).info.run_id

    def _fall_back(self, err: BaseException) -> None:
        """Continue in the local store: a new run there, with everything logged so far replayed."""
        failed = getattr(self, "uri", None) or "the tracking server"
        self._open(self.fallback_uri, None)  # type: ignore[arg-type]
        self.fell_back = True
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        msg = (f"MLflow at {failed} failed ({first}); this run is recorded in the local store {self.uri} "
               f"(run {self.run_id}). Browse it with 'mlflow ui --backend-store-uri {self.uri}'; copy it to "
               "the server later with mlflow-export-import (export-run, then import-run).")
        if self._on_fallback is not None:
            self._on_fallback(msg)
        else:
            import warnings

            warnings.warn(msg, RuntimeWarning, stacklevel=3)
        for method, args in self._journal:
            getattr(self, f"_{method}")(*args)

    def _call(self, method: str, *args: Any) -> None:
        if self.disabled:
            return
        self._journal.append((method, args))
        try:
            try:
                getattr(self, f"_{method}")(*args)
            except Exception as err:  # noqa: BLE001
                if self.fallback_uri is None or self.fell_back:
                    raise
                self._fall_back(err)  # replays the journal, this call included
        except Exception as err:  # noqa: BLE001
            self._turn_off(err)

    def _run_exists(self, run_id: str) -> bool:
        try:
            return self.client.get_run(run_id).info.lifecycle_stage == "active"
        except Exception:  # noqa: BLE001 - mlflow raises MlflowException or store-specific errors
            return False

    def __enter__(self) -> MlflowTracker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.disabled:
            return
        if not self.resumed or self.end_resumed_run or exc_type:
            status = "FAILED" if exc_type else "FINISHED"
            try:
                try:
                    self.client.set_terminated(self.run_id, status)
                except Exception as err:  # noqa: BLE001
                    if self.fallback_uri is None or self.fell_back:
                        raise
                    self._fall_back(err)
                    self.client.set_terminated(self.run_id, status)
            except Exception as err:  # noqa: BLE001
                self._turn_off(err)

    def log_params(self, params: dict[str, Any]) -> None:
        """Log parameters (values stringified, 100 per request)."""
        self._call("log_params", dict(params))

    def _log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log finite numeric metrics at ``step``."""
        import math

        finite = {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
        if finite:
            self._call("log_metrics", finite, step)

    def _log_metrics(self, metrics: dict[str, float], step: int | None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step or 0) for k, v in metrics.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy one file into the run's artifacts."""
        self._call("log_artifact", os.fspath(path), artifact_path)

    def _log_artifact(self, path: str, artifact_path: str | None) -> None:
        if os.path.exists(path):  # a replayed temporary file may be gone
            self.client.log_artifact(self.run_id, path, artifact_path)

    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None:
        """Copy a folder's contents into the run's artifacts."""
        self._call("log_artifacts", os.fspath(folder), artifact_path)

    def _log_artifacts(self, folder: str, artifact_path: str | None) -> None:
        if os.path.isdir(folder):
            self.client.log_artifacts(self.run_id, folder, artifact_path)


    def set_tags(self, tags: dict[str, str]) -> None:
        """Set run tags (values stringified)."""
        self._call("set_tags", {k: str(v) for k, v in tags.items()})

    def _set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def log_model(self, log: Callable[[], Any]) -> None:
        """Run ``log`` (e.g. :func:`anomaly_ae.deploy.mlflow_model.log_detector` with its arguments bound) with
        this run active in MLflow's fluent API, as every ``mlflow.<flavor>.log_model`` needs; what it returns
        (MLflow's ``ModelInfo``) is kept in ``model_info``. Replayed like the rest after a fallback."""
        self._call("log_model", log)

    def _log_model(self, log: Callable[[], Any]) -> None:
        import mlflow

        with fluent_tracking_uri(self.uri), mlflow.start_run(run_id=self.run_id):
            self.model_info = log()

    def set_alias(self, name: str, alias: str, version: str | int) -> None:
        """Point the alias ``alias`` of the registered model ``name`` at ``version``."""
        self._call("set_alias", name, alias, str(version))

    def _set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)


@contextlib.contextmanager
def fluent_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent API (``mlflow.start_run``, ``mlflow.pyfunc.log_model``) pointed at ``uri`` for a while.

    ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` into the environment (and setting it
    back to "unset" deletes the variable), so both the fluent URI and the variable are restored as they were.
    """
    import mlflow
    from mlflow.tracking._tracking_service import utils

    before_env, before = os.environ.get("MLFLOW_TRACKING_URI"), utils._tracking_uri
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
        if before_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before_env


def user_tag() -> dict[str, str]:
    """``{"mlflow.user": <login name>}``, or nothing where this uid has no name (a container)."""
    import getpass

    try:
        return {"mlflow.user": getpass.getuser()}
    except (KeyError, OSError):
        return {}


def source_tags(command: str, folder: str | Path | None = None) -> dict[str, str]:
    """Tags that say where a run comes from: the command, the user, the git commit of ``folder`` (default:
    the working directory) when it is in a git repository, and the versions of anomaly-ae and its backend."""
    import subprocess

    import keras

    from anomaly_ae.version import __version__

    tags = {"mlflow.source.name": command, "mlflow.source.type": "LOCAL", "anomaly_ae.version": __version__,
            "keras.version": keras.__version__, "keras.backend": keras.backend.backend(), **user_tag()}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder or os.getcwd(), capture_output=True,
                                text=True, timeout=5)
        if commit.returncode == 0 and commit.stdout.strip():
            tags["mlflow.source.git.commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):  # no git here
        pass
    return tags


def log_evaluation(
    metrics: dict[str, Any],
    files: list[Path],
    experiment: str,
    run_id: str | None,
    uri: str,
    fallback_uri: str | None = None,
    on_fallback: Any = None,
) -> str | None:
    """Log an evaluation's numbers and files to the model's run ``run_id`` when it is in the store, else a new run.

    Returns the line to show (which run, which store), or ``None`` when tracking turned itself off
    (the store and the fallback both failed; ``on_fallback`` was told why).
    """
    flat = {f"eval_{k}": v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    with MlflowTracker(uri, experiment, run_name="evaluate", run_id=run_id, fallback_uri=fallback_uri,
                       on_fallback=on_fallback, off_on_failure=True) as tracker:
        tracker.log_metrics(flat)
        for f in files:
            tracker.log_artifact(f, "evaluation")
        if tracker.disabled:
            return None
        where = "the model's run" if tracker.resumed else "a new run"
        return f"logged to {where} {tracker.run_id} in {tracker.uri}"
