"""Peak memory of ``anomaly-ae score`` on large images, with and without the pixel budget per batch.

    .venv/bin/python benchmarks/memory.py [--n 24] [--side 5000] [--budgets 64 100000] [--preset default]

Makes ``--n`` gray PNGs of ``--side`` x ``--side`` pixels and a tiny model (32 px, 1 epoch: the model
is not what is measured; ``--preset NAME``: that shipped preset instead, e.g. the default, trained on the
24 small good images), then runs ``anomaly-ae score --batch-size 32`` once per
``scoring.batch_megapixels`` value in a fresh process and prints its peak RSS (``getrusage`` of the
child). ``100000`` is, in effect, no budget: batches are cut by count alone, as before.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import yaml

TINY = {"data": {"image_size": 32, "channels": 1, "holdout_fraction": 0.25},
        "model": {"widths": [8, 16], "latent_channels": 4},
        "train": {"epochs": 1, "batch_size": 8, "seed": 0}, "scoring": {"batch_size": 32}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--side", type=int, default=5000)
    ap.add_argument("--budgets", type=float, nargs="+", default=[64.0, 100000.0])
    ap.add_argument("--preset", default=None, help="train this shipped preset (default: the tiny config)")
    args = ap.parse_args()
    exe = Path(sys.executable).parent / "anomaly-ae"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rng = np.random.default_rng(0)
        base = cv2.resize((rng.random((50, 50)) * 255).astype(np.uint8), (args.side, args.side),
                          interpolation=cv2.INTER_CUBIC)
        (root / "big").mkdir()
        (root / "good").mkdir()
        for i in range(args.n):
            cv2.imwrite(str(root / "big" / f"{i:03d}.png"), np.roll(base, i * 97, axis=i % 2))
        for i in range(24):
            cv2.imwrite(str(root / "good" / f"{i:03d}.png"), cv2.resize(np.roll(base, i * 300, axis=0), (64, 64)))
        (root / "tiny.yaml").write_text(yaml.safe_dump(TINY))
        config = args.preset or str(root / "tiny.yaml")
        subprocess.run([str(exe), "train", str(root / "good"), "--config", config, "--out",
                        str(root / "m"), "--no-track"], check=True, capture_output=True)
        for budget in args.budgets:
            meta_path = root / "m" / "detector.json"
            meta = json.loads(meta_path.read_text())
            meta["config"]["scoring"]["batch_megapixels"] = budget
            meta_path.write_text(json.dumps(meta))
            out = root / f"out-{budget:g}"
            t0 = time.perf_counter()
            # a fresh Python process per run: RUSAGE_CHILDREN is the peak of the children waited for
            code = ("import resource,subprocess,sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
                    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
            peak_kib = int(subprocess.run([sys.executable, "-c", code, str(exe), "score", str(root / "m"),
                                           str(root / "big"), "--out", str(out), "--batch-size", "32"],
                                          check=True, capture_output=True, text=True, env=os.environ).stdout)
            print(json.dumps({"model": args.preset or "tiny", "n_images": args.n,
                              "megapixels_each": args.side**2 / 1e6, "batch_megapixels": budget,
                              "peak_rss_gib": round(peak_kib / 2**20, 2),
                              "wall_s": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
