"""A real ``mlflow server`` (SQLite backend, local artifacts, 127.0.0.1, free port), and one that is down."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from anomaly_ae.cli.main import app

runner = CliRunner()
MLFLOW = Path(sys.executable).parent / "mlflow"
pytestmark = pytest.mark.skipif(not MLFLOW.exists(), reason="mlflow CLI not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``mlflow server`` in its own process group; stopped by its PID."""

    def __init__(self, root: Path) -> None:
        self.port = _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        self.log = open(root / "server.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(MLFLOW), "server", "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
             "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, cwd=root,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (root / "server.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise TimeoutError("mlflow server did not start in 90 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def _train(tiny_data, tiny_config_file, out: Path, *extra: str):
    return runner.invoke(app, ["train", str(tiny_data / "train" / "good"), "--config", str(tiny_config_file),
                               "--out", str(out), "--epochs", "3", "--experiment", "server-test", *extra])


def _logged_model_scores_like_the_detector(uri: str, model_uri: str, run_dir: Path, images: list[Path]) -> None:
    """The run's MLflow model, loaded by URI from the store ``uri``, scores as the model directory does."""
    import mlflow
    import numpy as np
    import pandas as pd

    from anomaly_ae import Detector
    from anomaly_ae.tracking import fluent_tracking_uri

    with fluent_tracking_uri(uri):
        model = mlflow.pyfunc.load_model(model_uri)
    out = model.predict(pd.DataFrame({"image": [p.read_bytes() for p in images]}))
    expected = Detector.load(run_dir).score(images)
    np.testing.assert_allclose(out["score"].to_numpy(), expected, rtol=1e-6, atol=1e-9)


def _one_run(uri: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("server-test")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def _tracking_warnings(output: str) -> list[str]:
    """The ``warning:`` lines of a training's output, less the calibration caveats every tiny training gets
    (6 held-out images are too few to trust a threshold; ``PostProcessor.caveats``)."""
    parts = " ".join(output.split()).split("warning:")[1:]
    return [p for p in parts if "calibrate the threshold" not in p and "self-check is near chance" not in p]


def test_training_is_tracked_on_a_real_server(tiny_data, tiny_config_file, tmp_path, monkeypatch):
    server = Server(tmp_path / "server")
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
        monkeypatch.chdir(tmp_path)
        res = _train(tiny_data, tiny_config_file, tmp_path / "run", "--register", "plate", "--alias", "champion")
        assert res.exit_code == 0, res.output
        assert _tracking_warnings(res.output) == []
        client, run = _one_run(server.uri)
        assert run.info.status == "FINISHED"
        assert run.data.params["model.name"] == "conv" and run.data.params["train.epochs"] == "3"
        epochs = len(client.get_metric_history(run.info.run_id, "val_loss"))
        assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == list(range(1, epochs + 1))
        assert epochs == 3 and "threshold" in run.data.metrics
        assert str(client.get_model_version_by_alias("plate", "champion").version) == "1"
        assert client.get_model_version("plate", "1").run_id == run.info.run_id
        images = sorted((tiny_data / "test").glob("*/*.png"))
        for uri in ("models:/plate/1", "models:/plate@champion", f"runs:/{run.info.run_id}/model"):
            _logged_model_scores_like_the_detector(server.uri, uri, tmp_path / "run", images)
        assert not (tmp_path / "mlflow.db").exists()  # nothing went to the fallback store
    finally:
        server.stop()
    assert server.proc.returncode is not None


def test_unreachable_server_falls_back_locally_without_hanging(tiny_data, tiny_config_file, tmp_path, monkeypatch):
    port = _free_port()  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.chdir(tmp_path)
    t0 = time.monotonic()
    res = _train(tiny_data, tiny_config_file, tmp_path / "run")
    took = time.monotonic() - t0
    assert res.exit_code == 0, res.output
    assert took < 60  # a bounded probe, not minutes of retries
    out = " ".join(res.output.split())
    assert len(_tracking_warnings(out)) == 1 and f"127.0.0.1:{port}" in out and "mlflow-export-import" in out
    assert (tmp_path / "run" / "model.keras").is_file()
    client, run = _one_run(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert run.data.params["model.name"] == "conv" and run.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "loss")) >= 3


def test_server_dying_mid_training_loses_nothing(tiny_data, tiny_config_file, tmp_path, monkeypatch):
    import anomaly_ae.training.callbacks as callbacks

    server = Server(tmp_path / "server")
    original = callbacks.TrackingCallback.on_epoch_end

    def die_after_first_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 0:
            server.stop()  # the server goes away after the first epoch was logged

    try:
        monkeypatch.setattr(callbacks.TrackingCallback, "on_epoch_end", die_after_first_epoch)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
        monkeypatch.chdir(tmp_path)
        res = _train(tiny_data, tiny_config_file, tmp_path / "run")
    finally:
        server.stop()
    assert res.exit_code == 0, res.output
    assert len(_tracking_warnings(res.output)) == 1
    client, run = _one_run(f"sqlite:///{tmp_path / 'mlflow.db'}")  # the whole run, replayed locally
    assert run.data.params["model.name"] == "conv"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
    assert steps[0] == 1 and steps == sorted(steps) and len(steps) >= 3
    images = sorted((tiny_data / "test" / "good").glob("*.png"))  # the model was logged to the local store too
    _logged_model_scores_like_the_detector(f"sqlite:///{tmp_path / 'mlflow.db'}", f"runs:/{run.info.run_id}/model",
                                           tmp_path / "run", images)
