"""Shared fixtures: a tiny synthetic data set (32 px) and a tiny trained detector."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

TINY = {
    "data": {"image_size": 32, "channels": 1, "holdout_fraction": 0.25},
    "model": {"widths": [8, 16], "latent_channels": 4},
    "train": {"epochs": 2, "batch_size": 8, "patience": 2, "seed": 0},
    "scoring": {"batch_size": 8, "smoothing_sigma": 1.0},
}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MVTec-layout category with 32 px images: 24 train, 4 test good, 2 per defect."""
    from anomaly_ae.data.synthetic import generate

    out = tmp_path_factory.mktemp("data")
    return generate(out, n_train=24, n_test_good=4, n_test_defect=2, size=32, seed=1)


@pytest.fixture(scope="session")
def tiny_config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """YAML file of the tiny config."""
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.fixture(scope="session")
def tiny_config():  # noqa: ANN201
    """The tiny config as a DetectorConfig."""
    from anomaly_ae.config import DetectorConfig

    return DetectorConfig.model_validate(TINY)


@pytest.fixture(scope="session")
def tiny_detector(tiny_config, tiny_data: Path):  # noqa: ANN001, ANN201
    """A detector trained for 2 epochs on the tiny data set."""
    from anomaly_ae.detector import Detector

    return Detector(tiny_config).fit(tiny_data / "train" / "good")


@pytest.fixture()
def run_unprivileged():
    """Run a command in a child that file permissions apply to, even when the tests run as root.

    Root reads and writes every file; there the child runs without the capabilities that allow it
    (``setpriv`` drops ``dac_override`` and ``dac_read_search``). ``run(args)`` returns the
    ``CompletedProcess``; the test skips where this cannot be arranged.
    """
    import shutil
    import subprocess
    import sys

    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: every file is readable")
        drop = "-dac_override,-dac_read_search"
        prefix = ["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}"]
        probe = subprocess.run([*prefix, sys.executable, "-c", "pass"], capture_output=True, text=True, timeout=60)
        if probe.returncode != 0:
            pytest.skip(f"cannot drop the right to read every file here: {probe.stderr.strip()[-200:]}")

    def run(args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=300)

    return run
