"""The MVTec AD folder layout, and its mask naming convention (the one place both are spelled out).

::

    DATASET/train/good/*.png                        good training images
    DATASET/test/good/*.png                         normal test images
    DATASET/test/<defect>/*.png                     anomalous test images, one folder per defect type
    DATASET/ground_truth/<defect>/<stem>_mask.png   optional pixel masks (non-zero = defect)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from anomaly_ae.data.images import list_images, read_image

GOOD = "good"


@dataclass(frozen=True)
class TestItem:
    """One labelled test image."""

    path: Path
    rel: str  # path relative to DATASET/test
    defect: str  # "good" or the defect folder name
    mask_path: Path | None

    @property
    def label(self) -> bool:
        """True for anomalous."""
        return self.defect != GOOD


def mask_name(image: Path) -> str:
    """``<stem>_mask.png``: the MVTec name of the mask of ``image``."""
    return f"{image.stem}_mask.png"


def mask_path_for(image: Path, images_dir: Path, masks_dir: Path) -> Path | None:
    """``masks_dir/<relative parent>/<stem>_mask.png`` (MVTec) or ``masks_dir/<relative stem>.png``."""
    rel = image.relative_to(images_dir)
    for candidate in (masks_dir / rel.parent / mask_name(rel), masks_dir / rel.with_suffix(".png")):
        if candidate.is_file():
            return candidate
    return None


def mvtec_items(dataset_dir: Path, problems: list[str] | None = None) -> list[TestItem]:
    """The test images of an MVTec-layout folder with their defect type and mask path (if any).

    ``problems``: one line is appended per sub-folder that could not be read.

    Raises:
        FileNotFoundError: no ``test`` folder, or no images in it.
    """
    test = dataset_dir / "test"
    if not test.is_dir():
        raise FileNotFoundError(f"{dataset_dir} has no 'test' folder (MVTec AD layout expected)")
    items = []
    for p in list_images(test, problems=problems):
        rel = p.relative_to(test)
        defect = rel.parts[0] if len(rel.parts) > 1 else GOOD
        mask = None
        if defect != GOOD:
            candidate = dataset_dir / "ground_truth" / defect / mask_name(p)
            mask = candidate if candidate.is_file() else None
        items.append(TestItem(p, rel.as_posix(), defect, mask))
    if not items:
        raise FileNotFoundError(f"no images under {test}")
    return items


def read_mask(path: Path, shape_hw: tuple[int, int]) -> np.ndarray:
    """Bool ``(H, W)`` mask, resized (nearest) to ``shape_hw`` when its size differs."""
    m = read_image(path, 1)[..., 0]
    if m.shape != shape_hw:
        m = cv2.resize(m, (shape_hw[1], shape_hw[0]), interpolation=cv2.INTER_NEAREST)
    return m > 127
