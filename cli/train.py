"""``anomaly-ae train GOOD_DIR``: fit a detector, save its model directory, track the run in MLflow."""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import EXIT_FAILED, console, fail_usage, fallback_uri, note, tracking_uri, warn

if TYPE_CHECKING:
    from anomaly_ae.config import DetectorConfig
    from anomaly_ae.tracking import Tracker

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


def train(
    good_dir: Annotated[
        Path | None, typer.Argument(help="Folder of good images (searched recursively); optional with --resume.")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML config (default: configs/<model>.yaml or configs/default.yaml)."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="conv | dense | linear | sparse | contractive | denoising | vae (model.name)."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Model directory to write (default: runs/<timestamp>).")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Override train.epochs.")] = None,
    image_size: Annotated[int | None, typer.Option(min=8, help="Override data.image_size (square).")] = None,
    channels: Annotated[int | None, typer.Option(min=1, max=3, help="Override data.channels: 1 or 3.")] = None,
    seed: Annotated[int | None, typer.Option(help="Override train.seed.")] = None,
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment name.")] = None,
    no_track: Annotated[bool, typer.Option("--no-track", help="Do not record an MLflow run.")] = False,
    resume: Annotated[
        Path | None, typer.Option(help="Continue the interrupted training of this model directory.")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace the model (or interrupted training) in --out; other files there stay.")
    ] = False,
) -> None:
    """Train an autoencoder on GOOD_DIR and write a self-contained model directory.

    A checkpoint is written to RUN_DIR/checkpoint after every epoch; after a crash,
    'anomaly-ae train --resume RUN_DIR' continues from it with the same config and images.
    """
    if resume is not None:
        _resume(resume, good_dir, no_track,
                given=[config, model, out, epochs, image_size, channels, seed, experiment, overwrite or None])
        return
    if good_dir is None:
        fail_usage("GOOD_DIR is required (or --resume RUN_DIR)")
    if not good_dir.is_dir():
        fail_usage(f"GOOD_DIR {good_dir} is not a folder")
    if channels == 2:
        fail_usage("--channels must be 1 or 3")
    if config is None and model is not None and (DEFAULT_CONFIG.parent / f"{model}.yaml").is_file():
        config = DEFAULT_CONFIG.parent / f"{model}.yaml"
    cfg_path = config or DEFAULT_CONFIG
    if not cfg_path.is_file():
        fail_usage(f"config file {cfg_path} not found")

    import yaml
    from pydantic import ValidationError

    from anomaly_ae.config import DetectorConfig
    from anomaly_ae.data.images import list_images

    try:
        cfg = DetectorConfig.from_yaml(cfg_path).with_overrides(
            {
                "model.name": model,
                "train.epochs": epochs,
                "data.image_size": image_size,
                "data.channels": channels,
                "train.seed": seed,
                "tracking.experiment": experiment,
            }
        )
    except (ValidationError, ValueError, KeyError) as err:
        fail_usage(f"invalid configuration: {err}")
    except yaml.YAMLError as err:
        fail_usage(f"config file {cfg_path} is not valid YAML: {' '.join(str(err).split())}")
    except UnicodeDecodeError:
        fail_usage(f"config file {cfg_path} is not UTF-8 text")
    problems: list[str] = []
    n_images = len(list_images(good_dir, problems=problems))
    for line in problems:
        warn(f"{line} (its images are left out of training)")
    if n_images < 2:
        fail_usage(f"GOOD_DIR {good_dir} holds {n_images} image(s); at least 2 are needed")

    run_dir = out or _fresh_run_dir(Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S"))
    _prepare_run_dir(run_dir, good_dir, overwrite)
    _tracked(cfg, good_dir, run_dir, no_track, run_id=None, resume=False)


def _fresh_run_dir(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``, ... when two trainings start within the same second."""
    candidate, k = base, 1
    while candidate.exists():
        k += 1
        candidate = base.with_name(f"{base.name}-{k}")
    return candidate


def _prepare_run_dir(run_dir: Path, good_dir: Path, overwrite: bool) -> None:
    """Refuse a ``--out`` that would replace what the user did not ask to replace (before any training)."""
    from anomaly_ae.artifact import MODEL_DIR_ENTRIES
    from anomaly_ae.outdir import OutDirLock, OutputConflict, check_out_dir, plan, read_manifest

    try:
        check_out_dir(run_dir, {"image folder": good_dir})
        if run_dir.is_dir():
            with OutDirLock(run_dir):  # refused while another training writes there
                pass
        if "checkpoint" in read_manifest(run_dir).get("model", []) and not overwrite:
            fail_usage(f"{run_dir} holds an interrupted training: continue it with --resume {run_dir}, "
                       "start over with --overwrite, or choose another --out")
        plan(run_dir, "model", MODEL_DIR_ENTRIES, overwrite)
    except OutputConflict as err:
        fail_usage(str(err))


def _resume(run_dir: Path, good_dir: Path | None, no_track: bool, given: list) -> None:
    """``train --resume RUN_DIR``: the config and image folder recorded in the checkpoint."""
    from anomaly_ae.config import DetectorConfig
    from anomaly_ae.training.checkpoint import latest_checkpoint, read_run_state

    if any(v is not None for v in given):
        fail_usage("--resume continues with the recorded config: drop --config/--model/--out/--overwrite and the "
                   "overrides")
    ckpt_dir = run_dir / "checkpoint"
    start_over = f"start over with 'anomaly-ae train GOOD_DIR --out {run_dir} --overwrite'"
    if not (ckpt_dir / "config.yaml").is_file():
        done = (run_dir / "model.keras").is_file()
        fail_usage(f"{run_dir} has no checkpoint to resume" + (" (its training is complete)" if done else ""))
    try:
        cfg = DetectorConfig.from_yaml(ckpt_dir / "config.yaml")
    except Exception as err:  # noqa: BLE001 - any damage to the file: one line, and what to do
        fail_usage(f"{ckpt_dir / 'config.yaml'} is damaged ({type(err).__name__}): {start_over}")
    ckpt = latest_checkpoint(ckpt_dir)
    state = ckpt.state if ckpt is not None else read_run_state(ckpt_dir)
    recorded = Path(state["good_dir"]) if state.get("good_dir") else good_dir
    if recorded is None:
        fail_usage(f"{run_dir} does not record its image folder: give it, 'anomaly-ae train GOOD_DIR --resume "
                   f"{run_dir}'")
    if good_dir is not None and good_dir.resolve() != recorded.resolve():
        fail_usage(f"{run_dir} was trained on {recorded}, not {good_dir}")
    if not recorded.is_dir():
        fail_usage(f"the image folder {recorded} of {run_dir} is gone: {start_over}")
    if ckpt is None:  # interrupted before the first epoch ended: nothing to continue, train from the start
        console.print(f"restarting     {run_dir}: no epoch had finished; training from epoch 1 with its config")
        _tracked(cfg, recorded, run_dir, no_track, run_id=None, resume=False)
        return
    console.print(f"resuming       {run_dir} after epoch {ckpt.epoch} of {cfg.train.epochs}")
    _tracked(cfg, recorded, run_dir, no_track, run_id=state.get("mlflow_run_id"), resume=True)


def _tracked(cfg: DetectorConfig, good_dir: Path, run_dir: Path, no_track: bool, run_id: str | None,
             resume: bool) -> None:
    from anomaly_ae.outdir import OutDirLock, OutputConflict

    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with OutDirLock(run_dir):
            _tracked_locked(cfg, good_dir, run_dir, no_track, run_id, resume)
    except OutputConflict as err:
        fail_usage(str(err))


def _tracked_locked(cfg: DetectorConfig, good_dir: Path, run_dir: Path, no_track: bool, run_id: str | None,
                    resume: bool) -> None:
    if no_track:
        from anomaly_ae.tracking import NullTracker

        _fit_and_save(cfg, good_dir, run_dir, NullTracker(), resume)
        return
    from anomaly_ae.tracking import MlflowTracker

    uri = tracking_uri()
    fallback = fallback_uri(uri)
    with MlflowTracker(uri, cfg.tracking.experiment, run_name=run_dir.name, run_id=run_id, end_resumed_run=True,
                       fallback_uri=fallback, on_fallback=warn, off_on_failure=True) as tracker:
        _fit_and_save(cfg, good_dir, run_dir, tracker, resume)
        if tracker.disabled:
            return
        console.print(f"MLflow run     {tracker.run_id} in {tracker.uri}")
        if not os.environ.get("MLFLOW_TRACKING_URI") or tracker.fell_back:
            console.print(f"               view it with: mlflow ui --backend-store-uri {tracker.uri}")


def _fit_and_save(cfg: DetectorConfig, good_dir: Path, run_dir: Path, tracker: Tracker, resume: bool = False) -> None:
    import shutil

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from anomaly_ae.artifact import CONFIG_FILE, META_FILE, MODEL_FILE
    from anomaly_ae.detector import Detector
    from anomaly_ae.outdir import forget
    from anomaly_ae.outputs.overlays import reconstruction_grid
    from anomaly_ae.training.callbacks import RichProgress, TrackingCallback
    from anomaly_ae.training.checkpoint import TrainingDiverged, start_checkpoints

    ckpt_dir = run_dir / "checkpoint"
    run_state = {"good_dir": str(good_dir.resolve()), "mlflow_run_id": tracker.run_id}
    if not resume:
        tracker.log_params({"data.good_dir": str(good_dir), **cfg.flat()})
        start_checkpoints(ckpt_dir, cfg, run_state)
    console.print(f"training {cfg.model.name} autoencoder on {good_dir} ({cfg.data.image_size[0]}x"
                  f"{cfg.data.image_size[1]}x{cfg.data.channels}, up to {cfg.train.epochs} epochs)")
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as progress:
        try:
            det = Detector(cfg).fit(
                good_dir, callbacks=[RichProgress(progress, cfg.train.epochs), TrackingCallback(tracker)],
                checkpoint_dir=ckpt_dir, resume=resume,
                checkpoint_state=run_state,
            )
        except TrainingDiverged as err:
            note("error:", "red", str(err))
            raise typer.Exit(EXIT_FAILED) from None
        except ValueError as err:  # e.g. fewer than 2 readable images
            if not resume:
                shutil.rmtree(ckpt_dir, ignore_errors=True)
                forget(run_dir, "model", ["checkpoint"])
            fail_usage(str(err))
    if tracker.run_id is not None:
        det.train_info_["mlflow"] = {"run_id": tracker.run_id, "tracking_uri": tracker.uri}
    det.save(run_dir)
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # the model is complete: the checkpoint is not needed
    forget(run_dir, "model", ["checkpoint"])

    info = det.train_info_
    stats = det.score_stats_
    tracker.log_metrics(
        {
            "threshold": det.threshold_,
            "val_score_mean": stats.mean,
            "val_score_std": stats.std,
            "val_score_max": stats.max,
            **{f"val_score_{k}": v for k, v in stats.quantiles.items()},
            "best_val_loss": info["best_val_loss"],
            "best_epoch": info["best_epoch"],
            "fit_seconds": info["fit_seconds"],
            "n_train": info["n_train"],
            "n_val": info["n_val"],
            "n_skipped": len(info["skipped"]),
        }
    )
    if tracker.run_id is not None:
        with tempfile.TemporaryDirectory() as tmp:
            grid = Path(tmp) / "validation_grid.png"
            x = det.preprocessing_(det.val_sample_)
            x_hat = det.reconstruct(x)
            maps = det.maps_from_reconstruction(x, x_hat)
            grid.write_bytes(reconstruction_grid(x, x_hat, maps, det.heatmap_range_))
            tracker.log_artifact(grid)
        tracker.log_artifact(run_dir / "config.yaml")
        for name in (MODEL_FILE, META_FILE, CONFIG_FILE):  # the model, not the lock or the manifest
            tracker.log_artifact(run_dir / name, "model")

    for item in info["skipped"]:
        note("skipped", "yellow", f"{item['path']}: {item['error']}")
    console.print(f"model          {run_dir}")
    console.print(
        f"trained        {info['n_train']} images, validated on {info['n_val']}, {info['epochs_run']} epochs "
        f"(best {info['best_epoch']}, val loss {info['best_val_loss']:.5g}) in {info['fit_seconds']:.1f} s"
    )
    console.print(
        f"threshold      {det.threshold_:.6g} (quantile {cfg.threshold.quantile} of {stats.count} "
        f"validation-good scores; mean {stats.mean:.4g}, std {stats.std:.4g}, max {stats.max:.4g})"
    )

