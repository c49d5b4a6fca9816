"""``score_folder``: the folder pipeline behind ``anomaly-ae score``, as one library call.

::

    summary = score_folder("runs/demo", "inspection/2026-11-27", "scores/2026-11-27")
    summary.n_scored, summary.n_anomalous, summary.n_failed

Streams the folder in batches (never the whole folder in memory): list -> resume state -> decode
(background thread) -> score -> outputs written by worker threads -> one ``scores.csv`` row per
input, in input order, once its files are on disk. A file that cannot be read gets a row with an
empty score and its one-line reason; the run goes on. Rerunning after an interruption keeps what is
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
from anomaly_ae.io.folders import OutDirLock, OutputConflict, check_out_dir, read_manifest, record
from anomaly_ae.io.names import MANIFEST, SCORES_CSV, SCORES_PARQUET
from anomaly_ae.outputs.scores_csv import CSV_COLUMNS, ScoresCsv, read_scores, write_scores_parquet
from anomaly_ae.outputs.writers import OrderedOutputs
from anomaly_ae.pipelines.score_batch import (
    FolderProgress,
    ScoredFile,
    iter_scored,
    one_opencv_thread,
    output_targets,
    outputs_of,
)
from anomaly_ae.pipelines.score_resume import (
    HEATMAP_POLICIES,
    ScoreRun,
    derived_files,
    kinds_for,
    relative_key,
    start,
)
from anomaly_ae.progress import Bar, Progress, as_progress

#: which inputs get a heatmap by default (``score --heatmaps``): see :func:`heatmap_policy`
DEFAULT_HEATMAPS = "all"


def heatmap_policy(heatmaps: str | bool) -> str:
    """``"all"``, ``"anomalous"`` (score above the image threshold) or ``"none"``; ``True``/``False`` mean all/none.

    Raises:
        ValueError: another value.
    """
    if isinstance(heatmaps, bool):
        return "all" if heatmaps else "none"
    if heatmaps not in HEATMAP_POLICIES:
        raise ValueError(f"heatmaps must be one of {', '.join(HEATMAP_POLICIES)}, not {heatmaps!r}")
    return heatmaps


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
    *,
    batch_size: int | None = None,
    heatmaps: str | bool = DEFAULT_HEATMAPS,
    masks: bool = True,
    raw_maps: bool = False,
    legend: bool = True,
    resume: bool = True,
    overwrite: bool = False,
    max_megapixels: float | None = None,
    progress: FolderProgress | None = None,
    verbose: int | Progress = 0,
    engine: str = "local",
    address: str | None = None,
    actors: int = 1,
    gpus_per_actor: float = 0.0,
    scores_format: str = "csv",
) -> ScoreSummary:
    """Score every image under ``input_dir`` (recursively) into ``out_dir``: ``scores.csv`` + outputs.

    ``input_dir``: a local folder, or a URI that an installed ``pyarrow.fs`` file system accepts
    (``s3://bucket/line3``, ``gs://...``, ``hdfs://...``, ``file:///...``; :mod:`anomaly_ae.data.uris`).
    ``out_dir`` is a local (or mounted shared) folder either way.

    Args:
        detector_or_run_dir: a model directory, or a :class:`Detector` saved to or loaded from one
            (its directory is recorded, so that a rerun knows it resumes the same model).
        batch_size: images per model call (default ``scoring.batch_size``).
        heatmaps: which inputs get a ``heatmaps/<rel>.jpg`` overlay (JPEG, quality 90): ``"all"``,
            ``"anomalous"`` (score above the image threshold) or ``"none"`` (``True``/``False``: all/none).
        masks, raw_maps: write ``masks/<rel>.png`` (1-bit PNG, 0/255 when read: pixels at or above
            the pixel threshold), ``maps/<rel>.npy`` float32 anomaly maps.
        legend: put a legend strip under each heatmap (:func:`~anomaly_ae.outputs.overlays.with_legend`).
        resume: keep the rows of an earlier run into ``out_dir`` and score the rest.
        overwrite: start over, removing only the scores and maps an earlier run wrote.
        max_megapixels: refuse larger images from their header (default 100).
        progress: receives warnings and per-file progress (see :class:`FolderProgress`).
        verbose: without ``progress``: 1 shows a bar (count, images/s, ETA) and a line per failed
            file on stderr, 0 warnings only (see :class:`~anomaly_ae.progress.Progress`).
        engine: ``"local"`` (this process) or ``"ray"``: Ray Data actors run the same per-batch core
            (:mod:`anomaly_ae.pipelines.score_ray`) on the cluster at ``address`` (``None``: a local Ray,
            started and stopped here), ``actors`` of them with ``gpus_per_actor`` GPUs each. Same files,
            same rows, same resume rules.
        scores_format: ``"csv"``, or ``"parquet"`` to also write ``scores.parquet``: the rows of
            ``scores.csv`` with typed columns (``scores.csv`` stays: it is what a rerun resumes from).
            Once an ``out_dir`` holds ``scores.parquet``, later runs into it keep it in step.

    Raises:
        OutputConflict: ``out_dir`` is unusable or holds results that may not be mixed or replaced.
        ModelDirError: the model directory cannot be loaded.
        NoImagesError: ``input_dir`` holds no images.
        UriError: a URI ``input_dir`` that no installed file system takes, or that cannot be listed.
    """
    out = Path(out_dir)
    det, run_dir = _detector(detector_or_run_dir)
    listener = progress or BarProgress(as_progress(verbose), out)
    warn = _Warnings(listener)
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
            warn(f"INPUT_DIR {source} is a folder anomaly-ae wrote (its heatmaps/masks are scored as inputs)")
        paths = list_images(source, exclude=[out], problems=problems)  # never score our own heatmaps
    for line in problems:
        warn(line)
    if not paths:
        raise NoImagesError(f"INPUT_DIR {input_dir} holds no images (png, jpg, jpeg, bmp, tif, tiff)")
    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', not {engine!r}")
    if scores_format not in ("csv", "parquet"):
        raise ValueError(f"scores_format must be 'csv' or 'parquet', not {scores_format!r}")
    ray = None
    if engine == "ray":
        from anomaly_ae.pipelines.score_ray import RayOptions, check_ray_address, require_ray

        require_ray()  # before any work: a missing extra is one line
        quiet = progress is None and not as_progress(verbose).verbose
        ray = RayOptions(address, actors, gpus_per_actor, quiet=quiet)
        if address:
            check_ray_address(address)  # before any work: nothing listening is one line, not a wait
    options = _Options(batch_size, heatmap_policy(heatmaps), masks, raw_maps, legend, resume, overwrite,
                       max_megapixels, ray, parquet=scores_format == "parquet")
    summary = _score_into(det, run_dir, source, paths, out, options, listener, warn)
    summary.problems = problems
    return summary


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
    *,
    batch_size: int | None = None,
    heatmaps: str | bool = DEFAULT_HEATMAPS,
    masks: bool = True,
    raw_maps: bool = False,
    legend: bool = True,
    resume: bool = True,
    overwrite: bool = False,
    max_megapixels: float | None = None,
    verbose: int | Progress = 0,
) -> list[Verdict]:
    """Score the image files ``files``: one :class:`Verdict` each, in order.

    Without ``out_dir`` nothing is written. With it, ``scores.csv`` and the outputs are written and
    resumed exactly as :func:`score_folder` does, keyed by each file's path relative to the files'
    common folder. Options as :func:`score_folder`'s.

    Raises:
        OutputConflict, ModelDirError: as :func:`score_folder`.
        NoImagesError: ``files`` is empty.
    """
    unique = _unique_files([Path(f) for f in files])
    if not unique:
        raise NoImagesError("no image files to score")
    paths, absolute = list(unique.values()), list(unique)
    det, run_dir = _detector(detector_or_run_dir, need_dir=out_dir is not None)
    root = Path(os.path.commonpath([a.parent for a in absolute]))
    progress = as_progress(verbose)
    if det is None:  # loaded once: the verdicts below need its post-processor too
        progress.stage(f"loading the model {run_dir}")
        det = Detector.load(run_dir)
    if out_dir is None:
        with progress.bar("scoring", total=len(paths)) as bar:
            verdicts = []
            for item in iter_scored(det, paths, batch_size, max_pixels=_pixels(max_megapixels)):
                verdicts.append(_verdict(det, item.path, item.score, item.error, {}))
                bar.advance()
        return verdicts
    out = Path(out_dir)
    listener = BarProgress(progress, out)
    options = _Options(batch_size, heatmap_policy(heatmaps), masks, raw_maps, legend, resume, overwrite,
                       max_megapixels)
    summary = _score_into(det, run_dir, root, absolute, out, options, listener,
                          _Warnings(listener))
    rows = {r[0]: dict(zip(CSV_COLUMNS, r, strict=False)) for r in read_scores(summary.scores_csv)}
    verdicts = []
    for p, a in zip(paths, absolute, strict=True):
        key = relative_key(a, root)
        row = rows.get(key, {})
        score = float(row["score"]) if row.get("score") else None
        wanted = kinds_for(summary.outputs, score is not None and score > summary.threshold, options.heatmaps)
        files_out = dict(zip(wanted, derived_files(out, key, wanted), strict=True)) if score is not None else {}
        verdicts.append(_verdict(det, p, score, row.get("error") or (None if row else "not scored"), files_out))
    return verdicts


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


def _pixels(max_megapixels: float | None) -> int | None:
    return None if max_megapixels is None else int(max_megapixels * 1e6)


@dataclass
class _Options:
    batch_size: int | None
    heatmaps: str  # all | anomalous | none
    masks: bool
    raw_maps: bool
    legend: bool
    resume: bool
    overwrite: bool
    max_megapixels: float | None
    ray: Any = None  # RayOptions: score on Ray
    parquet: bool = False  # also write scores.parquet

    @property
    def kinds(self) -> list[str]:
        on = {"heatmaps": self.heatmaps != "none", "masks": self.masks, "maps": self.raw_maps}
        return [k for k, wanted in on.items() if wanted]


def _score_into(det: Detector | None, run_dir: Path, input_dir: Path | UriInput, paths: Sequence[Path | UriFile],
                out: Path, options: _Options, progress: FolderProgress, warn: _Warnings) -> ScoreSummary:
    """Score ``paths`` (under ``input_dir``) into ``out``, resuming an earlier run there."""
    kinds = options.kinds
    created = not out.exists()
    try:
        if det is None:
            if isinstance(progress, BarProgress):
                progress.progress.stage(f"loading the model {run_dir}")
            det = Detector.load(run_dir)
        out.mkdir(parents=True, exist_ok=True)
        with OutDirLock(out):
            parquet = out / SCORES_PARQUET
            ours = SCORES_PARQUET in read_manifest(out).get("scores", [])  # a parquet file a run of ours wrote
            if options.parquet and (parquet.exists() or parquet.is_symlink()) and not ours:  # --overwrite too:
                raise OutputConflict(f"{out} holds a {SCORES_PARQUET} that anomaly-ae did not write: move it, or "
                                     "choose another --out")  # it replaces only what anomaly-ae wrote
            state = start(out, run_dir, input_dir, paths, kinds, resume=options.resume, overwrite=options.overwrite,
                          heatmaps=options.heatmaps)
            for line in state.notes:
                warn(line)
            progress.started(len(state.todo), len(state.keep) if state.resumed else None)
            try:
                counts = _score_todo(det, state, input_dir, out, kinds, options, progress, run_dir)
            finally:
                if hasattr(progress, "close"):
                    progress.close()
            # once written by us (and not removed by --overwrite), kept in step with scores.csv; a user's is left
            if options.parquet or (ours and parquet.is_file()):
                write_scores_parquet(out / SCORES_CSV, parquet)
                record(out, "scores", [SCORES_PARQUET])
    except Exception:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a run refused before writing anything leaves no empty folder behind
        raise
    return ScoreSummary(out, *counts, len(state.keep), det.postprocessor_.threshold, kinds, warn.lines)


class BarProgress:
    """The :class:`FolderProgress` of ``verbose``: warnings, the resume line, a bar and one line per failed file."""

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

    def __init__(self, progress: FolderProgress | None) -> None:
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


def _score_todo(det: Detector, state: ScoreRun, input_dir: Path | UriInput, out: Path, kinds: list[str],
                options: _Options, progress: FolderProgress, run_dir: Path) -> tuple[int, int, int]:
    """Score ``state.todo`` into ``out`` (rows after their files, in input order); ``(ok, anomalous, failed)``."""
    post = det.postprocessor_
    counts = {"ok": len(state.keep), "failed": 0, "anomalous": sum(r[2] == "true" for r in state.keep)}
    csv_out = ScoresCsv(out / SCORES_CSV, keep=state.keep,
                        normalize=lambda score: float(post.normalize(np.float64(score))))
    if options.ray is not None:
        from anomaly_ae.pipelines.score_ray import score_todo_ray

        ok, anomalous, failed = score_todo_ray(
            run_dir, state.todo, input_dir, out, kinds, options.legend, options.heatmaps,
            _pixels(options.max_megapixels),
            options.batch_size or det.config_.scoring.batch_size, options.ray, csv_out, post.threshold, progress)
        csv_out.close()
        return counts["ok"] + ok, counts["anomalous"] + anomalous, failed

    def row(rel: str, item: ScoredFile, problem: dict[str, str]) -> None:
        error = item.error or problem.get("error")
        if error is not None:
            counts["failed"] += 1
            csv_out.write(rel, None, post.threshold, error, item.stat)
        else:
            counts["ok"] += 1
            counts["anomalous"] += int(post.is_anomalous(item.score))
            csv_out.write(rel, item.score, post.threshold, "", item.stat)
        progress.done(rel, error)

    budget = det.config_.scoring.batch_megapixels * 1e6 * 8  # bytes of images + maps waiting for their files
    with one_opencv_thread(), OrderedOutputs(max_pending_cost=budget) as writer:
        for item in iter_scored(det, state.todo, options.batch_size, max_pixels=_pixels(options.max_megapixels)):
            rel, targets = output_targets(item, input_dir, out, kinds, options.heatmaps, post.threshold)
            problem: dict[str, str] = {}
            if item.error is None:
                legend = item.score if options.legend else None
                writer.submit(outputs_of(item.image, item.amap, targets, post, problem, legend),
                              partial(row, rel, item, problem), cost=item.image.nbytes + item.amap.nbytes)
            else:
                writer.submit(None, partial(row, rel, item, problem))
    csv_out.close()
    return counts["ok"], counts["anomalous"], counts["failed"]


__all__ = ["BarProgress", "FolderProgress", "NoImagesError", "OutputConflict", "ScoreSummary", "Verdict",
           "score_files", "score_folder"]
