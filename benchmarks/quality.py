"""Train on DATASET/train/good, evaluate on DATASET/test, print (and append) one JSON line.

    python benchmarks/quality.py ../shared/data/bsdata_pitting --config configs/patch.yaml \
        [--out runs/bench] [--epochs N] [--results benchmarks/results/quality.jsonl]

The JSON line holds the metrics of ``anomaly-ae evaluate`` (image/pixel AUROC, F1-max, AUPRO),
wall times of training and evaluation, the machine and the resolved config.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--config", type=Path, default=Path("configs/default.yaml"))
    ap.add_argument("--out", type=Path, default=None, help="model directory (default runs/bench-<config>)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "quality.jsonl")
    a = ap.parse_args()

    import keras

    from anomaly_ae.config import DetectorConfig
    from anomaly_ae.detector import Detector
    from anomaly_ae.evaluation.evaluate import evaluate
    from anomaly_ae.fileio import versions

    cfg = DetectorConfig.from_yaml(a.config).with_overrides({"train.epochs": a.epochs})
    out = a.out or Path("runs") / f"bench-{a.config.stem}"
    t0 = time.perf_counter()
    det = Detector(cfg).fit(a.dataset / "train" / "good")
    train_s = time.perf_counter() - t0
    det.save(out)
    t1 = time.perf_counter()
    ev = evaluate(det, a.dataset)
    eval_s = time.perf_counter() - t1
    m = ev.metrics
    line = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": a.dataset.name,
        "config": a.config.name,
        "image_auroc": m.get("image_auroc"),
        "pixel_auroc": m.get("pixel_auroc"),
        "pixel_aupro": m.get("pixel_aupro"),
        "image_f1_max": m.get("image_f1_max"),
        "pixel_f1_max": m.get("pixel_f1_max"),
        "train_seconds": round(train_s, 1),
        "eval_seconds": round(eval_s, 1),
        "epochs_run": det.train_info_["epochs_run"],
        "n_test": len(ev.records),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu",
        "backend": keras.backend.backend(),
        "versions": versions(),
        "metrics": m,
        "resolved_config": cfg.to_dict(),
    }
    text = json.dumps(line)
    print(text)
    a.results.parent.mkdir(parents=True, exist_ok=True)
    with open(a.results, "a", encoding="utf-8") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
