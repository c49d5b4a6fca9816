"""Resumable training: per-epoch checkpoints, --resume, and the NaN guard."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from anomaly_ae.cli.main import app
from anomaly_ae.detector import Detector
from anomaly_ae.training.checkpoint import TrainingCheckpoint, TrainingDiverged, latest_checkpoint

runner = CliRunner()
EPOCHS = 6


class Crash(Exception):
    pass


def _crash_after(epoch: int):
    import keras

    class CrashAfter(keras.callbacks.Callback):  # runs after the checkpoint callback: a crash just after saving
        def on_epoch_end(self, e, logs=None):
            if e + 1 == epoch:
                raise Crash(f"power cut after epoch {epoch}")

    return CrashAfter()


def _nan_at(epoch: int, batch: int):
    import keras

    class PoisonWeights(keras.callbacks.Callback):
        def on_train_batch_begin(self, b, logs=None):
            if (self._epoch, b) == (epoch - 1, batch - 1):
                layer = self.model.decoder.get_layer("reconstruction")
                layer.bias.assign(np.full(layer.bias.shape, np.nan, np.float32))

        def on_epoch_begin(self, e, logs=None):
            self._epoch = e

    return PoisonWeights()


@pytest.fixture(scope="module")
def cfg(tiny_config):
    return tiny_config.with_overrides({"train.epochs": EPOCHS, "train.patience": 50})


def test_resumed_training_ends_where_an_uninterrupted_run_ends(cfg, tiny_data, tmp_path):
    good = tiny_data / "train" / "good"
    full = Detector(cfg).fit(good, callbacks=[TrainingCheckpoint(tmp_path / "full")])
    assert full.train_info_["epochs_run"] == EPOCHS

    with pytest.raises(Crash):
        Detector(cfg).fit(good, callbacks=[TrainingCheckpoint(tmp_path / "ckpt"), _crash_after(3)])
    ckpt = latest_checkpoint(tmp_path / "ckpt")
    assert ckpt is not None and ckpt.epoch == 3 and [p.name for p in (tmp_path / "ckpt").iterdir()] == ["epoch-0003"]
    assert len(ckpt.state["history"]["loss"]) == 3

    resumed = Detector(cfg).fit(good, callbacks=[TrainingCheckpoint(tmp_path / "ckpt", resume=True)])
    assert resumed.train_info_["epochs_run"] == EPOCHS and resumed.train_info_["resumed_at_epoch"] == 3
    h_full, h_res = full.history_, resumed.history_
    assert len(h_res["loss"]) == len(h_full["loss"]) == EPOCHS
    np.testing.assert_allclose(h_res["loss"][:3], h_full["loss"][:3], rtol=1e-5)  # the same first epochs
    # weights, optimizer state and data order restored: the rest of the curve follows the same path
    np.testing.assert_allclose(h_res["val_loss"], h_full["val_loss"], rtol=0.02)
    assert resumed.threshold_ == pytest.approx(full.threshold_, rel=0.05)


def test_nan_loss_stops_with_epoch_and_batch_and_keeps_the_last_good_checkpoint(cfg, tiny_data, tmp_path):
    with pytest.raises(TrainingDiverged, match=r"loss is nan at epoch 3, batch 2.*last good checkpoint \(epoch 2\)"):
        Detector(cfg).fit(tiny_data / "train" / "good", callbacks=[TrainingCheckpoint(tmp_path / "ck"), _nan_at(3, 2)])
    ckpt = latest_checkpoint(tmp_path / "ck")
    assert ckpt.epoch == 2 and np.isfinite(ckpt.state["history"]["loss"]).all()


def test_cli_resume_after_a_crash(tiny_config_file, tiny_data, tmp_path, monkeypatch):
    import anomaly_ae.training.checkpoint as checkpoint

    run = tmp_path / "run"
    original = checkpoint.TrainingCheckpoint.on_epoch_end

    def crash_after_second(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch + 1 == 2:
            raise Crash("killed")

    monkeypatch.setattr(checkpoint.TrainingCheckpoint, "on_epoch_end", crash_after_second)
    args = ["train", str(tiny_data / "train" / "good"), "--config", str(tiny_config_file), "--out", str(run),
            "--epochs", "4", "--no-track"]
    res = runner.invoke(app, args)
    assert isinstance(res.exception, Crash)
    assert not (run / "model.keras").exists() and latest_checkpoint(run / "checkpoint").epoch == 2
    res = runner.invoke(app, ["score", str(run), str(tiny_data / "test"), "--out", str(tmp_path / "s")])
    assert res.exit_code == 2 and "unfinished training" in " ".join(res.output.split())
    monkeypatch.setattr(checkpoint.TrainingCheckpoint, "on_epoch_end", original)

    res = runner.invoke(app, args)  # a fresh train into the interrupted folder is refused
    assert res.exit_code == 2 and "--resume" in res.output
    res = runner.invoke(app, ["train", "--resume", str(run), "--no-track"])
    assert res.exit_code == 0, res.output
    assert "after epoch 2 of 4" in res.output
    det = Detector.load(run)
    assert det.train_info_["resumed_at_epoch"] == 2
    assert det.train_info_["epochs_run"] == len(det.history_["loss"]) >= 3  # (early stopping may end at 3)
    assert not (run / "checkpoint").exists()
    res = runner.invoke(app, ["train", "--resume", str(run), "--no-track"])
    assert res.exit_code == 2 and "complete" in res.output


def test_a_crash_while_writing_a_checkpoint_leaves_the_previous_one_whole(cfg, tiny_data, tmp_path, monkeypatch):
    import anomaly_ae.training.checkpoint as checkpoint

    original = checkpoint.TrainingCheckpoint._write

    def die_half_way(self, folder, epoch):
        if epoch + 1 == 2:
            self.model.save_weights(folder / "model.weights.h5")  # weights written, state not yet
            raise Crash("power cut while writing epoch 2")
        original(self, folder, epoch)

    monkeypatch.setattr(checkpoint.TrainingCheckpoint, "_write", die_half_way)
    ckpt_dir = tmp_path / "ckpt"
    with pytest.raises(Crash):
        Detector(cfg).fit(tiny_data / "train" / "good", callbacks=[TrainingCheckpoint(ckpt_dir)])
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["epoch-0001"]  # no half-written epoch-0002, no temp
    assert latest_checkpoint(ckpt_dir).epoch == 1
    monkeypatch.setattr(checkpoint.TrainingCheckpoint, "_write", original)
    det = Detector(cfg).fit(tiny_data / "train" / "good", callbacks=[TrainingCheckpoint(ckpt_dir, resume=True)])
    assert det.train_info_["resumed_at_epoch"] == 1


def test_checkpoints_delete_only_their_own_epoch_folders(cfg, tiny_data, tmp_path):
    """``TrainingCheckpoint`` on a user's folder: older checkpoints of ours go, the user's epoch-* stay."""
    ckpt_dir = tmp_path / "mine"
    notes = ckpt_dir / "epoch-0001"  # a user's folder with the name of our first epoch
    notes.mkdir(parents=True)
    (notes / "notes.txt").write_text("keep me")
    other = ckpt_dir / "epoch-plans"
    other.mkdir()
    (other / "a.txt").write_text("keep me too")
    with pytest.raises(OSError):  # epoch 1 cannot take the user's folder's place
        Detector(cfg).fit(tiny_data / "train" / "good", callbacks=[TrainingCheckpoint(ckpt_dir)])
    assert (notes / "notes.txt").read_text() == "keep me" and (other / "a.txt").read_text() == "keep me too"
    assert not [p for p in ckpt_dir.iterdir() if p.name.startswith(".")]  # no temporary folder left
    (notes / "notes.txt").unlink()
    notes.rmdir()
    Detector(cfg).fit(tiny_data / "train" / "good", callbacks=[TrainingCheckpoint(ckpt_dir)])
    assert (other / "a.txt").read_text() == "keep me too"
    assert sorted(p.name for p in ckpt_dir.iterdir()) == [f"epoch-{EPOCHS:04d}", "epoch-plans"]
