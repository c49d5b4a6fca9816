"""The library calls behind the commands: PostProcessor, score_folder, evaluate (Python API)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from anomaly_ae import PostProcessor, ScoreSummary, score_folder
from anomaly_ae.config import ThresholdConfig


def test_post_processor_fits_the_documented_rules_and_round_trips():
    rng = np.random.default_rng(0)
    scores = rng.gamma(2.0, 1.0, 40)
    maps = rng.random((40, 8, 8)).astype(np.float32) * scores[:, None, None]
    cfg = ThresholdConfig(method="quantile", quantile=0.9, pixel_quantile=0.95)
    post = PostProcessor.fit(scores, maps, cfg)
    assert post.threshold == pytest.approx(np.quantile(scores, 0.9))
    assert post.pixel_threshold == pytest.approx(np.quantile(maps.reshape(40, -1).max(axis=1), 0.95))
    m = int(np.sum(scores > post.threshold))
    assert post.expected_fpr == pytest.approx((m + 1) / (40 + 1))
    assert post.norm_range == (scores.min(), scores.max())
    assert post.heatmap_range == (pytest.approx(float(np.median(maps))), post.pixel_threshold)
    assert post.normalize(np.array([post.threshold]))[0] == pytest.approx(0.5)
    assert post.is_anomalous(np.array([post.threshold, post.threshold + 1e-9])).tolist() == [False, True]
    assert post.mask(np.array([[post.pixel_threshold, post.pixel_threshold * 2]])).tolist() == [[False, True]]
    back = PostProcessor.from_dict(post.to_dict(cfg))
    assert back.threshold == post.threshold and back.norm_range == post.norm_range
    np.testing.assert_array_equal(back.val_scores, post.val_scores)
    assert post.to_dict(cfg)["threshold"]["quantile"] == 0.9  # the rules are recorded beside the numbers
    with pytest.raises(ValueError, match="needs anomalous images"):
        PostProcessor.fit(scores, maps, ThresholdConfig(method="f1"))


def test_score_folder_in_python_matches_its_csv_and_resumes(tiny_detector, tiny_data: Path, tmp_path: Path):
    run = tiny_detector.save(tmp_path / "run")
    events: dict[str, list] = {"started": [], "done": [], "warning": []}

    class Progress:
        def warning(self, line: str) -> None:
            events["warning"].append(line)

        def started(self, todo: int, kept: int | None) -> None:
            events["started"].append((todo, kept))

        def done(self, rel: str, error: str | None) -> None:
            events["done"].append((rel, error))

    summary = score_folder(run, tiny_data / "test", tmp_path / "out", heatmaps=False, listener=Progress())
    assert isinstance(summary, ScoreSummary) and not summary.partial
    with open(summary.scores_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert summary.n_scored == len(rows) == len(events["done"]) and summary.n_failed == 0
    assert summary.n_anomalous == sum(r["is_anomaly"] == "true" for r in rows)
    assert summary.outputs == ["masks"] and (tmp_path / "out" / "masks").is_dir()
    assert events["started"] == [(len(rows), None)]
    assert float(rows[0]["threshold"]) == pytest.approx(tiny_detector.threshold_, rel=1e-7)
    again = score_folder(Path(run), tiny_data / "test", tmp_path / "out", heatmaps=False)
    assert again.n_kept == len(rows) and again.n_scored == len(rows)  # nothing left to score: all resumed


def test_score_folder_needs_a_detector_with_a_model_directory(tiny_detector, tiny_data: Path, tmp_path: Path):
    from anomaly_ae import Detector

    unsaved = Detector.from_state(tiny_detector.to_state())
    unsaved.source_dir_ = None
    with pytest.raises(ValueError, match="save the detector first"):
        score_folder(unsaved, tiny_data / "test", tmp_path / "out")
    assert not (tmp_path / "out").exists()
