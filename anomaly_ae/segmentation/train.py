"""Supervised defect segmentation on top of an exported encoder: data pairs, Dice/IoU, training."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np

from anomaly_ae.data.images import ImageReadError, Preprocessing, list_images, read_image, split_holdout
from anomaly_ae.data.mvtec import mask_path_for
from anomaly_ae.io.files import write_json_atomic
from anomaly_ae.io.folders import staging
from anomaly_ae.io.names import ENCODER_JSON, SEGMENTER_FILES, SEGMENTER_JSON, SEGMENTER_KERAS


def dice_iou(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Dice and IoU of two bool arrays of one shape, over all their pixels (1.0 when both are empty)."""
    p = np.asarray(pred, bool)
    t = np.asarray(target, bool)
    inter = float(np.sum(p & t))
    total = float(p.sum() + t.sum())
    union = float(np.sum(p | t))
    if total == 0:
        return 1.0, 1.0
    return 2 * inter / total, inter / union


@dataclass
class Pairs:
    """Images and masks at model size: x ``(N, h, w, C)`` float32, y ``(N, h, w, 1)`` float32 0/1."""

    x: np.ndarray
    y: np.ndarray
    paths: list[Path]
    skipped: list[tuple[Path, str]]


def load_pairs(images_dir: Path, masks_dir: Path, pre: Preprocessing) -> Pairs:
    """Every readable image with a mask (a missing mask, an unreadable file or sub-folder: skipped with a reason)."""
    xs, ys, paths, skipped = [], [], [], []
    problems: list[str] = []
    for p in list_images(images_dir, problems=problems):
        mp = mask_path_for(p, images_dir, masks_dir)
        if mp is None:
            skipped.append((p, "no mask"))
            continue
        try:
            image = read_image(p, pre.channels)
            mask = read_image(mp, 1)
        except ImageReadError as err:
            skipped.append((p, str(err)))
            continue
        xs.append(pre(image)[0])
        ys.append((Preprocessing(pre.image_size, 1)(mask)[0] > 0.5).astype(np.float32))
        paths.append(p)
    skipped += [(images_dir, line) for line in problems]  # unreadable sub-folders: reported, never silent
    if not xs:
        raise ValueError(f"no image in {images_dir} has a mask in {masks_dir}")
    return Pairs(np.stack(xs), np.stack(ys), paths, skipped)


def encoder_preprocessing(encoder_dir: Path) -> Preprocessing:
    """The preprocessing recorded in ``encoder.json``."""
    info = json.loads((Path(encoder_dir) / ENCODER_JSON).read_text(encoding="utf-8"))
    return Preprocessing(tuple(info["image_size"]), int(info["channels"]))  # type: ignore[arg-type]


#: image/mask pairs per step
BATCH_SIZE = 8


@dataclass(frozen=True)
class SegmenterTraining:
    """How a segmenter trains: ``epochs``, ``learning_rate``, the seeded ``holdout_fraction`` it is measured on,
    ``seed``, ``freeze_encoder`` (train the decoder only) and ``pretrained`` (start from the encoder's weights;
    ``False``: the same architecture from scratch, the baseline of ``benchmarks/transfer.py``)."""

    epochs: int = 30
    learning_rate: float = 1e-3
    holdout_fraction: float = 0.2
    seed: int = 0
    freeze_encoder: bool = True
    pretrained: bool = True


def train_segmenter(
    encoder_dir: Path,
    pairs: Pairs,
    training: SegmenterTraining | None = None,
    callbacks: list[Any] | None = None,
    test: Pairs | None = None,
    **fields: Any,
) -> tuple[keras.Model, dict[str, float]]:
    """Fit a :func:`~anomaly_ae.segmentation.model.build_segmenter` model; Dice/IoU on a seeded held-out split.

    ``training`` (or its fields as keywords): :class:`SegmenterTraining`. With ``test`` given, all of ``pairs``
    train and Dice/IoU are measured on ``test`` instead.
    """
    from anomaly_ae.segmentation.model import build_segmenter
    from anomaly_ae.training.seeding import set_seed

    t = replace(training or SegmenterTraining(), **fields)
    epochs, learning_rate, holdout_fraction, seed = t.epochs, t.learning_rate, t.holdout_fraction, t.seed
    freeze_encoder, pretrained = t.freeze_encoder, t.pretrained

    set_seed(seed)
    if test is None:
        tr, ho = split_holdout(len(pairs.x), holdout_fraction, seed)
        x_tr, y_tr, x_te, y_te = pairs.x[tr], pairs.y[tr], pairs.x[ho], pairs.y[ho]
    else:
        x_tr, y_tr, x_te, y_te = pairs.x, pairs.y, test.x, test.y
    model = build_segmenter(encoder_dir, num_classes=1, freeze_encoder=freeze_encoder, pretrained=pretrained)
    from anomaly_ae.models.losses import dice_bce_loss

    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=dice_bce_loss)
    # A separate test set (benchmarks) is only measured at the end, never looked at during training.
    validation = (x_te, y_te) if test is None else None
    model.fit(x_tr, y_tr, validation_data=validation, epochs=epochs, batch_size=BATCH_SIZE, verbose=0,
              callbacks=callbacks or [])
    pred = keras.ops.convert_to_numpy(model.predict(x_te, verbose=0, batch_size=BATCH_SIZE)) > 0.5
    dice, iou = dice_iou(pred, y_te > 0.5)
    return model, {"dice": dice, "iou": iou, "n_train": int(len(x_tr)), "n_val": int(len(x_te))}


#: what a segmenter folder holds


def save_segmenter(out: Path, model: keras.Model, pre: Preprocessing, encoder_dir: Path, metrics: dict[str, Any],
                   overwrite: bool = False) -> Path:
    """Write ``segmenter.keras`` + ``segmenter.json`` into ``out`` (built beside it, moved into place)."""
    with staging(out, "segmenter", SEGMENTER_FILES, overwrite, order=(SEGMENTER_JSON,)) as tmp:
        model.save(tmp / SEGMENTER_KERAS)
        write_json_atomic(tmp / SEGMENTER_JSON, {"schema_version": 1, "image_size": list(pre.image_size),
                                                   "channels": pre.channels, "threshold": 0.5,
                                                   "encoder_dir": str(encoder_dir), "metrics": metrics})
    return out
