"""Pictures for people: heatmap overlays, image grids and the reconstruction grid of a validation sample."""

from __future__ import annotations

import io

import cv2
import numpy as np


def heatmap_overlay(
    image: np.ndarray, amap: np.ndarray, value_range: tuple[float, float], alpha: float = 0.45
) -> np.ndarray:
    """Blend a JET-coloured map onto the image; returns BGR uint8 ``(H, W, 3)`` for ``cv2.imwrite``.

    Args:
        image: uint8 ``(H, W, 1|3)`` (RGB) at its original size.
        amap: ``(H, W)`` anomaly map at the same size.
        value_range: map values shown as the coldest and hottest colours; anomaly-ae uses the
            median of validation-good maps and the level of the image threshold, so red means "at
            or above the alarm level" and a good image stays blue.
    """
    lo, hi = value_range
    norm = np.clip((amap.astype(np.float32) - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    colour = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET)
    if image.ndim == 2 or image.shape[2] == 1:
        base = cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    else:
        base = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    return cv2.addWeighted(base, 1.0 - alpha, colour, alpha, 0.0)


def image_grid(images: np.ndarray, columns: int | None = None, pad: int = 2) -> np.ndarray:
    """uint8 ``(N, H, W, C)`` RGB/gray images tiled into one BGR/gray uint8 image for ``cv2.imwrite``."""
    n, h, w, c = images.shape
    cols = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for i, im in enumerate(images):
        r, k = divmod(i, cols)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + k * (w + pad) : pad + k * (w + pad) + w] = im
    return cv2.cvtColor(grid, cv2.COLOR_RGB2BGR) if c == 3 else grid[..., 0]


def reconstruction_grid(
    x: np.ndarray, x_hat: np.ndarray, maps: np.ndarray, value_range: tuple[float, float], n: int = 8
) -> bytes:
    """PNG bytes of a 3-row grid: images, reconstructions, heatmaps (first ``n`` of ``(N, H, W, C)``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(n, len(x))
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n, 5.0), squeeze=False)
    cmap = "gray" if x.shape[-1] == 1 else None
    for i in range(n):
        for row, (img, title) in enumerate(((x[i], "image"), (x_hat[i], "reconstruction"))):
            axes[row, i].imshow(np.clip(img.squeeze(-1) if cmap else img, 0, 1), cmap=cmap, vmin=0, vmax=1)
            axes[row, i].set_title(title if i == 0 else "", fontsize=8, loc="left")
        axes[2, i].imshow(maps[i], cmap="jet", vmin=value_range[0], vmax=value_range[1])
        axes[2, i].set_title("anomaly map" if i == 0 else "", fontsize=8, loc="left")
        for row in range(3):
            axes[row, i].axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
