"""What our code costs on top of plain Keras: training, end-to-end scoring, memory, start-up.

    python benchmarks/speed.py [--json] [--config configs/fast.yaml] [--image-size N]
        [--n-train 300] [--epochs 6] [--n-small 500] [--n-large 5000] [--batch-size N]

In one process, same model and batch size:

* ``train_ratio``: training images/s of our path (``Detector.fit`` on a folder: decode + cache,
  ``ImageDataset`` batches, early-stopping and MLflow tracking callbacks) over a plain
  ``model.fit(x, x, validation_data=...)`` on the same images preloaded as float32 (after a
  warm-up run). Median epoch time from epoch 2 on (epoch 1 compiles); both validate on the same
  held-out images.
* ``score_ratio``: end-to-end images/s of ``anomaly-ae score`` (decode -> predict -> maps -> CSV,
  heatmap and mask PNGs), steady state ``(n_large - n_small) / (t_large - t_small)`` so that
  process start-up and model loading cancel, over plain ``model.predict`` on preloaded float32.
  ``score_ratio_csv_only``: the same with ``--heatmaps none --no-masks`` (what the pictures cost).
* ``rss_ratio``: peak RSS of ``anomaly-ae score`` on ``n_large`` over ``n_small`` images
  (``os.wait4``'s ``ru_maxrss`` of each process): flat when scoring streams.
* ``help_seconds``: wall time of ``anomaly-ae --help`` (best of 3).
* ``first_output_seconds``: from starting ``anomaly-ae score`` / ``train`` to its first line on the
  terminal (the slower of the two, best of 3 each).

``--device`` (what ``benchmarks/gpu.sh`` runs on a GPU, under ``KERAS_BACKEND=jax``): training
images/s of plain ``fit`` vs ours in float32 and in ``mixed_bfloat16``, and scoring images/s of plain
``predict`` on preloaded float32 vs ``anomaly-ae score`` end to end (uint8 pixels sent to the device
and scaled there), steady state as above, and the ``repair`` preset's training patches/s
(``repair_train``), all written as one JSON object to ``--out``.

Inputs are generated (brushed-metal textures of ``anomaly_ae.data.synthetic`` at twice the
model size, PNG), so the decode and resize cost is real. Prints one JSON object (``--json``) or a
summary, and appends the run with machine, backend and versions to ``benchmarks/results/speed.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parent.parent


def make_images(folder: Path, n: int, size: int, channels: int, seed: int = 0) -> None:
    """``n`` PNG files of ``size`` px: 64 distinct textures, each written with a different shift and gain."""
    import cv2
    import numpy as np

    from anomaly_ae.data.synthetic import make_image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    bases = [make_image(rng, size, None)[0] for _ in range(min(n, 64))]
    for i in range(n):
        img = np.roll(bases[i % len(bases)], int(rng.integers(0, size)), axis=1)
        img = np.clip(img.astype(np.float32) * rng.uniform(0.95, 1.05), 0, 255).astype(np.uint8)
        if channels == 3:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        cv2.imwrite(str(folder / f"{i:05d}.png"), img)


class EpochTimer:
    """Keras callback factory: wall seconds of every epoch (training + validation)."""

    @staticmethod
    def make():  # noqa: ANN205
        import keras

        class _Timer(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.seconds: list[float] = []

            def on_epoch_begin(self, epoch, logs=None):  # noqa: ANN001, ANN202
                self._t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):  # noqa: ANN001, ANN202
                self.seconds.append(time.perf_counter() - self._t)

        return _Timer()


def steady(seconds: list[float]) -> float:
    """Median epoch time without the first (compiling) epoch."""
    return statistics.median(seconds[1:] if len(seconds) > 1 else seconds)


def bench_train(cfg, good: Path, tmp: Path) -> tuple[dict, object]:  # noqa: ANN001
    """Our training path vs plain ``model.fit``; returns (figures, fitted detector)."""
    import keras

    from anomaly_ae.data.images import Preprocessing, list_images, load_folder, split_holdout
    from anomaly_ae.detector import Detector
    from anomaly_ae.models import build_model
    from anomaly_ae.tracking import MlflowTracker, local_store_uri
    from anomaly_ae.training.callbacks import TrackingCallback
    from anomaly_ae.training.seeding import set_seed

    # plain Keras first: images decoded and preloaded as float32, the same split and batch size.
    # A 2-epoch warm-up run first, so that neither measured run pays the process's one-time costs.
    pre = Preprocessing(cfg.data.image_size, cfg.data.channels)
    x = pre(load_folder(list_images(good), pre).images)
    tr, va = split_holdout(len(x), cfg.data.holdout_fraction, cfg.train.seed)
    for epochs in (2, cfg.train.epochs):
        set_seed(cfg.train.seed)
        model = build_model(cfg)
        model.compile(optimizer=keras.optimizers.Adam(cfg.train.learning_rate))
        timer = EpochTimer.make()
        model.fit(x[tr], x[tr], validation_data=(x[va], x[va]), batch_size=cfg.train.batch_size,
                  epochs=epochs, shuffle=True, verbose=0, callbacks=[timer])
    plain_seconds = timer.seconds
    plain_epoch = steady(plain_seconds)
    del model, x

    timer = EpochTimer.make()
    t0 = time.perf_counter()
    with MlflowTracker(local_store_uri(tmp), "speed", run_name="speed") as tracker:
        det = Detector(cfg).fit(good, callbacks=[timer, TrackingCallback(tracker)])
    fit_wall = time.perf_counter() - t0
    ours_epoch = steady(timer.seconds)
    n_train = det.train_info_["n_train"]
    return {
        "train_images": n_train,
        "train_epochs": len(timer.seconds),
        "plain_fit_img_s": round(n_train / plain_epoch, 1),
        "ours_fit_img_s": round(n_train / ours_epoch, 1),
        "ours_fit_wall_s": round(fit_wall, 1),
        "train_ratio": round(plain_epoch / ours_epoch, 3),
        "train_ratio_fastest_epochs": round(min(plain_seconds[1:]) / min(timer.seconds[1:]), 3),
        "epoch_seconds": {"plain": [round(s, 2) for s in plain_seconds], "ours": [round(s, 2) for s in timer.seconds]},
    }, det


def anomaly_ae_command() -> list[str]:
    """The installed ``anomaly-ae`` beside this Python, or ``python -m anomaly_ae`` from the checkout (the GPU
    machine runs the repository without installing it)."""
    exe = Path(sys.executable).parent / "anomaly-ae"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "anomaly_ae"]


def run_score(run: Path, images: Path, out: Path, batch_size: int, *extra: str) -> tuple[float, int]:
    """``anomaly-ae score`` in its own process: (wall seconds, peak RSS in MiB)."""
    cmd = [*anomaly_ae_command(), "score", str(run), str(images), "--out", str(out),
           "--batch-size", str(batch_size), *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
    return wall, int(usage.ru_maxrss // 1024)


def bench_predict(det, n: int, batch_size: int) -> float:  # noqa: ANN001
    """Plain ``model.predict`` images/s on ``n`` preloaded float32 images at model size (warm, best of 3)."""
    import numpy as np

    h, w = det.preprocessing_.image_size
    x = np.random.default_rng(0).random((n, h, w, det.preprocessing_.channels), dtype=np.float32)
    det.model_.predict(x[: 2 * batch_size], batch_size=batch_size, verbose=0)
    best = float("inf")
    for _ in range(3):  # the fastest of 3: plain Keras at its best, the strict reference
        t0 = time.perf_counter()
        det.model_.predict(x, batch_size=batch_size, verbose=0)
        best = min(best, time.perf_counter() - t0)
    return n / best


def steady_score(run: Path, tmp: Path, n_small: int, n_large: int, bs: int, tag: str, *extra: str) -> dict:
    """``anomaly-ae score`` on the small and the large folder: steady images/s (start-up cancels), walls, RSS."""
    t_small, rss_small = run_score(run, tmp / "small", tmp / f"{tag}-small", bs, *extra)
    t_large, rss_large = run_score(run, tmp / "large", tmp / f"{tag}-large", bs, *extra)
    rate = (n_large - n_small) / (t_large - t_small) if t_large > t_small else float("nan")
    return {"rate": rate, "t_small": t_small, "t_large": t_large, "rss_small": rss_small, "rss_large": rss_large}


def help_seconds() -> float:
    """Best of 3 wall times of ``anomaly-ae --help``."""
    exe = anomaly_ae_command()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([*exe, "--help"], check=True, capture_output=True)
        best = min(best, time.perf_counter() - t0)
    return best


def first_output_seconds(run: Path, tmp: Path) -> float:
    """Seconds from starting ``anomaly-ae score`` and ``train`` to their first line on stderr (the slower of
    the two, best of 3 each); the process is stopped there."""
    exe = anomaly_ae_command()
    commands = [[*exe, "score", str(run), str(tmp / "small"), "--out", str(tmp / "first-out"), "--overwrite"],
                [*exe, "train", str(tmp / "good"), "--out", str(tmp / "first-train"), "--overwrite", "--no-track"]]
    worst = 0.0
    for cmd in commands:
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            line = proc.stderr.readline()
            best = min(best, time.perf_counter() - t0)
            proc.kill()
            proc.wait()
            if not line:
                raise RuntimeError(f"{' '.join(cmd)} printed nothing")
        worst = max(worst, best)
    return worst


def device_train(cfg, good: Path, precision: str) -> tuple[dict, object]:  # noqa: ANN001
    """Training images/s at ``precision``: plain ``model.fit`` on preloaded float32 vs ``Detector.fit`` on
    the folder (no tracking: the device machine has no MLflow), steady epochs."""
    import keras

    from anomaly_ae.data.images import Preprocessing, list_images, load_folder, split_holdout
    from anomaly_ae.detector import Detector
    from anomaly_ae.models import build_model
    from anomaly_ae.training.seeding import set_seed

    cfg = cfg.with_overrides({"train.precision": precision})
    pre = Preprocessing(cfg.data.image_size, cfg.data.channels)
    x = pre(load_folder(list_images(good), pre).images)
    tr, va = split_holdout(len(x), cfg.data.holdout_fraction, cfg.train.seed)
    set_seed(cfg.train.seed)
    model = build_model(cfg)
    model.compile(optimizer=keras.optimizers.Adam(cfg.train.learning_rate))
    timer = EpochTimer.make()
    model.fit(x[tr], x[tr], validation_data=(x[va], x[va]), batch_size=cfg.train.batch_size,
              epochs=cfg.train.epochs, shuffle=True, verbose=0, callbacks=[timer])
    plain, plain_seconds = steady(timer.seconds), timer.seconds
    del model, x
    timer = EpochTimer.make()
    det = Detector(cfg).fit(good, callbacks=[timer])
    ours, n = steady(timer.seconds), det.train_info_["n_train"]
    return {"plain_fit_img_s": round(len(tr) / plain, 1), "ours_fit_img_s": round(n / ours, 1),
            "train_ratio": round((n / ours) / (len(tr) / plain), 3),
            "epoch_seconds": {"plain": [round(t, 3) for t in plain_seconds],
                              "ours": [round(t, 3) for t in timer.seconds]}}, det


def device_repair_train(good: Path, epochs: int, patches_per_image: int | None = None) -> dict:
    """The ``repair`` preset's training patches/s (issue 26's default): ``Detector.fit`` on the folder for ``epochs``
    epochs (early stopping off), steady rate after the first epoch, as ``anomaly-ae train`` would train
    (``patches_per_image``: fewer patches for a toy run)."""
    from anomaly_ae.config import DetectorConfig
    from anomaly_ae.detector import Detector

    cfg = DetectorConfig.from_preset("repair").with_overrides({"train.epochs": epochs, "train.patience": 10_000,
                                                                 "data.patches_per_image": patches_per_image})
    timer = EpochTimer.make()
    det = Detector(cfg).fit(good, callbacks=[timer])
    info = det.train_info_
    return {"patches_s": info["samples_per_second"], "n_train": info["n_train"],
            "patches_per_epoch": info["n_train"] * cfg.data.patches_per_image,
            "image_size": list(det.config_.data.image_size), "batch_size": cfg.train.batch_size,
            "epoch_seconds": [round(t, 3) for t in timer.seconds]}


def device_suite(cfg, tmp: Path, a: argparse.Namespace, log) -> dict:  # noqa: ANN001
    """The ``--device`` figures: training fp32 and bf16, scoring end to end; one JSON-ready dict."""
    size = cfg.data.image_size[0]
    log(f"generating {a.n_train} + {a.n_small} + {a.n_large} images of {size} px in {tmp}")
    make_images(tmp / "good", a.n_train, size, cfg.data.channels, seed=1)
    make_images(tmp / "small", a.n_small, size, cfg.data.channels, seed=2)
    make_images(tmp / "large", a.n_large, size, cfg.data.channels, seed=3)
    result: dict = {"train": {}}
    det = None
    for precision in ("float32", "mixed_bfloat16"):
        log(f"training at {precision}: plain model.fit, then our path")
        result["train"][precision], trained = device_train(cfg, tmp / "good", precision)
        if det is None:  # scoring uses the float32 model
            det = trained
    log("training the repair preset (64 px patches, learned map): patches/s")
    result["repair_train"] = device_repair_train(tmp / "good", cfg.train.epochs, a.repair_patches)
    run = det.save(tmp / "run")
    bs = cfg.scoring.batch_size
    log("scoring: plain model.predict on float32, then anomaly-ae score end to end")
    plain = bench_predict(det, min(a.n_large, 2048), bs)
    sc = steady_score(run, tmp, a.n_small, a.n_large, bs, "out")
    result["score"] = {"plain_predict_img_s": round(plain, 1), "score_img_s_steady": round(sc["rate"], 1),
                       "score_ratio": round(sc["rate"] / plain, 3), "wall_s": {"small": round(sc["t_small"], 1),
                                                                              "large": round(sc["t_large"], 1)},
                       "input": "uint8 pixels, scaled on the device"}
    result.update({"config": a.config.name, "image_size": list(cfg.data.image_size), "channels": cfg.data.channels,
                   "batch_size": {"train": cfg.train.batch_size, "score": bs}, "n_train": a.n_train,
                   "n_small": a.n_small, "n_large": a.n_large, "epochs": cfg.train.epochs})
    return result


def machine() -> dict:
    """Where the figures come from."""
    import keras

    from anomaly_ae.io.files import versions

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = []
    if keras.backend.backend() == "jax":
        import jax

        gpus = [str(d) for d in jax.devices() if d.platform != "cpu"]
    return {"cpu": cpu, "cores": os.cpu_count(), "gpus": gpus, "platform": platform.platform(),
            "backend": keras.backend.backend(), "versions": versions(), "commit": commit()}


def append_result(results: Path, figures: dict, echo: bool = False) -> dict:
    """``figures`` with the date and :func:`machine` appended as one JSON line to ``results`` (printed with
    ``echo``); returns the line."""
    line = {"date": datetime.now(UTC).isoformat(timespec="seconds"), **figures, "machine": machine()}
    results.parent.mkdir(parents=True, exist_ok=True)
    with open(results, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
    if echo:
        print(json.dumps(line))
    return line


def commit() -> str | None:
    """The checkout's commit, ``+`` when it has uncommitted changes outside ``benchmarks/results`` (which each
    run appends to); ``None`` outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":!benchmarks/results"], cwd=REPO,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")


def main() -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "fast.yaml")
    ap.add_argument("--repair-patches", type=int, default=None,
                    help="--device: patches per image of the repair preset's training (default: the preset's)")
    ap.add_argument("--image-size", type=int, default=None, help="override data.image_size (square)")
    ap.add_argument("--n-train", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=6, help="epochs of each training run (the first compiles)")
    ap.add_argument("--n-small", type=int, default=500)
    ap.add_argument("--n-large", type=int, default=5000)
    ap.add_argument("--batch-size", type=int, default=None, help="training and scoring batch (default: config)")
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "speed.jsonl")
    ap.add_argument("--keep", type=Path, default=None, help="keep the generated images and outputs here")
    ap.add_argument("--device", action="store_true", help="the GPU suite (benchmarks/gpu.sh): fp32/bf16 training, "
                    "scoring end to end; the images are generated at the model size")
    ap.add_argument("--out", type=Path, default=None, help="with --device: write the JSON object here")
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                    help="a config value (YAML), e.g. model.widths=[8,16]; repeatable")
    a = ap.parse_args()

    import yaml

    from anomaly_ae.config import DetectorConfig

    cfg = DetectorConfig.from_yaml(a.config).with_overrides({
        "train.epochs": a.epochs, "train.patience": a.epochs + 1,
        "data.image_size": a.image_size, "train.batch_size": a.batch_size, "scoring.batch_size": a.batch_size,
        **{k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in a.override)},
    })
    tmp = Path(a.keep or tempfile.mkdtemp(prefix="anomaly-ae-speed-"))
    size = 2 * cfg.data.image_size[0]
    log = (lambda *m: None) if a.json else (lambda *m: print(*m, file=sys.stderr, flush=True))
    if a.device:
        try:
            result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), **device_suite(cfg, tmp, a, log),
                      "machine": machine()}
        finally:
            if a.keep is None:
                shutil.rmtree(tmp, ignore_errors=True)
        text = json.dumps(result, indent=2)
        if a.out is not None:
            a.out.parent.mkdir(parents=True, exist_ok=True)
            a.out.write_text(text + "\n", encoding="utf-8")
        print(text)
        return
    try:
        log(f"generating {a.n_train} + {a.n_small} + {a.n_large} images of {size} px in {tmp}")
        make_images(tmp / "good", a.n_train, size, cfg.data.channels, seed=1)
        make_images(tmp / "small", a.n_small, size, cfg.data.channels, seed=2)
        make_images(tmp / "large", a.n_large, size, cfg.data.channels, seed=3)

        log("training: plain model.fit, then our path")
        train, det = bench_train(cfg, tmp / "good", tmp)
        run = det.save(tmp / "run")
        bs = cfg.scoring.batch_size
        log("scoring: plain model.predict, then anomaly-ae score on the small and the large folder")
        plain_predict = bench_predict(det, min(a.n_small, 1000), bs)
        sc = steady_score(run, tmp, a.n_small, a.n_large, bs, "out")
        if not sc["rate"] > 0:
            raise SystemExit(f"--n-large {a.n_large} scored no slower than --n-small {a.n_small}: use more images")
        steady_rate, t_small, t_large = sc["rate"], sc["t_small"], sc["t_large"]
        rss_small, rss_large = sc["rss_small"], sc["rss_large"]
        # the same without heatmaps and masks: how much of the gap is writing pictures
        csv_rate = steady_score(run, tmp, a.n_small, a.n_large, bs, "csv", "--heatmaps", "none", "--no-masks")["rate"]
        result = {
            "train_ratio": train["train_ratio"],
            "score_ratio": round(steady_rate / plain_predict, 3),
            "rss_ratio": round(rss_large / rss_small, 3),
            "help_seconds": round(help_seconds(), 3),
            "first_output_seconds": round(first_output_seconds(run, tmp), 3),
            **{k: v for k, v in train.items() if k != "train_ratio"},
            "plain_predict_img_s": round(plain_predict, 1),
            "score_img_s_steady": round(steady_rate, 1),
            "score_ratio_csv_only": round(csv_rate / plain_predict, 3),
            "score_img_s_steady_csv_only": round(csv_rate, 1),
            "score_img_s_end_to_end_large": round(a.n_large / t_large, 1),
            "score_wall_s": {"small": round(t_small, 1), "large": round(t_large, 1)},
            "score_peak_rss_mib": {"small": rss_small, "large": rss_large},
            "n_small": a.n_small, "n_large": a.n_large,
            "config": str(a.config.relative_to(REPO) if a.config.is_relative_to(REPO) else a.config),
            "image_size": list(cfg.data.image_size), "channels": cfg.data.channels, "source_px": size,
            "batch_size": {"train": cfg.train.batch_size, "score": bs},
        }
    finally:
        if a.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=None if a.json else 2))
    row = {"date": datetime.now(UTC).isoformat(timespec="seconds"), **result, "machine": machine()}
    a.results.parent.mkdir(parents=True, exist_ok=True)
    with open(a.results, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
