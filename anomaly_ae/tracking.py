"""Experiment tracking. The only module that imports ``mlflow`` (lazily, inside ``MlflowTracker``).

Logging is explicit through ``MlflowClient`` (no ``autolog``, no global active run): autolog patches
``Model.fit`` and needs TensorBoard, and a global run leaks between tests and library users.
"""

from __future__ import annotations

import os
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


class NullTracker:
    """Tracks nothing (``--no-track``)."""

    run_id: str | None = None
    uri: str | None = None

    def log_params(self, params: dict[str, Any]) -> None:
        """Ignore."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Ignore."""

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Ignore."""

    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None:
        """Ignore."""


def local_store_uri(folder: str | Path) -> str:
    """The default store: ``sqlite:///<folder>/mlflow.db`` (artifacts go to ``<folder>/mlruns``)."""
    return f"sqlite:///{Path(folder).resolve() / 'mlflow.db'}"


def _param_value(v: Any) -> str:
    s = str(v)
    return s if len(s) <= 6000 else s[:5997] + "..."


class MlflowTracker:
    """One MLflow run, used as a context manager; the run ends FINISHED, or FAILED on an exception.

    Args:
        tracking_uri: store or server URI. A ``sqlite:///`` URI gets its experiments' artifacts in an
            ``mlruns`` folder beside the database.
        experiment: experiment name, created when missing.
        run_name: optional display name.
        run_id: add to this run when it exists (evaluation, resumed training); else a new run.
        end_resumed_run: mark a reopened run FINISHED/FAILED on exit too (resumed training).
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        run_name: str | None = None,
        run_id: str | None = None,
        end_resumed_run: bool = False,
    ) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.resumed = False
        self.end_resumed_run = end_resumed_run
        if run_id is not None and self._run_exists(run_id):  # add to an existing run (e.g. evaluation)
            self.run_id: str | None = run_id
            self.experiment_id = self.client.get_run(run_id).info.experiment_id
            self.resumed = True
            return
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            artifact_location = None
            if tracking_uri.startswith("sqlite:///"):
                db = Path(tracking_uri[len("sqlite:///") :])
                artifact_location = (db.parent / "mlruns").resolve().as_uri()
            exp_id = self.client.create_experiment(experiment, artifact_location=artifact_location)
        else:
            exp_id = exp.experiment_id
        self.experiment_id = exp_id
        self.run_id: str | None = self.client.create_run(exp_id, run_name=run_name).info.run_id

    def _run_exists(self, run_id: str) -> bool:
        try:
            return self.client.get_run(run_id).info.lifecycle_stage == "active"
        except Exception:  # noqa: BLE001 - mlflow raises MlflowException or store-specific errors
            return False

    def __enter__(self) -> MlflowTracker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self.resumed or self.end_resumed_run or exc_type:
            self.client.set_terminated(self.run_id, "FAILED" if exc_type else "FINISHED")

    def log_params(self, params: dict[str, Any]) -> None:
        """Log parameters (values stringified, 100 per request)."""
        from mlflow.entities import Param

        items = [Param(k, _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log finite numeric metrics at ``step``."""
        import math
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, step or 0) for k, v in metrics.items() if math.isfinite(float(v))
        ]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy one file into the run's artifacts."""
        self.client.log_artifact(self.run_id, os.fspath(path), artifact_path)

    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None:
        """Copy a folder's contents into the run's artifacts."""
        self.client.log_artifacts(self.run_id, os.fspath(folder), artifact_path)
