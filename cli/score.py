"""``anomaly-ae score RUN_DIR INPUT_DIR --out OUT_DIR``: scores.csv + heatmap overlays.

Streams the folder in batches (never the whole folder in memory). A file that cannot be read gets a
row with an empty score and the reason; the run goes on. Exit code 0 when every file scored, 3 when
some failed, 2 for usage errors.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from cli.common import EXIT_PARTIAL, console, fail_usage


def score(
    run_dir: Annotated[Path, typer.Argument(help="Model directory written by 'anomaly-ae train'.")],
    input_dir: Annotated[Path, typer.Argument(help="Folder of images to score (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for scores.csv and heatmaps/.")],
    batch_size: Annotated[int | None, typer.Option(min=1, help="Images per model call.")] = None,
    heatmaps: Annotated[bool, typer.Option(help="Write heatmap overlays.")] = True,
    masks: Annotated[bool, typer.Option(help="Write binary defect masks (0/255) from the pixel threshold.")] = True,
    raw_maps: Annotated[bool, typer.Option("--raw-maps", help="Also save float32 anomaly maps as .npy.")] = False,
    resume: Annotated[bool, typer.Option(help="Keep the rows of an earlier run into OUT_DIR; score the rest.")] = True,
    overwrite: Annotated[bool, typer.Option(help="Delete OUT_DIR's scores and maps first; start over.")] = False,
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
    from anomaly_ae.data import list_images

    paths = list_images(input_dir)
    if not paths:
        fail_usage(f"INPUT_DIR {input_dir} holds no images (png, jpg, jpeg, bmp, tif, tiff)")

    import numpy as np
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from anomaly_ae.detector import Detector
    from anomaly_ae.fileio import output_path
    from anomaly_ae.report import ScoresCsv, heatmap_overlay, write_npy_atomic, write_png_atomic
    from anomaly_ae.score_run import OutDirConflict, start
    from anomaly_ae.writers import OrderedOutputs

    try:
        det = Detector.load(run_dir)
        state = start(out, run_dir, input_dir, resume=resume, overwrite=overwrite)
    except (ModelDirError, OutDirConflict) as err:
        fail_usage(str(err))
    bs = batch_size or det.config.scoring.batch_size
    threshold = det.threshold_
    n_ok, n_failed = len(state.keep), 0
    n_anomalous = sum(r[2] == "true" for r in state.keep)
    todo = [p for p in paths if p.relative_to(input_dir).as_posix() not in state.done]
    if state.resumed:
        console.print(f"resuming       {len(state.keep)} already scored in {out}, {len(todo)} to go")
    csv_out = ScoresCsv(out / "scores.csv", keep=state.keep)
    pixel_threshold, heat_range = det.pixel_threshold_, det.heatmap_range_

    wanted = [(kind, suffix) for kind, suffix, on in (("heatmaps", ".png", heatmaps), ("masks", ".png", masks),
                                                      ("maps", ".npy", raw_maps)) if on]

    def outputs_of(image: np.ndarray, amap: np.ndarray, targets: dict[str, Path]) -> Callable[[], None]:
        def work() -> None:  # runs in a worker thread while the model scores the next batch
            if "heatmaps" in targets:
                write_png_atomic(targets["heatmaps"], heatmap_overlay(image, amap, heat_range))
            if "masks" in targets:
                write_png_atomic(targets["masks"], (amap > pixel_threshold).astype(np.uint8) * 255)
            if "maps" in targets:
                write_npy_atomic(targets["maps"], amap)

        return work

    with Progress(
        TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as progress, OrderedOutputs() as writer:
        task = progress.add_task("scoring", total=len(todo))
        max_pixels = None if max_megapixels is None else int(max_megapixels * 1e6)
        for item in det.iter_score(todo, bs, max_pixels=max_pixels):
            rel_path = item.path.relative_to(input_dir)
            rel = rel_path.as_posix()
            try:  # outputs never land outside OUT_DIR (e.g. through a link planted in it)
                targets = {kind: output_path(out / kind, rel_path, suffix) for kind, suffix in wanted}
            except ValueError as err:
                item.error = item.error or str(err)
            if item.error is not None:
                console.print(f"[yellow]failed[/yellow] {rel}: {item.error}")
                n_failed += 1
                writer.submit(None, partial(csv_out.write, rel, None, threshold, item.error))
            else:
                n_ok += 1
                n_anomalous += int(item.score > threshold)
                writer.submit(outputs_of(item.image, item.amap, targets),
                              partial(csv_out.write, rel, item.score, threshold))
            progress.advance(task, 1)
    csv_out.close()
    console.print(
        f"scored {n_ok}, anomalous {n_anomalous}, failed {n_failed} (threshold {threshold:.6g})"
    )
    console.print(f"scores         {out / 'scores.csv'}")
    for kind, _ in wanted:
        console.print(f"{kind:<14} {out / kind}")
    if n_failed:
        raise typer.Exit(EXIT_PARTIAL)
