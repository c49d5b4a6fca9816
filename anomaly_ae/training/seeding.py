"""One seed for Python, NumPy and Keras, without importing TensorFlow under other backends."""

from __future__ import annotations

import random

import keras
import numpy as np


def set_seed(seed: int) -> None:
    """Seed ``random``, ``numpy`` and Keras' global ``SeedGenerator`` (+ TF or torch when in use).

    ``keras.utils.set_random_seed`` also imports TensorFlow whenever it is installed, even under the
    JAX or torch backend (slow, and TF then grabs GPU memory). Under those backends this does the same
    work minus TensorFlow.
    """
    if keras.backend.backend() == "tensorflow":
        keras.utils.set_random_seed(seed)
        return
    try:
        from keras.src.backend.common import global_state
        from keras.src.random import seed_generator
        from keras.src.utils import rng_utils
    except ImportError:  # private layout changed: fall back to the public (slower) call
        keras.utils.set_random_seed(seed)
        return
    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)
    if keras.backend.backend() == "torch":
        import torch

        torch.manual_seed(seed)
