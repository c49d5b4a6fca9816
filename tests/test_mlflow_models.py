"""The detector as an MLflow model (embedded SQLite store): log, register, alias, load by URI, calibrate, serve."""

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from anomaly_ae.cli.main import app

runner = CliRunner()
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def registered(tiny_data, tiny_config_file, tmp_path_factory):
    """A model trained by the CLI into a SQLite store, registered as 'plate' version 1 with alias 'champion'."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    env = {"MLFLOW_TRACKING_URI": uri, "ANOMALY_AE_CACHE": str(root / "cache")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        res = runner.invoke(app, ["train", str(tiny_data / "train" / "good"), "--config", str(tiny_config_file),
                                  "--out", str(root / "run"), "--register", "plate", "--alias", "champion",
                                  "--json"])
        assert res.exit_code == 0, res.output
        yield root, uri, json.loads(res.stdout)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _load(uri: str, model_uri: str):
    import mlflow

    from anomaly_ae.tracking import fluent_tracking_uri

    with fluent_tracking_uri(uri):
        return mlflow.pyfunc.load_model(model_uri)


def test_train_logs_and_registers_a_model_that_scores_like_the_detector(registered, tiny_data):
    from mlflow.tracking import MlflowClient

    from anomaly_ae import Detector

    root, uri, summary = registered
    assert summary["mlflow_model_uri"] == "models:/plate/1"
    client = MlflowClient(uri)
    assert client.get_model_version("plate", "1").run_id == summary["mlflow_run_id"]
    assert str(client.get_model_version_by_alias("plate", "champion").version) == "1"
    images = sorted((tiny_data / "test").glob("*/*.png"))
    expected = Detector.load(root / "run").score(images)
    for model_uri in ("models:/plate/1", "models:/plate@champion", f"runs:/{summary['mlflow_run_id']}/model"):
        out = _load(uri, model_uri).predict(pd.DataFrame({"image": [p.read_bytes() for p in images]}))
        assert list(out.columns) == ["score", "is_anomaly", "threshold", "error"]
        np.testing.assert_allclose(out["score"].to_numpy(), expected, rtol=1e-6, atol=1e-9)
        assert (out["is_anomaly"].to_numpy() == (expected > summary["threshold"])).all()


def test_paths_base64_bad_rows_and_the_anomaly_map_parameter(registered, tiny_data):
    import cv2

    from anomaly_ae import Detector

    root, uri, _ = registered
    model = _load(uri, "models:/plate/1")
    image = sorted((tiny_data / "test" / "scratch").glob("*.png"))[0]
    rows = [str(image), base64.b64encode(image.read_bytes()).decode(), b"not an image", image.read_bytes()]
    out = model.predict(pd.DataFrame({"image": rows}), params={"anomaly_map": "png"})
    det = Detector.load(root / "run")
    score = float(det.score(image)[0])
    assert out["score"][[0, 1, 3]].to_numpy() == pytest.approx([score] * 3, rel=1e-6)
    assert np.isnan(out["score"][2]) and "cannot decode" in out["error"][2] and not out["is_anomaly"][2]
    png = cv2.imdecode(np.frombuffer(out["anomaly_map"][0], np.uint8), cv2.IMREAD_UNCHANGED)
    amap = det.anomaly_maps(image)[0]
    lo, hi = det.heatmap_range_
    expected = (np.clip((amap - lo) / (hi - lo), 0, 1) * 255).round()
    assert png.shape == (32, 32) and np.abs(png.astype(float) - expected).max() <= 1
    listed = model.predict(pd.DataFrame({"image": [str(image)]}), params={"anomaly_map": "list"})
    np.testing.assert_allclose(np.array(listed["anomaly_map"][0]), amap, rtol=1e-6)


def test_the_artifact_holds_no_pickle_and_a_tampered_one_is_refused(registered, tmp_path):
    import keras
    import mlflow

    root, uri, _ = registered
    from anomaly_ae.tracking import fluent_tracking_uri

    with fluent_tracking_uri(uri):
        local = Path(mlflow.artifacts.download_artifacts("models:/plate/1", dst_path=str(tmp_path / "dl")))
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    pyfunc = mlmodel["flavors"]["python_function"]
    assert pyfunc["loader_module"] == "anomaly_ae.deploy.mlflow_model" and "python_model" not in pyfunc
    assert not [p for p in local.rglob("*") if p.suffix in (".pkl", ".pickle", ".cloudpickle")]
    assert "anomaly-ae==" in (local / "requirements.txt").read_text()
    assert mlmodel["signature"]["inputs"] and mlmodel.get("saved_input_example_info")
    # a model.keras whose graph holds a Lambda layer (arbitrary code): refused as a local model directory is
    inp = keras.Input((32, 32, 1))
    detector = local / "data" / "detector"
    keras.Model(inp, keras.layers.Lambda(lambda t: t * 2.0)(inp)).save(detector / "model.keras")
    with pytest.raises(Exception, match="SHA-256 is not the one detector.json recorded"):
        mlflow.pyfunc.load_model(str(local))  # the replaced weights fail their recorded checksum first
    from anomaly_ae.io.files import file_sha256

    meta = json.loads((detector / "detector.json").read_text())
    meta["files"]["model.keras"] = file_sha256(detector / "model.keras")  # a tamperer who also edits the record
    (detector / "detector.json").write_text(json.dumps(meta))
    with pytest.raises(Exception, match="Lambda layer"):
        mlflow.pyfunc.load_model(str(local))


def test_commands_take_model_uris_and_the_cache_is_filled_once(registered, tiny_data):
    root, uri, _ = registered
    image = str(sorted((tiny_data / "test" / "good").glob("*.png"))[0])
    res = runner.invoke(app, ["score", "models:/plate@champion", image], env={"MLFLOW_TRACKING_URI": uri})
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith(f"{image}  score ") and "fetching models:/plate@champion" in res.stderr
    cached = list((root / "cache" / "models").iterdir())
    res = runner.invoke(app, ["score", "models:/plate/1", image, "-q"], env={"MLFLOW_TRACKING_URI": uri})
    assert res.exit_code == 0 and list((root / "cache" / "models").iterdir()) == cached  # same version: no download
    res = runner.invoke(app, ["score", "models:/nope/1", image], env={"MLFLOW_TRACKING_URI": uri})
    assert res.exit_code == 2 and "models:/nope/1" in res.output


def test_calibrate_logs_a_new_version_with_the_new_threshold(registered, tiny_data):
    from mlflow.tracking import MlflowClient

    from anomaly_ae import Detector

    root, uri, summary = registered
    res = runner.invoke(app, ["calibrate", "models:/plate@champion", "--good", str(tiny_data / "test" / "good"),
                              "--method", "max", "--alias", "champion", "--json"], env={"MLFLOW_TRACKING_URI": uri})
    assert res.exit_code == 0, res.output
    cal = json.loads(res.stdout)
    assert cal["mlflow"]["model_uri"] == "models:/plate/2" and cal["updated"] == "models:/plate/2"
    client = MlflowClient(uri)
    assert str(client.get_model_version_by_alias("plate", "champion").version) == "2"
    run = client.get_run(cal["mlflow"]["run_id"])
    assert run.data.metrics["threshold"] == pytest.approx(cal["threshold"])
    assert run.data.tags["anomaly_ae.recalibrates"] == summary["mlflow_run_id"]
    from anomaly_ae.deploy.mlflow_model import resolve_model

    v2 = Detector.load(resolve_model("models:/plate/2", uri))
    v1 = Detector.load(resolve_model("models:/plate/1", uri))
    assert v2.threshold_ == pytest.approx(cal["threshold"]) and v2.config.threshold.method == "max"
    assert v1.threshold_ == pytest.approx(summary["threshold"]) != pytest.approx(v2.threshold_)  # v1 untouched


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not (BIN / "mlflow").exists(), reason="mlflow CLI not installed")
def test_mlflow_models_serve_answers_rest_requests_like_the_detector(registered, tiny_data, tmp_path):
    from anomaly_ae import Detector

    root, uri, _ = registered
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", "models:/plate/1", "--env-manager",
                             "local", "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "mlflow models serve did not answer /ping in 120 s"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        images = sorted((tiny_data / "test").glob("*/*.png"))
        body = {"dataframe_split": {"columns": ["image"],
                                    "data": [[base64.b64encode(p.read_bytes()).decode()] for p in images]}}
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            predictions = json.loads(r.read())["predictions"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    expected = Detector.load(root / "run").score(images)
    assert [p["error"] for p in predictions] == [None] * len(images)
    np.testing.assert_allclose([p["score"] for p in predictions], expected, rtol=1e-6, atol=1e-9)
