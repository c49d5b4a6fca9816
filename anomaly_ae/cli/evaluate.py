"""``anomaly-ae evaluate RUN_DIR DATASET_DIR --out OUT_DIR``: metrics.json + report.html (``anomaly_ae.evaluate``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from anomaly_ae.cli.common import (
    EXIT_PARTIAL,
    MODEL_REF_HELP,
    Json,
    Quiet,
    fail_usage,
    loading,
    model_dir,
    note,
    print_json,
    print_summary,
    reporter,
    results,
    warn,
)
from anomaly_ae.io.names import METRICS_JSON, REPORT_HTML

if TYPE_CHECKING:
    from anomaly_ae import EvaluationResult


EXAMPLES = """Examples:

  anomaly-ae evaluate runs/a ../shared/data/bsdata_pitting --out eval/a

  anomaly-ae evaluate runs/a datasets/bottle --out eval/bottle --max-fpr 0.05 --no-track --json
"""


def evaluate(
    run_dir: Annotated[str, typer.Argument(help=MODEL_REF_HELP, metavar="RUN_DIR")],
    dataset_dir: Annotated[Path, typer.Argument(help="MVTec-AD-layout folder: test/good, test/<defect>, "
                                                     "optional ground_truth/<defect>/<stem>_mask.png.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for metrics.json and report.html.")],
    max_fpr: Annotated[float, typer.Option(min=0.01, max=1.0, help="AUPRO integration limit.")] = 0.3,
    no_track: Annotated[bool, typer.Option("--no-track", help="Do not log to MLflow.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier evaluation in --out (other files stay).")] = False,
    quiet: Quiet = False,
    json_out: Json = False,
) -> None:
    """Image and pixel metrics of a model on a labelled test set, and an HTML report."""
    run_dir = model_dir(run_dir, quiet)
    if not (dataset_dir / "test").is_dir():
        fail_usage(f"DATASET_DIR {dataset_dir} has no 'test' folder (MVTec AD layout expected)")
    loading(quiet)

    from anomaly_ae import Engine, EvaluateOptions, ModelDirError, OutputConflict

    engine = Engine(out, tracking=not no_track, verbose=reporter(quiet), on_warning=warn)
    try:
        ev = engine.evaluate(run_dir, dataset_dir, EvaluateOptions(max_fpr=max_fpr, overwrite=overwrite))
    except (ModelDirError, FileNotFoundError, OutputConflict) as err:
        fail_usage(str(err))
    _missing_masks(ev, dataset_dir)
    tracked = engine.summary_["mlflow"]
    for f in ev.failures:
        note("failed", "yellow", f"{f['path']}: {f['error']}")
    if json_out:
        print_json({"metrics": ev.metrics, "threshold": ev.threshold, "threshold_method": ev.threshold_method,
                    "metrics_json": out / METRICS_JSON, "report_html": out / REPORT_HTML,
                    "failures": ev.failures, "mlflow": tracked, "partial": ev.partial})
    else:
        _print(ev, out, tracked)
    if ev.failures:
        raise typer.Exit(EXIT_PARTIAL)


def _fmt(metrics: dict[str, Any], key: str) -> str:
    v = metrics.get(key)
    return f"{v:.4f}" if isinstance(v, float) else "n/a"


def _missing_masks(ev: EvaluationResult, dataset_dir: Path) -> None:
    counts = ev.metrics["counts"]
    if counts["anomalous"] > counts["with_masks"] and (dataset_dir / "ground_truth").is_dir():
        warn(f"{counts['anomalous'] - counts['with_masks']} of {counts['anomalous']} anomalous images have no mask "
             "(expected ground_truth/<defect>/<stem>_mask.png): pixel metrics leave them out")


def _print(ev: EvaluationResult, out: Path, tracked: str | None) -> None:
    m = ev.metrics
    results.print(f"image AUROC {_fmt(m, 'image_auroc')}   image F1-max {_fmt(m, 'image_f1_max')}   "
                  f"pixel AUROC {_fmt(m, 'pixel_auroc')}   pixel AUPRO {_fmt(m, 'pixel_aupro')}")
    for defect, dm in m.get("per_defect", {}).items():
        results.print(f"  {defect:<12} image AUROC {_fmt(dm, 'image_auroc')}   pixel AUROC {_fmt(dm, 'pixel_auroc')}"
                      f"   pixel AUPRO {_fmt(dm, 'pixel_aupro')}")
    at = m["at_threshold"]
    results.print(f"at threshold {ev.threshold:.6g}: TP {at['tp']}  FP {at['fp']}  TN {at['tn']}  FN {at['fn']}")
    rows = [("metrics", str(out / METRICS_JSON)), ("report", str(out / REPORT_HTML))]
    if tracked:
        rows.append(("MLflow", tracked))
    if ev.failures:
        rows.append(("unreadable", f"{len(ev.failures)} file(s), listed above and in metrics.json"))
    print_summary(rows)
