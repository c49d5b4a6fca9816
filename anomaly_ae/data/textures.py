"""Procedural textures: what synthetic defects are filled with when no texture folder is given.

DRAEM fills its defects with DTD photographs; filling them with flat colour instead cost it 1.8 image
and 4.7 pixel AUROC points on MVTec AD, and fewer than 10 texture images sufficed with augmentation.
Downloading DTD is not an option for a tool that must work offline, so this module draws textures of
five families with NumPy/OpenCV, each with random scale, orientation, contrast and colours:

- ``gabor``: oriented wave packets (machining marks, fabric);
- ``fractal``: several octaves of Perlin noise (stone, corrosion, paper);
- ``stripes``: bands of random width and phase, slightly warped (brushing, grooves, layers);
- ``voronoi``: cells with borders (grains, cracks, scales);
- ``rust``: clustered blobs in brown/orange/dark tones with grain (rust, stains, burns).

Families are split between training and the self-check (:data:`TRAIN_FAMILIES`,
:data:`CHECK_FAMILIES`): the self-check's defects are filled with textures the model never saw, so it
estimates how the model does on defects unlike its training ones.

Textures are uint8 ``(H, W, C)``; NumPy/OpenCV only (they are drawn in the ``PyDataset`` workers).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from anomaly_ae.data.noise import perlin_noise

FAMILIES = ("gabor", "fractal", "stripes", "voronoi", "rust")
#: the families repair training fills its synthetic defects with (when no data.anomaly_source_dir is set)
TRAIN_FAMILIES = ("gabor", "fractal", "stripes")
#: held out of training: only the self-check's defects use them
CHECK_FAMILIES = ("voronoi", "rust")


def _unit(a: np.ndarray) -> np.ndarray:
    """Scaled to [0, 1] (a constant array becomes 0.5)."""
    lo, hi = float(a.min()), float(a.max())
    return np.full(a.shape, 0.5, np.float32) if hi - lo < 1e-9 else ((a - lo) / (hi - lo)).astype(np.float32)


def gabor(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Sum of 1-3 oriented cosine waves under Gaussian envelopes scattered over the image, ``(h, w)`` in [0, 1]."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        theta = rng.uniform(0, np.pi)
        period = rng.uniform(3, 24)
        u = xx * np.cos(theta) + yy * np.sin(theta)
        wave = np.cos(2 * np.pi * u / period + rng.uniform(0, 2 * np.pi))
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        s = rng.uniform(0.3, 1.0) * max(h, w)
        env = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        out += wave * env
    return _unit(out)


def fractal(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """3-6 octaves of Perlin noise with persistence 0.4-0.7, ``(h, w)`` in [0, 1]."""
    out = np.zeros((h, w), np.float32)
    res = int(rng.integers(1, 4))
    amp, persistence = 1.0, rng.uniform(0.4, 0.7)
    for _ in range(int(rng.integers(3, 7))):
        out += amp * perlin_noise((h, w), (min(res, h // 2 or 1), min(res, w // 2 or 1)), rng)
        res, amp = res * 2, amp * persistence
    return _unit(out)


def stripes(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Bands of random width along a random direction, warped by low-frequency noise, ``(h, w)`` in [0, 1]."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    u = u + rng.uniform(0, 8) * perlin_noise((h, w), (2, 2), rng)
    period = rng.uniform(4, 32)
    duty = rng.uniform(0.2, 0.8)
    bands = ((u / period) % 1.0 < duty).astype(np.float32)
    return _unit(cv2.GaussianBlur(bands, (0, 0), rng.uniform(0.5, 2.0)))


def voronoi(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Voronoi cells of random grey levels with darker borders, ``(h, w)`` in [0, 1]."""
    n = int(rng.integers(8, 60))
    seeds = rng.uniform((0, 0), (h, w), (n, 2)).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2  # (h, w, n)
    part = np.partition(d, 1, axis=-1)
    nearest = d.argmin(axis=-1)
    border = np.sqrt(part[..., 1]) - np.sqrt(part[..., 0])  # 0 on a border between two cells
    cells = rng.uniform(0, 1, n).astype(np.float32)[nearest]
    edge = np.clip(border / rng.uniform(1.0, 4.0), 0, 1)
    return _unit(cells * (0.4 + 0.6 * edge))


def rust(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Clustered blobs with grain: thresholded fractal noise over fine noise, ``(h, w)`` in [0, 1]."""
    base = fractal(h, w, rng)
    blobs = np.clip((base - rng.uniform(0.4, 0.6)) * rng.uniform(4, 10), 0, 1)
    grain = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), rng.uniform(0.5, 1.5))
    return _unit(blobs + 0.15 * grain)


MAKERS: dict[str, Callable[[int, int, np.random.Generator], np.ndarray]] = {
    "gabor": gabor, "fractal": fractal, "stripes": stripes, "voronoi": voronoi, "rust": rust,
}

#: rust tones (RGB, 0-255): dark brown to orange
_RUST = np.array([[60, 30, 15], [120, 55, 20], [180, 90, 35], [210, 130, 60]], np.float32)


def colourize(pattern: np.ndarray, channels: int, rng: np.random.Generator, rusty: bool = False) -> np.ndarray:
    """A ``(h, w)`` pattern in [0, 1] -> uint8 ``(h, w, channels)`` between two random colours (rust tones
    for ``rusty``)."""
    if rusty:
        lo, hi = _RUST[rng.integers(0, 2)], _RUST[rng.integers(2, 4)]
    else:
        lo, hi = rng.uniform(0, 160, 3), rng.uniform(60, 255, 3)
    rgb = lo + pattern[..., None] * (hi - lo)
    out = rgb if channels == 3 else rgb.mean(axis=-1, keepdims=True)
    return np.clip(out, 0, 255).round().astype(np.uint8)


def texture(family: str, shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """One texture of ``family``: uint8 ``shape`` ``(H, W, C)``."""
    h, w, c = shape
    return colourize(MAKERS[family](h, w, rng), c, rng, rusty=family == "rust")
