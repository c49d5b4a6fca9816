"""Data-parallel training on the devices of one machine (``train.distribution: data_parallel``).

::

    with replicas(config.train.distribution) as r:      # build, compile and fit the model inside
        dataset batch size = config.train.batch_size * r.n  # this process's part: per-device batch x devices
        model.loss_scale = r.loss_scale

One backend-neutral switch over what each backend provides: ``keras.distribution.DataParallel`` on
JAX (the batch is sharded over every device, weights replicated; one mean loss over the global
batch) and ``tf.distribute.MirroredStrategy`` on TensorFlow (one replica per GPU, or per logical CPU
device when there is no GPU; gradients are summed, so the models divide each replica's loss by the
number of replicas: :func:`anomaly_ae.models.losses.scale_for_replicas`). Either way a step sees the
same global batch and takes the same update as one device would.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import keras

DISTRIBUTIONS = ("none", "data_parallel", "multi_worker")


@dataclass(frozen=True)
class Replicas:
    """``n``: the replicas this process feeds (its batch is ``batch_size x n``); ``loss_scale``: the factor
    on each replica's mean loss so that the summed gradients are those of the global mean."""

    n: int = 1
    loss_scale: float = 1.0


@contextlib.contextmanager
def replicas(kind: str) -> Iterator[Replicas]:
    """Train under ``kind`` (``"none"``, ``"data_parallel"`` or ``"multi_worker"``); yields :class:`Replicas`.

    Raises:
        ValueError: an unknown kind, or a backend without data-parallel support here (torch).
    """
    if kind not in DISTRIBUTIONS:
        raise ValueError(f"train.distribution must be one of {', '.join(DISTRIBUTIONS)}, not {kind!r}")
    if kind == "none":
        yield Replicas()
        return
    backend = keras.backend.backend()
    if kind == "multi_worker":  # one of several processes joined by keras.distribution.initialize (JAX)
        if backend != "jax":
            raise ValueError("train.distribution: multi_worker runs on the JAX backend (Keras 3 fit does not run "
                             "under TensorFlow's MultiWorkerMirroredStrategy: keras-team/keras#20585)")
        import jax

        with _data_parallel(shard_dataset=False):  # every process reads its own shard of the files
            yield Replicas(jax.local_device_count())  # this process's part; JAX takes one global mean
        return
    if backend == "jax":
        with _data_parallel(shard_dataset=True) as devices:
            yield Replicas(devices)  # one mean over the global batch: no loss scaling
    elif backend == "tensorflow":
        import tensorflow as tf

        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        strategy = tf.distribute.MirroredStrategy(devices=[d.name for d in devices])
        with strategy.scope():
            n = strategy.num_replicas_in_sync
            yield Replicas(n, 1.0 / n)
    else:
        raise ValueError(f"train.distribution: data_parallel is not supported on the {backend} backend")


@contextlib.contextmanager
def _data_parallel(shard_dataset: bool) -> Iterator[int]:
    """Keras's ``DataParallel`` over every device (of every process) while inside, the previous distribution
    after; yields the number of devices. ``shard_dataset``: Keras splits each dataset over the processes."""
    devices = keras.distribution.list_devices()
    previous = keras.distribution.distribution()
    dist = keras.distribution.DataParallel(devices=devices)
    dist.auto_shard_dataset = shard_dataset
    keras.distribution.set_distribution(dist)
    try:
        yield len(devices)
    finally:
        keras.distribution.set_distribution(previous)
