"""Training on several processes of a Ray cluster: ``train_on_ray(config, good_dir, run_dir, workers=N)``.

Each of ``N`` Ray workers runs Keras on JAX (Keras 3's ``fit`` does not run under TensorFlow's
``MultiWorkerMirroredStrategy``: keras-team/keras#20585), joins the others with
``keras.distribution.initialize`` (rank 0 is the coordinator; CPU collectives through gloo) and
trains on its shard of the file list (every ``N``-th file) under ``DataParallel`` over all the
workers' devices: one global batch of ``batch_size`` x devices per step, one update for all.
Afterwards every worker holds the same weights; rank 0 alone runs the self-check and the
calibration on its held-out images and writes the model directory (``run_dir`` must be on storage
rank 0 can write and the caller can read).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from anomaly_ae.config import DetectorConfig
from anomaly_ae.data.images import list_images, read_image
from anomaly_ae.outputs.ray_engine import require_ray

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
              run_dir: str) -> dict[str, Any]:
        import jax

        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        import keras

        keras.distribution.initialize(job_addresses=coordinator, num_processes=workers, process_id=rank)
        from anomaly_ae.detector import Detector

        cfg = DetectorConfig.model_validate(config).with_overrides({"train.distribution": "multi_worker"})
        det = Detector(cfg).fit([Path(p) for p in paths])
        if rank == 0:
            det.config = det.config.with_overrides({"train.distribution": "none"})  # the saved model is local
            det.save(run_dir)
        return {"rank": rank, "n_train": det.train_info_["n_train"], "loss": det.history_["loss"]}


def train_on_ray(config: DetectorConfig, good_dir: str | Path, run_dir: str | Path, workers: int = 2,
                 address: str | None = None) -> list[dict[str, Any]]:
    """Train on ``workers`` Ray workers (a local Ray without ``address``); rank 0 writes ``run_dir``.

    Returns:
        Each worker's ``{"rank", "n_train", "loss"}`` (losses per epoch; the same on every worker).

    Raises:
        RayMissing: Ray is not installed.
        ValueError: fewer images than workers.
    """
    ray = require_ray()
    paths = [os.path.abspath(p) for p in list_images(Path(good_dir))]
    per_worker = len(paths) // workers  # equal shards: every worker must take the same number of steps
    if per_worker < 2:
        raise ValueError(f"{good_dir} holds {len(paths)} images: too few for {workers} workers")
    if config.data.image_size == "auto":  # resolved once, so that every worker builds the same model
        step = max(1, len(paths) // 64)
        config = config.with_image_size([read_image(p, config.data.channels).shape[:2] for p in paths[::step][:64]])
    started = not ray.is_initialized()
    if started:
        ray.init(**({"address": address} if address else {"address": "local", "include_dashboard": False}),
                 log_to_driver=False, configure_logging=False)
    try:
        remote = ray.remote(num_cpus=1, runtime_env={"env_vars": WORKER_ENV})(TrainingWorker)
        actors = [remote.remote() for _ in range(workers)]
        coordinator = ray.get(actors[0].address.remote())
        refs = [actor.train.remote(rank, workers, coordinator, config.to_dict(), paths[rank::workers][:per_worker],
                                   os.path.abspath(run_dir)) for rank, actor in enumerate(actors)]
        return ray.get(refs)
    finally:
        if started:
            ray.shutdown()
