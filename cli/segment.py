"""``anomaly-ae segment train|predict``: supervised defect segmentation from an exported encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import console, fail_usage, fallback_uri, friendly_errors, note, tracking_uri, warn

segment_app = typer.Typer(help="Train and apply a segmentation model built on an exported encoder.",
                          no_args_is_help=True)


@segment_app.command("train")
@friendly_errors
def segment_train(
    encoder_dir: Annotated[Path, typer.Argument(help="Folder written by 'anomaly-ae export-encoder'.")],
    images: Annotated[Path, typer.Option(help="Labelled images (recursive).")],
    masks: Annotated[Path, typer.Option(help="Masks: <relative stem>_mask.png or <relative stem>.png.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for segmenter.keras and segmenter.json.")],
    epochs: Annotated[int, typer.Option(min=1)] = 30,
    fine_tune: Annotated[bool, typer.Option(help="Train the encoder too (default: frozen).")] = False,
    seed: Annotated[int, typer.Option()] = 0,
    no_track: Annotated[bool, typer.Option("--no-track", help="Do not record an MLflow run.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier segmenter in --out (other files stay).")] = False,
) -> None:
    """Train a U-Net-style segmenter; reports Dice / IoU on a held-out fifth of the pairs."""
    for name, folder in (("ENCODER_DIR", encoder_dir), ("--images", images), ("--masks", masks)):
        if not folder.is_dir():
            fail_usage(f"{name} {folder} is not a folder")
    if not (encoder_dir / "encoder.json").is_file():
        fail_usage(f"{encoder_dir} has no encoder.json (run 'anomaly-ae export-encoder' first)")

    from anomaly_ae.artifact import write_json_atomic
    from anomaly_ae.outdir import OutputConflict, plan, staging
    from anomaly_ae.segmentation.train import encoder_preprocessing, load_pairs, train_segmenter

    names = ["segmenter.keras", "segmenter.json"]
    protect = {"encoder folder": encoder_dir, "image folder": images, "mask folder": masks}
    try:
        plan(out, "segmenter", names, overwrite, protect)
    except OutputConflict as err:
        fail_usage(str(err))

    try:
        pre = encoder_preprocessing(encoder_dir)
    except (ValueError, KeyError, TypeError) as err:
        fail_usage(f"{encoder_dir / 'encoder.json'} is damaged ({type(err).__name__}): export the encoder again")
    try:
        pairs = load_pairs(images, masks, pre)
    except ValueError as err:
        fail_usage(str(err))
    if len(pairs.x) < 2:
        fail_usage("need at least 2 image/mask pairs")
    for p, why in pairs.skipped:
        note("skipped", "yellow", f"{p}: {why}")

    def run(callbacks: list) -> tuple:
        return train_segmenter(encoder_dir, pairs, epochs=epochs, seed=seed, freeze_encoder=not fine_tune,
                               callbacks=callbacks)

    if no_track:
        model, metrics = run([])
    else:
        from anomaly_ae.tracking import MlflowTracker
        from anomaly_ae.training.callbacks import TrackingCallback

        uri = tracking_uri()
        with MlflowTracker(uri, "anomaly-ae-segment", run_name=out.name, fallback_uri=fallback_uri(uri),
                           on_fallback=warn, off_on_failure=True) as tracker:
            tracker.log_params({"encoder_dir": str(encoder_dir), "epochs": epochs, "fine_tune": fine_tune,
                                "seed": seed, "n_pairs": len(pairs.x)})
            model, metrics = run([TrackingCallback(tracker)])
            tracker.log_metrics({"val_dice": metrics["dice"], "val_iou": metrics["iou"]})
            if not tracker.disabled:
                console.print(f"MLflow run     {tracker.run_id}")
    try:
        with staging(out, "segmenter", names, overwrite, order=("segmenter.json",)) as tmp:
            model.save(tmp / "segmenter.keras")
            write_json_atomic(tmp / "segmenter.json", {"schema_version": 1, "image_size": list(pre.image_size),
                                                       "channels": pre.channels, "threshold": 0.5,
                                                       "encoder_dir": str(encoder_dir), "metrics": metrics})
    except OutputConflict as err:
        fail_usage(str(err))
    console.print(f"held-out Dice {metrics['dice']:.4f}   IoU {metrics['iou']:.4f}   "
                  f"({metrics['n_train']} train / {metrics['n_val']} held-out pairs)")
    console.print(f"segmenter      {out / 'segmenter.keras'}")


@segment_app.command("predict")
@friendly_errors
def segment_predict(
    model_dir: Annotated[Path, typer.Argument(help="Folder written by 'anomaly-ae segment train'.")],
    input_dir: Annotated[Path, typer.Argument(help="Images to segment (recursive).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for masks/ and overlays/.")],
    masks: Annotated[Path | None, typer.Option(help="Ground-truth masks, to report Dice / IoU.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace earlier predictions in --out (other files stay).")] = False,
) -> None:
    """Predict defect masks (original size, 0/255) and overlays; Dice / IoU when masks are given."""
    if not (model_dir / "segmenter.json").is_file() or not input_dir.is_dir():
        fail_usage("MODEL_DIR must hold segmenter.json and INPUT_DIR must be a folder")
    from anomaly_ae.outdir import OutputConflict, plan, staging

    names = ["masks", "overlays"]
    try:
        plan(out, "segmentation", names, overwrite, {"model folder": model_dir, "input folder": input_dir,
                                                      "mask folder": masks})
        info, model = _load_segmenter(model_dir)
        with staging(out, "segmentation", names, overwrite) as tmp:
            failed = _predict_into(tmp, info, model, input_dir, masks, exclude=out)
    except OutputConflict as err:
        fail_usage(str(err))
    console.print(f"masks          {out / 'masks'}  (<relative path>.png, e.g. a.jpg -> a.jpg.png)")
    if failed:
        raise typer.Exit(3)


def _load_segmenter(model_dir: Path) -> tuple[dict, Any]:
    """``segmenter.json`` and the Keras model (safe mode); a damaged folder is a usage error."""
    import json

    import keras

    import anomaly_ae.models  # noqa: F401  (registers the serialisable classes)

    try:
        info = json.loads((model_dir / "segmenter.json").read_text(encoding="utf-8"))
        info["image_size"], info["channels"], info["threshold"]  # noqa: B018 - the fields predict needs
        model = keras.saving.load_model(model_dir / "segmenter.keras", safe_mode=True, compile=False)
    except (ValueError, KeyError, TypeError) as err:
        fail_usage(f"{model_dir}: cannot load the segmenter ({type(err).__name__}: {str(err)[:120]})")
    return info, model


def _predict_into(tmp: Path, info: dict, model: Any, input_dir: Path, masks: Path | None, exclude: Path) -> int:
    """Write ``masks/`` and ``overlays/`` of every image under ``input_dir`` into ``tmp``; returns the failures."""
    import cv2
    import keras
    import numpy as np

    from anomaly_ae.data.images import ImageReadError, Preprocessing, list_images, read_image
    from anomaly_ae.data.mvtec import mask_path_for
    from anomaly_ae.fileio import display_name, output_name, write_png_atomic
    from anomaly_ae.segmentation.train import dice_iou

    pre = Preprocessing(tuple(info["image_size"]), int(info["channels"]))
    preds, truths, failed = [], [], 0
    problems: list[str] = []
    for p in list_images(input_dir, exclude=[exclude], problems=problems):
        rel = display_name(p.relative_to(input_dir).as_posix())
        try:
            image = read_image(p, pre.channels)
        except ImageReadError as err:
            note("failed", "yellow", f"{rel}: {err}")
            failed += 1
            continue
        prob = keras.ops.convert_to_numpy(model.predict(pre(image), verbose=0))[0, :, :, 0]
        prob = cv2.resize(prob, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
        mask = prob > info["threshold"]
        write_png_atomic(tmp / "masks" / output_name(rel, ".png"), mask.astype(np.uint8) * 255)
        base = cv2.cvtColor(image if pre.channels == 3 else np.repeat(image, 3, axis=2), cv2.COLOR_RGB2BGR)
        overlay = base.copy()
        overlay[mask] = (0.5 * overlay[mask] + 0.5 * np.array([0, 0, 255])).astype(np.uint8)
        write_png_atomic(tmp / "overlays" / output_name(rel, ".png"), overlay)
        if masks is not None and (mp := mask_path_for(p, input_dir, masks)) is not None:
            try:
                truths.append(read_image(mp, 1)[..., 0] > 127)
                preds.append(mask)
            except ImageReadError as err:
                note("failed", "yellow", f"mask of {rel}: {err}")
                failed += 1
    if preds:
        dice, iou = dice_iou(np.concatenate([m.ravel() for m in preds]), np.concatenate([t.ravel() for t in truths]))
        console.print(f"Dice {dice:.4f}   IoU {iou:.4f} over {len(preds)} images with masks")
    for line in problems:
        warn(line)
    return failed + len(problems)
