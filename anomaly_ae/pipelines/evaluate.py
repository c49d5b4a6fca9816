"""Evaluate a detector on a labelled folder in the MVTec AD layout (:mod:`anomaly_ae.data.mvtec`), streaming.

Images are scored batch by batch; only scores, integer histograms (:class:`PixelAccumulator`) and
the few worst cases' overlays for the report are kept, so memory does not grow with the number or
size of the images and the report never scores an image a second time.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from anomaly_ae.config import scoring_text
from anomaly_ae.data.images import ImageReadError
from anomaly_ae.data.mvtec import GOOD, TestItem, mvtec_items, read_mask
from anomaly_ae.detector import Detector
from anomaly_ae.evaluation.metrics import PixelAccumulator, image_metrics, thin_curve
from anomaly_ae.evaluation.result import EvaluationResult, Example
from anomaly_ae.io.files import write_json_atomic
from anomaly_ae.io.folders import check_writable, staging
from anomaly_ae.io.names import EVALUATION_FILES, METRICS_JSON, REPORT_HTML
from anomaly_ae.outputs.overlays import Caption, heatmap_overlay, to_bgr, with_legend
from anomaly_ae.pipelines.options import EvaluateOptions
from anomaly_ae.pipelines.score_batch import ScoredFile, iter_scored
from anomaly_ae.postprocessing import PostProcessor
from anomaly_ae.progress import Progress, as_progress


class _Worst:
    """The ``n`` items with the smallest ``key`` seen so far (ties: the earlier item), kept in a bounded heap."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._heap: list[tuple[Any, int, Example]] = []  # (negated key, -order, item): a max-heap of keys

    def would_keep(self, key: float, order: int) -> bool:
        """Whether an item with this key would be kept (so the overlay is only drawn for those)."""
        if self.n <= 0:
            return False
        return len(self._heap) < self.n or (key, order) < (-self._heap[0][0], -self._heap[0][1])

    def add(self, key: float, order: int, item: Example) -> None:
        entry = (-key, -order, item)
        if len(self._heap) < self.n:
            heapq.heappush(self._heap, entry)
        else:
            heapq.heapreplace(self._heap, entry)

    def sorted(self) -> list[Example]:
        return [e[2] for e in sorted(self._heap, key=lambda e: (-e[0], -e[1]))]


def evaluate(
    detector_or_run_dir: Detector | str | Path,
    dataset_dir: str | Path,
    out_dir: str | Path | None = None,
    options: EvaluateOptions | None = None,
    *,
    on_image: Callable[[int, int], None] | None = None,
    verbose: int | Progress = 0,
    **option_fields: Any,
) -> EvaluationResult:
    """Score every test image and compute image and pixel metrics, overall and per defect type.

    Metric keys: ``image_auroc``, ``image_ap``, ``image_f1_max``, ``image_f1_threshold``; with masks
    ``pixel_auroc`` (+ ``pixel_auroc_bin_error``), ``pixel_f1_max``, ``pixel_f1_threshold``,
    ``pixel_aupro`` (to FPR ``max_fpr``, normalized); and the confusion counts at the calibrated image
    threshold. ``per_defect`` holds the same per defect type (its images against all good ones).

    Args:
        detector_or_run_dir: a fitted :class:`Detector` or its model directory.
        out_dir: when given, ``metrics.json`` and ``report.html`` are written there (an earlier
            evaluation is replaced only with ``overwrite``; other files are never touched).
        options: :class:`~anomaly_ae.pipelines.options.EvaluateOptions` (``max_fpr``, ``overwrite``,
            ``n_examples``), or its fields as keywords.
        on_image: called with ``(images done, images in all)`` after every image.
        verbose: without ``on_image``, 1 shows a bar on stderr (count, images/s, ETA); see
            :class:`~anomaly_ae.progress.Progress`.

    Raises:
        FileNotFoundError: no ``test`` folder, or no images in it.
        OutputConflict: ``out_dir`` is unusable or holds an evaluation and ``overwrite`` is not set.
        ModelDirError: the model directory cannot be loaded.
    """
    opts, dataset_dir = EvaluateOptions.of(options, option_fields), Path(dataset_dir)
    run_dir = None if isinstance(detector_or_run_dir, Detector) else Path(detector_or_run_dir)
    if out_dir is not None:
        check_writable(Path(out_dir), "evaluation", EVALUATION_FILES, opts.overwrite,
             {"model directory": run_dir, "data set": dataset_dir})
    shown = as_progress(verbose)
    if run_dir is not None:
        shown.stage(f"loading the model {run_dir}")
    det = detector_or_run_dir if isinstance(detector_or_run_dir, Detector) else Detector.load(run_dir)
    det.check_fitted(need_threshold=True)
    problems: list[str] = []
    items = mvtec_items(dataset_dir, problems)
    shown.stage(f"scoring {len(items)} test images of {dataset_dir}")
    with shown.bar("evaluating", total=len(items)) as bar:
        def advance(done: int, total: int) -> None:
            bar.advance(done - bar.done)

        result = _score_items(det, items, opts.max_fpr, opts.n_examples, on_image or advance)
    result.failures += [{"path": "(a folder under test/)", "error": line} for line in problems]
    result.metrics["counts"]["failed"] = len(result.failures)
    _describe(result, det, run_dir)
    if out_dir is not None:
        _write(result, Path(out_dir), result.model_dir, dataset_dir, opts.overwrite)
    return result


def _describe(result: EvaluationResult, det: Detector, run_dir: Path | None) -> None:
    """What the report says of the model: its experiment and run, folder, config, caveats, and when."""
    info = getattr(det, "train_info_", {})
    result.experiment = det.config_.tracking.experiment
    result.mlflow_run_id = info.get("mlflow", {}).get("run_id")
    result.model_dir = run_dir if run_dir is not None else getattr(det, "source_dir_", None)
    result.config_summary = config_summary(det)
    check = info.get("self_check") or {}
    result.caveats = list(det.postprocessor_.caveats(check.get("image_auroc")).values())
    result.evaluated_at = datetime.now(UTC).isoformat(timespec="seconds")


def _score_items(det: Detector, items: list[TestItem], max_fpr: float, n_examples: int,
                 on_image: Callable[[int, int], None] | None) -> EvaluationResult:
    """Stream ``items`` through ``det``: records, pixel histograms, failures and the worst cases."""
    post = det.postprocessor_
    good_acc = PixelAccumulator()
    defect_accs: dict[str, PixelAccumulator] = {}
    records: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    worst_fn, worst_fp = _Worst(n_examples), _Worst(n_examples)
    by_path = {it.path: it for it in items}
    for done, scored in enumerate(iter_scored(det, [it.path for it in items]), 1):
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
            record = {"path": it.rel, "defect": it.defect, "label": it.label, "score": scored.score,
                      "anomalous": bool(post.is_anomalous(scored.score)), "has_mask": mask is not None}
            records.append(record)
            if not it.label:
                good_acc.add(scored.amap)
            elif mask is not None:
                defect_accs.setdefault(it.defect, PixelAccumulator()).add(scored.amap, mask)
            _keep_if_worst(record, len(records), scored, mask, post, worst_fn, worst_fp)
        if on_image:
            on_image(done, len(items))

    metrics = _metrics(records, good_acc, defect_accs, post, max_fpr)
    metrics["per_defect"] = {}
    for defect in sorted({r["defect"] for r in records} - {GOOD}):
        sub = [r for r in records if r["defect"] in (GOOD, defect)]
        accs = {defect: defect_accs[defect]} if defect in defect_accs else {}
        metrics["per_defect"][defect] = _metrics(sub, good_acc, accs, post, max_fpr)
    return EvaluationResult(metrics, records, failures, worst_fn.sorted(), worst_fp.sorted(), post.threshold,
                            det.config_.threshold.method,
                            self_check=getattr(det, "train_info_", {}).get("self_check"),
                            curves=_pixel_curves(good_acc, defect_accs))


def _pixel_curves(good_acc: PixelAccumulator, defect_accs: dict[str, PixelAccumulator]) -> dict[str, dict]:
    """Thinned pixel ROC and PRO curves over all test pixels (empty without defect masks)."""
    acc = good_acc
    for a in defect_accs.values():
        acc = acc.merge(a)
    if not acc.has_defects or acc.neg.sum() == 0:
        return {}
    fpr, tpr = thin_curve(*acc.roc_curve())
    pro_fpr, pro = thin_curve(*acc.pro_curve())
    return {"pixel_roc": {"fpr": fpr, "tpr": tpr}, "pro": {"fpr": pro_fpr, "pro": pro}}


def config_summary(det: Detector) -> dict[str, str]:
    """What the report's header says about the model: architecture, input, training, scoring, threshold rule."""
    c = det.config_
    widths = getattr(c.model, "widths", None)
    size = "x".join(map(str, det.preprocessing_.image_size))
    return {
        "architecture": c.model.name + (f" ({'-'.join(map(str, widths))})" if widths else ""),
        "input": f"{size}x{c.data.channels}" + (f", {c.data.patch_size} px patches" if c.data.patch_size else ""),
        "training": f"{c.train.epochs} epochs max, batch {c.train.batch_size}, seed {c.train.seed}"
                    + (", synthetic defects" if c.train.synthetic_anomalies is not None else ""),
        "scoring": scoring_text(c.scoring.model_dump()),
        "threshold": f"{c.threshold.method}"
                     + (f" {c.threshold.quantile}" if c.threshold.method == "quantile" else ""),
    }


def _keep_if_worst(record: dict[str, Any], order: int, scored: ScoredFile, mask: np.ndarray | None,
                   post: PostProcessor, worst_fn: _Worst, worst_fp: _Worst) -> None:
    """Keep the overlay of a false negative (lowest scores first) or false positive (highest first)."""
    s, anomalous = record["score"], record["anomalous"]
    if record["label"] and not anomalous:
        worst, key = worst_fn, s
    elif not record["label"] and anomalous:
        worst, key = worst_fp, -s
    else:
        return
    if not worst.would_keep(key, order):
        return
    heatmap = heatmap_overlay(scored.image, scored.amap, post.heatmap_range)
    overlay = heatmap.copy()
    if mask is not None:
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(overlay, contours, -1, (255, 255, 255), 1)
    panels = {
        "image": to_bgr(scored.image),
        "heatmap": with_legend(_fit(heatmap), post.heatmap_range, post.pixel_threshold,
                               Caption(s, post.threshold, anomalous)),
        "predicted mask": to_bgr(post.mask(scored.amap).astype(np.uint8) * 255),
    }
    if mask is not None:
        panels["true mask"] = to_bgr(mask.astype(np.uint8) * 255)
    worst.add(key, order, Example(record, overlay, {k: _fit(v) for k, v in panels.items()}))


#: longest side of a report panel: the report embeds them, so they are kept small
PANEL_SIDE = 384


def _fit(image: np.ndarray) -> np.ndarray:
    """``image`` shrunk (area interpolation) so that its longest side is at most :data:`PANEL_SIDE`."""
    k = PANEL_SIDE / max(image.shape[:2])
    if k >= 1:
        return image
    return cv2.resize(image, (max(1, round(image.shape[1] * k)), max(1, round(image.shape[0] * k))),
                      interpolation=cv2.INTER_AREA)


def _write(result: EvaluationResult, out: Path, model: Path | None, dataset_dir: Path, overwrite: bool) -> None:
    """``metrics.json`` and ``report.html``, built beside ``out`` and moved into place (metrics first)."""
    from anomaly_ae.reports.html import write_report

    with staging(out, "evaluation", EVALUATION_FILES, overwrite, order=(METRICS_JSON,)) as tmp:
        write_json_atomic(tmp / METRICS_JSON, {**result.metrics, "failures": result.failures,
                                                 "model": str(model) if model else None,
                                                 "dataset": str(dataset_dir)})
        write_report(tmp / REPORT_HTML, result, dataset_dir, title=model.name if model else "")
    result.out_dir = out


def _metrics(
    records: list[dict[str, Any]],
    good_acc: PixelAccumulator,
    defect_accs: dict[str, PixelAccumulator],
    post: PostProcessor,
    max_fpr: float,
) -> dict[str, Any]:
    y = np.array([r["label"] for r in records], bool)
    s = np.array([r["score"] for r in records], np.float64)
    out: dict[str, Any] = {}
    if y.any() and (~y).any():
        out.update(image_metrics(s, y))
    pred = post.is_anomalous(s)
    out["at_threshold"] = {
        "image_threshold": post.threshold,
        "tp": int(np.sum(pred & y)),
        "fp": int(np.sum(pred & ~y)),
        "tn": int(np.sum(~pred & ~y)),
        "fn": int(np.sum(~pred & y)),
        "fpr": float(np.mean(pred[~y])) if (~y).any() else None,
        "tpr": float(np.mean(pred[y])) if y.any() else None,
        "expected_fpr": post.expected_fpr,
        "fpr_upper": post.fpr_upper,
        "calibration_images": post.n_good,
        "threshold_rule": post.rule,
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
            pixel_threshold=post.pixel_threshold,
        )
    out["counts"] = {
        "good": int((~y).sum()),
        "anomalous": int(y.sum()),
        "with_masks": int(sum(r["has_mask"] for r in records)),
        "regions": len(acc.regions),
    }
    return out
