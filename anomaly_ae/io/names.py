"""The names of the files and folders anomaly-ae writes, each spelled once.

Every module that reads or writes one of them imports it from here, so a rename is one line and
``tests/test_layout.py`` can check that no other module spells them.
"""

from __future__ import annotations

# ----------------------------------------------------------------- a model directory
MODEL_FILE = "model.keras"
META_FILE = "detector.json"
CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoint"  # while training (resumable); removed when the model is complete
#: the top-level entries of a model directory that anomaly-ae writes
MODEL_DIR_ENTRIES = (MODEL_FILE, META_FILE, CONFIG_FILE, CHECKPOINT_DIR)

# ----------------------------------------------------------------- a training's checkpoint (CHECKPOINT_DIR)
CHECKPOINT_STATE = "state.json"  # in each epoch folder: the epoch, loss history, early stopping's counters
CHECKPOINT_RUN = "run.json"  # the run's state before the first epoch ends (image folder, MLflow run id)
#: Keras's own name for a model's weights (inside a ``.keras`` archive, and what ``save_weights`` is given here)
KERAS_WEIGHTS = "model.weights.h5"
CHECKPOINT_WEIGHTS = KERAS_WEIGHTS  # weights and optimizer state
CHECKPOINT_BEST = "best.npz"  # early stopping's best weights so far
CHECKPOINT_EPOCH = "epoch-{epoch:04d}"  # one folder per kept epoch; EPOCH_GLOB finds them
CHECKPOINT_EPOCH_GLOB = "epoch-*"

# ----------------------------------------------------------------- a score run (``anomaly-ae score``)
SCORES_CSV = "scores.csv"
SCORES_PARTIAL = SCORES_CSV + ".partial"  # rows written so far; renamed to scores.csv when complete
SCORES_PARQUET = "scores.parquet"  # the rows of scores.csv, typed (score_folder(scores_format="parquet"))
SCORE_RUN = "score_run.json"  # the run's state: model fingerprint, input folder, outputs asked for
#: per-image output folders -> file suffix
SCORE_OUTPUTS: dict[str, str] = {"heatmaps": ".jpg", "masks": ".png", "maps": ".npy"}
#: every top-level entry a score run owns
SCORE_RUN_ENTRIES = (SCORES_CSV, SCORES_PARTIAL, SCORES_PARQUET, SCORE_RUN, *SCORE_OUTPUTS)

# ----------------------------------------------------------------- an evaluation (``anomaly-ae evaluate``)
METRICS_JSON = "metrics.json"
REPORT_HTML = "report.html"
EVALUATION_FILES = (METRICS_JSON, REPORT_HTML)

# ----------------------------------------------------------------- an exported detector (``anomaly-ae export``)
DEPLOY_JSON = "deploy.json"
ONNX_FILE = "model.onnx"
SAVED_MODEL_DIR = "saved_model"
EXPORT_ENTRIES = (DEPLOY_JSON, ONNX_FILE, SAVED_MODEL_DIR)

# ----------------------------------------------------------------- an exported encoder (``anomaly-ae export-encoder``)
ENCODER_JSON = "encoder.json"
ENCODER_KERAS = "encoder.keras"
ENCODER_WEIGHTS = "encoder.weights.h5"
ENCODER_ONNX = "encoder.onnx"
ENCODER_SAVED_MODEL = "encoder_savedmodel"
ENCODER_ENTRIES = (ENCODER_JSON, ENCODER_KERAS, ENCODER_WEIGHTS, ENCODER_ONNX, ENCODER_SAVED_MODEL)

# ----------------------------------------------------------------- a segmenter (``anomaly-ae segment train``)
SEGMENTER_JSON = "segmenter.json"
SEGMENTER_KERAS = "segmenter.keras"
SEGMENTER_FILES = (SEGMENTER_KERAS, SEGMENTER_JSON)

# ----------------------------------------------------------------- the cache of models downloaded from MLflow
SOURCE_FILE = "source.json"  # beside each downloaded model: which registry entry it came from

# ----------------------------------------------------------------- the tool's own files in any output folder
MANIFEST = ".anomaly-ae-manifest.json"  # which entries anomaly-ae wrote (never removes anything else)
LOCK = ".anomaly-ae.lock"
