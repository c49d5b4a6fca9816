"""``score_folder``: the folder pipeline behind ``anomaly-ae score``, as one library call.

::

    summary = score_folder("runs/demo", "inspection/2026-11-27", "scores/2026-11-27")
    summary.n_scored, summary.n_anomalous, summary.n_failed
    score_folder("runs/demo", "inspection/", "scores/", ScoreOptions(heatmaps="anomalous", masks=False))

Streams the folder in batches (never the whole folder in memory): list -> resume state -> decode
(background thread) -> score -> outputs written by worker threads -> one ``scores.csv`` row per
input, in input order, once its files are on disk. A file that cannot be read gets a row with an
empty score and its one-line reason; the run goes on. The options are one :class:`ScoreOptions` record
(or its fields as keywords), the same for both engines. Rerunning after an interruption keeps what is
already scored (:mod:`anomaly_ae.pipelines.score_resume`); what may be written and replaced:
:mod:`anomaly_ae.io.folders`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from anomaly_ae.data.images import list_images
from anomaly_ae.data.uris import UriFile, UriInput, is_uri
from anomaly_ae.detector import Detector
from anomaly_ae.io.folders import OutDirLock, OutputConflict, check_out_dir, read_manifest, record_outputs
from anomaly_ae.io.names import MANIFEST, SCORES_CSV, SCORES_PARQUET
from anomaly_ae.outputs.scores_csv import CSV_COLUMNS, read_scores, write_scores_parquet
from anomaly_ae.outputs.writers import OrderedOutputs
from anomaly_ae.pipelines.options import ScoreOptions
from anomaly_ae.pipelines.score_batch import (
    ScoredFile,
    ScoreListener,
    iter_scored,
    one_opencv_thread,
    output_targets,
    outputs_of,
)
from anomaly_ae.pipelines.score_resume import ScoreRun, derived_files, kinds_for, relative_key, start
from anomaly_ae.pipelines.score_rows import RowSink
from anomaly_ae.progress import Bar, Progress, as_progress


class NoImagesError(ValueError):
    """The input folder holds no images."""


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
        return self.out_dir / SCORES_CSV

    @property
    def scores_parquet(self) -> Path | None:
        """``scores.parquet`` when the folder holds one (``scores_format="parquet"``), else ``None``."""
        path = self.out_dir / SCORES_PARQUET
        return path if path.is_file() else None


def score_folder(
    detector_or_run_dir: Detector | str | Path,
    input_dir: str | Path,
    out_dir: str | Path,
    options: ScoreOptions | None = None,
    *,
    listener: ScoreListener | None = None,
    verbose: int | Progress = 0,
    **option_fields: Any,
) -> ScoreSummary:
    """Score every image under ``input_dir`` (recursively) into ``out_dir``: ``scores.csv`` + outputs.

    ``input_dir``: a local folder, or a URI that an installed ``pyarrow.fs`` file system accepts
    (``s3://bucket/line3``, ``gs://...``, ``hdfs://...``, ``file:///...``; :mod:`anomaly_ae.data.uris`).
    ``out_dir`` is a local (or mounted shared) folder either way.

    Args:
        detector_or_run_dir: a model directory, or a :class:`Detector` saved to or loaded from one
            (its directory is recorded, so that a rerun knows it resumes the same model).
        options: what to write and how (:class:`~anomaly_ae.pipelines.options.ScoreOptions`); its fields may
            also be given as keywords (``heatmaps="none"``), which change ``options``. With
            ``engine="ray"``, Ray Data actors run the same per-batch core (:mod:`anomaly_ae.pipelines.score_ray`):
            same files, same rows, same resume rules. ``scores_format="parquet"`` also writes
            ``scores.parquet`` (``scores.csv`` stays: it is what a rerun resumes from); once an ``out_dir``
            holds one, later runs into it keep it in step.
        listener: receives warnings and per-file progress (see :class:`ScoreListener`).
        verbose: without ``listener``: 1 shows a bar (count, images/s, ETA) and a line per failed
            file on stderr, 0 warnings only (see :class:`~anomaly_ae.progress.Progress`).

    Raises:
        ValueError: an option that cannot be used (one line naming it).
        OutputConflict: ``out_dir`` is unusable or holds results that may not be mixed or replaced.
        ModelDirError: the model directory cannot be loaded.
        NoImagesError: ``input_dir`` holds no images.
        UriError: a URI ``input_dir`` that no installed file system takes, or that cannot be listed.
        RayMissing, RayUnreachable: ``engine="ray"`` without Ray installed, or no cluster at ``address``.
    """
    opts = ScoreOptions.of(options, option_fields)
    out = Path(out_dir)
    det, run_dir = _detector(detector_or_run_dir)
    shown = listener or BarProgress(as_progress(verbose), out)
    warn = _Warnings(shown)
    source, paths, problems = _list_folder(input_dir, out, run_dir, warn)
    if opts.engine == "ray":
        _check_ray(opts)
    ray_quiet = listener is None and not as_progress(verbose).verbose
    summary = _score_into(_Run(det, run_dir, source, paths, out, opts, shown, warn, ray_quiet))
    summary.problems = problems
    return summary


def _list_folder(input_dir: str | Path, out: Path, run_dir: Path,
                 warn: _Warnings) -> tuple[Path | UriInput, list[Path] | list[UriFile], list[str]]:
    """``(the input folder, its images, sub-folders that could not be read)``, refused before any work when
    ``out`` may not be written or the folder holds no image."""
    problems: list[str] = []
    source: Path | UriInput
    paths: list[Path] | list[UriFile]
    if is_uri(input_dir):  # s3://, gs://, hdfs://, file://: listed and read through pyarrow.fs
        source = UriInput.open(str(input_dir))
        check_out_dir(out, {"model directory": run_dir, "input folder": source.local_path})  # file:// as a path
        paths = source.list_images(exclude_local=os.path.realpath(out))
    else:
        source = Path(input_dir)
        check_out_dir(out, {"model directory": run_dir, "input folder": source})
        if (source / MANIFEST).is_file():
            warn(f"input folder {source} is a folder anomaly-ae wrote (its heatmaps/masks are scored as inputs)")
        paths = list_images(source, exclude=[out], problems=problems)  # never score our own heatmaps
    for line in problems:
        warn(line)
    if not paths:
        raise NoImagesError(f"input folder {input_dir} holds no images (png, jpg, jpeg, bmp, tif, tiff)")
    return source, paths, problems


def _check_ray(options: ScoreOptions) -> None:
    """Before any work: a missing Ray extra, or an address where nothing listens, is one line, not a wait."""
    from anomaly_ae.pipelines.score_ray import check_ray_address, require_ray

    require_ray()
    if options.address:
        check_ray_address(options.address)


def _absolute(path: Path) -> Path:
    """``path`` made absolute with ``..`` worked out: ``DIR/sub/../b.png`` is ``DIR/b.png`` (the folder that
    ``sub/..`` names on disk, links followed), so its key and output names stay inside the common folder."""
    if ".." in path.parts:
        return Path(os.path.realpath(path.parent)) / path.name
    return path.absolute()


def _unique_files(paths: list[Path]) -> dict[Path, Path]:
    """``{absolute path (:func:`_absolute`): path as given}`` without repeats of the same file, in order, the
    first occurrence kept."""
    first: dict[Path, Path] = {}
    for p in paths:
        first.setdefault(_absolute(p), p)
    return first


def score_files(
    detector_or_run_dir: Detector | str | Path,
    files: Sequence[str | Path],
    out_dir: str | Path | None = None,
    options: ScoreOptions | None = None,
    *,
    verbose: int | Progress = 0,
    **option_fields: Any,
) -> list[Verdict]:
    """Score the image files ``files``: one :class:`Verdict` each, in order.

    Without ``out_dir`` nothing is written. With it, ``scores.csv`` and the outputs are written and
    resumed exactly as :func:`score_folder` does, keyed by each file's path relative to the files'
    common folder. ``options`` (or its fields as keywords) as :func:`score_folder`'s; the Ray engine and
    ``scores.parquet`` are for folders.

    Raises:
        ValueError: an option that cannot be used.
        OutputConflict, ModelDirError: as :func:`score_folder`.
        NoImagesError: ``files`` is empty.
    """
    opts = ScoreOptions.of(options, option_fields)
    if opts.engine != "local" or opts.scores_format != "csv":
        raise ValueError(f"{'engine=ray' if opts.engine != 'local' else 'scores_format=parquet'} is for a folder: "
                         "give score_folder one folder")
    unique = _unique_files([Path(f) for f in files])
    if not unique:
        raise NoImagesError("no image files to score")
    paths, absolute = list(unique.values()), list(unique)
    det, run_dir = _detector(detector_or_run_dir, need_dir=out_dir is not None)
    progress = as_progress(verbose)
    if det is None:  # loaded once: the verdicts below need its post-processor too
        progress.stage(f"loading the model {run_dir}")
        det = Detector.load(run_dir)
    if out_dir is None:
        with progress.bar("scoring", total=len(paths)) as bar:
            verdicts = []
            for item in iter_scored(det, paths, opts.batch_size, max_pixels=opts.max_pixels):
                verdicts.append(_verdict(det, item.path, item.score, item.error, {}))
                bar.advance()
        return verdicts
    out, root = Path(out_dir), Path(os.path.commonpath([a.parent for a in absolute]))
    listener = BarProgress(progress, out)
    summary = _score_into(_Run(det, run_dir, root, absolute, out, opts, listener, _Warnings(listener)))
    rows = {r[0]: dict(zip(CSV_COLUMNS, r, strict=False)) for r in read_scores(summary.scores_csv)}
    return [_file_verdict(det, p, relative_key(a, root), rows, summary, opts)
            for p, a in zip(paths, absolute, strict=True)]


def _file_verdict(det: Detector, path: Path, key: str, rows: dict[str, dict[str, str]], summary: ScoreSummary,
                  options: ScoreOptions) -> Verdict:
    """The :class:`Verdict` of ``path`` from its row ``key`` of the ``scores.csv`` just written."""
    row = rows.get(key, {})
    score = float(row["score"]) if row.get("score") else None
    anomalous = score is not None and bool(det.postprocessor_.is_anomalous(score))
    wanted = kinds_for(summary.outputs, anomalous, options.heatmaps)
    files_out = dict(zip(wanted, derived_files(summary.out_dir, key, wanted), strict=True)) if score is not None \
        else {}
    return _verdict(det, path, score, row.get("error") or (None if row else "not scored"), files_out)


@dataclass
class Verdict:
    """One file's result: its score (``None`` when it failed), normalized score, verdict and files written."""

    path: Path
    score: float | None
    normalized: float | None  # on [0, 1], the image threshold at 0.5
    is_anomaly: bool | None
    threshold: float
    error: str | None = None
    outputs: dict[str, Path] = field(default_factory=dict)  # heatmaps / masks / maps -> file

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: paths as strings."""
        return {"path": str(self.path), "score": self.score, "normalized_score": self.normalized,
                "is_anomaly": self.is_anomaly, "threshold": self.threshold, "error": self.error,
                "outputs": {k: str(v) for k, v in self.outputs.items()}}


def _verdict(det: Detector, path: Path, score: float | None, error: str | None, outputs: dict[str, Path]) -> Verdict:
    post = det.postprocessor_
    if score is None:
        return Verdict(path, None, None, None, post.threshold, error or "not scored")
    return Verdict(path, score, float(post.normalize(np.array([score]))[0]), bool(post.is_anomalous(score)),
                   post.threshold, None, outputs)


@dataclass
class _Run:
    """One scoring run into ``out``: what scores, what is scored, how, and who hears of it."""

    det: Detector | None  # None: loaded from run_dir once out_dir is known to be usable
    run_dir: Path
    source: Path | UriInput
    paths: Sequence[Path | UriFile]
    out: Path
    options: ScoreOptions
    listener: ScoreListener
    warn: _Warnings
    ray_quiet: bool = False  # Ray's own warnings off too (-q)


def _score_into(run: _Run) -> ScoreSummary:
    """Score ``run.paths`` into ``run.out``, resuming an earlier run there."""
    out, options = run.out, run.options
    created = not out.exists()
    try:
        if run.det is None:
            if isinstance(run.listener, BarProgress):
                run.listener.progress.stage(f"loading the model {run.run_dir}")
            run.det = Detector.load(run.run_dir)
        out.mkdir(parents=True, exist_ok=True)
        with OutDirLock(out):
            parquet = out / SCORES_PARQUET
            ours = SCORES_PARQUET in read_manifest(out).get("scores", [])  # a parquet file a run of ours wrote
            if options.scores_format == "parquet" and (parquet.exists() or parquet.is_symlink()) and not ours:
                raise OutputConflict(f"{out} holds a {SCORES_PARQUET} that anomaly-ae did not write: move it, or "
                                     "choose another out_dir")  # overwrite replaces only what we wrote
            state = start(out, run.run_dir, run.source, run.paths, options.kinds, resume=options.resume,
                          overwrite=options.overwrite, heatmaps=options.heatmaps)
            for line in state.notes:
                run.warn(line)
            run.listener.started(len(state.todo), len(state.keep) if state.resumed else None)
            try:
                sink = _score_todo(run, state)
            finally:
                if hasattr(run.listener, "close"):
                    run.listener.close()
            # once written by us (and not removed by overwrite), kept in step with scores.csv; a user's is left
            if options.scores_format == "parquet" or (ours and parquet.is_file()):
                write_scores_parquet(out / SCORES_CSV, parquet)
                record_outputs(out, "scores", [SCORES_PARQUET])
    except Exception:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a run refused before writing anything leaves no empty folder behind
        raise
    return ScoreSummary(out, sink.n_scored, sink.n_anomalous, sink.n_failed, len(state.keep),
                        run.det.postprocessor_.threshold, options.kinds, run.warn.lines)


class BarProgress:
    """The :class:`ScoreListener` of ``verbose``: warnings, the resume line, a bar and one line per failed file."""

    def __init__(self, progress: Progress, out: Path) -> None:
        self.progress, self.out = progress, out
        self._stack = contextlib.ExitStack()
        self._bar: Bar | None = None

    def warning(self, line: str) -> None:
        self.progress.warning(line)

    def started(self, todo: int, kept: int | None) -> None:
        if kept is not None:
            self.progress.stage(f"resuming: {kept} already scored in {self.out}, {todo} to go")
        else:
            self.progress.stage(f"scoring {todo} images into {self.out}")
        self._bar = self._stack.enter_context(self.progress.bar("scoring", total=todo))

    def done(self, rel: str, error: str | None) -> None:
        if error is not None:
            self.progress.warning(f"{rel}: {error}", label="failed")
        if self._bar is not None:
            self._bar.advance()

    def close(self) -> None:
        self._stack.close()


class _Warnings:
    """Collects warning lines and passes each to the progress listener as it comes."""

    def __init__(self, progress: ScoreListener | None) -> None:
        self.progress = progress
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        if self.progress is not None:
            self.progress.warning(line)


def _detector(detector_or_run_dir: Detector | str | Path, need_dir: bool = True) -> tuple[Detector | None, Path]:
    """``(detector or None to load, its model directory)``."""
    if isinstance(detector_or_run_dir, Detector):
        run_dir = getattr(detector_or_run_dir, "source_dir_", None)
        if run_dir is None and need_dir:
            raise ValueError("score_folder records which model directory scored a folder (so that a rerun resumes "
                             "the same model): save the detector first, or pass its model directory")
        detector_or_run_dir.check_fitted(need_threshold=True)
        return detector_or_run_dir, Path(run_dir)
    return None, Path(detector_or_run_dir)


def _score_todo(run: _Run, state: ScoreRun) -> RowSink:
    """Score ``state.todo`` into ``run.out`` on the chosen engine: each row reaches the sink after its files, in
    input order. Returns the closed sink (its counts)."""
    det, options = run.det, run.options
    sink = RowSink(run.out / SCORES_CSV, state.keep, det.postprocessor_, run.listener)
    if options.engine == "ray":
        from anomaly_ae.pipelines.score_ray import score_todo_ray

        sized = options.with_(batch_size=options.batch_size or det.config_.scoring.batch_size)
        score_todo_ray(run.run_dir, state.todo, run.source, run.out, sized, sink, quiet=run.ray_quiet)
        sink.close()
        return sink
    post = det.postprocessor_
    budget = det.config_.scoring.batch_megapixels * 1e6 * 8  # bytes of images + maps waiting for their files

    def row(rel: str, item: ScoredFile, problem: dict[str, str]) -> None:
        sink.add(rel, item.score, item.error or problem.get("error"), item.stat)

    with one_opencv_thread(), OrderedOutputs(max_pending_cost=budget) as writer:
        for item in iter_scored(det, state.todo, options.batch_size, max_pixels=options.max_pixels):
            rel, targets = output_targets(item, run.source, run.out, options.kinds, options.heatmaps, post)
            problem: dict[str, str] = {}
            if item.error is None:
                writer.submit(outputs_of(item, targets, post, problem, options.legend),
                              partial(row, rel, item, problem), cost=item.image.nbytes + item.amap.nbytes)
            else:
                writer.submit(None, partial(row, rel, item, problem))
    sink.close()
    return sink


__all__ = ["BarProgress", "NoImagesError", "OutputConflict", "ScoreListener", "ScoreOptions", "ScoreSummary",
           "Verdict", "score_files", "score_folder"]
