"""``anomaly-ae calibrate RUN_DIR --good DIR``: new thresholds in the model directory, no retraining."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from anomaly_ae.cli.choices import PixelMethod, ThresholdMethod, value
from anomaly_ae.cli.common import (
    EXIT_FAILED,
    EXIT_PARTIAL,
    MODEL_REF_HELP,
    Alias,
    Json,
    NoTrack,
    Quiet,
    RegisterAgain,
    fail_usage,
    loading,
    note,
    print_json,
    print_summary,
    reporter,
    tracking_uri,
    warn,
)

EXAMPLES = """Examples:

  anomaly-ae calibrate runs/a --good holdout/good

  anomaly-ae calibrate runs/a --good holdout/good --method mad --mad-k 4

  anomaly-ae calibrate runs/a --good holdout/good --anomalous holdout/bad --method f1 --json

  anomaly-ae calibrate runs/a --good holdout/good --select-scoring
"""

FROM_MODEL = "the model's setting"


def calibrate(
    run_dir: Annotated[str, typer.Argument(
        help=MODEL_REF_HELP + " A folder is updated in place; an MLflow model is recalibrated in a copy.",
        metavar="RUN_DIR")],
    good: Annotated[Path, typer.Option(help="Held-out good images (not the training images).")],
    anomalous: Annotated[Path | None, typer.Option(help="Labelled anomalous images (for --method f1).")] = None,
    masks: Annotated[Path | None, typer.Option(
        help="Masks of the anomalous images: <relative path stem>_mask.png (for --pixel-method f1).")] = None,
    method: Annotated[ThresholdMethod | None, typer.Option(help="Image threshold rule.",
                                                           show_default=FROM_MODEL)] = None,
    quantile: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="q of the quantile method.",
                                                   show_default=FROM_MODEL)] = None,
    mad_k: Annotated[float | None, typer.Option(help="k of median + k * 1.4826 * MAD.", show_default=FROM_MODEL)
                     ] = None,
    pixel_method: Annotated[PixelMethod | None, typer.Option(help="Pixel threshold rule.",
                                                             show_default=FROM_MODEL)] = None,
    pixel_quantile: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="q of the pixel quantile method.",
                                                         show_default=FROM_MODEL)] = None,
    select_scoring: Annotated[bool, typer.Option(
        "--select-scoring", help="First pick the scoring by the self-check on --good (no labels), as scoring.select: "
        "auto does at training (40+ images: half fit the per-position normalization, then a candidate).")] = False,
    register: RegisterAgain = None,
    alias: Alias = None,
    no_track: NoTrack = False,
    quiet: Quiet = False,
    json_out: Json = False,
) -> None:
    """Recalibrate image and pixel thresholds, print the expected false-alarm rate, log a new MLflow model version.

    A tracked model (or one given as models:/..., or with --register) is logged as a new MLflow model of
    the recalibrated detector, a new version of its registered model, so the tracked copy is never stale.
    """
    for name, folder in zip(("--good", "--anomalous", "--masks"), (good, anomalous, masks), strict=True):
        if folder is not None and not folder.is_dir():
            fail_usage(f"{name} {folder} is not a folder")
    from anomaly_ae.pipelines.options import CalibrateOptions

    try:
        options = CalibrateOptions(good=good, anomalous=anomalous, masks=masks, method=value(method), quantile=quantile,
                                   mad_k=mad_k, pixel_method=value(pixel_method), pixel_quantile=pixel_quantile,
                                   select_scoring=select_scoring, registered_name=register, alias=alias)
        summary = _calibrate(run_dir, options, no_track, quiet)
    except ValueError as err:
        fail_usage(str(err))
    if json_out:
        print_json(summary)
    else:
        print_summary(_rows(summary))
    if "few_good" in summary["caveats"]:
        warn(f"{summary['caveats']['few_good']}; calibrate on more good images the model was not trained on")
    if summary["skipped"]:
        raise typer.Exit(EXIT_PARTIAL)


def _calibrate(ref: str, options: Any, no_track: bool, quiet: bool) -> dict[str, Any]:
    """:meth:`Engine.calibrate`, its refusals before any work (the store of a URI checked before Keras loads)."""
    from anomaly_ae.pipelines.calibrate import check_calibration

    check_calibration(ref, options, None if no_track else tracking_uri())
    if not ref.startswith(("models:/", "runs:/")) and not Path(ref).is_dir():
        fail_usage(f"RUN_DIR {ref} is not a folder")
    loading(quiet)
    from anomaly_ae import ModelDirError
    from anomaly_ae.pipelines.calibrate import RecalibrationNotLogged
    from anomaly_ae.pipelines.engine import Engine

    engine = Engine(tracking=not no_track, verbose=reporter(quiet), on_warning=warn)
    try:
        return engine.calibrate(ref, options, on_skip=lambda what, why: note("skipped", "yellow", f"{what}: {why}"))
    except ModelDirError as err:
        fail_usage(str(err))
    except RecalibrationNotLogged as err:
        note("error:", "red", str(err))
        raise typer.Exit(EXIT_FAILED) from None


def _rows(j: dict[str, Any]) -> list[tuple[str, str]]:
    from anomaly_ae.config import scoring_text

    rows = [
        ("image threshold", f"{j['threshold']:.6g}: {j['threshold_rule']}; good scores: median "
                            f"{j['good_score_median']:.4g}, max {j['good_score_max']:.4g}"),
        ("pixel threshold", f"{j['pixel_threshold']:.6g} ({j['pixel_method']})"),
        ("false alarms", f"expected false-alarm rate on new good images {j['expected_fpr']:.2%}, at most "
                         f"{j['fpr_upper']:.2%} ({j['fpr_confidence']:.0%} bound; (m + 1) / (n + 1) on average with m "
                         "of n calibration scores above the threshold)"),
    ]
    c, sc = j["self_check"], j["scoring"]
    if c and c.get("selected"):
        rows.append(("self-check", f"{scoring_text(sc)}: "
                     f"synthetic image AUROC {c['image_auroc']:.3f}, pixel AUROC {c['pixel_auroc']:.3f}, "
                     f"AUPRO {c['aupro']:.3f} (best of {c.get('candidates')})"))
    if j["skipped"]:
        rows.append(("skipped", f"{len(j['skipped'])} unreadable file(s), listed above"))
    rows.append(("updated", j["updated"] or "nothing (an MLflow model recalibrated with --no-track)"))
    m = j["mlflow"]
    if m:
        alias = f", alias {m['alias']}" if m["alias"] else ""
        rows.append(("MLflow", f"{m['model_uri']} (run {m['run_id']}){alias}"))
    return rows
