"""The learned anomaly map: a small U-Net on ``concat(image, reconstruction)`` -> defect probability per pixel.

DRAEM's discriminative network (Zavrtanik et al., ICCV 2021), small: per width two 3x3 convs with
leaky ReLU and a 2x max-pool down, the mirror image up with skip connections, and a 1x1 conv with a
bias that starts at a 1% foreground prior (rare defects; as the segmenter of
:mod:`anomaly_ae.segmentation.model`). It returns logits; the defect probability is their sigmoid.
Fully convolutional: any input whose sides are multiples of ``2 ** len(widths)``.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers


def _double_conv(x: keras.KerasTensor, width: int, name: str) -> keras.KerasTensor:
    for j in range(2):
        x = layers.Conv2D(width, 3, padding="same", activation="leaky_relu", name=f"{name}_conv{j + 1}")(x)
    return x


def build_discriminator(channels: int, widths: tuple[int, ...], prior: float = 0.01,
                        name: str = "discriminator") -> keras.Model:
    """U-Net ``(N, H, W, 2 * channels)`` -> defect logits ``(N, H, W, 1)`` (float32)."""
    inp = keras.Input((None, None, 2 * channels), name="image_and_reconstruction")
    x, skips = inp, []
    for i, width in enumerate(widths):
        x = _double_conv(x, width, f"disc_down{i + 1}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"disc_down{i + 1}_pool")(x)
    x = _double_conv(x, widths[-1], "disc_mid")
    for i in reversed(range(len(widths))):
        x = layers.UpSampling2D(2, name=f"disc_up{i + 1}")(x)
        x = layers.Concatenate(name=f"disc_skip{i + 1}")([x, skips[i]])
        x = _double_conv(x, widths[i], f"disc_up{i + 1}")
    bias = keras.initializers.Constant(float(np.log(prior / (1.0 - prior))))
    # logits, not probabilities: the losses work on logits, so a saturated output still has a gradient
    # (with probabilities clipped at 1e-7 a network pushed to "background everywhere" never recovers)
    out = layers.Conv2D(1, 1, bias_initializer=bias, dtype="float32", name="defect_logit")(x)
    return keras.Model(inp, out, name=name)
