import json
from pathlib import Path

import numpy as np
import pytest
from reference_metrics import exact_aupro
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from anomaly_ae.cli.main import app
from anomaly_ae.data.images import read_image
from anomaly_ae.data.mvtec import mvtec_items, read_mask
from anomaly_ae.evaluation.evaluate import evaluate

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data" / "metal_plate"


def _direct(det, root):
    """Maps, masks, scores and labels computed directly (all in memory) for a cross-check."""
    maps, masks, scores, labels, defects = [], [], [], [], []
    for it in mvtec_items(root):
        image = read_image(it.path, det.preprocessing_.channels)
        s, m = det.score_images([image])
        maps.append(m[0])
        masks.append(read_mask(it.mask_path, m[0].shape) if it.mask_path else np.zeros(m[0].shape, bool))
        scores.append(s[0])
        labels.append(it.label)
        defects.append(it.defect)
    return maps, masks, np.array(scores), np.array(labels), defects


@pytest.fixture(scope="module")
def sample_eval(tiny_detector):
    return evaluate(tiny_detector, SAMPLE)


def test_metrics_match_a_direct_sklearn_computation(tiny_detector, sample_eval):
    m = sample_eval.metrics
    maps, masks, scores, labels, defects = _direct(tiny_detector, SAMPLE)
    assert m["counts"] == {"good": 30, "anomalous": 45, "with_masks": 45, "regions": m["counts"]["regions"],
                           "failed": 0}
    assert m["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    y = np.concatenate([k.ravel() for k in masks])
    v = np.concatenate([a.ravel() for a in maps])
    exact = roc_auc_score(y, v)
    assert abs(m["pixel_auroc"] - exact) <= m["pixel_auroc_bin_error"] + 1e-9
    assert m["pixel_auroc_bin_error"] < 1e-3
    assert m["pixel_aupro"] == pytest.approx(exact_aupro(maps, masks, 0.3), abs=2e-3)
    assert 0.0 <= m["pixel_aupro"] <= 1.0
    # per defect type: that type's images against every good image
    d = "scratch"
    sel = np.array([x in ("good", d) for x in defects])
    assert m["per_defect"][d]["image_auroc"] == pytest.approx(roc_auc_score(labels[sel], scores[sel]))
    assert set(m["per_defect"]) == {"scratch", "stain", "pit"}
    at = m["at_threshold"]
    assert at["tp"] + at["fn"] == 45 and at["tn"] + at["fp"] == 30
    assert at["fp"] == int(np.sum(scores[~labels] > tiny_detector.threshold_))


def test_evaluate_cli_writes_metrics_and_report(tiny_detector, tmp_path, sample_eval):
    run = tiny_detector.save(tmp_path / "run")
    out = tmp_path / "eval"
    res = CliRunner().invoke(app, ["evaluate", str(run), str(SAMPLE), "--out", str(out), "--no-track"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("image_auroc", "pixel_auroc", "image_f1_max", "pixel_aupro", "image_f1_threshold",
                "pixel_f1_threshold", "per_defect", "counts"):
        assert key in metrics
    assert metrics["image_auroc"] == pytest.approx(sample_eval.metrics["image_auroc"])
    html = (out / "report.html").read_text()
    for part in ("image ROC", "pixel ROC", "per-region overlap (PRO)", "Score histogram", "Worst false negatives",
                 "Worst false positives", "predicted anomalous", "data:image/png;base64,"):
        assert part in html
    # the training-time estimate sits beside the measured figures
    check = tiny_detector.train_info_["self_check"]
    assert "self-check (synthetic defects)" in html and f"<td>{check['pixel_auroc']:.4f}</td>" in html
    assert "image AUROC" in res.output


def test_evaluate_needs_mvtec_layout(tiny_detector, tmp_path):
    run = tiny_detector.save(tmp_path / "run")
    res = CliRunner().invoke(app, ["evaluate", str(run), str(tmp_path), "--out", str(tmp_path / "o"), "--no-track"])
    assert res.exit_code == 2


def test_evaluate_scores_each_image_once_and_the_report_reuses_its_worst_cases(tiny_detector, tmp_path, monkeypatch):
    """The report's galleries come from the maps kept while streaming: no image is scored twice."""
    from anomaly_ae import evaluate as evaluate_folder
    from anomaly_ae.detector import Detector

    run = tmp_path / "run"
    tiny_detector.save(run)
    scored: list[int] = []
    original = Detector.score_images

    def counting(self, images):
        scored.append(len(images))
        return original(self, images)

    monkeypatch.setattr(Detector, "score_images", counting)
    ev = evaluate_folder(run, SAMPLE, tmp_path / "eval", n_examples=2)
    n_items = len(mvtec_items(SAMPLE))
    assert sum(scored) == n_items  # written report included
    t = ev.threshold
    fn = sorted((r for r in ev.records if r["label"] and r["score"] <= t), key=lambda r: r["score"])[:2]
    fp = sorted((r for r in ev.records if not r["label"] and r["score"] > t), key=lambda r: -r["score"])[:2]
    assert len(fn) + len(fp) >= 2  # the tiny model makes mistakes on both sides, so the galleries are not empty
    assert [e.record["path"] for e in ev.false_negatives] == [r["path"] for r in fn]
    assert [e.record["path"] for e in ev.false_positives] == [r["path"] for r in fp]
    for e in ev.false_negatives + ev.false_positives:
        image = read_image(SAMPLE / "test" / e.record["path"], 1)
        assert e.overlay.shape == (*image.shape[:2], 3) and e.overlay.dtype == np.uint8
    html = (tmp_path / "eval" / "report.html").read_text()
    assert html.count("<figure>") == len(fn) + len(fp)
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["image_auroc"] == pytest.approx(ev.metrics["image_auroc"]) and saved["model"] == str(run)
