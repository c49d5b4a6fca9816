"""``anomaly-ae score RUN_DIR INPUT_DIR --out OUT_DIR``: scores.csv + heatmap overlays.

Streams the folder in batches (never the whole folder in memory). A file that cannot be read gets a
row with an empty score and the reason; the run goes on. Exit code 0 when every file scored, 3 when
some files (or sub-folders) could not be read, 2 for usage errors, 1 when the run itself failed (disk
full: rerunning the same command resumes). What it may write and replace: :mod:`anomaly_ae.outdir`
and :mod:`anomaly_ae.outputs.score_run`.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import EXIT_PARTIAL, console, fail_usage, note, warn

if TYPE_CHECKING:
    from anomaly_ae.detector import Detector, ScoredFile
    from anomaly_ae.outputs.score_run import ScoreRun

#: errors of writing one file's outputs that fail that file only (a name this file system cannot take);
#: any other (disk full, read-only, permission) stops the run, which a rerun then resumes
PER_FILE_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.EILSEQ, errno.EINVAL})


def score(
    run_dir: Annotated[Path, typer.Argument(help="Model directory written by 'anomaly-ae train'.")],
    input_dir: Annotated[Path, typer.Argument(help="Folder of images to score (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for scores.csv and heatmaps/.")],
    batch_size: Annotated[int | None, typer.Option(min=1, help="Images per model call.")] = None,
    heatmaps: Annotated[bool, typer.Option(help="Write heatmap overlays.")] = True,
    masks: Annotated[bool, typer.Option(help="Write binary defect masks (0/255) from the pixel threshold.")] = True,
    raw_maps: Annotated[bool, typer.Option("--raw-maps", help="Also save float32 anomaly maps as .npy.")] = False,
    resume: Annotated[bool, typer.Option(help="Keep the rows of an earlier run into OUT_DIR; score the rest.")] = True,
    overwrite: Annotated[
        bool, typer.Option(help="Start over: remove the scores and maps an earlier run wrote (nothing else).")
    ] = False,
    max_megapixels: Annotated[
        float | None, typer.Option(min=0.000001, help="Refuse larger images before decoding (default 100).")
    ] = None,
) -> None:
    """Score every image in INPUT_DIR with the model in RUN_DIR.

    Rerunning the same command after an interruption keeps what is already scored and scores the rest.
    """
    if not run_dir.is_dir():
        fail_usage(f"RUN_DIR {run_dir} is not a folder")
    if not input_dir.is_dir():
        fail_usage(f"INPUT_DIR {input_dir} is not a folder")

    from anomaly_ae.artifact import ModelDirError
    from anomaly_ae.data.images import list_images
    from anomaly_ae.fileio import MANIFEST_NAME
    from anomaly_ae.outdir import OutDirLock, OutputConflict, check_out_dir

    try:
        check_out_dir(out, {"model directory": run_dir, "input folder": input_dir})
    except OutputConflict as err:
        fail_usage(str(err))
    if (input_dir / MANIFEST_NAME).is_file():
        warn(f"INPUT_DIR {input_dir} is a folder anomaly-ae wrote (its heatmaps/masks are scored as inputs)")
    problems: list[str] = []
    paths = list_images(input_dir, exclude=[out], problems=problems)  # never score our own heatmaps
    for line in problems:
        warn(line)
    if not paths:
        fail_usage(f"INPUT_DIR {input_dir} holds no images (png, jpg, jpeg, bmp, tif, tiff)")

    from anomaly_ae.detector import Detector
    from anomaly_ae.outputs.score_run import OUTPUTS, start

    kinds = [k for k, on in (("heatmaps", heatmaps), ("masks", masks), ("maps", raw_maps)) if on]
    created = not out.exists()
    try:
        det = Detector.load(run_dir)
        out.mkdir(parents=True, exist_ok=True)
        with OutDirLock(out):
            state = start(out, run_dir, input_dir, paths, kinds, resume=resume, overwrite=overwrite)
            for line in state.notes:
                warn(line)
            if state.resumed:
                console.print(f"resuming       {len(state.keep)} already scored in {out}, {len(state.todo)} to go")
            counts = _score_todo(det, state, input_dir, out, kinds, batch_size, max_megapixels)
    except (ModelDirError, OutputConflict) as err:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        fail_usage(str(err))
    n_ok, n_anomalous, n_failed = counts
    console.print(f"scored {n_ok}, anomalous {n_anomalous}, failed {n_failed} (threshold {det.threshold_:.6g})")
    console.print(f"scores         {out / 'scores.csv'}")
    for kind in kinds:
        console.print(f"{kind:<14} {out / kind}  (<relative path>{OUTPUTS[kind]}, e.g. a.jpg -> a.jpg{OUTPUTS[kind]})")
    if n_failed or problems:
        raise typer.Exit(EXIT_PARTIAL)


def _score_todo(det: Detector, state: ScoreRun, input_dir: Path, out: Path, kinds: list[str],
                batch_size: int | None, max_megapixels: float | None) -> tuple[int, int, int]:
    """Score ``state.todo`` into ``out`` (rows after their files, in input order); ``(ok, anomalous, failed)``."""
    import numpy as np
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from anomaly_ae.fileio import output_path, write_npy_atomic, write_png_atomic
    from anomaly_ae.outputs.overlays import heatmap_overlay
    from anomaly_ae.outputs.score_run import OUTPUTS, relative_key
    from anomaly_ae.outputs.scores_csv import ScoresCsv
    from anomaly_ae.outputs.writers import OrderedOutputs

    threshold, pixel_threshold, heat_range = det.threshold_, det.pixel_threshold_, det.heatmap_range_
    n_ok, n_failed = len(state.keep), 0
    n_anomalous = sum(r[2] == "true" for r in state.keep)
    csv_out = ScoresCsv(out / "scores.csv", keep=state.keep)

    def outputs_of(image: np.ndarray, amap: np.ndarray, targets: dict[str, Path], problem: dict[str, str]
                   ) -> Callable[[], None]:
        def work() -> None:  # runs in a worker thread while the model scores the next batch
            try:
                if "heatmaps" in targets:
                    write_png_atomic(targets["heatmaps"], heatmap_overlay(image, amap, heat_range))
                if "masks" in targets:
                    write_png_atomic(targets["masks"], (amap > pixel_threshold).astype(np.uint8) * 255)
                if "maps" in targets:
                    write_npy_atomic(targets["maps"], amap)
            except OSError as err:  # a name this file system cannot take fails this file, not the run
                if err.errno not in PER_FILE_ERRNOS:
                    raise
                problem["error"] = f"cannot write its outputs: {err.strerror or err}"

        return work

    def row(rel: str, item: ScoredFile, problem: dict[str, str]) -> None:
        nonlocal n_ok, n_failed, n_anomalous
        error = item.error or problem.get("error")
        if error is not None:
            note("failed", "yellow", f"{rel}: {error}")
            n_failed += 1
            csv_out.write(rel, None, threshold, error, item.stat)
        else:
            n_ok += 1
            n_anomalous += int(item.score > threshold)
            csv_out.write(rel, item.score, threshold, "", item.stat)

    budget = det.config.scoring.batch_megapixels * 1e6 * 8  # bytes of images + maps waiting for their files
    with Progress(
        TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as progress, OrderedOutputs(max_pending_cost=budget) as writer:
        task = progress.add_task("scoring", total=len(state.todo))
        max_pixels = None if max_megapixels is None else int(max_megapixels * 1e6)
        for item in det.iter_score(state.todo, batch_size, max_pixels=max_pixels):
            rel = relative_key(item.path, input_dir)
            try:  # outputs never land outside OUT_DIR (e.g. through a link planted in it)
                targets = {kind: output_path(out / kind, rel, OUTPUTS[kind]) for kind in kinds}
            except ValueError as err:
                item.error = item.error or str(err)
            problem: dict[str, str] = {}
            if item.error is None:
                writer.submit(outputs_of(item.image, item.amap, targets, problem), partial(row, rel, item, problem),
                              cost=item.image.nbytes + item.amap.nbytes)
            else:
                writer.submit(None, partial(row, rel, item, problem))
            progress.advance(task, 1)
    csv_out.close()
    return n_ok, n_anomalous, n_failed
