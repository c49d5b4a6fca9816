"""What the Python API accepts as images, ``repr(Detector)`` and ``anomaly-ae --version`` (issue 14, first part)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from anomaly_ae.detector import Detector


def _paths(tiny_data: Path) -> list[Path]:
    return sorted((tiny_data / "test" / "good").glob("*.png"))[:3]


def test_a_list_of_file_paths_scores_like_the_files_one_by_one(tiny_detector, tiny_data):
    paths = _paths(tiny_data)
    as_list = tiny_detector.score([str(p) for p in paths])
    one_by_one = np.concatenate([tiny_detector.score(p) for p in paths])
    np.testing.assert_array_equal(as_list, one_by_one)
    np.testing.assert_array_equal(tiny_detector.score(tuple(paths)), one_by_one)  # Path objects, a tuple
    # paths and arrays mixed, as read by the same reader
    from anomaly_ae.data.images import read_image

    mixed = tiny_detector.score([paths[0], read_image(paths[1], 1)])
    np.testing.assert_allclose(mixed, one_by_one[:2], rtol=1e-6)


@pytest.mark.parametrize("bad", [42, {"a": 1}, [1, 2], [np.zeros((2, 2, 2, 2, 1))], np.array(["a.png"])])
def test_anything_else_is_a_type_error_naming_what_is_accepted(tiny_detector, bad):
    with pytest.raises(TypeError, match="accepted: a folder or file path, a list of file paths"):
        tiny_detector.score(bad)


def test_fit_takes_a_list_of_paths(tiny_config, tiny_data):
    paths = sorted((tiny_data / "train" / "good").glob("*.png"))
    det = Detector(tiny_config.with_overrides({"train.epochs": 1})).fit([str(p) for p in paths])
    assert det.train_info_["n_train"] + det.train_info_["n_val"] == len(paths)


def test_repr_says_architecture_size_state_and_threshold(tiny_detector, tiny_config):
    assert repr(Detector(tiny_config)) == "Detector(conv, 32x32x1, not fitted)"
    text = repr(tiny_detector)
    assert text.startswith("Detector(conv, 32x32x1, fitted, threshold=") and text.endswith("map=l2)")
    assert f"{tiny_detector.threshold_:.6g}" in text


def test_version_flag():
    from anomaly_ae import __version__

    out = subprocess.run([sys.executable, "-m", "anomaly_ae", "--version"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"anomaly-ae {__version__}"


@pytest.mark.parametrize("text,line", [
    ("model: {name: transformer}",
     "config: model.name: 'transformer' is not one of conv, denoising, vae, dense, sparse, contractive, linear"),
    ("model: {loss: huber}", "config: model.loss: 'huber' is not one of mse, l1, bce, ssim, ssim_l1, mse_ssim"),
    ("train: {epochs: 0}", "config: train.epochs: Input should be greater than or equal to 1 (got 0)"),
    ("data: {foo: 1}", "config: data.foo: unknown key"),
])
def test_config_errors_are_one_plain_line_each(tmp_path, tiny_data, text, line):
    from typer.testing import CliRunner

    from anomaly_ae.cli.main import app

    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    res = CliRunner().invoke(app, ["train", str(tiny_data / "train" / "good"), "--config", str(cfg), "--no-track",
                                   "--out", str(tmp_path / "run")])
    assert res.exit_code == 2
    assert line in " ".join(res.output.split())
    assert "pydantic" not in res.output and "type=" not in res.output


def test_a_batch_decoded_on_threads_is_the_batch_decoded_here(tmp_path):
    """decode_batch with a pool: the same files, images, errors, stats and end, pixel budget included."""
    from concurrent.futures import ThreadPoolExecutor

    import cv2
    import numpy as np

    from anomaly_ae.data.loading import decode_batch

    rng = np.random.default_rng(0)
    paths = []
    for i in range(12):
        p = tmp_path / f"{i:02d}.png"
        cv2.imwrite(str(p), rng.integers(0, 255, (20 + i, 30, 3), dtype=np.uint8))
        paths.append(p)
    paths[3].write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    paths[5].write_bytes(b"")
    paths.append(tmp_path / "gone.png")
    budget = 4 * 26 * 30  # ends the first batch by pixels (after 7 files), before max_images (8)
    with ThreadPoolExecutor(3) as pool:
        for start in (0, 4, 9):
            here = decode_batch(paths, start, 3, None, 8, budget)
            threads = decode_batch(paths, start, 3, None, 8, budget, pool)
            assert (threads.end, list(threads.paths), threads.errors, threads.stats) == \
                (here.end, list(here.paths), here.errors, here.stats)
            assert list(threads.images) == list(here.images)
            assert all(np.array_equal(threads.images[k], here.images[k]) for k in here.images)
    first = decode_batch(paths, 0, 3, None, 8, budget)
    assert first.end == 7 and set(first.errors) == {3, 5}  # cut by pixels; broken and empty files have reasons
