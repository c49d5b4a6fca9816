"""``scores.csv``: one row per scored input, written row by row and renamed into place when complete;
``scores.parquet``: the same table, typed, for a data platform (``--format parquet``)."""

from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path

from anomaly_ae.io.files import write_bytes_atomic

#: ``path`` is relative to the input folder (``\\xNN`` for bytes that are not UTF-8); ``size_bytes`` and
#: ``mtime_ns`` describe the input file as it was scored, so a resumed run re-scores a replaced file;
#: ``normalized_score`` is the score on [0, 1] with the threshold at 0.5 (``Detector.normalize``), last so
#: that the earlier columns keep their positions
CSV_COLUMNS = ("path", "score", "is_anomaly", "threshold", "error", "size_bytes", "mtime_ns", "normalized_score")


def read_scores(path: Path) -> list[list[str]]:
    """The rows (header dropped) of a ``scores.csv`` or its ``.partial``, as they are (any length).

    A last line cut off by a crash (no line end) is dropped, so that its input is scored again; bytes
    that are not UTF-8 (a hand-edited file) become U+FFFD instead of an error. See
    :func:`anomaly_ae.pipelines.score_resume.valid_row` for which rows a resumed run keeps.
    """
    text = path.read_bytes().decode("utf-8", "replace").replace("\x00", "")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    rows = list(csv.reader(io.StringIO(text)))
    return rows[1:]


class ScoresCsv:
    """``scores.csv`` written row by row into ``<name>.partial`` and renamed when closed.

    ``keep`` rows (from an interrupted run being resumed) are written first, after the header.
    Rows reach the file at least every :attr:`FLUSH_SECONDS` (a write system call per row cost
    0.07 ms here); a crash loses at most those last rows, whose inputs a rerun then scores again.
    """

    FLUSH_SECONDS = 0.25

    def __init__(self, path: Path, keep: list[list[str]] | None = None) -> None:
        self.path = path
        self._partial = path.with_name(path.name + ".partial")
        path.parent.mkdir(parents=True, exist_ok=True)
        # header (and the rows kept from an interrupted run) written atomically, then appended to
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(CSV_COLUMNS)
        w.writerows(keep or [])
        write_bytes_atomic(self._partial, buf.getvalue().encode("utf-8"))
        self._f = open(self._partial, "a", newline="", encoding="utf-8")  # noqa: SIM115
        self._w = csv.writer(self._f)
        self._flushed = time.monotonic()

    def write_scored(self, path: str, score: float, anomalous: bool, normalized: float, threshold: float,
                     stat: tuple[int, int] | None = None) -> None:
        """The row of a scored input: its score, the verdict and normalized score its caller decided (the
        model's post-processor), the threshold; ``stat``: ``(size_bytes, mtime_ns)`` of the input as read."""
        self._row([path, f"{score:.8g}", str(bool(anomalous)).lower(), f"{threshold:.8g}", "", *_stat(stat),
                   f"{normalized:.6g}"])

    def write_failed(self, path: str, threshold: float, error: str, stat: tuple[int, int] | None = None) -> None:
        """The row of an input that could not be scored: empty score and verdict, the one-line ``error``."""
        self._row([path, "", "", f"{threshold:.8g}", error, *_stat(stat), ""])

    def _row(self, row: list[str]) -> None:
        self._w.writerow(row)
        if time.monotonic() - self._flushed >= self.FLUSH_SECONDS:
            self._f.flush()
            self._flushed = time.monotonic()

    def close(self) -> None:
        """Flush to disk and move into place."""
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self._partial, self.path)


def _stat(stat: tuple[int, int] | None) -> tuple[str, str]:
    return ("", "") if stat is None else (str(stat[0]), str(stat[1]))


def write_scores_parquet(csv_path: Path, parquet_path: Path) -> int:
    """``scores.csv`` -> ``scores.parquet``: the same columns and rows, typed (``score``/``threshold``
    float64, ``normalized_score`` float64,
    ``is_anomaly`` bool, ``size_bytes``/``mtime_ns`` int64; empty cells -> null). Returns the rows.

    Written atomically, so a reader never sees half a file.
    """
    import pyarrow as pa  # lazy: a dependency of mlflow, needed only here
    import pyarrow.parquet as pq

    rows = [r for r in read_scores(csv_path) if len(r) == len(CSV_COLUMNS)]
    cols = list(zip(*rows, strict=True)) if rows else [()] * len(CSV_COLUMNS)

    def typed(values: tuple[str, ...], kind: str) -> list[object]:
        if kind == "float":
            return [float(v) if v else None for v in values]
        if kind == "int":
            return [int(v) if v else None for v in values]
        if kind == "bool":
            return [v == "true" if v else None for v in values]
        return [v if v else None for v in values]

    kinds = {"path": ("str", pa.string()), "score": ("float", pa.float64()), "is_anomaly": ("bool", pa.bool_()),
             "threshold": ("float", pa.float64()), "error": ("str", pa.string()),
             "size_bytes": ("int", pa.int64()), "mtime_ns": ("int", pa.int64()),
             "normalized_score": ("float", pa.float64())}
    table = pa.table({name: pa.array(typed(values, kinds[name][0]), type=kinds[name][1])
                      for name, values in zip(CSV_COLUMNS, cols, strict=True)})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write_bytes_atomic(parquet_path, sink.getvalue().to_pybytes())
    return len(rows)
