"""The segmenter: an exported encoder (:mod:`anomaly_ae.deploy.encoder`) + a U-Net decoder + a per-pixel head."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np

from anomaly_ae.deploy.encoder import load_encoder
from anomaly_ae.io.names import ENCODER_JSON


def build_segmenter(
    encoder_dir: str | Path,
    num_classes: int = 1,
    freeze_encoder: bool = True,
    name: str = "segmenter",
    pretrained: bool = True,
    prior: float = 0.01,
) -> keras.Model:
    """U-Net-style segmenter: the exported encoder + a decoder with skip connections + a per-pixel head.

    The decoder up-samples the latent by 2, concatenates the encoder features of the same resolution
    and applies two 3x3 convs with leaky ReLU (as many channels as that encoder block), down to full
    resolution; the head is a 1x1 conv with a sigmoid (``num_classes == 1``, bias starting at the
    foreground ``prior``) or a softmax. Output ``(N, H, W, classes)``.
    ``pretrained=False`` re-initialises the encoder (same architecture, random weights).
    """
    from keras import layers

    enc = load_encoder(encoder_dir)
    if not pretrained:  # same architecture, fresh weights (the baseline of a transfer experiment)
        enc = keras.models.clone_model(enc)
    enc.trainable = not freeze_encoder
    inp = keras.Input(shape=tuple(enc.inputs[0].shape[1:]), name="image")
    *blocks, x = enc(inp)
    down = downsampling(encoder_dir, len(blocks))
    for i, skip in reversed(list(enumerate(blocks))):
        if down[i + 1] > down[i]:
            x = layers.UpSampling2D(down[i + 1] // down[i], name=f"seg_up{i + 1}")(x)
        x = layers.Concatenate(name=f"seg_skip{i + 1}")([x, skip])
        for j in range(2):
            x = layers.Conv2D(int(skip.shape[-1]), 3, padding="same", activation="leaky_relu",
                              name=f"seg_dec{i + 1}_conv{j + 1}")(x)
    if down[0] > 1:  # a pretrained backbone's first block is already at half size or less
        x = layers.UpSampling2D(down[0], interpolation="bilinear", name="seg_up0")(x)
    activation = "sigmoid" if num_classes == 1 else "softmax"
    # Defects are rare: start the head at a prior of 1% foreground (Lin et al., 2017, focal loss paper)
    # instead of 50%, so the first steps do not drive every decoder unit to "background" and die there.
    bias = keras.initializers.Constant(float(np.log(prior / (1.0 - prior)))) if num_classes == 1 else "zeros"
    out = layers.Conv2D(num_classes, 1, activation=activation, bias_initializer=bias, dtype="float32",
                        name="mask")(x)
    return keras.Model(inp, out, name=name)


def downsampling(encoder_dir: str | Path, n_blocks: int) -> list[int]:
    """Down-sampling of each encoder output (blocks, then latent) from ``encoder.json``; encoders exported
    before it was recorded (or without the file) are the image autoencoders' ``1, 2, ..., 2**n_blocks``."""
    path = Path(encoder_dir) / ENCODER_JSON
    if path.is_file():
        outputs = json.loads(path.read_text(encoding="utf-8")).get("outputs", [])
        if len(outputs) == n_blocks + 1 and all("downsampling" in o for o in outputs):
            return [int(o["downsampling"]) for o in outputs]
    return [2**i for i in range(n_blocks + 1)]


def unfreeze(model: keras.Model, n_blocks: int) -> keras.Model:
    """Make the last ``n_blocks`` encoder blocks (and the latent layer) of a segmenter trainable.

    Recompile the model afterwards: Keras fixes the trainable set at ``compile``.
    """
    enc = model.get_layer("multiscale_encoder")
    n_total = sum(1 for layer in enc.layers if layer.name.endswith("_pool"))  # one pool per block
    keep = {f"enc{i}" for i in range(max(1, n_total - n_blocks + 1), n_total + 1)} if n_blocks > 0 else set()
    enc.trainable = True
    for layer in enc.layers:
        prefix = layer.name.split("_")[0]
        layer.trainable = n_blocks > 0 and (prefix in keep or layer.name in ("latent", "z_mean"))
    return model
