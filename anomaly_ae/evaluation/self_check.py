"""Label-free self-check: how well does a detector find synthetic defects on held-out good images?

At the end of training the held-out good images (never trained on) are scored as they are and as
copies with one seeded synthetic defect each (:mod:`anomaly_ae.data.anomalies`, shapes and content
fixed here, independent of the training config, so the figures of two configs are comparable). The
result is a *synthetic* image AUROC, pixel AUROC and AUPRO: an estimate, from good images only, of how
well the detector separates and localises defects. ``scoring.select: auto`` picks the map metric,
smoothing, image reduction and per-position normalization that maximise it (:func:`check_scoring`).

Version 3 keeps the estimate from flattering the model in three ways:

- *defects unlike the training ones*: the shapes (:data:`~anomaly_ae.data.anomalies.CHECK_SHAPES`:
  spot clusters, wavy stains) and the content (textures of the held-out families
  :data:`~anomaly_ae.data.textures.CHECK_FAMILIES`, and the surface itself shaded in place) are never
  drawn by repair training, which learns on other shapes and families;
- *no winner's curse*: the setting is chosen on one seeded set of defects (:data:`SELF_CHECK_SEED`)
  and reported on another (:data:`REPORT_SEED`) on the same good images; the best of 150 candidates
  on the set that chose it is biased up;
- *an interval*: the image AUROC comes with a 95% bootstrap interval over the good and the
  defective images (:func:`auroc_interval`).

How well it ranks configurations against real labels is measured in ``benchmarks/README.md``; it is
not a promise: real defects can be subtler (or cruder) than pasted ones, and good images at test time
can differ from the held-out ones (soiling that grows over months, a new batch of parts).

Shapes: good / defective images uint8 ``(N, h, w, C)`` at model size; maps ``(N, h, w)``; masks bool.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from anomaly_ae.data.anomalies import CHECK_SHAPES, AnomalySynthesizer, synthesize_batch
from anomaly_ae.data.textures import CHECK_FAMILIES
from anomaly_ae.evaluation.metrics import PixelAccumulator
from anomaly_ae.scoring.maps import image_score, smooth, source_ratio
from anomaly_ae.scoring.position import PositionReference
from anomaly_ae.scoring.reconstruction import has_learned_map
from anomaly_ae.scoring.scorer import Scorer

#: seed of the self-check's defects (any fixed number; not the training seed, so they differ from training's)
SELF_CHECK_SEED = 20211011
#: seed of the second set of defects, on which the chosen setting's figures are reported
REPORT_SEED = SELF_CHECK_SEED + 1
#: bootstrap resamples of the image AUROC's interval
BOOTSTRAP = 1000
#: at most this many held-out good images (a seeded subset) go into the self-check: its memory and time
#: stay bounded however large the training set (and so the held-out part) is
MAX_GOOD = 64
#: :func:`split_reference` fits a position reference only with at least this many images in each half (halving
#: fewer would leave the self-check too few good images)
MIN_HALF = 20
#: every held-out image is used this many times with a different defect
COPIES = 2
#: smoothing candidates of ``select: auto``, in pixels of the model's map
SIGMAS_MODEL = (0.0, 1.0, 2.0, 4.0, 8.0)
REDUCTIONS = ("max", "topk_mean", "mean")
#: version of the self-check's defects, recorded with its figures (1: whole-image Perlin blobs, about 5%
#: of the image; 2: blobs in a window of 10-30% of the image side, about 0.05-0.5% of it, and the shapes equally
#: often; 3: shapes and content held out of training, chosen on one set and reported on another, with an interval)
VERSION = 3


@dataclass(frozen=True)
class SelfCheck:
    """Synthetic-defect figures of one scoring setting."""

    image_auroc: float
    pixel_auroc: float
    aupro: float
    metric: str
    smoothing_sigma: float  # pixels of the original image, as scoring.smoothing_sigma
    reduction: str
    position_norm: bool = False
    #: the per-position reference the image score was normalized by (``position_norm``); not in to_dict
    reference: PositionReference | None = field(default=None, compare=False, repr=False)

    @property
    def setting(self) -> dict[str, str | float | bool]:
        """The ``scoring`` fields it sets: ``metric``, ``smoothing_sigma``, ``reduction``, ``position_norm``."""
        return {"metric": self.metric, "smoothing_sigma": self.smoothing_sigma, "reduction": self.reduction,
                "position_norm": self.position_norm}

    @property
    def objective(self) -> float:
        """What ``select: auto`` maximises: the mean of the three figures."""
        return (self.image_auroc + self.pixel_auroc + self.aupro) / 3.0

    def to_dict(self) -> dict[str, float | str | int]:
        """JSON-ready form (with the :data:`VERSION` of the defects)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "reference"}
        return {**{k: (round(v, 6) if isinstance(v, float) else v) for k, v in values.items()},
                "version": VERSION}


def synthesizer(seed: int = SELF_CHECK_SEED) -> AnomalySynthesizer:
    """The self-check's defect generator: the held-out shapes, each as often, filled with held-out texture
    families or the shaded surface itself, half each. Repair training never draws any of them."""
    return AnomalySynthesizer(shapes=dict.fromkeys(CHECK_SHAPES, 1.0), sources={"texture": 0.5, "shade": 0.5},
                              seed=seed, texture_families=CHECK_FAMILIES)


def synthetic_defects(good: np.ndarray, seed: int = SELF_CHECK_SEED,
                      copies: int = COPIES) -> tuple[np.ndarray, np.ndarray]:
    """``copies`` x each good image with one synthetic defect: (uint8 ``(copies * N, h, w, C)``, bool masks)."""
    synth = synthesizer(seed)
    images = np.concatenate([good] * copies)
    return synthesize_batch(images, synth, np.random.default_rng(seed), probability=1.0)


def pixel_accumulator(good_maps: np.ndarray, bad_maps: np.ndarray, masks: np.ndarray) -> PixelAccumulator:
    """Good pixels of both sets and the defect regions of ``masks``."""
    pix = PixelAccumulator()
    for m in good_maps:
        pix.add(m)
    for m, mask in zip(bad_maps, masks, strict=True):
        pix.add(m, mask)
    return pix


def image_auroc(good_maps: np.ndarray, bad_maps: np.ndarray, reduction: str, topk_fraction: float,
                auc: Callable[[np.ndarray, np.ndarray], float]) -> float:
    """AUROC of image scores (good 0, defective 1)."""
    s = np.r_[image_score(good_maps, reduction, topk_fraction), image_score(bad_maps, reduction, topk_fraction)]
    y = np.r_[np.zeros(len(good_maps)), np.ones(len(bad_maps))]
    return float(auc(y, s))


def auroc_interval(good: np.ndarray, bad: np.ndarray, n_boot: int = BOOTSTRAP, level: float = 0.95,
                   seed: int = SELF_CHECK_SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUROC of scores ``good`` ``(n,)`` (label 0) vs ``bad`` ``(m,)``.

    Good and defective images are resampled separately (stratified), so every resample has both.
    """
    rng = np.random.default_rng(seed)
    n, m = len(good), len(bad)
    gi, bi = rng.integers(0, n, (n_boot, n)), rng.integers(0, m, (n_boot, m))
    # AUROC = P(bad > good) + 0.5 P(tie), from the ranks of each resample's pooled scores: the same figure as
    # sklearn's roc_auc_score, which per resample took 37x longer (1.3 s for 1000 of 135 scores), in every fit
    aucs = np.empty(n_boot)
    for k in range(n_boot):
        g, b = good[gi[k]], bad[bi[k]]
        ranks = _midranks(np.r_[g, b])
        aucs[k] = (ranks[n:].sum() - m * (m + 1) / 2) / (n * m)
    lo, hi = np.quantile(aucs, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their mean rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    return (sums / counts)[inv]


@dataclass(frozen=True)
class Candidates:
    """The scoring settings the self-check scores, the configured value of each first (it wins a tie)."""

    metrics: list[str]
    sigmas: list[float]  # pixels of the original image, as scoring.smoothing_sigma
    reductions: list[str]
    position: list[bool]  # scoring.position_norm off / on


#: the map metrics every reconstruction model has (a model with a discriminator also has "learned")
RESIDUAL_METRICS = ("ssim", "l2", "l1", "ssim_l1")


def candidates(metric: str, sigma: float, reduction: str, position_norm: bool, select: bool,
               learned: bool = False, source_ratio: float = 1.0, reference: bool = False) -> Candidates:
    """The configured setting alone, or with ``select`` every map metric the model has (``learned``: it has a
    learned map), the smoothing sigmas :data:`SIGMAS_MODEL` (model pixels; times ``source_ratio``, original
    pixels per model pixel, rounded to 3 decimals), every reduction, and the per-position normalization
    on and off when there are ``reference`` images to fit it on (else off)."""
    if not select:
        return Candidates([metric], [sigma], [reduction], [position_norm])
    # a feature model has one map (its feature error); image autoencoders every residual metric (and learned)
    metrics = [metric] if metric == "feature" else \
        [metric, *(m for m in (*(["learned"] if learned else []), *RESIDUAL_METRICS) if m != metric)]
    scaled = [round(v * source_ratio, 3) for v in SIGMAS_MODEL]
    return Candidates(metrics, [sigma, *(v for v in scaled if v != sigma)],
                      [reduction, *(r for r in REDUCTIONS if r != reduction)],
                      [position_norm, not position_norm] if reference else [False])


def rank_candidates(
    raw: dict[str, tuple[np.ndarray, np.ndarray]],
    masks: np.ndarray,
    sigmas: Sequence[tuple[float, tuple[float, float]]],
    reductions: Sequence[str],
    topk_fraction: float,
    reference_raw: Mapping[str, np.ndarray | PositionReference] | None = None,
    position: Sequence[bool] = (False,),
) -> list[SelfCheck]:
    """Every (metric, sigma, reduction, position_norm) scored on the synthetic set, best first.

    Args:
        raw: metric -> (raw maps of the good images, raw maps of the defective ones), unsmoothed.
        sigmas: (sigma in original pixels, (sigma_y, sigma_x) in map pixels) candidates.
        reductions: image reductions to try.
        reference_raw: metric -> raw maps of good *training* images (not the self-check's): the
            per-position reference of ``position_norm`` (:mod:`anomaly_ae.scoring.position`) is fitted
            on them, smoothed like the candidate, so the check's good images stay unseen; or the
            fitted reference itself (a model's stored one).
        position: ``position_norm`` values to try (True needs ``reference_raw``).
    """
    from sklearn.metrics import roc_auc_score

    rows: list[SelfCheck] = []
    for metric, (good_raw, bad_raw) in raw.items():
        for sigma, model_sigma in sigmas:
            good_maps, bad_maps = smooth(good_raw, model_sigma), smooth(bad_raw, model_sigma)
            pix = pixel_accumulator(good_maps, bad_maps, masks)
            p_auroc, aupro = pix.pixel_auroc()[0], pix.aupro()
            for norm in position:
                ref = None
                if norm:  # only the image score is normalized: the pixel figures are the plain map's
                    r = reference_raw[metric]  # type: ignore[index]
                    ref = r if isinstance(r, PositionReference) else PositionReference.fit(smooth(r, model_sigma))
                g, b = (good_maps, bad_maps) if ref is None else (ref.normalize(good_maps), ref.normalize(bad_maps))
                for red in reductions:
                    img = image_auroc(g, b, red, topk_fraction, roc_auc_score)
                    rows.append(SelfCheck(img, p_auroc, aupro, metric, float(sigma), red, norm, ref))
    # stable sort: among equal objectives the earlier candidate (the configured one first) wins
    return sorted(rows, key=lambda r: -round(r.objective, 9))


def report(choice: SelfCheck, good_raw: np.ndarray, bad_raw: np.ndarray, masks: np.ndarray,
           model_sigma: tuple[float, float], topk_fraction: float, seed: int = REPORT_SEED) -> dict[str, object]:
    """The figures of the chosen setting on a second set of defects, with the image AUROC's interval.

    Args:
        choice: the chosen candidate (its metric's raw maps are ``good_raw`` and ``bad_raw``).
        good_raw, bad_raw: unsmoothed maps ``(N, h, w)`` of the good images and of the second set.
        masks: that set's defect masks.
        model_sigma: the choice's sigma in map pixels.

    Returns:
        ``SelfCheck.to_dict()`` of the second set plus ``image_auroc_interval`` [low, high] (95%) and
        ``selection``: the choice's figures on the set that chose it.
    """
    from sklearn.metrics import roc_auc_score

    good_maps, bad_maps = smooth(good_raw, model_sigma), smooth(bad_raw, model_sigma)
    pix = pixel_accumulator(good_maps, bad_maps, masks)
    ref = choice.reference  # None unless the choice normalizes per position
    g, b = (good_maps, bad_maps) if ref is None else (ref.normalize(good_maps), ref.normalize(bad_maps))
    gs, bs = image_score(g, choice.reduction, topk_fraction), image_score(b, choice.reduction, topk_fraction)
    auc = float(roc_auc_score(np.r_[np.zeros(len(gs)), np.ones(len(bs))], np.r_[gs, bs]))
    out = SelfCheck(auc, pix.pixel_auroc()[0], pix.aupro(), choice.metric, choice.smoothing_sigma,
                    choice.reduction, choice.position_norm, ref)
    lo, hi = auroc_interval(gs, bs, seed=seed)
    chosen = choice.to_dict()
    return {**out.to_dict(), "image_auroc_interval": [round(lo, 6), round(hi, 6)],
            "selection": {k: chosen[k] for k in ("image_auroc", "pixel_auroc", "aupro")}}


@dataclass
class ScoringCheck:
    """What :func:`check_scoring` found: the reported figures (the ``self_check`` entry of ``train_info_``),
    every candidate's row, best first, and the best (``best.reference``: its fitted position reference)."""

    figures: dict[str, Any]
    rows: list[SelfCheck]

    @property
    def best(self) -> SelfCheck:
        """The chosen setting (without selection, the configured one)."""
        return self.rows[0]


def check_scoring(scorer: Scorer, good: np.ndarray, seed: int = SELF_CHECK_SEED, select: bool = False,
                  reference: np.ndarray | None = None) -> ScoringCheck:
    """The self-check of ``scorer`` on held-out good images; changes nothing.

    Args:
        good: uint8 ``(N, h, w, C)`` good images at model size that the model was not trained on (at most
            :data:`MAX_GOOD` of them are used, a seeded subset).
        select: rank every map metric the model has, smoothing sigmas, image reductions and (with
            ``reference``) the per-position normalization; else only the configured setting.
        reference: uint8 ``(M, h, w, C)`` good images that are *not* in ``good`` (training images), whose maps
            fit the per-position reference of the candidates with ``position_norm``; without it a configured
            ``position_norm`` uses ``scorer.position``.

    Returns:
        The figures of the best setting, measured on a second set of defects (the best of many candidates on
        the set that chose it is biased up), with the image AUROC's 95% interval, the setting, how many images
        and candidates it used and the seed; and every candidate's row.
    """
    s, pre = scorer.scoring, scorer.preprocessing
    if len(good) > MAX_GOOD:  # a seeded subset: bounded memory and time for large sets
        good = good[np.sort(np.random.default_rng(seed).choice(len(good), MAX_GOOD, replace=False))]
    bad, masks = synthetic_defects(good, seed)
    x_good, x_bad = pre(good), pre(bad)
    xh_good, xh_bad = scorer.reconstruct(x_good), scorer.reconstruct(x_bad)
    c = candidates(s.metric, s.smoothing_sigma, s.reduction, s.position_norm, select, has_learned_map(scorer.model),
                   source_ratio(pre.image_size, pre.original_hw), reference is not None)
    raw = {m: (scorer.raw_maps(x_good, xh_good, m), scorer.raw_maps(x_bad, xh_bad, m)) for m in c.metrics}
    refs: dict[str, np.ndarray | PositionReference] = {}
    if True in c.position and reference is not None:
        x_ref = pre(reference)
        xh_ref = scorer.reconstruct(x_ref)
        refs = {m: scorer.raw_maps(x_ref, xh_ref, m) for m in c.metrics}
    elif True in c.position:
        refs = {s.metric: scorer.position_reference()}
    sig = [(v, scorer.smoothing_sigma(v)) for v in c.sigmas]
    rows = rank_candidates(raw, masks, sig, c.reductions, s.topk_fraction, refs, c.position)
    best = rows[0]
    bad2, masks2 = synthetic_defects(good, seed + 1)
    x_bad2 = pre(bad2)
    bad2_raw = scorer.raw_maps(x_bad2, scorer.reconstruct(x_bad2), best.metric)
    best_sigma = next(ms for v, ms in sig if v == best.smoothing_sigma)
    figures = report(best, raw[best.metric][0], bad2_raw, masks2, best_sigma, s.topk_fraction, seed + 1)
    return ScoringCheck({**figures, "n_good": int(len(good)), "n_defective": int(len(bad2)), "seed": int(seed),
                         "candidates": len(rows), "selected": bool(select)}, rows)


def split_reference(images: np.ndarray, seed: int = SELF_CHECK_SEED) -> tuple[np.ndarray, np.ndarray | None]:
    """``(self-check images, position reference images)``: with at least ``2 * MIN_HALF`` good images, a seeded
    half fits ``scoring.position_norm``'s reference and the other half is the self-check's (each in its
    original order); with fewer, all are the self-check's and there is no reference."""
    if len(images) < 2 * MIN_HALF:
        return images, None
    order = np.random.default_rng(seed).permutation(len(images))
    half = len(images) // 2
    return images[np.sort(order[half:])], images[np.sort(order[:half])]
