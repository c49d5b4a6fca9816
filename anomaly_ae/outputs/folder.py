"""``score_folder``: the folder pipeline behind ``anomaly-ae score``, as one library call.

::

    summary = score_folder("runs/demo", "inspection/2026-11-27", "scores/2026-11-27")
    summary.n_scored, summary.n_anomalous, summary.n_failed

Streams the folder in batches (never the whole folder in memory): list -> resume state -> decode
(background thread) -> score -> outputs written by worker threads -> one ``scores.csv`` row per
input, in input order, once its files are on disk. A file that cannot be read gets a row with an
empty score and its one-line reason; the run goes on. Rerunning after an interruption keeps what is
already scored (:mod:`anomaly_ae.outputs.score_run`); what may be written and replaced:
:mod:`anomaly_ae.outdir`.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from anomaly_ae.data.images import list_images
from anomaly_ae.detector import Detector, ScoredFile
from anomaly_ae.fileio import MANIFEST_NAME, output_path, write_npy_atomic, write_png_atomic
from anomaly_ae.outdir import OutDirLock, OutputConflict, check_out_dir
from anomaly_ae.outputs.overlays import heatmap_overlay
from anomaly_ae.outputs.score_run import OUTPUTS, ScoreRun, relative_key, start
from anomaly_ae.outputs.scores_csv import ScoresCsv
from anomaly_ae.outputs.writers import OrderedOutputs

if TYPE_CHECKING:
    from anomaly_ae.postprocessing import PostProcessor

#: errors of writing one file's outputs that fail that file only (a name this file system cannot take);
#: any other (disk full, read-only, permission) stops the run, which a rerun then resumes
PER_FILE_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.EILSEQ, errno.EINVAL})


class NoImagesError(ValueError):
    """The input folder holds no images."""


class FolderProgress(Protocol):
    """What :func:`score_folder` reports while it runs (all optional to act on)."""

    def warning(self, line: str) -> None:
        """A one-line warning (an unreadable sub-folder, rows of an earlier run dropped, ...)."""

    def started(self, todo: int, kept: int | None) -> None:
        """Scoring begins: ``todo`` inputs to score; ``kept`` rows kept from an earlier run (``None``: a fresh run)."""

    def done(self, rel: str, error: str | None) -> None:
        """One input is complete (``error``: why it failed, else ``None``)."""


@dataclass
class ScoreSummary:
    """What :func:`score_folder` did. ``partial`` is true when some input or sub-folder failed."""

    out_dir: Path
    n_scored: int  # inputs with a score in scores.csv (kept rows of an earlier run included)
    n_anomalous: int
    n_failed: int
    n_kept: int  # rows kept from an interrupted earlier run
    threshold: float
    outputs: list[str]  # derived outputs written: heatmaps, masks, maps
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # sub-folders that could not be read

    @property
    def partial(self) -> bool:
        """True when some file or sub-folder could not be scored."""
        return bool(self.n_failed or self.problems)

    @property
    def scores_csv(self) -> Path:
        """The ``scores.csv`` written."""
        return self.out_dir / "scores.csv"


def score_folder(
    detector_or_run_dir: Detector | str | Path,
    input_dir: str | Path,
    out_dir: str | Path,
    *,
    batch_size: int | None = None,
    heatmaps: bool = True,
    masks: bool = True,
    raw_maps: bool = False,
    resume: bool = True,
    overwrite: bool = False,
    max_megapixels: float | None = None,
    progress: FolderProgress | None = None,
) -> ScoreSummary:
    """Score every image under ``input_dir`` (recursively) into ``out_dir``: ``scores.csv`` + outputs.

    Args:
        detector_or_run_dir: a model directory, or a :class:`Detector` saved to or loaded from one
            (its directory is recorded, so that a rerun knows it resumes the same model).
        batch_size: images per model call (default ``scoring.batch_size``).
        heatmaps, masks, raw_maps: write ``heatmaps/<rel>.png`` overlays, ``masks/<rel>.png`` (0/255
            from the pixel threshold), ``maps/<rel>.npy`` float32 anomaly maps.
        resume: keep the rows of an earlier run into ``out_dir`` and score the rest.
        overwrite: start over, removing only the scores and maps an earlier run wrote.
        max_megapixels: refuse larger images from their header (default 100).
        progress: receives warnings and per-file progress (see :class:`FolderProgress`).

    Raises:
        OutputConflict: ``out_dir`` is unusable or holds results that may not be mixed or replaced.
        ModelDirError: the model directory cannot be loaded.
        NoImagesError: ``input_dir`` holds no images.
    """
    input_dir, out = Path(input_dir), Path(out_dir)
    det, run_dir = _detector(detector_or_run_dir)
    warn = _Warnings(progress)
    check_out_dir(out, {"model directory": run_dir, "input folder": input_dir})
    if (input_dir / MANIFEST_NAME).is_file():
        warn(f"INPUT_DIR {input_dir} is a folder anomaly-ae wrote (its heatmaps/masks are scored as inputs)")
    problems: list[str] = []
    paths = list_images(input_dir, exclude=[out], problems=problems)  # never score our own heatmaps
    for line in problems:
        warn(line)
    if not paths:
        raise NoImagesError(f"INPUT_DIR {input_dir} holds no images (png, jpg, jpeg, bmp, tif, tiff)")
    kinds = [k for k, on in (("heatmaps", heatmaps), ("masks", masks), ("maps", raw_maps)) if on]
    created = not out.exists()
    try:
        if det is None:
            det = Detector.load(run_dir)
        out.mkdir(parents=True, exist_ok=True)
        with OutDirLock(out):
            state = start(out, run_dir, input_dir, paths, kinds, resume=resume, overwrite=overwrite)
            for line in state.notes:
                warn(line)
            if progress is not None:
                progress.started(len(state.todo), len(state.keep) if state.resumed else None)
            counts = _score_todo(det, state, input_dir, out, kinds, batch_size, max_megapixels, progress)
    except Exception:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a run refused before writing anything leaves no empty folder behind
        raise
    return ScoreSummary(out, *counts, len(state.keep), det.postprocessor_.threshold, kinds, warn.lines, problems)


class _Warnings:
    """Collects warning lines and passes each to the progress listener as it comes."""

    def __init__(self, progress: FolderProgress | None) -> None:
        self.progress = progress
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        if self.progress is not None:
            self.progress.warning(line)


def _detector(detector_or_run_dir: Detector | str | Path) -> tuple[Detector | None, Path]:
    """``(detector or None to load, its model directory)``."""
    if isinstance(detector_or_run_dir, Detector):
        run_dir = getattr(detector_or_run_dir, "source_dir_", None)
        if run_dir is None:
            raise ValueError("score_folder records which model directory scored a folder (so that a rerun resumes "
                             "the same model): save the detector first, or pass its model directory")
        detector_or_run_dir.check_fitted(need_threshold=True)
        return detector_or_run_dir, Path(run_dir)
    return None, Path(detector_or_run_dir)


def _score_todo(det: Detector, state: ScoreRun, input_dir: Path, out: Path, kinds: list[str],
                batch_size: int | None, max_megapixels: float | None, progress: FolderProgress | None,
                ) -> tuple[int, int, int]:
    """Score ``state.todo`` into ``out`` (rows after their files, in input order); ``(ok, anomalous, failed)``."""
    post = det.postprocessor_
    counts = {"ok": len(state.keep), "failed": 0, "anomalous": sum(r[2] == "true" for r in state.keep)}
    csv_out = ScoresCsv(out / "scores.csv", keep=state.keep)

    def row(rel: str, item: ScoredFile, problem: dict[str, str]) -> None:
        error = item.error or problem.get("error")
        if error is not None:
            counts["failed"] += 1
            csv_out.write(rel, None, post.threshold, error, item.stat)
        else:
            counts["ok"] += 1
            counts["anomalous"] += int(post.is_anomalous(item.score))
            csv_out.write(rel, item.score, post.threshold, "", item.stat)
        if progress is not None:
            progress.done(rel, error)

    budget = det.config.scoring.batch_megapixels * 1e6 * 8  # bytes of images + maps waiting for their files
    max_pixels = None if max_megapixels is None else int(max_megapixels * 1e6)
    with OrderedOutputs(max_pending_cost=budget) as writer:
        for item in det.iter_score(state.todo, batch_size, max_pixels=max_pixels):
            rel = relative_key(item.path, input_dir)
            try:  # outputs never land outside OUT_DIR (e.g. through a link planted in it)
                targets = {kind: output_path(out / kind, rel, OUTPUTS[kind]) for kind in kinds}
            except ValueError as err:
                item.error = item.error or str(err)
            problem: dict[str, str] = {}
            if item.error is None:
                writer.submit(_outputs_of(item.image, item.amap, targets, post, problem),
                              partial(row, rel, item, problem), cost=item.image.nbytes + item.amap.nbytes)
            else:
                writer.submit(None, partial(row, rel, item, problem))
    csv_out.close()
    return counts["ok"], counts["anomalous"], counts["failed"]


def _outputs_of(image: np.ndarray, amap: np.ndarray, targets: dict[str, Path], post: PostProcessor,
                problem: dict[str, str]) -> Callable[[], None]:
    """The work of writing one input's outputs (run in a worker thread while the model scores on)."""

    def work() -> None:
        try:
            if "heatmaps" in targets:
                write_png_atomic(targets["heatmaps"], heatmap_overlay(image, amap, post.heatmap_range))
            if "masks" in targets:
                write_png_atomic(targets["masks"], post.defect_mask(amap).astype(np.uint8) * 255)
            if "maps" in targets:
                write_npy_atomic(targets["maps"], amap)
        except OSError as err:  # a name this file system cannot take fails this file, not the run
            if err.errno not in PER_FILE_ERRNOS:
                raise
            problem["error"] = f"cannot write its outputs: {err.strerror or err}"

    return work


__all__ = ["FolderProgress", "NoImagesError", "OutputConflict", "ScoreSummary", "score_folder"]
