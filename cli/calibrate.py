"""``anomaly-ae calibrate RUN_DIR --good DIR``: new thresholds in the model directory, no retraining."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import EXIT_PARTIAL, console, fail_usage, note


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
) -> None:
    """Recalibrate image and pixel thresholds and print the expected false-alarm rate."""
    for name, folder in (("RUN_DIR", run_dir), ("--good", good), ("--anomalous", anomalous), ("--masks", masks)):
        if folder is not None and not folder.is_dir():
            fail_usage(f"{name} {folder} is not a folder")

    from pydantic import ValidationError

    from anomaly_ae.artifact import ModelDirError, save_calibration
    from anomaly_ae.data.images import ImageReadError, list_images, read_image
    from anomaly_ae.data.mvtec import mask_name, read_mask
    from anomaly_ae.detector import Detector

    try:
        det = Detector.load(run_dir)
    except ModelDirError as err:
        fail_usage(str(err))
    updates = {"method": method, "quantile": quantile, "mad_k": mad_k, "pixel_method": pixel_method,
               "pixel_quantile": pixel_quantile}
    try:
        new = det.config.threshold.model_validate(
            {**det.config.threshold.model_dump(), **{k: v for k, v in updates.items() if v is not None}}
        )
    except ValidationError as err:
        fail_usage(f"invalid threshold settings: {err.errors()[0]['msg']}")

    failed: list[str] = []

    def skip(what: Path, why: object) -> None:
        failed.append(str(what))
        note("skipped", "yellow", f"{what}: {why}")

    def load(folder: Path) -> tuple[list, list[Path]]:
        images, paths = [], []
        problems: list[str] = []
        for p in list_images(folder, problems=problems):
            try:
                images.append(read_image(p, det.preprocessing_.channels))
                paths.append(p)
            except ImageReadError as err:
                skip(p, err)
        for line in problems:
            skip(folder, line)
        return images, paths

    good_images, _ = load(good)
    if len(good_images) < 2:
        fail_usage(f"--good {good} holds fewer than 2 readable images")
    bad_images, bad_paths, bad_masks = None, [], None
    if anomalous is not None:
        bad_images, bad_paths = load(anomalous)
    if masks is not None and anomalous is not None:
        bad_masks = []
        for p, im in zip(bad_paths, bad_images or [], strict=True):
            rel = p.relative_to(anomalous)
            mp = masks / rel.parent / mask_name(rel)
            try:
                bad_masks.append(read_mask(mp, im.shape[:2]) if mp.is_file() else None)
            except ImageReadError as err:
                skip(mp, err)
                bad_masks.append(None)
    try:
        det.calibrate(good_images, bad_images, bad_masks, threshold=new)
    except ValueError as err:
        fail_usage(str(err))
    save_calibration(det, run_dir)
    st = det.score_stats_
    console.print(f"image threshold {det.threshold_:.6g} ({new.method}) from {st.count} good images "
                  f"(median {st.quantiles['q0.5']:.4g}, max {st.max:.4g})")
    console.print(f"pixel threshold {det.pixel_threshold_:.6g} ({new.pixel_method})")
    console.print(f"expected false-alarm rate on new good images: {det.expected_fpr_:.2%} "
                  f"(at most (m + 1) / (n + 1) with m of n calibration scores above the threshold)")
    console.print(f"updated         {run_dir / 'detector.json'}")
    if failed:
        note(f"{len(failed)} file(s) could not be read", "yellow", "and were left out")
        raise typer.Exit(EXIT_PARTIAL)
