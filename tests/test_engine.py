"""The run object and the options records: what a Python user of ``Engine`` gets, and that it is what the
commands do."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from anomaly_ae import CalibrateOptions, Engine, EvaluateOptions, OutputConflict, ScoreOptions, TrainOptions
from anomaly_ae.detector import Detector
from anomaly_ae.pipelines.score import score_folder


def test_an_options_record_is_validated_once_frozen_and_copied_with_changes():
    opts = ScoreOptions(heatmaps=False, masks=False)
    assert opts.heatmaps == "none" and opts.kinds == [] and opts.max_pixels is None
    with pytest.raises(ValueError, match=r"heatmaps: .*'every'"):
        ScoreOptions(heatmaps="every")
    with pytest.raises(ValueError, match="actors"):
        opts.with_(actors=0)  # a changed copy is validated too (model_copy would not be)
    with pytest.raises(ValueError, match="Extra inputs"):
        ScoreOptions.of(None, {"progress": object()})  # run plumbing is not an option
    with pytest.raises(Exception, match="frozen"):
        opts.masks = True  # type: ignore[misc]
    assert ScoreOptions.of(opts, {"max_megapixels": 2}).max_pixels == 2_000_000 and opts.max_megapixels is None
    assert TrainOptions().workers == 1 and EvaluateOptions().max_fpr == 0.3
    assert CalibrateOptions(good="g").threshold_updates == dict.fromkeys(
        ("method", "quantile", "mad_k", "pixel_method", "pixel_quantile"))


def test_engine_fit_is_the_train_command_from_python(tiny_config, tiny_data, tmp_path):
    run = tmp_path / "run"
    engine = Engine(run, tracking=f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    det = engine.fit(tiny_data / "train" / "good", tiny_config)
    assert (run / "model.keras").is_file() and not (run / "checkpoint").exists()  # checkpoints go once saved
    summary = engine.summary_
    assert summary["model_dir"] == str(run) and summary["threshold"] == pytest.approx(det.threshold_)
    recorded = Detector.load(run).train_info_["mlflow"]
    assert recorded["run_id"] == summary["mlflow_run_id"] == engine.tracker_.run_id
    from mlflow.tracking import MlflowClient

    logged = MlflowClient(engine.tracking_uri).get_run(recorded["run_id"])
    assert logged.info.status == "FINISHED" and logged.data.params["model.name"] == tiny_config.model.name
    assert len(MlflowClient(engine.tracking_uri).get_metric_history(recorded["run_id"], "loss")) == \
        summary["epochs_run"]
    with pytest.raises(OutputConflict, match=r"overwrite=True.*another out_dir"):  # parameters, not flags
        Engine(run, tracking=False).fit(tiny_data / "train" / "good", tiny_config)


def test_engine_score_writes_what_score_folder_writes(tiny_detector, tiny_data, tmp_path):
    run = tiny_detector.save(tmp_path / "run")
    opts = ScoreOptions(heatmaps="anomalous", raw_maps=True)
    summary = Engine(tmp_path / "a", tracking=False).score(run, tiny_data / "test", opts)
    direct = score_folder(run, tiny_data / "test", tmp_path / "b", heatmaps="anomalous", raw_maps=True)
    rows_a = list(csv.reader(open(summary.scores_csv, encoding="utf-8")))
    rows_b = list(csv.reader(open(direct.scores_csv, encoding="utf-8")))
    assert rows_a == rows_b and summary.n_anomalous == direct.n_anomalous > 0
    # the verdict column is the post-processor's: is_anomalous of the score, nothing else
    post = tiny_detector.postprocessor_
    assert all((r[2] == "true") == bool(post.is_anomalous(float(r[1]))) for r in rows_a[1:])
    heatmaps = list((tmp_path / "a" / "heatmaps").rglob("*.jpg"))
    assert len(heatmaps) == summary.n_anomalous  # only the anomalous ones, as asked
    maps = sorted((tmp_path / "a" / "maps").rglob("*.npy"))
    assert maps and np.load(maps[0]).dtype == np.float32
    one = tiny_data / "test" / "good" / "000.png"
    verdicts = Engine(tracking=False).score(run, one)  # one file: its verdict, nothing written
    by_path = {r[0]: r for r in rows_a[1:]}
    assert len(verdicts) == 1 and verdicts[0].score == pytest.approx(float(by_path["good/000.png"][1]), rel=1e-6)
    with pytest.raises(ValueError, match="for a folder"):
        Engine(tracking=False).score(run, [tiny_data / "test" / "good" / "000.png"], ScoreOptions(engine="ray"))


def test_the_mask_is_strictly_above_the_pixel_threshold(tiny_detector):
    post = tiny_detector.postprocessor_
    t = post.pixel_threshold
    amap = np.array([[t - 1e-9, t, t + 1e-9]], np.float64)
    assert post.mask(amap).tolist() == [[False, False, True]]  # equal to the threshold: not a defect pixel
    assert post.is_anomalous(np.array([np.nan, post.threshold, post.threshold * 2])).tolist() == [False, False, True]


def test_the_self_check_reports_and_fit_scoring_changes_the_model(tiny_detector):
    det = Detector.from_state(tiny_detector.to_state())
    before = det.config_.scoring
    check = det.self_check(tiny_detector.holdout_images_)
    assert det.config_.scoring == before and check["selected"] is False and not hasattr(det, "candidates_")
    chosen = det.fit_scoring(tiny_detector.holdout_images_)
    assert chosen["selected"] is True and len(det.candidates_) == chosen["candidates"] > 1
    assert det.config_.scoring.model_dump() == before.model_copy(update=det.candidates_[0].setting).model_dump()
