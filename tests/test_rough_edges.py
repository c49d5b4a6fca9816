"""What a new user hit on a first try (issue: honest thresholds, report, rough edges), one test per case."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from anomaly_ae.cli.main import app

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


def _help(*command: str) -> str:
    res = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "400"})
    assert res.exit_code == 0, res.output
    return " ".join(res.output.split())


def test_help_keeps_the_extra_in_square_brackets():
    assert "pip install 'anomaly-ae[ray]'" in _help("score")  # rich read [ray] as markup and dropped it


def test_register_default_says_what_each_command_does():
    train, calibrate = _help("train"), _help("calibrate")
    assert "[default: (not registered)]" in train and "calibrate" not in train.split("--register", 1)[1][:200]
    assert "[default: (the model's registered name, if any)]" in calibrate


@pytest.mark.parametrize(("typed", "ours"), [("predict", "score"), ("test", "evaluate"), ("fit", "train")])
def test_other_tools_command_names_get_a_hint(typed, ours):
    res = runner.invoke(app, [typed, "x"])
    assert res.exit_code == 2
    assert f"anomaly-ae calls it '{ours}': anomaly-ae {ours} --help" in " ".join(res.output.replace("│", "").split())


def test_choice_errors_have_no_pydantic_prefix(tmp_path):
    res = runner.invoke(app, ["train", str(tmp_path), "--model", "transformer"])
    text = " ".join(res.output.replace("│", "").split())
    assert res.exit_code == 2 and "'transformer' is not one of 'conv'" in text and "Value error" not in text
    res = runner.invoke(app, ["score", "run", "in", "--format", "xls"])
    assert "'xls' is not one of 'csv', 'parquet'" in " ".join(res.output.replace("│", "").split())
    assert "Value error" not in res.output


def test_float_and_integer_arrays_are_checked_and_converted(tiny_detector, tiny_data):
    from anomaly_ae.data.images import list_images, read_image

    gray = np.stack([read_image(p, 1) for p in list_images(tiny_data / "test" / "good")])  # uint8 (4, 32, 32, 1)
    colour = np.repeat(gray, 3, axis=-1)
    expected = tiny_detector.score(gray)
    # float64 colour on a gray model: OpenCV refused float64 with a raw depth error
    assert tiny_detector.score(colour.astype(np.float64) / 255) == pytest.approx(expected, rel=1e-3)
    assert tiny_detector.score(gray.astype(np.int64)) == pytest.approx(expected, rel=1e-6)  # 0-255 ints
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\], these span \d+ to \d+; pass uint8 0-255, or "
                                         "divide by 255"):
        tiny_detector.score(colour.astype(np.float64))  # silently gave scores ~34,000
    with pytest.raises(ValueError, match="NaN or inf"):
        tiny_detector.score(np.full((32, 32), np.nan))
    with pytest.raises(ValueError, match="must lie in 0-255"):
        tiny_detector.score(gray.astype(np.int32) * 300)


def test_a_file_that_never_existed_is_not_said_to_have_vanished(tiny_detector, tmp_path):
    from anomaly_ae.data.images import ImageReadError

    with pytest.raises(ImageReadError) as err:
        tiny_detector.score(str(tmp_path / "nope" / "missing.png"))
    assert str(err.value) == f"{tmp_path / 'nope' / 'missing.png'}: no such file"


class _Bars:
    """A Progress stand-in that records each bar's total and what it was advanced to."""

    verbose = 1

    def __init__(self) -> None:
        self.bars: list[tuple[int | None, list[int]]] = []
        self.lines: list[str] = []

    @contextlib.contextmanager
    def bar(self, label, total, unit="img", loss=False):  # noqa: ANN001, ANN201
        from anomaly_ae.progress import Bar

        bar = Bar(None, None, total)
        yield bar
        self.bars.append((total, bar.done))

    def line(self, message: str) -> None:
        self.lines.append(message)

    def warning(self, message: str, label: str = "warning:") -> None:
        self.lines.append(message)


def test_the_training_bar_counts_images_not_batches_times_the_batch_size():
    from anomaly_ae.training.callbacks import EpochProgress

    bars = _Bars()
    cb = EpochProgress(bars, epochs=1, batch_size=16, unit="img", samples=26)  # 26 images: batches of 16 and 10
    cb.params = {"steps": 2}
    cb.on_epoch_begin(0)
    for b in range(2):
        cb.on_train_batch_end(b, {"loss": 0.1})
    cb.on_epoch_end(0, {"loss": 0.1})
    assert bars.bars == [(26, 26)]  # it read 0/32 and ended at 32


def test_ctrl_c_after_one_epoch_says_epoch_1(monkeypatch, tmp_path, capsys):
    import typer

    import anomaly_ae.training.checkpoint as checkpoint
    from anomaly_ae.cli.train import _interrupted

    (tmp_path / "checkpoint").mkdir()
    monkeypatch.setattr(checkpoint, "latest_checkpoint", lambda folder: type("C", (), {"epoch": 1})())
    with pytest.raises(typer.Exit):
        _interrupted(tmp_path)
    err = capsys.readouterr().err
    assert f"epoch 1 is kept in {tmp_path / 'checkpoint'}" in " ".join(err.split()) and "1-1" not in err


def test_the_python_api_prints_no_retracing_warnings(tmp_path):
    """The README's Python block: fit, save, load, score_folder, score_files and evaluate in one process."""
    script = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from anomaly_ae import Detector, DetectorConfig, evaluate, score_files, score_folder
from anomaly_ae.data.synthetic import generate
from tests.conftest import TINY
tmp = Path({str(tmp_path)!r})
data = generate(tmp / "d", n_train=12, n_test_good=2, n_test_defect=1, size=32, seed=1)
det = Detector(DetectorConfig.model_validate(TINY)).fit(data / "train" / "good")
det.score(data / "test")
det.save(tmp / "run")
Detector.load(tmp / "run").score(data / "test")
score_folder(tmp / "run", data / "test", tmp / "s")
score_files(tmp / "run", [next((data / "test" / "good").iterdir())])
evaluate(tmp / "run", data, tmp / "e")
print("done")
"""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env,
                         cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.strip() == "done", res.stderr[-2000:]
    assert "retracing" not in res.stderr  # 2 "triggered tf.function retracing" warnings before


def test_json_and_csv_and_python_spell_normalized_one_way():
    from anomaly_ae.outputs.scores_csv import CSV_COLUMNS

    assert "normalized_score" in CSV_COLUMNS
    for path in [*(REPO / "anomaly_ae").rglob("*.py"), REPO / "README.md"]:
        assert "normalis" not in path.read_text(encoding="utf-8").lower(), path
    assert json.loads('{"normalized_score": 1}')  # the --json key (asserted in test_cli) is the CSV column


@pytest.mark.parametrize(("width", "k"), [(128, 3), (360, 1), (1000, 1)])
def test_the_heatmap_legend_is_sized_to_the_image(width, k):
    from anomaly_ae.outputs.overlays import LEGEND_MIN_WIDTH, Caption, heatmap_overlay, with_legend

    image = np.full((100, width, 1), 120, np.uint8)
    overlay = heatmap_overlay(image, np.zeros((100, width), np.float32), (0.1, 0.5))
    out = with_legend(overlay, (0.1, 0.5), 0.5, Caption(score=0.2, threshold=0.3, anomalous=False))
    assert out.shape[1] == width * k >= LEGEND_MIN_WIDTH and out.shape[0] > 100 * k
    np.testing.assert_array_equal(out[: 100 * k : k, ::k], overlay)  # enlarged by repetition, nothing else
    words = out[100 * k :][int(out.shape[1] > 720) :, :]
    dark = (words.max(axis=2) < 100).any(axis=0)  # columns with text or bar marks
    third = out.shape[1] // 3
    assert dark[:third].any() and dark[-third:].any()  # "typical good" at the left, the defect words at the right


def test_a_picture_is_bounded_by_both_sides_and_an_unencodable_one_is_one_files_error(tmp_path):
    import errno

    from anomaly_ae.io.files import write_jpeg_atomic
    from anomaly_ae.outputs.overlays import LEGEND_MIN_WIDTH, MAX_PICTURE_SIDE, Caption, fit_picture, with_legend

    tall = np.zeros((4096, 4, 3), np.uint8)  # was enlarged 90x above its legend: 368,640 px, past JPEG's limit
    out = with_legend(tall, (0.1, 0.5), 0.5, Caption(score=0.2, threshold=0.3, anomalous=False))
    assert out.shape[1] == LEGEND_MIN_WIDTH and 4096 * 2 <= out.shape[0] <= MAX_PICTURE_SIDE
    assert (out[:8192, 8:] == 255).all()  # enlarged 2x (8 px wide), white beside it above the strip
    huge = np.zeros((40_000, 10, 3), np.uint8)
    assert fit_picture(huge).shape == (MAX_PICTURE_SIDE, 4, 3)  # shrunk, aspect kept
    assert fit_picture(tall) is tall
    target = tmp_path / "x.jpg"
    with pytest.raises(OSError) as caught:
        write_jpeg_atomic(target, np.zeros((70_000, 2, 3), np.uint8))  # past JPEG's 65,535 px a side
    assert caught.value.errno == errno.EINVAL and "70000" in str(caught.value)
    assert list(tmp_path.iterdir()) == []
