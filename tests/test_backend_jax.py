"""Every model must train under JAX too (the GPU machine has no TensorFlow).

One subprocess trains them all (starting Python with Keras and JAX costs ~3 s a time) and prints one
line per model, ``OK``/``FAIL``; each parametrised test checks its own line, so a failure still names
the model and shows its traceback."""

import os
import subprocess
import sys
import textwrap

import pytest

from anomaly_ae.models import ARCHITECTURES

pytest.importorskip("jax")

CASES = [("conv", "mse"), ("conv", "ssim_l1"), ("learned", "mse_ssim")] + [
    (n, "mse") for n in ARCHITECTURES if n != "conv"]

SCRIPT = textwrap.dedent(
    """
    import sys
    import traceback
    import numpy as np
    import keras
    assert keras.backend.backend() == "jax", keras.backend.backend()
    from anomaly_ae.config import DetectorConfig
    from anomaly_ae.detector import Detector

    def check(name, loss):
        learned = name == "learned"  # DRAEM-style: repair training + discriminator, selected by the self-check
        arch = "conv" if learned else name
        cfg = DetectorConfig().with_overrides({
            "data.image_size": 16, "model.widths": [4, 8], "model.loss": loss, "model.name": arch,
            "model.hidden": [16], "model.latent_dim": 4,
            "model.noise": "gaussian" if arch == "denoising" else None,
            "model.noise_level": 0.1 if arch == "denoising" else 0.0,
            "model.kl_warmup_epochs": 2 if arch == "vae" else 0,
            "train.epochs": 1, "train.batch_size": 4, "data.holdout_fraction": 0.2})
        if learned:
            cfg = cfg.with_overrides({"model.discriminator": [4, 8], "train.synthetic_anomalies": {"probability": 0.5},
                                      "scoring.metric": "learned", "scoring.select": "auto"})
        x = (np.random.default_rng(0).random((10, 16, 16, 1)) * 255).astype(np.uint8)
        det = Detector(cfg).fit(x)
        losses = det.history_["loss"]
        assert len(losses) == 1 and np.isfinite(losses[0]), losses
        s = det.score(x)
        assert s.shape == (10,) and np.isfinite(s).all()
        if learned:
            assert det.train_info_["self_check"]["candidates"] > 1

    for case in sys.argv[1:]:
        name, loss = case.split(":")
        try:
            check(name, loss)
            print("OK", name, loss, flush=True)
        except Exception:
            print("FAIL", name, loss, repr(traceback.format_exc()), flush=True)
    print("TF imported:", "tensorflow" in sys.modules)
    """
)


@pytest.fixture(scope="module")
def jax_run() -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-c", SCRIPT, *(f"{n}:{loss}" for n, loss in CASES)],
                          capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.parametrize("name,loss", CASES)
def test_model_trains_one_epoch_under_jax(jax_run, name, loss):
    assert jax_run.returncode == 0, jax_run.stderr[-3000:]
    lines = [line for line in jax_run.stdout.splitlines() if line.split(" ")[1:3] == [name, loss]]
    assert len(lines) == 1, jax_run.stdout[-3000:]
    assert lines[0] == f"OK {name} {loss}", lines[0]


def test_training_under_jax_never_imports_tensorflow(jax_run):
    assert jax_run.returncode == 0, jax_run.stderr[-3000:]
    assert "TF imported: False" in jax_run.stdout  # seeding must not drag TensorFlow in
