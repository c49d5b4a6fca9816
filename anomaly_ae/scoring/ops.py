"""The maps and scores of :mod:`anomaly_ae.scoring.maps` written with ``keras.ops``, for exported graphs.

Each function gives the same numbers as its NumPy/OpenCV twin in :mod:`anomaly_ae.scoring.maps` (float32
rounding aside; ``tests/test_export.py`` checks the whole chain within 1e-4), so that a graph
exported by :mod:`anomaly_ae.deploy.graph` needs no Python of ours at inference time.

Borders are built with static gathers (``ops.take`` with index arrays made by ``np.pad`` on
``arange``), which every backend and ONNX express exactly: OpenCV's ``BORDER_REFLECT`` is NumPy's
``symmetric`` mode (``cba|abc|cba``), the reflect padding of ``tiling.pad_to_multiple`` its
``reflect`` mode (``dcb|abcd|cba``).

Shapes: images ``(N, H, W, C)`` float32 in [0, 1]; maps ``(N, H, W)``; scores ``(N,)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from keras import ops

from anomaly_ae.scoring.maps import SSIM_SIGMA, SSIM_WINDOW, smoothing_size


def gaussian_kernel_1d(sigma: float, size: int) -> np.ndarray:
    """OpenCV's ``getGaussianKernel(size, sigma)``: ``(size,)`` float32 summing to 1."""
    ax = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(ax**2) / (2.0 * sigma**2))
    return (g / g.sum()).astype(np.float32)


def pad_indices(length: int, before: int, after: int, mode: str) -> np.ndarray:
    """Source index of each padded position along one axis (``mode``: a NumPy pad mode)."""
    return np.pad(np.arange(length), (before, after), mode=mode).astype(np.int32)


def pad_hw(x: Any, pads: tuple[int, int, int, int], mode: str) -> Any:
    """Pad ``(N, H, W, C)`` by ``(top, bottom, left, right)`` with a NumPy ``mode`` (static shapes)."""
    top, bottom, left, right = pads
    h, w = int(x.shape[1]), int(x.shape[2])
    if top or bottom:
        x = ops.take(x, pad_indices(h, top, bottom, mode), axis=1)
    if left or right:
        x = ops.take(x, pad_indices(w, left, right, mode), axis=2)
    return x


def separable_blur(x: Any, sigma_y: float, sigma_x: float, size_y: int, size_x: int) -> Any:
    """Per-channel Gaussian blur of ``(N, H, W, C)`` with OpenCV ``BORDER_REFLECT`` borders, same size."""
    channels = int(x.shape[-1])
    ry, rx = size_y // 2, size_x // 2
    x = pad_hw(x, (ry, ry, rx, rx), "symmetric")
    if size_y > 1:
        ky = np.tile(gaussian_kernel_1d(sigma_y, size_y)[:, None, None, None], (1, 1, channels, 1))
        x = ops.depthwise_conv(x, ops.convert_to_tensor(ky, x.dtype), strides=1, padding="valid")
    if size_x > 1:
        kx = np.tile(gaussian_kernel_1d(sigma_x, size_x)[None, :, None, None], (1, 1, channels, 1))
        x = ops.depthwise_conv(x, ops.convert_to_tensor(kx, x.dtype), strides=1, padding="valid")
    return x


def local_ssim(x: Any, y: Any) -> Any:
    """Same-size local SSIM ``(N, H, W, C)`` (11x11 Gaussian window, sigma 1.5), like ``scoring.local_ssim``."""
    c1, c2 = 0.01**2, 0.03**2

    def blur(t: Any) -> Any:
        return separable_blur(t, SSIM_SIGMA, SSIM_SIGMA, SSIM_WINDOW, SSIM_WINDOW)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    num = (2.0 * mu_x * mu_y + c1) * (2.0 * cov + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return num / den


def residual_map(x: Any, x_hat: Any, metric: str, channel_reduction: str, ssim_weight: float) -> Any:
    """``(N, H, W)`` per-pixel error; see :func:`anomaly_ae.scoring.maps.residual_map` for the metrics."""
    if metric == "l2":
        err = ops.square(x - x_hat)
    elif metric == "l1":
        err = ops.abs(x - x_hat)
    elif metric == "ssim":
        err = 1.0 - local_ssim(x, x_hat)
    elif metric == "ssim_l1":
        err = ssim_weight * (1.0 - local_ssim(x, x_hat)) + (1.0 - ssim_weight) * ops.abs(x - x_hat)
    else:
        raise ValueError(f"unknown metric {metric!r}")
    if channel_reduction == "mean":
        return ops.mean(err, axis=-1)
    if channel_reduction == "max":
        return ops.max(err, axis=-1)
    raise ValueError(f"unknown channel reduction {channel_reduction!r}")


def smooth(maps: Any, sigma_y: float, sigma_x: float) -> Any:
    """Gaussian smoothing of ``(N, H, W)`` maps, as :func:`anomaly_ae.scoring.maps.smooth`."""
    if sigma_y <= 0 and sigma_x <= 0:
        return maps
    blurred = separable_blur(
        maps[..., None], max(sigma_y, 1e-6), max(sigma_x, 1e-6), smoothing_size(sigma_y), smoothing_size(sigma_x)
    )
    return blurred[..., 0]


def image_score(maps: Any, reduction: str, topk_fraction: float) -> Any:
    """``(N,)`` scores from ``(N, H, W)`` maps, as :func:`anomaly_ae.scoring.maps.image_score`."""
    h, w = int(maps.shape[1]), int(maps.shape[2])
    flat = ops.reshape(maps, (-1, h * w))
    if reduction == "max":
        return ops.max(flat, axis=1)
    if reduction == "mean":
        return ops.mean(flat, axis=1)
    if reduction == "topk_mean":
        k = max(1, int(math.ceil(topk_fraction * h * w)))
        values, _ = ops.top_k(flat, k, sorted=False)
        return ops.mean(values, axis=1)
    raise ValueError(f"unknown reduction {reduction!r}")
