"""Apply a trained segmenter to a folder: ``masks/`` (0/255, original size) and ``overlays/``, Dice/IoU with masks."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import keras
import numpy as np

from anomaly_ae.data.images import ImageReadError, Preprocessing, list_images, read_image
from anomaly_ae.data.mvtec import mask_path_for
from anomaly_ae.io.files import display_name, output_name, write_png_atomic
from anomaly_ae.io.folders import check_writable, staging
from anomaly_ae.io.names import SEGMENTER_JSON, SEGMENTER_KERAS
from anomaly_ae.segmentation.train import dice_iou

#: what ``predict_folder`` writes into its output folder
SEGMENTATION_OUTPUTS = ("masks", "overlays")


class SegmenterError(ValueError):
    """A segmenter folder cannot be loaded; the message says why."""


@dataclass
class SegmentationSummary:
    """What :func:`predict_folder` did."""

    n_failed: int  # unreadable images or masks, and unreadable sub-folders
    dice: float | None = None  # over the images with a ground-truth mask
    iou: float | None = None
    n_with_masks: int = 0
    problems: list[str] = field(default_factory=list)  # sub-folders that could not be read


def load_segmenter(model_dir: Path) -> tuple[dict[str, Any], keras.Model]:
    """``segmenter.json`` and the Keras model (``safe_mode=True``).

    Raises:
        SegmenterError: a missing field or an unloadable model.
    """
    import anomaly_ae.models  # noqa: F401  (registers the serialisable classes)

    try:
        info = json.loads((model_dir / SEGMENTER_JSON).read_text(encoding="utf-8"))
        info["image_size"], info["channels"], info["threshold"]  # noqa: B018 - the fields predict needs
        model = keras.saving.load_model(model_dir / SEGMENTER_KERAS, safe_mode=True, compile=False)
    except (ValueError, KeyError, TypeError) as err:
        why = f"{type(err).__name__}: {str(err)[:120]}"
        raise SegmenterError(f"{model_dir}: cannot load the segmenter ({why})") from None
    return info, model


def predict_folder(model_dir: Path, input_dir: Path, out: Path, masks: Path | None = None, overwrite: bool = False,
                   on_failure: Callable[[str], None] | None = None) -> SegmentationSummary:
    """Segment every image under ``input_dir`` into ``out/masks`` and ``out/overlays`` (``<rel>.png``).

    ``on_failure`` receives one line per unreadable image or mask as it happens.

    Raises:
        OutputConflict: ``out`` is unusable or holds predictions and ``overwrite`` is not set.
        SegmenterError: the segmenter cannot be loaded.
    """
    check_writable(out, "segmentation", SEGMENTATION_OUTPUTS, overwrite,
                   {"model folder": model_dir, "input folder": input_dir, "mask folder": masks})
    info, model = load_segmenter(model_dir)
    with staging(out, "segmentation", SEGMENTATION_OUTPUTS, overwrite) as tmp:
        return _predict_into(tmp, info, model, input_dir, masks, out, on_failure or (lambda line: None))


def _predict_into(tmp: Path, info: dict, model: keras.Model, input_dir: Path, masks: Path | None, exclude: Path,
                  on_failure: Callable[[str], None]) -> SegmentationSummary:
    pre = Preprocessing(tuple(info["image_size"]), int(info["channels"]))  # type: ignore[arg-type]
    preds, truths, failed = [], [], 0
    problems: list[str] = []
    for p in list_images(input_dir, exclude=[exclude], problems=problems):
        rel = display_name(p.relative_to(input_dir).as_posix())
        try:
            image = read_image(p, pre.channels)
        except ImageReadError as err:
            on_failure(f"{rel}: {err}")
            failed += 1
            continue
        mask = _predict_mask(model, pre, image, info["threshold"])
        write_png_atomic(tmp / "masks" / output_name(rel, ".png"), mask.astype(np.uint8) * 255)
        write_png_atomic(tmp / "overlays" / output_name(rel, ".png"), _overlay(image, mask, pre.channels))
        if masks is not None and (mp := mask_path_for(p, input_dir, masks)) is not None:
            try:
                truths.append(read_image(mp, 1)[..., 0] > 127)
                preds.append(mask)
            except ImageReadError as err:
                on_failure(f"mask of {rel}: {err}")
                failed += 1
    summary = SegmentationSummary(failed + len(problems), n_with_masks=len(preds), problems=problems)
    if preds:
        summary.dice, summary.iou = dice_iou(np.concatenate([m.ravel() for m in preds]),
                                             np.concatenate([t.ravel() for t in truths]))
    return summary


def _predict_mask(model: keras.Model, pre: Preprocessing, image: np.ndarray, threshold: float) -> np.ndarray:
    """Bool ``(H, W)`` defect mask of one uint8 image at its original size."""
    prob = keras.ops.convert_to_numpy(model.predict(pre(image), verbose=0))[0, :, :, 0]
    prob = cv2.resize(prob, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    return prob > threshold


def _overlay(image: np.ndarray, mask: np.ndarray, channels: int) -> np.ndarray:
    """BGR uint8 image with the mask tinted red."""
    base = cv2.cvtColor(image if channels == 3 else np.repeat(image, 3, axis=2), cv2.COLOR_RGB2BGR)
    overlay = base.copy()
    overlay[mask] = (0.5 * overlay[mask] + 0.5 * np.array([0, 0, 255])).astype(np.uint8)
    return overlay
