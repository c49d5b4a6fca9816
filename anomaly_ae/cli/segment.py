"""``anomaly-ae segment train|predict``: supervised defect segmentation from an exported encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from anomaly_ae.cli.common import fail_usage, friendly_errors, loading, note, open_tracker, reporter, results, warn
from anomaly_ae.io.names import ENCODER_JSON, SEGMENTER_FILES, SEGMENTER_JSON, SEGMENTER_KERAS

segment_app = typer.Typer(help="Train and apply a segmentation model built on an exported encoder.",
                          no_args_is_help=True)


TRAIN_EXAMPLES = """Examples:

  anomaly-ae segment train encoders/a --images labelled/images --masks labelled/masks --out seg/a

  anomaly-ae segment train encoders/a --images imgs --masks masks --out seg/b --fine-tune --epochs 50
"""

PREDICT_EXAMPLES = """Examples:

  anomaly-ae segment predict seg/a inspection/ --out seg_out/

  anomaly-ae segment predict seg/a inspection/ --out seg_out/ --masks labelled/masks
"""


@segment_app.command("train", epilog=TRAIN_EXAMPLES)
@friendly_errors
def segment_train(
    encoder_dir: Annotated[Path, typer.Argument(help="Folder written by 'anomaly-ae export-encoder'.")],
    images: Annotated[Path, typer.Option(help="Labelled images (recursive).")],
    masks: Annotated[Path, typer.Option(help="Masks: <relative stem>_mask.png or <relative stem>.png.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for segmenter.keras and segmenter.json.")],
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = 30,
    fine_tune: Annotated[bool, typer.Option(help="Train the encoder too (default: frozen).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the split, initialisation and shuffling.")] = 0,
    no_track: Annotated[bool, typer.Option("--no-track", help="Do not record an MLflow run.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier segmenter in --out (other files stay).")] = False,
) -> None:
    """Train a U-Net-style segmenter; reports Dice / IoU on a held-out fifth of the pairs."""
    for name, folder in (("ENCODER_DIR", encoder_dir), ("--images", images), ("--masks", masks)):
        if not folder.is_dir():
            fail_usage(f"{name} {folder} is not a folder")
    if not (encoder_dir / ENCODER_JSON).is_file():
        fail_usage(f"{encoder_dir} has no encoder.json (run 'anomaly-ae export-encoder' first)")
    loading(False)

    from anomaly_ae import OutputConflict
    from anomaly_ae.io.folders import check_writable
    from anomaly_ae.segmentation.train import (
        BATCH_SIZE,
        encoder_preprocessing,
        save_segmenter,
        train_segmenter,
    )
    from anomaly_ae.training.callbacks import EpochProgress, TrackingCallback

    try:
        check_writable(out, "segmenter", SEGMENTER_FILES, overwrite,
             {"encoder folder": encoder_dir, "image folder": images, "mask folder": masks})
        pre = encoder_preprocessing(encoder_dir)
    except OutputConflict as err:
        fail_usage(str(err))
    except (ValueError, KeyError, TypeError) as err:
        fail_usage(f"{encoder_dir / ENCODER_JSON} is damaged ({type(err).__name__}): export the encoder again")
    pairs = _pairs(images, masks, pre)
    progress = reporter(False)
    progress.stage(f"training the segmenter on {len(pairs.x)} image/mask pairs, {epochs} epochs")
    with open_tracker("anomaly-ae-segment", out.name, no_track, show_store=False) as tracker:
        tracker.log_params({"encoder_dir": str(encoder_dir), "epochs": epochs, "fine_tune": fine_tune,
                            "seed": seed, "n_pairs": len(pairs.x)})
        model, metrics = train_segmenter(encoder_dir, pairs, epochs=epochs, seed=seed, freeze_encoder=not fine_tune,
                                         callbacks=[EpochProgress(progress, epochs, BATCH_SIZE),
                                                    TrackingCallback(tracker)])
        tracker.log_metrics({"val_dice": metrics["dice"], "val_iou": metrics["iou"]})
    try:
        save_segmenter(out, model, pre, encoder_dir, metrics, overwrite)
    except OutputConflict as err:
        fail_usage(str(err))
    results.print(f"held-out Dice {metrics['dice']:.4f}   IoU {metrics['iou']:.4f}   "
                  f"({metrics['n_train']} train / {metrics['n_val']} held-out pairs)")
    results.print(f"segmenter      {out / SEGMENTER_KERAS}")


def _pairs(images: Path, masks: Path, pre: Any) -> Any:
    """The image/mask pairs (at least 2); each pair left out is named."""
    from anomaly_ae.segmentation.train import load_pairs

    try:
        pairs = load_pairs(images, masks, pre)
    except ValueError as err:
        fail_usage(str(err))
    if len(pairs.x) < 2:
        fail_usage("need at least 2 image/mask pairs")
    for p, why in pairs.skipped:
        note("skipped", "yellow", f"{p}: {why}")
    return pairs


@segment_app.command("predict", epilog=PREDICT_EXAMPLES)
@friendly_errors
def segment_predict(
    model_dir: Annotated[Path, typer.Argument(help="Folder written by 'anomaly-ae segment train'.")],
    input_dir: Annotated[Path, typer.Argument(help="Images to segment (recursive).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for masks/ and overlays/.")],
    masks: Annotated[Path | None, typer.Option(help="Ground-truth masks, to report Dice / IoU.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace earlier predictions in --out (other files stay).")] = False,
) -> None:
    """Predict defect masks (original size, 0/255) and overlays; Dice / IoU when masks are given."""
    if not (model_dir / SEGMENTER_JSON).is_file() or not input_dir.is_dir():
        fail_usage("MODEL_DIR must hold segmenter.json and INPUT_DIR must be a folder")
    loading(False)
    from anomaly_ae import OutputConflict
    from anomaly_ae.segmentation.predict import SegmenterError, predict_folder

    try:
        summary = predict_folder(model_dir, input_dir, out, masks, overwrite,
                                 on_failure=lambda line: note("failed", "yellow", line))
    except (OutputConflict, SegmenterError) as err:
        fail_usage(str(err))
    if summary.dice is not None:
        results.print(f"Dice {summary.dice:.4f}   IoU {summary.iou:.4f} over {summary.n_with_masks} images with masks")
    for line in summary.problems:
        warn(line)
    results.print(f"masks          {out / 'masks'}  (<relative path>.png, e.g. a.jpg -> a.jpg.png)")
    if summary.n_failed:
        raise typer.Exit(3)
