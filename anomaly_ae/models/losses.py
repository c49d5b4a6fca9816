"""Reconstruction and segmentation losses, written with ``keras.ops`` only (every backend).

All tensors are NHWC in [0, 1]. SSIM is Keras' own ``keras.ops.image.ssim`` (same numbers as the
hand-written version it replaced; the per-pixel SSIM *map* for anomaly maps lives in
:mod:`anomaly_ae.scoring.maps` and :mod:`anomaly_ae.scoring.ops`).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

LOSSES = ("mse", "l1", "bce", "ssim", "ssim_l1", "mse_ssim")


def ssim(x: Any, y: Any, max_val: float = 1.0) -> Any:
    """Mean SSIM per image ``(N,)`` of two ``(N, H, W, C)`` batches: ``keras.ops.image.ssim``.

    Wang et al. (2004) with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03 over the
    "valid" region, equal to ``skimage.metrics.structural_similarity(gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False)`` (``tests/test_losses.py``).
    """
    return ops.image.ssim(x, y, max_val=max_val)


def reconstruction_loss(name: str, x: Any, x_hat: Any, ssim_weight: float = 0.84) -> Any:
    """Scalar loss between targets ``x`` and reconstructions ``x_hat`` (both ``(N, H, W, C)``).

    ``ssim_l1`` is ``ssim_weight * (1 - SSIM) + (1 - ssim_weight) * L1`` (Zhao et al., 2017);
    ``mse_ssim`` is ``MSE + ssim_weight * (1 - SSIM)`` (DRAEM's reconstruction loss has weight 1).
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
    if name == "mse_ssim":
        return ops.mean(ops.square(x - x_hat)) + ssim_weight * (1.0 - ops.mean(ssim(x, x_hat)))
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


def focal_loss(y_true: Any, logits: Any, gamma: float = 2.0) -> Any:
    """Mean binary focal loss ``-(1 - p_t)**gamma * log(p_t)`` from logits (Lin et al., 2017).

    Down-weights the easy background pixels, which are nearly all of them (DRAEM's choice for its
    discriminative network). ``log(p_t)`` is the numerically stable cross-entropy of the logits.
    """
    y_true = ops.cast(y_true, logits.dtype)
    ce = ops.binary_crossentropy(y_true, logits, from_logits=True)
    p = ops.sigmoid(logits)
    p_t = y_true * p + (1.0 - y_true) * (1.0 - p)
    return ops.mean(ops.power(1.0 - p_t, gamma) * ce)


def bce_dice_logits(y_true: Any, logits: Any) -> Any:
    """:func:`dice_bce_loss` from logits: stable cross-entropy + (1 - soft Dice of the sigmoid)."""
    y_true = ops.cast(y_true, logits.dtype)
    bce = ops.mean(ops.binary_crossentropy(y_true, logits, from_logits=True))
    return bce + 1.0 - soft_dice(y_true, ops.sigmoid(logits))


def mask_loss(name: str, y_true: Any, logits: Any) -> Any:
    """Loss of a learned anomaly map's logits by name: ``focal`` or ``bce_dice``."""
    if name == "focal":
        return focal_loss(y_true, logits)
    if name == "bce_dice":
        return bce_dice_logits(y_true, logits)
    raise ValueError(f"unknown mask loss {name!r}; use 'focal' or 'bce_dice'")
