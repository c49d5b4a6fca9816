"""Re-run the end of training (self-check, scoring selection, calibration) on a trained model, then evaluate.

    python benchmarks/rescore.py runs/bench-default-bsdata_pitting ../shared/data/bsdata_pitting \
        [--variants] [--results benchmarks/results/rescore.jsonl]

What ``Detector.fit`` does after its last epoch, on the same weights and the same seeded split: the
held-out good images (the self-check's and the thresholds') and the training subset that fits
``scoring.position_norm``'s reference are rebuilt from ``DATASET/train/good`` exactly as ``fit``
drew them. So a change of the scoring stage is measured without a 10-minute retraining, and the
selection sees no test label. ``--variants`` also evaluates every candidate of the selection (one
line each, self-check beside the real figures): the data of the rank-correlation table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def fit_sets(det, good_dir: Path):  # noqa: ANN001, ANN201 - benchmark helper
    """(held-out good images, reference images) as ``Detector.fit`` drew them, uint8 at model size."""
    import numpy as np

    from anomaly_ae.data.images import Preprocessing, split_holdout
    from anomaly_ae.data.loading import load_training_set
    from anomaly_ae.scoring.position import reference_indices

    cfg, pre = det.config_, det.preprocessing_
    data = load_training_set(good_dir, Preprocessing(cfg.data.image_size, cfg.data.channels), cfg.data.cache_mb)
    train_idx, val_idx = split_holdout(len(data.images), cfg.data.holdout_fraction, cfg.train.seed)
    ref_idx = reference_indices(train_idx, cfg.train.seed)
    return (np.stack([data.at_model_size(i, pre) for i in val_idx]),
            np.stack([data.at_model_size(i, pre) for i in ref_idx]))


def main() -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--variants", action="store_true")
    ap.add_argument("--no-position", action="store_true", help="leave scoring.position_norm out of the candidates")
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "rescore.jsonl")
    a = ap.parse_args()

    from anomaly_ae.detector import Detector
    from anomaly_ae.pipelines.evaluate import evaluate

    det = Detector.load(a.model)
    det.config_ = det.config_.model_copy(update={"scoring": det.config_.scoring.model_copy(
        update={"position_norm": False})})
    val, ref = fit_sets(det, a.dataset / "train" / "good")
    t0 = time.perf_counter()
    check = det.fit_scoring(val, reference=None if a.no_position else ref)
    select_s = time.perf_counter() - t0
    det.train_info_ = {**det.train_info_, "self_check": check}
    det.calibrate(val)
    rows = [(None, det.config_.scoring, check)]
    if a.variants:
        best = det.config_.scoring
        for row in det.candidates_:
            sc = best.model_copy(update={"metric": row.metric, "smoothing_sigma": row.smoothing_sigma,
                                         "reduction": row.reduction, "position_norm": row.position_norm})
            rows.append((row, sc, row.to_dict()))
    lines = []
    for row, sc, chk in rows:
        det.config_ = det.config_.model_copy(update={"scoring": sc})
        if row is not None:
            det.position_reference_ = row.reference
            det.calibrate(val)
        ev = evaluate(det, a.dataset)
        m = ev.metrics
        lines.append({
            "date": datetime.now(UTC).isoformat(timespec="seconds"), "dataset": a.dataset.name,
            "model": str(a.model), "variant": None if row is None else
            f"{sc.metric}/{sc.smoothing_sigma:g}/{sc.reduction}/{'pos' if sc.position_norm else 'plain'}",
            "scoring": sc.model_dump(include={"metric", "smoothing_sigma", "reduction", "position_norm"}),
            "self_check": chk, "select_seconds": round(select_s, 1),
            **{k: m.get(k) for k in ("image_auroc", "pixel_auroc", "pixel_aupro")},
        })
        print(json.dumps(lines[-1]), flush=True)
    a.results.parent.mkdir(parents=True, exist_ok=True)
    with open(a.results, "a", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
