"""``score --engine ray`` on a real Ray cluster started here (``ray start --head`` on 127.0.0.1, stopped after)."""

import csv
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from anomaly_ae.cli.main import app

ray = pytest.importorskip("ray", reason="the [ray] extra is not installed")
runner = CliRunner()
BIN = Path(sys.executable).parent
N_GOOD = 197


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A one-node Ray cluster on 127.0.0.1: ``ray start --head --block`` in its own process group, stopped by its
    PID (it stops the processes it started; anything left is killed). Token authentication is off for it and
    for the drivers here, as on a trusted test machine."""
    root = tmp_path_factory.mktemp("ray")
    port = _free_port()
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = open(root / "ray.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--num-cpus", "2", "--disable-usage-stats", "--include-dashboard", "false", "--block"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{port}"
    probe = f"import ray; ray.init(address={address!r}, log_to_driver=False); assert ray.cluster_resources()['CPU']"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (root / "ray.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the Ray cluster did not accept a driver in 90 s"
            try:
                if subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                                  timeout=30).returncode == 0:
                    break
            except subprocess.TimeoutExpired:
                pass
            time.sleep(1)
        yield address
    finally:
        proc.terminate()  # `ray start --block` stops its processes on SIGTERM; it took ~30 s, so 5 s, then kill
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        log.close()
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


@pytest.fixture(scope="module")
def inputs(tiny_data, tmp_path_factory):
    """200 files: 197 readable images in two sub-folders and 3 that cannot be read."""
    folder = tmp_path_factory.mktemp("inputs") / "in"
    sources = sorted((tiny_data / "test").glob("*/*.png"))
    for i in range(N_GOOD):
        dest = folder / ("a" if i % 2 else "b") / f"img_{i:03d}.png"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sources[i % len(sources)], dest)
    (folder / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (folder / "b" / "empty.jpg").write_bytes(b"")
    (folder / "notes.tif").write_bytes(b"II*\x00garbage")
    return folder


@pytest.fixture(scope="module")
def reference(tiny_detector, inputs, tmp_path_factory):
    """The single-process rows (path -> row) and the model directory they came from."""
    from anomaly_ae import score_folder

    run = tiny_detector.save(tmp_path_factory.mktemp("model") / "run")
    out = tmp_path_factory.mktemp("ref") / "out"
    summary = score_folder(run, inputs, out)
    assert (summary.n_scored, summary.n_failed) == (N_GOOD, 3)
    return run, _rows(out)


def _rows(out: Path) -> list[list[str]]:
    with open(out / "scores.csv", newline="") as f:
        return list(csv.reader(f))


def _same(rows: list[list[str]], ref: list[list[str]], ordered: bool = True) -> None:
    """The same rows (scores within 1e-6); ``ordered=False``: in any order (a resumed run writes kept rows first)."""
    if not ordered:
        rows, ref = [rows[0], *sorted(rows[1:])], [ref[0], *sorted(ref[1:])]
    assert [r[0] for r in rows] == [r[0] for r in ref]  # the same files (each once), in the same order
    for got, want in zip(rows[1:], ref[1:], strict=True):
        assert got[2:] == want[2:] and (got[1] == want[1] or abs(float(got[1]) - float(want[1])) <= 1e-6)


def test_ray_scoring_gives_the_single_process_rows_and_files(cluster, reference, inputs, tmp_path):
    run, ref = reference
    out = tmp_path / "out"
    res = runner.invoke(app, ["score", str(run), str(inputs), "--out", str(out), "--engine", "ray", "--address",
                              cluster, "--actors", "2", "--batch-size", "8", "--json", "-q"])
    assert res.exit_code == 3, res.output  # 3: some files could not be read
    for ray_line in ("Token authentication", "Progress bars disabled", "ray.data", "Ray"):  # -q: Ray is quiet too
        assert ray_line not in res.stderr, res.stderr
    _same(_rows(out), ref)
    for row in _rows(out)[1:]:
        if not row[4]:
            assert (out / "heatmaps" / f"{row[0]}.jpg").is_file() and (out / "masks" / f"{row[0]}.png").is_file()


def test_ray_scoring_of_a_uri_input_with_parquet(cluster, reference, inputs, tmp_path):
    import pyarrow.parquet as pq

    from anomaly_ae import score_folder

    run, ref = reference
    out = tmp_path / "out"  # the actors open the file system of the URI and read the files through Arrow
    summary = score_folder(run, inputs.as_uri(), out, engine="ray", address=cluster, actors=2, batch_size=16,
                           scores_format="parquet")
    assert (summary.n_scored, summary.n_failed) == (N_GOOD, 3)
    _same(_rows(out), ref)
    assert pq.read_table(summary.scores_parquet).column("path").to_pylist() == [r[0] for r in ref[1:]]


def _scoring_actor_pids() -> list[int]:
    found = subprocess.run(["pgrep", "-f", "ScoringActor"], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def test_a_killed_actor_loses_no_row(cluster, reference, inputs, tmp_path):
    from anomaly_ae import score_folder

    run, ref = reference
    out = tmp_path / "out"
    result: dict = {}

    def score() -> None:
        result["summary"] = score_folder(run, inputs, out, engine="ray", address=cluster, actors=2, batch_size=2)

    worker = threading.Thread(target=score)
    worker.start()
    deadline, killed = time.monotonic() + 120, None
    partial = out / "scores.csv.partial"
    while worker.is_alive() and time.monotonic() < deadline and killed is None:
        pids = _scoring_actor_pids()
        if pids and partial.is_file() and len(partial.read_text().splitlines()) > 3:
            os.kill(pids[0], signal.SIGKILL)  # an actor dies mid-run (its process, as a crash would)
            killed = pids[0]
        time.sleep(0.05)
    worker.join(300)
    assert killed is not None, "no scoring actor was seen while the run went on"
    assert result["summary"].n_scored == N_GOOD and result["summary"].n_failed == 3
    _same(_rows(out), ref)


def test_a_rerun_after_sigkill_of_the_driver_resumes(cluster, reference, inputs, tmp_path):
    run, ref = reference
    out = tmp_path / "out"
    args = [sys.executable, "-m", "anomaly_ae", "score", str(run), str(inputs), "--out", str(out), "--engine", "ray",
            "--address", cluster, "--actors", "2", "--batch-size", "2"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    driver = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = out / "scores.csv.partial"
    deadline = time.monotonic() + 120
    while driver.poll() is None and time.monotonic() < deadline:
        if partial.is_file() and len(partial.read_text().splitlines()) > 20:
            break
        time.sleep(0.05)
    assert driver.poll() is None, "the run ended before it could be killed"
    driver.kill()  # SIGKILL: no clean-up at all
    driver.wait()
    kept = len(partial.read_text().splitlines()) - 1
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 3, rerun.stderr[-2000:]
    resumed = re.search(r"resuming: (\d+) already scored", rerun.stderr)
    assert resumed and 0 < int(resumed.group(1)) <= kept, rerun.stderr[-2000:]  # a cut last row is scored again
    _same(_rows(out), ref, ordered=False)


def test_the_ray_engine_without_ray_is_one_line(reference, inputs, tiny_data, tmp_path, monkeypatch):
    run, _ = reference
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    res = runner.invoke(app, ["score", str(run), str(inputs), "--out", str(tmp_path / "o"), "--engine", "ray", "-q"])
    assert res.exit_code == 2
    assert res.output.strip() == "error: the Ray engine needs Ray: pip install 'anomaly-ae[ray]'"
    assert not (tmp_path / "o").exists()
    res = runner.invoke(app, ["train", str(tiny_data / "train" / "good"), "--out", str(tmp_path / "t"), "--engine",
                              "ray", "--no-track", "-q"])
    assert res.exit_code == 2 and res.output.strip() == "error: the Ray engine needs Ray: pip install 'anomaly-ae[ray]'"
    assert not (tmp_path / "t").exists()


def test_two_ray_workers_train_one_model_that_loads_and_scores_like_any_other(cluster, tiny_data, tiny_config_file,
                                                                             tmp_path, monkeypatch):
    import json

    import numpy as np

    import anomaly_ae.pipelines.train_ray as ray_train
    from anomaly_ae import Detector

    results: list[dict] = []  # what train_on_ray returned to the CLI: one Ray training serves both checks

    def recording(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        results.extend(real(*args, **kwargs))
        return results

    real = ray_train.train_on_ray
    monkeypatch.setattr(ray_train, "train_on_ray", recording)
    run = tmp_path / "cli"
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    res = runner.invoke(app, ["train", str(tiny_data / "train" / "good"), "--config", str(tiny_config_file),
                              "--out", str(run), "--epochs", "1", "--engine", "ray", "--workers", "2",
                              "--address", cluster, "--register", "plate", "--alias", "candidate", "--json"])
    assert res.exit_code == 0, res.output
    assert sorted(r["rank"] for r in results) == [0, 1]
    assert results[0]["n_train"] == results[1]["n_train"] == 9  # 24 images: 12 per worker, 3 of them held out
    assert results[0]["loss"] == results[1]["loss"]  # one synchronous update for both workers
    summary = json.loads(res.stdout)
    det = Detector.load(run)  # under this process's backend: the model directory is like any other
    assert det.train_info_["workers"] == 2 and det.config_.train.distribution == "none"
    assert summary["n_train"] == 18 and summary["n_val"] == 3  # both workers' images; rank 0 calibrated on 3

    from mlflow.tracking import MlflowClient  # rank 0 wrote the run's metrics and model; this process ended it

    client = MlflowClient(store)
    mlrun = client.get_run(summary["mlflow_run_id"])
    assert mlrun.info.status == "FINISHED" and det.train_info_["mlflow"]["run_id"] == mlrun.info.run_id
    assert mlrun.data.tags["anomaly_ae.written_by"].startswith("Ray worker rank 0 of 2 (")
    assert [m.step for m in client.get_metric_history(mlrun.info.run_id, "loss")] == [1]  # the epoch, from rank 0
    assert mlrun.data.metrics["threshold"] == pytest.approx(det.threshold_) and mlrun.data.metrics["n_train"] == 18
    assert summary["mlflow_model_uri"] == "models:/plate/1"
    assert client.get_model_version_by_alias("plate", "candidate").run_id == mlrun.info.run_id
    images = sorted((tiny_data / "test").glob("*/*.png"))
    scores = det.score(images)
    assert np.isfinite(scores).all() and summary["threshold"] == det.threshold_
    out = tmp_path / "scores"
    assert runner.invoke(app, ["score", str(run), str(tiny_data / "test"), "--out", str(out), "-q"]).exit_code == 0
    assert [float(r[1]) for r in _rows(out)[1:]] == pytest.approx(scores.tolist(), rel=1e-6)


def test_an_address_where_no_ray_listens_is_one_line_before_any_work(reference, inputs, tiny_data, tmp_path):
    import socket

    pytest.importorskip("ray")
    run, _ = reference
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens
    t0 = time.monotonic()
    res = runner.invoke(app, ["score", str(run), str(inputs), "--out", str(tmp_path / "o"), "--engine", "ray",
                              "--address", f"127.0.0.1:{port}"], env={"ANOMALY_AE_CONNECT_TIMEOUT": "2"})
    assert res.exit_code == 2 and time.monotonic() - t0 < 15
    assert f"--address 127.0.0.1:{port}: no Ray cluster answers there" in " ".join(res.output.split())
    assert not (tmp_path / "o").exists()  # no lock, no partial scores.csv
    res = runner.invoke(app, ["train", str(tiny_data / "train" / "good"), "--engine", "ray", "--workers", "2",
                              "--address", f"127.0.0.1:{port}", "--out", str(tmp_path / "r"), "--no-track"])
    assert res.exit_code == 2 and "no Ray cluster answers there" in " ".join(res.output.split())
    assert not (tmp_path / "r").exists()
