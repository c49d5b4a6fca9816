"""``anomaly-ae calibrate RUN_DIR --good DIR``: new thresholds in the model directory, no retraining."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.common import EXIT_PARTIAL, console, fail_usage, note

if TYPE_CHECKING:
    from anomaly_ae import Detector
    from anomaly_ae.config import ThresholdConfig


def calibrate(
    run_dir: Annotated[Path, typer.Argument(help="Model directory to update.")],
    good: Annotated[Path, typer.Option(help="Held-out good images (not the training images).")],
    anomalous: Annotated[Path | None, typer.Option(help="Labelled anomalous images (for --method f1).")] = None,
    masks: Annotated[
        Path | None,
        typer.Option(help="Masks of the anomalous images: <relative path stem>_mask.png (for --pixel-method f1)."),
    ] = None,
    method: Annotated[str | None, typer.Option(help="quantile | mad | max | f1")] = None,
    quantile: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="q of the quantile method.")] = None,
    mad_k: Annotated[float | None, typer.Option(help="k of median + k * 1.4826 * MAD.")] = None,
    pixel_method: Annotated[str | None, typer.Option(help="quantile | f1")] = None,
    pixel_quantile: Annotated[float | None, typer.Option(min=0.0, max=1.0)] = None,
    select_scoring: Annotated[bool, typer.Option(
        "--select-scoring", help="First pick map metric, smoothing and reduction by the self-check on --good "
        "(synthetic defects, no labels), as scoring.select: auto does at training.")] = False,
) -> None:
    """Recalibrate image and pixel thresholds and print the expected false-alarm rate."""
    for name, folder in (("RUN_DIR", run_dir), ("--good", good), ("--anomalous", anomalous), ("--masks", masks)):
        if folder is not None and not folder.is_dir():
            fail_usage(f"{name} {folder} is not a folder")

    from anomaly_ae import Detector, ModelDirError

    try:
        det = Detector.load(run_dir)
    except ModelDirError as err:
        fail_usage(str(err))
    new = _settings(det, {"method": method, "quantile": quantile, "mad_k": mad_k, "pixel_method": pixel_method,
                          "pixel_quantile": pixel_quantile})
    failed: list[str] = []
    good_images, bad_images, bad_masks = _read(det, good, anomalous, masks, failed)
    try:
        if select_scoring:
            det.tune(good_images)
        det.calibrate(good_images, bad_images, bad_masks, threshold=new)
    except ValueError as err:
        fail_usage(str(err))
    det.save_calibration(run_dir)
    _print(det, run_dir)
    if failed:
        note(f"{len(failed)} file(s) could not be read", "yellow", "and were left out")
        raise typer.Exit(EXIT_PARTIAL)


def _settings(det: Detector, updates: dict[str, Any]) -> ThresholdConfig:
    """The model's threshold settings with the options given."""
    from pydantic import ValidationError

    try:
        return det.config.threshold.model_validate(
            {**det.config.threshold.model_dump(), **{k: v for k, v in updates.items() if v is not None}}
        )
    except ValidationError as err:
        fail_usage(f"invalid threshold settings: {err.errors()[0]['msg']}")


def _read(det: Detector, good: Path, anomalous: Path | None, masks: Path | None, failed: list[str]) -> tuple:
    """Good images, anomalous images and their masks; every file left out is named once (and counted)."""
    from anomaly_ae.data.loading import read_folder, read_masks

    def skipped(items: list) -> None:
        for what, why in items:
            failed.append(str(what))
            note("skipped", "yellow", f"{what}: {why}")

    good_read = read_folder(good, det.preprocessing_.channels)
    skipped(good_read.skipped)
    if len(good_read.images) < 2:
        fail_usage(f"--good {good} holds fewer than 2 readable images")
    bad = read_folder(anomalous, det.preprocessing_.channels) if anomalous is not None else None
    skipped(bad.skipped if bad else [])
    bad_masks = None
    if masks is not None and bad is not None:
        bad_masks, mask_skips = read_masks(bad, anomalous, masks)
        skipped(mask_skips)
    return good_read.images, (bad.images if bad else None), bad_masks


def _print(det: Detector, run_dir: Path) -> None:
    st, method = det.score_stats_, det.config.threshold
    console.print(f"image threshold {det.threshold_:.6g} ({method.method}) from {st.count} good images "
                  f"(median {st.quantiles['q0.5']:.4g}, max {st.max:.4g})")
    console.print(f"pixel threshold {det.pixel_threshold_:.6g} ({method.pixel_method})")
    console.print(f"expected false-alarm rate on new good images: {det.expected_fpr_:.2%} "
                  f"(at most (m + 1) / (n + 1) with m of n calibration scores above the threshold)")
    check = det.train_info_.get("self_check") or {}
    if check.get("selected"):
        s = det.config.scoring
        console.print(f"self-check      {s.metric} map, sigma {s.smoothing_sigma:g}, {s.reduction}: synthetic image "
                      f"AUROC {check['image_auroc']:.3f}, pixel AUROC {check['pixel_auroc']:.3f}, "
                      f"AUPRO {check['aupro']:.3f} (best of {check['candidates']})")
    console.print(f"updated         {run_dir / 'detector.json'}")
