"""Image thresholds from scores of held-out good images (separate from any model)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

QUANTILES = (0.5, 0.9, 0.95, 0.99)


@dataclass(frozen=True)
class ScoreStats:
    """Summary of validation-good scores, stored in ``detector.json``."""

    count: int
    mean: float
    std: float
    min: float
    max: float
    quantiles: dict[str, float]

    @classmethod
    def of(cls, scores: np.ndarray) -> ScoreStats:
        """Statistics of a non-empty ``(N,)`` score array."""
        s = _check_scores(scores)
        return cls(
            count=int(s.size),
            mean=float(s.mean()),
            std=float(s.std(ddof=1)) if s.size > 1 else 0.0,
            min=float(s.min()),
            max=float(s.max()),
            quantiles={f"q{q:g}": float(np.quantile(s, q)) for q in QUANTILES},
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScoreStats:
        """Inverse of :meth:`to_dict`."""
        return cls(**d)


def _check_scores(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise ValueError("no scores to calibrate on")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf")
    return s


def quantile_threshold(scores: np.ndarray, q: float) -> float:
    """The ``q``-quantile (linear interpolation) of good scores: about ``1 - q`` of good images exceed it.

    With few scores a high ``q`` is close to the maximum; the expected false-positive rate on new good
    images is then about ``1 / (n + 1)``, not ``1 - q``.
    """
    if not 0.0 < q <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {q}")
    return float(np.quantile(_check_scores(scores), q))


def fit_threshold(
    scores: np.ndarray,
    method: str = "quantile",
    quantile: float = 0.99,
    mad_k: float = 3.0,
    labels: np.ndarray | None = None,
) -> float:
    """Threshold by name; ``predict`` is ``score > threshold``.

    ``quantile``, ``mad`` and ``max`` use good scores only (``labels`` ignored, anomalous ones dropped
    when labels are given); ``f1`` needs ``labels`` (True = anomalous).
    """
    s = np.asarray(scores, np.float64).ravel()
    if method == "f1":
        if labels is None:
            raise ValueError("method 'f1' needs labelled anomalous examples")
        return f1_threshold(s, labels)[0]
    if labels is not None:
        s = s[~np.asarray(labels, bool).ravel()]
    if method == "quantile":
        return quantile_threshold(s, quantile)
    if method == "mad":
        return mad_threshold(s, mad_k)
    if method == "max":
        return max_threshold(s)
    raise ValueError(f"unknown threshold method {method!r}; choose one of quantile, mad, max, f1")


def mad_threshold(scores: np.ndarray, k: float = 3.0) -> float:
    """``median + k * 1.4826 * MAD``: robust to a few bad images hiding in the good set.

    1.4826 makes the MAD a consistent estimate of the standard deviation for normal data, so ``k = 3``
    is "three robust standard deviations above the median".
    """
    s = _check_scores(scores)
    med = float(np.median(s))
    mad = float(np.median(np.abs(s - med)))
    return med + k * 1.4826 * mad


def max_threshold(scores: np.ndarray) -> float:
    """The largest good score (fragile: one outlier in the good set moves it)."""
    return float(_check_scores(scores).max())


def f1_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Threshold maximising F1 on labelled scores (``labels`` True = anomalous); returns (threshold, F1).

    ``predict`` is ``score > threshold``, so the threshold returned sits just below the lowest score
    that F1-max flags (half-way to the next lower score).
    """
    from sklearn.metrics import precision_recall_curve

    s = _check_scores(scores)
    y = np.asarray(labels, dtype=bool).ravel()
    if y.shape != s.shape:
        raise ValueError("scores and labels differ in length")
    if y.all() or not y.any():
        raise ValueError("F1 calibration needs both good and anomalous examples")
    precision, recall, thr = precision_recall_curve(y, s)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-300), 0.0)
    best = int(np.argmax(f1[:-1]))  # the last point (recall 0) has no threshold
    cut = float(thr[best])  # sklearn flags score >= cut
    below = s[s < cut]
    return (float((cut + below.max()) / 2) if below.size else float(np.nextafter(cut, -np.inf))), float(f1[best])


def expected_fpr(good_scores: np.ndarray, threshold: float) -> float:
    """Expected false-alarm rate on *new* good images for ``score > threshold``.

    For ``n`` exchangeable good scores of which ``m`` exceed the threshold, a new good score exceeds it
    with probability at most ``(m + 1) / (n + 1)`` (the conformal bound; exact when the threshold is a
    good score). This is the figure to quote: the plain fraction ``m / n`` is optimistic, and 0 for
    ``threshold = max``.
    """
    s = _check_scores(good_scores)
    m = int(np.sum(s > threshold))
    return (m + 1) / (s.size + 1)


def normalize(scores: np.ndarray, threshold: float, lo: float, hi: float) -> np.ndarray:
    """Scores mapped so that the threshold is 0.5: ``clip((s - t) / (hi - lo) + 0.5, 0, 1)``.

    As in anomalib's one-class post-processing: ``lo``/``hi`` are the min and max of the validation
    scores. Monotone, so rankings and AUROC are unchanged; ``> 0.5`` means anomalous.
    """
    span = max(hi - lo, 1e-12)
    return np.clip((np.asarray(scores, np.float64) - threshold) / span + 0.5, 0.0, 1.0)


THRESHOLD_METHODS = ("quantile", "mad", "max", "f1")
