"""Every architecture on one data set with the same epoch budget: a markdown table + JSON lines.

    python benchmarks/models.py sample_data/metal_plate --epochs 30 [--models conv,dense,...]
        [--image-size 128] [--results benchmarks/results/models.jsonl]

Each model uses its ``configs/<name>.yaml`` (``conv``: ``configs/fast.yaml``, the default before issue 13)
with the given epochs (and image size, when set), trains on ``train/good`` and is evaluated on ``test/``
by the code behind ``anomaly-ae evaluate``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ALL = ("conv", "dense", "linear", "sparse", "contractive", "denoising", "vae")

# Variants beyond the shipped configs: (base config, overrides). An over-complete dense autoencoder
# (8192 code units for 64x64 = 4096 inputs) without regularisation can learn to copy its input; the
# regularised one cannot.
VARIANTS = {
    "dense_overcomplete": ("dense", {"model.hidden": [], "model.latent_dim": 8192}),
    "dense_overcomplete_reg": ("dense", {"model.hidden": [], "model.latent_dim": 8192, "model.l2": 1e-4,
                                         "model.activity_l1": 1e-4, "model.dropout": 0.2}),
}


def main() -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--models", default=",".join(ALL))
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "models.jsonl")
    a = ap.parse_args()

    from anomaly_ae.config import DetectorConfig
    from anomaly_ae.detector import Detector
    from anomaly_ae.pipelines.evaluate import evaluate

    configs = Path(__file__).resolve().parent.parent / "configs"
    rows = []
    print("| model | image AUROC | pixel AUROC | pixel AUPRO | epochs run | train s |")
    print("|---|---|---|---|---|---|")
    for name in a.models.split(","):
        base, extra = VARIANTS.get(name, (name, {}))
        path = configs / ("fast.yaml" if base == "conv" else f"{base}.yaml")
        cfg = DetectorConfig.from_yaml(path).with_overrides(
            {"train.epochs": a.epochs, "data.image_size": a.image_size, **extra}
        )
        t0 = time.perf_counter()
        det = Detector(cfg).fit(a.dataset / "train" / "good")
        train_s = time.perf_counter() - t0
        m = evaluate(det, a.dataset).metrics
        row = {"dataset": a.dataset.name, "model": name, "config": path.name, "epochs": a.epochs,
               "image_size": list(cfg.data.image_size), "image_auroc": m.get("image_auroc"),
               "pixel_auroc": m.get("pixel_auroc"), "pixel_aupro": m.get("pixel_aupro"),
               "epochs_run": det.train_info_["epochs_run"], "train_seconds": round(train_s, 1)}
        rows.append(row)
        print(f"| {name} | {row['image_auroc']:.3f} | {row['pixel_auroc']:.3f} | {row['pixel_aupro']:.3f} | "
              f"{row['epochs_run']} | {row['train_seconds']:.0f} |", flush=True)
        a.results.parent.mkdir(parents=True, exist_ok=True)
        with open(a.results, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
