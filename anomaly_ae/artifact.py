"""The self-contained model directory.

::

    RUN_DIR/
      model.keras      the whole autoencoder (Keras format: JSON config + weights, no pickle)
      detector.json    schema version, versions, resolved config, preprocessing, threshold,
                       post-processor (thresholds, normalization, validation-score statistics and
                       scores, heatmap range), training summary
      config.yaml      the resolved config, for reading and re-use with --config

It is written into a temporary sibling folder and moved into place, so a crash never leaves a
half-written model behind. Loading uses ``keras.saving.load_model(..., safe_mode=True)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import keras
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, PositiveInt, ValidationError

from anomaly_ae.config import DetectorConfig
from anomaly_ae.data.images import Preprocessing
from anomaly_ae.io.files import file_sha256, versions, write_bytes_atomic, write_json_atomic
from anomaly_ae.io.folders import staging
from anomaly_ae.io.names import CHECKPOINT_DIR, CONFIG_FILE, KERAS_WEIGHTS, META_FILE, MODEL_FILE
from anomaly_ae.postprocessing import PostProcessor
from anomaly_ae.scoring.position import PositionReference

SCHEMA_VERSION = 1


def _pin_old_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A saved config with the settings that were in force before a key existed (a saved config holds every
    key, so a missing one means an older anomaly-ae): its maps, and so its calibrated thresholds, stay as
    they were."""
    scoring = config.get("scoring") if isinstance(config, dict) else None
    if isinstance(scoring, dict) and "border_margin" not in scoring:
        return {**config, "scoring": {**scoring, "border_margin": 0}}
    return config


class ModelDirError(ValueError):
    """A folder is not a loadable model directory; the message says why."""


@dataclass
class ModelState:
    """A fitted detector as plain state: what a model directory holds (no ``Detector`` needed)."""

    config: DetectorConfig
    model: keras.Model
    preprocessing: Preprocessing
    postprocessor: PostProcessor
    history: dict[str, Any] = field(default_factory=dict)
    train_info: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)  # the detector.json it was loaded from, if any
    source: Path | None = None  # the model directory it was loaded from or saved to
    position: PositionReference | None = None  # scoring.position_norm's reference, if fitted


def detector_metadata(state: ModelState) -> dict[str, Any]:
    """Everything but the weights, as JSON-ready data."""
    return {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        "config": state.config.to_dict(),
        "preprocessing": state.preprocessing.to_dict(),
        **state.postprocessor.to_dict(state.config.threshold),
        "training": state.train_info,
        "history": state.history,
        **({"position_reference": state.position.to_dict()} if state.position is not None else {}),
    }


def save_model_dir(path: Path, state: ModelState) -> Path:
    """Write ``state`` to the model directory ``path`` (created, or its model files replaced).

    The files are written into a temporary sibling folder and moved into place, metadata last. Only
    anomaly-ae's own entries are replaced: a file of the same name that anomaly-ae did not write
    (a user's ``config.yaml``) stops the save with :class:`~anomaly_ae.io.folders.OutputConflict`.
    """
    names = (MODEL_FILE, CONFIG_FILE, META_FILE)  # moved in this order: the metadata, naming the threshold, last
    with staging(path, "model", names, overwrite=True, order=names, replace_all=False) as tmp:
        state.model.save(tmp / MODEL_FILE)
        write_bytes_atomic(tmp / CONFIG_FILE, state.config.yaml_text().encode("utf-8"))
        write_json_atomic(tmp / META_FILE, {**detector_metadata(state), "files": file_checksums(tmp)})
    return path


#: the files whose SHA-256 ``detector.json`` records (``files``) and :func:`load_model_dir` checks: the weights.
#: ``config.yaml`` is a copy for people (``detector.json`` holds the config that is loaded).
CHECKED_FILES = (MODEL_FILE,)


def file_checksums(path: Path) -> dict[str, str]:
    """``{name: SHA-256}`` of the :data:`CHECKED_FILES` of the model directory ``path``."""
    return {name: file_sha256(path / name) for name in CHECKED_FILES}


def damaged_files(path: Path, meta: dict[str, Any]) -> str | None:
    """Why the files of ``path`` do not match the checksums its ``detector.json`` (``meta``) recorded, else
    ``None`` (also ``None`` for a model saved before checksums were recorded)."""
    recorded = meta.get("files")
    if not isinstance(recorded, dict):
        return None
    for name, digest in recorded.items():
        if name not in CHECKED_FILES:
            continue
        try:
            actual = file_sha256(path / name)
        except OSError as err:
            return f"{path / name}: unreadable ({err.strerror or err})"
        if actual != digest:
            return (f"{path / name}: its SHA-256 is not the one {META_FILE} recorded when the model was saved "
                    "(the file is damaged or was replaced): restore the model directory, or retrain")
    return None


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _ThresholdState(_Open):
    value: FiniteFloat
    pixel_value: FiniteFloat
    expected_fpr: float = Field(ge=0.0, le=1.0)


class _NormalizationState(_Open):
    min: FiniteFloat
    max: FiniteFloat


class _PreprocessingState(_Open):
    image_size: tuple[PositiveInt, PositiveInt]
    channels: Literal[1, 3]
    source_size: tuple[PositiveInt, PositiveInt] | None = None


class _ScoreStatsState(_Open):
    count: PositiveInt
    mean: FiniteFloat
    std: FiniteFloat
    min: FiniteFloat
    max: FiniteFloat
    quantiles: dict[str, FiniteFloat]


class DetectorMetadata(_Open):
    """The fitted state in ``detector.json`` that decisions depend on: every number finite, every range a pair."""

    schema_version: int
    config: dict[str, Any]
    preprocessing: _PreprocessingState
    threshold: _ThresholdState
    normalization: _NormalizationState
    score_stats: _ScoreStatsState
    val_scores: list[FiniteFloat] = Field(min_length=1)
    heatmap_range: tuple[FiniteFloat, FiniteFloat]
    training: dict[str, Any] = {}
    history: dict[str, Any] = {}


def validate_metadata(meta: dict[str, Any], where: Path) -> None:
    """Refuse a ``detector.json`` whose fitted state is missing, mistyped or not finite, naming the field.

    Raises:
        ModelDirError: e.g. ``detector.json: field threshold.value: Input should be a finite number (got nan)``.
    """
    for schema, data, prefix in ((DetectorMetadata, meta, ""), (DetectorConfig, meta.get("config"), "config.")):
        try:
            schema.model_validate(data)
        except ValidationError as err:
            e = err.errors()[0]
            field = (prefix + ".".join(str(x) for x in e["loc"])).rstrip(".") or "(top level)"
            got = "" if e["type"] == "missing" else f" (got {repr(e.get('input'))[:60]})"
            raise ModelDirError(f"{where}: field {field}: {e['msg']}{got}; the file is damaged or was edited by "
                                "hand: restore it, or recalibrate / retrain") from None


#: what a ``.keras`` archive written by Keras 3 holds; anything else (a pickle, code) is refused
KERAS_ARCHIVE_MEMBERS = frozenset({"config.json", "metadata.json", KERAS_WEIGHTS, "model.weights.npz"})
PICKLE_SUFFIXES = frozenset({".pkl", ".pickle", ".joblib", ".dill", ".pt", ".pth"})


def check_contents(path: Path) -> None:
    """Refuse a model directory that carries pickles or an unexpected ``model.keras`` archive.

    ``safe_mode=True`` already refuses Lambda layers and arbitrary code in the Keras config; this
    check also keeps out files that some other loader might unpickle.
    """
    import zipfile

    for p in path.rglob("*"):
        if p.suffix.lower() in PICKLE_SUFFIXES:
            raise ModelDirError(f"{path}: refusing to load a model directory that contains {p.name} "
                                "(pickle-like files can run code when loaded)")
    try:
        with zipfile.ZipFile(path / MODEL_FILE) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise ModelDirError(f"{path / MODEL_FILE}: not a Keras archive ({err})") from None
    unexpected = [n for n in names if n not in KERAS_ARCHIVE_MEMBERS and not n.startswith("assets/")]
    if unexpected:
        raise ModelDirError(f"{path / MODEL_FILE}: unexpected member {unexpected[0]!r} in the archive; refused")


def _check_schema(meta: dict[str, Any], meta_path: Path) -> None:
    """Refuse a ``detector.json`` of another schema version, saying which anomaly-ae wrote it and what to do."""
    version = meta.get("schema_version")
    if version == SCHEMA_VERSION:
        return
    made_by = (meta.get("versions") if isinstance(meta.get("versions"), dict) else {}).get("anomaly_ae", "unknown")
    if isinstance(version, int) and version > SCHEMA_VERSION:
        why = f"it was written by a newer anomaly-ae ({made_by}): upgrade anomaly-ae to load it"
    elif isinstance(version, int):
        why = f"it was written by an older anomaly-ae ({made_by}) whose format is no longer read: retrain"
    else:
        why = "not a version number"
    raise ModelDirError(
        f"{meta_path}: schema_version {version!r} is not supported ({why}; "
        f"this anomaly-ae reads version {SCHEMA_VERSION})"
    )


def _load_keras(model_file: Path) -> keras.Model:
    """The ``.keras`` model with ``safe_mode=True``: code in it (a ``Lambda`` layer) is refused, never run."""
    try:
        return keras.saving.load_model(model_file, compile=False, safe_mode=True)
    except (ValueError, TypeError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "Lambda" in str(err) or "safe_mode" in str(err):
            first = "it contains a Lambda layer or other code, which safe mode refuses to run"
        raise ModelDirError(f"{model_file}: cannot be loaded safely ({first})") from None


def load_model_dir(path: Path) -> ModelState:
    """Read a model directory (checked, validated, ``safe_mode=True``) into plain state.

    Raises:
        ModelDirError: the folder is not a loadable model directory; the message says why.
    """
    import anomaly_ae.models  # noqa: F401  (registers the serialisable classes)

    meta_path = path / META_FILE
    if not path.is_dir():
        raise ModelDirError(f"not a model directory: {path} does not exist or is not a folder")
    if not meta_path.is_file() or not (path / MODEL_FILE).is_file():
        if (path / CHECKPOINT_DIR).is_dir():
            raise ModelDirError(f"{path} holds an unfinished training (checkpoint/ only): "
                                f"finish it with 'anomaly-ae train --resume {path}'")
        raise ModelDirError(f"not a model directory: {path} lacks {META_FILE} or {MODEL_FILE}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ModelDirError(f"{meta_path}: not UTF-8 text (damaged, or not written by anomaly-ae)") from None
    except (OSError, ValueError) as err:
        raise ModelDirError(f"{meta_path}: unreadable ({' '.join(str(err).split())})") from None
    if not isinstance(meta, dict):
        raise ModelDirError(f"{meta_path}: not a JSON object (a {type(meta).__name__}); not a model's metadata")
    _check_schema(meta, meta_path)
    damage = damaged_files(path, meta)
    if damage is not None:
        raise ModelDirError(damage)
    check_contents(path)
    validate_metadata(meta, meta_path)  # DetectorConfig migrates an older config (config.migrate_config)
    try:
        config = DetectorConfig.model_validate(_pin_old_defaults(meta["config"]))
        preprocessing = Preprocessing.from_dict(meta["preprocessing"])
        postprocessor = PostProcessor.from_dict(meta)
        position = PositionReference.from_dict(meta["position_reference"]) if "position_reference" in meta else None
    except (KeyError, TypeError, ValueError) as err:
        raise ModelDirError(f"{meta_path}: missing or invalid field ({type(err).__name__}: {err})") from None
    model = _load_keras(path / MODEL_FILE)
    expected = (*preprocessing.image_size, preprocessing.channels)
    got = tuple(getattr(model, "image_shape", expected))
    if any(g is not None and g != e for g, e in zip(got, expected, strict=True)):
        raise ModelDirError(f"{path}: model input {got} does not match preprocessing {expected}")
    return ModelState(config, model, preprocessing, postprocessor, meta.get("history", {}),
                      meta.get("training", {}), meta, path, position)


def save_calibration(path: Path, state: ModelState) -> Path:
    """Rewrite only ``detector.json`` and ``config.yaml`` of an existing model directory (atomically).

    Used by ``anomaly-ae calibrate``: the weights are untouched; the original ``created`` time is kept
    and ``calibrated`` records when the thresholds changed. ``state.metadata`` becomes the new metadata.
    """
    if not (path / MODEL_FILE).is_file():
        raise ModelDirError(f"not a model directory: {path} lacks {MODEL_FILE}")
    meta = detector_metadata(state)
    meta["created"] = state.metadata.get("created", meta["created"])
    # the weights are untouched: their recorded checksums stay (verified when the model was loaded)
    meta["files"] = state.metadata.get("files") or file_checksums(path)
    meta["calibrated"] = datetime.now(UTC).isoformat(timespec="seconds")
    write_bytes_atomic(path / CONFIG_FILE, state.config.yaml_text().encode("utf-8"))
    write_json_atomic(path / META_FILE, meta)
    state.metadata = meta
    return path
