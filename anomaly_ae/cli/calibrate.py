"""``anomaly-ae calibrate RUN_DIR --good DIR``: new thresholds in the model directory, no retraining."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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
    fallback_uri,
    loading,
    model_dir,
    note,
    print_json,
    print_summary,
    reporter,
    tracking_uri,
    warn,
)

if TYPE_CHECKING:
    from anomaly_ae import Detector


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
    _check_arguments(run_dir, (good, anomalous, masks), register, alias, no_track)
    loading(quiet)
    from anomaly_ae.pipelines.calibrate import calibration_summary, writable_copy

    with writable_copy(model_dir(run_dir, quiet), run_dir) as target:
        det = _load(target)
        _warn_training_images(det, good)
        updates = {"method": value(method), "quantile": quantile, "mad_k": mad_k,
                   "pixel_method": value(pixel_method), "pixel_quantile": pixel_quantile}
        failed = _recalibrate(det, (good, anomalous, masks), updates, select_scoring, quiet)
        det.save_calibration(target)
        summary = calibration_summary(det, target, failed)
        summary["mlflow"] = None if no_track else _log(det, target, run_dir, register, alias, summary, quiet)
        if target != Path(run_dir):
            _by_uri(summary, run_dir, no_track)
    if json_out:
        print_json(summary)
    else:
        print_summary(_rows(summary))
    if "few_good" in summary["caveats"]:
        warn(f"{summary['caveats']['few_good']}; calibrate on more good images the model was not trained on")
    if failed:
        raise typer.Exit(EXIT_PARTIAL)


def _check_arguments(ref: str, folders: tuple[Path, Path | None, Path | None], register: str | None,
                     alias: str | None, no_track: bool) -> None:
    """Refuse, before anything is loaded, fetched or written: a folder option that is not a folder, an alias
    without a registered model, and a model given by URI whose store cannot be written (recalibrating it
    means logging a new version there)."""
    for name, folder in zip(("--good", "--anomalous", "--masks"), folders, strict=True):
        if folder is not None and not folder.is_dir():
            fail_usage(f"{name} {folder} is not a folder")
    if alias and not register and not ref.startswith("models:/"):
        fail_usage("--alias needs a registered model: add --register NAME")
    if no_track or not ref.startswith(("models:/", "runs:/")):
        return
    from anomaly_ae.tracking import store_write_problem

    uri = tracking_uri()
    if (problem := store_write_problem(uri)) is not None:
        fail_usage(f"calibrate {ref} logs the recalibrated model as a new version in {uri}, which cannot be "
                   f"written ({problem}): nothing was fetched or changed; use a store you can write "
                   "(MLFLOW_TRACKING_URI), or calibrate a model folder")


def _by_uri(summary: dict[str, Any], ref: str, no_track: bool) -> None:
    """A model given by URI was recalibrated in a temporary copy, gone on return: the summary names the URI
    given and the new version as what was updated; without one (the store refused it), the command fails."""
    summary["model_dir"] = ref
    summary["updated"] = (summary["mlflow"] or {}).get("model_uri")
    if summary["updated"] is None and not no_track:
        note("error:", "red", f"the recalibrated {ref} could not be logged to {tracking_uri()} (the warning above "
             "says why): nothing was updated; fix the store and run calibrate again")
        raise typer.Exit(EXIT_FAILED)


def _warn_training_images(det: Detector, good: Path) -> None:
    """One warning when ``--good`` is the training folder (or inside it, or a copy of it)."""
    from anomaly_ae.pipelines.calibrate import trained_on

    folder = trained_on(det, good)
    if folder:
        warn(f"--good {good} holds the images the model was trained on ({folder}): it reconstructs them too "
             "well, so the threshold comes out too low and good images will be flagged; use good images it was "
             "not trained on")


def _recalibrate(det: Detector, folders: tuple[Path, Path | None, Path | None], updates: dict[str, Any],
                 select: bool, quiet: bool) -> list[str]:
    """Read the images (each file left out named once), refit; the files left out. Bad settings stop here."""
    from anomaly_ae.pipelines.calibrate import read_calibration_images, recalibrate, threshold_settings

    try:
        settings = threshold_settings(det, updates)  # refused before any image is read
        images = read_calibration_images(det, *folders, on_skip=lambda what, why: note("skipped", "yellow",
                                                                                        f"{what}: {why}"))
        recalibrate(det, images, settings, select, reporter(quiet))
    except ValueError as err:
        fail_usage(str(err))
    return images.failed


def _load(run_dir: Path) -> Detector:
    from anomaly_ae import Detector, ModelDirError

    try:
        return Detector.load(run_dir)
    except ModelDirError as err:
        fail_usage(str(err))


def _log(det: Detector, target: Path, ref: str, register: str | None, alias: str | None,
         summary: dict[str, Any], quiet: bool) -> dict[str, Any] | None:
    """The recalibrated model as a new MLflow model (version) when the model is tracked, registered or a URI."""
    from anomaly_ae.deploy.mlflow_model import log_recalibration
    from anomaly_ae.pipelines.calibrate import registered_name

    record = det.train_info_.get("mlflow") or {}
    register = registered_name(ref, record, register)
    if not (register or record.get("run_id") or ref.startswith("runs:/")):
        return None  # an untracked model stays untracked
    if not quiet:
        reporter(quiet).stage("logging the recalibrated model to MLflow" + (f" ({register})" if register else ""))
    figures = {k: summary[k] for k in ("threshold", "pixel_threshold", "expected_fpr", "n_good")}
    figures["settings"] = det.config_.threshold.model_dump()
    uri = tracking_uri()
    # a model given by URI is updated in its own registry or not at all: a version in ./mlflow.db would be
    # one the user never looks in, while the URI they gave keeps the old threshold
    fallback = None if ref.startswith(("models:/", "runs:/")) else fallback_uri(uri)
    return log_recalibration(target, figures, det.config_.tracking.experiment, record.get("run_id"), register,
                             alias, uri, fallback, on_fallback=warn, detector=det)


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
