"""Progress: stage lines, bars (count, images/s, ETA, the current running loss), verbose API, Ctrl-C."""

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from anomaly_ae.progress import Progress

REPO = Path(__file__).resolve().parent.parent


def _terminal() -> tuple[Progress, io.StringIO]:
    buf = io.StringIO()
    return Progress(1, Console(file=buf, force_terminal=True, width=140, color_system=None)), buf


def test_bar_shows_count_rate_eta_and_loss():
    progress, buf = _terminal()
    with progress.bar("epoch 1/3", total=64, loss=True) as bar:
        bar.advance(16, loss=0.25)
        time.sleep(0.05)
        bar.advance(16, loss=0.125)
        bar._rich.refresh()  # draw now, not at the next 1/10 s tick
    text = buf.getvalue()
    assert "epoch 1/3" in text and "32/64" in text
    assert re.search(r"[\d,]+ img/s", text) and "ETA" in text
    assert "loss 0.125" in text


def test_quiet_and_log_files_get_no_bars_but_warnings():
    buf = io.StringIO()
    quiet = Progress(0, Console(file=buf, force_terminal=True, width=100, color_system=None))
    quiet.stage("reading")
    with quiet.bar("scoring", total=3) as bar:
        bar.advance(3)
    quiet.warning("a.png: truncated PNG")
    assert buf.getvalue() == "warning: a.png: truncated PNG\n"
    log = io.StringIO()  # not a terminal: stage lines, no bar drawing
    progress = Progress(1, Console(file=log, width=100, color_system=None))
    progress.stage("reading 3 images")
    with progress.bar("scoring", total=3) as bar:
        bar.advance(3)
    assert log.getvalue() == "· reading 3 images\n" and bar.done == 3


def test_epoch_bar_shows_the_running_loss_of_the_current_epoch():
    """Keras hands each batch the running mean of this epoch's loss: the bar shows that, not last epoch's."""
    from anomaly_ae.training.callbacks import EpochProgress

    shown = []

    class Recording(Progress):
        def bar(self, label, total, unit="img", loss=False):
            outer = super().bar(label, total, unit, loss)

            class Wrap:
                def __enter__(self_inner):
                    self_inner.bar = outer.__enter__()
                    original = self_inner.bar.advance

                    def advance(n=1, loss=None):
                        shown.append((label, n, loss))
                        original(n, loss)

                    self_inner.bar.advance = advance
                    return self_inner.bar

                def __exit__(self_inner, *exc):
                    return outer.__exit__(*exc)

            return Wrap()

    log = io.StringIO()
    cb = EpochProgress(Recording(1, Console(file=log, width=120, color_system=None)), epochs=2, batch_size=8)
    cb.set_params({"steps": 2, "epochs": 2})
    cb.on_epoch_begin(0)
    cb.on_train_batch_end(0, {"loss": 0.9})
    cb.on_train_batch_end(1, {"loss": 0.7})
    cb.on_epoch_end(0, {"loss": 0.7, "val_loss": 0.8})
    cb.on_epoch_begin(1)
    cb.on_train_batch_end(0, {"loss": 0.3})
    assert shown == [("epoch 1/2", 8, 0.9), ("epoch 1/2", 8, 0.7), ("epoch 2/2", 8, 0.3)]
    assert re.search(r"epoch 1/2  loss 0\.7  val_loss 0\.8  \([\d.]+ s, [\d,]+ img/s\)", log.getvalue())


def test_steady_rate_leaves_out_the_first_epoch_and_durations_read_plainly():
    from anomaly_ae.training.callbacks import format_duration, steady_rate

    assert steady_rate(800, [30.0]) is None  # one epoch: nothing steady yet
    assert steady_rate(800, [30.0, 10.0, 8.0, 9.0]) == pytest.approx(800 / 9.0)  # median of epochs 2..
    assert [format_duration(s) for s in (42.4, 200, 3725)] == ["42 s", "3 min 20 s", "1 h 02 min"]


def _epochs(cb, timer, seconds_and_cpu):
    """Drive ``EpochTimer`` + ``EpochProgress`` through epochs of given (wall seconds, process CPU seconds)."""
    import unittest.mock as mock

    clock = {"wall": 0.0, "cpu": 0.0}
    with mock.patch("time.perf_counter", lambda: clock["wall"]), mock.patch("time.process_time",
                                                                             lambda: clock["cpu"]):
        for epoch, (wall, cpu) in enumerate(seconds_and_cpu):
            timer.on_epoch_begin(epoch)
            cb.on_epoch_begin(epoch)
            clock["wall"] += wall
            clock["cpu"] += cpu
            timer.on_epoch_end(epoch)
            cb.on_epoch_end(epoch, {"loss": 0.5})


def test_epoch_lines_give_the_time_left_from_the_second_epoch():
    from anomaly_ae.training.callbacks import EpochProgress, EpochTimer

    log = io.StringIO()
    timer = EpochTimer()
    timer.cores = 2
    cb = EpochProgress(Progress(1, Console(file=log, width=200, color_system=None)), epochs=5, batch_size=8,
                       unit="patch", timer=timer)
    cb.set_params({"steps": 10, "epochs": 5})
    _epochs(cb, timer, [(30.0, 55.0), (10.0, 19.0), (12.0, 23.0)])
    lines = log.getvalue().splitlines()
    assert "left" not in lines[0]  # the first epoch compiles: no estimate from it
    assert lines[1].endswith("patch/s, about 30 s left)")  # 10 s x 3 epochs left
    assert lines[2].endswith("patch/s, about 22 s left)")  # median(10, 12) = 11 s x 2
    assert timer.cpu_share == pytest.approx([55 / 60, 19 / 20, 23 / 24])
    assert "note:" not in log.getvalue()  # the cores were this training's


def test_one_note_when_other_processes_hold_the_cores():
    from anomaly_ae.training.callbacks import EpochProgress, EpochTimer

    log = io.StringIO()
    timer = EpochTimer()
    timer.cores = 2
    cb = EpochProgress(Progress(0, Console(file=log, width=200, color_system=None)), epochs=6, batch_size=8,
                       timer=timer)  # verbose 0 (-q): the note still shows
    cb.set_params({"steps": 10, "epochs": 6})
    # the first epoch is left out even when it is slow, and a short epoch too; then 30% of 2 cores, twice:
    # one note
    _epochs(cb, timer, [(30.0, 10.0), (10.0, 18.0), (2.0, 0.2), (40.0, 24.0), (40.0, 24.0)])
    notes = [line for line in log.getvalue().splitlines() if line.startswith("note:")]
    assert len(notes) == 1, log.getvalue()
    assert "epoch 4 got 30% of this machine's 2 CPU cores" in notes[0] and "other processes" in notes[0]


def test_detector_verbose_shows_the_cli_progress(tiny_config, tiny_data, capsys):
    from anomaly_ae import Detector

    det = Detector(tiny_config, verbose=1).fit(tiny_data / "train" / "good")
    err = capsys.readouterr().err
    info = det.train_info_  # 18 images a 2nd epoch, in train_info_ (detector.json) and train --json
    assert info["sample_unit"] == "image" and 0 < info["samples_per_second"] < 1e6
    for line in ("· reading the training images from", "· training the conv autoencoder at 32x32x1 on 18 images",
                 "epoch 1/2  loss", "epoch 2/2  loss", "· self-check", "· calibrating the thresholds"):
        assert line in err, err
    Detector(tiny_config).fit(tiny_data / "train" / "good")  # verbose=0: silent
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_ctrl_c_after_the_first_checkpoint_says_what_is_kept_and_how_to_continue(tiny_data, tmp_path):
    from tests.conftest import TINY

    cfg = {**TINY, "train": {**TINY["train"], "epochs": 400, "patience": 400}}
    (tmp_path / "long.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # a user's terminal starts the command with Ctrl-C at its default; a suite started in the background of a
    # non-interactive shell (`make test &`, nohup) runs with SIGINT ignored, which the child would inherit
    # (Python then never raises KeyboardInterrupt): the training went on for 120 s after the signal
    proc = subprocess.Popen([sys.executable, "-m", "anomaly_ae", "train", str(tiny_data / "train" / "good"),
                             "--config", str(tmp_path / "long.yaml"), "--out", str(run), "--no-track"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    from anomaly_ae.training.checkpoint import latest_checkpoint

    deadline = time.monotonic() + 180
    while latest_checkpoint(run / "checkpoint") is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "training ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    last = [line for line in err.splitlines() if line.strip()][-1]
    kept = latest_checkpoint(run / "checkpoint").epoch
    assert kept >= 1
    epochs = "epoch 1 is" if kept == 1 else f"epochs 1-{kept} are"  # never "epochs 1-1"
    assert last == (f"interrupted: {epochs} kept in {run / 'checkpoint'}; "
                    f"continue with: anomaly-ae train --resume {run}")
    assert "Traceback" not in err and out == ""


@pytest.mark.parametrize("level", [None, "0"])
def test_the_api_imports_tensorflow_without_its_cpp_lines(level):
    """TensorFlow prints C++ INFO lines while it is imported; the facade keeps them off stderr (unless asked)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_BACKEND")}
    if level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    proc = subprocess.run([sys.executable, "-c", "from anomaly_ae import Detector; import keras; "
                           "print(keras.backend.backend())"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "tensorflow", proc.stderr
    noisy = "oneDNN" in proc.stderr or "absl::InitializeLog" in proc.stderr
    assert noisy == (level == "0"), proc.stderr  # level 0 shows them: they exist, and only the default hides them
