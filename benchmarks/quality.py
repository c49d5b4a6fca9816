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
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, e.g. --override data.image_size=64 (YAML value; repeatable)")
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "quality.jsonl")
    ap.add_argument("--variants", action="store_true",
                    help="also evaluate every scoring variant of VARIANTS on the same trained model, each with its "
                    "self-check (one more line per variant): the data of the rank-correlation study")
    a = ap.parse_args()

    import yaml

    from anomaly_ae.config import DetectorConfig
    from anomaly_ae.detector import Detector

    overrides = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in a.override)}
    cfg = DetectorConfig.from_yaml(a.config).with_overrides({"train.epochs": a.epochs, **overrides})
    out = a.out or Path("runs") / f"bench-{a.config.stem}-{a.dataset.name}"
    t0 = time.perf_counter()
    det = Detector(cfg).fit(a.dataset / "train" / "good")
    train_s = time.perf_counter() - t0
    det.save(out)
    lines = [_evaluate_line(a, det, train_s, variant=None)]
    if a.variants:
        for metric, sigma, reduction in VARIANTS:
            if metric == "learned" and not getattr(det.model_, "has_learned_map", False):
                continue
            scoring = det.config_.scoring.model_copy(update={"metric": metric, "smoothing_sigma": sigma,
                                                            "reduction": reduction})
            det.config_ = det.config_.model_copy(update={"scoring": scoring})
            det.train_info_["self_check"] = det.self_check(det.holdout_images_)
            det.calibrate(det.holdout_images_)
            lines.append(_evaluate_line(a, det, train_s, variant=f"{metric}/{sigma:g}/{reduction}"))
    a.results.parent.mkdir(parents=True, exist_ok=True)
    with open(a.results, "a", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")


#: scoring variants of --variants: (metric, smoothing sigma in original pixels, reduction)
VARIANTS = [(m, s, r) for m in ("learned", "ssim", "l2", "l1") for s in (2.0, 8.0) for r in ("max", "topk_mean")]


def _evaluate_line(a: argparse.Namespace, det: object, train_s: float, variant: str | None) -> dict:
    """Evaluate ``det`` on the data set's test split: one JSON-ready result line (printed)."""
    import keras

    from anomaly_ae.io.files import versions
    from anomaly_ae.pipelines.evaluate import evaluate

    t1 = time.perf_counter()
    ev = evaluate(det, a.dataset)
    eval_s = time.perf_counter() - t1
    m = ev.metrics
    line = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": a.dataset.name,
        "config": a.config.name,
        "variant": variant,
        "self_check": det.train_info_.get("self_check"),
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
        "resolved_config": det.config_.to_dict(),
    }
    print(json.dumps({k: line[k] for k in ("config", "variant", "image_auroc", "pixel_auroc", "pixel_aupro",
                                             "self_check", "train_seconds")}), flush=True)
    return line


if __name__ == "__main__":
    main()
