"""Resumable scoring: a run killed with SIGKILL and rerun gives exactly one row per input, equal scores."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from anomaly_ae.cli.main import app
from anomaly_ae.outputs.scores_csv import read_scores

runner = CliRunner()
N_IMAGES = 300


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def big_inputs(tmp_path_factory) -> Path:
    """300 images of 384 px (decoding and heatmaps at that size make a run last a few seconds)."""
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.random((384, 384)).astype(np.float32), (0, 0), 3)
    base = (base - base.min()) / (base.max() - base.min())
    for i in range(N_IMAGES):
        img = np.roll(base, i * 7, axis=1) * 200 + rng.normal(0, 4, base.shape)
        sub = root / f"line{i % 3}"
        sub.mkdir(exist_ok=True)
        cv2.imwrite(str(sub / f"{i:04d}.png"), np.clip(img, 0, 255).astype(np.uint8))
    return root


@pytest.fixture(scope="module")
def run_dir(tiny_detector, tmp_path_factory) -> Path:
    return tiny_detector.save(tmp_path_factory.mktemp("model") / "run")


def test_sigkill_mid_run_then_rerun_scores_each_input_once_and_equally(run_dir, big_inputs, tmp_path):
    full = tmp_path / "full"
    res = runner.invoke(app, ["score", str(run_dir), str(big_inputs), "--out", str(full), "--batch-size", "4"])
    assert res.exit_code == 0, res.output
    expected = {r["path"]: r["score"] for r in _rows(full / "scores.csv")}
    assert len(expected) == N_IMAGES

    out = tmp_path / "killed"
    exe = Path(sys.executable).parent / "anomaly-ae"
    proc = subprocess.Popen([str(exe), "score", str(run_dir), str(big_inputs), "--out", str(out), "--batch-size", "4"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = out / "scores.csv.partial"
    deadline = time.monotonic() + 120
    n_before = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.is_file() and (n_before := len(partial.read_text().splitlines()) - 1) >= 40:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert 40 <= n_before < N_IMAGES and not (out / "scores.csv").exists()

    kept = [r[0] for r in read_scores(partial)]
    time.sleep(0.05)
    t_rerun = time.time()
    res = runner.invoke(app, ["score", str(run_dir), str(big_inputs), "--out", str(out), "--batch-size", "4"])
    assert res.exit_code == 0, res.output
    assert f"resuming: {len(kept)} already scored" in res.stderr
    for p in kept:  # what the killed run had finished is not scored again
        assert (out / "heatmaps" / f"{p}.jpg").stat().st_mtime < t_rerun
    rows = _rows(out / "scores.csv")
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)) == N_IMAGES  # exactly one row per input
    got = {r["path"]: r["score"] for r in rows}
    for p, s in expected.items():
        assert float(got[p]) == pytest.approx(float(s), rel=1e-6, abs=1e-9), p
    for r in rows:
        assert (out / "heatmaps" / f"{r['path']}.jpg").is_file()
    assert not partial.exists()

    res = runner.invoke(app, ["score", str(run_dir), str(big_inputs), "--out", str(out)])  # nothing left to do
    assert res.exit_code == 0 and f"{N_IMAGES} already scored" in res.output and "0 to go" in res.output
    assert len(_rows(out / "scores.csv")) == N_IMAGES


def test_failed_files_are_retried_and_models_are_never_mixed(run_dir, tiny_data, tiny_config, tmp_path):
    from anomaly_ae.detector import Detector

    inp = tmp_path / "in"
    inp.mkdir()
    for p in sorted((tiny_data / "test" / "good").glob("*.png")):
        (inp / p.name).write_bytes(p.read_bytes())
    (inp / "later.png").write_bytes(b"")  # not written yet by the camera
    out = tmp_path / "out"
    assert runner.invoke(app, ["score", str(run_dir), str(inp), "--out", str(out)]).exit_code == 3
    (inp / "later.png").write_bytes((tiny_data / "test" / "good" / "000.png").read_bytes())
    res = runner.invoke(app, ["score", str(run_dir), str(inp), "--out", str(out)])
    assert res.exit_code == 0 and "4 already scored" in res.output and "1 to go" in res.output
    rows = _rows(out / "scores.csv")
    assert sorted(r["path"] for r in rows) == sorted(p.name for p in inp.iterdir()) and all(r["score"] for r in rows)

    other = Detector(tiny_config.with_overrides({"train.seed": 5, "train.epochs": 1})).fit(
        tiny_data / "train" / "good").save(tmp_path / "other")
    res = runner.invoke(app, ["score", str(other), str(inp), "--out", str(out)])
    assert res.exit_code == 2 and "another model" in " ".join(res.output.split())
    assert len(_rows(out / "scores.csv")) == 5  # untouched
    res = runner.invoke(app, ["score", str(run_dir), str(inp), "--out", str(out), "--no-resume"])
    assert res.exit_code == 2 and "--overwrite" in res.output
    res = runner.invoke(app, ["score", str(other), str(inp), "--out", str(out), "--overwrite"])
    assert res.exit_code == 0 and "resuming" not in res.output
    assert len(_rows(out / "scores.csv")) == 5
