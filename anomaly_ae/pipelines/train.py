"""A training run: a model directory from a folder of good images, with checkpoints, resume and tracking.

::

    prepare_run_dir(run_dir, good_dir, overwrite)     # refuse what may not be replaced, before any work
    det = train_run(config, good_dir, run_dir, tracker)  # checkpoints -> fit -> save -> log
    plan = resume_plan(run_dir)                       # after a crash: the recorded config and images
    det = train_run(plan.config, plan.good_dir, run_dir, tracker, resume=plan.resume)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras

from anomaly_ae.config import DetectorConfig
from anomaly_ae.detector import Detector
from anomaly_ae.io.folders import OutDirLock, OutputConflict, check_out_dir, plan, read_manifest
from anomaly_ae.io.names import CONFIG_FILE, MODEL_DIR_ENTRIES, MODEL_FILE
from anomaly_ae.pipelines.train_finish import CHECKPOINT_DIR, drop_checkpoints, finish_run, run_record
from anomaly_ae.progress import Progress, as_progress
from anomaly_ae.tracking import Tracker, source_tags
from anomaly_ae.training.checkpoint import latest_checkpoint, read_run_state, start_checkpoints


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
        raise OutputConflict(f"{run_dir} holds an interrupted training: continue it with --resume {run_dir}, "
                             "start over with --overwrite, or choose another --out")
    plan(run_dir, "model", MODEL_DIR_ENTRIES, overwrite)


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
    resume: bool = False,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int | Progress = 0,
    register: str | None = None,
    alias: str | None = None,
    workers: int = 1,
    address: str | None = None,
) -> Detector:
    """Train on ``good_dir`` into the model directory ``run_dir`` (call it holding ``OutDirLock(run_dir)``).

    With ``workers`` > 1 the training runs on that many Ray workers (:mod:`anomaly_ae.pipelines.train_ray`;
    the cluster at ``address``, else a local Ray): this process opens the run and logs the params,
    rank 0 writes the model directory and the run's metrics, artifacts and model (so ``tracker.uri``
    must be reachable from rank 0: a tracking server, or a store on shared storage). No checkpoint
    is written then (an interrupted multi-worker training starts again).

    A checkpoint is written to ``run_dir/checkpoint`` after every epoch and removed once the model is
    saved. The config, per-epoch losses, the threshold statistics, a validation reconstruction grid
    and the model files go to ``tracker``.

    Raises:
        TrainingDiverged: the loss became NaN/inf (the last good checkpoint is kept for ``--resume``).
        ValueError: the images cannot train a model (e.g. fewer than 2 readable ones); nothing is left.
    """
    ckpt_dir = run_dir / CHECKPOINT_DIR
    run_state = {"good_dir": str(good_dir.resolve()), "mlflow_run_id": tracker.run_id}
    if not resume:
        tracker.log_params({"data.good_dir": str(good_dir), **config.used_params()})
        tracker.set_tags({**source_tags("anomaly-ae train"), **data_tags(good_dir)})
        start_checkpoints(ckpt_dir, config, run_state)
    try:
        if workers > 1:
            return _train_on_workers(config, good_dir, run_dir, workers, address, tracker, register, alias, verbose)
        det = Detector(config, verbose=verbose).fit(good_dir, callbacks=callbacks, checkpoint_dir=ckpt_dir,
                                                    resume=resume, checkpoint_state=run_state,
                                                    record=run_record(tracker, register))
    except ValueError:
        if not resume:
            drop_checkpoints(run_dir)
        raise
    finish_run(det, run_dir, tracker, register, alias, as_progress(verbose))
    return det


def _train_on_workers(config: DetectorConfig, good_dir: Path, run_dir: Path, workers: int, address: str | None,
                      tracker: Tracker, register: str | None, alias: str | None, verbose: int | Progress) -> Detector:
    """Train on Ray workers; rank 0 saves the model and writes this run's metrics and model to MLflow."""
    from anomaly_ae.pipelines.train_ray import RankZeroTracking, train_on_ray

    progress = as_progress(verbose)
    progress.stage(f"training on {workers} Ray workers ({address or 'a local Ray'}), JAX backend")
    tracking = None
    if tracker.run_id is not None:
        tracking = RankZeroTracking(tracker.uri, config.tracking.experiment, tracker.run_id, register, alias)
    results = train_on_ray(config, good_dir, run_dir, workers, address, tracking)
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
