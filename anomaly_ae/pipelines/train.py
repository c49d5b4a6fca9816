"""A training run: a model directory from a folder of good images, with checkpoints, resume and tracking.

::

    prepare_run_dir(run_dir, good_dir, overwrite)     # refuse what may not be replaced, before any work
    det = train_run(config, good_dir, run_dir, tracker)  # checkpoints -> fit -> save -> log
    plan = resume_plan(run_dir)                       # after a crash: the recorded config and images
    det = train_run(plan.config, plan.good_dir, run_dir, tracker, TrainOptions(resume=plan.resume))

:class:`~anomaly_ae.pipelines.engine.Engine` runs these with the lock and the tracker: ``Engine(run_dir).fit(good)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import keras

from anomaly_ae.config import DetectorConfig, scoring_record
from anomaly_ae.detector import Detector
from anomaly_ae.io.folders import OutDirLock, OutputConflict, check_out_dir, check_writable, read_manifest
from anomaly_ae.io.names import CHECKPOINT_DIR, CONFIG_FILE, MODEL_DIR_ENTRIES, MODEL_FILE
from anomaly_ae.pipelines.options import TrainOptions
from anomaly_ae.pipelines.train_finish import drop_checkpoints, finish_run, run_record
from anomaly_ae.postprocessing import FPR_CONFIDENCE
from anomaly_ae.progress import Progress, as_progress
from anomaly_ae.tracking import Tracker, source_tags
from anomaly_ae.training.checkpoint import TrainingCheckpoint, latest_checkpoint, read_run_state, start_checkpoints


class ResumeError(ValueError):
    """``train --resume`` cannot continue; the message says why and what to do."""


def prepare_run_dir(run_dir: Path, good_dir: Path, overwrite: bool) -> None:
    """Refuse a model directory that would replace what the user did not ask to replace (before any training).

    Raises:
        OutputConflict: ``run_dir`` is unusable, another training holds its lock, it holds an
            interrupted training or a model and ``overwrite`` is not set.
    """
    check_out_dir(run_dir, {"image folder": good_dir})
    if run_dir.is_dir():
        with OutDirLock(run_dir):  # refused while another training writes there
            pass
    if CHECKPOINT_DIR in read_manifest(run_dir).get("model", []) and not overwrite:
        raise OutputConflict(f"{run_dir} holds an interrupted training: continue it with resume=True, "
                             "start over with overwrite=True, or choose another out_dir")
    check_writable(run_dir, "model", MODEL_DIR_ENTRIES, overwrite)


@dataclass
class ResumePlan:
    """How ``train --resume RUN_DIR`` goes on: the recorded config and images, from which epoch."""

    config: DetectorConfig
    good_dir: Path
    mlflow_run_id: str | None
    resume: bool  # False: no epoch had finished, so training starts again from epoch 1
    epoch: int  # epochs already done


def resume_plan(run_dir: Path, good_dir: Path | None = None) -> ResumePlan:
    """Read the checkpoint of an interrupted training (``good_dir``: must match the recorded folder if given).

    Raises:
        ResumeError: nothing to resume, a damaged checkpoint, or an image folder that is gone or differs.
    """
    ckpt_dir = run_dir / CHECKPOINT_DIR
    start_over = f"start over with 'anomaly-ae train GOOD_DIR --out {run_dir} --overwrite'"
    if not (ckpt_dir / CONFIG_FILE).is_file():
        done = (run_dir / MODEL_FILE).is_file()
        raise ResumeError(f"{run_dir} has no checkpoint to resume" + (" (its training is complete)" if done else ""))
    try:
        cfg = DetectorConfig.from_yaml(ckpt_dir / CONFIG_FILE)
    except Exception as err:  # noqa: BLE001 - any damage to the file: one line, and what to do
        raise ResumeError(f"{ckpt_dir / CONFIG_FILE} is damaged ({type(err).__name__}): {start_over}") from None
    ckpt = latest_checkpoint(ckpt_dir)
    state = ckpt.state if ckpt is not None else read_run_state(ckpt_dir)
    recorded = Path(state["good_dir"]) if state.get("good_dir") else good_dir
    if recorded is None:
        raise ResumeError(f"{run_dir} does not record its image folder: give it, 'anomaly-ae train GOOD_DIR "
                          f"--resume {run_dir}'")
    if good_dir is not None and good_dir.resolve() != recorded.resolve():
        raise ResumeError(f"{run_dir} was trained on {recorded}, not {good_dir}")
    if not recorded.is_dir():
        raise ResumeError(f"the image folder {recorded} of {run_dir} is gone: {start_over}")
    if ckpt is None:
        return ResumePlan(cfg, recorded, None, resume=False, epoch=0)
    return ResumePlan(cfg, recorded, state.get("mlflow_run_id"), resume=True, epoch=ckpt.epoch)


def train_run(
    config: DetectorConfig,
    good_dir: Path,
    run_dir: Path,
    tracker: Tracker,
    options: TrainOptions | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int | Progress = 0,
) -> Detector:
    """Train on ``good_dir`` into the model directory ``run_dir`` (call it holding ``OutDirLock(run_dir)``).

    ``options``: :class:`~anomaly_ae.pipelines.options.TrainOptions` (``resume``, the registered name and
    alias, Ray ``workers`` and ``address``). With ``workers`` > 1 the training runs on that many Ray workers
    (:mod:`anomaly_ae.pipelines.train_ray`; the cluster at ``address``, else a local Ray): this process opens
    the run and logs the params, rank 0 writes the model directory and the run's metrics, artifacts and model
    (so ``tracker.uri`` must be reachable from rank 0: a tracking server, or a store on shared storage). No
    checkpoint is written then (an interrupted multi-worker training starts again).

    A checkpoint is written to ``run_dir/checkpoint`` after every epoch and removed once the model is
    saved. The config, per-epoch losses, the threshold statistics, a validation reconstruction grid
    and the model files go to ``tracker``.

    Raises:
        TrainingDiverged: the loss became NaN/inf (the last good checkpoint is kept for a resume).
        ValueError: the images cannot train a model (e.g. fewer than 2 readable ones); nothing is left.
    """
    opts = TrainOptions.of(options)
    ckpt_dir = run_dir / CHECKPOINT_DIR
    run_state = {"good_dir": str(good_dir.resolve()), "mlflow_run_id": tracker.run_id}
    if not opts.resume:
        tracker.log_params({"data.good_dir": str(good_dir), **config.used_params()})
        tracker.set_tags({**source_tags("anomaly-ae train"), **data_tags(good_dir)})
        start_checkpoints(ckpt_dir, config, run_state)
    try:
        if opts.workers > 1:
            return _train_on_workers(config, good_dir, run_dir, tracker, opts, verbose)
        keeper = TrainingCheckpoint(ckpt_dir, resume=opts.resume, extra_state=run_state)
        det = Detector(config, verbose=verbose).fit(good_dir, callbacks=[keeper, *callbacks])
        det.train_info_.update(run_record(tracker, opts.registered_name) or {})
    except ValueError:
        if not opts.resume:
            drop_checkpoints(run_dir)
        raise
    finish_run(det, run_dir, tracker, opts.registered_name, opts.alias, as_progress(verbose))
    return det


def _train_on_workers(config: DetectorConfig, good_dir: Path, run_dir: Path, tracker: Tracker, options: TrainOptions,
                      verbose: int | Progress) -> Detector:
    """Train on Ray workers; rank 0 saves the model and writes this run's metrics and model to MLflow."""
    from anomaly_ae.pipelines.train_ray import RankZeroTracking, train_on_ray

    progress = as_progress(verbose)
    progress.stage(f"training on {options.workers} Ray workers ({options.address or 'a local Ray'}), JAX backend")
    tracking = None
    if tracker.run_id is not None:
        tracking = RankZeroTracking(tracker.uri, config.tracking.experiment, tracker.run_id, options.registered_name,
                                    options.alias)
    results = train_on_ray(config, good_dir, run_dir, options.workers, options.address, tracking)
    rank0 = next(r for r in results if r["rank"] == 0)
    for line in rank0.get("warnings", []):
        progress.warning(line)
    if rank0.get("model_info") is not None and hasattr(tracker, "model_info"):
        tracker.model_info = rank0["model_info"]  # for the summary: where rank 0 logged the model
    return Detector.load(run_dir)


def data_tags(good_dir: Path) -> dict[str, str]:
    """The training folder, how many images it holds and a SHA-256 of their relative paths and sizes
    (:func:`~anomaly_ae.data.images.folder_fingerprint`)."""
    from anomaly_ae.data.images import folder_fingerprint, list_images

    return {"anomaly_ae.good_dir": str(good_dir.resolve()), "anomaly_ae.n_images": str(len(list_images(good_dir))),
            "anomaly_ae.good_dir_sha256": folder_fingerprint(good_dir)}


def default_run_dir(root: Path = Path("runs")) -> Path:
    """``runs/<YYYYmmdd-HHMMSS>`` of now (``-2``, ``-3``, ... when that folder exists): where ``train`` writes
    without ``--out``."""
    return fresh_run_dir(root / datetime.now().strftime("%Y%m%d-%H%M%S"))


def fresh_run_dir(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``, ... when two trainings start within the same second."""
    candidate, k = base, 1
    while candidate.exists():
        k += 1
        candidate = base.with_name(f"{base.name}-{k}")
    return candidate


def train_summary(det: Detector, run_dir: Path, tracker: Any, register: str | None) -> dict[str, Any]:
    """The ``--json`` object of ``train`` (keys documented in the README, 'Machine-readable output')."""
    info, stats, s, post = det.train_info_, det.score_stats_, det.config_.scoring, det.postprocessor_
    check = info.get("self_check") or None
    return {
        "model_dir": str(run_dir), "model": det.config_.model.name,
        "image_size": list(det.config_.data.image_size), "channels": det.config_.data.channels,
        "n_train": info["n_train"], "n_val": info["n_val"], "skipped": info["skipped"],
        "epochs_run": info["epochs_run"], "best_epoch": info["best_epoch"], "best_val_loss": info["best_val_loss"],
        "fit_seconds": info["fit_seconds"], "samples_per_second": info.get("samples_per_second"),
        "sample_unit": info.get("sample_unit", "image"),
        "threshold": det.threshold_, "pixel_threshold": det.pixel_threshold_,
        "threshold_quantile": det.config_.threshold.quantile, "threshold_rule": post.rule,
        "expected_fpr": post.expected_fpr, "fpr_upper": post.fpr_upper, "fpr_confidence": FPR_CONFIDENCE,
        "caveats": post.caveats(check["image_auroc"] if check else None), "val_score_mean": stats.mean,
        "val_score_std": stats.std, "val_score_max": stats.max,
        "scoring": scoring_record(s),
        "self_check": None if check is None else {k: check.get(k) for k in (
            "image_auroc", "image_auroc_interval", "pixel_auroc", "aupro", "n_good", "selected", "version")},
        "mlflow_run_id": None if tracker.disabled else tracker.run_id,
        "tracking_uri": None if tracker.disabled else tracker.uri,
        "mlflow_model_uri": model_uri(tracker, register),
    }


def model_uri(tracker: Any, register: str | None) -> str | None:
    """``models:/NAME/VERSION`` of a registered model, else ``runs:/RUN_ID/model`` (``None`` untracked)."""
    info = getattr(tracker, "model_info", None)
    if info is None:
        return None
    if register and info.registered_model_version is not None:
        return f"models:/{register}/{info.registered_model_version}"
    return f"runs:/{tracker.run_id}/model"
