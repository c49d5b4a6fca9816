"""``anomaly-ae score RUN_DIR INPUT_DIR --out OUT_DIR``: scores.csv + heatmap overlays.

Calls :func:`anomaly_ae.score_folder`. Exit code 0 when every file scored, 3 when some files (or
sub-folders) could not be read, 2 for usage errors, 1 when the run itself failed (disk full:
rerunning the same command resumes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import EXIT_PARTIAL, console, fail_usage, new_bar, note, warn


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

    from anomaly_ae import ModelDirError, NoImagesError, OutputConflict, score_folder
    from anomaly_ae.outputs.score_run import OUTPUTS

    try:
        with _Progress(out) as progress:
            summary = score_folder(run_dir, input_dir, out, batch_size=batch_size, heatmaps=heatmaps, masks=masks,
                                   raw_maps=raw_maps, resume=resume, overwrite=overwrite,
                                   max_megapixels=max_megapixels, progress=progress)
    except (ModelDirError, OutputConflict, NoImagesError) as err:
        fail_usage(str(err))
    console.print(f"scored {summary.n_scored}, anomalous {summary.n_anomalous}, failed {summary.n_failed} "
                  f"(threshold {summary.threshold:.6g})")
    console.print(f"scores         {summary.scores_csv}")
    for kind in summary.outputs:
        console.print(f"{kind:<14} {out / kind}  (<relative path>{OUTPUTS[kind]}, e.g. a.jpg -> a.jpg{OUTPUTS[kind]})")
    if summary.partial:
        raise typer.Exit(EXIT_PARTIAL)


class _Progress:
    """Warnings, the resume line, a transient progress bar and one line per failed file."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.bar = new_bar("scoring")
        self.task: Any = None

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def warning(self, line: str) -> None:
        warn(line)

    def started(self, todo: int, kept: int | None) -> None:
        if kept is not None:
            console.print(f"resuming       {kept} already scored in {self.out}, {todo} to go")
        self.bar.start()
        self.task = self.bar.add_task("scoring", total=todo)

    def done(self, rel: str, error: str | None) -> None:
        if error is not None:
            note("failed", "yellow", f"{rel}: {error}")
        self.bar.advance(self.task, 1)
