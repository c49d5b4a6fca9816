"""``anomaly-ae train GOOD_DIR``: fit a detector, save its model directory, track the run in MLflow.

The run itself is :func:`anomaly_ae.training.run.train_run`; this file parses, resolves the config
file and prints.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import EXIT_FAILED, console, fail_usage, new_bar, note, open_tracker, warn

if TYPE_CHECKING:
    from anomaly_ae import Detector, DetectorConfig

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
        if any(v is not None for v in (config, model, out, epochs, image_size, channels, seed, experiment,
                                       overwrite or None)):
            fail_usage("--resume continues with the recorded config: drop --config/--model/--out/--overwrite and "
                       "the overrides")
        _resume(resume, good_dir, no_track)
        return
    good_dir = _check_args(good_dir, channels)
    cfg = _load_config(config, model, {"model.name": model, "train.epochs": epochs, "data.image_size": image_size,
                                       "data.channels": channels, "train.seed": seed,
                                       "tracking.experiment": experiment})
    _check_images(good_dir)

    from anomaly_ae import OutputConflict
    from anomaly_ae.training.run import prepare_run_dir

    run_dir = out or _fresh_run_dir(Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S"))
    try:
        prepare_run_dir(run_dir, good_dir, overwrite)
    except OutputConflict as err:
        fail_usage(str(err))
    _train(cfg, good_dir, run_dir, no_track, run_id=None, resume=False)


def _check_args(good_dir: Path | None, channels: int | None) -> Path:
    if good_dir is None:
        fail_usage("GOOD_DIR is required (or --resume RUN_DIR)")
    if not good_dir.is_dir():
        fail_usage(f"GOOD_DIR {good_dir} is not a folder")
    if channels == 2:
        fail_usage("--channels must be 1 or 3")
    return good_dir


def _load_config(path: Path | None, model: str | None, overrides: dict) -> DetectorConfig:
    """``--config`` (default: ``configs/<model>.yaml`` when it exists, else ``configs/default.yaml``) + overrides."""
    if path is None and model is not None and (DEFAULT_CONFIG.parent / f"{model}.yaml").is_file():
        path = DEFAULT_CONFIG.parent / f"{model}.yaml"
    path = path or DEFAULT_CONFIG
    if not path.is_file():
        fail_usage(f"config file {path} not found")

    import warnings

    import yaml
    from pydantic import ValidationError

    from anomaly_ae import DetectorConfig

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cfg = DetectorConfig.from_yaml(path)
        for w in caught:
            warn(str(w.message))
        return cfg.with_overrides(overrides)
    except ValidationError as err:
        from anomaly_ae.config import describe_validation_error

        fail_usage("\n".join(describe_validation_error(err)))
    except (ValueError, KeyError) as err:
        fail_usage(f"invalid configuration: {err}")
    except yaml.YAMLError as err:
        fail_usage(f"config file {path} is not valid YAML: {' '.join(str(err).split())}")
    except UnicodeDecodeError:
        fail_usage(f"config file {path} is not UTF-8 text")


def _check_images(good_dir: Path) -> None:
    from anomaly_ae.data.images import list_images

    problems: list[str] = []
    n_images = len(list_images(good_dir, problems=problems))
    for line in problems:
        warn(f"{line} (its images are left out of training)")
    if n_images < 2:
        fail_usage(f"GOOD_DIR {good_dir} holds {n_images} image(s); at least 2 are needed")


def _fresh_run_dir(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``, ... when two trainings start within the same second."""
    candidate, k = base, 1
    while candidate.exists():
        k += 1
        candidate = base.with_name(f"{base.name}-{k}")
    return candidate


def _resume(run_dir: Path, good_dir: Path | None, no_track: bool) -> None:
    """``train --resume RUN_DIR``: the config and image folder recorded in the checkpoint."""
    from anomaly_ae.training.run import ResumeError, resume_plan

    try:
        plan = resume_plan(run_dir, good_dir)
    except ResumeError as err:
        fail_usage(str(err))
    if not plan.resume:  # interrupted before the first epoch ended: nothing to continue, train from the start
        console.print(f"restarting     {run_dir}: no epoch had finished; training from epoch 1 with its config")
    else:
        console.print(f"resuming       {run_dir} after epoch {plan.epoch} of {plan.config.train.epochs}")
    _train(plan.config, plan.good_dir, run_dir, no_track, run_id=plan.mlflow_run_id, resume=plan.resume)


def _train(cfg: DetectorConfig, good_dir: Path, run_dir: Path, no_track: bool, run_id: str | None,
           resume: bool) -> None:
    """Lock ``run_dir``, open the MLflow run, train with a progress bar, print the summary."""
    from anomaly_ae import OutputConflict
    from anomaly_ae.outdir import OutDirLock
    from anomaly_ae.training.callbacks import RichProgress, TrackingCallback
    from anomaly_ae.training.checkpoint import TrainingDiverged
    from anomaly_ae.training.run import train_run

    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with OutDirLock(run_dir), open_tracker(cfg.tracking.experiment, run_dir.name, no_track, run_id,
                                               resumed_run=True) as tracker:
            size = "auto" if cfg.data.image_size == "auto" else "x".join(map(str, cfg.data.image_size))
            console.print(f"training {cfg.model.name} autoencoder on {good_dir} ({size}x{cfg.data.channels}, "
                          f"up to {cfg.train.epochs} epochs)")
            with new_bar("{task.description}") as progress:
                callbacks = [RichProgress(progress, cfg.train.epochs), TrackingCallback(tracker)]
                det = train_run(cfg, good_dir, run_dir, tracker, resume, callbacks)
            _print_summary(det, run_dir)
    except OutputConflict as err:
        fail_usage(str(err))
    except TrainingDiverged as err:
        note("error:", "red", str(err))
        raise typer.Exit(EXIT_FAILED) from None
    except ValueError as err:  # e.g. fewer than 2 readable images
        fail_usage(str(err))


def _print_summary(det: Detector, run_dir: Path) -> None:
    info, stats = det.train_info_, det.score_stats_
    for item in info["skipped"]:
        note("skipped", "yellow", f"{item['path']}: {item['error']}")
    console.print(f"model          {run_dir}")
    console.print(
        f"trained        {info['n_train']} images, validated on {info['n_val']}, {info['epochs_run']} epochs "
        f"(best {info['best_epoch']}, val loss {info['best_val_loss']:.5g}) in {info['fit_seconds']:.1f} s"
    )
    console.print(
        f"threshold      {det.threshold_:.6g} (quantile {det.config.threshold.quantile} of {stats.count} "
        f"validation-good scores; mean {stats.mean:.4g}, std {stats.std:.4g}, max {stats.max:.4g})"
    )
    check = info.get("self_check")
    if check:
        s = det.config.scoring
        how = "selected" if check["selected"] else "configured"
        console.print(
            f"self-check     synthetic defects on {check['n_good']} held-out good images: image AUROC "
            f"{check['image_auroc']:.3f}, pixel AUROC {check['pixel_auroc']:.3f}, AUPRO {check['aupro']:.3f} "
            f"({how}: {s.metric} map, sigma {s.smoothing_sigma:g}, {s.reduction}; an estimate, not a measurement "
            "on real defects)"
        )
