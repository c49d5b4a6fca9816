"""Reconstruct images of any size with a fully convolutional model: padding and overlapping tiles."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Predict = Callable[[np.ndarray], np.ndarray]


def pad_to_multiple(x: np.ndarray, factor: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad ``(N, H, W, C)`` at the bottom/right to multiples of ``factor``; returns (padded, (H, W))."""
    h, w = x.shape[1:3]
    ph, pw = (-h) % factor, (-w) % factor
    if ph == 0 and pw == 0:
        return x, (h, w)
    mode = "reflect" if ph < h and pw < w else "edge"
    return np.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode=mode), (h, w)


def pad_margin(x: np.ndarray, margin: int, factor: int) -> np.ndarray:
    """Mirror ``margin`` pixels around ``(N, H, W, C)`` (NumPy ``symmetric``: the edge pixel repeats, as
    OpenCV's ``BORDER_REFLECT``), then :func:`pad_to_multiple` of ``factor``.

    The image is ``padded[:, margin : margin + H, margin : margin + W]``. A network with zero padding sees
    image-like content past the border instead of black, so its output there is not raised.
    """
    if margin:
        x = np.pad(x, ((0, 0), (margin, margin), (margin, margin), (0, 0)), mode="symmetric")
    return pad_to_multiple(x, factor)[0]


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def _ramp(length: int, overlap: int) -> np.ndarray:
    """1-D blending weights: rise over ``overlap`` pixels at both ends, never exactly 0."""
    w = np.ones(length, np.float32)
    if overlap > 0:
        r = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        w[:overlap] = np.minimum(w[:overlap], r)
        w[-overlap:] = np.minimum(w[-overlap:], r[::-1])
    return w


def tiled_predict(predict: Predict, x: np.ndarray, tile: int, overlap: int) -> np.ndarray:
    """Apply ``predict`` to overlapping ``tile`` x ``tile`` crops of ``x`` ``(N, H, W, C)`` and blend.

    ``H`` and ``W`` must be at least ``tile`` (pad first). Overlapping outputs are averaged with
    weights that ramp linearly over ``overlap`` pixels at tile borders, which hides the seams that
    zero-padded convolutions leave at tile edges.
    """
    n, h, w, c = x.shape
    out = np.zeros((n, h, w, c), np.float32)
    weight = np.zeros((1, h, w, 1), np.float32)
    stride = max(1, tile - overlap)
    wy = _ramp(min(tile, h), overlap)
    wx = _ramp(min(tile, w), overlap)
    win = (wy[:, None] * wx[None, :])[None, :, :, None]
    for top in _starts(h, tile, stride):
        for left in _starts(w, tile, stride):
            crop = x[:, top : top + tile, left : left + tile]
            y = predict(crop)
            out[:, top : top + tile, left : left + tile] += y * win
            weight[:, top : top + tile, left : left + tile] += win
    return out / weight
