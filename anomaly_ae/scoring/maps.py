"""Pure functions from reconstructions to anomaly maps and image scores ("higher = more anomalous").

Shapes: ``x``, ``x_hat``: ``(N, H, W, C)`` float in [0, 1]; maps: ``(N, H, W)`` float32; scores: ``(N,)``.

Pipeline (each step its own function): :func:`residual_map` (per-pixel error, channels reduced) ->
:func:`smooth` (Gaussian) -> :func:`resize_map` (back to the original size) -> :func:`image_score`.
"""

from __future__ import annotations

import cv2
import numpy as np

METRICS = ("l2", "l1", "ssim", "ssim_l1")
CHANNEL_REDUCTIONS = ("mean", "max")
REDUCTIONS = ("max", "mean", "topk_mean")

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def local_ssim(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Local SSIM per pixel and channel, ``(N, H, W, C)``, same size as the inputs.

    Gaussian window 11x11, sigma 1.5, K1 = 0.01, K2 = 0.03 (Wang et al. 2004; the window of
    Bergmann et al. 2018), reflected at the borders.
    """
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    x = x.astype(np.float32)
    y = y.astype(np.float32)
    out = np.empty(x.shape, np.float32)

    def blur(a: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(a, (SSIM_WINDOW, SSIM_WINDOW), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)

    for n in range(x.shape[0]):
        for c in range(x.shape[3]):
            a, b = x[n, :, :, c], y[n, :, :, c]
            mu_a, mu_b = blur(a), blur(b)
            var_a = blur(a * a) - mu_a * mu_a
            var_b = blur(b * b) - mu_b * mu_b
            cov = blur(a * b) - mu_a * mu_b
            num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
            den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
            out[n, :, :, c] = num / den
    return out


def residual_map(
    x: np.ndarray,
    x_hat: np.ndarray,
    metric: str = "l2",
    channel_reduction: str = "mean",
    ssim_weight: float = 0.5,
) -> np.ndarray:
    """Per-pixel reconstruction error, channels reduced, ``(N, H, W)`` float32.

    Metrics: ``l2`` squared error; ``l1`` absolute error; ``ssim`` ``1 - local SSIM`` (in [0, 2]);
    ``ssim_l1`` ``ssim_weight * (1 - SSIM) + (1 - ssim_weight) * |x - x_hat|``.
    Channel reduction: ``mean`` or ``max`` over the channel axis.
    """
    if x.shape != x_hat.shape:
        raise ValueError(f"shape mismatch: {x.shape} vs {x_hat.shape}")
    x = x.astype(np.float32)
    x_hat = x_hat.astype(np.float32)
    if metric == "l2":
        err = np.square(x - x_hat)
    elif metric == "l1":
        err = np.abs(x - x_hat)
    elif metric == "ssim":
        err = 1.0 - local_ssim(x, x_hat)
    elif metric == "ssim_l1":
        err = ssim_weight * (1.0 - local_ssim(x, x_hat)) + (1.0 - ssim_weight) * np.abs(x - x_hat)
    else:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if channel_reduction == "mean":
        return err.mean(axis=-1)
    if channel_reduction == "max":
        return err.max(axis=-1)
    raise ValueError(f"unknown channel reduction {channel_reduction!r}; use 'mean' or 'max'")


def smoothing_size(sigma: float) -> int:
    """Kernel length of the map smoothing for ``sigma`` (map pixels): 4 sigma each side; 1 = off. The exported
    graph's blur (:func:`anomaly_ae.scoring.ops.smooth`) takes the same length."""
    return 2 * int(np.ceil(4.0 * sigma)) + 1 if sigma > 0 else 1


def smooth(maps: np.ndarray, sigma: float | tuple[float, float]) -> np.ndarray:
    """Gaussian blur of every ``(H, W)`` map with reflected borders; ``sigma`` 0 = off.

    ``sigma`` is one value or ``(sigma_y, sigma_x)`` in pixels of the maps; the kernel spans 4 sigma.
    """
    sy, sx = (sigma, sigma) if np.isscalar(sigma) else sigma  # type: ignore[misc]
    if sy <= 0 and sx <= 0:
        return maps.astype(np.float32, copy=True)
    ky, kx = smoothing_size(sy), smoothing_size(sx)
    out = np.empty(maps.shape, dtype=np.float32)
    for i, m in enumerate(maps):
        out[i] = cv2.GaussianBlur(
            m.astype(np.float32), (kx, ky), sigmaX=max(sx, 1e-6), sigmaY=max(sy, 1e-6),
            borderType=cv2.BORDER_REFLECT,
        )
    return out


def model_sigma(sigma_original: float, model_hw: tuple[int, int], original_hw: tuple[int, int]) -> tuple[float, float]:
    """A sigma given in original-image pixels, expressed in model-map pixels ``(sigma_y, sigma_x)``."""
    return (sigma_original * model_hw[0] / original_hw[0], sigma_original * model_hw[1] / original_hw[1])


def source_ratio(model_hw: tuple[int, int], original_hw: tuple[int, int]) -> float:
    """Original-image pixels per model pixel (the geometric mean of the two axes): what a sigma in model
    pixels is multiplied by to be given in original pixels (the inverse of :func:`model_sigma`)."""
    return float(np.sqrt(original_hw[0] * original_hw[1] / (model_hw[0] * model_hw[1])))


def image_score(maps: np.ndarray, reduction: str = "max", topk_fraction: float = 0.01) -> np.ndarray:
    """Reduce ``(N, H, W)`` maps to ``(N,)`` float64 scores.

    ``topk_mean`` averages the ``ceil(topk_fraction * H * W)`` largest pixels of each map.
    """
    flat = maps.reshape(len(maps), -1)  # no float64 copy of every pixel: only the reduced values are widened
    if reduction == "max":
        return flat.max(axis=1).astype(np.float64)
    if reduction == "mean":
        return flat.mean(axis=1, dtype=np.float64)
    if reduction == "topk_mean":
        k = max(1, int(np.ceil(topk_fraction * flat.shape[1])))
        return np.partition(flat, flat.shape[1] - k, axis=1)[:, -k:].astype(np.float64).mean(axis=1)
    raise ValueError(f"unknown reduction {reduction!r}; choose one of {', '.join(REDUCTIONS)}")


def resize_map(amap: np.ndarray, size_hw: tuple[int, int], box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """One ``(h, w)`` map to ``size_hw`` with bilinear interpolation (float32). ``box``: ``(top, left, height,
    width)`` of the image inside the map (:meth:`~anomaly_ae.data.images.Preprocessing.box`): only that part is
    resized (the mirrored margin of ``data.aspect: pad`` is dropped)."""
    if box is not None:
        top, left, bh, bw = box
        amap = amap[top : top + bh, left : left + bw]
    h, w = size_hw
    if amap.shape == (h, w):
        return amap.astype(np.float32, copy=False)
    return cv2.resize(amap.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
