"""Evaluate a detector on a labelled folder in the MVTec AD layout, streaming.

::

    DATASET/test/good/*.png                      normal test images
    DATASET/test/<defect>/*.png                  anomalous test images, one folder per defect type
    DATASET/ground_truth/<defect>/<stem>_mask.png  optional pixel masks (non-zero = defect)

Images are scored batch by batch; only scores and integer histograms (:class:`PixelAccumulator`)
are kept, so memory does not grow with the number or size of the images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anomaly_ae.data.images import ImageReadError
from anomaly_ae.data.mvtec import GOOD, mvtec_items, read_mask
from anomaly_ae.detector import Detector
from anomaly_ae.evaluation.metrics import PixelAccumulator, image_metrics


@dataclass
class Evaluation:
    """Metrics plus per-image records (no maps)."""

    metrics: dict[str, Any]
    records: list[dict[str, Any]]
    failures: list[dict[str, str]] = field(default_factory=list)


def evaluate(
    det: Detector,
    dataset_dir: str | Path,
    on_progress: Callable[[int], None] | None = None,
    max_fpr: float = 0.3,
) -> Evaluation:
    """Score every test image and compute image and pixel metrics, overall and per defect type.

    Metric keys: ``image_auroc``, ``image_ap``, ``image_f1_max``, ``image_f1_threshold``; with masks
    ``pixel_auroc`` (+ ``pixel_auroc_bin_error``), ``pixel_f1_max``, ``pixel_f1_threshold``,
    ``pixel_aupro`` (to FPR ``max_fpr``, normalised); and the confusion counts at the calibrated image
    threshold. ``per_defect`` holds the same per defect type (its images against all good ones).
    """
    dataset_dir = Path(dataset_dir)
    problems: list[str] = []
    items = mvtec_items(dataset_dir, problems)
    good_acc = PixelAccumulator()
    defect_accs: dict[str, PixelAccumulator] = {}
    records: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    by_path = {it.path: it for it in items}
    for scored in det.iter_score([it.path for it in items]):
        it = by_path[scored.path]
        if scored.error is not None:
            failures.append({"path": it.rel, "error": scored.error})
        else:
            mask = None
            if it.label and it.mask_path is not None:
                try:
                    mask = read_mask(it.mask_path, scored.amap.shape)
                except ImageReadError as err:  # the image still counts for the image metrics
                    failures.append({"path": it.rel, "error": f"mask {it.mask_path.name}: {err}"})
            records.append({"path": it.rel, "defect": it.defect, "label": it.label, "score": scored.score,
                            "has_mask": mask is not None})
            if not it.label:
                good_acc.add(scored.amap)
            elif mask is not None:
                defect_accs.setdefault(it.defect, PixelAccumulator()).add(scored.amap, mask)
        if on_progress:
            on_progress(1)

    failures += [{"path": "(a folder under test/)", "error": line} for line in problems]
    metrics = _metrics(records, good_acc, defect_accs, det, max_fpr)
    metrics["per_defect"] = {}
    for defect in sorted({r["defect"] for r in records} - {GOOD}):
        sub = [r for r in records if r["defect"] in (GOOD, defect)]
        accs = {defect: defect_accs[defect]} if defect in defect_accs else {}
        metrics["per_defect"][defect] = _metrics(sub, good_acc, accs, det, max_fpr)
    metrics["counts"]["failed"] = len(failures)
    return Evaluation(metrics, records, failures)


def _metrics(
    records: list[dict[str, Any]],
    good_acc: PixelAccumulator,
    defect_accs: dict[str, PixelAccumulator],
    det: Detector,
    max_fpr: float,
) -> dict[str, Any]:
    y = np.array([r["label"] for r in records], bool)
    s = np.array([r["score"] for r in records], np.float64)
    out: dict[str, Any] = {}
    if y.any() and (~y).any():
        out.update(image_metrics(s, y))
    pred = s > det.threshold_
    out["at_threshold"] = {
        "image_threshold": det.threshold_,
        "tp": int(np.sum(pred & y)),
        "fp": int(np.sum(pred & ~y)),
        "tn": int(np.sum(~pred & ~y)),
        "fn": int(np.sum(~pred & y)),
        "fpr": float(np.mean(pred[~y])) if (~y).any() else None,
        "tpr": float(np.mean(pred[y])) if y.any() else None,
        "expected_fpr": det.expected_fpr_,
    }
    acc = good_acc
    for a in defect_accs.values():
        acc = acc.merge(a)
    if acc.has_defects and acc.neg.sum() > 0:
        auc, err = acc.pixel_auroc()
        f1, f1_t = acc.pixel_f1_max()
        out.update(
            pixel_auroc=auc,
            pixel_auroc_bin_error=err,
            pixel_f1_max=f1,
            pixel_f1_threshold=f1_t,
            pixel_aupro=acc.aupro(max_fpr),
            pixel_aupro_max_fpr=max_fpr,
            pixel_threshold=det.pixel_threshold_,
        )
    out["counts"] = {
        "good": int((~y).sum()),
        "anomalous": int(y.sum()),
        "with_masks": int(sum(r["has_mask"] for r in records)),
        "regions": len(acc.regions),
    }
    return out
