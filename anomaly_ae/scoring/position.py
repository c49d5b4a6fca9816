"""Per-position normalization of anomaly maps for the image score (fixed cameras, aligned parts).

A fixed camera sees the same part at the same place in every image, so some positions answer more
than others on good images too: a groove that collects dirt, a bright edge, the image border. The
image score of a map normalized by what good images do at each position,

    z = (map - mean) / scale,      scale = max(std, mean over positions of std),

is the largest *unusual* response rather than the largest response. ``mean`` and ``std`` are taken
per position over the smoothed maps of good training images; the floor on ``scale`` keeps positions
where good images never answer from turning sensor noise into alarms (chosen with the self-check: on
BSData and sample_data it scored the same or better than a tenth or a third of the mean std, and
needs no parameter). Where parts are not aligned, the statistics are flat and the normalization
changes little; ``scoring.select: auto`` keeps it only when the self-check says it helps.

The reference is stored at most :data:`SIDE` pixels on its longer side (``detector.json`` stays
small: 64 x 26 x 2 numbers for a 512 x 208 model) and resized bilinearly to the map's size; on
BSData that scored as the full-size statistics did (``benchmarks/README.md``).

Shapes: maps ``(N, h, w)`` float32; the reference ``(h', w')`` float32, ``h', w' <= SIDE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

#: longer side of the stored reference, in pixels
SIDE = 64
#: at most this many training images (a seeded subset) give the reference
MAX_IMAGES = 64


def reference_indices(train_idx: np.ndarray, seed: int, limit: int = MAX_IMAGES) -> np.ndarray:
    """The training images (indices, sorted) whose maps fit the reference: a seeded subset of at most
    ``limit`` of ``train_idx``, so that its time stays bounded. ``Detector.fit`` draws them with this; so do
    the benchmarks that redo its end on a trained model."""
    n = min(limit, len(train_idx))
    return np.sort(np.random.default_rng(seed).choice(train_idx, n, replace=False))


def _shrink(a: np.ndarray, side: int) -> np.ndarray:
    h, w = a.shape
    f = min(1.0, side / max(h, w))
    if f >= 1.0:
        return a.astype(np.float32)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return cv2.resize(a.astype(np.float32), size, interpolation=cv2.INTER_AREA)


def _grow(a: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if a.shape == hw:
        return a.astype(np.float32)
    return cv2.resize(a.astype(np.float32), (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class PositionReference:
    """What good maps do at each position: ``mean`` and floored ``scale``, float32 ``(h', w')``."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, maps: np.ndarray, side: int = SIDE) -> PositionReference:
        """The reference of smoothed good maps ``(N, h, w)`` (N >= 2)."""
        if len(maps) < 2:
            raise ValueError(f"a position reference needs at least 2 good maps, got {len(maps)}")
        m = maps.astype(np.float64)
        mean, std = _shrink(m.mean(axis=0), side), _shrink(m.std(axis=0), side)
        floor = max(float(std.mean()), 1e-12)  # a map that never varies still divides by a positive number
        # rounded as detector.json stores it: the scores of a saved and a fitted detector are the same
        return cls.from_dict(cls(mean, np.maximum(std, floor)).to_dict())

    def full_size(self, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(mean, scale) resized to maps of size ``hw``, float32 ``(h, w)`` each."""
        return _grow(self.mean, hw), _grow(self.scale, hw)

    def normalize(self, maps: np.ndarray) -> np.ndarray:
        """``(maps - mean) / scale``, ``(N, h, w)`` float32."""
        mean, scale = self.full_size(maps.shape[1:3])
        return ((maps.astype(np.float32) - mean) / scale).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the shape and both arrays as nested lists (6 significant digits)."""
        return {"shape": list(self.mean.shape), "mean": _rounded(self.mean), "scale": _rounded(self.scale)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PositionReference:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` on a malformed entry."""
        shape = tuple(int(v) for v in d["shape"])
        mean = np.asarray(d["mean"], np.float32).reshape(shape)
        scale = np.asarray(d["scale"], np.float32).reshape(shape)
        if not (np.isfinite(mean).all() and np.isfinite(scale).all() and (scale > 0).all()):
            raise ValueError("position_reference: mean and scale must be finite and scale positive")
        return cls(mean, scale)


def _rounded(a: np.ndarray) -> list[list[float]]:
    return [[float(f"{v:.6g}") for v in row] for row in a.tolist()]
