"""Training on several processes of a Ray cluster: ``train_on_ray(config, good_dir, run_dir, workers=N)``.

Each of ``N`` Ray workers runs Keras on JAX (Keras 3's ``fit`` does not run under TensorFlow's
``MultiWorkerMirroredStrategy``: keras-team/keras#20585), joins the others with
``keras.distribution.initialize`` (rank 0 is the coordinator; CPU collectives through gloo) and
trains on its shard of the file list (every ``N``-th file) under ``DataParallel`` over all the
workers' devices: one global batch of ``batch_size`` x devices per step, one update for all.
Afterwards every worker holds the same weights; rank 0 alone runs the self-check and the
calibration on its held-out images, writes the model directory (``run_dir`` must be on storage
rank 0 can write and the caller can read) and writes the MLflow run the caller opened: epoch
losses, metrics, artifacts, the logged (and registered) model. Its store must be reachable from
rank 0's node: a tracking server, or a store on shared storage.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anomaly_ae.config import FEATURE_MODELS, DetectorConfig
from anomaly_ae.data.images import list_images
from anomaly_ae.data.loading import original_sizes
from anomaly_ae.pipelines.score_ray import require_ray

#: what each worker process runs with
WORKER_ENV = {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
              "NO_ALBUMENTATIONS_UPDATE": "1"}


class TrainingWorker:
    """One training process: its address for the coordinator, then its part of the training."""

    def address(self) -> str:
        """``host:port`` with a free port on this worker's node (used when this worker is rank 0)."""
        import ray

        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return f"{ray.util.get_node_ip_address()}:{port}"

    def train(self, rank: int, workers: int, coordinator: str, config: dict[str, Any], paths: list[str],
              run_dir: str, tracking: RankZeroTracking | None = None) -> dict[str, Any]:
        import jax

        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        import keras

        keras.distribution.initialize(job_addresses=coordinator, num_processes=workers, process_id=rank)
        from anomaly_ae.detector import Detector
        from anomaly_ae.pipelines.train_finish import finish_run, run_record
        from anomaly_ae.progress import Progress
        from anomaly_ae.tracking import MlflowTracker, NullTracker
        from anomaly_ae.training.callbacks import TrackingCallback

        warnings: list[str] = []
        tracker: Any = NullTracker()
        if rank == 0 and tracking is not None:  # the run the driver opened; it ends it once this returns
            tracker = MlflowTracker(tracking.uri, tracking.experiment, run_id=tracking.run_id,
                                    off_on_failure=True, on_fallback=warnings.append)
            import ray

            where = f"{ray.util.get_node_ip_address()}, pid {os.getpid()}"
            tracker.set_tags({"anomaly_ae.written_by": f"Ray worker rank 0 of {workers} ({where})"})
        cfg = DetectorConfig.model_validate(config).with_overrides({"train.distribution": "multi_worker"})
        det = Detector(cfg).fit([Path(p) for p in paths], callbacks=[TrackingCallback(tracker)] if rank == 0 else ())
        det.train_info_.update(run_record(tracker, tracking.register if tracking else None) or {})
        n_train = _sum_over_workers(det.train_info_["n_train"])  # a collective: every worker takes part
        result: dict[str, Any] = {"rank": rank, "n_train": det.train_info_["n_train"], "loss": det.history_["loss"]}
        if rank == 0:
            # n_train: every worker's training images; n_val stays rank 0's (the images it calibrated on)
            det.train_info_ = {**det.train_info_, "workers": workers, "n_train": n_train}
            det.config_ = det.config_.with_overrides({"train.distribution": "none"})  # the saved model is local
            finish_run(det, Path(run_dir), tracker, tracking.register if tracking else None,
                       tracking.alias if tracking else None, Progress(verbose=0))
            info = getattr(tracker, "model_info", None)
            result["warnings"] = warnings
            result["model_info"] = None if info is None else ModelRecord(
                info.model_uri, getattr(info, "registered_model_version", None))
        return result


@dataclass(frozen=True)
class RankZeroTracking:
    """The MLflow run the driver opened, for rank 0 to write into: store ``uri`` (reachable from rank 0's
    node), ``experiment``, ``run_id``, and the registered model name and alias asked for."""

    uri: str
    experiment: str
    run_id: str
    register: str | None = None
    alias: str | None = None


@dataclass(frozen=True)
class ModelRecord:
    """Where rank 0 logged the model (the fields of MLflow's ``ModelInfo`` that the summary reads)."""

    model_uri: str
    registered_model_version: str | int | None = None


def _sum_over_workers(value: int) -> int:
    """``value`` summed over every worker process (a JAX all-gather over the processes)."""
    import numpy as np
    from jax.experimental import multihost_utils

    return int(np.asarray(multihost_utils.process_allgather(np.int32(value))).sum())


def train_on_ray(config: DetectorConfig, good_dir: str | Path, run_dir: str | Path, workers: int = 2,
                 address: str | None = None, tracking: RankZeroTracking | None = None) -> list[dict[str, Any]]:
    """Train on ``workers`` Ray workers (a local Ray without ``address``); rank 0 writes ``run_dir`` and,
    given ``tracking``, the run's epoch losses, metrics, artifacts and model into that MLflow run.

    Returns:
        Each worker's ``{"rank", "n_train", "loss"}`` (losses per epoch; the same on every worker); rank
        0's also ``"warnings"`` (tracking problems, one line each) and ``"model_info"`` (:class:`ModelRecord`).

    Raises:
        RayMissing: Ray is not installed.
        ValueError: fewer images than workers, or a ``feature`` model (it trains on one process).
    """
    if config.model.name in FEATURE_MODELS:  # one extraction, then seconds of training: nothing to share out
        raise ValueError(f"model {config.model.name!r} trains on one process in a minute or two (its features are "
                         "extracted once): train it without Ray")
    ray = require_ray()
    paths = [os.path.abspath(p) for p in list_images(Path(good_dir))]
    per_worker = len(paths) // workers  # equal shards: every worker must take the same number of steps
    if per_worker < 2:
        raise ValueError(f"{good_dir} holds {len(paths)} images: too few for {workers} workers")
    if config.data.image_size == "auto":  # resolved once, so that every worker builds the same model
        config = config.with_image_size(original_sizes(good_dir, config.data.channels))
    started = not ray.is_initialized()
    if started:
        ray.init(**({"address": address} if address else {"address": "local", "include_dashboard": False}),
                 log_to_driver=False, configure_logging=False)
    try:
        remote = ray.remote(num_cpus=1, runtime_env={"env_vars": WORKER_ENV})(TrainingWorker)
        actors = [remote.remote() for _ in range(workers)]
        coordinator = ray.get(actors[0].address.remote())
        refs = [actor.train.remote(rank, workers, coordinator, config.to_dict(), paths[rank::workers][:per_worker],
                                   os.path.abspath(run_dir), tracking) for rank, actor in enumerate(actors)]
        return ray.get(refs)
    finally:
        if started:
            ray.shutdown()
