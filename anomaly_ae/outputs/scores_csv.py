"""``scores.csv``: one row per scored input, written row by row and renamed into place when complete."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from anomaly_ae.fileio import write_bytes_atomic

#: ``path`` is relative to the input folder (``\\xNN`` for bytes that are not UTF-8); ``size_bytes`` and
#: ``mtime_ns`` describe the input file as it was scored, so a resumed run re-scores a replaced file
CSV_COLUMNS = ("path", "score", "is_anomaly", "threshold", "error", "size_bytes", "mtime_ns")


def read_scores(path: Path) -> list[list[str]]:
    """The rows (header dropped) of a ``scores.csv`` or its ``.partial``, as they are (any length).

    A last line cut off by a crash (no line end) is dropped, so that its input is scored again; bytes
    that are not UTF-8 (a hand-edited file) become U+FFFD instead of an error. See
    :func:`anomaly_ae.outputs.score_run.valid_row` for which rows a resumed run keeps.
    """
    text = path.read_bytes().decode("utf-8", "replace").replace("\x00", "")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    rows = list(csv.reader(io.StringIO(text)))
    return rows[1:]


class ScoresCsv:
    """``scores.csv`` written row by row (flushed) into ``<name>.partial`` and renamed when closed.

    ``keep`` rows (from an interrupted run being resumed) are written first, after the header.
    """

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

    def write(self, path: str, score: float | None, threshold: float, error: str = "",
              stat: tuple[int, int] | None = None) -> None:
        """One row, flushed; ``score=None`` for a file that could not be scored.

        ``stat``: ``(size_bytes, mtime_ns)`` of the input as it was read (empty when unknown).
        """
        size, mtime = ("", "") if stat is None else (str(stat[0]), str(stat[1]))
        if score is None:
            self._w.writerow([path, "", "", f"{threshold:.8g}", error, size, mtime])
        else:
            self._w.writerow([path, f"{score:.8g}", str(bool(score > threshold)).lower(), f"{threshold:.8g}", "",
                              size, mtime])
        self._f.flush()

    def close(self) -> None:
        """Flush to disk and move into place."""
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self._partial, self.path)
