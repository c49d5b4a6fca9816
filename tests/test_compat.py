"""Model directories written by older anomaly-ae still load and score the same.

``tests/fixtures/model_v1_{conv,vae}`` were saved by the code before the package redesign (commit
de28189, ``tests/fixtures/make_model_v1.py``); ``model_v1_expected.json`` holds what that code
computed on ``model_v1_probe.npy``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from anomaly_ae import Detector

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "model_v1_expected.json").read_text())


@pytest.mark.parametrize("name", ["conv", "vae"])
def test_old_model_dir_loads_and_scores_the_same(name: str, tmp_path: Path) -> None:
    run = tmp_path / name
    shutil.copytree(FIXTURES / f"model_v1_{name}", run)  # loading must not need to write
    det = Detector.load(run)
    probe = np.load(FIXTURES / "model_v1_probe.npy")
    want = EXPECTED[name]
    np.testing.assert_allclose(det.score(probe), want["scores"], rtol=1e-5)
    assert det.predict(probe).tolist() == want["predict"]
    assert det.threshold_ == pytest.approx(want["threshold"], rel=1e-12)
    np.testing.assert_allclose(det.normalize(det.score(probe)), want["normalized"], atol=1e-6)
    assert det.config_.model.name == name
