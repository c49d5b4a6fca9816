"""Reconstruction losses and SSIM, written with ``keras.ops`` only (every backend).

All tensors are NHWC in [0, 1]. ``ssim_map`` follows Wang et al. (2004) with the usual 11x11 Gaussian
window (sigma 1.5), K1 = 0.01 and K2 = 0.03, over the "valid" region of the window, which equals
``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

LOSSES = ("mse", "l1", "bce", "ssim", "ssim_l1")


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 2-D Gaussian, ``(size, size)`` float32, summing to 1."""
    ax = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(ax**2) / (2.0 * sigma**2))
    g /= g.sum()
    return np.outer(g, g).astype(np.float32)


def ssim_map(x: Any, y: Any, max_val: float = 1.0, window: int = 11, sigma: float = 1.5) -> Any:
    """Local SSIM ``(N, H - window + 1, W - window + 1, C)`` of two ``(N, H, W, C)`` batches."""
    channels = x.shape[-1]
    kernel = np.tile(gaussian_window(window, sigma)[:, :, None, None], (1, 1, channels, 1))
    kernel = ops.convert_to_tensor(kernel, dtype=x.dtype)

    def blur(t: Any) -> Any:
        return ops.depthwise_conv(t, kernel, strides=1, padding="valid")

    c1 = (0.01 * max_val) ** 2
    c2 = (0.03 * max_val) ** 2
    mu_x, mu_y = blur(x), blur(y)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    var_x = blur(x * x) - mu_xx
    var_y = blur(y * y) - mu_yy
    cov = blur(x * y) - mu_xy
    return ((2.0 * mu_xy + c1) * (2.0 * cov + c2)) / ((mu_xx + mu_yy + c1) * (var_x + var_y + c2))


def ssim(x: Any, y: Any, max_val: float = 1.0) -> Any:
    """Mean SSIM per image, ``(N,)``."""
    return ops.mean(ssim_map(x, y, max_val), axis=(1, 2, 3))


def reconstruction_loss(name: str, x: Any, x_hat: Any, ssim_weight: float = 0.84) -> Any:
    """Scalar loss between targets ``x`` and reconstructions ``x_hat`` (both ``(N, H, W, C)``).

    ``ssim_l1`` is ``ssim_weight * (1 - SSIM) + (1 - ssim_weight) * L1`` (Zhao et al., 2017).
    """
    x = ops.cast(x, x_hat.dtype)
    if name == "mse":
        return ops.mean(ops.square(x - x_hat))
    if name == "l1":
        return ops.mean(ops.abs(x - x_hat))
    if name == "bce":
        eps = 1e-7
        p = ops.clip(x_hat, eps, 1.0 - eps)
        return -ops.mean(x * ops.log(p) + (1.0 - x) * ops.log(1.0 - p))
    if name == "ssim":
        return 1.0 - ops.mean(ssim(x, x_hat))
    if name == "ssim_l1":
        return ssim_weight * (1.0 - ops.mean(ssim(x, x_hat))) + (1.0 - ssim_weight) * ops.mean(
            ops.abs(x - x_hat)
        )
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")


def soft_dice(y_true: Any, y_pred: Any, smooth: float = 1.0) -> Any:
    """Soft Dice coefficient of probability masks over the whole batch (a scalar in (0, 1]).

    ``(2 * sum(y * p) + smooth) / (sum(y) + sum(p) + smooth)``; batch-level sums keep images
    without any defect pixel from dominating (Milletari et al., 2016).
    """
    y_true = ops.cast(y_true, y_pred.dtype)
    inter = ops.sum(y_true * y_pred)
    return (2.0 * inter + smooth) / (ops.sum(y_true) + ops.sum(y_pred) + smooth)


@keras.saving.register_keras_serializable(package="anomaly_ae")
def dice_bce_loss(y_true: Any, y_pred: Any) -> Any:
    """Segmentation loss for rare defect pixels: binary cross-entropy + (1 - soft Dice).

    Plain BCE on masks where defects cover ~0.2% of the pixels learns "background everywhere";
    the Dice term is scale-free in the defect area, so it keeps the positives in play.
    """
    eps = 1e-7
    y_true = ops.cast(y_true, y_pred.dtype)
    p = ops.clip(y_pred, eps, 1.0 - eps)
    bce = -ops.mean(y_true * ops.log(p) + (1.0 - y_true) * ops.log(1.0 - p))
    return bce + 1.0 - soft_dice(y_true, y_pred)
