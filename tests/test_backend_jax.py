"""Every model must train under JAX too (the GPU machine has no TensorFlow): one subprocess each."""

import os
import subprocess
import sys
import textwrap

import pytest

from anomaly_ae.models import ARCHITECTURES

pytest.importorskip("jax")

SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras
    assert keras.backend.backend() == "jax", keras.backend.backend()
    from anomaly_ae.config import DetectorConfig
    from anomaly_ae.detector import Detector
    name, loss = sys.argv[1], sys.argv[2]
    learned = name == "learned"  # DRAEM-style: repair training + discriminator, selected by the self-check
    name = "conv" if learned else name
    cfg = DetectorConfig().with_overrides({
        "data.image_size": 16, "model.widths": [4, 8], "model.loss": loss, "model.name": name,
        "model.hidden": [16], "model.latent_dim": 4,
        "model.noise": "gaussian" if name == "denoising" else None,
        "model.noise_level": 0.1 if name == "denoising" else 0.0,
        "model.kl_warmup_epochs": 2 if name == "vae" else 0,
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
        name = "learned"
    print("TF imported:", "tensorflow" in sys.modules)
    print("OK", name, loss)
    """
)


@pytest.mark.parametrize(
    "name,loss", [("conv", "mse"), ("conv", "ssim_l1"), ("learned", "mse_ssim")]
    + [(n, "mse") for n in ARCHITECTURES if n != "conv"]
)
def test_model_trains_one_epoch_under_jax(name, loss):
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", SCRIPT, name, loss], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"OK {name} {loss}" in out.stdout
    assert "TF imported: False" in out.stdout  # seeding must not drag TensorFlow in
