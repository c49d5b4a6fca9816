"""Repair training, the learned anomaly map (DRAEM-style) and the label-free self-check."""

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from anomaly_ae.config import DetectorConfig
from anomaly_ae.data.anomalies import AnomalySynthesizer, synthesize_batch
from anomaly_ae.detector import Detector


def _smooth_images(n: int, seed: int) -> np.ndarray:
    """Smooth gradients with a little noise: a defect is easy to repair from its surroundings."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32] / 32
    ims = [80 + 100 * (a * xx + b * yy) + rng.normal(0, 2, (32, 32)) for a, b in rng.uniform(0, 1, (n, 2))]
    return np.clip(ims, 0, 255).astype(np.uint8)[..., None]


def _flat_images(n: int, seed: int) -> np.ndarray:
    return np.clip(120 + np.random.default_rng(seed).normal(0, 4, (n, 32, 32, 1)), 0, 255).astype(np.uint8)


LEARNED = {
    "data": {"image_size": 32, "channels": 1, "holdout_fraction": 0.25, "patch_size": 16, "patches_per_image": 8},
    "model": {"widths": [8], "latent_channels": 4, "discriminator": [8, 16]},
    "train": {"epochs": 20, "batch_size": 8, "patience": 50, "seed": 0, "learning_rate": 0.003,
              "synthetic_anomalies": {"probability": 0.5, "sources": {"noise": 1.0}}},
    "scoring": {"batch_size": 16, "smoothing_sigma": 0.0, "metric": "learned"},
}


@pytest.fixture(scope="module")
def learned_detector():
    return Detector(DetectorConfig.model_validate(LEARNED)).fit(_flat_images(48, 0))


def test_repair_training_repairs_what_plain_training_copies():
    """Inside synthetic defects, the repair-trained model's output is closer to the clean image."""
    base = {
        "data": {"image_size": 32, "channels": 1, "holdout_fraction": 0.25},
        "model": {"widths": [16], "latent_channels": 16},  # capacity enough to copy its input
        "train": {"epochs": 20, "batch_size": 8, "patience": 20, "seed": 0, "learning_rate": 0.003},
        "scoring": {"batch_size": 16},
    }
    images = _smooth_images(64, 0)
    plain = Detector(DetectorConfig.model_validate(base)).fit(images)
    repair_cfg = DetectorConfig.model_validate(base).with_overrides({"train.synthetic_anomalies": {"probability": 1.0}})
    repair = Detector(repair_cfg).fit(images)
    good = np.concatenate([plain.holdout_images_] * 2)
    bad, masks = synthesize_batch(good, AnomalySynthesizer(seed=5), np.random.default_rng(5))
    clean = good
    errors = []
    for det in (plain, repair):
        x_hat = det.scorer_.reconstruct(det.preprocessing_(bad))[..., 0]
        errors.append(np.abs(x_hat - clean[..., 0] / 255.0)[masks].mean())
    assert errors[1] < 0.92 * errors[0], errors


def test_learned_map_separates_pasted_defects_from_good_images(learned_detector):
    test = _flat_images(40, 1)
    bad, _ = synthesize_batch(test[20:], AnomalySynthesizer(sources={"noise": 1.0}, seed=3), np.random.default_rng(3))
    scores = learned_detector.score(np.concatenate([test[:20], bad]))
    assert roc_auc_score(np.r_[np.zeros(20), np.ones(20)], scores) > 0.9
    maps = learned_detector.anomaly_maps(test[:2])
    assert maps.shape == (2, 32, 32) and maps.min() >= 0 and maps.max() <= 1  # probabilities


def test_learned_map_model_round_trips(learned_detector, tmp_path):
    images = _flat_images(6, 2)
    learned_detector.save(tmp_path / "m")
    loaded = Detector.load(tmp_path / "m")
    assert loaded.model_.has_learned_map and loaded.config_.scoring.metric == "learned"
    np.testing.assert_array_equal(loaded.score(images), learned_detector.score(images))
    np.testing.assert_array_equal(loaded.anomaly_maps(images), learned_detector.anomaly_maps(images))
    info = json.loads((tmp_path / "m" / "detector.json").read_text())
    assert info["training"]["self_check"] == learned_detector.train_info_["self_check"]


def test_self_check_is_reproducible_and_seeded(learned_detector):
    good = learned_detector.holdout_images_
    a = learned_detector.self_check(good)
    b = learned_detector.self_check(good)
    c = learned_detector.self_check(good, seed=1)
    assert a == b
    assert a != c and c["seed"] == 1
    assert a == learned_detector.train_info_["self_check"]  # what fit stored
    for key in ("image_auroc", "pixel_auroc", "aupro"):
        assert 0.0 <= a[key] <= 1.0
    assert a["n_good"] == len(good) and a["n_defective"] == 2 * len(good) and a["candidates"] == 1


def test_select_auto_keeps_the_best_setting_on_good_images_only(learned_detector):
    det = Detector.from_state(learned_detector.to_state())
    fixed = det.self_check(det_holdout := learned_detector.holdout_images_)
    chosen = det.fit_scoring(det_holdout)
    assert chosen["selected"] and chosen["candidates"] > 20
    objective = lambda r: (r["image_auroc"] + r["pixel_auroc"] + r["aupro"]) / 3  # noqa: E731
    # best on the set of defects that chose it; the figures reported come from a second set (version 3)
    assert objective(chosen["selection"]) >= objective(fixed["selection"])
    assert objective(chosen["selection"]) == pytest.approx(max(c.objective for c in det.candidates_), abs=1e-6)
    s = det.config_.scoring
    assert (s.metric, s.smoothing_sigma, s.reduction) == (chosen["metric"], chosen["smoothing_sigma"],
                                                          chosen["reduction"])
    assert learned_detector.config_.scoring.metric == "learned"  # the original is untouched


def test_config_rules_of_the_learned_map():
    with pytest.raises(ValueError, match="needs a model with a discriminator"):
        DetectorConfig().with_overrides({"scoring.metric": "learned"})
    with pytest.raises(ValueError, match="set train.synthetic_anomalies"):
        DetectorConfig().with_overrides({"model.discriminator": [8, 16]})
    with pytest.raises(ValueError, match="blend"):
        DetectorConfig().with_overrides({"train.synthetic_anomalies": {"blend": [0.5, 0.2]}})
    # the discriminator's depth counts in the size rule: 3 blocks need multiples of 8
    cfg = {"data.image_size": 36, "model.widths": [8, 16], "model.discriminator": [4, 8, 8],
           "train.synthetic_anomalies": {}}
    with pytest.raises(ValueError, match="divisible"):
        DetectorConfig().with_overrides(cfg)


@pytest.mark.parametrize("sizes,max_side,patch,expected,patch_after", [
    ([(460, 1130)] * 3, 512, 64, (208, 512), 64),  # BSData frames: aspect kept, multiples of 16
    ([(1250, 500)], 512, 64, (512, 208), 64),  # tall parts
    ([(250, 400), (260, 410), (240, 390)], 512, 64, (256, 400), 64),  # not scaled up (only rounded)
    ([(30, 30)], 512, 64, (32, 32), 32),  # not enlarged to the patch: the patch shrinks to the image (issue 38)
    ([(40, 300)], 512, 64, (32, 304), 32),  # a thin strip: the patch is its width
    ([(128, 128)], 512, None, (128, 128), None),
])
def test_auto_image_size_follows_the_images(sizes, max_side, patch, expected, patch_after):
    cfg = DetectorConfig().with_overrides({"data.image_size": "auto", "data.max_side": max_side,
                                           "data.patch_size": patch, "model.widths": [8, 16, 32, 64]})
    resolved = cfg.with_image_size(sizes)
    assert resolved.data.image_size == expected and resolved.data.patch_size == patch_after
    note = cfg.patch_note(resolved)
    assert (note is None) == (patch_after == patch)
    if note is not None:
        assert note == (f"data.patch_size {patch} is larger than the training images ({expected[0]}x{expected[1]} "
                        f"at model size): training on patches of {patch_after} px, their shorter side")


def test_fit_resolves_auto_size_and_saves_it(tmp_path):
    images = np.random.default_rng(0).integers(0, 255, (8, 40, 72, 1), dtype=np.uint8)
    cfg = DetectorConfig().with_overrides({
        "data.image_size": "auto", "data.patch_size": 16, "data.patches_per_image": 2, "model.widths": [4, 8],
        "model.latent_channels": 2, "train.epochs": 1, "train.batch_size": 8, "data.holdout_fraction": 0.25})
    det = Detector(cfg).fit(images)
    assert det.config_.data.image_size == (40, 72) and det.preprocessing_.image_size == (40, 72)
    # fit leaves the config the user passed as it was (scikit-learn's rule); the fitted one is config_
    assert det.config is cfg and cfg.data.image_size == "auto"
    det.save(tmp_path / "m")
    assert Detector.load(tmp_path / "m").config_.data.image_size == (40, 72)


def test_calibrate_select_scoring_tunes_a_saved_model(learned_detector, tmp_path):
    """``calibrate --select-scoring``: the self-check picks the scoring of a saved model from good images."""
    import cv2
    from typer.testing import CliRunner

    from anomaly_ae.cli.main import app

    run = learned_detector.save(tmp_path / "run")
    good = tmp_path / "good"
    good.mkdir()
    for i, im in enumerate(_flat_images(8, 5)):
        cv2.imwrite(str(good / f"{i}.png"), im)
    res = CliRunner().invoke(app, ["calibrate", str(run), "--good", str(good), "--select-scoring"])
    assert res.exit_code == 0, res.output
    saved = json.loads((run / "detector.json").read_text())
    check = saved["training"]["self_check"]
    assert check["selected"] and check["n_good"] == 8 and check["candidates"] > 20
    assert saved["config"]["scoring"]["metric"] == check["metric"]
    assert saved["config"]["scoring"]["smoothing_sigma"] == check["smoothing_sigma"]
    assert f"best of {check['candidates']}" in res.output
    assert Detector.load(run).config_.scoring.reduction == check["reduction"]


def test_gradient_clipping_reaches_the_optimizer():
    """``train.clip_grad_norm`` bounds every update (the learned map's loss can spike by 1000x)."""
    cfg = DetectorConfig.model_validate(LEARNED).with_overrides({"train.clip_grad_norm": 0.5, "train.epochs": 1})
    det = Detector(cfg).fit(_flat_images(16, 3))
    assert det.model_.optimizer.global_clipnorm == 0.5
    plain_cfg = DetectorConfig.model_validate(LEARNED).with_overrides({"train.epochs": 1})
    plain = Detector(plain_cfg).fit(_flat_images(16, 3))
    assert plain.model_.optimizer.global_clipnorm is None


def test_self_check_reports_on_a_second_set_with_an_interval(learned_detector):
    """Version 3: the figures come from defects other than the ones that chose the setting, and the image
    AUROC has a 95% bootstrap interval around it."""
    det = Detector.from_state(learned_detector.to_state())
    check = det.fit_scoring(learned_detector.holdout_images_)
    assert check["version"] == 3
    lo, hi = check["image_auroc_interval"]
    assert 0.0 <= lo <= check["image_auroc"] <= hi <= 1.0
    best = det.candidates_[0]
    assert check["selection"]["image_auroc"] == round(best.image_auroc, 6)  # the choosing set's figure
    # the reported one is recomputed on the second set: the same setting, other defects
    from anomaly_ae.evaluation.self_check import REPORT_SEED, SELF_CHECK_SEED, synthetic_defects

    assert REPORT_SEED != SELF_CHECK_SEED
    a, _ = synthetic_defects(learned_detector.holdout_images_, SELF_CHECK_SEED)
    b, _ = synthetic_defects(learned_detector.holdout_images_, SELF_CHECK_SEED + 1)
    assert not np.array_equal(a, b)


def test_auroc_interval_is_a_bootstrap_of_the_auroc():
    from anomaly_ae.evaluation.self_check import auroc_interval

    rng = np.random.default_rng(0)
    good, bad = rng.normal(0, 1, 40), rng.normal(1.2, 1, 80)
    auc = roc_auc_score(np.r_[np.zeros(40), np.ones(80)], np.r_[good, bad])
    lo, hi = auroc_interval(good, bad)
    assert lo < auc < hi and 0.08 < hi - lo < 0.3
    lo4, hi4 = auroc_interval(np.tile(good, 4), np.tile(bad, 4))  # four times the images: about half as wide
    assert 0.35 < (hi4 - lo4) / (hi - lo) < 0.65
    assert auroc_interval(np.zeros(10), np.ones(10)) == (1.0, 1.0)
    assert auroc_interval(np.zeros(10), np.zeros(10)) == (0.5, 0.5)  # ties count half


def test_learning_rate_steps_down_at_the_milestones():
    """``train.lr_milestones`` (DRAEM's recipe: x0.2 after 80% and 90% of the epochs) reaches the optimizer,
    counted in optimizer steps so that a resumed training keeps the same rate."""
    from anomaly_ae.training.loop import learning_rate

    schedule = learning_rate(1e-4, [0.8, 0.9], 0.2, epochs=10, steps_per_epoch=5)
    rates = [float(schedule(step)) for step in (0, 40, 41, 45, 46, 1000)]
    assert rates == pytest.approx([1e-4, 1e-4, 2e-5, 2e-5, 4e-6, 4e-6])
    assert learning_rate(1e-3, [], 0.2, 10, 5) == 1e-3
    cfg = DetectorConfig.model_validate(LEARNED).with_overrides(
        {"train.epochs": 4, "train.lr_milestones": [0.5], "train.lr_decay": 0.1})
    det = Detector(cfg).fit(_flat_images(16, 3))
    opt = det.model_.optimizer
    assert int(opt.iterations) > 0 and float(opt.learning_rate) == pytest.approx(cfg.train.learning_rate * 0.1)
    with pytest.raises(ValueError):
        DetectorConfig.model_validate(LEARNED).with_overrides({"train.lr_milestones": [1.5]})
