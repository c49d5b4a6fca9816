import json

import numpy as np
import pytest
from typer.testing import CliRunner

from anomaly_ae.cli.main import app
from anomaly_ae.config import ThresholdConfig
from anomaly_ae.data.images import list_images, read_image
from anomaly_ae.data.synthetic import generate
from anomaly_ae.detector import Detector


@pytest.fixture(scope="module")
def good_pool(tmp_path_factory):
    """200 fresh good 32 px images, independent of the training set."""
    root = generate(tmp_path_factory.mktemp("pool"), n_train=200, n_test_good=0, n_test_defect=0, size=32, seed=11)
    return [read_image(p, 1) for p in list_images(root / "train" / "good")]


@pytest.fixture(scope="module")
def saved_run(tiny_detector, tmp_path_factory):
    return tiny_detector.save(tmp_path_factory.mktemp("calib") / "run")


@pytest.fixture
def det(saved_run):
    """A private copy of the tiny detector: calibration changes it."""
    return Detector.load(saved_run)


@pytest.mark.parametrize("q", [0.8, 0.95])
def test_quantile_calibration_gives_the_requested_fpr_on_held_out_good(det, good_pool, q):
    calib, held_out = good_pool[:100], good_pool[100:]
    det.calibrate(calib, threshold=ThresholdConfig(method="quantile", quantile=q))
    fpr = float(np.mean(det.predict(held_out)))
    sigma = np.sqrt(q * (1 - q) / len(held_out))
    assert abs(fpr - (1 - q)) <= 3.5 * sigma + 0.02, (fpr, 1 - q)
    assert fpr < 0.5  # never "everything is anomalous"
    assert det.expected_fpr_ == pytest.approx(1 - q, abs=0.03)


def test_mad_and_max_are_conservative_on_good_images(det, good_pool):
    calib, held_out = good_pool[:100], good_pool[100:]
    det.calibrate(calib, threshold=ThresholdConfig(method="max"))
    assert det.threshold_ == pytest.approx(det.val_scores_.max())
    assert np.mean(det.predict(held_out)) < 0.1
    det.calibrate(calib, threshold=ThresholdConfig(method="mad", mad_k=3.0))
    assert np.mean(det.predict(held_out)) < 0.25


def test_f1_calibration_with_labelled_data(det, good_pool, tiny_data):
    bad_paths = [p for p in list_images(tiny_data / "test") if p.parent.name != "good"]
    bad = [read_image(p, 1) for p in bad_paths]
    for im in bad:  # make the defects obvious so that F1 has something to separate
        im[8:16, 8:16] = 0
    det.calibrate(good_pool[:40], bad, threshold=ThresholdConfig(method="f1"))
    scores = det.score(good_pool[:40] + bad)
    y = np.r_[np.zeros(40, bool), np.ones(len(bad), bool)]
    from sklearn.metrics import f1_score

    best = max(f1_score(y, scores > t) for t in np.unique(scores))
    assert f1_score(y, scores > det.threshold_) == pytest.approx(best)


def test_calibrate_cli_rewrites_thresholds_only(det, tiny_data, tmp_path):
    run = det.save(tmp_path / "run")
    weights_before = (run / "model.keras").read_bytes()
    created = json.loads((run / "detector.json").read_text())["created"]
    res = CliRunner().invoke(app, ["calibrate", str(run), "--good", str(tiny_data / "test" / "good"),
                                   "--method", "max"])
    assert res.exit_code == 0, res.output
    assert "expected false-alarm rate" in res.output
    meta = json.loads((run / "detector.json").read_text())
    assert meta["threshold"]["method"] == "max" and meta["created"] == created and "calibrated" in meta
    good_scores = Detector.load(run).score(tiny_data / "test" / "good")
    assert meta["threshold"]["value"] == pytest.approx(good_scores.max())
    assert meta["threshold"]["expected_fpr"] == pytest.approx(1 / 5)  # n = 4 good images
    assert (run / "model.keras").read_bytes() == weights_before
    assert "method: max" in (run / "config.yaml").read_text()
    # pixel f1 with masks of the anomalous images
    res = CliRunner().invoke(app, ["calibrate", str(run), "--good", str(tiny_data / "test" / "good"),
                                   "--anomalous", str(tiny_data / "test" / "pit"),
                                   "--masks", str(tiny_data / "ground_truth" / "pit"),
                                   "--pixel-method", "f1"])
    assert res.exit_code == 0, res.output
    assert json.loads((run / "detector.json").read_text())["threshold"]["pixel_method"] == "f1"
    bad = CliRunner().invoke(app, ["calibrate", str(run), "--good", str(tiny_data / "test" / "good"),
                                   "--method", "f1"])
    assert bad.exit_code == 2 and "needs anomalous" in bad.output


def test_thirty_good_images_get_a_stated_rule_its_false_alarm_rate_and_a_warning(tiny_config_file, tmp_path):
    """The new user's case: 30 good images -> 4 held out, too few for quantile 0.99."""
    import yaml

    data = generate(tmp_path / "d", n_train=30, n_test_good=0, n_test_defect=0, size=32, seed=5)
    cfg = yaml.safe_load(tiny_config_file.read_text())
    cfg["data"]["holdout_fraction"] = 0.15
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    good, run = data / "train" / "good", tmp_path / "run"
    res = CliRunner().invoke(app, ["train", str(good), "--config", str(tmp_path / "c.yaml"), "--epochs", "1",
                                   "--no-track", "--out", str(run), "-q"])
    assert res.exit_code == 0, res.output
    meta = json.loads((run / "detector.json").read_text())
    t = meta["threshold"]
    scores = np.array(meta["val_scores"])
    assert len(scores) == 4 and t["value"] >= scores.max()  # not the quantile of 4 scores, their maximum or more
    assert t["expected_fpr"] == pytest.approx(0.2) and t["fpr_upper"] == pytest.approx(1 - 0.05 ** 0.25)
    assert "as 4 are too few for an empirical quantile" in t["rule"] and t["rule"] in " ".join(res.stdout.split())
    assert "expected false-alarm rate on new good images 20.0%, at most 52.7% (95% bound" in res.stdout
    warning = [line for line in res.stderr.splitlines() if "4 good images calibrate" in line]
    assert len(warning) == 1 and f"anomaly-ae calibrate {run} --good MORE_GOOD_DIR" in warning[0]
    assert meta["training"]["good_dir"] == str(good.resolve())

    # calibrating on the training images themselves: one warning naming them (also for a copy of the folder)
    import shutil

    shutil.copytree(good, tmp_path / "copy")
    for given in (good, tmp_path / "copy"):
        res = CliRunner().invoke(app, ["calibrate", str(run), "--good", str(given), "--no-track"])
        assert res.exit_code == 0, res.output
        assert res.stderr.count("holds the images the model was trained on") == 1
        assert "quantile 0.99 of 30 good scores" in res.stdout  # 30 are enough for the quantile
    fresh = generate(tmp_path / "f", n_train=25, n_test_good=0, n_test_defect=0, size=32, seed=6)
    res = CliRunner().invoke(app, ["calibrate", str(run), "--good", str(fresh / "train" / "good"), "--no-track"])
    assert res.exit_code == 0 and "trained on" not in res.stderr and "warning" not in res.stderr, res.output
