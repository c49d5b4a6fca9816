import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from anomaly_ae.cli.main import app
from anomaly_ae.deploy.encoder import export_encoder
from anomaly_ae.segmentation.train import dice_iou

runner = CliRunner()


def test_dice_iou_hand_values():
    p = np.array([[1, 1, 0, 0]], bool)
    t = np.array([[0, 1, 1, 0]], bool)
    assert dice_iou(p, t) == pytest.approx((2 * 1 / 4, 1 / 3))
    assert dice_iou(p, p) == (1.0, 1.0)
    assert dice_iou(np.zeros(3, bool), np.zeros(3, bool)) == (1.0, 1.0)
    assert dice_iou(p, ~p) == (0.0, 0.0)


def test_segment_train_and_predict(tiny_detector, tiny_data, tmp_path):
    export_encoder(tiny_detector, tmp_path / "enc")
    images = tmp_path / "images"
    for d in ("scratch", "stain", "pit"):  # MVTec layout below images/ and masks/
        (images / d).mkdir(parents=True)
        for p in (tiny_data / "test" / d).iterdir():
            (images / d / p.name).write_bytes(p.read_bytes())
    res = runner.invoke(app, ["segment", "train", str(tmp_path / "enc"), "--images", str(images),
                              "--masks", str(tiny_data / "ground_truth"), "--out", str(tmp_path / "seg"),
                              "--epochs", "2", "--no-track"])
    assert res.exit_code == 0, res.output
    info = json.loads((tmp_path / "seg" / "segmenter.json").read_text())
    assert 0.0 <= info["metrics"]["dice"] <= 1.0 and info["metrics"]["n_train"] + info["metrics"]["n_val"] == 6
    assert "held-out Dice" in res.output
    res = runner.invoke(app, ["segment", "predict", str(tmp_path / "seg"), str(images), "--out", str(tmp_path / "p"),
                              "--masks", str(tiny_data / "ground_truth")])
    assert res.exit_code == 0, res.output
    m = cv2.imread(str(tmp_path / "p" / "masks" / "pit" / "000.png.png"), cv2.IMREAD_GRAYSCALE)
    assert m.shape == (32, 32) and set(np.unique(m)) <= {0, 255}
    assert (tmp_path / "p" / "overlays" / "scratch" / "001.png.png").is_file()
    assert "Dice" in res.output and "over 6 images" in res.output


def test_segment_train_usage_errors(tmp_path):
    res = runner.invoke(app, ["segment", "train", str(tmp_path), "--images", str(tmp_path), "--masks",
                              str(tmp_path), "--out", str(tmp_path / "o"), "--no-track"])
    assert res.exit_code == 2 and "encoder.json" in res.output
