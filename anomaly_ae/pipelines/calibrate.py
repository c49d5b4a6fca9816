"""Recalibrate a trained model on new held-out images: its thresholds (and, on request, its scoring), no
retraining.

::

    with writable_copy(local, ref) as target:          # a downloaded MLflow model is recalibrated in a copy
        det = Detector.load(target)
        images = read_calibration_images(det, good_dir)  # unreadable files listed, never fatal
        recalibrate(det, images, threshold_settings(det, {"method": "mad"}), select=False, progress=progress)
        det.save_calibration(target)
        summary = calibration_summary(det, target, images.failed)
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from anomaly_ae.config import ThresholdConfig, scoring_record
from anomaly_ae.data.images import folder_fingerprint
from anomaly_ae.data.loading import read_folder, read_masks
from anomaly_ae.deploy.mlflow_model import RegistryTarget, is_model_uri, log_recalibration, resolve_model
from anomaly_ae.detector import Detector
from anomaly_ae.io.names import META_FILE
from anomaly_ae.pipelines.options import CalibrateOptions
from anomaly_ae.postprocessing import FPR_CONFIDENCE
from anomaly_ae.progress import Progress
from anomaly_ae.tracking import default_tracking_uri, local_fallback


@contextlib.contextmanager
def writable_copy(local: Path, ref: str) -> Iterator[Path]:
    """The model directory to recalibrate: ``local`` itself when the user named that folder (``ref``), or a
    temporary copy of a downloaded MLflow model (the download cache keeps what that version holds)."""
    if local == Path(ref):
        yield local
        return
    with tempfile.TemporaryDirectory(prefix="anomaly-ae-calibrate-") as tmp:
        copy = Path(tmp) / "model"
        shutil.copytree(local, copy)
        yield copy


def trained_on(det: Detector, good: Path) -> str | None:
    """The training folder when ``good`` is it, a folder inside it, or a copy of it (the same
    :func:`~anomaly_ae.data.images.folder_fingerprint`), else ``None``: an autoencoder reconstructs its
    training images too well, so a threshold from them comes out too low."""
    info = det.train_info_
    folder = info.get("good_dir")
    if not folder:
        return None
    here = good.resolve()
    same = here == Path(folder) or Path(folder) in here.parents
    if not same and info.get("good_dir_sha256"):
        same = folder_fingerprint(good) == info["good_dir_sha256"]
    return folder if same else None


def threshold_settings(det: Detector, updates: Mapping[str, Any]) -> ThresholdConfig:
    """The model's threshold settings with ``updates`` (``None`` values: keep the model's).

    Raises:
        ValueError: the settings are invalid (one line).
    """
    try:
        return det.config_.threshold.model_validate(
            {**det.config_.threshold.model_dump(), **{k: v for k, v in updates.items() if v is not None}})
    except ValidationError as err:
        raise ValueError(f"invalid threshold settings: {err.errors()[0]['msg']}") from None


@dataclass
class CalibrationImages:
    """Decoded images: ``good`` (list of ``(H, W, C)`` uint8), the anomalous ones and their masks (``None``
    when not given); ``skipped``: ``(file, reason)`` of every file left out."""

    good: list[np.ndarray]
    anomalous: list[np.ndarray] | None = None
    masks: list[np.ndarray | None] | None = None
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        """The files left out, as strings."""
        return [str(what) for what, _ in self.skipped]


def read_calibration_images(det: Detector, good: Path, anomalous: Path | None = None, masks: Path | None = None,
                            on_skip: Callable[[Path, str], None] = lambda what, why: None) -> CalibrationImages:
    """Read ``good`` (and ``anomalous`` with the ``masks`` named after them) in the model's channels;
    ``on_skip(file, reason)`` hears of each file left out as it is found.

    Raises:
        ValueError: ``good`` holds fewer than 2 readable images (after its skipped files were reported).
    """
    channels = det.preprocessing_.channels
    out = CalibrationImages([])

    def skipped(items: list[tuple[Path, str]]) -> None:
        for what, why in items:
            out.skipped.append((what, why))
            on_skip(what, why)

    good_read = read_folder(good, channels)
    skipped(good_read.skipped)
    if len(good_read.images) < 2:
        raise ValueError(f"--good {good} holds fewer than 2 readable images")
    out.good = good_read.images
    if anomalous is not None:
        bad = read_folder(anomalous, channels)
        skipped(bad.skipped)
        out.anomalous = bad.images
        if masks is not None:
            out.masks, mask_skips = read_masks(bad, anomalous, masks)
            skipped(mask_skips)
    return out


def recalibrate(det: Detector, images: CalibrationImages, threshold: ThresholdConfig, select: bool,
                progress: Progress) -> None:
    """``select``: first choose the scoring by the self-check on the good images (:meth:`Detector.tune`);
    then refit the thresholds.

    Raises:
        ValueError: the settings need what was not given (``f1`` without anomalous images or masks).
    """
    if select:
        progress.stage(f"choosing the scoring by the self-check on {len(images.good)} good images")
        det.tune(images.good)
    progress.stage(f"calibrating on {len(images.good)} good images")
    det.calibrate(images.good, images.anomalous, images.masks, threshold=threshold)


def registered_name(ref: str, record: Mapping[str, Any], register: str | None) -> str | None:
    """The registered model a recalibration becomes a new version of: ``register`` when given, else the one the
    model was registered as at training (``record``: its ``train_info_["mlflow"]``), else the name in a
    ``models:/NAME[/VERSION|@ALIAS]`` reference."""
    if register or record.get("registered_model"):
        return register or record.get("registered_model")
    return ref[len("models:/"):].split("@")[0].split("/")[0] if ref.startswith("models:/") else None


def calibration_summary(det: Detector, run_dir: Path, failed: list[str]) -> dict[str, Any]:
    """The ``--json`` object of ``calibrate`` (keys documented in the README, 'Machine-readable output')."""
    st, t = det.score_stats_, det.config_.threshold
    check = det.train_info_.get("self_check") or {}
    return {
        "model_dir": str(run_dir), "threshold": det.threshold_, "method": t.method,
        "pixel_threshold": det.pixel_threshold_, "pixel_method": t.pixel_method,
        "expected_fpr": det.expected_fpr_, "fpr_upper": det.postprocessor_.fpr_upper,
        "fpr_confidence": FPR_CONFIDENCE, "threshold_rule": det.postprocessor_.rule,
        "caveats": det.postprocessor_.caveats(), "n_good": st.count, "good_score_median": st.quantiles["q0.5"],
        "good_score_max": st.max,
        "scoring": scoring_record(det.config_.scoring),
        "self_check": {k: check[k] for k in ("image_auroc", "image_auroc_interval", "pixel_auroc", "aupro",
                                             "selected", "candidates", "version") if k in check} or None,
        "skipped": failed, "updated": str(run_dir / META_FILE),
    }


class RecalibrationNotLogged(RuntimeError):
    """A model given by URI was recalibrated in a temporary copy, but its store refused the new version: nothing
    was updated (the warning before it says why)."""


def check_calibration(ref: str, options: CalibrateOptions, tracking_uri: str | None) -> None:
    """Refuse, before anything is loaded, fetched or written: an alias without a registered model, and a model
    given by URI whose store cannot be written (recalibrating it means logging a new version there).

    Raises:
        ValueError: one line, naming what to change.
    """
    from anomaly_ae.tracking import store_write_problem

    if options.alias and not options.registered_name and not ref.startswith("models:/"):
        raise ValueError("an alias needs a registered model: give registered_name")
    if tracking_uri is None or not is_model_uri(ref):
        return
    if (problem := store_write_problem(tracking_uri)) is not None:
        raise ValueError(f"calibrate {ref} logs the recalibrated model as a new version in {tracking_uri}, which "
                         f"cannot be written ({problem}): nothing was fetched or changed; use a store you can write "
                         "(MLFLOW_TRACKING_URI), or calibrate a model folder")


def calibrate_model(ref: str | Path, options: CalibrateOptions, tracking_uri: str | None, fallback: bool,
                    progress: Progress, on_warning: Callable[[str], None],
                    on_skip: Callable[[Path, str], None] | None = None) -> dict[str, Any]:
    """Recalibrate the model ``ref`` (a model directory, or an MLflow model URI: fetched, recalibrated in a copy
    and logged as a new version in its own registry, never in another store) on ``options``; the summary
    (:func:`calibration_summary` with ``mlflow``). ``tracking_uri``: ``None`` tracks nothing; ``fallback``: a
    failing server falls back to the local store (for a model folder only). See
    :meth:`Engine.calibrate <anomaly_ae.pipelines.engine.Engine.calibrate>`.
    """
    ref = str(ref)
    check_calibration(ref, options, tracking_uri)
    local = Path(ref)
    if is_model_uri(ref):
        progress.stage(f"fetching {ref} from {tracking_uri or default_tracking_uri()}")
        local = resolve_model(ref, tracking_uri or default_tracking_uri(), on_refresh=on_warning)
    with writable_copy(local, ref) as target:
        det = Detector.load(target)
        if folder := trained_on(det, options.good):
            on_warning(f"--good {options.good} holds the images the model was trained on ({folder}): it "
                       "reconstructs them too well, so the threshold comes out too low and good images will be "
                       "flagged; use good images it was not trained on")
        settings = threshold_settings(det, options.threshold_updates)  # refused before any image is read
        images = read_calibration_images(det, *options.folders, on_skip=on_skip or (
            lambda what, why: on_warning(f"{what}: {why} (skipped)")))
        recalibrate(det, images, settings, options.select_scoring, progress)
        det.save_calibration(target)
        summary = calibration_summary(det, target, images.failed)
        summary["mlflow"] = None if tracking_uri is None else _log_version(
            det, target, ref, options, summary, (tracking_uri, fallback), progress, on_warning)
        if target != Path(ref):
            _by_uri(summary, ref, tracking_uri)
    return summary


def _log_version(det: Detector, target: Path, ref: str, options: CalibrateOptions, summary: dict[str, Any],
                 store: tuple[str, bool], progress: Progress,
                 on_warning: Callable[[str], None]) -> dict[str, Any] | None:
    """The recalibrated model as a new MLflow model (version) when the model is tracked, registered or a URI."""
    record = det.train_info_.get("mlflow") or {}
    register = registered_name(ref, record, options.registered_name)
    if not (register or record.get("run_id") or ref.startswith("runs:/")):
        return None  # an untracked model stays untracked
    progress.stage("logging the recalibrated model to MLflow" + (f" ({register})" if register else ""))
    figures = {k: summary[k] for k in ("threshold", "pixel_threshold", "expected_fpr", "n_good")}
    figures["settings"] = det.config_.threshold.model_dump()
    uri, fallback = store
    # a model given by URI is updated in its own registry or not at all: a version in ./mlflow.db would be
    # one the user never looks in, while the URI they gave keeps the old threshold
    local = None if is_model_uri(ref) or not fallback else local_fallback(uri)
    where = RegistryTarget(det.config_.tracking.experiment, record.get("run_id"), register, options.alias)
    return log_recalibration(target, figures, where, uri, local, on_fallback=on_warning, detector=det)


def _by_uri(summary: dict[str, Any], ref: str, tracking_uri: str | None) -> None:
    """A model given by URI was recalibrated in a temporary copy, gone on return: the summary names the URI
    given and the new version as what was updated.

    Raises:
        RecalibrationNotLogged: tracking was on but the store refused the new version.
    """
    summary["model_dir"] = ref
    summary["updated"] = (summary["mlflow"] or {}).get("model_uri")
    if summary["updated"] is None and tracking_uri is not None:
        raise RecalibrationNotLogged(f"the recalibrated {ref} could not be logged to {tracking_uri} (the warning "
                                     "above says why): nothing was updated; fix the store and run calibrate again")
