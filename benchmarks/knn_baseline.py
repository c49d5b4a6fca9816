"""The pretrained-feature kNN reference (the PatchCore class), scored and evaluated by anomaly-ae's own pipeline.

    python benchmarks/knn_baseline.py ../shared/data/bsdata_pitting [--config configs/default.yaml]
        [--bank 0.002] [--random]

Features are exactly the ``feature`` model's (:class:`anomaly_ae.models.feature.FeatureAutoencoder`: the same
backbone, strides, local mean and standardization, from the same config); instead of an autoencoder, a memory
bank of good patch features (a greedy k-center coreset of ``--bank`` of them, PatchCore's; ``--random``: a
random subsample) and each position's distance to its nearest bank vector is the map. Holdout split,
self-check, smoothing, thresholds and metrics are the detector's, so the row beside the feature autoencoder
compares models, not evaluation code. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from anomaly_ae.config import DetectorConfig  # noqa: E402
from anomaly_ae.data.images import Preprocessing, split_holdout  # noqa: E402
from anomaly_ae.data.loading import load_training_set, original_sizes  # noqa: E402
from anomaly_ae.detector import Detector  # noqa: E402
from anomaly_ae.models import build_model  # noqa: E402
from anomaly_ae.pipelines.evaluate import evaluate  # noqa: E402
from anomaly_ae.progress import as_progress  # noqa: E402
from anomaly_ae.scoring.maps import resize_map  # noqa: E402
from anomaly_ae.scoring.position import reference_indices  # noqa: E402
from anomaly_ae.scoring.scorer import Scorer  # noqa: E402
from anomaly_ae.training.features import channel_statistics, extract  # noqa: E402

#: greedy coreset: candidates drawn at random first (bounded time), projected to this many dimensions
CORESET_CANDIDATES = 60_000
PROJECTION = 128


def greedy_coreset(x: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` rows of ``x`` ``(M, F)`` chosen by greedy k-center on a random projection (PatchCore)."""
    rng = np.random.default_rng(seed)
    proj = x @ rng.normal(size=(x.shape[1], min(PROJECTION, x.shape[1]))).astype(np.float32)
    chosen = [int(rng.integers(len(x)))]
    dist = np.linalg.norm(proj - proj[chosen[0]], axis=1)
    for _ in range(n - 1):
        i = int(np.argmax(dist))
        chosen.append(i)
        dist = np.minimum(dist, np.linalg.norm(proj - proj[i], axis=1))
    return np.asarray(chosen)


def nearest_distance(queries: np.ndarray, bank: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Euclidean distance ``(Q,)`` of each query row to its nearest ``bank`` row (both float32)."""
    bank_sq = np.einsum("ij,ij->i", bank, bank)
    out = np.empty(len(queries), np.float32)
    for i in range(0, len(queries), chunk):
        q = queries[i : i + chunk]
        d2 = np.einsum("ij,ij->i", q, q)[:, None] - 2.0 * q @ bank.T + bank_sq[None, :]
        out[i : i + chunk] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    return out



@dataclass
class OwnReconstruction(Scorer):
    """A :class:`Scorer` whose reconstruction is ``own`` (the baseline's), not a Keras model's."""

    own: Callable[[np.ndarray], np.ndarray] | None = None

    def reconstruct(self, x: np.ndarray) -> np.ndarray:  # noqa: D102
        return self.own(x)

class KNNDetector(Detector):
    """A Detector whose map is the nearest-neighbour distance of each position's features to a good bank."""

    def __init__(self, config: DetectorConfig, bank_fraction: float, coreset: bool) -> None:
        super().__init__(config)
        self.bank_fraction, self.coreset = bank_fraction, coreset

    def fit(self, good, callbacks=()):  # noqa: ANN001, ANN201, D102
        cfg = self.config
        if cfg.data.image_size == "auto":
            cfg = cfg.with_image_size(original_sizes(good, cfg.data.channels))
        self.config_ = cfg
        pre = Preprocessing(cfg.data.image_size, cfg.data.channels)
        data = load_training_set(good, pre, cfg.data.cache_mb)
        pre = pre.with_source_size(data.sizes)
        train_idx, val_idx = split_holdout(len(data.images), cfg.data.holdout_fraction, cfg.train.seed)
        self.model_ = build_model(cfg, pretrained=True)
        self.preprocessing_ = pre
        feats = extract(self.model_, lambda i: data.at_model_size(int(train_idx[i]), pre), len(train_idx),
                        as_progress(0), "training images")
        self.stats_ = self.model_.standardize.set_statistics(*channel_statistics(feats))
        self.extractor_ = self.model_.feature_extractor()
        mean, scale = self.stats_
        flat = ((feats - mean) / scale).reshape(-1, feats.shape[-1])
        n = max(1, int(round(self.bank_fraction * len(flat))))
        rng = np.random.default_rng(cfg.train.seed)
        if self.coreset:
            pool = rng.choice(len(flat), min(len(flat), CORESET_CANDIDATES), replace=False)
            self.bank_ = flat[pool[greedy_coreset(flat[pool], min(n, len(pool)), cfg.train.seed)]]
        else:
            self.bank_ = flat[rng.choice(len(flat), n, replace=False)]
        val = np.stack([data.at_model_size(i, pre) for i in val_idx])
        ref_idx = reference_indices(train_idx, cfg.train.seed)
        ref = np.stack([data.at_model_size(i, pre) for i in ref_idx])
        check = self.fit_scoring(val, select=cfg.scoring.select == "auto", reference=ref)
        self.calibrate(val)
        self.train_info_ = {"n_train": len(train_idx), "n_val": len(val_idx), "bank": len(self.bank_),
                            "self_check": check}
        return self

    @property
    def scorer_(self) -> Scorer:  # noqa: D102 - the detector's scoring with this baseline's reconstruction
        s = super().scorer_
        return OwnReconstruction(s.model, s.preprocessing, s.scoring, s.size_factor, s.position, own=self.reconstruct)

    def reconstruct(self, x: np.ndarray) -> np.ndarray:  # noqa: D102 - the kNN map in the model output's place
        xf = x.astype(np.float32) * (np.float32(1 / 255) if x.dtype == np.uint8 else np.float32(1))
        raw = self.extractor_.predict(xf, batch_size=8, verbose=0)
        mean, scale = self.stats_
        f = (raw - mean) / scale
        d = nearest_distance(f.reshape(-1, f.shape[-1]), self.bank_).reshape(f.shape[:3])
        h, w = x.shape[1:3]
        return np.stack([resize_map(m, (h, w)) for m in d])[..., None]


def main() -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--config", type=Path, default=Path("configs/default.yaml"))
    ap.add_argument("--bank", type=float, default=0.002,
                    help="memory bank size, fraction of training positions (PatchCore: 0.01 on a GPU; 2 CPU cores "
                    "take about a minute per 100 images at 1024 px with 0.002)")
    ap.add_argument("--random", action="store_true", help="a random subsample instead of the greedy coreset")
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "knn.jsonl")
    a = ap.parse_args()
    cfg = DetectorConfig.from_yaml(a.config)
    t0 = time.perf_counter()
    det = KNNDetector(cfg, a.bank, coreset=not a.random).fit(a.dataset / "train" / "good")
    t1 = time.perf_counter()
    m = evaluate(det, a.dataset).metrics
    s = det.config_.scoring
    kind = f"kNN {cfg.model.backbone} {'random' if a.random else 'coreset'} {a.bank:g}"
    line = json.dumps({"date": datetime.now(UTC).isoformat(timespec="seconds"), "model": kind,
                       "dataset": a.dataset.name, "config": a.config.name, "bank": det.train_info_["bank"],
                       "image_size": list(det.preprocessing_.image_size), "sigma": s.smoothing_sigma,
                       "reduction": s.reduction, "position_norm": s.position_norm,
                       "self_check": det.train_info_["self_check"],
                       "image_auroc": m["image_auroc"], "pixel_auroc": m.get("pixel_auroc"),
                       "pixel_aupro": m.get("pixel_aupro"), "fit_seconds": round(t1 - t0, 1),
                       "eval_seconds": round(time.perf_counter() - t1, 1)})
    print(line)
    with open(a.results, "a", encoding="utf-8") as f:
        f.write(line + "\n")


if __name__ == "__main__":
    main()
