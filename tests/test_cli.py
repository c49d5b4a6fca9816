import csv
import json
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from anomaly_ae.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def trained_run(tiny_data, tiny_config_file, tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    res = runner.invoke(
        app,
        ["train", str(tiny_data / "train" / "good"), "--config", str(tiny_config_file), "--out", str(run),
         "--epochs", "1", "--no-track"],
    )
    assert res.exit_code == 0, res.output
    return run, res.output


def test_train_writes_model_dir_and_summary(trained_run):
    run, output = trained_run
    assert (run / "model.keras").is_file() and (run / "detector.json").is_file()
    assert "threshold" in output and str(run) in output
    assert "after the first epoch" not in output  # one epoch: no steady rate to give yet
    import yaml

    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 1  # the CLI flag overrode the file's 2
    assert saved["data"]["image_size"] == [32, 32]


def _read_csv(path):
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        return header, [dict(zip(header, r, strict=True)) for r in reader]


def test_score_folder_with_corrupt_file_and_subfolders(trained_run, tiny_data, tmp_path):
    run, _ = trained_run
    inp = tmp_path / "in"
    shutil.copytree(tiny_data / "test", inp)
    (inp / "good" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (inp / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out"
    res = runner.invoke(app, ["score", str(run), str(inp), "--out", str(out), "--batch-size", "3"])
    assert res.exit_code == 3, res.output
    header, rows = _read_csv(out / "scores.csv")
    assert header == ["path", "score", "is_anomaly", "threshold", "error", "size_bytes", "mtime_ns",
                      "normalized_score"]
    assert len(rows) == 4 + 2 * 3 + 2
    by_path = {r["path"]: r for r in rows}
    assert by_path["good/corrupt.png"]["score"] == "" and "truncated PNG" in by_path["good/corrupt.png"]["error"]
    assert "empty file" in by_path["empty.jpg"]["error"]
    scored = [r for r in rows if not r["error"]]
    assert len(scored) == 10
    threshold = float(scored[0]["threshold"])
    for r in scored:
        assert r["is_anomaly"] == str(float(r["score"]) > threshold).lower()
        assert (out / "heatmaps" / f"{r['path']}.jpg").is_file()  # a.png -> a.png.jpg
    assert "scored 10" in res.output and "failed 2" in res.output
    assert not (out / "scores.csv.partial").exists()


def test_score_all_good_exits_zero_and_matches_api(trained_run, tiny_data, tmp_path):
    run, _ = trained_run
    out = tmp_path / "out"
    res = runner.invoke(app, ["score", str(run), str(tiny_data / "test" / "good"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    _, rows = _read_csv(out / "scores.csv")
    from anomaly_ae.detector import Detector

    det = Detector.load(run)
    api = det.score(tiny_data / "test" / "good")
    assert [float(r["score"]) for r in rows] == pytest.approx(api.tolist(), rel=1e-6)
    # the normalized score of the CSV is the API's, the one the CLI prints and --json names normalized_score
    assert [float(r["normalized_score"]) for r in rows] == pytest.approx(det.normalize(api).tolist(), abs=1e-5)
    one = runner.invoke(app, ["score", str(run), str(tiny_data / "test" / "good" / "000.png"), "--json"])
    verdict = json.loads(one.stdout)["files"][0]
    assert verdict["normalized_score"] == pytest.approx(float(rows[0]["normalized_score"]), abs=1e-5)
    line = runner.invoke(app, ["score", str(run), str(tiny_data / "test" / "good" / "000.png"), "-q"]).stdout
    assert f"normalized {verdict['normalized_score']:.3f}" in line and "normalised" not in line


@pytest.mark.parametrize(
    "args",
    [
        ["score", "no/such/run", "."],
        ["score", "{run}", "{empty}"],
        ["score", "{empty}", "{empty}"],
        ["train", "{empty}", "--no-track"],
        ["train", "no/such/folder", "--no-track"],
        ["train", "{empty}", "--channels", "2"],
    ],
)
def test_usage_errors_exit_2(args, trained_run, tmp_path):
    run, _ = trained_run
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = [a.format(run=run, empty=empty) for a in args]
    if argv[0] == "score":
        argv += ["--out", str(tmp_path / "o")]
    res = runner.invoke(app, argv)
    assert res.exit_code == 2, res.output


def test_help_does_not_import_heavy_packages():
    code = "\n".join(
        [
            "import sys",
            "from typer.testing import CliRunner",
            "from anomaly_ae.cli.main import app",
            "r = CliRunner().invoke(app, ['--help'])",
            "assert r.exit_code == 0 and 'train' in r.output and 'score' in r.output, r.output",
            "heavy = ('keras', 'tensorflow', 'mlflow', 'cv2', 'matplotlib', 'albumentations')",
            "loaded = [m for m in heavy if m in sys.modules]",
            "assert not loaded, loaded",
        ]
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr + out.stdout


def test_import_anomaly_ae_loads_no_framework_until_a_model_is_needed():
    code = "\n".join([
        "import sys",
        "import anomaly_ae",
        "from anomaly_ae import DetectorConfig, OutputConflict, UriError",
        "cfg = DetectorConfig()",
        "loaded = [m for m in ('keras', 'tensorflow', 'jax', 'mlflow', 'cv2') if m in sys.modules]",
        "assert not loaded, loaded",
        "anomaly_ae.Detector  # the first name that needs Keras imports it",
        "assert 'keras' in sys.modules",
    ])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr + out.stdout


def test_console_script_help():
    exe = shutil.which("anomaly-ae", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert exe, "console script anomaly-ae is not installed"
    out = subprocess.run([exe, "train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--no-track" in out.stdout


def test_train_on_a_folder_of_unreadable_files_is_a_usage_error(tmp_path, tiny_config_file):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("a.png", "b.jpg", "c.png"):
        (bad / name).write_bytes(b"not an image")
    res = runner.invoke(app, ["train", str(bad), "--config", str(tiny_config_file), "--no-track"])
    assert res.exit_code == 2
    assert "at least 2 good images" in res.output


def test_score_writes_masks_and_raw_maps(trained_run, tiny_data, tmp_path):
    import numpy as np

    from anomaly_ae.detector import Detector

    run, _ = trained_run
    out = tmp_path / "out"
    inp = tiny_data / "test" / "scratch"
    res = runner.invoke(app, ["score", str(run), str(inp), "--out", str(out), "--raw-maps"])
    assert res.exit_code == 0, res.output
    det = Detector.load(run)
    maps = det.anomaly_maps(inp)
    for i, name in enumerate(["000", "001"]):
        raw = np.load(out / "maps" / f"{name}.png.npy", allow_pickle=False)
        np.testing.assert_allclose(raw, maps[i], rtol=1e-6)
        import cv2

        mask = cv2.imread(str(out / "masks" / f"{name}.png.png"), cv2.IMREAD_GRAYSCALE)
        assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 255}
        np.testing.assert_array_equal(mask == 255, maps[i] > det.pixel_threshold_)


@pytest.mark.parametrize("model", ["dense", "linear", "sparse", "contractive", "denoising", "vae"])
def test_train_and_score_every_model(model, tiny_data, tmp_path):
    run = tmp_path / "run"
    res = runner.invoke(app, ["train", str(tiny_data / "train" / "good"), "--model", model, "--image-size", "32",
                              "--epochs", "1", "--out", str(run), "--no-track"])
    assert res.exit_code == 0, res.output
    import yaml

    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["name"] == model and saved["data"]["image_size"] == [32, 32]
    from pathlib import Path

    shipped = yaml.safe_load((Path(__file__).parent.parent / "configs" / f"{model}.yaml").read_text())["model"]
    assert {k: saved["model"][k] for k in shipped} == shipped  # --model picked the preset <model>
    out = tmp_path / "out"
    res = runner.invoke(app, ["score", str(run), str(tiny_data / "test"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    _, rows = _read_csv(out / "scores.csv")
    assert len(rows) == 10 and all(r["score"] for r in rows)


def test_sample_draws_a_grid_from_a_vae(tiny_data, tmp_path):
    import cv2

    run = tmp_path / "vae"
    res = runner.invoke(app, ["train", str(tiny_data / "train" / "good"), "--model", "vae", "--image-size", "32",
                              "--epochs", "1", "--out", str(run), "--no-track"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["sample", str(run), "--n", "6", "--out", str(tmp_path / "grid.png"), "--seed", "3"])
    assert res.exit_code == 0, res.output
    grid = cv2.imread(str(tmp_path / "grid.png"), cv2.IMREAD_UNCHANGED)
    assert grid.shape == (2 + 2 * 34, 2 + 3 * 34)  # 6 gray 32 px samples in 3 columns, 2 px gaps
    first = (tmp_path / "grid.png").read_bytes()
    runner.invoke(app, ["sample", str(run), "--n", "6", "--out", str(tmp_path / "grid.png"), "--seed", "3"])
    assert (tmp_path / "grid.png").read_bytes() == first  # same seed, same draws
    res = runner.invoke(app, ["sample", str(run.parent / "nope"), "--out", str(tmp_path / "g.png")])
    assert res.exit_code == 2


def test_sample_refuses_non_vae_models(trained_run, tmp_path):
    run, _ = trained_run
    res = runner.invoke(app, ["sample", str(run), "--out", str(tmp_path / "g.png")])
    assert res.exit_code == 2 and "only 'vae' models" in res.output


def test_presets_lists_every_preset_and_prints_one():
    from anomaly_ae.config import preset_names, preset_path

    res = runner.invoke(app, ["presets"])
    assert res.exit_code == 0, res.output
    listed = [line.split()[0] for line in res.stdout.splitlines()]
    assert listed == preset_names()
    assert "(used without --config)" in next(line for line in res.stdout.splitlines() if line.startswith("default "))
    res = runner.invoke(app, ["presets", "fast"])
    assert res.exit_code == 0 and res.stdout == preset_path("fast").read_text()  # copyable as it is
    res = runner.invoke(app, ["presets", "--json"])
    assert set(json.loads(res.stdout)) == set(preset_names())
    res = runner.invoke(app, ["presets", "nope"])
    assert res.exit_code == 2 and "no preset named 'nope'" in res.output


def test_train_config_accepts_a_preset_name_and_names_the_presets_when_wrong(tiny_data, tmp_path):
    good = str(tiny_data / "train" / "good")
    res = runner.invoke(app, ["train", good, "--config", "nope", "--out", str(tmp_path / "r"), "--no-track"])
    assert res.exit_code == 2 and "config file nope not found; presets: contractive, default" in res.output
    res = runner.invoke(app, ["train", good, "--config", "linear", "--epochs", "1", "--image-size", "32",
                              "--out", str(tmp_path / "r"), "--no-track", "-q"])
    assert res.exit_code == 0, res.output
    import yaml

    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["model"]["name"] == "linear"


def test_train_summary_gives_the_steady_rate_in_plain_words():
    from anomaly_ae.cli.train import _rows

    j = {"model_dir": "r", "model": "conv", "image_size": [8, 8], "channels": 1, "n_train": 2, "n_val": 1,
         "epochs_run": 2, "best_epoch": 1, "best_val_loss": 0.1, "fit_seconds": 1.0, "samples_per_second": 89.4,
         "sample_unit": "patch", "threshold": 0.5, "threshold_quantile": 0.99,
         "threshold_rule": "quantile 0.99 of 1 good scores",
         "expected_fpr": 0.5, "fpr_upper": 0.95, "fpr_confidence": 0.95, "val_score_mean": 0.1,
         "val_score_std": 0.1, "val_score_max": 0.2, "skipped": [], "self_check": None, "scoring": {},
         "mlflow_run_id": None}
    assert _rows(j)[1][1].endswith("in 1.0 s, 89 patches/s after the first epoch")
    assert _rows({**j, "sample_unit": "image"})[1][1].endswith("89 images/s after the first epoch")
    assert _rows({**j, "samples_per_second": None})[1][1].endswith("in 1.0 s")
