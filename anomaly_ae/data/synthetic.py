"""Procedural brushed-metal textures with synthetic defects, in the MVTec AD folder layout.

``python -m anomaly_ae.data.synthetic sample_data`` regenerates the committed ``sample_data/``::

    <out>/metal_plate/train/good/000.png ...
    <out>/metal_plate/test/{good,scratch,stain,pit}/000.png ...
    <out>/metal_plate/ground_truth/{scratch,stain,pit}/000_mask.png   (0/255)

Every image differs in streak pattern, streak angle, position (a random crop of a larger sheet),
lighting gradient, brightness, contrast and sensor noise. Defects are deliberately faint — a few
grey levels above the texture's own variation — so global statistics of an image do not give them
away (see ``tests/test_synthetic.py``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

DEFECTS = ("scratch", "stain", "pit")


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Brushed metal in [0, 1], ``(size, size)`` float32."""
    big = size + size // 2
    noise = rng.standard_normal((big, big)).astype(np.float32)
    streaks = cv2.GaussianBlur(noise, (0, 0), sigmaX=14.0, sigmaY=1.3)
    streaks /= streaks.std() + 1e-8
    grain = cv2.GaussianBlur(rng.standard_normal((big, big)).astype(np.float32), (0, 0), 1.0)
    grain /= grain.std() + 1e-8
    sheet = 0.5 + 0.045 * streaks + 0.01 * grain
    angle = rng.uniform(-4.0, 4.0)
    rot = cv2.getRotationMatrix2D((big / 2, big / 2), angle, 1.0)
    sheet = cv2.warpAffine(sheet, rot, (big, big), borderMode=cv2.BORDER_REFLECT)
    oy, ox = rng.integers(0, big - size, size=2)
    img = sheet[oy : oy + size, ox : ox + size]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    theta = rng.uniform(0, 2 * np.pi)
    light = rng.uniform(0.0, 0.08) * (np.cos(theta) * xx + np.sin(theta) * yy)
    contrast = rng.uniform(0.85, 1.15)
    brightness = rng.uniform(-0.06, 0.06)
    return ((img - 0.5) * contrast + 0.5 + brightness + light).astype(np.float32)


def _scratch(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Thin straight line across the streaks; returns (intensity change, mask)."""
    up = 4
    canvas = np.zeros((size * up, size * up), np.float32)
    length = rng.uniform(0.2, 0.4) * size
    angle = rng.uniform(20, 160) * np.pi / 180
    cx, cy = rng.uniform(0.25, 0.75, size=2) * size
    dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
    p1 = (int((cx - dx) * up), int((cy - dy) * up))
    p2 = (int((cx + dx) * up), int((cy + dy) * up))
    cv2.line(canvas, p1, p2, 1.0, thickness=int(rng.integers(4, 8)), lineType=cv2.LINE_AA)
    shape = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
    sign = rng.choice([-1.0, 1.0])
    return sign * rng.uniform(0.12, 0.2) * shape, shape > 0.2


def _stain(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Soft, slightly darker elliptical blotch."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = rng.uniform(0.2, 0.8, size=2) * size
    rx, ry = rng.uniform(0.05, 0.11, size=2) * size
    a = rng.uniform(0, np.pi)
    u = ((xx - cx) * np.cos(a) + (yy - cy) * np.sin(a)) / rx
    v = (-(xx - cx) * np.sin(a) + (yy - cy) * np.cos(a)) / ry
    blob = np.exp(-(u**2 + v**2) ** 1.5)
    mottling = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), 2.0)
    texture = (1.0 + 0.8 * mottling / (mottling.std() + 1e-8)).clip(0.3, 2.0)
    return -rng.uniform(0.1, 0.16) * blob * texture, blob > 0.35


def _pit(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Small dark pit with a faint bright rim (like wear pitting)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = rng.uniform(0.15, 0.85, size=2) * size
    r = rng.uniform(2.0, 3.5)
    d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    core = np.exp(-((d / r) ** 2))
    rim = np.exp(-(((d - 1.4 * r) / (0.5 * r)) ** 2))
    change = -rng.uniform(0.2, 0.32) * core + 0.05 * rim
    return change.astype(np.float32), d <= 1.5 * r


_MAKERS = {"scratch": _scratch, "stain": _stain, "pit": _pit}


def make_image(
    rng: np.random.Generator, size: int = 128, defect: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One uint8 ``(size, size)`` image and its bool mask (all False when ``defect`` is None)."""
    img = _texture(rng, size)
    mask = np.zeros((size, size), bool)
    if defect is not None:
        change, mask = _MAKERS[defect](rng, size)
        img = img + change
    img = img + rng.normal(0.0, 0.008, img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8), mask


def generate(
    out: str | Path,
    category: str = "metal_plate",
    n_train: int = 120,
    n_test_good: int = 30,
    n_test_defect: int = 15,
    size: int = 128,
    seed: int = 0,
) -> Path:
    """Write one category in the MVTec AD layout under ``out``; returns the category folder."""
    root = Path(out) / category
    rng = np.random.default_rng(seed)
    jobs: list[tuple[Path, str | None, int]] = [(root / "train" / "good", None, n_train)]
    jobs.append((root / "test" / "good", None, n_test_good))
    jobs += [(root / "test" / d, d, n_test_defect) for d in DEFECTS]
    for folder, defect, n in jobs:
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img, mask = make_image(rng, size, defect)
            cv2.imwrite(str(folder / f"{i:03d}.png"), img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
            if defect is not None:
                gt = root / "ground_truth" / defect
                gt.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(gt / f"{i:03d}_mask.png"), mask.astype(np.uint8) * 255)
    return root


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m anomaly_ae.data.synthetic OUT [--seed N] ...``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--category", default="metal_plate")
    ap.add_argument("--n-train", type=int, default=120)
    ap.add_argument("--n-test-good", type=int, default=30)
    ap.add_argument("--n-test-defect", type=int, default=15)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    root = generate(a.out, a.category, a.n_train, a.n_test_good, a.n_test_defect, a.size, a.seed)
    print(f"wrote {root}")


if __name__ == "__main__":
    main()
