"""Every Python block of README.md runs as written, in order, in a folder laid out like the repository.

The folder holds a ``sample_data/metal_plate`` made by the same generator as ``make sample-data``
(smaller: 32 px, fewer images), so the blocks run in the suite's time; the presets come from the package. Each
block runs in its own interpreter, with one test image as ``sys.argv[1]`` (the deploy snippet reads it).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.S)


def test_the_readme_has_the_blocks_this_test_runs():
    blocks = python_blocks()
    assert len(blocks) >= 3
    assert any("Detector(cfg, verbose=1).fit" in b for b in blocks)
    assert any("Engine(" in b and "tracking=" in b and ".fit(" in b for b in blocks)  # a tracked run from Python
    assert any("build_segmenter" in b for b in blocks) and any("onnxruntime" in b for b in blocks)


def test_every_python_block_of_the_readme_runs_as_written(tmp_path):
    from anomaly_ae.data.synthetic import generate

    generate(tmp_path / "sample_data", n_train=24, n_test_good=3, n_test_defect=2, size=32, seed=1)
    image = tmp_path / "sample_data" / "metal_plate" / "test" / "scratch" / "000.png"
    assert image.is_file()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    for i, block in enumerate(python_blocks()):
        script = tmp_path / f"block_{i}.py"
        script.write_text(block)
        proc = subprocess.run([sys.executable, script.name, str(image)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"README block {i} failed:\n{block}\n{proc.stderr[-3000:]}"
        if "Detector(cfg, verbose=1).fit" in block:
            assert "· training the conv autoencoder at 128x128x1" in proc.stderr  # verbose=1: the CLI's lines
            assert re.search(r"^Detector\(conv, 128x128x1, fitted, threshold=[\d.e-]+, map=l2\)$", proc.stdout,
                             re.M), proc.stdout
    assert (tmp_path / "runs" / "plate" / "model.keras").is_file()
    # the Engine block: a tracked training from Python, its run in the store the block named
    run = tmp_path / "runs" / "plate-run"
    assert (run / "model.keras").is_file() and (tmp_path / "runs" / "mlflow.db").is_file()
    from anomaly_ae import Detector

    recorded = Detector.load(run).train_info_["mlflow"]
    assert recorded["run_id"] and recorded["tracking_uri"] == "sqlite:///runs/mlflow.db"
    assert (tmp_path / "runs" / "plate-run-scores" / "scores.csv").is_file()
    assert (tmp_path / "runs" / "plate-eval" / "report.html").is_file()
    assert (tmp_path / "runs" / "deploy" / "deploy.json").is_file()
    assert (tmp_path / "runs" / "encoder" / "encoder.json").is_file()
    # everything the blocks wrote is under runs/, which .gitignore covers (nothing new in a checkout's root)
    assert {p.name for p in tmp_path.iterdir()} <= {"sample_data", "runs"} | {f"block_{i}.py" for i in range(20)}
    assert "runs/" in (REPO / ".gitignore").read_text().split()


@pytest.mark.parametrize("name", ["report.png", "heatmap_legend.jpg"])
def test_the_pictures_the_readme_links_exist(name):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"(docs/images/{name})" in readme
    assert (REPO / "docs" / "images" / name).stat().st_size > 10_000


def test_every_python_dash_m_module_the_docs_name_exists():
    import importlib.util

    named = set()
    for doc in (REPO / "README.md", REPO / "sample_data" / "README.md"):
        named |= set(re.findall(r"python -m ([\w.]+)", doc.read_text(encoding="utf-8")))
    named = {m for m in named if m.split(".")[0] == "anomaly_ae"}
    assert "anomaly_ae.data.synthetic" in named
    assert [m for m in sorted(named) if importlib.util.find_spec(m) is None] == []
