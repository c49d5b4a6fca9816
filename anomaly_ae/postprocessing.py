"""Post-processing: from scores and anomaly maps to decisions, kept outside the model (as anomalib does).

:class:`PostProcessor` holds everything calibrated on held-out good images (or labelled data with
``f1``): the image threshold, the pixel threshold, the normalization range, the expected false-alarm
rate, the heatmap colour range and the validation-score statistics. It is fitted once
(:meth:`PostProcessor.fit`), stored as plain data in ``detector.json`` (:meth:`PostProcessor.to_dict`)
and is the one place :class:`~anomaly_ae.detector.Detector`, ``score_folder``, ``deploy.json`` and the
evaluation take their decisions from. The threshold rules themselves are short pure functions below.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from anomaly_ae.config import ThresholdConfig
    from anomaly_ae.evaluation.metrics import PixelAccumulator

#: how normalized scores are computed, recorded beside the numbers in detector.json
NORMALIZATION_FORMULA = "clip((score - threshold) / (max - min) + 0.5, 0, 1)"

QUANTILES = (0.5, 0.9, 0.95, 0.99)

#: fewest good scores a quantile threshold is estimated from; with fewer, a high quantile is just the
#: largest of a handful of scores, so the ``quantile`` rule falls back to :func:`small_sample_threshold`
MIN_QUANTILE_SCORES = 20

#: below this many calibration images, or at a self-check image AUROC below
#: :data:`NEAR_CHANCE_AUROC`, the false-alarm rate is too uncertain to trust without a word
MIN_CALIBRATION_IMAGES = 20
NEAR_CHANCE_AUROC = 0.6

#: confidence of the upper bound on the false-alarm rate quoted beside its expected value
FPR_CONFIDENCE = 0.95


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


def fpr_upper_bound(good_scores: np.ndarray, threshold: float, confidence: float = FPR_CONFIDENCE) -> float:
    """Upper ``confidence`` bound on the false-alarm rate of ``score > threshold`` on new good images.

    With ``m`` of ``n`` exchangeable good scores above the threshold, the threshold sits at or above
    the ``(n - m)``-th smallest score, so its false-alarm rate is at most ``1 - U`` where ``U`` is that
    order statistic of uniforms: ``1 - U ~ Beta(m + 1, n - m)`` whatever the score distribution. The bound is
    that Beta's ``confidence`` quantile (its mean is :func:`expected_fpr`). 4 scores and a threshold
    above all of them: expected 20%, 95% bound 53%; 100 scores: 1% and 3%.
    """
    s = _check_scores(good_scores)
    n, m = int(s.size), int(np.sum(s > threshold))
    if m >= n:
        return 1.0
    return _beta_quantile(confidence, m + 1, n - m)


def _beta_quantile(q: float, a: int, b: int) -> float:
    """The ``q``-quantile of ``Beta(a, b)`` for integer ``a, b >= 1``, by bisection on
    ``P(Beta(a, b) <= p) = P(Binomial(a + b - 1, p) >= a)`` (exact sums in log space; no SciPy needed)."""
    n = a + b - 1

    def cdf(p: float) -> float:
        if p <= 0.0:
            return 0.0
        if p >= 1.0:
            return 1.0
        lp, lq = math.log(p), math.log1p(-p)
        return math.fsum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                                  + i * lp + (n - i) * lq) for i in range(a, n + 1))

    lo, hi = 0.0, 1.0
    for _ in range(60):  # 2^-60: far below any rate anyone would quote
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < q else (lo, mid)
    return (lo + hi) / 2


def small_sample_threshold(scores: np.ndarray, q: float = 0.99) -> float:
    """The larger of the highest good score and the ``q``-quantile of a normal fitted robustly to the scores,
    ``median + z_q * 1.4826 * MAD`` (``z_0.99 = 2.33``).

    The fallback of the ``quantile`` rule for fewer than :data:`MIN_QUANTILE_SCORES` scores: the empirical
    0.99 quantile of 4 scores is their maximum, which the next good images exceed often (about one in
    ``n + 1``), so the quantile asked for is estimated from the scores' centre and spread instead, and
    never below their maximum. Only the maximum carries a distribution-free guarantee
    (:func:`expected_fpr`); the normal fit adds a margin where it holds. (Measured on the default's 18
    held-out scores of sample_data: ``median + 3 x 1.4826 x MAD``, a 0.9987 quantile, flagged 47% of the
    self-check's synthetic defects, this rule 56%, the maximum alone 72%.)
    """
    s = _check_scores(scores)
    return max(max_threshold(s), mad_threshold(s, _normal_z(q)))


def _normal_z(q: float) -> float:
    """The standard normal's ``q``-quantile (``q = 1`` taken as just below 1, where it is finite)."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(min(q, 1 - 1e-9))


def threshold_rule(method: str, n_good: int, quantile: float = 0.99, mad_k: float = 3.0,
                   n_anomalous: int = 0, fallback: bool = True) -> tuple[str, str]:
    """The rule applied for ``method`` with ``n_good`` calibration scores: ``(name, one-line description)``.

    ``name`` is ``method`` itself, or ``small_sample`` when a ``quantile`` rule has fewer than
    :data:`MIN_QUANTILE_SCORES` good scores (:func:`small_sample_threshold`; ``fallback=False`` describes
    models calibrated before that rule existed).
    """
    if method == "quantile" and n_good < MIN_QUANTILE_SCORES and fallback:
        z = _normal_z(quantile)
        return "small_sample", (f"the larger of the highest of {n_good} good scores and their quantile {quantile:g} "
                                f"under a robust normal fit (median + {z:.2f} x 1.4826 x MAD), as {n_good} are too "
                                f"few for an empirical quantile (it needs {MIN_QUANTILE_SCORES})")
    text = {
        "quantile": f"quantile {quantile:g} of {n_good} good scores",
        "mad": f"median + {mad_k:g} x 1.4826 x MAD of {n_good} good scores",
        "max": f"the highest of {n_good} good scores",
        "f1": f"best F1 on {n_good} good and {n_anomalous} anomalous images",
    }
    return method, text[method]


def norm_range(scores: np.ndarray, threshold: float, widen: bool = False) -> tuple[float, float]:
    """``(min, max)`` of the good scores, the range :func:`normalize` divides by.

    With ``widen`` (the small-sample rule), the range is at least ``[2 median - threshold, threshold]``: a
    span of 4 scores is too narrow a yardstick (an image just over the threshold read 0.85), so the
    normalized scale runs from 0 at ``median - (threshold - median)`` to 1 at ``threshold + (threshold -
    median)``, at least.
    """
    s = _check_scores(scores)
    lo, hi = float(s.min()), float(s.max())
    if widen:
        med = float(np.median(s))
        lo, hi = min(lo, 2 * med - threshold), max(hi, threshold)
    return lo, hi


def normalize(scores: np.ndarray, threshold: float, lo: float, hi: float) -> np.ndarray:
    """Scores mapped so that the threshold is 0.5: ``clip((s - t) / (hi - lo) + 0.5, 0, 1)``.

    As in anomalib's one-class post-processing: ``lo``/``hi`` are the min and max of the validation
    scores. Monotone, so rankings and AUROC are unchanged; ``> 0.5`` means anomalous.
    """
    span = max(hi - lo, 1e-12)
    return np.clip((np.asarray(scores, np.float64) - threshold) / span + 0.5, 0.0, 1.0)



@dataclass(frozen=True)
class PostProcessor:
    """Calibrated decisions on top of image scores ``(N,)`` and anomaly maps ``(H, W)``.

    Attributes:
        threshold: image threshold; ``score > threshold`` is anomalous.
        pixel_threshold: ``anomaly map > pixel_threshold`` is a defect pixel.
        expected_fpr: expected false-alarm rate on new good images (:func:`expected_fpr`).
        fpr_upper: its upper :data:`FPR_CONFIDENCE` bound (:func:`fpr_upper_bound`).
        rule: the threshold rule applied, in words (:func:`threshold_rule`).
        norm_range: ``(min, max)`` of the validation-good scores, for :meth:`normalize` (widened for the
            small-sample rule, :func:`norm_range`).
        heatmap_range: ``(median map value, pixel_threshold)``: the colour scale of overlays.
        val_scores: ``(n,)`` float64 scores of the validation-good images.
        score_stats: their summary.
    """

    threshold: float
    pixel_threshold: float
    expected_fpr: float
    norm_range: tuple[float, float]
    heatmap_range: tuple[float, float]
    val_scores: np.ndarray = field(repr=False)
    score_stats: ScoreStats
    fpr_upper: float = float("nan")
    rule: str = ""

    @classmethod
    def fit(
        cls,
        good_scores: np.ndarray,
        good_maps: np.ndarray,
        config: ThresholdConfig,
        anomalous_scores: np.ndarray | None = None,
        pixels: PixelAccumulator | None = None,
    ) -> PostProcessor:
        """Calibrate on validation-good scores ``(n,)`` and their model-size maps ``(n, h, w)``.

        Args:
            config: the threshold rules (``method``, ``quantile``, ``mad_k``, ``pixel_method``, ...).
            anomalous_scores: ``(m,)`` scores of labelled anomalous images, needed by ``method: f1``.
            pixels: good and defect pixels with their masks, needed by ``pixel_method: f1``.
        """
        scores = _check_scores(good_scores)
        n_bad = 0 if anomalous_scores is None else len(anomalous_scores)
        method, rule = threshold_rule(config.method, len(scores), config.quantile, config.mad_k, n_bad)
        if method == "f1":
            if n_bad == 0:
                raise ValueError("threshold method 'f1' needs anomalous images")
            bad = np.asarray(anomalous_scores, np.float64)
            labels = np.r_[np.zeros(len(scores), bool), np.ones(len(bad), bool)]
            threshold = fit_threshold(np.r_[scores, bad], "f1", labels=labels)
        elif method == "small_sample":
            threshold = small_sample_threshold(scores, config.quantile)
        else:
            threshold = fit_threshold(scores, config.method, config.quantile, config.mad_k)
        if config.pixel_method == "f1":
            if pixels is None:
                raise ValueError("pixel_method 'f1' needs anomalous images with masks")
            pixel_threshold = float(pixels.pixel_f1_max()[1])
        else:
            peaks = np.asarray(good_maps).reshape(len(good_maps), -1).max(axis=1)
            pixel_threshold = float(np.quantile(peaks, config.pixel_quantile))
        lo = float(np.median(good_maps))
        return cls(
            threshold=float(threshold),
            pixel_threshold=pixel_threshold,
            expected_fpr=expected_fpr(scores, threshold),
            norm_range=norm_range(scores, threshold, widen=method == "small_sample"),
            heatmap_range=(lo, max(pixel_threshold, lo + 1e-12)),
            val_scores=scores,
            score_stats=ScoreStats.of(scores),
            fpr_upper=fpr_upper_bound(scores, threshold),
            rule=rule,
        )

    @property
    def n_good(self) -> int:
        """How many good images calibrated the threshold."""
        return int(self.val_scores.size)

    def caveats(self, self_check_auroc: float | None = None) -> dict[str, str]:
        """Plain-language reasons not to trust the threshold yet, by kind: ``few_good`` (too few calibration
        images) and ``self_check`` (near chance); empty when there are none.

        Args:
            self_check_auroc: the model's synthetic image AUROC (``train_info_["self_check"]``), if any.
        """
        out = {}
        if self.n_good < MIN_CALIBRATION_IMAGES:
            out["few_good"] = (f"only {self.n_good} good images calibrate the threshold (fewer than "
                               f"{MIN_CALIBRATION_IMAGES}): the false-alarm rate on new good images is "
                               f"{self.expected_fpr:.0%} on average and up to {self.fpr_upper:.0%} "
                               f"({FPR_CONFIDENCE:.0%} bound)")
        if self_check_auroc is not None and self_check_auroc < NEAR_CHANCE_AUROC:
            out["self_check"] = (f"the self-check is near chance (synthetic image AUROC {self_check_auroc:.3f}): the "
                                 "model barely tells pasted defects from good images, so its threshold separates "
                                 "little")
        return out

    # The two decisions. Every verdict and every mask in anomaly-ae (CLI, CSV, heatmap legend, reports, MLflow
    # pyfunc, evaluation) comes from these two methods; the layout test refuses a threshold compared elsewhere.
    def is_anomalous(self, scores: np.ndarray | float) -> np.ndarray:
        """``(N,)`` bool (a 0-d bool for one score): strictly ``score > threshold``. A NaN score is never
        anomalous (it has no verdict; its row says why)."""
        return np.asarray(scores) > self.threshold

    def mask(self, anomaly_map: np.ndarray) -> np.ndarray:
        """Bool map of the same shape: strictly ``anomaly map > pixel_threshold`` (a pixel *above* the pixel
        threshold is a defect pixel; one equal to it is not)."""
        return np.asarray(anomaly_map) > self.pixel_threshold

    def normalize(self, scores: np.ndarray) -> np.ndarray:
        """Scores on [0, 1] where the image threshold is 0.5 (see :func:`normalize`)."""
        return normalize(scores, self.threshold, *self.norm_range)

    def to_dict(self, config: ThresholdConfig) -> dict[str, Any]:
        """The ``detector.json`` sections ``threshold``, ``normalization``, ``score_stats``, ``val_scores``,
        ``heatmap_range`` (the threshold section also records the rules in ``config``)."""
        return {
            "threshold": {
                **config.model_dump(mode="json"),
                "value": self.threshold,
                "pixel_value": self.pixel_threshold,
                "expected_fpr": self.expected_fpr,
                "fpr_upper": self.fpr_upper,
                "fpr_confidence": FPR_CONFIDENCE,
                "rule": self.rule,
            },
            "normalization": {"formula": NORMALIZATION_FORMULA, "min": self.norm_range[0], "max": self.norm_range[1]},
            "score_stats": self.score_stats.to_dict(),
            "val_scores": [float(s) for s in self.val_scores],
            "heatmap_range": list(self.heatmap_range),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PostProcessor:
        """Inverse of :meth:`to_dict` (the validated sections of a ``detector.json``; models saved before
        the bound and the rule were recorded get them computed from their validation scores)."""
        t = d["threshold"]
        scores = np.asarray(d["val_scores"], dtype=np.float64)
        rule = t.get("rule") or threshold_rule(t.get("method", "quantile"), len(scores), t.get("quantile", 0.99),
                                               t.get("mad_k", 3.0), fallback=False)[1]
        upper = t.get("fpr_upper")
        return cls(
            fpr_upper=float(upper) if upper is not None else fpr_upper_bound(scores, float(t["value"])),
            rule=rule,
            threshold=float(d["threshold"]["value"]),
            pixel_threshold=float(d["threshold"]["pixel_value"]),
            expected_fpr=float(d["threshold"]["expected_fpr"]),
            norm_range=(float(d["normalization"]["min"]), float(d["normalization"]["max"])),
            heatmap_range=(float(d["heatmap_range"][0]), float(d["heatmap_range"][1])),
            val_scores=scores,
            score_stats=ScoreStats.from_dict(d["score_stats"]),
        )
