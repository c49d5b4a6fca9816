"""Deployable detector: one graph from an image batch to (anomaly map, image score), for runtimes without us.

``export_detector(det, out_dir, "onnx" | "savedmodel")`` writes

    out_dir/model.onnx  or  out_dir/saved_model/   the graph (Keras 3 ``model.export``)
    out_dir/deploy.json                             input/output contract, threshold, normalization,
                                                    score statistics, scoring settings, versions

The graph takes ``images``: ``(N, h, w, C)`` at the model resolution, ``uint8`` 0-255 (default) or
``float32`` in [0, 1], RGB order (``C == 3``) or gray (``C == 1``). It returns ``anomaly_map``
``(N, h, w)`` float32 and ``score`` ``(N,)`` float32, equal to :meth:`Detector.anomaly_maps` and
:meth:`Detector.score` on the same model-size images (within 1e-4, ``tests/test_export.py``).
Resizing a camera frame to ``(h, w)`` (OpenCV ``INTER_AREA`` when shrinking, as we do) and
resizing the map back are left to the caller; the threshold and normalization are numbers in
``deploy.json``, applied as ``score > threshold``.

What cannot be one graph is refused with :class:`~anomaly_ae.deploy.encoder.ExportError`: tiled
reconstruction (``scoring.tile_size`` smaller than the image) and the VAE's extra KL score
(``scoring.kl_weight > 0``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import keras
from keras import ops

from anomaly_ae.deploy.encoder import ExportError, detector_for_export, require_exporters
from anomaly_ae.detector import Detector
from anomaly_ae.io.files import versions, write_json_atomic
from anomaly_ae.io.folders import staging
from anomaly_ae.io.names import DEPLOY_JSON, ONNX_FILE, SAVED_MODEL_DIR
from anomaly_ae.scoring import ops as scoring_ops

FORMATS = ("onnx", "savedmodel")
INPUT_DTYPES = ("uint8", "float32")


@keras.saving.register_keras_serializable(package="anomaly_ae")
class BorderPad(keras.layers.Layer):
    """Pad ``(N, H, W, C)`` by static amounts with a NumPy pad ``mode``: ``pad_h``/``pad_w`` at the
    bottom/right, ``top``/``left`` (default 0) at the top/left."""

    def __init__(self, pad_h: int, pad_w: int, mode: str = "reflect", top: int = 0, left: int = 0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pad_h, self.pad_w, self.mode = int(pad_h), int(pad_w), mode
        self.top, self.left = int(top), int(left)

    def call(self, x: Any) -> Any:
        return scoring_ops.pad_hw(x, (self.top, self.pad_h, self.left, self.pad_w), self.mode)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        n, h, w, c = input_shape
        return (n, None if h is None else h + self.top + self.pad_h,
                None if w is None else w + self.left + self.pad_w, c)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "pad_h": self.pad_h, "pad_w": self.pad_w, "mode": self.mode,
                "top": self.top, "left": self.left}


def _padded(x: Any, margin: int, factor: int, name: str) -> Any:
    """:func:`anomaly_ae.scoring.tiling.pad_margin` as layers: ``margin`` mirrored pixels on every side, then
    reflect-padding at the bottom/right to multiples of ``factor``."""
    if margin:
        x = BorderPad(margin, margin, "symmetric", top=margin, left=margin, name=f"{name}_margin")(x)
    h, w = int(x.shape[1]), int(x.shape[2])
    ph, pw = (-h) % factor, (-w) % factor
    if ph or pw:
        x = BorderPad(ph, pw, "reflect" if ph < h and pw < w else "edge", name=f"{name}_to_multiple")(x)
    return x


def _cropped(x: Any, margin: int, h: int, w: int, name: str) -> Any:
    """The ``(h, w)`` image inside a :func:`_padded` tensor."""
    bottom, right = int(x.shape[1]) - margin - h, int(x.shape[2]) - margin - w
    if margin or bottom or right:
        x = keras.layers.Cropping2D(((margin, bottom), (margin, right)), name=name)(x)
    return x


@keras.saving.register_keras_serializable(package="anomaly_ae")
class ScoringHead(keras.layers.Layer):
    """``[x, x_hat]`` -> ``{"anomaly_map": (N, h, w), "score": (N,)}``; ``x_hat`` is cropped to ``x``.

    With ``position_norm`` the score reduces ``(map - position_mean) / position_scale``: two
    non-trainable ``(h, w)`` weights, set by :func:`scoring_model` from the detector's reference
    (:mod:`anomaly_ae.scoring.position`); the map output stays the plain map, as in ``Detector``.
    """

    def __init__(
        self,
        metric: str = "l2",
        channel_reduction: str = "mean",
        ssim_weight: float = 0.5,
        sigma: tuple[float, float] = (0.0, 0.0),
        reduction: str = "max",
        topk_fraction: float = 0.01,
        position_norm: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.metric, self.channel_reduction, self.ssim_weight = metric, channel_reduction, float(ssim_weight)
        self.sigma = (float(sigma[0]), float(sigma[1]))
        self.reduction, self.topk_fraction = reduction, float(topk_fraction)
        self.position_norm = bool(position_norm)

    def build(self, input_shapes: list[tuple]) -> None:
        if self.position_norm:
            hw = (int(input_shapes[0][1]), int(input_shapes[0][2]))
            self.position_mean = self.add_weight(shape=hw, initializer="zeros", trainable=False, name="position_mean")
            self.position_scale = self.add_weight(shape=hw, initializer="ones", trainable=False, name="position_scale")

    def call(self, inputs: list[Any]) -> dict[str, Any]:
        x, x_hat, *learned = inputs  # metric "learned": the discriminator's (N, H', W', 1) map comes third
        h, w = int(x.shape[1]), int(x.shape[2])
        x_hat = x_hat[:, :h, :w, :]
        if self.metric == "learned":  # the discriminator's logits -> defect probability
            res = ops.sigmoid(learned[0][:, :h, :w, 0])
        elif self.metric == "feature":  # a feature model's output is its map already
            res = x_hat[..., 0]
        else:
            res = scoring_ops.residual_map(x, x_hat, self.metric, self.channel_reduction, self.ssim_weight)
        amap = scoring_ops.smooth(res, *self.sigma)
        scored = (amap - self.position_mean) / self.position_scale if self.position_norm else amap
        return {"anomaly_map": amap, "score": scoring_ops.image_score(scored, self.reduction, self.topk_fraction)}

    def compute_output_shape(self, input_shapes: list[tuple]) -> dict[str, tuple]:
        n, h, w, _ = input_shapes[0]
        return {"anomaly_map": (n, h, w), "score": (n,)}

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(), "metric": self.metric, "channel_reduction": self.channel_reduction,
            "ssim_weight": self.ssim_weight, "sigma": list(self.sigma), "reduction": self.reduction,
            "topk_fraction": self.topk_fraction, "position_norm": self.position_norm,
        }


def scoring_model(det: Detector, input_dtype: str = "uint8") -> keras.Model:
    """The fitted detector as one Keras model: ``images`` -> ``{"anomaly_map", "score"}`` (see module doc)."""
    if input_dtype not in INPUT_DTYPES:
        raise ExportError(f"input dtype {input_dtype!r} is not supported; choose one of {', '.join(INPUT_DTYPES)}")
    s = det.config_.scoring
    if s.kl_weight > 0 and hasattr(det.model_, "kl_divergence"):
        raise ExportError("scoring.kl_weight > 0 (VAE KL score) cannot be exported; calibrate with kl_weight 0")
    h, w = det.preprocessing_.image_size
    c = det.preprocessing_.channels
    factor = det.scorer_.pad_factor()
    ae_margin = det.scorer_.border_margin()
    ph, pw = (-(h + 2 * ae_margin)) % factor, (-(w + 2 * ae_margin)) % factor
    if s.tile_size is not None and max(h + 2 * ae_margin + ph, w + 2 * ae_margin + pw) > s.tile_size:
        raise ExportError(
            f"scoring.tile_size {s.tile_size} tiles {h + 2 * ae_margin + ph}x{w + 2 * ae_margin + pw} images, "
            "which one graph does not reproduce; export a copy whose config sets scoring.tile_size: null"
        )
    images = keras.Input((h, w, c), dtype=input_dtype, name="images")
    x = keras.layers.Rescaling(1.0 / 255.0, name="to_unit_range")(images) if input_dtype == "uint8" else images
    # the same padding and crop as Detector.reconstruct and Detector.learned_maps (tiling.pad_margin)
    x_hat = _cropped(det.model_(_padded(x, ae_margin, factor, "pad"), training=False), ae_margin, h, w,
                     "reconstruction_crop")
    head = ScoringHead(s.metric, s.channel_reduction, s.ssim_weight, det.scorer_.smoothing_sigma(), s.reduction,
                       s.topk_fraction, s.position_norm, name="scoring")
    inputs = [x, x_hat]
    if s.metric == "learned":  # the discriminator on (image, reconstruction), as Detector.learned_maps
        joined = keras.layers.Concatenate(name="image_and_reconstruction")([x, x_hat])
        inputs.append(det.model_.discriminator_net(_padded(joined, 0, factor, "map_pad")))  # the head crops it
    outputs = head(inputs)
    if s.position_norm:  # the reference, resized as Detector does it, becomes two constants of the graph
        mean, scale = det.scorer_.position_reference().full_size((h, w))
        head.position_mean.assign(mean)
        head.position_scale.assign(scale)
    return keras.Model(images, outputs, name="anomaly_ae_detector")


def export_detector(
    detector_or_run_dir: Detector | str | Path, out_dir: str | Path, fmt: str = "onnx", input_dtype: str = "uint8",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the deployable graph and ``deploy.json`` of a detector (or model directory) to ``out_dir``.

    Returns the ``deploy.json`` content.

    Built beside ``out_dir`` and moved into place; an earlier export there is replaced only with
    ``overwrite``, and files anomaly-ae did not write are never touched (:mod:`anomaly_ae.io.folders`).
    """
    if fmt not in FORMATS:
        raise ExportError(f"format {fmt!r} is not supported; choose one of {', '.join(FORMATS)}")
    det = detector_for_export(detector_or_run_dir, Path(out_dir), "export", DEPLOY_JSON, overwrite)
    det.check_fitted(need_threshold=True)
    require_exporters(fmt)
    if fmt == "onnx":
        if getattr(det.model_, "precision", "float32") != "float32":  # Keras' ONNX export needs float32
            raise ExportError(f"ONNX export needs a float32 model; this one trains in {det.model_.precision} "
                              "(export it as fmt='savedmodel', or retrain with train.precision: float32)")
    model = scoring_model(det, input_dtype)
    h, w = det.preprocessing_.image_size
    c = det.preprocessing_.channels
    model(keras.ops.zeros((1, h, w, c), dtype=input_dtype))  # Keras exports only models that were called

    artefact = ONNX_FILE if fmt == "onnx" else SAVED_MODEL_DIR
    with staging(Path(out_dir), "export", [artefact, DEPLOY_JSON], overwrite, order=(DEPLOY_JSON,)) as tmp, \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # tf2onnx's np.object probe, not ours to fix
        model.export(str(tmp / artefact), format="onnx" if fmt == "onnx" else "tf_saved_model", verbose=False)
        info = deploy_info(det, fmt, artefact, input_dtype)
        write_json_atomic(tmp / DEPLOY_JSON, info)
    return info


def deploy_info(det: Detector, fmt: str, artefact: str, input_dtype: str) -> dict[str, Any]:
    """The ``deploy.json`` contract of an exported detector."""
    h, w = det.preprocessing_.image_size
    c = det.preprocessing_.channels
    post = det.postprocessor_  # the one source of the thresholds and ranges
    lo, hi = post.norm_range
    return {
        "schema_version": 1,
        "format": fmt,
        "file": artefact,
        "input": {
            "name": "images", "shape": [None, h, w, c], "dtype": input_dtype,
            "value_range": [0, 255] if input_dtype == "uint8" else [0.0, 1.0],
            "channel_order": "RGB" if c == 3 else "gray",
            "resize": "to (h, w) with OpenCV INTER_AREA when shrinking, INTER_LINEAR when enlarging",
            "aspect": ("pad: resize to the largest box of the image's aspect ratio that fits (h, w), centred, "
                       "and fill the rest with cv2.BORDER_REFLECT_101; crop the map to that box before resizing "
                       "it back" if det.preprocessing_.aspect == "pad" else "stretch: resize to (h, w) directly"),
        },
        "outputs": {
            "anomaly_map": {"shape": [None, h, w], "dtype": "float32",
                            "meaning": "per-pixel anomaly at model resolution; > pixel_threshold = defect"},
            "score": {"shape": [None], "dtype": "float32", "meaning": "higher = more anomalous"},
        },
        "threshold": post.threshold,
        "pixel_threshold": post.pixel_threshold,
        "expected_false_positive_rate": post.expected_fpr,
        "normalization": {
            "formula": "clip((score - threshold) / (hi - lo) + 0.5, 0, 1); 0.5 = threshold",
            "lo": lo, "hi": hi,
        },
        "heatmap_range": list(post.heatmap_range),
        "score_stats": post.score_stats.to_dict(),
        "source_size": list(det.preprocessing_.source_size) if det.preprocessing_.source_size else None,
        "scoring": det.config_.scoring.model_dump(),
        "model": det.config_.model.name,
        "versions": versions(),
    }


__all__ = ["FORMATS", "BorderPad", "ExportError", "ScoringHead", "deploy_info", "export_detector", "scoring_model"]
