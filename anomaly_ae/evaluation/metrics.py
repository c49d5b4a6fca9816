"""Evaluation metrics of the field: image AUROC / F1-max, pixel AUROC / F1-max and AUPRO.

Image metrics come from scikit-learn. Pixel metrics stream: :class:`PixelAccumulator` keeps integer
histograms of map values over fixed, log-spaced bins (good pixels, defect pixels, and one histogram per
connected ground-truth region), so hundreds of full-size maps never sit in memory at once.

Binning error: a pair (defect pixel, good pixel) that falls in the same bin counts as a tie (1/2), so
``|binned AUROC - exact AUROC| <= 1/2 * sum_b pos_b * neg_b / (P * N)``;
:meth:`PixelAccumulator.pixel_auroc` returns that bound with the value. With the default 20,000 bins
from 1e-10 to 1e3 one bin spans 0.15% of a value, and the bound on real maps is ~1e-4 or less.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np


def image_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``image_auroc``, ``image_ap``, ``image_f1_max`` and the threshold reaching it (``score >= t``)."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

    y = np.asarray(labels, bool)
    s = np.asarray(scores, np.float64)
    if y.all() or not y.any():
        raise ValueError("image metrics need both good and anomalous images")
    precision, recall, thr = precision_recall_curve(y, s)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-300)
    best = int(np.argmax(f1[:-1]))
    return {
        "image_auroc": float(roc_auc_score(y, s)),
        "image_ap": float(average_precision_score(y, s)),
        "image_f1_max": float(f1[best]),
        "image_f1_threshold": float(thr[best]),
    }


@dataclass
class PixelAccumulator:
    """Streaming histograms of anomaly-map values for pixel-level metrics.

    ``add(map, mask)`` with ``mask=None`` (or all False) adds only good pixels; a mask adds its pixels
    as defect pixels and each of its 8-connected regions for AUPRO.
    """

    n_bins: int = 20000
    lo: float = 1e-10
    hi: float = 1e3
    neg: np.ndarray = field(init=False)
    pos: np.ndarray = field(init=False)
    regions: list[np.ndarray] = field(init=False, default_factory=list)
    region_sizes: list[int] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.neg = np.zeros(self.n_bins, np.int64)
        self.pos = np.zeros(self.n_bins, np.int64)
        self._log_lo = np.log10(self.lo)
        self._step = (np.log10(self.hi) - self._log_lo) / (self.n_bins - 1)

    def bin_index(self, values: np.ndarray) -> np.ndarray:
        """Bin of each value: bin 0 holds values <= lo, bin ``b`` starts at :meth:`edge` ``(b)``."""
        v = np.asarray(values, np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            idx = np.floor((np.log10(np.maximum(v, self.lo)) - self._log_lo) / self._step) + 1
        idx[~(v > self.lo)] = 0
        return np.clip(idx, 0, self.n_bins - 1).astype(np.int64)

    def edge(self, b: np.ndarray | int) -> np.ndarray:
        """Lower edge of bin ``b`` (0 for bin 0)."""
        b = np.asarray(b)
        return np.where(b == 0, 0.0, 10.0 ** (self._log_lo + (b - 1) * self._step))

    def add(self, amap: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Accumulate one ``(H, W)`` map and its optional bool ``(H, W)`` ground-truth mask."""
        idx = self.bin_index(amap).ravel()
        if mask is None or not mask.any():
            self.neg += np.bincount(idx, minlength=self.n_bins)
            return
        m = mask.astype(bool)
        if m.shape != amap.shape:
            raise ValueError(f"mask {m.shape} and map {amap.shape} differ in shape")
        flat = m.ravel()
        self.neg += np.bincount(idx[~flat], minlength=self.n_bins)
        self.pos += np.bincount(idx[flat], minlength=self.n_bins)
        n_labels, labels = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
        labels = labels.ravel()
        for r in range(1, n_labels):
            sel = idx[labels == r]
            self.regions.append(np.bincount(sel, minlength=self.n_bins))
            self.region_sizes.append(int(sel.size))

    def merge(self, other: PixelAccumulator) -> PixelAccumulator:
        """Sum of two accumulators with the same bins (a new object)."""
        out = PixelAccumulator(self.n_bins, self.lo, self.hi)
        out.neg = self.neg + other.neg
        out.pos = self.pos + other.pos
        out.regions = self.regions + other.regions
        out.region_sizes = self.region_sizes + other.region_sizes
        return out

    @property
    def has_defects(self) -> bool:
        """True once any defect pixel was added."""
        return bool(self.pos.sum() > 0)

    def pixel_auroc(self) -> tuple[float, float]:
        """(AUROC, bound on its binning error)."""
        p, n = self.pos.sum(), self.neg.sum()
        if p == 0 or n == 0:
            raise ValueError("pixel AUROC needs both defect and good pixels")
        neg_below = np.cumsum(self.neg) - self.neg
        auc = float(np.sum(self.pos * (neg_below + 0.5 * self.neg)) / (p * n))
        bound = float(0.5 * np.sum(self.pos * self.neg.astype(np.float64)) / (p * n))
        return auc, bound

    def _above(self, hist: np.ndarray) -> np.ndarray:
        """Counts with bin >= b, for every b."""
        return np.cumsum(hist[::-1])[::-1]

    def pixel_f1_max(self) -> tuple[float, float]:
        """(F1-max over pixels, the threshold reaching it: pixels ``>=`` it are flagged)."""
        tp = self._above(self.pos).astype(np.float64)
        fp = self._above(self.neg).astype(np.float64)
        fn = self.pos.sum() - tp
        f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1e-300)
        b = int(np.argmax(f1))
        return float(f1[b]), float(self.edge(b))

    def pro_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(FPR, PRO) for every bin threshold, FPR ascending, starting at (0, 0)."""
        if not self.regions:
            raise ValueError("AUPRO needs ground-truth regions")
        n = self.neg.sum()
        fpr = self._above(self.neg) / max(n, 1)
        hits = np.cumsum(np.stack(self.regions)[:, ::-1], axis=1)[:, ::-1]
        pro = (hits / np.asarray(self.region_sizes, np.float64)[:, None]).mean(axis=0)
        fpr = np.concatenate([[0.0], fpr[::-1]])
        pro = np.concatenate([[0.0], pro[::-1]])
        return fpr, pro

    def roc_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(FPR, TPR) of pixels for every bin threshold, FPR ascending, from (0, 0) to (1, 1)."""
        p, n = self.pos.sum(), self.neg.sum()
        if p == 0 or n == 0:
            raise ValueError("a pixel ROC curve needs both defect and good pixels")
        fpr = np.concatenate([[0.0], (self._above(self.neg) / n)[::-1]])
        tpr = np.concatenate([[0.0], (self._above(self.pos) / p)[::-1]])
        return fpr, tpr

    def aupro(self, max_fpr: float = 0.3) -> float:
        """Area under the PRO curve up to ``max_fpr``, divided by ``max_fpr`` (1.0 is perfect)."""
        fpr, pro = self.pro_curve()
        return integrate_to(fpr, pro, max_fpr) / max_fpr


def thin_curve(x: np.ndarray, y: np.ndarray, max_points: int = 600) -> tuple[list[float], list[float]]:
    """A curve with repeated points dropped and at most about ``max_points`` left (first and last kept), for plots."""
    pts = np.stack([np.asarray(x, np.float64), np.asarray(y, np.float64)], axis=1)
    keep = np.concatenate([[True], np.any(np.diff(pts, axis=0) != 0, axis=1)])
    pts = pts[keep]
    if len(pts) > max_points:
        idx = np.unique(np.concatenate([np.linspace(0, len(pts) - 1, max_points).round().astype(int), [len(pts) - 1]]))
        pts = pts[idx]
    return pts[:, 0].tolist(), pts[:, 1].tolist()


def integrate_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under ``y(x)`` (``x`` non-decreasing) from ``x[0]`` to ``x_max``, interpolating at ``x_max``."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    keep = x <= x_max
    xs, ys = x[keep], y[keep]
    if xs[-1] < x_max and keep.sum() < len(x):
        j = int(np.argmax(~keep))  # first point beyond x_max
        x0, x1, y0, y1 = x[j - 1], x[j], y[j - 1], y[j]
        y_at = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0) if x1 > x0 else y1
        xs = np.append(xs, x_max)
        ys = np.append(ys, y_at)
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2))


def labelled_pixels(good_maps: Sequence[np.ndarray], bad_maps: Sequence[np.ndarray],
                    masks: Sequence[np.ndarray | None]) -> PixelAccumulator:
    """Every pixel of the good maps (all good) and of the anomalous maps with a mask (labelled by it), each map
    ``(H, W)`` at its image's size: what ``pixel_method: f1`` fits the pixel threshold on."""
    pixels = PixelAccumulator()
    for amap in good_maps:
        pixels.add(amap)
    for amap, mask in zip(bad_maps, masks, strict=True):
        if mask is not None:
            pixels.add(amap, mask)
    return pixels
