"""``anomaly-ae evaluate RUN_DIR DATASET_DIR --out OUT_DIR``: metrics.json + report.html."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.common import EXIT_PARTIAL, console, fail_usage, fallback_uri, note, tracking_uri, warn

if TYPE_CHECKING:
    from anomaly_ae.detector import Detector


def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="Model directory written by 'anomaly-ae train'.")],
    dataset_dir: Annotated[Path, typer.Argument(help="MVTec-AD-layout folder: test/good, test/<defect>, "
                                                     "optional ground_truth/<defect>/<stem>_mask.png.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for metrics.json and report.html.")],
    max_fpr: Annotated[float, typer.Option(min=0.01, max=1.0, help="AUPRO integration limit.")] = 0.3,
    no_track: Annotated[bool, typer.Option("--no-track", help="Do not log to MLflow.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier evaluation in --out (other files stay).")] = False,
) -> None:
    """Image and pixel metrics of a model on a labelled test set, and an HTML report."""
    if not run_dir.is_dir():
        fail_usage(f"RUN_DIR {run_dir} is not a folder")
    if not (dataset_dir / "test").is_dir():
        fail_usage(f"DATASET_DIR {dataset_dir} has no 'test' folder (MVTec AD layout expected)")

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from anomaly_ae.artifact import ModelDirError, write_json_atomic
    from anomaly_ae.data.mvtec import mvtec_items
    from anomaly_ae.detector import Detector
    from anomaly_ae.evaluation.evaluate import evaluate as run_evaluation
    from anomaly_ae.outdir import OutputConflict, plan, staging
    from anomaly_ae.reports.html import write_report

    names = ["metrics.json", "report.html"]
    try:
        plan(out, "evaluation", names, overwrite, {"model directory": run_dir, "data set": dataset_dir})
        det = Detector.load(run_dir)
        n = len(mvtec_items(dataset_dir))
    except (ModelDirError, FileNotFoundError, OutputConflict) as err:
        fail_usage(str(err))
    with Progress(TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("evaluating", total=n)
        ev = run_evaluation(det, dataset_dir, on_progress=lambda k: progress.advance(task, k), max_fpr=max_fpr)
    m = ev.metrics
    try:
        with staging(out, "evaluation", names, overwrite, order=("metrics.json",)) as tmp:
            write_json_atomic(tmp / "metrics.json", {**m, "failures": ev.failures, "model": str(run_dir),
                                                     "dataset": str(dataset_dir)})
            write_report(tmp / "report.html", det, dataset_dir, ev, title=run_dir.name)
    except OutputConflict as err:
        fail_usage(str(err))
    report = out / "report.html"

    def fmt(metrics: dict[str, Any], key: str) -> str:
        v = metrics.get(key)
        return f"{v:.4f}" if isinstance(v, float) else "n/a"

    console.print(f"image AUROC {fmt(m, 'image_auroc')}   image F1-max {fmt(m, 'image_f1_max')}   "
                  f"pixel AUROC {fmt(m, 'pixel_auroc')}   pixel AUPRO {fmt(m, 'pixel_aupro')}")
    for defect, dm in m.get("per_defect", {}).items():
        console.print(f"  {defect:<12} image AUROC {fmt(dm, 'image_auroc')}   pixel AUROC {fmt(dm, 'pixel_auroc')}   "
                      f"pixel AUPRO {fmt(dm, 'pixel_aupro')}")
    counts = m["counts"]
    if counts["anomalous"] > counts["with_masks"] and (dataset_dir / "ground_truth").is_dir():
        warn(f"{counts['anomalous'] - counts['with_masks']} of {counts['anomalous']} anomalous images have no mask "
             "(expected ground_truth/<defect>/<stem>_mask.png): pixel metrics leave them out")
    at = m["at_threshold"]
    console.print(f"at threshold {det.threshold_:.6g}: TP {at['tp']}  FP {at['fp']}  TN {at['tn']}  FN {at['fn']}")
    console.print(f"metrics        {out / 'metrics.json'}")
    console.print(f"report         {report}")
    if not no_track:
        _log(det, out, m)
    if ev.failures:
        for f in ev.failures:
            note("failed", "yellow", f"{f['path']}: {f['error']}")
        note(f"{len(ev.failures)} unreadable file(s)", "yellow", "listed in metrics.json")
        raise typer.Exit(EXIT_PARTIAL)


def _log(det: Detector, out: Path, metrics: dict[str, Any]) -> None:
    """Log the evaluation to the model's MLflow run when it is in the current store, else to a new run."""
    from anomaly_ae.tracking import MlflowTracker

    run_id = det.train_info_.get("mlflow", {}).get("run_id")
    uri = tracking_uri()
    flat = {f"eval_{k}": v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    with MlflowTracker(uri, det.config.tracking.experiment, run_name="evaluate", run_id=run_id,
                       fallback_uri=fallback_uri(uri), on_fallback=warn, off_on_failure=True) as tracker:
        tracker.log_metrics(flat)
        tracker.log_artifact(out / "metrics.json", "evaluation")
        tracker.log_artifact(out / "report.html", "evaluation")
        if tracker.disabled:
            return
        where = "the model's run" if tracker.resumed else "a new run"
        console.print(f"MLflow         logged to {where} {tracker.run_id} in {tracker.uri}")
