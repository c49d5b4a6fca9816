"""The PCA reference of the benchmark table, scored and evaluated by anomaly-ae's own pipeline.

    python benchmarks/pca_baseline.py ../shared/data/bsdata_pitting [--components 32] [--size 128]
        [--sigma 4] [--metric l2]

PCA (scikit-learn) with ``--components`` components on ``--size`` x ``--size`` grayscale images takes
the autoencoder's place; holdout split, anomaly maps, thresholds and metrics are the same code as for
the autoencoders, so the rows of ``benchmarks/README.md`` compare models, not evaluation code.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from anomaly_ae.config import DetectorConfig  # noqa: E402
from anomaly_ae.data.images import Preprocessing, list_images, load_folder, split_holdout  # noqa: E402
from anomaly_ae.detector import Detector  # noqa: E402
from anomaly_ae.pipelines.evaluate import evaluate  # noqa: E402
from anomaly_ae.scoring.position import reference_indices  # noqa: E402
from anomaly_ae.scoring.scorer import Scorer  # noqa: E402


@dataclass
class OwnReconstruction(Scorer):
    """A :class:`Scorer` whose reconstruction is ``own`` (the baseline's), not a Keras model's."""

    own: Callable[[np.ndarray], np.ndarray] | None = None

    def reconstruct(self, x: np.ndarray) -> np.ndarray:  # noqa: D102
        return self.own(x)

class PCADetector(Detector):
    """A Detector whose reconstruction is a PCA projection (linear, global)."""

    def __init__(self, config: DetectorConfig, components: int) -> None:
        super().__init__(config)
        self.components = components

    def fit(self, good, callbacks=()):  # noqa: ANN001, ANN201, D102
        from sklearn.decomposition import PCA

        cfg = self.config_ = self.config
        pre = Preprocessing(cfg.data.image_size, cfg.data.channels)
        loaded = load_folder(list_images(good), pre)
        pre = pre.with_source_size(loaded.sizes)
        train_idx, val_idx = split_holdout(len(loaded.images), cfg.data.holdout_fraction, cfg.train.seed)
        x = pre(loaded.images[train_idx])
        self.pca_ = PCA(self.components, random_state=cfg.train.seed).fit(x.reshape(len(x), -1))
        self.model_ = self.pca_
        self.preprocessing_ = pre
        # the same seeded subset of training images as Detector.fit fits scoring.position_norm's reference on
        ref_idx = reference_indices(train_idx, cfg.train.seed)
        check = self.fit_scoring(loaded.images[val_idx], select=cfg.scoring.select == "auto",
                                reference=loaded.images[ref_idx])
        self.calibrate(loaded.images[val_idx])
        self.train_info_ = {"n_train": len(train_idx), "n_val": len(val_idx), "self_check": check}
        return self

    @property
    def scorer_(self) -> Scorer:  # noqa: D102 - the detector's scoring with this baseline's reconstruction
        s = super().scorer_
        return OwnReconstruction(s.model, s.preprocessing, s.scoring, s.size_factor, s.position, own=self.reconstruct)

    def reconstruct(self, x: np.ndarray) -> np.ndarray:  # noqa: D102
        flat = x.reshape(len(x), -1)
        return np.clip(self.pca_.inverse_transform(self.pca_.transform(flat)), 0, 1).reshape(x.shape).astype(np.float32)


def main() -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--components", type=int, default=32)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--sigma", type=float, default=4.0, help="smoothing sigma, original-image pixels")
    ap.add_argument("--metric", default="l2")
    ap.add_argument("--select", action="store_true", help="scoring.select: auto (by the label-free self-check)")
    a = ap.parse_args()
    cfg = DetectorConfig().with_overrides({"data.image_size": a.size, "scoring.smoothing_sigma": a.sigma,
                                           "scoring.metric": a.metric,
                                           "scoring.select": "auto" if a.select else "fixed"})
    t0 = time.perf_counter()
    det = PCADetector(cfg, a.components).fit(a.dataset / "train" / "good")
    t1 = time.perf_counter()
    m = evaluate(det, a.dataset).metrics
    s = det.config_.scoring
    print(json.dumps({"model": f"PCA-{a.components} {a.size}px gray", "dataset": a.dataset.name,
                      "sigma": s.smoothing_sigma, "metric": s.metric, "reduction": s.reduction,
                      "position_norm": s.position_norm,
                      "self_check": det.train_info_["self_check"],
                      "image_auroc": m["image_auroc"], "pixel_auroc": m.get("pixel_auroc"),
                      "pixel_aupro": m.get("pixel_aupro"), "fit_seconds": round(t1 - t0, 1),
                      "eval_seconds": round(time.perf_counter() - t1, 1)}))


if __name__ == "__main__":
    main()
