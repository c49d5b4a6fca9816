"""Training speed of a preset as users meet it: quiet, and with one competing CPU-bound process beside it.

    python benchmarks/train_speed.py [--json] [--config default] [--epochs 3] [--data sample bsdata]
        [--full] [--quiet-only] [--override key=value ...]

For each data set (``sample``: ``sample_data/metal_plate/train/good``; ``bsdata``:
``../shared/data/bsdata_pitting/train/good``, skipped when absent; or a folder) the preset trains
``--epochs`` epochs (early stopping off) in a fresh process, twice: alone, then beside one CPU-bound
process (a pure-Python loop, one core) that this script starts and stops. Each run reports

* ``steady_patches_s``: training patches (or images) per second of the epochs after the first (the
  first builds and compiles), median; ``epoch_seconds`` all of them;
* the split of a steady epoch's wall time: ``data_fraction``, the time spent making training batches
  (decoding, patches, synthetic defects) over the epoch's wall time; on the TensorFlow backend Keras
  runs the ``PyDataset`` in a prefetching ``tf.data`` thread, so this overlaps the train step (it
  takes CPU from it, not wall time); the rest is the train step and validation;
* ``cpu_share``: process CPU time over wall time and cores of a steady epoch (what training's one-line
  note about a busy machine reads);
* ``self_check_seconds``, ``calibrate_seconds``, ``startup_seconds`` (imports, reading the images) and
  ``peak_rss_mib`` (``ru_maxrss`` of the process);
* ``projected_seconds``: start-up + first epoch + (configured epochs - 1) x steady epoch + self-check +
  calibration, what a full ``anomaly-ae train`` with this preset takes when it does not stop early.

``contended_ratio`` is the steady rate beside the competitor over the quiet one (a fair share of two
cores is 0.5). ``--full`` also times a whole quiet ``anomaly-ae train DATA --no-track`` with the
configured epochs. One JSON line per run of this script is appended to
``benchmarks/results/train_speed.jsonl`` with the machine, backend, versions and commit.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parent.parent
DATA = {"sample": REPO / "sample_data" / "metal_plate" / "train" / "good",
        "bsdata": REPO.parent / "shared" / "data" / "bsdata_pitting" / "train" / "good"}


def child(spec: dict) -> dict:
    """One timed training in this process (``spec``: folder, preset, epochs, overrides)."""
    t_start = time.perf_counter()
    import keras

    from anomaly_ae.config import DetectorConfig, config_file
    from anomaly_ae.data.dataset import ImageDataset
    from anomaly_ae.detector import Detector
    from anomaly_ae.training.callbacks import usable_cores

    cfg = DetectorConfig.from_yaml(config_file(spec["config"]))
    configured_epochs = cfg.train.epochs
    cfg = cfg.with_overrides({**spec["overrides"], "train.epochs": spec["epochs"], "train.patience": 10_000})
    data_seconds = [0.0]
    get_item = ImageDataset.__getitem__

    def timed_get_item(self, index):  # noqa: ANN001, ANN202
        t = time.perf_counter()
        try:
            return get_item(self, index)
        finally:
            if self.shuffle:  # the training set (validation batches count as validation)
                data_seconds[0] += time.perf_counter() - t

    ImageDataset.__getitem__ = timed_get_item
    stages: dict[str, float] = {"self_check": 0.0, "calibrate": 0.0}
    for name in stages:
        method = getattr(Detector, name)

        def timed(self, *a, _m=method, _n=name, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
            t = time.perf_counter()
            try:
                return _m(self, *a, **k)
            finally:
                stages[_n] += time.perf_counter() - t

        setattr(Detector, name, timed)
    epochs: list[dict] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):  # noqa: ANN001, ANN202
            self.t, self.d, self.c = time.perf_counter(), data_seconds[0], time.process_time()

        def on_epoch_end(self, epoch, logs=None):  # noqa: ANN001, ANN202
            epochs.append({"seconds": time.perf_counter() - self.t, "data": data_seconds[0] - self.d,
                           "cpu": time.process_time() - self.c, "begin": self.t})

    det = Detector(cfg).fit(spec["data"], callbacks=[Timer()])
    total = time.perf_counter() - t_start
    per_epoch = det.train_info_["n_train"] * (cfg.data.patches_per_image if cfg.data.patch_size else 1)
    steady = epochs[1:] or epochs
    steady_s = statistics.median(e["seconds"] for e in steady)
    startup = epochs[0]["begin"] - t_start
    return {
        "n_train": det.train_info_["n_train"], "samples_per_epoch": per_epoch,
        "unit": "patch" if cfg.data.patch_size else "img", "batch_size": cfg.train.batch_size,
        "epoch_seconds": [round(e["seconds"], 2) for e in epochs],
        "steady_patches_s": round(per_epoch / steady_s, 1),
        "data_fraction": round(statistics.median(e["data"] / e["seconds"] for e in steady), 3),
        # what the training's 'note:' line reads: process CPU time / wall time / usable cores
        "cpu_share": round(statistics.median(e["cpu"] / e["seconds"] / usable_cores() for e in steady), 3),
        "startup_seconds": round(startup, 1),
        "self_check_seconds": round(stages["self_check"], 1), "calibrate_seconds": round(stages["calibrate"], 1),
        "wall_seconds": round(total, 1),
        "configured_epochs": configured_epochs,
        "projected_seconds": round(startup + epochs[0]["seconds"] + (configured_epochs - 1) * steady_s
                                   + stages["self_check"] + stages["calibrate"], 1),
        "peak_rss_mib": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024),
    }


def run_child(spec: dict, contended: bool) -> dict:
    """:func:`child` in a fresh process, beside a one-core busy loop when ``contended``."""
    rival = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if contended else None
    try:
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                              text=True, timeout=3600)
    finally:
        if rival is not None:
            rival.kill()
            rival.wait(timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"training failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def full_train_seconds(data: Path, config: str, tmp: Path) -> float:
    """Wall seconds of a whole quiet ``anomaly-ae train DATA --config CONFIG --no-track`` (all its epochs,
    early stopping as configured; ``--override`` does not apply)."""
    exe = Path(sys.executable).parent / "anomaly-ae"
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "anomaly_ae"]
    t = time.perf_counter()
    subprocess.run([*cmd, "train", str(data), "--config", config, "--no-track", "-q", "--out", str(tmp / "run")],
                   check=True, capture_output=True, timeout=3600)
    return round(time.perf_counter() - t, 1)


def main() -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true", help="print the JSON line instead of a summary")
    ap.add_argument("--config", default="default", help="a preset name or a YAML file")
    ap.add_argument("--epochs", type=int, default=3, help="epochs timed per run (the first is set apart)")
    ap.add_argument("--data", nargs="+", default=["sample", "bsdata"], help="sample, bsdata or folders")
    ap.add_argument("--full", action="store_true", help="also time a whole quiet 'anomaly-ae train'")
    ap.add_argument("--quiet-only", action="store_true", help="skip the runs beside a competing process")
    ap.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                    help="config overrides (YAML values), e.g. train.workers=2")
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "train_speed.jsonl")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(json.loads(a.child))))
        return

    import tempfile

    import yaml

    overrides = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in a.override)}
    sets = {}
    for name in a.data:
        folder = DATA.get(name, Path(name))
        if not folder.is_dir():
            print(f"skipped {name}: {folder} not found", file=sys.stderr)
            continue
        spec = {"data": str(folder), "config": a.config, "epochs": a.epochs, "overrides": overrides}
        quiet = run_child(spec, contended=False)
        entry = {"quiet": quiet}
        if not a.quiet_only:
            busy = run_child(spec, contended=True)
            entry["contended"] = busy
            entry["contended_ratio"] = round(busy["steady_patches_s"] / quiet["steady_patches_s"], 3)
        if a.full:
            with tempfile.TemporaryDirectory() as tmp:
                entry["full_train_seconds"] = full_train_seconds(folder, a.config, Path(tmp))
        sets[name] = entry
        print(f"{name}: quiet {quiet['steady_patches_s']} {quiet['unit']}/s, projected "
              f"{quiet['projected_seconds']} s for {quiet['configured_epochs']} epochs"
              + (f"; beside a busy process {entry['contended']['steady_patches_s']} ({entry['contended_ratio']}x)"
                 if "contended" in entry else "")
              + (f"; full train {entry['full_train_seconds']} s" if "full_train_seconds" in entry else ""),
              file=sys.stderr)
    sys.path.insert(0, str(Path(__file__).parent))
    from speed import append_result

    append_result(a.results, {"config": a.config, "epochs": a.epochs, "overrides": overrides, "datasets": sets},
                  a.json)


if __name__ == "__main__":
    main()
