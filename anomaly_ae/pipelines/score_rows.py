"""Where both scoring engines put their rows: one sink for ``scores.csv``, the counts and the listener.

The local engine (:mod:`anomaly_ae.pipelines.score`) and the Ray engine (:mod:`anomaly_ae.pipelines.score_ray`)
hand it one row per input, in input order, once that input's files are on disk; the verdict and the
normalized score of each row come from the model's :class:`~anomaly_ae.postprocessing.PostProcessor`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anomaly_ae.outputs.scores_csv import ScoresCsv
from anomaly_ae.pipelines.score_batch import ScoreListener
from anomaly_ae.postprocessing import PostProcessor


class RowSink:
    """``scores.csv`` at ``path`` (the ``keep`` rows of an earlier run first), the running counts, and one
    :meth:`ScoreListener.done` per row added.

    Attributes:
        n_scored: rows with a score, kept rows included.
        n_anomalous: of those, the ones ``post`` finds anomalous.
        n_failed: rows with an error instead of a score (this run's).
    """

    def __init__(self, path: Path, keep: list[list[str]], post: PostProcessor, listener: ScoreListener) -> None:
        self.post, self.listener = post, listener
        self.csv = ScoresCsv(path, keep=keep)
        self.n_scored = len(keep)
        self.n_anomalous = sum(r[2] == "true" for r in keep)
        self.n_failed = 0

    def add(self, rel: str, score: float | None, error: str | None, stat: tuple[int, int] | None) -> None:
        """One input's row: its ``score``, or ``error`` (its one-line reason; ``score`` is then ignored).

        ``stat``: ``(size_bytes, mtime_ns)`` of the input as it was read (``None`` when unknown).
        """
        post = self.post
        if error or score is None:
            self.n_failed += 1
            self.csv.write_failed(rel, post.threshold, error or "not scored", stat)
        else:
            anomalous = bool(post.is_anomalous(score))
            self.n_scored += 1
            self.n_anomalous += anomalous
            self.csv.write_scored(rel, score, anomalous, float(post.normalize(np.float64(score))), post.threshold,
                                  stat)
        self.listener.done(rel, error or None)

    def close(self) -> None:
        """``scores.csv`` flushed and moved into place."""
        self.csv.close()
