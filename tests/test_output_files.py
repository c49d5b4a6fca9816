"""What the files of ``score`` mean, whatever their encoding: heatmaps (JPEG) show the documented colour
scale of the anomaly map, masks (1-bit PNG) hold exactly the pixels above the pixel threshold, and
``--heatmaps anomalous`` writes heatmaps for exactly the rows scored anomalous (and resumes on that)."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from anomaly_ae.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tiny_detector, tmp_path_factory) -> Path:
    return tiny_detector.save(tmp_path_factory.mktemp("model") / "run")


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "scores.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_heatmaps_and_masks_mean_what_the_maps_say(run, tiny_data, tmp_path):
    from anomaly_ae import Detector
    from anomaly_ae.data.images import read_image
    from anomaly_ae.outputs.overlays import heatmap_overlay

    out = tmp_path / "out"
    res = runner.invoke(app, ["score", str(run), str(tiny_data / "test"), "--out", str(out), "--raw-maps",
                              "--plain-heatmaps", "--heatmaps", "all", "-q"])
    assert res.exit_code == 0, res.output
    post = Detector.load(run).postprocessor_
    hot_pixels = 0
    for row in _rows(out):
        rel = row["path"]
        amap = np.load(out / "maps" / f"{rel}.npy")  # the exact map the pictures were drawn from
        mask = cv2.imread(str(out / "masks" / f"{rel}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.dtype == np.uint8 and mask.shape == amap.shape
        assert np.array_equal(mask, np.where(amap > post.pixel_threshold, 255, 0))  # exactly, pixel for pixel
        heat = cv2.imread(str(out / "heatmaps" / f"{rel}.jpg")).astype(int)
        exact = heatmap_overlay(read_image(tiny_data / "test" / rel, 1), amap, post.heatmap_range).astype(int)
        assert np.abs(heat - exact).mean() < 5  # JPEG, quality 90, colour at full resolution: the same picture
        hot = amap >= post.heatmap_range[1]  # at or above the top of the scale: red, over any gray level
        hot_pixels += int(hot.sum())
        if hot.any():
            assert (heat[hot][:, 2] > heat[hot][:, 0]).mean() > 0.9  # BGR: red above blue
    assert hot_pixels > 0  # the defect images do reach the top of the scale


def test_heatmaps_for_the_anomalous_only_then_for_all(run, tiny_data, tmp_path):
    out = tmp_path / "out"
    args = ["score", str(run), str(tiny_data / "test"), "--out", str(out)]  # not -q: the resume line is progress
    assert runner.invoke(app, [*args, "--heatmaps", "anomalous"]).exit_code == 0
    rows = _rows(out)
    anomalous = {r["path"] for r in rows if r["is_anomaly"] == "true"}
    assert 0 < len(anomalous) < len(rows)
    heat = {p.relative_to(out / "heatmaps").as_posix()[: -len(".jpg")] for p in (out / "heatmaps").rglob("*.jpg")}
    assert heat == anomalous
    assert len(list((out / "masks").rglob("*.png"))) == len(rows)  # masks for every image

    res = runner.invoke(app, [*args, "--heatmaps", "anomalous"])  # nothing missing: everything is kept
    assert res.exit_code == 0 and f"{len(rows)} already scored" in res.output and "0 to go" in res.output
    res = runner.invoke(app, [*args, "--heatmaps", "all"])  # the good rows now lack their heatmap
    n_good = len(rows) - len(anomalous)
    assert res.exit_code == 0 and f"{len(anomalous)} already scored" in res.output and f"{n_good} to go" in res.output
    assert len(list((out / "heatmaps").rglob("*.jpg"))) == len(rows)
