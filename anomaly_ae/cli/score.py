"""``anomaly-ae score RUN_DIR INPUT... [--out OUT_DIR]``: scores.csv + heatmaps, or one verdict line per file.

A folder goes through :func:`anomaly_ae.score_folder`, files (or a quoted glob) through
:func:`anomaly_ae.score_files`. Results go to stdout, progress to stderr. Exit code 0 when every
file scored, 3 when some files (or sub-folders) could not be read, 2 for usage errors, 1 when the
run itself failed (disk full: rerunning the same command resumes).
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from anomaly_ae.cli.choices import EngineChoice, Heatmaps, ScoresFormat
from anomaly_ae.cli.common import (
    EXIT_PARTIAL,
    MODEL_REF_HELP,
    Json,
    Quiet,
    RayAddress,
    fail_usage,
    loading,
    model_dir,
    print_json,
    print_summary,
    reporter,
    results,
)
from anomaly_ae.io.names import SCORE_OUTPUTS, SCORES_CSV

if TYPE_CHECKING:
    from anomaly_ae import ScoreSummary, Verdict

#: the Ray extra as help text shows it: rich would read a bare "[ray]" as markup and drop it
RAY_EXTRA = "anomaly-ae\\[ray]"

EXAMPLES = """Examples:

  anomaly-ae score runs/a inspection/2026-11-27 --out scores/2026-11-27

  anomaly-ae score runs/a part_0412.png

  anomaly-ae score runs/a 'line3/*.png' --out scores/line3 --json

  anomaly-ae score runs/a inspection/ --out scores/ --plain-heatmaps --no-masks -q

  anomaly-ae score runs/a /shared/line3 --out /shared/scores --engine ray --address 10.0.0.5:6379 --actors 8

  anomaly-ae score runs/a s3://plant-images/line3/2026-11-27 --out /shared/scores/line3 --engine ray
"""

HeatmapsOpt = Annotated[Heatmaps, typer.Option(
    help="Which images get a heatmap (heatmaps/<path>.jpg): every one, those scored anomalous, or none.")]
Actors = Annotated[int, typer.Option(min=1, help="Scoring actors (with --engine ray).")]
GpusPerActor = Annotated[float, typer.Option(min=0.0, help="GPUs per actor (with --engine ray).")]
Format = Annotated[ScoresFormat, typer.Option(
    "--format", help="parquet: also write OUT_DIR/scores.parquet, the rows of scores.csv with typed columns "
                     "(scores.csv stays: reruns resume from it).")]


def score(
    run_dir: Annotated[str, typer.Argument(help=MODEL_REF_HELP, metavar="RUN_DIR")],
    inputs: Annotated[list[str], typer.Argument(
        help="One folder (searched recursively) or folder URI (s3://, gs://, hdfs://, file://: any that pyarrow.fs "
             "takes), or image files, or a quoted glob such as 'line3/*.png'.", metavar="INPUT...")],
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Output folder for scores.csv, heatmaps/ and masks/ (needed for a folder).",
        show_default="none: files are scored, nothing is written")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Images per model call.",
                                                   show_default="scoring.batch_size of the model")] = None,
    heatmaps: HeatmapsOpt = Heatmaps.all,
    no_heatmaps: Annotated[bool, typer.Option("--no-heatmaps", hidden=True, help="Same as --heatmaps none.")] = False,
    plain_heatmaps: Annotated[bool, typer.Option(
        "--plain-heatmaps", help="Heatmaps without the legend strip (colour bar, pixel threshold, score, verdict).")
    ] = False,
    masks: Annotated[bool, typer.Option(
        help="Write binary defect masks (0/255): the pixels above the pixel threshold.")] = True,
    raw_maps: Annotated[bool, typer.Option("--raw-maps", help="Also save float32 anomaly maps as .npy.")] = False,
    resume: Annotated[bool, typer.Option(help="Keep the rows of an earlier run into OUT_DIR; score the rest.")] = True,
    overwrite: Annotated[
        bool, typer.Option(help="Start over: remove the scores and maps an earlier run wrote (nothing else).")
    ] = False,
    max_megapixels: Annotated[float | None, typer.Option(
        min=0.000001, help="Refuse larger images before decoding.", show_default="100")] = None,
    engine: Annotated[EngineChoice, typer.Option(help="Where to score a folder: this process, or Ray Data actors "
                                           f"(pip install '{RAY_EXTRA}').")] = EngineChoice.local,
    address: RayAddress = None,
    actors: Actors = 1,
    gpus_per_actor: GpusPerActor = 0.0,
    scores_format: Format = ScoresFormat.csv,
    quiet: Quiet = False,
    json_out: Json = False,
) -> None:
    """Score a folder of images, or single files, with the model in RUN_DIR.

    A folder writes OUT_DIR/scores.csv with heatmaps and masks; rerunning the same command
    after an interruption keeps what is already scored and scores the rest.
    Files print one verdict line each: path, score, normalized score, anomalous yes/no, files written.
    """
    folder_only = "--engine ray" if engine is EngineChoice.ray else \
        "--format parquet" if scores_format is ScoresFormat.parquet else None
    run_dir, target = model_dir(run_dir, quiet), _inputs(inputs, out, folder_only)
    loading(quiet)
    from anomaly_ae import Engine, ModelDirError, NoImagesError, OutputConflict, ScoreOptions, UriError

    options = ScoreOptions(
        batch_size=batch_size, heatmaps="none" if no_heatmaps else heatmaps.value, masks=masks, raw_maps=raw_maps,
        legend=not plain_heatmaps, resume=resume, overwrite=overwrite, max_megapixels=max_megapixels,
        engine=engine.value, address=address, actors=actors, gpus_per_actor=gpus_per_actor,
        scores_format=scores_format.value)
    try:
        result = Engine(out, verbose=reporter(quiet)).score(run_dir, target, options)
    except (ModelDirError, OutputConflict, NoImagesError, UriError, ImportError) as err:  # ImportError: [ray]
        fail_usage(_flags(str(err)))
    partial = _print_files(result, out, json_out) if isinstance(result, list) else _print_folder(result, json_out)
    if partial:
        raise typer.Exit(EXIT_PARTIAL)


def _flags(message: str) -> str:
    """A library message in the command's words: parameters become the flags and arguments that set them."""
    if message.startswith("input folder "):  # the library names its parameter, the command its argument
        message = "INPUT_DIR " + message[len("input folder "):]
    return message


def _inputs(inputs: list[str], out: Path | None, folder_only: str | None) -> Path | str | list[Path]:
    """The folder or folder URI, or the files (quoted globs expanded here, as a shell would); ``folder_only``:
    the option that is for a folder only, if given."""
    from anomaly_ae.data.uris import is_uri

    if len(inputs) == 1 and (is_uri(inputs[0]) or Path(inputs[0]).is_dir()):
        folder: Path | str = inputs[0] if is_uri(inputs[0]) else Path(inputs[0])
        if out is None:
            fail_usage(f"scoring the folder {folder} needs --out OUT_DIR (for scores.csv and the heatmaps)")
        return folder
    files: list[Path] = []
    for text in inputs:
        item = Path(text)
        if is_uri(text):
            fail_usage(f"{text}: a URI is read as one folder; give it alone, with --out")
        if item.is_dir():
            fail_usage(f"{item} is a folder: give one folder, or files (not both)")
        if item.exists() or item.is_symlink():
            files.append(item)
            continue
        if not glob.has_magic(text):
            fail_usage(f"INPUT {item}: no such file or folder")
        matched = sorted(Path(m) for m in glob.glob(text, recursive=True) if not Path(m).is_dir())
        if not matched:
            fail_usage(f"INPUT {item}: no file matches")
        files += matched
    if folder_only is not None:
        fail_usage(f"{folder_only} is for a folder; give one folder and --out")
    return files


def _print_folder(summary: ScoreSummary, json_out: bool) -> bool:

    out = summary.out_dir
    if json_out:
        print_json({"out_dir": out, "scores_csv": summary.scores_csv, "scores_parquet": summary.scores_parquet,
                    "n_scored": summary.n_scored,
                    "n_anomalous": summary.n_anomalous, "n_failed": summary.n_failed, "n_kept": summary.n_kept,
                    "threshold": summary.threshold, "outputs": {k: out / k for k in summary.outputs},
                    "warnings": summary.warnings + summary.problems, "partial": summary.partial})
        return summary.partial
    rows = [("result", f"scored {summary.n_scored}, anomalous {summary.n_anomalous}, failed {summary.n_failed} "
                       f"(threshold {summary.threshold:.6g})"), ("scores", str(summary.scores_csv))]
    if summary.scores_parquet is not None:
        rows.append(("parquet", str(summary.scores_parquet)))
    rows += [(kind, f"{out / kind}  (<relative path>{SCORE_OUTPUTS[kind]}, e.g. a.jpg -> a.jpg{SCORE_OUTPUTS[kind]})")
             for kind in summary.outputs]
    print_summary(rows)
    return summary.partial


def _print_files(verdicts: list[Verdict], out: Path | None, json_out: bool) -> bool:
    failed = sum(v.error is not None for v in verdicts)
    if json_out:
        print_json({"files": [v.to_dict() for v in verdicts], "n_scored": len(verdicts) - failed,
                    "n_anomalous": sum(bool(v.is_anomaly) for v in verdicts), "n_failed": failed,
                    "threshold": verdicts[0].threshold, "scores_csv": None if out is None else out / SCORES_CSV,
                    "partial": failed > 0})
        return failed > 0
    for v in verdicts:
        results.print(_verdict_line(v))
    return failed > 0


def _verdict_line(v: Verdict) -> str:
    """``path  score 0.123  normalized 0.61  anomalous yes  heatmap out/heatmaps/a.png.jpg ...``."""
    if v.error is not None:
        return f"{v.path}  failed: {v.error}"
    files: list[Any] = [f"{kind.rstrip('s')} {path}" for kind, path in v.outputs.items()]
    return (f"{v.path}  score {v.score:.6g}  normalized {v.normalized:.3f}  anomalous "
            f"{'yes' if v.is_anomaly else 'no'}" + "".join(f"  {f}" for f in files))
