"""Does the autoencoder's encoder help a segmenter trained on few labelled images?

    python benchmarks/transfer.py ../shared/data/bsdata_pitting --run runs/bench-patch \
        [--ks 8,16,32] [--steps 150] [--seed 0]

``--run`` is a model directory trained on ``train/good`` (e.g. by ``benchmarks/quality.py --config
configs/patch.yaml``). Its encoder is exported; then for each k, a seeded choice of k labelled
``test/pitting`` images trains a segmenter and the remaining labelled images test it, for
(a) pretrained frozen encoder, (b) pretrained fine-tuned, (c) the same architecture from random
initialisation, with the same budget: ``--steps`` gradient steps of batch 8 whatever k (so a small k
is not also a short training). Loss: BCE + soft Dice (:func:`anomaly_ae.models.losses.dice_bce_loss`).
Prints a markdown table and appends JSON lines to ``benchmarks/results/transfer.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--ks", default="8,16,32")
    ap.add_argument("--steps", type=int, default=150, help="gradient steps per segmenter (batch 8), every k")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "transfer.jsonl")
    a = ap.parse_args()

    import numpy as np

    from anomaly_ae.deploy.encoder import export_encoder
    from anomaly_ae.detector import Detector
    from anomaly_ae.segmentation.train import Pairs, encoder_preprocessing, load_pairs, train_segmenter

    enc_dir = Path(tempfile.mkdtemp()) / "encoder"
    export_encoder(Detector.load(a.run), enc_dir)
    pre = encoder_preprocessing(enc_dir)
    defect = next(p.name for p in sorted((a.dataset / "test").iterdir()) if p.name != "good")
    pairs = load_pairs(a.dataset / "test" / defect, a.dataset / "ground_truth" / defect, pre)
    order = np.random.default_rng(a.seed).permutation(len(pairs.x))
    print("| k | variant | Dice | IoU | train s |")
    print("|---|---|---|---|---|")
    for k in (int(v) for v in a.ks.split(",")):
        tr, te = order[:k], order[k:]
        epochs = -(-a.steps // -(-k // 8))  # ceil(steps / batches per epoch)
        train = Pairs(pairs.x[tr], pairs.y[tr], [pairs.paths[i] for i in tr], [])
        test = Pairs(pairs.x[te], pairs.y[te], [pairs.paths[i] for i in te], [])
        for variant, kwargs in (("pretrained, frozen", {"freeze_encoder": True}),
                                ("pretrained, fine-tuned", {"freeze_encoder": False}),
                                ("random init", {"freeze_encoder": False, "pretrained": False})):
            t0 = time.perf_counter()
            _, m = train_segmenter(enc_dir, train, epochs=epochs, seed=a.seed, test=test, **kwargs)
            secs = time.perf_counter() - t0
            print(f"| {k} | {variant} | {m['dice']:.3f} | {m['iou']:.3f} | {secs:.0f} |", flush=True)
            row = {"dataset": a.dataset.name, "run": str(a.run), "k": k, "variant": variant, "epochs": epochs,
                   "steps": a.steps, "n_test": int(len(te)), **m, "train_seconds": round(secs, 1)}
            a.results.parent.mkdir(parents=True, exist_ok=True)
            with open(a.results, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
