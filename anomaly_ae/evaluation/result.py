"""What an evaluation returns: metrics, per-image records, failures and the worst cases for the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Example:
    """One worst case for the report: its record and the heatmap overlay (uint8 ``(H, W, 3)`` BGR, mask outlined).

    ``panels``: what the report shows side by side, each uint8 BGR ``(h, w, 3)``: ``image`` (the
    original), ``heatmap`` (the overlay with its legend), ``predicted mask`` and ``true mask`` (absent
    for an image without one).
    """

    record: dict[str, Any]
    overlay: np.ndarray
    panels: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class EvaluationResult:
    """Metrics, per-image records (no maps), failures, and the worst cases' overlays.

    ``false_negatives``: the lowest-scored anomalous images at or under the threshold, lowest first;
    ``false_positives``: the highest-scored good images over it, highest first.
    """

    metrics: dict[str, Any]
    records: list[dict[str, Any]]
    failures: list[dict[str, str]] = field(default_factory=list)
    false_negatives: list[Example] = field(default_factory=list)
    false_positives: list[Example] = field(default_factory=list)
    threshold: float = float("nan")
    threshold_method: str = ""
    out_dir: Path | None = None
    experiment: str = "anomaly-ae"  # the model's MLflow experiment (config tracking.experiment)
    mlflow_run_id: str | None = None  # the MLflow run that trained the model, if it was tracked
    self_check: dict[str, Any] | None = None  # the model's label-free estimate at training (train_info_)
    #: curves for the report, thinned: ``pixel_roc`` ``{"fpr", "tpr"}`` and ``pro`` ``{"fpr", "pro"}``
    #: (all test pixels; empty without masks)
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    model_dir: Path | None = None
    config_summary: dict[str, str] = field(default_factory=dict)  # architecture, size, scoring, threshold rule
    evaluated_at: str = ""  # ISO 8601, UTC
    #: why the calibrated threshold is not to be trusted yet (PostProcessor.caveats), in words
    caveats: list[str] = field(default_factory=list)

    @property
    def partial(self) -> bool:
        """True when some file could not be read."""
        return bool(self.failures)
