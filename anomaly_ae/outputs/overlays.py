"""Pictures for people: heatmap overlays, image grids and the reconstruction grid of a validation sample."""

from __future__ import annotations

import functools
import io
from typing import NamedTuple

import cv2
import numpy as np

#: pixels of an overlay computed at a time: a 100-megapixel image's overlay then needs its output and a few
#: MB of work arrays, not four full-size temporaries (1.2 GB more at the peak, measured)
OVERLAY_BLOCK_PIXELS = 1 << 22


def heatmap_overlay(
    image: np.ndarray, amap: np.ndarray, value_range: tuple[float, float], alpha: float = 0.45,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Blend a JET-coloured map onto the image; returns BGR uint8 ``(H, W, 3)`` for ``cv2.imwrite``.

    Computed in blocks of rows of :data:`OVERLAY_BLOCK_PIXELS`, so memory is the output's, whatever the size.

    Args:
        image: uint8 ``(H, W, 1|3)`` (RGB) at its original size.
        amap: ``(H, W)`` anomaly map at the same size.
        value_range: map values shown as the coldest and hottest colours; anomaly-ae uses the
            median of validation-good maps and the pixel threshold, so the colour saturates to red where
            a pixel reaches the defect level and a good image stays blue.
        out: uint8 ``(H, W, 3)`` to write the overlay into (e.g. the top of a picture with a legend).
    """
    lo, hi = value_range
    h, w = amap.shape[:2]
    out = np.empty((h, w, 3), np.uint8) if out is None else out
    rows = max(1, OVERLAY_BLOCK_PIXELS // max(w, 1))
    for top in range(0, h, rows):
        block = slice(top, min(h, top + rows))
        norm = np.clip((amap[block].astype(np.float32) - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
        colour = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET)
        out[block] = cv2.addWeighted(to_bgr(image[block]), 1.0 - alpha, colour, alpha, 0.0)
    return out


def to_bgr(image: np.ndarray) -> np.ndarray:
    """uint8 ``(H, W)``, ``(H, W, 1)`` gray or ``(H, W, 3)`` RGB -> BGR ``(H, W, 3)`` for OpenCV."""
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)


#: narrowest legend strip: a narrower heatmap is enlarged (nearest neighbour, a whole factor) to at least this
#: width, so the picture fills the strip above its legend instead of leaving it white
LEGEND_MIN_WIDTH = 360
#: longest side of a picture (heatmap, with its legend): JPEG cannot hold more than 65,535 px a side, and a
#: picture for people needs far fewer. A larger overlay is shrunk to it (area average), an enlargement for
#: the legend stops at it (a 4 px wide, 4,096 px tall image is not enlarged 90x to 368,640 px)
MAX_PICTURE_SIDE = 16_384


def fit_picture(picture: np.ndarray, max_side: int = MAX_PICTURE_SIDE) -> np.ndarray:
    """``picture`` ``(H, W, C)``, shrunk (area average, aspect kept) so that neither side passes ``max_side``."""
    h, w = picture.shape[:2]
    if max(h, w) <= max_side:
        return picture
    scale = max_side / max(h, w)
    return cv2.resize(picture, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def legend_factor(h: int, w: int, max_side: int = MAX_PICTURE_SIDE) -> int:
    """The whole factor a ``h x w`` overlay is enlarged by above its legend: the smallest that makes it
    :data:`LEGEND_MIN_WIDTH` wide, but never so much that its height passes half of ``max_side``."""
    k = -(-LEGEND_MIN_WIDTH // w) if w < LEGEND_MIN_WIDTH else 1
    return max(1, min(k, max_side // (2 * h)))


class Caption(NamedTuple):
    """What the legend says of its image: the image ``score``, the image ``threshold`` and the verdict. The verdict
    is given, never recomputed here: the caller takes it from ``PostProcessor.is_anomalous``."""

    score: float
    threshold: float
    anomalous: bool


def with_legend(
    overlay: np.ndarray, value_range: tuple[float, float], pixel_threshold: float, caption: Caption,
) -> np.ndarray:
    """``overlay`` (BGR ``(H, W, 3)``) with a legend strip below it; returns BGR ``(k H + h, max(k W, 360), 3)``.

    ``overlay`` is first shrunk to :data:`MAX_PICTURE_SIDE` (:func:`fit_picture`). ``k`` is 1, or the smallest
    whole factor that makes ``k W >= LEGEND_MIN_WIDTH`` (the overlay is enlarged by pixel repetition), bounded
    by the height (:func:`legend_factor`); an overlay still narrower than the strip sits at its left on white.
    The strip (``h`` is 58 px up to 720 px of width, then grows with it) holds the colour bar of
    :func:`heatmap_overlay`: its blue end is the map of a typical good image (``value_range[0]``, the median of
    the good maps), its red end the pixel threshold (pixels above it are in the defect mask; the colour
    saturates there), labelled in words; then ``caption``: the image score against the image threshold with
    the verdict. Only the verdict
    line is drawn per image: the rest of the strip is drawn once per width and scale (:func:`_legend_strip`).
    """
    overlay = fit_picture(overlay)
    h, w = overlay.shape[:2]
    k = legend_factor(h, w)
    if k > 1:
        overlay = cv2.resize(overlay, (w * k, h * k), interpolation=cv2.INTER_NEAREST)
        h, w = overlay.shape[:2]
    canvas = legend_canvas(h, w, value_range, pixel_threshold, caption)
    canvas[:h, :w] = overlay
    return canvas


def legend_canvas(h: int, w: int, value_range: tuple[float, float], pixel_threshold: float,
                  caption: Caption) -> np.ndarray:
    """White BGR ``(h + strip, max(w, 360), 3)`` with the legend strip of :func:`with_legend` and the verdict
    drawn under row ``h``; the caller puts the ``h x w`` overlay above it."""
    width = max(w, LEGEND_MIN_WIDTH)
    strip = _legend_strip(width, float(value_range[0]), float(value_range[1]), float(pixel_threshold))
    canvas = np.full((h + strip.shape[0], width, 3), 255, np.uint8)
    canvas[h:] = strip
    s = max(1.0, width / 720)
    score, threshold, anomalous = caption
    verdict = (f"image score {score:.4g} {'>' if anomalous else '<='} threshold {threshold:.4g}: "
               f"{'ANOMALOUS' if anomalous else 'good'}")
    cv2.putText(canvas, verdict, (int(8 * s), h + int(50 * s)), cv2.FONT_HERSHEY_SIMPLEX,
                0.42 * s, (0, 0, 200) if anomalous else (0, 120, 0), max(1, int(s)), cv2.LINE_AA)
    return canvas


def heatmap_picture(image: np.ndarray, amap: np.ndarray, value_range: tuple[float, float], pixel_threshold: float,
                    caption: Caption | None = None) -> np.ndarray:
    """The picture of a heatmap file: :func:`heatmap_overlay` of ``image`` ``(H, W, C)`` and ``amap`` ``(H, W)``,
    at most :data:`MAX_PICTURE_SIDE` a side, with the legend of :func:`with_legend` when ``caption`` is given.

    When the overlay needs neither shrinking nor enlarging (most images), it is drawn straight into the
    picture with its legend: a 100-megapixel image then costs one full-size picture, not two.
    """
    h, w = amap.shape[:2]
    if caption is not None and max(h, w) <= MAX_PICTURE_SIDE and legend_factor(h, w) == 1:
        canvas = legend_canvas(h, w, value_range, pixel_threshold, caption)
        heatmap_overlay(image, amap, value_range, out=canvas[:h, :w])
        return canvas
    overlay = heatmap_overlay(image, amap, value_range)
    return fit_picture(overlay) if caption is None else with_legend(overlay, value_range, pixel_threshold, caption)


@functools.lru_cache(maxsize=16)
def _legend_strip(width: int, lo: float, hi: float, pixel_threshold: float) -> np.ndarray:
    """The part of the legend that is the same for every image of a model: white BGR ``(h, width, 3)`` with
    the colour bar, the pixel-threshold mark and its words (read-only: it is shared)."""
    k = max(1.0, width / 720)  # wider images get a taller strip and larger text, so it stays readable
    strip = np.full((int(round(58 * k)), width, 3), 255, np.uint8)
    x0, x1, y0, bar_h = int(8 * k), width - int(8 * k), int(6 * k), int(10 * k)
    ramp = cv2.applyColorMap(np.linspace(0, 255, x1 - x0).astype(np.uint8)[None, :], cv2.COLORMAP_JET)
    strip[y0 : y0 + bar_h, x0:x1] = ramp
    at = x0 + int(round(np.clip((pixel_threshold - lo) / max(hi - lo, 1e-12), 0.0, 1.0) * (x1 - x0 - 1)))
    cv2.line(strip, (at, y0 - int(3 * k)), (at, y0 + bar_h + int(2 * k)), (0, 0, 0), max(2, int(2 * k)))
    font, thick = cv2.FONT_HERSHEY_SIMPLEX, max(1, int(k))
    left, right = "typical good", f"red: defect where map > {pixel_threshold:.3g}"
    small = 0.38 * k
    while small > 0.25 * k and sum(cv2.getTextSize(t, font, small, thick)[0][0] for t in (left, right)) > \
            x1 - x0 - int(12 * k):
        small -= 0.02 * k  # a narrow strip: smaller text rather than overlapping words
    y = y0 + bar_h + int(16 * k)
    cv2.putText(strip, left, (x0, y), font, small, (0, 0, 0), thick, cv2.LINE_AA)
    (tw, _), _ = cv2.getTextSize(right, font, small, thick)
    cv2.putText(strip, right, (x1 - tw, y), font, small, (0, 0, 0), thick, cv2.LINE_AA)
    strip.flags.writeable = False
    return strip


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
