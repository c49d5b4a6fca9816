"""The detector as an MLflow model: a ``python_function`` flavour whose artifact is the model directory.

::

    with mlflow.start_run():
        info = log_detector("runs/plate", registered_model_name="plate")   # a new version of "plate"
    model = mlflow.pyfunc.load_model("models:/plate/1")
    model.predict(pd.DataFrame({"image": [png_bytes, "part_0412.png"]}))  # score, is_anomaly, threshold, error
    run_dir = resolve_model("models:/plate@champion")   # a local model directory, downloaded once
    log_recalibration(run_dir, figures, ...)            # after calibrate: a new version, never a stale copy

**No pickled Python object.** A ``PythonModel`` given to ``log_model`` is cloudpickled into the
artifact store and unpickled by every loader. Here the MLmodel file names this module as the loader
instead (pyfunc's ``loader_module``): MLflow imports it from the installed anomaly-ae and calls
:func:`_load_pyfunc` on the copied model directory, which :meth:`Detector.load` reads as any local
model directory (Keras ``safe_mode``, the same checks, so a tampered artifact is refused the same way).

**Input**: a DataFrame whose ``image`` column (or only column) holds, per row, the bytes of an image
file (base64 strings in a REST request: MLflow decodes a ``binary`` column), a base64 string, or a
path to an image file. **Output**: a DataFrame with ``score`` (higher = more anomalous),
``is_anomaly``, ``threshold`` and ``error`` (``None``, or why that row could not be scored: its score
is then NaN); with the parameter ``anomaly_map`` = ``"list"`` or ``"png"`` also ``anomaly_map``: the
map at the image's size as nested lists, or as 8-bit gray PNG bytes on the heatmaps' colour scale
(0 = the good-image median, 255 = the pixel threshold and above).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from anomaly_ae.data.images import ImageReadError, decode_image, read_image
from anomaly_ae.detector import Detector
from anomaly_ae.io.names import CONFIG_FILE, META_FILE, MODEL_FILE, SOURCE_FILE
from anomaly_ae.io.remote import connect_timeout
from anomaly_ae.tracking import MlflowTracker, source_tags

if TYPE_CHECKING:
    import pandas as pd

INPUT_COLUMN = "image"
MAP_FORMATS = ("none", "list", "png")
#: the model directory's folder inside the MLflow model (``<model>/data/detector``)
DETECTOR_DIR = "detector"
#: distributions the flavour needs, pinned to what is installed when it is logged
REQUIREMENTS = ("anomaly-ae", "keras", "tensorflow", "jax", "numpy", "opencv-python-headless", "pandas", "pydantic",
                "pyyaml", "scikit-learn", "mlflow")


def signature() -> Any:
    """Input ``image: binary``; output ``score``, ``is_anomaly``, ``threshold``, ``error``; param ``anomaly_map``."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    outputs = Schema([ColSpec("double", "score"), ColSpec("boolean", "is_anomaly"), ColSpec("double", "threshold"),
                      ColSpec("string", "error", required=False)])
    return ModelSignature(Schema([ColSpec("binary", INPUT_COLUMN)]), outputs,
                          ParamSchema([ParamSpec("anomaly_map", "string", "none")]))


def pip_requirements() -> list[str]:
    """``name==version`` of each of :data:`REQUIREMENTS` that is installed."""
    pins = []
    for name in REQUIREMENTS:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def stage_model_dir(run_dir: Path, dest: Path) -> Path:
    """Copy the files of a model directory (not its lock or manifest) to ``dest/detector``; returns that folder."""
    out = dest / DETECTOR_DIR
    out.mkdir(parents=True)
    for name in (MODEL_FILE, META_FILE, CONFIG_FILE):
        shutil.copy2(run_dir / name, out / name)
    return out


def example_input(det: Detector) -> pd.DataFrame:
    """One PNG of a mid-grey image at the model's size: the ``input_example`` logged with the model."""
    import cv2
    import pandas as pd

    h, w = det.preprocessing_.image_size
    ok, png = cv2.imencode(".png", np.full((h, w, det.preprocessing_.channels), 128, np.uint8))
    return pd.DataFrame({INPUT_COLUMN: [png.tobytes()]})


def log_detector(run_dir: str | Path, name: str = "model", registered_model_name: str | None = None,
                 detector: Detector | None = None) -> Any:
    """Log the model directory ``run_dir`` as an MLflow model in the active run; returns MLflow's ``ModelInfo``.

    With ``registered_model_name`` it becomes a new version of that registered model. ``detector``: the
    detector saved in ``run_dir``, when the caller has it (else it is loaded, for the input example).
    """
    import mlflow

    run_dir = Path(run_dir)
    det = detector if detector is not None else Detector.load(run_dir)
    with tempfile.TemporaryDirectory() as tmp:
        data = stage_model_dir(run_dir, Path(tmp))
        return mlflow.pyfunc.log_model(
            name=name, loader_module=__name__, data_path=str(data), signature=signature(),
            input_example=example_input(det), pip_requirements=pip_requirements(),
            registered_model_name=registered_model_name, metadata={"anomaly_ae_model": det.config_.model.name},
        )


class DetectorModel:
    """What ``mlflow.pyfunc.load_model`` wraps: scores a DataFrame of images (see the module docstring)."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One output row per input row, in order; a row that cannot be read gets NaN and its ``error``."""
        import pandas as pd

        how = str((params or {}).get("anomaly_map", "none"))
        if how not in MAP_FORMATS:
            raise ValueError(f"anomaly_map must be one of {', '.join(MAP_FORMATS)}, not {how!r}")
        values = _column(model_input)
        det = self.detector
        post = det.postprocessor_
        scores = np.full(len(values), np.nan)
        errors: list[str | None] = [None] * len(values)
        maps: list[Any] = [None] * len(values)
        batch = det.config_.scoring.batch_size
        for start in range(0, len(values), batch):
            decoded = {}
            for i in range(start, min(start + batch, len(values))):
                try:
                    decoded[i] = _decode(values[i], det.preprocessing_.channels)
                except ImageReadError as err:
                    errors[i] = str(err)
            if not decoded:
                continue
            s, m = det.score_images(list(decoded.values()))
            for k, i in enumerate(decoded):
                scores[i] = float(s[k])
                maps[i] = None if how == "none" else _map_out(m[k], how, post.heatmap_range)
        out = pd.DataFrame({
            "score": scores,
            "is_anomaly": post.is_anomalous(scores).tolist(),  # a NaN score (a failed image) is never anomalous
            "threshold": np.full(len(values), post.threshold),
            "error": errors,
        })
        if how != "none":
            out["anomaly_map"] = maps
        return out


def _column(model_input: Any) -> list[Any]:
    """The image column of a DataFrame (``image``, or its only column), a Series, or a list, as a list."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        if INPUT_COLUMN in model_input.columns:
            return model_input[INPUT_COLUMN].tolist()
        if len(model_input.columns) == 1:
            return model_input.iloc[:, 0].tolist()
        raise ValueError(f"expected a column '{INPUT_COLUMN}' (image bytes, base64 text or file paths), got "
                         f"{list(model_input.columns)}")
    if isinstance(model_input, pd.Series):
        return model_input.tolist()
    return list(model_input)


def _decode(value: Any, channels: int) -> np.ndarray:
    """Image bytes, a base64 string or an image file path -> uint8 ``(H, W, channels)``."""
    if isinstance(value, bytes | bytearray | memoryview):
        return decode_image(bytes(value), channels)
    if isinstance(value, str):
        if len(value) < 4096 and os.path.isfile(value):
            return read_image(value, channels)
        try:
            return decode_image(base64.b64decode(value, validate=False), channels)
        except (binascii.Error, ValueError):
            raise ImageReadError("neither image bytes, base64 text nor an existing file path") from None
    raise ImageReadError(f"cannot read a {type(value).__name__} as an image (bytes, base64 text or a file path)")


def _map_out(amap: np.ndarray, how: str, value_range: tuple[float, float]) -> Any:
    if how == "list":
        return amap.astype(np.float32).tolist()
    import cv2

    lo, hi = value_range
    gray = (np.clip((amap - lo) / max(hi - lo, 1e-12), 0.0, 1.0) * 255).round().astype(np.uint8)
    return cv2.imencode(".png", gray)[1].tobytes()


def _load_pyfunc(data_path: str) -> DetectorModel:
    """pyfunc's loader: the model directory MLflow copied (``data/detector``), loaded as any local one."""
    return DetectorModel(Detector.load(data_path))


@dataclass(frozen=True)
class RegistryTarget:
    """Where a recalibrated model goes: the ``experiment`` of its new run, the run that trained the model
    (``trained_in``, tag ``anomaly_ae.recalibrates``), the registered model (``register``) and ``alias``."""

    experiment: str
    trained_in: str | None = None
    register: str | None = None
    alias: str | None = None


def log_recalibration(
    run_dir: Path,
    figures: dict[str, Any],
    target: RegistryTarget,
    uri: str,
    fallback_uri: str | None = None,
    on_fallback: Any = None,
    detector: Detector | None = None,
) -> dict[str, Any] | None:
    """Log a recalibrated model directory as a new MLflow model in a new run ("calibrate"), registered as a new
    version of ``target.register`` (``target.alias`` then points at it), so the tracked model never keeps a
    stale threshold.

    Args:
        figures: the calibration's numbers (thresholds, expected false-alarm rate, counts), logged as metrics;
            its ``settings`` entry (the threshold rules) is logged as parameters.
        detector: the recalibrated detector saved in ``run_dir``, when the caller has it (not loaded again).

    Returns:
        ``{"run_id", "model_uri", "registered_model", "version"}``, or ``None`` when tracking turned itself off.
    """
    trained_in, register, alias = target.trained_in, target.register, target.alias
    with MlflowTracker(uri, target.experiment, run_name="calibrate", fallback_uri=fallback_uri,
                       on_fallback=on_fallback, off_on_failure=True) as tracker:
        tracker.set_tags({**source_tags("anomaly-ae calibrate"),
                          **({"anomaly_ae.recalibrates": trained_in} if trained_in else {})})
        tracker.log_params({f"threshold.{k}": v for k, v in figures.get("settings", {}).items()})
        tracker.log_metrics({k: v for k, v in figures.items()
                             if isinstance(v, int | float) and not isinstance(v, bool)})
        tracker.log_model(partial(log_detector, run_dir, registered_model_name=register, detector=detector))
        version = getattr(tracker.model_info, "registered_model_version", None)
        if register and alias and version is not None:
            tracker.set_alias(register, alias, version)
        if tracker.disabled:
            return None
        model_uri = f"models:/{register}/{version}" if register and version else f"runs:/{tracker.run_id}/model"
        return {"run_id": tracker.run_id, "model_uri": model_uri, "registered_model": register,
                "version": None if version is None else int(version), "alias": alias if version else None}


# ------------------------------------------------------------------ model URIs
MODEL_URI_SCHEMES = ("models:/", "runs:/")


def is_model_uri(ref: str | Path) -> bool:
    """True for ``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` and ``runs:/RUN_ID/PATH``."""
    return isinstance(ref, str) and ref.startswith(MODEL_URI_SCHEMES)


def cache_root() -> Path:
    """Where downloaded models are kept: ``$ANOMALY_AE_CACHE`` or ``~/.cache/anomaly-ae``, then ``models/``."""
    base = os.environ.get("ANOMALY_AE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / \
        "anomaly-ae"
    return Path(base) / "models"


def canonical_uri(uri: str, tracking_uri: str) -> str:
    """``models:/NAME@ALIAS`` and ``models:/NAME/latest`` as ``models:/NAME/VERSION`` (an alias may move later)."""
    if not uri.startswith("models:/"):
        return uri
    from mlflow.tracking import MlflowClient

    ref = uri[len("models:/") :].strip("/")
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return f"models:/{name}/{client.get_model_version_by_alias(name, alias).version}"
    name, _, version = ref.rpartition("/")
    if version == "latest":
        versions = client.search_model_versions(f"name='{name}'")
        if not versions:
            raise ValueError(f"registered model {name!r} has no version")
        return f"models:/{name}/{max(int(v.version) for v in versions)}"
    return uri


def check_store(uri: str) -> None:
    """Refuse, in one line, a store a lookup cannot use, before MLflow waits or writes anything.

    An ``http(s)`` server must answer ``/health`` within :func:`connect_timeout` seconds; a
    ``sqlite:///`` store must exist (MLflow would otherwise create an empty ``mlflow.db`` just to find
    nothing in it).

    Raises:
        ValueError: with the reason and what to do.
    """
    from anomaly_ae.tracking import REMOTE_DEFAULTS, TrackingUnavailable, probe

    if uri.startswith(("http://", "https://")):
        for key, value in REMOTE_DEFAULTS.items():
            os.environ.setdefault(key, value)
        try:
            probe(uri, connect_timeout())
        except TrackingUnavailable as err:
            raise ValueError(f"the MLflow server {err} (waited up to {connect_timeout():g} s): start it, set "
                             "MLFLOW_TRACKING_URI to one that answers, or set ANOMALY_AE_CONNECT_TIMEOUT") from None
    elif uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        if not db.is_file():
            raise ValueError(f"there is no MLflow store at {db} (MLFLOW_TRACKING_URI is "
                             f"{'unset' if not os.environ.get('MLFLOW_TRACKING_URI') else uri}): run the command "
                             "where the model was logged, or set MLFLOW_TRACKING_URI")


def registry_identity(exact: str, tracking_uri: str) -> dict[str, Any]:
    """What identifies the model behind ``exact`` (a ``models:/NAME/VERSION`` or ``runs:/`` URI) in this store:
    the run id, and for a model version also its creation time and source. A store recreated at the same
    URI gives the same version number to another model, and another identity."""
    if not exact.startswith("models:/"):
        return {"uri": exact}  # a run id is a random UUID: it names one run
    from mlflow.tracking import MlflowClient

    name, _, version = exact[len("models:/"):].strip("/").rpartition("/")
    v = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri).get_model_version(name, version)
    return {"uri": exact, "run_id": v.run_id, "creation_timestamp": v.creation_timestamp, "source": v.source}


def _cached(target: Path, identity: dict[str, Any]) -> str | None:
    """Why the cached copy at ``target`` cannot be used (stale or damaged), or ``None`` when it can."""
    import json

    from anomaly_ae.artifact import damaged_files

    try:
        recorded = json.loads((target.parent / SOURCE_FILE).read_text(encoding="utf-8"))
        meta = json.loads((target / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "its record is missing or unreadable"
    if recorded != identity:
        return "the registry now names another model under that URI"
    if not isinstance(meta, dict) or damaged_files(target, meta) is not None:
        return "its files are damaged"
    return None


def resolve_model(ref: str | Path, tracking_uri: str | None = None,
                  on_refresh: Callable[[str], None] | None = None) -> Path:
    """A model directory for ``ref``: a local folder as is, or an MLflow model URI downloaded once to the cache.

    The cache key is the store and the resolved version (``models:/plate@champion`` -> ``models:/plate/3``),
    so a moved alias downloads the version it now names and an unchanged one is not downloaded again.
    Beside each copy the cache records the registry's identity of the version (run id, creation time,
    source); a copy whose identity no longer matches (the store was recreated) or whose files fail their
    checksums is downloaded again (``on_refresh`` is told why, in words).

    Raises:
        ValueError: the store does not answer or does not exist (:func:`check_store`), the URI names
            nothing, or what it names is not an anomaly-ae model.
    """
    if not is_model_uri(ref):
        return Path(ref)
    import json

    import mlflow

    uri = tracking_uri or mlflow.get_tracking_uri()
    check_store(uri)
    try:
        exact = canonical_uri(str(ref), uri)
        identity = registry_identity(exact, uri)
    except Exception as err:  # noqa: BLE001 - MlflowException for an unknown name or alias
        raise ValueError(f"{ref}: {str(err).splitlines()[0]}") from None
    key = hashlib.sha256(f"{uri}\n{exact}".encode()).hexdigest()[:16]
    target = cache_root() / key / DETECTOR_DIR
    if target.parent.exists():
        why = _cached(target, identity)
        if why is None:
            return target
        if not ((target.parent / SOURCE_FILE).is_file() or (target / META_FILE).is_file()):
            raise ValueError(f"{ref}: the cache folder {target.parent} holds something anomaly-ae did not write; "
                             "it is left alone: move it, or set ANOMALY_AE_CACHE")  # only our copies are removed
        if on_refresh is not None:
            on_refresh(f"the cached copy of {ref} is not used ({why}): downloading it again")
        shutil.rmtree(target.parent, ignore_errors=True)
    target.parent.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent.parent) as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=exact, dst_path=tmp, tracking_uri=uri))
        except Exception as err:  # noqa: BLE001
            raise ValueError(f"{ref}: cannot download it ({str(err).splitlines()[0][:200]})") from None
        found = local / "data" / DETECTOR_DIR
        if not (found / META_FILE).is_file() and (local / META_FILE).is_file():
            found = local  # the plain model files that runs before the MLflow flavour logged under model/
        if not (found / META_FILE).is_file():
            raise ValueError(f"{ref} is not an anomaly-ae model (no data/{DETECTOR_DIR}/{META_FILE} in it)")
        staged = Path(tmp) / "ready"
        staged.mkdir()
        shutil.move(str(found), staged / DETECTOR_DIR)
        (staged / SOURCE_FILE).write_text(json.dumps(identity), encoding="utf-8")
        try:
            os.rename(staged, target.parent)  # atomic: a reader never sees half a model
        except OSError:
            if not (target / META_FILE).is_file():  # another process won the race: use its copy
                raise
    return target
