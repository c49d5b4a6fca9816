"""The per-batch scoring core that every engine runs: score a few files, write their outputs, return their rows.

``score_folder`` streams a folder through it in one process (with the writing pipelined in threads);
the Ray engine (:mod:`anomaly_ae.pipelines.score_ray`) runs :func:`score_batch` in actors. Both
write the same files under the same names and the same ``scores.csv`` rows.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from anomaly_ae.data.loading import DecodedBatch, decode_batch, decode_threads
from anomaly_ae.io.files import output_path, write_jpeg_atomic, write_npy_atomic, write_png_atomic
from anomaly_ae.io.names import SCORE_OUTPUTS
from anomaly_ae.outputs.overlays import Caption, heatmap_picture
from anomaly_ae.pipelines.score_resume import kinds_for, relative_key

if TYPE_CHECKING:
    from anomaly_ae.data.uris import UriFile, UriInput
    from anomaly_ae.detector import Detector
    from anomaly_ae.pipelines.options import ScoreOptions
    from anomaly_ae.postprocessing import PostProcessor


@dataclass
class ScoredFile:
    """One file of a streamed batch: the decoded image with its score and map, or why it failed."""

    path: Path | UriFile
    image: np.ndarray | None = None  # uint8 (H, W, C) as read
    score: float | None = None
    amap: np.ndarray | None = None  # (H, W) float32 at the image's size
    error: str | None = None
    stat: tuple[int, int] | None = None  # (size_bytes, mtime_ns) of the file as it was read


def iter_scored(
    det: Detector, paths: Sequence[Path | UriFile], batch_size: int | None = None, max_pixels: int | None = None,
    batch_megapixels: float | None = None,
) -> Iterator[ScoredFile]:
    """Stream ``paths`` in batches: one :class:`ScoredFile` per path, in order.

    A file that cannot be read yields ``error`` (its one-line reason) instead of a score. A batch
    ends at ``batch_size`` images or once its decoded images hold ``batch_megapixels``
    (default ``scoring.batch_megapixels``), so memory is bounded by pixels, not by image count.
    The next batch is decoded in a background thread while the model works on the current one
    (OpenCV releases the GIL), its files spread over :func:`~anomaly_ae.data.loading.decode_threads`
    threads: at most two batches of images are in memory at a time.
    ``max_pixels``: larger files are refused from their header (default:
    :func:`~anomaly_ae.data.images.max_pixels_default`). An anomaly map that is not finite (a numerical
    fault of the model) is reported as that file's error.
    """
    det.check_fitted(need_threshold=False)
    s = det.config_.scoring
    limits = (det.preprocessing_.channels, max_pixels, batch_size or s.batch_size,
              int((batch_megapixels or s.batch_megapixels) * 1e6))
    threads = decode_threads()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool, \
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode-file") as files:
        limits = (*limits, files if threads > 1 else None)
        pending = pool.submit(decode_batch, paths, 0, *limits) if paths else None
        while pending is not None:
            batch = pending.result()
            pending = pool.submit(decode_batch, paths, batch.end, *limits) if batch.end < len(paths) else None
            yield from _score_decoded(det, batch)


def _score_decoded(det: Detector, batch: DecodedBatch) -> Iterator[ScoredFile]:
    scored = iter(())
    if batch.images:
        scores, maps = det.score_images(list(batch.images.values()))
        scored = iter(zip(scores, maps, strict=True))
    for i, p in enumerate(batch.paths):
        stat = batch.stats.get(i)
        if i in batch.errors:
            yield ScoredFile(p, error=batch.errors[i], stat=stat)
            continue
        s, amap = next(scored)
        if not np.isfinite(np.sum(amap, dtype=np.float64) + s):  # any NaN/inf makes the sum one; no full-size mask
            yield ScoredFile(p, error="anomaly map is not finite (NaN/inf): a numerical fault of the model",
                             stat=stat)
            continue
        yield ScoredFile(p, image=batch.images[i], score=float(s), amap=amap, stat=stat)


#: errors of writing one file's outputs that fail that file only (a name this file system cannot take);
#: any other (disk full, read-only, permission) stops the run, which a rerun then resumes
PER_FILE_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.EILSEQ, errno.EINVAL})


class ScoreListener(Protocol):
    """What :func:`score_folder` reports while it runs (all optional to act on)."""

    def warning(self, line: str) -> None:
        """A one-line warning (an unreadable sub-folder, rows of an earlier run dropped, ...)."""

    def started(self, todo: int, kept: int | None) -> None:
        """Scoring begins: ``todo`` inputs to score; ``kept`` rows kept from an earlier run (``None``: a fresh run)."""

    def done(self, rel: str, error: str | None) -> None:
        """One input is complete (``error``: why it failed, else ``None``)."""


@contextlib.contextmanager
def one_opencv_thread() -> Iterator[None]:
    """OpenCV without its own thread pool while scoring, restored after.

    Scoring already runs one image per worker thread next to the model's threads; OpenCV splitting
    each small image over its pool on top of that only adds overhead (measured: a heatmap overlay
    of 256 px took 0.69 ms of CPU with the pool, 0.24 ms without) and takes cores from the model.
    """
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


@dataclass
class ScoredRow:
    """One input's ``scores.csv`` row, once its output files are on disk (``score`` ``None``: ``error`` says why)."""

    rel: str
    score: float | None
    error: str | None
    stat: tuple[int, int] | None


def output_targets(item: ScoredFile, input_dir: Path | UriInput, out: Path, kinds: Sequence[str],
                   heatmaps: str = "all", post: PostProcessor | None = None) -> tuple[str, dict[str, Path]]:
    """``(key in scores.csv, {kind: output file})`` of a scored file; a name that would land outside ``out``
    (e.g. through a link planted in it) becomes the file's error instead. ``heatmaps="anomalous"``: a
    heatmap only when ``post`` finds the image anomalous."""
    rel = relative_key(item.path, input_dir)
    anomalous = item.score is not None and post is not None and bool(post.is_anomalous(item.score))
    try:
        return rel, {kind: output_path(out / kind, rel, SCORE_OUTPUTS[kind])
                     for kind in kinds_for(kinds, anomalous, heatmaps)}
    except ValueError as err:
        item.error = item.error or str(err)
        return rel, {}


def score_batch(det: Detector, paths: Sequence[Path | UriFile], input_dir: Path | UriInput, out: Path,
                options: ScoreOptions) -> list[ScoredRow]:
    """Score ``paths`` as one model batch and write their outputs (``options.kinds``) under ``out``; one row per
    path, in order."""
    rows = []
    post = det.postprocessor_
    for item in iter_scored(det, list(paths), max(1, len(paths)), max_pixels=options.max_pixels):
        rel, targets = output_targets(item, input_dir, out, options.kinds, options.heatmaps, post)
        problem: dict[str, str] = {}
        if item.error is None:
            outputs_of(item, targets, post, problem, options.legend)()
        error = item.error or problem.get("error")
        rows.append(ScoredRow(rel, None if error else item.score, error, item.stat))
    return rows


def outputs_of(item: ScoredFile, targets: dict[str, Path], post: PostProcessor, problem: dict[str, str],
               legend: bool = True) -> Callable[[], None]:
    """The work of writing one scored input's outputs (run in a worker thread while the model scores on).

    Heatmaps are JPEG (quality :data:`~anomaly_ae.io.files.JPEG_QUALITY`), with a legend strip under
    each (``legend``) that gives the score and ``post``'s verdict; masks are ``post.mask`` as 1-bit PNG
    (0/255 when read), raw maps float32 ``.npy``. A write that fails for this file alone puts its
    reason in ``problem["error"]``.
    """
    image, amap = item.image, item.amap
    caption = Caption(item.score, post.threshold, bool(post.is_anomalous(item.score))) if legend else None

    def work() -> None:
        try:
            if "heatmaps" in targets:
                write_jpeg_atomic(targets["heatmaps"], heatmap_picture(
                    image, amap, post.heatmap_range, post.pixel_threshold, caption))
            if "masks" in targets:
                write_png_atomic(targets["masks"], np.multiply(post.mask(amap), 255, dtype=np.uint8),
                                 bilevel=True)
            if "maps" in targets:
                write_npy_atomic(targets["maps"], amap)
        except OSError as err:  # a name this file system cannot take, a picture no encoder takes: this file only
            if err.errno not in PER_FILE_ERRNOS:
                raise
            problem["error"] = f"cannot write its outputs: {err.strerror or err}"

    return work
