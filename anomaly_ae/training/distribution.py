"""Data-parallel training on the devices of one machine (``train.distribution: data_parallel``).

::

    with replicas(config.train.distribution) as n:      # build, compile and fit the model inside
        dataset batch size = config.train.batch_size * n  # the global batch: per-device batch x devices

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

import keras

DISTRIBUTIONS = ("none", "data_parallel")


@contextlib.contextmanager
def replicas(kind: str) -> Iterator[int]:
    """Train under ``kind`` (``"none"`` or ``"data_parallel"``); yields the number of replicas.

    Raises:
        ValueError: an unknown kind, or a backend without data-parallel support here (torch).
    """
    if kind not in DISTRIBUTIONS:
        raise ValueError(f"train.distribution must be one of {', '.join(DISTRIBUTIONS)}, not {kind!r}")
    if kind == "none":
        yield 1
        return
    backend = keras.backend.backend()
    if backend == "jax":
        devices = keras.distribution.list_devices()
        previous = keras.distribution.distribution()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        try:
            yield len(devices)
        finally:
            keras.distribution.set_distribution(previous)
    elif backend == "tensorflow":
        import tensorflow as tf

        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        strategy = tf.distribute.MirroredStrategy(devices=[d.name for d in devices])
        with strategy.scope():
            yield strategy.num_replicas_in_sync
    else:
        raise ValueError(f"train.distribution: data_parallel is not supported on the {backend} backend")
