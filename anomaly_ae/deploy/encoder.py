"""Reuse a trained encoder: multi-scale feature extractor export (for U-Net-style segmenters).

``export_encoder(det, out_dir)`` writes

    out_dir/encoder.keras         functional model: image -> [block 1 features, ..., block n features, latent]
    out_dir/encoder.weights.h5    its weights alone
    out_dir/encoder.json          input shape, channels, value range, versions, output names
                                  (block1..blockN, latent), shapes and down-sampling factors
    out_dir/encoder.onnx          with ``formats=("onnx",)``: the same features for onnxruntime
    out_dir/encoder_savedmodel/   with ``formats=("savedmodel",)``: a TensorFlow SavedModel

The ONNX and SavedModel graphs take ``image`` ``(N, H, W, C)`` float32 in [0, 1] and return one
named output per feature (``block1``, ..., ``latent``); both go through TensorFlow (Keras 3's
``model.export``), ONNX through ``tf2onnx`` (``pip install 'anomaly-ae[onnx]'``).

Block ``i`` features are the last activation of encoder block ``i`` before its pooling (the skip
connections a U-Net decoder uses), at 1/2**(i-1) of the input resolution. Only convolutional
models have a spatial encoder: ``conv``, ``denoising`` and ``vae`` (its ``z_mean`` path stands in
for the latent), and ``feature``, whose blocks are its pretrained backbone's ends at strides 2, 4, ... up to
its finest tap and whose latent is the feature autoencoder's code (``encoder.json`` gives each output's
down-sampling); the dense family raises :class:`ExportError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras

from anomaly_ae.config import FEATURE_MODELS
from anomaly_ae.detector import Detector
from anomaly_ae.io.files import versions, write_json_atomic
from anomaly_ae.io.folders import check_writable, staging
from anomaly_ae.io.names import ENCODER_JSON, ENCODER_KERAS, ENCODER_ONNX, ENCODER_SAVED_MODEL, ENCODER_WEIGHTS

SPATIAL_MODELS = ("conv", "denoising", "vae", "feature")
ENCODER_FORMATS = ("keras", "weights", "savedmodel", "onnx")


class ExportError(ValueError):
    """The model cannot be exported this way; the message says why."""


def require_exporters(fmt: str) -> None:
    """Raise :class:`ExportError` unless what ``fmt`` ("onnx" | "savedmodel") converts through is installed.

    Both go through a TensorFlow graph (Keras 3's ``model.export``; jax2tf under JAX), ONNX also
    through ``tf2onnx``.
    """
    import importlib.util

    for module in ["tensorflow"] + (["tf2onnx"] if fmt == "onnx" else []):
        if importlib.util.find_spec(module) is None:
            hint = "pip install 'anomaly-ae[onnx]'" if module == "tf2onnx" else "pip install tensorflow"
            raise ExportError(f"format {fmt!r} needs the '{module}' package ({hint})")


def detector_for_export(detector_or_run_dir: Detector | str | Path, out: Path, kind: str, marker: str,
                        overwrite: bool) -> Detector:
    """The detector itself, or the one in a model directory once ``out`` is known to be usable.

    With a model directory, ``out`` is checked first (:func:`anomaly_ae.io.folders.plan`, ``marker``
    naming the export's metadata file), so an unusable ``--out`` is refused before anything loads.
    """
    if isinstance(detector_or_run_dir, Detector):
        return detector_or_run_dir
    check_writable(out, kind, [marker], overwrite, {"model directory": Path(detector_or_run_dir)})
    return Detector.load(detector_or_run_dir)


def feature_encoder(model: keras.Model) -> tuple[keras.Model, list[int]]:
    """A ``feature`` model's encoder: ``image -> [backbone at stride 2, 4, ..., the finest tap, latent]`` and
    each output's down-sampling. The blocks are the pretrained backbone's block ends (a U-Net's skips); the
    latent is the feature autoencoder's code of the stacked features, at the finest tap's stride. The
    backbone is a copy with the model's weights (one flat graph, which saves and loads like any other)."""
    from anomaly_ae.models.backbones import feature_backbone

    finest = model.feature_strides[0]
    blocks = [s for s in (2, 4, 8, 16, 32) if s <= finest]
    needed = sorted(set(blocks) | set(model.feature_strides))
    backbone = feature_backbone(model.backbone_name, tuple(needed), model.image_shape[-1], pretrained=False)
    trained = {w.path: w for w in model.backbone.weights}  # "blocks_3_bn1/moving_mean": layer names are unique
    for w in backbone.weights:
        w.assign(trained[w.path])
    image = keras.Input(model.image_shape, name="image")
    outs = dict(zip(needed, backbone(image), strict=True))
    latent = model.encoder(model.standardize(model.stack_taps([outs[s] for s in model.feature_strides])))
    return keras.Model(image, [*(outs[s] for s in blocks), latent], name="multiscale_encoder"), [*blocks, finest]


def multiscale_encoder(model: keras.Model) -> keras.Model:
    """``image -> [block_1, ..., block_n, latent]`` sharing the trained layers (and weights) of ``model``."""
    if hasattr(model, "feature_strides"):
        return feature_encoder(model)[0]
    enc = model.encoder
    names = [layer.name for layer in enc.layers]
    blocks = []
    for i in range(1, len(model.widths) + 1):
        acts = [n for n in names if n.startswith(f"enc{i}_act")]
        blocks.append(enc.get_layer(acts[-1]).output)
    latent = enc.get_layer("z_mean").output if "z_mean" in names else enc.get_layer("latent").output
    return keras.Model(enc.inputs[0], [*blocks, latent], name="multiscale_encoder")


def export_encoder(
    detector_or_run_dir: Detector | str | Path, out_dir: str | Path, formats: Sequence[str] = (),
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the multi-scale encoder of a fitted detector (or of a model directory); returns ``encoder.json``.

    ``encoder.keras`` and ``encoder.weights.h5`` are always written; ``formats`` may add
    ``"savedmodel"`` and/or ``"onnx"`` (``"keras"`` and ``"weights"`` are accepted and add nothing).
    The folder is built beside ``out_dir`` and moved into place; an earlier export there is replaced
    only with ``overwrite`` and other files are never touched (:mod:`anomaly_ae.io.folders`).
    """
    unknown = [f for f in formats if f not in ENCODER_FORMATS]
    if unknown:
        raise ExportError(f"format {unknown[0]!r} is not supported; choose from {', '.join(ENCODER_FORMATS)}")
    det = detector_for_export(detector_or_run_dir, Path(out_dir), "encoder", ENCODER_JSON, overwrite)
    name = det.config_.model.name
    if name not in SPATIAL_MODELS:
        raise ExportError(
            f"model {name!r} has no spatial encoder to export for segmentation; "
            f"export-encoder supports {', '.join(SPATIAL_MODELS)}"
        )
    extra = list(dict.fromkeys(f for f in formats if f in ("savedmodel", "onnx")))
    names = [ENCODER_KERAS, ENCODER_WEIGHTS, ENCODER_JSON,
             *(ENCODER_ONNX if f == "onnx" else ENCODER_SAVED_MODEL for f in extra)]
    with staging(Path(out_dir), "encoder", names, overwrite, order=(ENCODER_JSON,)) as out:
        info = _write_encoder(det, out, extra)
        write_json_atomic(out / ENCODER_JSON, info)
    return info


def _write_encoder(det: Detector, out: Path, formats: Sequence[str]) -> dict[str, Any]:
    """The encoder files in ``out``; returns the ``encoder.json`` content."""
    name = det.config_.model.name
    if name in FEATURE_MODELS:
        enc, downsampling = feature_encoder(det.model_)
    else:
        enc = multiscale_encoder(det.model_)
        downsampling = [2**i for i in range(len(enc.outputs) - 1)] + [2 ** len(det.config_.model.widths)]
    enc.save(out / ENCODER_KERAS)
    enc.save_weights(out / ENCODER_WEIGHTS)
    files = [ENCODER_KERAS, ENCODER_WEIGHTS]
    for fmt in formats:
        files.append(_export_graph(enc, out, fmt))

    info = {
        "schema_version": 1,
        "source_model": name,
        "input_shape": [None if d is None else int(d) for d in enc.inputs[0].shape[1:]],
        "channels": det.preprocessing_.channels,
        "image_size": list(det.preprocessing_.image_size),
        "value_range": [0.0, 1.0],
        "normalization": "uint8 / 255, RGB channel order (gray: 1 channel)",
        "outputs": [
            {"name": f"block{i + 1}" if i < len(enc.outputs) - 1 else "latent",
             "shape": [None if d is None else int(d) for d in t.shape[1:]],
             "downsampling": downsampling[i]}
            for i, t in enumerate(enc.outputs)
        ],
        "files": files,
        "versions": versions(),
    }
    return info


def _export_graph(enc: keras.Model, out: Path, fmt: str) -> str:
    """``encoder.onnx`` or ``encoder_savedmodel/`` with one named output per feature map; returns the name."""
    require_exporters(fmt)
    names = [f"block{i + 1}" for i in range(len(enc.outputs) - 1)] + ["latent"]
    image = keras.Input(tuple(enc.inputs[0].shape[1:]), name="image")
    named = keras.Model(image, dict(zip(names, enc(image), strict=True)), name="encoder_features")
    shape = [1 if d is None else int(d) for d in image.shape[1:]]
    named(keras.ops.zeros((1, *shape)))  # Keras exports only models that were called
    target = out / (ENCODER_ONNX if fmt == "onnx" else ENCODER_SAVED_MODEL)
    named.export(str(target), format="onnx" if fmt == "onnx" else "tf_saved_model", verbose=False)
    return target.name


def load_encoder(out_dir: str | Path) -> keras.Model:
    """Load ``encoder.keras`` with ``safe_mode=True``."""
    import anomaly_ae.models  # noqa: F401  (registers custom classes)

    return keras.saving.load_model(Path(out_dir) / ENCODER_KERAS, safe_mode=True, compile=False)


__all__ = [
    "ENCODER_FORMATS", "ExportError", "detector_for_export", "export_encoder", "load_encoder", "multiscale_encoder",
    "require_exporters",
]
