"""Scoring throughput of a trained model directory against a plain Keras loop that reads the same files.

    python benchmarks/score_speed.py RUN_DIR FOLDER [--repeat 2]

* ``plain``: OpenCV reads and decodes each file, converts it to the model's channels, resizes it to the
  model size (``INTER_AREA``), scales it to [0, 1]; ``model.predict_on_batch`` in batches of
  ``scoring.batch_size``. No maps, no smoothing, no files written: what a user's own loop would do.
* ``ours``: :func:`anomaly_ae.pipelines.score.score_folder` with its defaults: ``scores.csv``, a heatmap
  JPEG (with legend) and a mask PNG per image, streamed, resumable.

Both in one process after a warm-up pass of each (compilation and caches out of the measurement); best of
``--repeat``. Prints one JSON object with both rates (images/s) and ``ratio = ours / plain``, and appends
it to ``benchmarks/results/score_speed.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cv2  # noqa: E402
import numpy as np  # noqa: E402


def plain_loop(model, files: list[Path], size: tuple[int, int], channels: int, batch: int) -> float:  # noqa: ANN001
    """Seconds for read -> decode -> resize -> predict of every file (the model's raw output, discarded)."""
    start = time.perf_counter()
    for i in range(0, len(files), batch):
        ims = []
        for f in files[i : i + batch]:
            im = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR)
            if channels == 3:
                im = cv2.cvtColor(im, cv2.COLOR_BGR2RGB)
            im = cv2.resize(im, (size[1], size[0]), interpolation=cv2.INTER_AREA)
            ims.append(im.reshape(size[0], size[1], channels))
        x = np.stack(ims).astype(np.float32) / 255.0
        if len(x) < batch:  # one compiled shape, as ours
            x = np.concatenate([x, np.zeros((batch - len(x), *x.shape[1:]), np.float32)])
        model.predict_on_batch(x)
    return time.perf_counter() - start


def main() -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "score_speed.jsonl")
    a = ap.parse_args()

    from anomaly_ae.data.images import list_images
    from anomaly_ae.detector import Detector
    from anomaly_ae.io.files import versions
    from anomaly_ae.pipelines.score import score_folder

    det = Detector.load(a.run_dir)
    files = list_images(a.folder)
    size, channels = det.preprocessing_.image_size, det.preprocessing_.channels
    batch = det.config_.scoring.batch_size
    work = Path(tempfile.mkdtemp(prefix="score_speed_"))
    try:
        plain_loop(det.model_, files[:batch], size, channels, batch)  # warm-up: compile
        score_folder(det, a.folder, work / "warm", overwrite=True)
        plain = min(plain_loop(det.model_, files, size, channels, batch) for _ in range(a.repeat))
        ours = []
        for r in range(a.repeat):
            t0 = time.perf_counter()
            score_folder(det, a.folder, work / f"run{r}")
            ours.append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    line = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "run_dir": str(a.run_dir),
            "model": det.config_.model.name, "folder": str(a.folder), "n": len(files),
            "image_size": list(size), "plain_images_s": round(len(files) / plain, 2),
            "ours_images_s": round(len(files) / min(ours), 2), "ratio": round(plain / min(ours), 3),
            "machine": f"{platform.machine()} {os.cpu_count()} cpu", "versions": versions()}
    print(json.dumps(line))
    with open(a.results, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
