"""What the commands print and where: results (or one JSON object) on stdout, progress on stderr."""

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from anomaly_ae.cli.main import app

runner = CliRunner()
README = Path(__file__).resolve().parent.parent / "README.md"


def documented_keys() -> dict[str, set[str]]:
    """``--json`` keys per command as the README's 'Machine-readable output' lists them."""
    section = README.read_text(encoding="utf-8").split("### Machine-readable output", 1)[1].split("\n## ", 1)[0]
    keys = {}
    for line in section.splitlines():
        m = re.match(r"- `(\w+)`(?: \(([^)]*)\))?: (.*)", line)
        if m:
            name = m.group(1) + (f" ({m.group(2)})" if m.group(2) else "")
            keys[name] = set(re.findall(r"`(\w+)`", m.group(3)))
    return keys


@pytest.fixture(scope="module")
def trained(tiny_data, tiny_config_file, tmp_path_factory):
    run = tmp_path_factory.mktemp("out") / "run"
    res = runner.invoke(app, ["train", str(tiny_data / "train" / "good"), "--config", str(tiny_config_file),
                              "--out", str(run), "--no-track", "--json"])
    assert res.exit_code == 0, res.output
    return run, res


def test_train_json_is_the_only_stdout_and_has_the_documented_keys(trained):
    run, res = trained
    summary = json.loads(res.stdout)  # nothing else on stdout: it parses as one object
    assert set(summary) == documented_keys()["train"]
    assert summary["model_dir"] == str(run) and summary["epochs_run"] == 2 and summary["n_train"] == 18
    meta = json.loads((run / "detector.json").read_text())
    assert summary["threshold"] == pytest.approx(meta["threshold"]["value"])
    assert summary["mlflow_run_id"] is None  # --no-track
    check = meta["training"]["self_check"]  # the figures and the interval that detector.json keeps
    assert summary["self_check"]["image_auroc_interval"] == check["image_auroc_interval"]
    assert summary["self_check"]["version"] == 3
    assert summary["scoring"] == {k: meta["config"]["scoring"][k]
                                  for k in ("metric", "smoothing_sigma", "reduction", "position_norm")}
    # progress went to stderr: a line per stage and per epoch, before any result
    assert "· loading Keras" in res.stderr and "· training the conv autoencoder at 32x32x1" in res.stderr
    assert re.search(r"epoch 2/2  loss [\d.e-]+  val_loss [\d.e-]+", res.stderr)
    assert "{" not in res.stderr


def test_train_result_lines_on_stdout_and_quiet_drops_progress(tiny_data, tiny_config_file, tmp_path):
    res = runner.invoke(app, ["train", str(tiny_data / "train" / "good"), "--config", str(tiny_config_file),
                              "--out", str(tmp_path / "r"), "--no-track", "--epochs", "1", "-q"])
    assert res.exit_code == 0, res.output
    # no progress: only the warning that 6 held-out images are too few to trust the threshold (shown with -q)
    assert res.stderr.startswith("warning: only 6 good images calibrate the threshold") and \
        res.stderr.count("\n") == 1
    assert re.search(r"^threshold +[\d.e-]+: the larger of the highest of 6 good scores", res.stdout, re.M)
    assert re.search(r"^model +" + re.escape(str(tmp_path / "r")), res.stdout, re.M)


def test_score_folder_json_keys_and_streams(trained, tiny_data, tmp_path):
    run, _ = trained
    inputs = tmp_path / "in"
    inputs.mkdir()
    for p in sorted((tiny_data / "test" / "good").glob("*.png")):
        (inputs / p.name).write_bytes(p.read_bytes())
    (inputs / "broken.png").write_bytes(b"not a png")
    res = runner.invoke(app, ["score", str(run), str(inputs), "--out", str(tmp_path / "o"), "--json"])
    assert res.exit_code == 3, res.output
    summary = json.loads(res.stdout)
    assert set(summary) == documented_keys()["score (a folder)"]
    assert (summary["n_scored"], summary["n_failed"], summary["partial"]) == (4, 1, True)
    assert "failed broken.png" in res.stderr  # the one-line reason is a log line, not a result


def test_single_file_prints_its_verdict_line(trained, tiny_data):
    run, _ = trained
    image = sorted((tiny_data / "test" / "scratch").glob("*.png"))[0]
    res = runner.invoke(app, ["score", str(run), str(image), "-q"])
    assert res.exit_code == 0, res.output
    from anomaly_ae import Detector

    det = Detector.load(run)
    score = float(det.score(image)[0])
    m = re.fullmatch(r"(\S+)  score (\S+)  normalized (\S+)  anomalous (yes|no)\n", res.stdout)
    assert m, res.stdout
    assert m.group(1) == str(image) and float(m.group(2)) == pytest.approx(score, rel=1e-5)
    assert float(m.group(3)) == pytest.approx(float(det.normalize(np.array([score]))[0]), abs=1e-3)
    assert m.group(4) == ("yes" if score > det.threshold_ else "no")


def test_several_files_and_a_quoted_glob_with_out(trained, tiny_data, tmp_path):
    run, _ = trained
    pattern = str(tiny_data / "test" / "*" / "000.png")
    out = tmp_path / "o"
    res = runner.invoke(app, ["score", str(run), pattern, "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert set(summary) == documented_keys()["score (files)"]
    files = summary["files"]
    assert [f["path"] for f in files] == sorted(str(p) for p in (tiny_data / "test").glob("*/000.png"))
    assert all(set(f) == documented_keys()["score (each of `files`)"] for f in files)
    for f in files:  # the outputs named exist, and scores.csv has the same scores
        assert Path(f["outputs"]["heatmaps"]).is_file() and Path(f["outputs"]["masks"]).is_file()
    rows = (out / "scores.csv").read_text().splitlines()[1:]
    assert len(rows) == len(files)
    two = [str(tiny_data / "test" / "good" / "000.png"), str(tiny_data / "test" / "good" / "001.png")]
    res = runner.invoke(app, ["score", str(run), *two, "-q"])
    assert res.exit_code == 0 and len(res.stdout.splitlines()) == 2
    assert runner.invoke(app, ["score", str(run), str(tmp_path / "nothing*.png")]).exit_code == 2
    assert runner.invoke(app, ["score", str(run), str(tiny_data / "test")]).exit_code == 2  # a folder needs --out


def test_heatmaps_have_a_legend_strip_unless_plain(trained, tiny_data, tmp_path):
    run, _ = trained
    image = sorted((tiny_data / "test" / "scratch").glob("*.png"))[0]
    for flags, name in (([], "legend"), (["--plain-heatmaps"], "plain")):
        res = runner.invoke(app, ["score", str(run), str(image), "--out", str(tmp_path / name), "-q", *flags])
        assert res.exit_code == 0, res.output
    legend = cv2.imread(str(tmp_path / "legend" / "heatmaps" / f"{image.name}.jpg"))
    plain = cv2.imread(str(tmp_path / "plain" / "heatmaps" / f"{image.name}.jpg"))
    assert plain.shape == (32, 32, 3)
    # a 32 px heatmap is enlarged 12 times (384 >= 360 px): the picture fills the width above its legend
    assert legend.shape[1] == 384 and legend.shape[0] > 384 + 50
    top = legend[:384]
    assert (top.reshape(-1, 3) > 250).all(axis=1).mean() < 0.01  # no white beside the picture
    # the heatmap's pixels are the same, up to JPEG's rounding (each file is encoded on its own)
    small = cv2.resize(top, (32, 32), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - plain).mean() < 4
    strip = legend[384:]
    assert (strip[..., 0] > 200).any() and (strip[..., 2] > 200).any()  # the colour bar: blue to red


def test_evaluate_and_calibrate_json_keys(trained, tiny_data, tmp_path):
    run, _ = trained
    res = runner.invoke(app, ["evaluate", str(run), str(tiny_data), "--out", str(tmp_path / "e"), "--no-track",
                              "--json"])
    assert res.exit_code == 0, res.output
    ev = json.loads(res.stdout)
    assert set(ev) == documented_keys()["evaluate"]
    saved = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert ev["metrics"] == {k: saved[k] for k in ev["metrics"]}  # the figures of metrics.json
    assert ev["report_html"] == str(tmp_path / "e" / "report.html")
    import shutil

    copy = tmp_path / "m"
    shutil.copytree(run, copy)
    res = runner.invoke(app, ["calibrate", str(copy), "--good", str(tiny_data / "test" / "good"), "--method",
                              "max", "--json"])
    assert res.exit_code == 0, res.output
    cal = json.loads(res.stdout)
    assert set(cal) == documented_keys()["calibrate"]
    assert cal["method"] == "max"
    assert cal["threshold"] == pytest.approx(json.loads((copy / "detector.json").read_text())
                                             ["threshold"]["value"])


def test_readme_documents_every_json_command():
    assert set(documented_keys()) == {"train", "score (a folder)", "score (files)", "score (each of `files`)",
                                      "evaluate", "calibrate"}
