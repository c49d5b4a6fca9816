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
from anomaly_ae.pipelines.evaluate import evaluate

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
    for part in ("image ROC", "pixel ROC", "per-region overlap (PRO)", "Score histogram", "Worst misses",
                 "Worst false alarms", "predicted anomalous", "data:image/png;base64,"):
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
    assert html.count('<div class="case"') == len(fn) + len(fp)
    # each case: original, heatmap with legend, predicted mask and the true mask (or why there is none)
    assert html.count('alt="heatmap"') == html.count('alt="image"') == len(fn) + len(fp)
    for e in ev.false_negatives + ev.false_positives:
        assert set(e.panels) == ({"image", "heatmap", "predicted mask", "true mask"} if e.record["has_mask"]
                                 else {"image", "heatmap", "predicted mask"})
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["image_auroc"] == pytest.approx(ev.metrics["image_auroc"]) and saved["model"] == str(run)


class _ReportParser(__import__("html.parser").parser.HTMLParser):
    """The per-defect rows (``data-defect`` / ``data-key`` cells), the metric headers and the gallery cases."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, str]] = {}
        self.headers: list[tuple[str, str]] = []  # (title = metrics.json key, shown name)
        self.cases: list[dict[str, object]] = []
        self._row: str | None = None
        self._cell: str | None = None
        self._th: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        a = dict(attrs)
        if tag == "tr" and "data-defect" in a:
            self._row = a["data-defect"]
            self.rows[self._row] = {}
        elif tag == "td" and self._row is not None and "data-key" in a:
            self._cell, self._text = a["data-key"], []
        elif tag == "th" and "title" in a:
            self._th, self._text = a["title"], []
        elif tag == "div" and a.get("class") == "case":
            self.cases.append({"path": a["data-path"], "panels": [], "text": []})
        elif tag == "img" and self.cases and a.get("alt") in ("image", "heatmap", "predicted mask", "true mask"):
            self.cases[-1]["panels"].append(a["alt"])

    def handle_data(self, data):  # noqa: ANN001
        self._text.append(data)
        if self.cases:
            self.cases[-1]["text"].append(data)

    def handle_endtag(self, tag):  # noqa: ANN001
        if tag == "td" and self._cell is not None:
            self.rows[self._row][self._cell] = "".join(self._text).strip()
            self._cell = None
        elif tag == "th" and self._th is not None:
            self.headers.append((self._th, "".join(self._text).strip()))
            self._th = None
        elif tag == "tr":
            self._row = None


def test_the_report_gives_counts_and_misses_per_defect_and_cases_an_engineer_can_act_on(tiny_detector, tmp_path):
    ev = evaluate(tiny_detector, SAMPLE, tmp_path / "eval", n_examples=3)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    parser = _ReportParser()
    parser.feed((tmp_path / "eval" / "report.html").read_text())
    # counts and misses per defect type at the operating threshold: the figures of metrics.json
    assert set(parser.rows) == {*metrics["per_defect"], "good"}
    for name, m in metrics["per_defect"].items():
        row = parser.rows[name]
        assert int(row["images"]) == m["counts"]["anomalous"] > 0
        assert int(row["flagged"]) == m["at_threshold"]["tp"] and int(row["missed"]) == m["at_threshold"]["fn"]
    assert int(parser.rows["good"]["images"]) == metrics["counts"]["good"]
    assert int(parser.rows["good"]["flagged"]) == metrics["at_threshold"]["fp"]
    assert sum(int(parser.rows[d]["missed"]) for d in metrics["per_defect"]) == metrics["at_threshold"]["fn"]
    # plain metric names, the metrics.json key kept as the title
    shown = dict(parser.headers)
    assert shown["image_auroc"] == "Image AUROC" and shown["pixel_aupro"] == "AUPRO"
    assert not any(name == key for key, name in parser.headers)
    html_text = (tmp_path / "eval" / "report.html").read_text()
    assert "the chance that a defective image scores higher than a good one" in html_text
    assert "their colours mix (brown)" in html_text  # the histogram's overlap colour explained
    at = metrics["at_threshold"]
    assert f"at most {at['fpr_upper']:.1%} (95% bound), from {at['calibration_images']} calibration images" in \
        html_text
    # the galleries: original | heatmap with legend | predicted mask | true mask, score and threshold
    cases = {c["path"]: c for c in parser.cases}
    assert len(cases) == len(ev.false_negatives) + len(ev.false_positives) > 0
    for e in ev.false_negatives + ev.false_positives:
        case = cases[e.record["path"]]
        expected = ["image", "heatmap", "predicted mask"] + (["true mask"] if e.record["has_mask"] else [])
        assert case["panels"] == expected
        text = " ".join(case["text"])
        assert f"image score {e.record['score']:.4g} vs threshold {ev.threshold:.4g}" in text
        if not e.record["has_mask"]:
            assert "no true mask" in text
