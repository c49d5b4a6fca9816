"""``benchmarks/gpu.sh`` is kept ready for a GPU machine: here it runs every step at toy sizes on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_gpu_script_runs_every_step_at_toy_sizes(tmp_path):
    pytest.importorskip("jax")
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHON": sys.executable, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([str(REPO / "benchmarks" / "gpu.sh"), "--out", str(out), "--tiny"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["machine"]["backend"] == "jax" and result["config"] == "vgg.yaml"
    for precision in ("float32", "mixed_bfloat16"):  # plain fit and ours, at both precisions
        train = result["train"][precision]
        assert train["plain_fit_img_s"] > 0 and train["ours_fit_img_s"] > 0
        assert train["train_ratio"] == pytest.approx(train["ours_fit_img_s"] / train["plain_fit_img_s"], rel=0.01)
        assert len(train["epoch_seconds"]["plain"]) == len(train["epoch_seconds"]["ours"]) == result["epochs"]
    repair = result["repair_train"]  # the repair preset's training rate (issue 26's default)
    assert repair["patches_s"] > 0 and len(repair["epoch_seconds"]) == result["epochs"]
    assert repair["patches_per_epoch"] == repair["n_train"] * 1  # --tiny: one patch per image
    score = result["score"]
    assert score["plain_predict_img_s"] > 0 and score["score_img_s_steady"] > 0
    assert score["score_ratio"] == pytest.approx(score["score_img_s_steady"] / score["plain_predict_img_s"], rel=0.01)
    assert score["input"].startswith("uint8")
    # the DRAEM recipe (issue 27): trained with its step schedule and evaluated on labelled data
    (draem,) = [json.loads(line) for line in out.with_suffix(".draem.jsonl").read_text().splitlines()]
    assert draem["config"] == "draem_gpu.yaml" and draem["backend"] == "jax" and draem["epochs_run"] == 1
    assert draem["resolved_config"]["train"]["lr_milestones"] == [0.8, 0.9]
    assert 0.0 <= draem["image_auroc"] <= 1.0 and 0.0 <= draem["pixel_auroc"] <= 1.0
    # the default, the pretrained-feature model (issue 36), trained under JAX and evaluated
    (default,) = [json.loads(line) for line in out.with_suffix(".default.jsonl").read_text().splitlines()]
    assert default["config"] == "default.yaml" and default["backend"] == "jax"
    assert default["resolved_config"]["model"]["name"] == "feature" and default["epochs_run"] == 1
    assert 0.0 <= default["image_auroc"] <= 1.0 and 0.0 <= default["pixel_auroc"] <= 1.0
