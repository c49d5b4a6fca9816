"""Albumentations pipeline built from :class:`~anomaly_ae.config.AugmentConfig`.

Imported only when augmentation is switched on. ``NO_ALBUMENTATIONS_UPDATE`` is set before the import:
otherwise albumentations looks for a newer version over the network on every import.
"""

from __future__ import annotations

import os
from typing import Any

from anomaly_ae.config import AugmentConfig


def build_augmentation(cfg: AugmentConfig, seed: int) -> Any:
    """``albumentations.Compose`` applying the enabled transforms to uint8 ``(H, W, C)`` images."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A
    import cv2

    transforms: list[Any] = []
    if cfg.hflip:
        transforms.append(A.HorizontalFlip(p=0.5))
    if cfg.vflip:
        transforms.append(A.VerticalFlip(p=0.5))
    if cfg.shift or cfg.rotate:
        transforms.append(
            A.Affine(
                translate_percent={"x": (-cfg.shift, cfg.shift), "y": (-cfg.shift, cfg.shift)},
                rotate=(-cfg.rotate, cfg.rotate),
                border_mode=cv2.BORDER_REFLECT_101,
                p=0.8,
            )
        )
    if cfg.brightness or cfg.contrast:
        transforms.append(
            A.RandomBrightnessContrast(
                brightness_limit=cfg.brightness, contrast_limit=cfg.contrast, p=0.8
            )
        )
    return A.Compose(transforms, seed=seed)
