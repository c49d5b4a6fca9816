"""A mixed-shape copy of an MVTec-layout data set: every image cropped to one of five shapes at the same
pixel scale, masks cropped alike, so that ``data.aspect: pad`` and ``stretch`` can be compared.

    python benchmarks/mixed_aspect.py sample_data/metal_plate /tmp/mixed_aspect
    python benchmarks/quality.py /tmp/mixed_aspect --override data.aspect=pad      # and =stretch

Shapes (for 128 px sources): 128x128, 128x64, 64x128, 128x88, 88x128, drawn with a fixed seed. A defective
image's crop keeps its defect (centred near the mask's centroid, jittered by a quarter of the crop).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import cv2
import numpy as np

#: (height, width) fractions of the source side
SHAPES = [(1.0, 1.0), (1.0, 0.5), (0.5, 1.0), (1.0, 0.6875), (0.6875, 1.0)]


def crop_origin(rng: np.random.Generator, shape: tuple[int, int], hw: tuple[int, int],
                centre: tuple[int, int] | None) -> tuple[int, int]:
    """Top-left corner of an ``hw`` crop of an image of ``shape``: random, or near ``centre``."""
    (big_h, big_w), (h, w) = shape, hw
    if centre is None:
        return int(rng.integers(0, big_h - h + 1)), int(rng.integers(0, big_w - w + 1))
    top = centre[0] - h // 2 + int(rng.integers(-(h // 4), h // 4 + 1))
    left = centre[1] - w // 2 + int(rng.integers(-(w // 4), w // 4 + 1))
    return int(np.clip(top, 0, big_h - h)), int(np.clip(left, 0, big_w - w))


def main() -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    shutil.rmtree(a.out, ignore_errors=True)
    for f in sorted(p for p in a.source.rglob("*.png") if p.relative_to(a.source).parts[0] != "ground_truth"):
        rel = f.relative_to(a.source)
        image = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        fy, fx = SHAPES[int(rng.integers(len(SHAPES)))]
        hw = (round(image.shape[0] * fy), round(image.shape[1] * fx))
        mask_path = a.source / "ground_truth" / rel.parts[1] / f"{f.stem}_mask.png"
        mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) if rel.parts[1] != "good" else None
        centre = None if mask is None else tuple(int(v.mean()) for v in np.nonzero(mask))
        top, left = crop_origin(rng, image.shape[:2], hw, centre)  # type: ignore[arg-type]
        (a.out / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(a.out / rel), image[top : top + hw[0], left : left + hw[1]])
        if mask is not None:
            target = a.out / "ground_truth" / rel.parts[1] / f"{f.stem}_mask.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(target), mask[top : top + hw[0], left : left + hw[1]])


if __name__ == "__main__":
    main()
