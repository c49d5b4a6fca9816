"""Exact (unbinned) reference implementations used to check the streaming metrics."""

from __future__ import annotations

import cv2
import numpy as np

from anomaly_ae.evaluation.metrics import integrate_to


def exact_pro_curve(maps: list[np.ndarray], masks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, PRO) at every distinct map value, by sorting all pixels (no bins)."""
    values, neg, weight = [], [], []
    sizes = []
    region_ids = []
    for amap, mask in zip(maps, masks, strict=True):
        n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        flat_labels = labels.ravel()
        values.append(amap.ravel().astype(np.float64))
        neg.append(flat_labels == 0)
        offset = len(sizes)
        ids = np.where(flat_labels > 0, flat_labels - 1 + offset, -1)
        region_ids.append(ids)
        sizes += [int(np.sum(flat_labels == r)) for r in range(1, n)]
    v = np.concatenate(values)
    is_neg = np.concatenate(neg)
    rid = np.concatenate(region_ids)
    n_regions = len(sizes)
    size_arr = np.asarray(sizes, np.float64)
    weight = np.zeros_like(v)
    weight[rid >= 0] = 1.0 / (n_regions * size_arr[rid[rid >= 0]])
    order = np.argsort(-v, kind="stable")
    v_sorted = v[order]
    fpr = np.cumsum(is_neg[order]) / is_neg.sum()
    pro = np.cumsum(weight[order])
    last = np.r_[v_sorted[1:] != v_sorted[:-1], True]  # end of each group of equal values
    return np.r_[0.0, fpr[last]], np.r_[0.0, pro[last]]


def exact_aupro(maps: list[np.ndarray], masks: list[np.ndarray], max_fpr: float = 0.3) -> float:
    """Normalized AUPRO to ``max_fpr`` without binning."""
    fpr, pro = exact_pro_curve(maps, masks)
    return integrate_to(fpr, pro, max_fpr) / max_fpr
