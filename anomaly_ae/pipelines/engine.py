"""``Engine``: a run of anomaly-ae work, from Python as from the command line.

::

    from anomaly_ae import Engine, ScoreOptions, TrainOptions

    engine = Engine("runs/plate", tracking=True, verbose=1)      # MLflow: MLFLOW_TRACKING_URI, else ./mlflow.db
    det = engine.fit("good_images/")                              # model directory runs/plate, tracked
    engine.summary_["mlflow_run_id"], engine.summary_["threshold"]
    Engine("scores/day1").score("runs/plate", "inspection/day1", ScoreOptions(heatmaps="anomalous"))
    Engine("eval/plate").evaluate("runs/plate", "mvtec_like/")   # metrics.json + report.html, logged to the run
    Engine().calibrate("runs/plate", CalibrateOptions(good="holdout/good"))
    Engine("deploy/plate").export("runs/plate")                   # ONNX graph + deploy.json

An ``Engine`` owns what a run needs around the estimator: the output folder (``out_dir``) and its lock, the
MLflow tracker with its fallback (a server that fails falls back to the local store; a store that cannot
be written turns tracking off with one warning, never costing the work), the progress shown and the
warnings heard (``on_warning``), and the execution engine (local, or Ray through the options). The
:class:`~anomaly_ae.detector.Detector` stays the estimator; ``anomaly-ae`` commands are this class plus
printing. After a call, ``summary_`` holds its ``--json`` object where the command has one and
``tracker_`` the tracker it used (``None`` untracked).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import keras

from anomaly_ae.config import DetectorConfig
from anomaly_ae.detector import Detector
from anomaly_ae.evaluation.result import EvaluationResult
from anomaly_ae.io.folders import OutDirLock
from anomaly_ae.io.names import METRICS_JSON, REPORT_HTML
from anomaly_ae.pipelines.options import CalibrateOptions, EvaluateOptions, ScoreOptions, TrainOptions
from anomaly_ae.pipelines.score import ScoreSummary, Verdict
from anomaly_ae.progress import Progress, as_progress
from anomaly_ae.tracking import NullTracker, Tracker, default_tracking_uri, open_run

__all__ = ["Engine"]


class Engine:
    """A run into ``out_dir``: the folder, its lock, the tracker, progress and warnings (see module docstring).

    Args:
        out_dir: the folder a call writes: the model directory of :meth:`fit` (default ``runs/<timestamp>``),
            the scores of :meth:`score`, the evaluation of :meth:`evaluate`, the graph of :meth:`export`.
            :meth:`calibrate` updates the model directory it is given and needs none.
        tracking: ``True``: MLflow at :func:`~anomaly_ae.tracking.default_tracking_uri` (``MLFLOW_TRACKING_URI``,
            else ``./mlflow.db``) with the local fallback; a tracking URI; ``False``: nothing is tracked.
        verbose: 0 silent but for warnings; 1 stage lines and bars on stderr; or a
            :class:`~anomaly_ae.progress.Progress`.
        on_warning: hears every one-line warning (default: the progress's).
    """

    def __init__(self, out_dir: str | Path | None = None, *, tracking: bool | str = True, verbose: int | Progress = 0,
                 on_warning: Callable[[str], None] | None = None) -> None:
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.tracking = tracking
        self.progress = as_progress(verbose)
        self.on_warning = on_warning or self.progress.warning
        self.summary_: dict[str, Any] | None = None
        self.tracker_: Tracker | None = None

    @property
    def tracking_uri(self) -> str | None:
        """The store runs go to (``None`` when tracking is off)."""
        if self.tracking is False:
            return None
        return default_tracking_uri() if self.tracking is True else str(self.tracking)

    @contextlib.contextmanager
    def tracked(self, experiment: str, run_name: str | None = None, run_id: str | None = None,
                resumed_run: bool = False) -> Iterator[Tracker]:
        """The run's tracker (a ``NullTracker`` when tracking is off), kept in ``tracker_``."""
        if self.tracking_uri is None:
            self.tracker_ = None
            yield NullTracker()
            return
        with open_run(experiment, run_name, self.tracking_uri, run_id=run_id, resumed_run=resumed_run,
                      fallback=self.tracking is True, on_warning=self.on_warning) as tracker:
            self.tracker_ = tracker
            yield tracker

    def _out(self, what: str) -> Path:
        if self.out_dir is None:
            raise ValueError(f"{what} writes to the Engine's out_dir: give Engine(out_dir)")
        return self.out_dir

    # ------------------------------------------------------------------ fit
    def fit(self, good_dir: str | Path | None = None, config: DetectorConfig | None = None,
            options: TrainOptions | None = None, callbacks: Sequence[keras.callbacks.Callback] = ()) -> Detector:
        """Train on the good images under ``good_dir`` into the model directory ``out_dir`` and track the run.

        ``config``: the detector to train (default: the ``default`` preset). With ``options.resume`` the
        interrupted training in ``out_dir`` continues with its recorded config and images (``good_dir``, if
        given, must be the recorded one; ``config`` must be ``None``). ``summary_`` gets ``train``'s ``--json``.

        Raises:
            OutputConflict: ``out_dir`` holds a model, an interrupted training or another's files.
            ResumeError: nothing to resume, or the recorded images are gone.
            TrainingDiverged: the loss became NaN/inf (the last good checkpoint is kept).
            ValueError: the images cannot train a model (e.g. fewer than 2 readable ones).
        """
        from anomaly_ae.pipelines.train import default_run_dir, prepare_run_dir, resume_plan, train_run, train_summary
        from anomaly_ae.training.callbacks import TrackingCallback

        opts, run_id = TrainOptions.of(options), None
        if opts.resume:
            if config is not None:
                raise ValueError("a resumed training continues with its recorded config: give no config")
            plan = resume_plan(self._out("resuming a training"), None if good_dir is None else Path(good_dir))
            config, good, run_id, opts = plan.config, plan.good_dir, plan.mlflow_run_id, opts.with_(resume=plan.resume)
        else:
            if good_dir is None:
                raise ValueError("fit needs good_dir, the folder of good images")
            config, good = config or DetectorConfig.from_preset(), Path(good_dir)
            self.out_dir = self.out_dir or default_run_dir()
            prepare_run_dir(self.out_dir, good, opts.overwrite)
        run_dir = self.out_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        with OutDirLock(run_dir), self.tracked(config.tracking.experiment, run_dir.name, run_id, True) as tracker:
            det = train_run(config, good, run_dir, tracker, opts, [TrackingCallback(tracker), *callbacks],
                            verbose=self.progress)
            self.summary_ = train_summary(det, run_dir, tracker, opts.registered_name)
        return det

    # ---------------------------------------------------------------- score
    def score(self, model: Detector | str | Path, inputs: str | Path | Sequence[str | Path],
              options: ScoreOptions | None = None, **option_fields: Any) -> ScoreSummary | list[Verdict]:
        """Score a folder (or folder URI) into ``out_dir``: :func:`~anomaly_ae.pipelines.score.score_folder`'s
        :class:`ScoreSummary`; or an image file or a list of them: :func:`~anomaly_ae.pipelines.score.score_files`'s
        verdicts (written to ``out_dir`` when the Engine has one). Options as those functions take them."""
        from anomaly_ae.pipelines.score import score_files, score_folder

        opts = ScoreOptions.of(options, option_fields)
        if isinstance(inputs, str | Path) and not Path(inputs).is_file():  # a folder, or a folder URI
            return score_folder(model, inputs, self._out("scoring a folder"), opts, verbose=self.progress)
        files = [inputs] if isinstance(inputs, str | Path) else list(inputs)
        return score_files(model, files, self.out_dir, opts, verbose=self.progress)

    # ------------------------------------------------------------ calibrate
    def calibrate(self, model: str | Path, options: CalibrateOptions,
                  on_skip: Callable[[Path, str], None] | None = None) -> dict[str, Any]:
        """Recalibrate ``model`` (a model directory, updated in place; or an MLflow model URI, recalibrated in
        a copy and logged as a new version of it) on ``options.good``; ``summary_`` and the return value are
        ``calibrate``'s ``--json`` object. A tracked or registered model is logged as a new MLflow model
        (version), so the tracked copy never keeps a stale threshold. ``on_skip(file, reason)`` hears of each
        unreadable file (default: a warning).

        Raises:
            ValueError: bad settings, too few readable good images, or an MLflow store that cannot take the
                new version of a model given by URI (checked before anything is fetched).
            ModelDirError: the model directory cannot be loaded.
            RecalibrationNotLogged: a model given by URI whose new version the store refused.
        """
        from anomaly_ae.pipelines.calibrate import calibrate_model

        self.summary_ = calibrate_model(model, options, self.tracking_uri, self.tracking is True, self.progress,
                                        self.on_warning, on_skip)
        return self.summary_

    # ------------------------------------------------------------- evaluate
    def evaluate(self, model: Detector | str | Path, dataset_dir: str | Path,
                 options: EvaluateOptions | None = None) -> EvaluationResult:
        """Image and pixel metrics of ``model`` on a labelled MVTec-AD-layout folder, ``metrics.json`` and
        ``report.html`` in ``out_dir``, logged to the model's MLflow run when it is in the store (else a new
        run); ``summary_["mlflow"]`` says where (``None`` untracked)."""
        from anomaly_ae.pipelines.evaluate import evaluate
        from anomaly_ae.tracking import local_fallback, log_evaluation

        opts, out = EvaluateOptions.of(options), self._out("evaluate")
        result = evaluate(model, dataset_dir, out, opts, verbose=self.progress)
        uri, tracked = self.tracking_uri, None
        if uri is not None:
            tracked = log_evaluation(result.metrics, [out / METRICS_JSON, out / REPORT_HTML], result.experiment,
                                     result.mlflow_run_id, uri, local_fallback(uri) if self.tracking is True else None,
                                     on_fallback=self.on_warning)
        self.summary_ = {"mlflow": tracked}
        return result

    # --------------------------------------------------------------- export
    def export(self, model: Detector | str | Path, fmt: str = "onnx", input_dtype: str = "uint8",
               overwrite: bool = False) -> dict[str, Any]:
        """The whole detector as one ONNX / SavedModel graph with ``deploy.json`` in ``out_dir``
        (:func:`~anomaly_ae.deploy.graph.export_detector`); returns the ``deploy.json`` content."""
        from anomaly_ae.deploy.graph import export_detector

        self.summary_ = export_detector(model, self._out("export"), fmt, input_dtype, overwrite=overwrite)
        return self.summary_
