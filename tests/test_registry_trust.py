"""Issue 29: models from the cache and the registry are verified; remote waits are bounded; nothing is created
that the user did not ask for."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from anomaly_ae.cli.main import app
from anomaly_ae.detector import Detector

runner = CliRunner()


def _register(det: Detector, run_dir: Path, uri: str, name: str) -> None:
    """Save ``det`` and log it as a new version of ``name`` in the store ``uri``."""
    import mlflow

    from anomaly_ae.deploy.mlflow_model import log_detector
    from anomaly_ae.tracking import fluent_tracking_uri

    det.save(run_dir)
    with fluent_tracking_uri(uri):
        mlflow.set_experiment("trust")
        with mlflow.start_run():
            log_detector(run_dir, registered_model_name=name, detector=det)


def _score(image: Path, env: dict[str, str]) -> tuple[int, str, str]:
    res = runner.invoke(app, ["score", "models:/plate/1", str(image), "--json"], env=env)
    return res.exit_code, res.stdout, res.stderr


def tiny_data_images(run: Path):  # noqa: ANN201
    """Any image file: the command refuses the model before it reads one."""
    import cv2

    path = run.parent / "x.png"
    cv2.imwrite(str(path), np.full((32, 32), 128, np.uint8))
    yield path


def test_local_model_directories_are_checked_against_their_recorded_checksums(tiny_detector, tmp_path):
    from anomaly_ae import ModelDirError

    run = tiny_detector.save(tmp_path / "run")
    recorded = json.loads((run / "detector.json").read_text())["files"]
    assert set(recorded) == {"model.keras"} and len(recorded["model.keras"]) == 64
    data = bytearray((run / "model.keras").read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    (run / "model.keras").write_bytes(bytes(data))
    with pytest.raises(ModelDirError, match="SHA-256 is not the one detector.json recorded"):
        Detector.load(run)
    res = runner.invoke(app, ["score", str(run), str(next(tiny_data_images(run)))])
    assert res.exit_code == 2 and "SHA-256" in " ".join(res.output.split())


def test_a_damaged_or_stale_cached_model_is_downloaded_again(tiny_detector, tiny_data, tmp_path, monkeypatch):
    from anomaly_ae.config import ThresholdConfig

    monkeypatch.chdir(tmp_path)  # the store's artifacts go to ./mlruns
    image = sorted((tiny_data / "test" / "good").glob("*.png"))[0]
    store = tmp_path / "store"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    env = {"MLFLOW_TRACKING_URI": uri, "ANOMALY_AE_CACHE": str(tmp_path / "cache")}
    first = Detector.load(tiny_detector.save(tmp_path / "a"))
    _register(first, tmp_path / "a", uri, "plate")
    code, out, _ = _score(image, env)
    assert code == 0, out
    cached = next((tmp_path / "cache" / "models").iterdir()) / "detector" / "model.keras"
    assert json.loads(out)["threshold"] == pytest.approx(first.threshold_)

    data = bytearray(cached.read_bytes())  # a flipped byte in the cached weights
    data[len(data) // 2] ^= 0xFF
    cached.write_bytes(bytes(data))
    code, out, err = _score(image, env)
    assert code == 0 and "not used (its files are damaged): downloading it again" in " ".join(err.split())
    assert json.loads(out)["threshold"] == pytest.approx(first.threshold_)

    # the registry is recreated at the same URI: version 1 of 'plate' is now another model (another threshold)
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=uri, registry_uri=uri).delete_registered_model("plate")
    second = Detector.load(tmp_path / "a")
    second.calibrate(np.stack([np.full((32, 32, 1), v, np.uint8) for v in (90, 120, 150, 180)]),
                     threshold=ThresholdConfig(method="max"))
    assert second.threshold_ != pytest.approx(first.threshold_)
    _register(second, tmp_path / "b", uri, "plate")
    code, out, err = _score(image, env)
    assert code == 0, out
    assert "the registry now names another model" in " ".join(err.split())
    assert json.loads(out)["threshold"] == pytest.approx(second.threshold_)  # not the stale copy's


def test_an_unreachable_server_is_a_bounded_wait_and_one_line(tiny_data, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    image = sorted((tiny_data / "test" / "good").glob("*.png"))[0]
    env = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}", "ANOMALY_AE_CACHE": str(tmp_path / "cache"),
           "ANOMALY_AE_CONNECT_TIMEOUT": "2"}
    t0 = time.monotonic()
    code, _, err = _score(image, env)
    took = time.monotonic() - t0
    assert code == 2 and took < 15  # MLflow's own retries took minutes
    text = " ".join(err.split())
    assert f"127.0.0.1:{port}" in text and "after 2 s" in text and "Traceback" not in err


def test_a_lookup_in_a_folder_without_a_store_creates_nothing(tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    image = sorted((tiny_data / "test" / "good").glob("*.png"))[0]
    res = runner.invoke(app, ["score", "models:/plate/1", str(image)], env={"ANOMALY_AE_CACHE": str(tmp_path / "c")})
    assert res.exit_code == 2 and "there is no MLflow store at" in " ".join(res.output.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no mlflow.db, no mlruns, no cache
