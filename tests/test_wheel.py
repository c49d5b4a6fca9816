"""Installed like any Python package: a wheel, in a fresh environment that cannot see the checkout.

The wheel is built (``pip wheel --no-deps``, the project's own build backend, offline) from the files a
source distribution holds (``pyproject.toml``, ``README.md``, ``LICENSE``, ``anomaly_ae/``), so nothing
else in the checkout, and no stale ``build/`` folder, can stand in for a missing package file. It is
installed with ``--no-deps`` into a new virtual environment whose only other path is the test
environment's site-packages, for the dependencies (its ``.pth`` files, the editable install among them,
are not read: ``site`` reads them only in site directories). The commands run from a folder outside
the checkout with ``PYTHONPATH`` unset, as a user who ran ``pip install anomaly-ae`` would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SDIST_FILES = ("pyproject.toml", "README.md", "LICENSE")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in SDIST_FILES:
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "anomaly_ae", src / "anomaly_ae", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(dist), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (found,) = dist.glob("anomaly_ae-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with the wheel installed; returns its ``bin`` folder."""
    root = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(site, "_test_dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                           "-q", str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "bin"


def _run(bin_dir: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", MLFLOW_TRACKING_URI=(cwd / "mlruns").as_uri())
    return subprocess.run([str(bin_dir / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_the_wheel_holds_the_package_and_its_presets_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"anomaly_ae", wheel.name.split("-")[0] + "-" +
                                                 wheel.name.split("-")[1] + ".dist-info"}
    presets = {Path(n).name for n in names if n.startswith("anomaly_ae/presets/")}
    assert presets == {p.name for p in (REPO / "anomaly_ae" / "presets").glob("*.yaml")}
    assert {"default.yaml", "fast.yaml", "draem_gpu.yaml", "vae.yaml"} <= presets
    assert "anomaly_ae/cli/main.py" in names and "anomaly_ae/__main__.py" in names
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "anomaly-ae = anomaly_ae.cli.main:main" in entry


def test_the_installed_wheel_trains_and_scores_from_outside_the_checkout(venv, tiny_data, tmp_path):
    where = _run(venv, ["python", "-c", "import anomaly_ae, json, os, sys; print(anomaly_ae.__file__); "
                        "print(json.dumps([os.path.abspath(p or '.') for p in sys.path]))"], tmp_path)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.splitlines()[0]).is_relative_to(venv.parent), where.stdout  # not the checkout
    assert str(REPO) not in json.loads(where.stdout.splitlines()[1])

    version = _run(venv, ["anomaly-ae", "--version"], tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("anomaly-ae "), version.stderr
    assert "presets" in _run(venv, ["python", "-m", "anomaly_ae", "--help"], tmp_path).stdout

    good = tiny_data / "train" / "good"
    default = _run(venv, ["anomaly-ae", "train", str(good), "--epochs", "1", "--no-track", "--out", "run", "-q"],
                   tmp_path)
    assert default.returncode == 0, default.stderr[-3000:]
    saved = json.loads((tmp_path / "run" / "detector.json").read_text())["config"]
    preset = yaml.safe_load((REPO / "anomaly_ae" / "presets" / "default.yaml").read_text())
    assert saved["model"]["name"] == preset["model"]["name"] == "feature"  # the default preset's model
    assert saved["model"]["backbone"] == preset["model"]["backbone"]  # its pretrained weights, installed
    assert saved["data"]["max_side"] == preset["data"]["max_side"] and saved["train"]["epochs"] == 1

    fast = _run(venv, ["anomaly-ae", "train", str(good), "--config", "fast", "--epochs", "1", "--no-track",
                       "--out", "run-fast", "-q"], tmp_path)
    assert fast.returncode == 0, fast.stderr[-3000:]
    saved = json.loads((tmp_path / "run-fast" / "detector.json").read_text())["config"]
    assert saved["data"]["image_size"] == [128, 128] and saved["model"]["latent_channels"] == 4  # fast.yaml

    scored = _run(venv, ["anomaly-ae", "score", "run", str(tiny_data / "test"), "--out", "out", "-q"], tmp_path)
    assert scored.returncode == 0, scored.stderr[-3000:]
    rows = (tmp_path / "out" / "scores.csv").read_text().splitlines()
    assert len(rows) == 1 + len(list((tiny_data / "test").rglob("*.png")))
