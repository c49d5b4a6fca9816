"""Pure functions from reconstructions to anomaly maps and image scores ("higher = more anomalous").

Shapes: ``x``, ``x_hat``: ``(N, H, W, C)`` float in [0, 1]; maps: ``(N, H, W)`` float32; scores: ``(N,)``.
"""

from __future__ import annotations

import cv2
import numpy as np

METRICS = ("l2", "l1")
REDUCTIONS = ("max", "mean", "topk_mean")


def residual_map(x: np.ndarray, x_hat: np.ndarray, metric: str = "l2") -> np.ndarray:
    """Per-pixel reconstruction error averaged over channels, ``(N, H, W)``.

    ``l2``: squared error; ``l1``: absolute error.
    """
    if x.shape != x_hat.shape:
        raise ValueError(f"shape mismatch: {x.shape} vs {x_hat.shape}")
    diff = x.astype(np.float32) - x_hat.astype(np.float32)
    if metric == "l2":
        err = np.square(diff)
    elif metric == "l1":
        err = np.abs(diff)
    else:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    return err.mean(axis=-1)


def smooth(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of every ``(H, W)`` map (kernel 2*ceil(4*sigma)+1, reflected border); 0 = off."""
    if sigma <= 0:
        return maps.astype(np.float32, copy=True)
    k = 2 * int(np.ceil(4.0 * sigma)) + 1
    out = np.empty(maps.shape, dtype=np.float32)
    for i, m in enumerate(maps):
        out[i] = cv2.GaussianBlur(m.astype(np.float32), (k, k), sigmaX=sigma, sigmaY=sigma,
                                  borderType=cv2.BORDER_REFLECT)
    return out


def image_score(maps: np.ndarray, reduction: str = "max", topk_fraction: float = 0.01) -> np.ndarray:
    """Reduce ``(N, H, W)`` maps to ``(N,)`` float64 scores.

    ``topk_mean`` averages the ``ceil(topk_fraction * H * W)`` largest pixels of each map.
    """
    flat = maps.reshape(len(maps), -1).astype(np.float64)
    if reduction == "max":
        return flat.max(axis=1)
    if reduction == "mean":
        return flat.mean(axis=1)
    if reduction == "topk_mean":
        k = max(1, int(np.ceil(topk_fraction * flat.shape[1])))
        return np.sort(flat, axis=1)[:, -k:].mean(axis=1)
    raise ValueError(f"unknown reduction {reduction!r}; choose one of {', '.join(REDUCTIONS)}")


def resize_map(amap: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """One ``(h, w)`` map to ``size_hw`` with bilinear interpolation (float32)."""
    h, w = size_hw
    if amap.shape == (h, w):
        return amap.astype(np.float32, copy=False)
    return cv2.resize(amap.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
