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


def fit_threshold(scores: np.ndarray, method: str = "quantile", quantile: float = 0.99) -> float:
    """Threshold by name; ``predict`` is ``score > threshold``."""
    if method == "quantile":
        return quantile_threshold(scores, quantile)
    raise ValueError(f"unknown threshold method {method!r}")
