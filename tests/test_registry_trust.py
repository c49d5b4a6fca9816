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
        client = mlflow.tracking.MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name("trust")
        experiment = found.experiment_id if found else client.create_experiment("trust")
        with mlflow.start_run(experiment_id=experiment):  # no fluent experiment left set for the next command
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

    # a cache folder holding only what anomaly-ae did not write is left alone, not removed to make room
    import shutil

    folder = next((tmp_path / "cache" / "models").iterdir())
    shutil.rmtree(folder)
    folder.mkdir()
    (folder / "mine.txt").write_text("mine")
    code, _, err = _score(image, env)
    assert code == 2 and "did not write" in " ".join(err.split()) and (folder / "mine.txt").read_text() == "mine"


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
    assert f"127.0.0.1:{port}" in text and "waited up to 2 s" in text and "Traceback" not in err


def test_a_lookup_in_a_folder_without_a_store_creates_nothing(tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    image = sorted((tiny_data / "test" / "good").glob("*.png"))[0]
    res = runner.invoke(app, ["score", "models:/plate/1", str(image)], env={"ANOMALY_AE_CACHE": str(tmp_path / "c")})
    assert res.exit_code == 2 and "there is no MLflow store at" in " ".join(res.output.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no mlflow.db, no mlruns, no cache


@pytest.fixture(scope="module")
def saved_run(tiny_detector, tmp_path_factory):
    return tiny_detector.save(tmp_path_factory.mktemp("trust") / "run")


def test_a_users_scores_parquet_is_never_replaced(saved_run, tiny_data, tmp_path):
    folder, out = tiny_data / "test" / "good", tmp_path / "out"
    assert runner.invoke(app, ["score", str(saved_run), str(folder), "--out", str(out), "-q"]).exit_code == 0
    for flags in (["--overwrite"], ["--resume"]):  # a CSV rerun: the user's parquet file is not ours to keep in step
        (out / "scores.parquet").write_text("mine")
        res = runner.invoke(app, ["score", str(saved_run), str(folder), "--out", str(out), "-q", *flags])
        assert res.exit_code == 0, res.output
        assert (out / "scores.parquet").read_text() == "mine"
    res = runner.invoke(app, ["score", str(saved_run), str(folder), "--out", str(out), "--format", "parquet",
                              "--overwrite"])
    assert res.exit_code == 2 and "did not write" in " ".join(res.output.split())
    assert (out / "scores.parquet").read_text() == "mine"


def test_the_same_file_twice_is_one_row_and_dotdot_inside_the_folder_is_resolved(saved_run, tiny_data, tmp_path):
    good = tiny_data / "test" / "good"
    a, b = sorted(good.glob("*.png"))[:2]
    dotdot = good / "sub" / ".." / b.name  # a plain file of the folder, named through a sub-folder's '..'
    (good / "sub").mkdir(exist_ok=True)
    try:
        out = tmp_path / "out"
        res = runner.invoke(app, ["score", str(saved_run), str(a), str(a), str(dotdot), "--out", str(out), "-q"])
        assert res.exit_code == 0, res.output
        rows = (out / "scores.csv").read_text().splitlines()[1:]
        assert [r.split(",")[0] for r in rows] == [a.name, b.name]  # one row each, keys inside the folder
        rerun = runner.invoke(app, ["score", str(saved_run), str(a), str(a), str(dotdot), "--out", str(out),
                                    "--resume"])
        assert rerun.exit_code == 0 and "malformed" not in rerun.output
    finally:
        (good / "sub").rmdir()


def test_out_equal_to_a_file_uri_input_is_refused_like_the_plain_path(saved_run, tiny_data, tmp_path):
    import shutil

    folder = tmp_path / "in"
    shutil.copytree(tiny_data / "test" / "good", folder)
    for given in (str(folder), folder.as_uri()):
        res = runner.invoke(app, ["score", str(saved_run), given, "--out", str(folder)])
        text = " ".join(res.output.split())
        assert res.exit_code == 2 and f"--out {folder} is the input folder" in text and "no images" not in text


@pytest.mark.parametrize("alias", ["v1", "V12", "latest", "LATEST", "two words"])
def test_reserved_or_invalid_aliases_are_refused_before_training(tiny_data, tmp_path, alias):
    res = runner.invoke(app, ["train", str(tiny_data / "train" / "good"), "--register", "plate", "--alias", alias,
                              "--out", str(tmp_path / "run")])
    assert res.exit_code == 2 and "--alias" in res.output
    assert not (tmp_path / "run").exists()  # nothing trained, nothing registered


def test_calibrate_by_uri_names_the_uri_not_a_deleted_temporary_folder(tiny_detector, tiny_data, tmp_path,
                                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _register(Detector.load(tiny_detector.save(tmp_path / "a")), tmp_path / "a", uri, "plate")
    res = runner.invoke(app, ["calibrate", "models:/plate/1", "--good", str(tiny_data / "test" / "good"), "--json"],
                        env={"MLFLOW_TRACKING_URI": uri, "ANOMALY_AE_CACHE": str(tmp_path / "cache")})
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["model_dir"] == "models:/plate/1"
    assert summary["updated"] == "models:/plate/2"


def test_calibrate_by_uri_registers_in_the_models_own_registry_or_fails(tiny_detector, tiny_data, tmp_path,
                                                                        monkeypatch):
    """A store that cannot be written: no version in a ./mlflow.db of the current folder, no 'updated' line."""
    from mlflow.tracking import MlflowClient

    import anomaly_ae.tracking as tracking

    store, work = tmp_path / "store", tmp_path / "work"
    store.mkdir()
    work.mkdir()
    monkeypatch.chdir(store)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    _register(Detector.load(tiny_detector.save(tmp_path / "a")), tmp_path / "a", uri, "plate")
    monkeypatch.chdir(work)

    def read_only(self, tracking_uri, run_id):  # noqa: ANN001, ANN202
        raise OSError("attempt to write a readonly database")

    monkeypatch.setattr(tracking.MlflowTracker, "_open", read_only)
    res = runner.invoke(app, ["calibrate", "models:/plate/1", "--good", str(tiny_data / "test" / "good")],
                        env={"MLFLOW_TRACKING_URI": uri, "ANOMALY_AE_CACHE": str(tmp_path / "cache")})
    text = " ".join(res.output.split())
    assert res.exit_code == 1 and "nothing was updated" in text and "updated models:/" not in text
    assert list(work.iterdir()) == []  # no ./mlflow.db, no ./mlruns
    versions = MlflowClient(tracking_uri=uri, registry_uri=uri).search_model_versions("name='plate'")
    assert [int(v.version) for v in versions] == [1]


def test_calibrate_by_uri_on_a_read_only_store_is_refused_before_any_write(tiny_detector, tiny_data, tmp_path,
                                                                          monkeypatch, run_unprivileged):
    """Before: it fetched the model into the cache, recalibrated it, then said 'tracking is off ... results are
    written as usual' and failed. Now: one line naming the store, exit 2, and nothing anywhere is written."""
    import os
    import sys

    store, work, cache = tmp_path / "store", tmp_path / "work", tmp_path / "cache"
    for folder in (store, work, cache):
        folder.mkdir()
    monkeypatch.chdir(store)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    _register(Detector.load(tiny_detector.save(tmp_path / "a")), tmp_path / "a", uri, "plate")
    monkeypatch.chdir(work)
    before = sorted((p.relative_to(store), p.stat().st_mtime_ns) for p in store.rglob("*"))
    for p in [store, *store.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("ANOMALY_AE_CACHE", str(cache))
    try:
        res = run_unprivileged([sys.executable, "-m", "anomaly_ae", "calibrate", "models:/plate/1",
                                "--good", str(tiny_data / "test" / "good")])
    finally:
        for p in [store, *store.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
    text = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 2, text
    assert f"{store / 'mlflow.db'} is not writable" in text and "nothing was fetched or changed" in text
    assert "Traceback" not in text and "results are written as usual" not in text
    assert os.listdir(work) == [] and os.listdir(cache) == []  # no ./mlflow.db, no fetched copy
    assert sorted((p.relative_to(store), p.stat().st_mtime_ns) for p in store.rglob("*")) == before
