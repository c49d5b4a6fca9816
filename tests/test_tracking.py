import json

import pytest
from typer.testing import CliRunner

from anomaly_ae.cli.main import app


def test_train_logs_params_metrics_and_artifacts(tiny_data, tiny_config_file, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    run_dir = tmp_path / "run"
    res = CliRunner().invoke(
        app,
        ["train", str(tiny_data / "train" / "good"), "--config", str(tiny_config_file), "--out", str(run_dir),
         "--experiment", "unit-test"],
    )
    assert res.exit_code == 0, res.output
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("unit-test")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.info.run_id in res.output
    p = run.data.params
    assert p["train.epochs"] == "2" and p["model.widths"] == "[8, 16]" and p["data.image_size"] == "[32, 32]"
    assert p["data.good_dir"].endswith("good")
    assert len(p) > 25
    # only what this model uses: no MAD k for a quantile threshold, no latent_dim for a conv bottleneck
    assert "threshold.mad_k" not in p and "model.latent_dim" not in p and "scoring.kl_weight" not in p
    tags = run.data.tags
    assert tags["mlflow.source.name"] == "anomaly-ae train" and tags["anomaly_ae.n_images"] == "24"
    assert tags["anomaly_ae.good_dir"] == str((tiny_data / "train" / "good").resolve())
    assert len(tags["anomaly_ae.good_dir_sha256"]) == 64 and tags["keras.backend"] == "tensorflow"
    import getpass
    import subprocess

    assert tags["mlflow.user"] == run.info.user_id == getpass.getuser() and tags["anomaly_ae.version"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # the tests run inside the repository's checkout
        assert tags["mlflow.source.git.commit"] == head.stdout.strip()
    loss = client.get_metric_history(run.info.run_id, "loss")
    val = client.get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in loss] == [1, 2] and [m.step for m in val] == [1, 2]  # epochs as the console counts
    meta = json.loads((run_dir / "detector.json").read_text())
    assert run.data.metrics["threshold"] == meta["threshold"]["value"]
    assert run.data.metrics["val_score_mean"] == meta["score_stats"]["mean"]
    assert run.data.metrics["n_val"] == 6
    check = meta["training"]["self_check"]  # the label-free estimate is tracked beside the losses
    for key in ("image_auroc", "pixel_auroc", "aupro"):
        assert run.data.metrics[f"self_check_{key}"] == pytest.approx(check[key])
    low, high = check["image_auroc_interval"]  # so that runs can be compared with their uncertainty
    assert run.data.metrics["self_check_image_auroc_low"] == pytest.approx(low)
    assert run.data.metrics["self_check_image_auroc_high"] == pytest.approx(high)
    assert "self-check" in res.output and f"{check['pixel_auroc']:.3f}" in res.output
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"validation_grid.png", "config.yaml"} <= top
    import mlflow

    from anomaly_ae.tracking import fluent_tracking_uri

    with fluent_tracking_uri(uri):
        logged = mlflow.search_logged_models(experiment_ids=[exp.experiment_id], output_format="list")
    assert [(m.name, m.source_run_id) for m in logged] == [("model", run.info.run_id)]  # the run's "Logged model"
    grid = client.download_artifacts(run.info.run_id, "validation_grid.png", str(tmp_path))
    assert open(grid, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert meta["training"]["mlflow"]["run_id"] == run.info.run_id

    # evaluate adds its metrics and report to the model's run
    res = CliRunner().invoke(app, ["evaluate", str(run_dir), str(tiny_data), "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    assert "the model's run" in res.output
    after = client.get_run(run.info.run_id)
    ev = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert after.data.metrics["eval_image_auroc"] == pytest.approx(ev["image_auroc"])
    assert after.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")} == {
        "evaluation/metrics.json", "evaluation/report.html"}
    assert len(client.search_runs([exp.experiment_id])) == 1


def test_evaluate_of_an_untracked_model_makes_a_new_run(tiny_detector, tiny_data, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    run_dir = tiny_detector.save(tmp_path / "run")
    res = CliRunner().invoke(app, ["evaluate", str(run_dir), str(tiny_data), "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    assert "a new run" in res.output
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("anomaly-ae").experiment_id])
    assert len(runs) == 1 and "eval_pixel_aupro" in runs[0].data.metrics


def test_default_store_is_sqlite_in_working_dir(tmp_path):
    from anomaly_ae.tracking import local_store_uri

    assert local_store_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_no_track_creates_no_store(tiny_data, tiny_config_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    res = CliRunner().invoke(
        app,
        ["train", str(tiny_data / "train" / "good"), "--config", str(tiny_config_file), "--out", "r",
         "--epochs", "1", "--no-track"],
    )
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
