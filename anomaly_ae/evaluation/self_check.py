"""Label-free self-check: how well does a detector find synthetic defects on held-out good images?

At the end of training the held-out good images (never trained on) are scored as they are and as
copies with one seeded synthetic defect each (:mod:`anomaly_ae.data.anomalies`, shapes and content
fixed here, independent of the training config, so the figures of two configs are comparable). The
result is a *synthetic* image AUROC, pixel AUROC and AUPRO: an estimate, from good images only, of how
well the detector separates and localises defects. ``scoring.select: auto`` picks the map metric,
smoothing and image reduction that maximise it (:func:`select_scoring`).

How well it ranks configurations against real labels is measured in ``benchmarks/README.md``; it is
not a promise: real defects can be subtler (or cruder) than pasted ones.

Shapes: good / defective images uint8 ``(N, h, w, C)`` at model size; maps ``(N, h, w)``; masks bool.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from anomaly_ae.data.anomalies import AnomalySynthesizer, synthesize_batch
from anomaly_ae.evaluation.metrics import PixelAccumulator
from anomaly_ae.scoring.maps import image_score, smooth

#: seed of the self-check's defects (any fixed number; not the training seed, so they differ from training's)
SELF_CHECK_SEED = 20211011
#: at most this many held-out good images (a seeded subset) go into the self-check: its memory and time
#: stay bounded however large the training set (and so the held-out part) is
MAX_GOOD = 64
#: every held-out image is used this many times with a different defect
COPIES = 2
#: smoothing candidates of ``select: auto``, in pixels of the model's map
SIGMAS_MODEL = (0.0, 1.0, 2.0, 4.0, 8.0)
REDUCTIONS = ("max", "topk_mean", "mean")
#: version of the self-check's defects, recorded with its figures (1: whole-image Perlin blobs, about 5%
#: of the image; 2: blobs in a window of 10-30% of the image side, about 0.05-0.5% of it, and the shapes equally often)
VERSION = 2


@dataclass(frozen=True)
class SelfCheck:
    """Synthetic-defect figures of one scoring setting."""

    image_auroc: float
    pixel_auroc: float
    aupro: float
    metric: str
    smoothing_sigma: float  # pixels of the original image, as scoring.smoothing_sigma
    reduction: str

    @property
    def objective(self) -> float:
        """What ``select: auto`` maximises: the mean of the three figures."""
        return (self.image_auroc + self.pixel_auroc + self.aupro) / 3.0

    def to_dict(self) -> dict[str, float | str | int]:
        """JSON-ready form (with the :data:`VERSION` of the defects)."""
        return {**{k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()},
                "version": VERSION}


def synthesizer(seed: int = SELF_CHECK_SEED) -> AnomalySynthesizer:
    """The self-check's defect generator: small defects of every shape (real defects are mostly small;
    whole-image blobs reward smoothing and mean-pooling that miss them)."""
    return AnomalySynthesizer(shapes={"perlin": 1.0, "scratch": 1.0, "pit": 1.0, "chip": 1.0},
                              sources={"image": 0.7, "noise": 0.3}, seed=seed, perlin_window=(0.1, 0.3))


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


def select_scoring(
    raw: dict[str, tuple[np.ndarray, np.ndarray]],
    masks: np.ndarray,
    sigmas: Sequence[tuple[float, tuple[float, float]]],
    reductions: Sequence[str],
    topk_fraction: float,
) -> list[SelfCheck]:
    """Every (metric, sigma, reduction) scored on the synthetic set, best first.

    Args:
        raw: metric -> (raw maps of the good images, raw maps of the defective ones), unsmoothed.
        sigmas: (sigma in original pixels, (sigma_y, sigma_x) in map pixels) candidates.
        reductions: image reductions to try.
    """
    from sklearn.metrics import roc_auc_score

    rows: list[SelfCheck] = []
    for metric, (good_raw, bad_raw) in raw.items():
        for sigma, model_sigma in sigmas:
            good_maps, bad_maps = smooth(good_raw, model_sigma), smooth(bad_raw, model_sigma)
            pix = pixel_accumulator(good_maps, bad_maps, masks)
            p_auroc, aupro = pix.pixel_auroc()[0], pix.aupro()
            for red in reductions:
                img = image_auroc(good_maps, bad_maps, red, topk_fraction, roc_auc_score)
                rows.append(SelfCheck(img, p_auroc, aupro, metric, float(sigma), red))
    # stable sort: among equal objectives the earlier candidate (the configured one first) wins
    return sorted(rows, key=lambda r: -round(r.objective, 9))
