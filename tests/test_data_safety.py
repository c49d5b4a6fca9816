"""Nothing a user owns is lost, and nothing wrong is silent: one test (or more) per class of situation."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from anomaly_ae.cli.main import app

runner = CliRunner()
RNG = np.random.default_rng(3)


def _png(path: Path, seed: int = 0, size: int = 32) -> Path:
    img = (np.random.default_rng(seed).random((size, size)) * 200 + 20).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cv2.imencode(path.suffix or ".png", img)[1].tobytes())
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes), links not followed."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _one_line(output: str) -> str:
    return " ".join(output.split())


@pytest.fixture(scope="module")
def run_dir(tiny_detector, tmp_path_factory) -> Path:
    return tiny_detector.save(tmp_path_factory.mktemp("model") / "run")


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    for i in range(4):
        _png(root / f"{i:03d}.png", seed=i)
    return root


@pytest.fixture()
def user_folder(tmp_path: Path) -> Path:
    """A folder of the user's own work: sources, notes, a sub-folder."""
    u = tmp_path / "work"
    (u / "src").mkdir(parents=True)
    (u / "src" / "main.py").write_text("print('mine')\n")
    (u / "notes.txt").write_text("do not lose me\n")
    (u / "photo.png").write_bytes(b"\x89PNG not really")
    return u


# ---------------------------------------------------------------- never delete what the tool did not write
def test_out_dot_is_refused_for_every_command_and_nothing_changes(run_dir, inputs, user_folder, monkeypatch,
                                                                   tiny_config_file):
    monkeypatch.chdir(user_folder)
    before = _snapshot(user_folder)
    for args in (["export", str(run_dir), "--out", "."],
                 ["export", str(run_dir), "--out", ".", "--overwrite"],
                 ["score", str(run_dir), str(inputs), "--out", "."],
                 ["train", str(inputs), "--config", str(tiny_config_file), "--out", ".", "--no-track"],
                 ["export-encoder", str(run_dir), "--out", "."]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert "current folder" in _one_line(res.output), res.output
    assert _snapshot(user_folder) == before


def test_out_equal_to_the_model_dir_or_the_input_is_refused(run_dir, inputs, tiny_config_file, tiny_data):
    model_before, inputs_before, data_before = _snapshot(run_dir), _snapshot(inputs), _snapshot(tiny_data)
    for args, what in (
        (["export", str(run_dir), "--out", str(run_dir)], "model directory"),
        (["export", str(run_dir), "--out", str(run_dir.parent)], "contains the model directory"),
        (["export-encoder", str(run_dir), "--out", str(run_dir)], "model directory"),
        (["score", str(run_dir), str(inputs), "--out", str(run_dir)], "model directory"),
        (["score", str(run_dir), str(inputs), "--out", str(inputs)], "input folder"),
        (["evaluate", str(run_dir), str(tiny_data), "--out", str(tiny_data), "--no-track"], "is the data set"),
        (["train", str(inputs), "--config", str(tiny_config_file), "--out", str(run_dir), "--no-track"],
         "already holds a trained model"),
        (["train", str(inputs), "--config", str(tiny_config_file), "--out", str(inputs), "--no-track"],
         "image folder"),
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and what in _one_line(res.output), (args, res.output)
    assert _snapshot(run_dir) == model_before and _snapshot(inputs) == inputs_before
    assert _snapshot(tiny_data) == data_before


def test_writing_into_a_non_empty_user_folder_keeps_every_file(run_dir, inputs, user_folder, tiny_config_file,
                                                              tmp_path):
    before = _snapshot(user_folder)
    assert runner.invoke(app, ["export", str(run_dir), "--out", str(user_folder)]).exit_code == 0
    assert runner.invoke(app, ["score", str(run_dir), str(inputs), "--out", str(user_folder)]).exit_code == 0
    res = runner.invoke(app, ["train", str(inputs), "--config", str(tiny_config_file), "--out", str(user_folder),
                              "--epochs", "1", "--no-track"])
    assert res.exit_code == 0, res.output
    after = _snapshot(user_folder)
    assert {k: after[k] for k in before} == before  # every pre-existing file byte-identical
    assert {"deploy.json", "model.onnx", "scores.csv", "model.keras", "detector.json"} <= set(after)

    # a second export is refused without --overwrite, and with it replaces only its own files
    res = runner.invoke(app, ["export", str(run_dir), "--out", str(user_folder)])
    assert res.exit_code == 2 and "--overwrite" in res.output
    res = runner.invoke(app, ["export", str(run_dir), "--out", str(user_folder), "--format", "savedmodel",
                              "--overwrite"])
    assert res.exit_code == 0, res.output
    now = _snapshot(user_folder)
    assert {k: now[k] for k in before} == before
    assert "model.onnx" not in now and any(k.startswith("saved_model/") for k in now)
    assert "model.keras" in now  # another kind of output in the folder (the model) is not touched


def test_a_user_file_in_the_way_is_never_replaced_even_with_overwrite(run_dir, tmp_path):
    out = tmp_path / "exp"
    out.mkdir()
    (out / "deploy.json").write_text('{"mine": true}')
    for extra in ([], ["--overwrite"]):
        res = runner.invoke(app, ["export", str(run_dir), "--out", str(out), *extra])
        assert res.exit_code == 2 and "was not written by anomaly-ae" in _one_line(res.output)
    assert (out / "deploy.json").read_text() == '{"mine": true}' and sorted(os.listdir(out)) == ["deploy.json"]


def test_score_overwrite_removes_only_its_own_files(run_dir, inputs, tmp_path):
    out = tmp_path / "out"
    assert runner.invoke(app, ["score", str(run_dir), str(inputs), "--out", str(out)]).exit_code == 0
    mine = out / "masks" / "keep" / "my_mask.png"  # the user's own folder that happens to sit in OUT/masks
    _png(mine, seed=9)
    (out / "heatmaps" / "empty_but_mine").mkdir()  # an empty folder of the user's is still the user's
    (out / "README.txt").write_text("my notes")
    res = runner.invoke(app, ["score", str(run_dir), str(inputs), "--out", str(out), "--overwrite"])
    assert res.exit_code == 0 and "resuming" not in res.output
    assert mine.is_file() and (out / "README.txt").read_text() == "my notes"
    assert (out / "heatmaps" / "empty_but_mine").is_dir()
    assert len(_rows(out / "scores.csv")) == 4


def test_train_refuses_to_replace_a_model_without_overwrite(run_dir, inputs, tiny_config_file, tmp_path):
    run = tmp_path / "m"
    shutil.copytree(run_dir, run)
    before = _snapshot(run)
    args = ["train", str(inputs), "--config", str(tiny_config_file), "--out", str(run), "--epochs", "1", "--no-track"]
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "--overwrite" in res.output and _snapshot(run) == before
    (run / "my_notes.txt").write_text("kept")
    res = runner.invoke(app, [*args, "--overwrite"])
    assert res.exit_code == 0, res.output
    assert (run / "my_notes.txt").read_text() == "kept"
    assert (run / "detector.json").read_bytes() != before["detector.json"]


def test_a_hand_made_manifest_cannot_make_overwrite_delete_anything_else(run_dir, tmp_path):
    out = tmp_path / "exp"
    assert runner.invoke(app, ["export", str(run_dir), "--out", str(out)]).exit_code == 0
    (tmp_path / "precious.txt").write_text("outside")
    (out / "mine.txt").write_text("inside")
    manifest = json.loads((out / ".anomaly-ae-manifest.json").read_text())
    manifest["written"]["export"]["files"] += ["..", ".", "", "../precious.txt", "/etc"]
    (out / ".anomaly-ae-manifest.json").write_text(json.dumps(manifest))
    res = runner.invoke(app, ["export", str(run_dir), "--out", str(out), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "precious.txt").read_text() == "outside" and (out / "mine.txt").read_text() == "inside"
    assert (out / "deploy.json").is_file()


def test_a_user_checkpoint_folder_or_lock_named_file_is_never_taken_for_ours(run_dir, inputs, tiny_config_file,
                                                                           tmp_path):
    work = tmp_path / "project"
    (work / "checkpoint").mkdir(parents=True)
    (work / "checkpoint" / "config.yaml").write_text("lr: 0.1\nlayers: 3\n")  # another tool's checkpoint
    (work / "checkpoint" / "weights.bin").write_bytes(b"\x00" * 64)
    before = _snapshot(work)
    args = ["train", str(inputs), "--config", str(tiny_config_file), "--out", str(work), "--epochs", "1", "--no-track"]
    for extra in ([], ["--overwrite"]):
        res = runner.invoke(app, [*args, *extra])
        assert res.exit_code == 2 and "checkpoint already exists and was not written by anomaly-ae" in _one_line(
            res.output), res.output
    assert _snapshot(work) == before

    from anomaly_ae.config import DetectorConfig
    from anomaly_ae.io.folders import OutputConflict
    from anomaly_ae.training.checkpoint import start_checkpoints

    with pytest.raises(OutputConflict, match="was not written by anomaly-ae"):  # the library guards itself too
        start_checkpoints(work / "checkpoint", DetectorConfig(), {})
    assert _snapshot(work) == before

    out = tmp_path / "out"
    out.mkdir()
    (out / ".anomaly-ae.lock").write_text("my notes, unluckily named")
    res = runner.invoke(app, ["score", str(run_dir), str(inputs), "--out", str(out)])
    assert res.exit_code == 2 and "is not an anomaly-ae lock" in res.output
    assert (out / ".anomaly-ae.lock").read_text() == "my notes, unluckily named"


# ----------------------------------------------------------------------------- names that never collide
def test_same_stem_different_extensions_give_two_heatmaps(run_dir, tmp_path):
    inp = tmp_path / "in"
    _png(inp / "a.png", seed=1)
    _png(inp / "a.jpg", seed=2)
    _png(inp / "a.PNG.bmp", seed=3)
    out = tmp_path / "out"
    assert runner.invoke(app, ["score", str(run_dir), str(inp), "--out", str(out)]).exit_code == 0
    assert sorted(os.listdir(out / "heatmaps")) == ["a.PNG.bmp.jpg", "a.jpg.jpg", "a.png.jpg"]
    assert sorted(os.listdir(out / "masks")) == ["a.PNG.bmp.png", "a.jpg.png", "a.png.png"]
    assert len({(out / "heatmaps" / n).read_bytes() for n in os.listdir(out / "heatmaps")}) == 3


def test_long_and_non_utf8_names_are_scored_and_resumed(run_dir, tmp_path):
    inp = tmp_path / "in"
    long_name = "serial_" + "x" * 239 + ".png"  # 250 characters: + ".png" still fits in 255 bytes
    longer = "serial_" + "y" * 243 + ".png"  # 254 characters: + ".png" does not fit
    _png(inp / long_name, seed=1)
    _png(inp / longer, seed=4)
    bad = os.fsdecode(b"camera\xff\xfe_01.png")  # not valid UTF-8
    _png(inp / bad, seed=2)
    _png(inp / "[brackets] & ü.png", seed=3)
    (inp / "a[").mkdir()
    (inp / "a[" / "b].png").write_bytes(b"")  # printed as "a[/b].png": a closing tag, were it read as markup
    out = tmp_path / "out"
    res = runner.invoke(app, ["score", str(run_dir), str(inp), "--out", str(out)])
    assert res.exit_code == 3 and "failed a[/b].png: empty file" in _one_line(res.output), res.output
    (inp / "a[" / "b].png").unlink()
    res = runner.invoke(app, ["score", str(run_dir), str(inp), "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = {r["path"]: r for r in _rows(out / "scores.csv")}  # the CSV is valid UTF-8
    assert set(rows) == {long_name, longer, "camera\\xff\\xfe_01.png", "[brackets] & ü.png"}
    assert all(r["score"] and not r["error"] for r in rows.values())
    heat = sorted(os.listdir(out / "heatmaps"))
    assert len(heat) == 4 and all(len(n.encode()) <= 255 for n in heat)
    assert {"camera\\xff\\xfe_01.png.jpg", "[brackets] & ü.png.jpg", long_name + ".jpg"} <= set(heat)
    short = next(n for n in heat if n.startswith("serial_y"))  # start, ~hash~, last 24 characters + .jpg
    assert len(short.encode()) == 255 and short.endswith("~" + "y" * 20 + ".png.jpg") and short.count("~") == 2
    res = runner.invoke(app, ["score", str(run_dir), str(inp), "--out", str(out)])
    assert res.exit_code == 0 and "4 already scored" in res.output and "0 to go" in res.output


def test_an_output_path_too_long_for_the_file_system_fails_that_file_only(run_dir, tmp_path):
    inp = tmp_path / "in"
    deep = inp.joinpath(*(f"{i:02d}" + "d" * 198 for i in range(19)))  # ~3,850 characters: readable
    assert len(str(deep)) < 4000
    _png(deep / "part.png", seed=1)
    _png(inp / "short.png", seed=2)
    out = tmp_path / ("o" * 250)  # the same path under this folder is over PATH_MAX (4,096)
    res = runner.invoke(app, ["score", str(run_dir), str(inp), "--out", str(out)])
    assert res.exit_code == 3, res.output
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in _rows(out / "scores.csv")}
    assert rows["short.png"]["score"] and not rows["short.png"]["error"]
    assert rows["part.png"]["score"] == "" and "File name too long" in rows["part.png"]["error"]


# ----------------------------------------------------------------------------- resume that cannot be fooled
def test_resume_rescores_replaced_inputs_and_drops_bad_or_stale_rows(run_dir, inputs, tmp_path):
    out = tmp_path / "out"
    assert runner.invoke(app, ["score", str(run_dir), str(inputs), "--out", str(out), "--no-masks"]).exit_code == 0
    first = {r["path"]: r["score"] for r in _rows(out / "scores.csv")}

    _png(inputs / "001.png", seed=77)  # replaced by a different image
    os.utime(inputs / "001.png", ns=(time.time_ns(), time.time_ns() + 10**9))
    (inputs / "003.png").unlink()  # deleted
    with open(out / "scores.csv", "a", encoding="utf-8") as f:  # hand-edited garbage
        f.write("ghost.png,not-a-number,true,0.1,,1,1\n000.png,0.5\n")
    res = runner.invoke(app, ["score", str(run_dir), str(inputs), "--out", str(out)])  # masks asked for now
    assert res.exit_code == 0, res.output
    text = _one_line(res.output)
    assert "2 malformed or repeated rows" in text
    assert "1 rows of files no longer in the input folder dropped" in text
    assert "1 inputs changed since they were scored" in text
    assert "rows lack output files asked for now" in text  # no masks yet for the kept rows
    rows = {r["path"]: r for r in _rows(out / "scores.csv")}
    assert set(rows) == {"000.png", "001.png", "002.png"}
    assert rows["001.png"]["score"] != first["001.png"]  # the replaced file got its own score
    assert rows["000.png"]["score"] == first["000.png"]
    assert all((out / "masks" / f"{p}.png").is_file() for p in rows)


def test_output_folder_inside_the_input_folder_is_not_scored(run_dir, inputs):
    out = inputs / "results"
    assert runner.invoke(app, ["score", str(run_dir), str(inputs), "--out", str(out)]).exit_code == 0
    res = runner.invoke(app, ["score", str(run_dir), str(inputs), "--out", str(out)])
    assert res.exit_code == 0 and "4 already scored" in res.output and "0 to go" in res.output
    assert len(_rows(out / "scores.csv")) == 4 and not any(r["path"].startswith("results/")
                                                           for r in _rows(out / "scores.csv"))


def test_two_concurrent_runs_into_one_out_one_is_refused_no_row_lost(run_dir, tmp_path):
    inp = tmp_path / "in"
    base = cv2.GaussianBlur(RNG.random((320, 320)).astype(np.float32), (0, 0), 3)
    for i in range(120):
        img = np.clip(np.roll(base, i * 5, axis=1) * 255, 0, 255).astype(np.uint8)
        (inp / f"{i:03d}.png").parent.mkdir(exist_ok=True)
        cv2.imwrite(str(inp / f"{i:03d}.png"), img)
    out = tmp_path / "out"
    exe = Path(sys.executable).parent / "anomaly-ae"
    first = subprocess.Popen([str(exe), "score", str(run_dir), str(inp), "--out", str(out), "--batch-size", "4"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out / ".anomaly-ae.lock").is_file() and first.poll() is None:
        time.sleep(0.01)
    res = runner.invoke(app, ["score", str(run_dir), str(inp), "--out", str(out)])
    finished_early = first.poll() is not None
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err.decode()
    if finished_early:
        pytest.skip("the first run ended before the second started")
    assert res.exit_code == 2 and f"another anomaly-ae process (PID {first.pid})" in _one_line(res.output)
    rows = _rows(out / "scores.csv")
    assert sorted(r["path"] for r in rows) == sorted(p.name for p in inp.iterdir())
    assert not (out / ".anomaly-ae.lock").exists()  # released at the end


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    from anomaly_ae.io.folders import OutDirLock

    (tmp_path / ".anomaly-ae.lock").write_text("999999999")  # its owner is gone: no flock held
    with OutDirLock(tmp_path):
        assert (tmp_path / ".anomaly-ae.lock").read_text() == str(os.getpid())


# ----------------------------------------------------------------------------- every input accounted for
def test_dangling_links_fifos_and_float_tiffs_each_get_a_row(run_dir, inputs, tmp_path):
    (inputs / "gone.png").symlink_to(tmp_path / "nowhere.png")
    os.mkfifo(inputs / "pipe.png")
    tif = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    (inputs / "float.tif").write_bytes(cv2.imencode(".tiff", tif)[1].tobytes())
    out = tmp_path / "out"
    res = runner.invoke(app, ["score", str(run_dir), str(inputs), "--out", str(out)])
    assert res.exit_code == 3, res.output
    rows = {r["path"]: r for r in _rows(out / "scores.csv")}
    assert "broken symbolic link" in rows["gone.png"]["error"]
    assert "not a regular file (FIFO)" in rows["pipe.png"]["error"]
    assert rows["float.tif"]["error"] == "" and float(rows["float.tif"]["score"]) > 0


def test_float_tiff_decodes_scaled_as_documented(tmp_path):
    from anomaly_ae.data.images import read_image

    unit = np.linspace(0, 1, 24 * 30, dtype=np.float32).reshape(24, 30)
    (tmp_path / "u.tif").write_bytes(cv2.imencode(".tiff", unit)[1].tobytes())
    got = read_image(tmp_path / "u.tif", 1)[..., 0]
    np.testing.assert_array_equal(got, np.round(unit * 255).astype(np.uint8))
    wide = unit * 1000 - 200  # outside [0, 1]: stretched min-max
    (tmp_path / "w.tif").write_bytes(cv2.imencode(".tiff", wide.astype(np.float32))[1].tobytes())
    got = read_image(tmp_path / "w.tif", 3)
    assert got.shape == (24, 30, 3) and got.min() == 0 and got.max() == 255


def test_unreadable_sub_folder_is_reported_not_silent(tmp_path, run_unprivileged):
    root = tmp_path / "in"
    _png(root / "ok.png")
    _png(root / "locked" / "hidden.png")
    code = ("import json,sys; from anomaly_ae.data.images import list_images; p=[]; "
            "f=list_images(sys.argv[1], problems=p); print(json.dumps([[x.name for x in f], p]))")
    (root / "locked").chmod(0)
    try:
        proc = run_unprivileged([sys.executable, "-c", code, str(root)])
        files, problems = json.loads(proc.stdout)
    finally:
        (root / "locked").chmod(0o755)
    assert files == ["ok.png"]
    assert len(problems) == 1 and "cannot read folder" in problems[0] and "locked" in problems[0]
    assert "Permission denied" in problems[0]


def test_score_warns_about_an_unreadable_sub_folder_and_exits_3(run_dir, inputs, tmp_path, monkeypatch):
    import anomaly_ae.pipelines.score

    real = anomaly_ae.pipelines.score.list_images

    def listing_with_a_locked_folder(folder, exclude=(), problems=None):
        problems.append(f"cannot read folder {folder}/locked: Permission denied")  # as os.walk reports it
        return real(folder, exclude, problems)

    monkeypatch.setattr(anomaly_ae.pipelines.score, "list_images", listing_with_a_locked_folder)
    res = runner.invoke(app, ["score", str(run_dir), str(inputs), "--out", str(tmp_path / "o")])
    assert res.exit_code == 3 and "warning: cannot read folder" in res.output and "locked" in res.output
    assert len(_rows(tmp_path / "o" / "scores.csv")) == 4  # the readable files are all scored


def test_evaluate_with_an_unreadable_image_or_mask_exits_3(run_dir, tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "test" / "good" / "broken.png").write_bytes(b"")
    mask = next((data / "ground_truth").rglob("*_mask.png"))
    mask.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    res = runner.invoke(app, ["evaluate", str(run_dir), str(data), "--out", str(tmp_path / "ev"), "--no-track"])
    assert res.exit_code == 3, res.output
    failures = json.loads((tmp_path / "ev" / "metrics.json").read_text())["failures"]
    assert {f["path"] for f in failures} >= {"good/broken.png"} and any("mask" in f["error"] for f in failures)
    assert "Traceback" not in res.output


# ----------------------------------------------------------------------------- validated model state
@pytest.mark.parametrize(("edit", "field"), [
    (lambda m: m["threshold"].update(value=float("nan")), "threshold.value"),
    (lambda m: m["threshold"].update(value=float("-inf")), "threshold.value"),
    (lambda m: m.update(heatmap_range=[0.1]), "heatmap_range"),
    (lambda m: m["preprocessing"].update(channels=2), "preprocessing.channels"),
    (lambda m: m["threshold"].update(expected_fpr=1.5), "threshold.expected_fpr"),
    (lambda m: m["config"]["scoring"].update(metric="l7"), "config.scoring.metric"),
])
def test_damaged_detector_json_is_refused_naming_the_field(run_dir, inputs, tmp_path, edit, field):
    run = tmp_path / "m"
    shutil.copytree(run_dir, run)
    meta = json.loads((run / "detector.json").read_text())
    edit(meta)
    (run / "detector.json").write_text(json.dumps(meta))  # json writes NaN / -Infinity as Python does
    res = runner.invoke(app, ["score", str(run), str(inputs), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and f"field {field}" in _one_line(res.output), res.output


@pytest.mark.parametrize("content", [b"[1, 2, 3]", b"\xff\xfe{\x00", b'"just a string"', b"{not json"])
def test_detector_json_that_is_not_an_object_is_refused(run_dir, tmp_path, content):
    run = tmp_path / "m"
    shutil.copytree(run_dir, run)
    (run / "detector.json").write_bytes(content)
    res = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "e")])
    assert res.exit_code == 2 and "detector.json" in res.output and "Traceback" not in res.output


def test_interrupted_first_epoch_resumes_with_one_command(tiny_config_file, tiny_data, tmp_path, monkeypatch):
    import anomaly_ae.training.checkpoint as checkpoint

    class Interrupt(KeyboardInterrupt):
        pass

    def ctrl_c(self, epoch, logs=None):
        raise Interrupt

    monkeypatch.setattr(checkpoint.TrainingCheckpoint, "on_epoch_end", ctrl_c)
    run = tmp_path / "run"
    args = ["train", str(tiny_data / "train" / "good"), "--config", str(tiny_config_file), "--out", str(run),
            "--epochs", "1", "--no-track"]
    res = runner.invoke(app, args)
    line = _one_line(res.stderr)
    assert res.exit_code == 130 and "interrupted: no epoch had finished" in line
    assert f"continue with: anomaly-ae train --resume {run}" in line
    assert (run / "checkpoint" / "config.yaml").is_file() and not list((run / "checkpoint").glob("epoch-*"))
    monkeypatch.undo()
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "--resume" in res.output and "--overwrite" in res.output
    res = runner.invoke(app, ["train", "--resume", str(run), "--no-track"])
    assert res.exit_code == 0 and "restarting" in res.output, res.output
    assert (run / "model.keras").is_file() and not (run / "checkpoint").exists()


def test_damaged_checkpoint_config_and_malformed_yaml_are_one_line(tiny_config_file, tiny_data, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    (run / "checkpoint" / "config.yaml").write_text("data: [unclosed\n")
    res = runner.invoke(app, ["train", "--resume", str(run), "--no-track"])
    assert res.exit_code == 2 and "damaged" in res.output and "--overwrite" in _one_line(res.output)
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: [1\n")
    res = runner.invoke(app, ["train", str(tiny_data / "train" / "good"), "--config", str(bad), "--no-track",
                              "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and "not valid YAML" in res.output and "Traceback" not in res.output


# ----------------------------------------------------------------------------- operating-system errors
def test_out_that_is_a_file_or_a_broken_link_is_a_usage_error(run_dir, inputs, tmp_path):
    f = tmp_path / "taken"
    f.write_text("x")
    for args in (["score", str(run_dir), str(inputs), "--out", str(f)], ["export", str(run_dir), "--out", str(f)]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and "is a file" in res.output
    assert f.read_text() == "x"
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    for args in (["score", str(run_dir), str(inputs), "--out", str(dangling)],
                 ["export", str(run_dir), "--out", str(dangling)]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and "broken symbolic link" in res.output, res.output
    assert not (tmp_path / "nowhere").exists() and not list(tmp_path.glob(".dangling*"))  # no temp left behind


@contextmanager
def _tmpfs(where: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``where`` for the block (root only; the test skips elsewhere)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture()
def small_disk(tmp_path):
    with _tmpfs(tmp_path / "disk", "size=600k") as mnt:
        yield mnt


def test_disk_full_is_one_line_and_the_rerun_completes(run_dir, tmp_path, small_disk):
    inp = tmp_path / "in"
    for i in range(40):
        noise = np.random.default_rng(i).integers(0, 256, (96, 96), dtype=np.uint8)  # PNGs that barely compress
        (inp / f"{i:02d}.png").parent.mkdir(exist_ok=True)
        cv2.imwrite(str(inp / f"{i:02d}.png"), noise)
    out = small_disk / "out"
    res = runner.invoke(app, ["score", str(run_dir), str(inp), "--out", str(out), "--raw-maps", "--batch-size", "4"])
    assert res.exit_code == 1, res.output
    assert "No space left on device" in res.output and "rerun" in res.output and "Traceback" not in res.output
    partial = out / "scores.csv.partial"
    assert partial.is_file()
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    res = runner.invoke(app, ["score", str(run_dir), str(inp), "--out", str(out), "--raw-maps", "--batch-size", "4"])
    assert res.exit_code == 0, res.output
    rows = _rows(out / "scores.csv")
    assert sorted(r["path"] for r in rows) == sorted(p.name for p in inp.iterdir())
    assert all((out / "maps" / f"{r['path']}.npy").is_file() for r in rows)


def test_read_only_output_is_one_line(run_dir, inputs, tmp_path):
    with _tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        for args in (["score", str(run_dir), str(inputs), "--out", str(ro / "o")],
                     ["export", str(run_dir), "--out", str(ro / "e")]):
            res = runner.invoke(app, args)
            assert res.exit_code == 2 and "Read-only file system" in res.output, res.output
            assert "Traceback" not in res.output


def test_training_in_a_read_only_folder_trains_without_tracking(tiny_config_file, tiny_data, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with _tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        monkeypatch.chdir(ro)  # the default MLflow store ./mlflow.db cannot be created here
        res = runner.invoke(app, ["train", str(tiny_data / "train" / "good"), "--config", str(tiny_config_file),
                                  "--out", str(tmp_path / "m"), "--epochs", "1"])
        monkeypatch.chdir(tmp_path)
    assert res.exit_code == 0, res.output
    assert "MLflow tracking is off for this run" in _one_line(res.output) and "not writable" in res.output
    assert (tmp_path / "m" / "model.keras").is_file() and "MLflow run" not in res.output


def test_permission_denied_is_one_line(run_dir, inputs, tmp_path, run_unprivileged):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    exe = str(Path(sys.executable).parent / "anomaly-ae")
    try:
        for args in (["score", str(run_dir), str(inputs), "--out", str(locked / "o")],
                     ["export", str(run_dir), "--out", str(locked / "e")]):
            proc = run_unprivileged([exe, *args])
            assert proc.returncode == 2, proc.stderr
            assert "Permission denied" in proc.stderr and "Traceback" not in proc.stderr
            assert "choose a folder you can write to" in _one_line(proc.stderr)
    finally:
        locked.chmod(0o755)
    assert os.listdir(locked) == []


def test_calibrate_exits_3_when_some_good_images_cannot_be_read(run_dir, tiny_data, tmp_path):
    run = tmp_path / "m"
    shutil.copytree(run_dir, run)
    good = tmp_path / "good"
    shutil.copytree(tiny_data / "test" / "good", good)
    (good / "broken.png").write_bytes(b"")
    res = runner.invoke(app, ["calibrate", str(run), "--good", str(good), "--quantile", "0.9"])
    assert res.exit_code == 3 and "skipped" in res.output and "broken.png" in res.output, res.output
    assert json.loads((run / "detector.json").read_text())["threshold"]["quantile"] == 0.9  # the rest was used


# ----------------------------------------------------------------------------- modes and memory
def test_outputs_get_normal_modes_under_umask_022(run_dir, inputs, tmp_path):
    old = os.umask(0o022)
    try:
        from anomaly_ae.io.files import umask

        umask.cache_clear()
        out = tmp_path / "out"
        assert runner.invoke(app, ["score", str(run_dir), str(inputs), "--out", str(out)]).exit_code == 0
        assert runner.invoke(app, ["export", str(run_dir), "--out", str(tmp_path / "exp")]).exit_code == 0
        from anomaly_ae.detector import Detector

        model = Detector.load(run_dir).save(tmp_path / "copy")
        for root in (out, tmp_path / "exp", model):
            for p in [root, *root.rglob("*")]:
                mode = p.stat().st_mode & 0o777
                assert mode == (0o755 if p.is_dir() else 0o644), (p, oct(mode))
    finally:
        os.umask(old)
        umask.cache_clear()


def test_batches_are_cut_by_pixels_not_only_by_count(tmp_path):
    from anomaly_ae.data.loading import decode_batch

    paths = [_png(tmp_path / f"{i}.png", seed=i, size=40) for i in range(10)]  # 1,600 pixels each
    ends, start = [], 0
    while start < len(paths):
        batch = decode_batch(paths, start, 1, None, max_images=32, pixel_budget=4000)
        assert 1 <= len(batch.paths) <= 3 and len(batch.images) == len(batch.paths)
        ends.append(batch.end)
        start = batch.end
    assert ends == [3, 6, 9, 10]
    one = decode_batch(paths, 0, 1, None, max_images=32, pixel_budget=10)  # one image over budget: a batch of one
    assert one.end == 1


def test_a_finished_training_removes_only_its_own_checkpoint_folder(tmp_path):
    """train_run drops run_dir/checkpoint when done; a folder of the user's of that name is never removed."""
    from anomaly_ae.io.folders import read_manifest, record_outputs
    from anomaly_ae.pipelines.train_finish import drop_checkpoints

    mine = tmp_path / "user" / "checkpoint"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("the user's")
    drop_checkpoints(tmp_path / "user")
    assert (mine / "notes.txt").read_text() == "the user's"

    ours = tmp_path / "run" / "checkpoint"
    ours.mkdir(parents=True)
    record_outputs(tmp_path / "run", "model", ["checkpoint"])
    drop_checkpoints(tmp_path / "run")
    assert not ours.exists() and "checkpoint" not in read_manifest(tmp_path / "run").get("model", [])
