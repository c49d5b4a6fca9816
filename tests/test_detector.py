import json
from pathlib import Path

import numpy as np
import pytest

from anomaly_ae.artifact import SCHEMA_VERSION, ModelDirError
from anomaly_ae.data.images import list_images, read_image
from anomaly_ae.detector import Detector, NotFittedError
from anomaly_ae.pipelines.score_batch import iter_scored


def test_fitted_attributes(tiny_detector):
    d = tiny_detector
    info = d.train_info_
    assert info["n_train"] == 18 and info["n_val"] == 6  # 25% of 24 held out
    assert info["epochs_run"] == 2 and len(d.history_["loss"]) == 2 and len(d.history_["val_loss"]) == 2
    assert d.val_scores_.shape == (6,)
    assert d.score_stats_.count == 6
    # 6 held-out scores are too few for quantile 0.99: the small-sample rule, never below their maximum
    s = d.val_scores_
    normal_fit = np.median(s) + 2.3263479 * 1.4826 * np.median(np.abs(s - np.median(s)))  # z of 0.99
    assert d.threshold_ == pytest.approx(max(s.max(), normal_fit))
    assert d.postprocessor_.rule.startswith("the larger of the highest of 6 good scores and their quantile 0.99 "
                                            "under a robust normal fit (median + 2.33 x 1.4826 x MAD)")
    lo, hi = d.heatmap_range_
    assert 0 <= lo < hi


def test_score_maps_predict_shapes(tiny_detector, tiny_data):
    paths = list_images(tiny_data / "test")
    images = [read_image(p, 1) for p in paths]
    scores = tiny_detector.score(images)
    assert scores.shape == (len(paths),) and np.isfinite(scores).all()
    maps = tiny_detector.anomaly_maps(np.stack(images))
    assert maps.shape == (len(paths), 32, 32)
    # score = reduction of the model-size map (max for the tiny config)
    np.testing.assert_allclose(scores, maps.reshape(len(maps), -1).max(axis=1), rtol=1e-5)
    pred = tiny_detector.predict(images)
    assert pred.dtype == bool
    np.testing.assert_array_equal(pred, scores > tiny_detector.threshold_)
    # a folder path and arrays give the same scores
    np.testing.assert_allclose(tiny_detector.score(tiny_data / "test"), scores)


def test_maps_come_back_at_original_size(tiny_detector):
    rng = np.random.default_rng(0)
    images = [(rng.random((48, 80)) * 255).astype(np.uint8), (rng.random((32, 32)) * 255).astype(np.uint8)]
    scores, maps = tiny_detector.score_images(images)
    assert [m.shape for m in maps] == [(48, 80), (32, 32)]
    assert scores.shape == (2,)


def test_higher_score_for_an_obvious_defect(tiny_detector, tiny_data):
    good = read_image(list_images(tiny_data / "test" / "good")[0], 1)
    bad = good.copy()
    bad[10:20, 10:20] = 0  # a black square
    s_good, s_bad = tiny_detector.score([good, bad])
    assert s_bad > s_good


def test_save_load_round_trip(tiny_detector, tiny_data, tmp_path):
    run = tiny_detector.save(tmp_path / "run")
    assert sorted(p.name for p in run.iterdir()) == [".anomaly-ae-manifest.json", "config.yaml", "detector.json",
                                                     "model.keras"]
    meta = json.loads((run / "detector.json").read_text())
    assert meta["schema_version"] == SCHEMA_VERSION
    assert meta["threshold"]["value"] == tiny_detector.threshold_
    assert meta["score_stats"]["count"] == 6 and len(meta["val_scores"]) == 6
    assert meta["preprocessing"]["image_size"] == [32, 32] and meta["preprocessing"]["channels"] == 1
    assert {"anomaly_ae", "keras", "backend"} <= set(meta["versions"])
    assert meta["config"]["model"]["widths"] == [8, 16]
    loaded = Detector.load(run)
    assert loaded.threshold_ == tiny_detector.threshold_
    assert loaded.config_ == tiny_detector.config_
    x = tiny_data / "test"
    np.testing.assert_array_equal(loaded.score(x), tiny_detector.score(x))
    # saving again over an existing directory replaces the files
    tiny_detector.save(run)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_load_errors_are_clear(tmp_path, tiny_detector):
    with pytest.raises(ModelDirError, match="not a model directory"):
        Detector.load(tmp_path / "missing")
    run = tiny_detector.save(tmp_path / "run")
    meta = json.loads((run / "detector.json").read_text())
    meta["schema_version"] = 99
    (run / "detector.json").write_text(json.dumps(meta))
    with pytest.raises(ModelDirError, match="schema_version 99"):
        Detector.load(run)


def test_unfitted_detector_refuses():
    with pytest.raises(NotFittedError):
        Detector().score(np.zeros((1, 32, 32, 1), np.uint8))


def test_fit_on_arrays_and_rgb(tiny_config):
    cfg = tiny_config.with_overrides({"data.channels": 3, "train.epochs": 1})
    x = (np.random.default_rng(0).random((8, 40, 40, 3)) * 255).astype(np.uint8)
    det = Detector(cfg).fit(x)
    assert det.train_info_["n_train"] == 6
    assert det.score(x).shape == (8,)
    assert det.anomaly_maps(x).shape == (8, 40, 40)


def test_same_seed_same_model(tiny_config, tiny_data):
    cfg = tiny_config.with_overrides({"train.epochs": 1})
    a = Detector(cfg).fit(tiny_data / "train" / "good")
    b = Detector(cfg).fit(tiny_data / "train" / "good")
    np.testing.assert_allclose(a.val_scores_, b.val_scores_, rtol=1e-5)


def test_unreadable_training_files_are_skipped(tiny_config, tiny_data, tmp_path):
    import shutil

    good = tmp_path / "good"
    shutil.copytree(tiny_data / "train" / "good", good)
    (good / "broken.png").write_bytes(b"not an image")
    det = Detector(tiny_config.with_overrides({"train.epochs": 1})).fit(good)
    assert [s["path"].endswith("broken.png") for s in det.train_info_["skipped"]] == [True]
    assert det.train_info_["n_train"] + det.train_info_["n_val"] == 24


def test_load_reports_missing_fields(tmp_path, tiny_detector):
    run = tiny_detector.save(tmp_path / "run")
    meta = json.loads((run / "detector.json").read_text())
    del meta["threshold"]["pixel_value"]
    (run / "detector.json").write_text(json.dumps(meta))
    with pytest.raises(ModelDirError, match="field threshold.pixel_value: Field required"):
        Detector.load(run)


def test_iter_score_keeps_order_and_reports_failures(tiny_detector, tiny_data, tmp_path):
    import shutil

    paths = list_images(tiny_data / "test")[:5]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    copy = tmp_path / "ok.png"
    shutil.copy(paths[0], copy)
    order = [paths[1], bad, paths[2], copy, paths[3], paths[4]]
    items = list(iter_scored(tiny_detector, order, batch_size=2))
    assert [it.path for it in items] == order
    assert items[1].error and "cannot decode" in items[1].error and items[1].score is None
    ok = [it for it in items if it.error is None]
    np.testing.assert_allclose([it.score for it in ok], tiny_detector.score([it.image for it in ok]), rtol=1e-6)
    assert items[3].score == pytest.approx(tiny_detector.score(paths[0])[0], rel=1e-6)


def test_non_finite_maps_are_reported_per_file(tiny_detector, tiny_data, tmp_path):
    import keras

    from anomaly_ae.detector import Detector

    det = Detector.load(tiny_detector.save(tmp_path / "run"))
    layer = det.model_.decoder.get_layer("reconstruction")
    bias = keras.ops.convert_to_numpy(layer.bias).copy()
    bias[:] = np.nan  # a numerical fault of the model: every map is NaN
    layer.bias.assign(bias)
    paths = sorted((tiny_data / "test" / "good").glob("*.png"))
    items = list(iter_scored(det, paths, batch_size=3))
    assert [i.path for i in items] == paths
    assert all(i.score is None and "not finite" in i.error for i in items)


def test_unsafe_model_directories_are_refused(tmp_path, tiny_detector):
    import shutil
    import zipfile

    import keras

    run = tiny_detector.save(tmp_path / "run")
    for version, why in ((2, "newer anomaly-ae"), (0, "older anomaly-ae")):
        bad = tmp_path / f"v{version}"
        shutil.copytree(run, bad)
        meta = json.loads((bad / "detector.json").read_text())
        meta["schema_version"] = version
        (bad / "detector.json").write_text(json.dumps(meta))
        with pytest.raises(ModelDirError, match=why):
            Detector.load(bad)

    pickled = tmp_path / "pickled"
    shutil.copytree(run, pickled)
    (pickled / "extra_state.pkl").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ModelDirError, match="extra_state.pkl"):
        Detector.load(pickled)

    smuggled = tmp_path / "smuggled"
    shutil.copytree(run, smuggled)
    with zipfile.ZipFile(smuggled / "model.keras", "a") as z:
        z.writestr("payload.pkl", b"\x80\x04K\x01.")
    with pytest.raises(ModelDirError, match="SHA-256 is not the one detector.json recorded"):
        Detector.load(smuggled)  # the changed archive fails its recorded checksum first
    _rerecord(smuggled)  # a smuggler who also edits the record meets the archive check
    with pytest.raises(ModelDirError, match="unexpected member 'payload.pkl'"):
        Detector.load(smuggled)

    # a model.keras whose graph holds a Lambda layer (arbitrary Python code): safe mode refuses it
    lam = tmp_path / "lambda"
    shutil.copytree(run, lam)
    inp = keras.Input((32, 32, 1))
    keras.Model(inp, keras.layers.Lambda(lambda t: t * 2.0)(inp)).save(lam / "model.keras")
    _rerecord(lam)
    with pytest.raises(ModelDirError, match="Lambda layer"):
        Detector.load(lam)


def _rerecord(run: Path) -> None:
    """Record the checksum of ``run``'s current model.keras in its detector.json, as a tamperer could."""
    from anomaly_ae.io.files import file_sha256

    meta = json.loads((run / "detector.json").read_text())
    meta["files"]["model.keras"] = file_sha256(run / "model.keras")
    (run / "detector.json").write_text(json.dumps(meta))


def test_output_paths_cannot_escape_the_output_folder(tmp_path):
    from anomaly_ae.io.files import output_path

    out = tmp_path / "out"
    out.mkdir()
    assert output_path(out, "a/b.jpg", ".png") == out / "a" / "b.jpg.png"
    for rel in ("../evil.jpg", "a/../../evil.jpg", "/etc/passwd"):
        with pytest.raises(ValueError, match="escape"):
            output_path(out, rel, ".png")
    (out / "link").symlink_to(tmp_path, target_is_directory=True)  # a link planted in OUT_DIR
    with pytest.raises(ValueError, match="through a link"):
        output_path(out, "link/x.jpg", ".png")
