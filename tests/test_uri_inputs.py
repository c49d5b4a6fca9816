"""Input folders given as ``pyarrow.fs`` URIs, and ``--format parquet``.

Only ``file://`` is reachable here; it goes through the same Arrow listing and reading as ``s3://``.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from anomaly_ae.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def model(tiny_detector, tmp_path_factory) -> Path:
    return tiny_detector.save(tmp_path_factory.mktemp("model") / "run")


@pytest.fixture()
def folder(tiny_data, tmp_path) -> Path:
    """The tiny test images in two sub-folders, one unreadable file, one hidden file and our own output inside."""
    root = tmp_path / "in"
    shutil.copytree(tiny_data / "test", root)
    (root / "good" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (root / ".hidden.png").write_bytes(b"not looked at")
    return root


def _rows(out: Path) -> list[list[str]]:
    with open(out / "scores.csv", newline="") as f:
        return list(csv.reader(f))


def test_a_file_uri_scores_like_the_folder_and_resumes(model, folder, tmp_path):
    from anomaly_ae import score_folder

    by_path = score_folder(model, folder, tmp_path / "by_path")
    uri = folder.as_uri()  # file:///.../in
    out = tmp_path / "by_uri"
    by_uri = score_folder(model, uri, out)
    assert (by_uri.n_scored, by_uri.n_failed) == (by_path.n_scored, by_path.n_failed) == (10, 1)
    assert _rows(out) == _rows(tmp_path / "by_path")  # the same keys, scores, verdicts, sizes and times
    heat = sorted(p.relative_to(out).as_posix() for p in (out / "heatmaps").rglob("*.jpg"))
    assert heat == sorted(p.relative_to(tmp_path / "by_path").as_posix()
                          for p in (tmp_path / "by_path" / "heatmaps").rglob("*.jpg"))
    assert len(heat) == 10

    again = score_folder(model, uri, out)  # nothing changed: every good row is kept, the failed file is retried
    assert (again.n_kept, again.n_failed) == (10, 1)
    changed = next((folder / "good").glob("0*.png"))
    os.utime(changed, ns=(1, 1))  # a replaced file (another modification time) is scored again
    third = score_folder(model, uri, out)
    assert third.n_kept == 9 and third.n_scored == 10
    assert any("changed since" in w for w in third.warnings)
    with pytest.raises(Exception, match="another input folder"):  # the same folder by path is another input
        score_folder(model, folder, out)


def test_parquet_holds_the_rows_of_the_csv_typed(model, folder, tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    res = runner.invoke(app, ["score", str(model), str(folder), "--out", str(out), "--format", "parquet", "--json"])
    assert res.exit_code == 3, res.output  # one file could not be read
    table = pq.read_table(out / "scores.parquet")
    assert table.schema.field("score").type == "double" and table.schema.field("is_anomaly").type == "bool"
    rows = _rows(out)[1:]
    got = table.to_pylist()
    assert [r["path"] for r in got] == [r[0] for r in rows]
    for row, rec in zip(rows, got, strict=True):
        if row[4]:  # the unreadable file: nulls where the CSV is empty
            assert rec["score"] is None and rec["is_anomaly"] is None and rec["error"] == row[4]
        else:
            assert rec["score"] == float(row[1]) and rec["is_anomaly"] == (row[2] == "true")
            assert (rec["size_bytes"], rec["mtime_ns"], rec["error"]) == (int(row[5]), int(row[6]), None)

    (folder / "good" / "broken.png").unlink()  # a later run without --format keeps the parquet in step
    assert runner.invoke(app, ["score", str(model), str(folder), "--out", str(out), "-q"]).exit_code == 0
    assert pq.read_table(out / "scores.parquet").num_rows == len(_rows(out)) - 1 == 10
    assert runner.invoke(app, ["score", str(model), str(folder), "--out", str(out), "--overwrite", "--no-heatmaps",
                               "--no-masks", "-q"]).exit_code == 0
    assert not (out / "scores.parquet").exists()  # --overwrite removed it, and this run did not ask for it


@pytest.mark.parametrize(("uri", "why"), [
    ("nosuchfs://bucket/x", "INPUT nosuchfs://bucket/x: "),
    ("file:///no/such/folder", "INPUT file:///no/such/folder does not exist"),
])
def test_an_unusable_uri_is_one_line(model, tmp_path, uri, why):
    res = runner.invoke(app, ["score", str(model), uri, "--out", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {why}"), res.output
    assert not (tmp_path / "o").exists()
