"""anomaly-ae: find and localise defects by how badly an autoencoder reconstructs an image.

The public surface, loaded on first use (Keras and OpenCV load only then, so importing the package
and the CLI's ``--help`` stay fast)::

    from anomaly_ae import Detector, DetectorConfig, Engine, score_folder, evaluate

    det = Engine("runs/a").fit("good_images/")  # as `anomaly-ae train`: the model directory, tracked in MLflow
    det = Detector().fit("good_images/")        # the estimator alone (the default preset); nothing written
    det.save("runs/b")
    summary = score_folder("runs/a", "inspection/", "scores/")  # scores.csv + heatmaps + masks
    result = evaluate("runs/a", "mvtec_like_dataset/", "eval/")  # metrics.json + report.html

The package tree follows the pipeline: ``data/`` -> ``models/`` -> ``training/`` -> ``scoring/`` ->
``postprocessing`` -> ``outputs/`` / ``evaluation/`` / ``reports/`` / ``deploy/``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from anomaly_ae.version import __version__

if TYPE_CHECKING:
    from anomaly_ae.artifact import ModelDirError
    from anomaly_ae.config import DetectorConfig
    from anomaly_ae.data.uris import UriError
    from anomaly_ae.detector import Detector, NotFittedError
    from anomaly_ae.evaluation.result import EvaluationResult
    from anomaly_ae.io.folders import OutputConflict
    from anomaly_ae.pipelines.engine import Engine
    from anomaly_ae.pipelines.evaluate import evaluate
    from anomaly_ae.pipelines.options import CalibrateOptions, EvaluateOptions, ScoreOptions, TrainOptions
    from anomaly_ae.pipelines.score import NoImagesError, ScoreSummary, Verdict, score_files, score_folder
    from anomaly_ae.postprocessing import PostProcessor

#: public name -> the module that defines it (imported on first access)
_EXPORTS = {
    "Detector": "anomaly_ae.detector",
    "NotFittedError": "anomaly_ae.detector",
    "DetectorConfig": "anomaly_ae.config",
    "PostProcessor": "anomaly_ae.postprocessing",
    "score_folder": "anomaly_ae.pipelines.score",
    "score_files": "anomaly_ae.pipelines.score",
    "Verdict": "anomaly_ae.pipelines.score",
    "ScoreSummary": "anomaly_ae.pipelines.score",
    "NoImagesError": "anomaly_ae.pipelines.score",
    "evaluate": "anomaly_ae.pipelines.evaluate",
    "EvaluationResult": "anomaly_ae.evaluation.result",
    "ModelDirError": "anomaly_ae.artifact",
    "OutputConflict": "anomaly_ae.io.folders",
    "UriError": "anomaly_ae.data.uris",
    "Engine": "anomaly_ae.pipelines.engine",
    "ScoreOptions": "anomaly_ae.pipelines.options",
    "TrainOptions": "anomaly_ae.pipelines.options",
    "CalibrateOptions": "anomaly_ae.pipelines.options",
    "EvaluateOptions": "anomaly_ae.pipelines.options",
}

__all__ = [
    "CalibrateOptions", "Detector", "DetectorConfig", "Engine", "EvaluateOptions", "EvaluationResult", "ModelDirError",
    "NoImagesError", "NotFittedError", "OutputConflict", "PostProcessor", "ScoreOptions", "ScoreSummary",
    "TrainOptions", "UriError", "Verdict", "__version__", "evaluate", "score_files", "score_folder",
]


#: public names that need no Keras (the others import TensorFlow quietly first, see anomaly_ae.backend)
_LIGHT = {"DetectorConfig", "OutputConflict", "UriError", "ScoreOptions", "TrainOptions", "CalibrateOptions",
          "EvaluateOptions"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        if name not in _LIGHT:
            importlib.import_module("anomaly_ae.backend").import_tensorflow_quietly()
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'anomaly_ae' has no attribute {name!r}")
