"""``anomaly-ae train GOOD_DIR``: fit a detector, save its model directory, track the run in MLflow.

The run itself is :func:`anomaly_ae.pipelines.train.train_run`; this file parses, resolves the config
file and prints.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from anomaly_ae.cli.choices import EngineChoice, ModelName, value
from anomaly_ae.cli.common import (
    EXIT_FAILED,
    Alias,
    Json,
    NoTrack,
    Quiet,
    RayAddress,
    Register,
    fail_usage,
    loading,
    note,
    print_json,
    print_summary,
    reporter,
    warn,
)

if TYPE_CHECKING:
    from anomaly_ae import DetectorConfig


EXAMPLES = """Examples:

  anomaly-ae train ./good_images

  anomaly-ae train ./good_images --model vae --epochs 40 --out runs/vae

  anomaly-ae train ./good_images --config fast --no-track --json > train.json

  anomaly-ae train ./good_images --config my_config.yaml   (start from: anomaly-ae presets default > my_config.yaml)

  anomaly-ae train --resume runs/20261127-101500

  anomaly-ae train /shared/good --out /shared/runs/a --engine ray --workers 4 --address 10.0.0.5:6379
"""

FROM_CONFIG = "from the config"


def train(
    good_dir: Annotated[
        Path | None, typer.Argument(help="Folder of good images (searched recursively); optional with --resume.")
    ] = None,
    config: Annotated[str | None, typer.Option(
        "--config", "-c", help="A YAML config file, or the name of a preset ('anomaly-ae presets' lists them).",
        show_default="the preset of --model, else 'default'")] = None,
    model: Annotated[ModelName | None, typer.Option("--model", "-m", help="Autoencoder (model.name).",
                                                    show_default=FROM_CONFIG)] = None,
    out: Annotated[Path | None, typer.Option(help="Model directory to write.", show_default="runs/<timestamp>")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="train.epochs.", show_default=FROM_CONFIG)] = None,
    image_size: Annotated[int | None, typer.Option(min=8, help="data.image_size (square).",
                                                   show_default=FROM_CONFIG)] = None,
    channels: Annotated[int | None, typer.Option(min=1, max=3, help="data.channels: 1 or 3.",
                                                 show_default=FROM_CONFIG)] = None,
    seed: Annotated[int | None, typer.Option(help="train.seed.", show_default=FROM_CONFIG)] = None,
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment name (tracking.experiment).",
                                                   show_default=FROM_CONFIG)] = None,
    no_track: NoTrack = False,
    register: Register = None,
    alias: Alias = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the interrupted training of this model directory.",
                                                show_default=False)] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace the model (or interrupted training) in --out; other files there stay.")
    ] = False,
    engine: Annotated[EngineChoice, typer.Option(help="Train in this process, or on Ray workers (JAX backend).")
                      ] = EngineChoice.local,
    workers: Annotated[int, typer.Option(min=1, help="Ray workers (with --engine ray).")] = 2,
    address: RayAddress = None,
    quiet: Quiet = False,
    json_out: Json = False,
) -> None:
    """Train an autoencoder on GOOD_DIR and write a self-contained model directory.

    A checkpoint is written to RUN_DIR/checkpoint after every epoch; after Ctrl-C or a crash,
    'anomaly-ae train --resume RUN_DIR' continues from it with the same config and images.
    """
    loading(quiet)
    show = Show(quiet, json_out, register, alias, workers if engine is EngineChoice.ray else 1, address, overwrite)
    if alias and not register:
        fail_usage("--alias needs --register NAME")
    if engine is EngineChoice.ray:
        _require_ray(address)
    if resume is not None:
        _resume(resume, good_dir, no_track, show, (config, model, out, epochs, image_size, channels, seed,
                                                   experiment, overwrite or None))
        return
    good_dir = _check_args(good_dir, channels)
    cfg = _load_config(config, value(model), {
        "model.name": value(model), "train.epochs": epochs, "data.image_size": image_size, "data.channels": channels,
        "train.seed": seed, "tracking.experiment": experiment})
    _check_images(good_dir)
    run_dir = _prepared_run_dir(out, good_dir, overwrite)
    _train(cfg, good_dir, run_dir, no_track, show)


def _require_ray(address: str | None) -> None:
    """Before any work: without the [ray] extra, or with an ``--address`` where nothing listens, one line."""
    from anomaly_ae.pipelines.score_ray import RayUnreachable, check_ray_address, require_ray

    try:
        require_ray()
        if address:
            check_ray_address(address)
    except (ImportError, RayUnreachable) as err:
        fail_usage(str(err))


def _prepared_run_dir(out: Path | None, good_dir: Path, overwrite: bool) -> Path:
    """``--out`` (default ``runs/<timestamp>``), refused before any work when it may not be written."""
    from anomaly_ae import OutputConflict
    from anomaly_ae.pipelines.train import default_run_dir, prepare_run_dir

    run_dir = out or default_run_dir()
    try:
        prepare_run_dir(run_dir, good_dir, overwrite)
    except OutputConflict as err:
        fail_usage(str(err))
    return run_dir


@dataclass
class Show:
    """What the user asked for beyond the config: ``quiet`` hides progress (stderr), ``json`` replaces the
    result lines, ``register`` / ``alias`` name the model in the MLflow Model Registry."""

    quiet: bool
    json: bool
    register: str | None = None
    alias: str | None = None
    workers: int = 1  # more than 1: train on Ray workers
    address: str | None = None  # of the Ray cluster
    overwrite: bool = False  # replace the model in --out


def _check_args(good_dir: Path | None, channels: int | None) -> Path:
    if good_dir is None:
        fail_usage("GOOD_DIR is required (or --resume RUN_DIR)")
    if not good_dir.is_dir():
        fail_usage(f"GOOD_DIR {good_dir} is not a folder")
    if channels == 2:
        fail_usage("--channels must be 1 or 3")
    return good_dir


def _load_config(ref: str | None, model: str | None, overrides: dict) -> DetectorConfig:
    """``--config`` (a file or a preset; default: the preset of ``--model`` when there is one, else
    ``default``) + overrides; a config that cannot be used stops with its reason."""
    from anomaly_ae.config import ConfigError, resolve_config

    try:
        return resolve_config(ref, model, overrides, on_warning=warn)
    except ConfigError as err:
        fail_usage(str(err))


def _check_images(good_dir: Path) -> None:
    from anomaly_ae.data.images import list_images

    problems: list[str] = []
    n_images = len(list_images(good_dir, problems=problems))
    for line in problems:
        warn(f"{line} (its images are left out of training)")
    if n_images < 2:
        fail_usage(f"GOOD_DIR {good_dir} holds {n_images} image(s); at least 2 are needed")


def _resume(run_dir: Path, good_dir: Path | None, no_track: bool, show: Show, given: tuple) -> None:
    """``train --resume RUN_DIR``: the config and image folder recorded in the checkpoint (``given``: the
    options that would change them, all ``None``)."""
    from anomaly_ae.pipelines.train import ResumeError, resume_plan

    if any(v is not None for v in given):
        fail_usage("--resume continues with the recorded config: drop --config/--model/--out/--overwrite and "
                   "the overrides")
    try:
        plan = resume_plan(run_dir, good_dir)
    except ResumeError as err:
        fail_usage(str(err))
    progress = reporter(show.quiet)
    if not plan.resume:  # interrupted before the first epoch ended: nothing to continue, train from the start
        progress.stage(f"restarting {run_dir}: no epoch had finished; training from epoch 1 with its config")
    else:
        progress.stage(f"resuming {run_dir} after epoch {plan.epoch} of {plan.config.train.epochs}")
    _train(None, plan.good_dir, run_dir, no_track, show, resume=True)


def _train(cfg: DetectorConfig | None, good_dir: Path, run_dir: Path, no_track: bool, show: Show,
           resume: bool = False) -> None:
    """:meth:`Engine.fit <anomaly_ae.pipelines.engine.Engine.fit>` (progress on stderr), then the summary on stdout."""
    from anomaly_ae import OutputConflict, TrainOptions
    from anomaly_ae.pipelines.engine import Engine
    from anomaly_ae.pipelines.train import ResumeError
    from anomaly_ae.training.checkpoint import TrainingDiverged

    engine = Engine(run_dir, tracking=not no_track, verbose=reporter(show.quiet), on_warning=warn)
    options = TrainOptions(resume=resume, overwrite=show.overwrite and not resume, registered_name=show.register,
                           alias=show.alias, workers=show.workers, address=show.address)
    try:
        engine.fit(None if resume else good_dir, cfg, options)
    except KeyboardInterrupt:
        _interrupted(run_dir)
    except (OutputConflict, ResumeError) as err:
        fail_usage(str(err))
    except TrainingDiverged as err:
        note("error:", "red", str(err))
        raise typer.Exit(EXIT_FAILED) from None
    except (ValueError, ImportError) as err:  # e.g. fewer than 2 readable images; the [ray] extra missing
        fail_usage(str(err))
    summary = engine.summary_
    if show.json:
        print_json(summary)
    else:
        print_summary(_rows(summary), "trained")
    for kind, text in summary["caveats"].items():
        warn(f"{text}; {_REMEDY[kind].format(run=shlex.quote(str(run_dir)))}")


def _interrupted(run_dir: Path) -> NoReturn:
    """Ctrl-C: one line saying which epochs the checkpoint keeps and the command that continues."""
    from anomaly_ae.io.names import CHECKPOINT_DIR
    from anomaly_ae.training.checkpoint import latest_checkpoint

    ckpt = latest_checkpoint(run_dir / CHECKPOINT_DIR) if (run_dir / CHECKPOINT_DIR).is_dir() else None
    kept = ("no epoch had finished (nothing to keep)" if ckpt is None
            else f"epoch 1 is kept in {run_dir / CHECKPOINT_DIR}" if ckpt.epoch == 1
            else f"epochs 1-{ckpt.epoch} are kept in {run_dir / CHECKPOINT_DIR}")
    note("interrupted:", "yellow", f"{kept}; continue with: anomaly-ae train --resume {shlex.quote(str(run_dir))}")
    raise typer.Exit(130)


#: what to do about each caveat of :meth:`~anomaly_ae.postprocessing.PostProcessor.caveats`
_REMEDY = {
    "few_good": "recalibrate on more held-out good images: anomaly-ae calibrate {run} --good MORE_GOOD_DIR",
    "self_check": "train longer (--epochs) or on more good images before trusting its verdicts",
}


_PLURAL = {"patch": "patches", "image": "images"}


def _rows(j: dict[str, Any]) -> list[tuple[str, str]]:
    from anomaly_ae.config import scoring_text

    rows = [
        ("model", j["model_dir"]),
        ("trained", f"{j['model']} autoencoder, {'x'.join(map(str, j['image_size']))}x{j['channels']}, on "
                    f"{j['n_train']} images, validated on {j['n_val']}, {j['epochs_run']} epochs (best "
                    f"{j['best_epoch']}, val loss {j['best_val_loss']:.5g}) in {j['fit_seconds']:.1f} s"
                    + (f", {j['samples_per_second']:,.0f} {_PLURAL.get(j['sample_unit'], 'samples')}/s after the "
                       "first epoch"
                       if j["samples_per_second"] else "")),
        ("threshold", f"{j['threshold']:.6g}: {j['threshold_rule']}; held-out good scores: mean "
                      f"{j['val_score_mean']:.4g}, std {j['val_score_std']:.4g}, max {j['val_score_max']:.4g}"),
        ("false alarms", f"expected false-alarm rate on new good images {j['expected_fpr']:.1%}, at most "
                         f"{j['fpr_upper']:.1%} ({j['fpr_confidence']:.0%} bound; from {j['n_val']} held-out good "
                         "images)"),
    ]
    if j["skipped"]:
        rows.append(("skipped", f"{len(j['skipped'])} unreadable image(s), listed above"))
    c, sc = j["self_check"], j["scoring"]
    if c:
        interval = c.get("image_auroc_interval")
        within = f" (95% interval {interval[0]:.3f}-{interval[1]:.3f})" if interval else ""
        rows.append(("self-check", f"synthetic defects on {c['n_good']} held-out good images: image AUROC "
                     f"{c['image_auroc']:.3f}{within}, pixel AUROC {c['pixel_auroc']:.3f}, AUPRO {c['aupro']:.3f} "
                     f"({'selected' if c['selected'] else 'configured'}: {scoring_text(sc)}; an estimate, not a "
                     "measurement on real defects)"))
    if j["mlflow_run_id"]:
        rows.append(("MLflow run", f"{j['mlflow_run_id']} in {j['tracking_uri']}"))
        rows.append(("MLflow model", str(j["mlflow_model_uri"])))
        if j["tracking_uri"].startswith("sqlite:"):
            rows.append(("", f"view it with: mlflow ui --backend-store-uri {j['tracking_uri']}"))
    return rows
