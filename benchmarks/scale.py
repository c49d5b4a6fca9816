"""Scaling out on this machine: ``score`` in one process vs ``--engine ray``, and training memory vs set size.

    python benchmarks/scale.py [--json] [--size 256] [--n-small 200] [--n-large 1000] [--actors 1 2]
        [--train-small 500] [--train-large 5000]

* **Scoring**: ``anomaly-ae score`` of ``n_small`` and ``n_large`` generated PNGs (``--size`` px, the
  textures of ``benchmarks/speed.py``) with a small model, once per engine: one process, then
  ``--engine ray`` with a local Ray (started and stopped by the command) and 1, 2, ... actors. Each
  is a fresh process; ``img_per_s`` is the steady state ``(n_large - n_small) / (t_large - t_small)``
  (start-up, model loading and Ray's start cancel), ``overhead_s`` what the small run cost beyond it.
* **Training memory**: peak RSS (``ru_maxrss`` of the child) of ``Detector.fit`` for 1 epoch on
  ``train_small`` and ``train_large`` images of ``--size`` px with ``data.cache_mb: 0`` (every image
  streamed from disk by the dataset); ``rss_ratio`` = large / small, flat when training streams.

Appends the run to ``benchmarks/results/scale.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import machine, make_images  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SMALL_MODEL = {"model": {"widths": [8, 16], "latent_channels": 4}, "train": {"epochs": 1, "batch_size": 16},
               "scoring": {"batch_size": 16}}


def run(cmd: list[str], env: dict | None = None) -> tuple[float, int]:
    """A command in its own process: (wall seconds, peak RSS in MiB)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}): {proc.stderr.read().decode()[-2000:]}")
    return wall, int(usage.ru_maxrss // 1024)


def bench_scoring(tmp: Path, size: int, n_small: int, n_large: int, actors: list[int]) -> dict:
    cli = str(Path(sys.executable).parent / "anomaly-ae")
    cfg = tmp / "small.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"image_size": size, "channels": 1}, **SMALL_MODEL}))
    make_images(tmp / "train", 40, size, 1)
    run([cli, "train", str(tmp / "train"), "-c", str(cfg), "--out", str(tmp / "model"), "--no-track", "-q"])
    sets = {}
    for n in (n_small, n_large):
        make_images(tmp / f"in{n}", n, size, 1, seed=n)
        sets[n] = tmp / f"in{n}"
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    engines = [("local", [])] + [(f"ray x{a}", ["--engine", "ray", "--actors", str(a)]) for a in actors]
    out = {}
    for name, extra in engines:
        times = {}
        for n, folder in sets.items():
            target = tmp / f"out-{name.replace(' ', '')}-{n}"
            times[n], _ = run([cli, "score", str(tmp / "model"), str(folder), "--out", str(target), "-q",
                               "--batch-size", "16", *extra], env)
        rate = (n_large - n_small) / max(times[n_large] - times[n_small], 1e-9)
        out[name] = {"img_per_s": round(rate, 1), "wall_small_s": round(times[n_small], 1),
                     "wall_large_s": round(times[n_large], 1),
                     "overhead_s": round(times[n_small] - n_small / rate, 1)}
        print(f"score {name:<8} {rate:7.1f} img/s steady   ({n_small}: {times[n_small]:.1f} s, "
              f"{n_large}: {times[n_large]:.1f} s)", flush=True)
    return out


FIT = """
import resource, sys, yaml
from anomaly_ae import Detector, DetectorConfig
cfg = DetectorConfig.model_validate(yaml.safe_load(open(sys.argv[2])))
det = Detector(cfg).fit(sys.argv[1])
print(det.train_info_["n_train"], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def bench_training_memory(tmp: Path, size: int, small: int, large: int) -> dict:
    cfg = tmp / "stream.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"image_size": size, "channels": 1, "cache_mb": 0}, **SMALL_MODEL}))
    out = {}
    for n in (small, large):
        folder = tmp / f"train{n}"
        make_images(folder, n, size, 1, seed=7 * n)
        wall, rss = run([sys.executable, "-c", FIT, str(folder), str(cfg)])
        out[n] = {"peak_rss_mib": rss, "wall_s": round(wall, 1)}
        print(f"train {n:>5} images, cache_mb 0: peak RSS {rss} MiB ({wall:.0f} s)", flush=True)
    return {"images": out, "rss_ratio": round(out[large]["peak_rss_mib"] / out[small]["peak_rss_mib"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--n-small", type=int, default=200)
    parser.add_argument("--n-large", type=int, default=1000)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--train-small", type=int, default=500)
    parser.add_argument("--train-large", type=int, default=5000)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--skip-scoring", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="anomaly-ae-scale-") as tmp:
        result = {}
        if not args.skip_scoring:
            result["scoring"] = bench_scoring(Path(tmp), args.size, args.n_small, args.n_large, args.actors)
        if not args.skip_training:
            result["training_memory"] = bench_training_memory(Path(tmp), args.size, args.train_small,
                                                              args.train_large)
    record = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "args": vars(args), "machine": machine(),
              **result}
    results = REPO / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    with open(results / "scale.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    if args.json:
        print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
