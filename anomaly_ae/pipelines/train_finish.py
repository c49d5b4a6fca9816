"""The end of a training, in one process or on rank 0 of Ray workers: save the model directory, drop
its checkpoint, log the run's numbers and the model (registered, with an alias) to the tracker."""

from __future__ import annotations

import shutil
import tempfile
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from anomaly_ae.deploy.mlflow_model import log_detector
from anomaly_ae.io.folders import forget, read_manifest
from anomaly_ae.io.names import CHECKPOINT_DIR, CONFIG_FILE
from anomaly_ae.outputs.overlays import reconstruction_grid
from anomaly_ae.progress import Progress
from anomaly_ae.tracking import Tracker

if TYPE_CHECKING:
    from anomaly_ae.detector import Detector


def run_record(tracker: Tracker, register: str | None) -> dict | None:
    """What ``detector.json`` records of the MLflow run (``None`` untracked)."""
    if not tracker.run_id:
        return None
    return {"mlflow": {"run_id": tracker.run_id, "tracking_uri": tracker.uri, "registered_model": register}}


def finish_run(det: Detector, run_dir: Path, tracker: Tracker, register: str | None, alias: str | None,
               progress: Progress) -> None:
    """Save the trained ``det`` to ``run_dir`` and log the run's numbers and the model (registered as
    ``register``, with ``alias``) to ``tracker``: the end of a training, in one process or on rank 0."""
    progress.stage(f"saving the model directory {run_dir}")
    det.save(run_dir)
    drop_checkpoints(run_dir)  # the model is complete: the checkpoint is not needed
    if tracker.run_id is not None:
        progress.stage("logging the run and the model to MLflow" + (f" (registering {register})" if register else ""))
    _log_run(det, run_dir, tracker)
    tracker.log_model(partial(log_detector, run_dir, registered_model_name=register, detector=det))
    version = getattr(getattr(tracker, "model_info", None), "registered_model_version", None)
    if register and alias and version is not None:
        tracker.set_alias(register, alias, version)


def self_check_metrics(info: dict) -> dict[str, float]:
    """``self_check_image_auroc``, ``self_check_pixel_auroc``, ``self_check_aupro`` of ``train_info_`` (if any),
    and the image AUROC's 95% interval as ``self_check_image_auroc_low`` / ``_high`` (version 3)."""
    check = info.get("self_check") or {}
    out = {f"self_check_{k}": float(check[k]) for k in ("image_auroc", "pixel_auroc", "aupro") if k in check}
    if check.get("image_auroc_interval"):
        low, high = check["image_auroc_interval"]
        out.update(self_check_image_auroc_low=float(low), self_check_image_auroc_high=float(high))
    return out


def drop_checkpoints(run_dir: Path) -> None:
    """Remove ``run_dir/checkpoint`` only when the manifest names it as anomaly-ae's (a user's folder stays)."""
    if CHECKPOINT_DIR not in read_manifest(run_dir).get("model", []):
        return
    shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)
    forget(run_dir, "model", [CHECKPOINT_DIR])


def _log_run(det: Detector, run_dir: Path, tracker: Tracker) -> None:
    """The fitted numbers, a validation reconstruction grid and the model files."""
    info, stats = det.train_info_, det.score_stats_
    tracker.log_metrics({
        "threshold": det.threshold_,
        "val_score_mean": stats.mean,
        "val_score_std": stats.std,
        "val_score_max": stats.max,
        **{f"val_score_{k}": v for k, v in stats.quantiles.items()},
        "best_val_loss": info["best_val_loss"],
        "best_epoch": info["best_epoch"],
        "fit_seconds": info["fit_seconds"],
        "n_train": info["n_train"],
        "n_val": info["n_val"],
        "n_skipped": len(info["skipped"]),
        **self_check_metrics(info),
    })
    if tracker.run_id is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        grid = Path(tmp) / "validation_grid.png"
        x = det.preprocessing_(det.val_sample_)
        x_hat = det.scorer_.reconstruct(x)
        grid.write_bytes(reconstruction_grid(x, x_hat, det.scorer_.maps(x, x_hat), det.heatmap_range_))
        tracker.log_artifact(grid)
    tracker.log_artifact(run_dir / CONFIG_FILE)  # the model itself is the run's logged MLflow model
