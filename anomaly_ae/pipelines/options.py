"""One frozen, validated record of options per command, built once (by the CLI or a Python caller) and
passed whole: to the pipeline, to the Ray engine, to :class:`~anomaly_ae.pipelines.engine.Engine`.

::

    opts = ScoreOptions(heatmaps="anomalous", masks=False)     # a bad value is a ValueError, here and now
    score_folder("runs/a", "inspection/", "scores/", opts)     # or score_folder(..., heatmaps="anomalous")
    opts.with_(resume=False)                                   # records are frozen: a changed copy

They hold what the user chooses about a run, not the run's plumbing (progress, tracker, lock): those
belong to the :class:`~anomaly_ae.pipelines.engine.Engine`. A model's own settings stay in
:class:`~anomaly_ae.config.DetectorConfig`. Field names are the library's words; the CLI maps its flags
to them (``--plain-heatmaps`` is ``legend=False``, ``--format`` is ``scores_format``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = ["CalibrateOptions", "EvaluateOptions", "ScoreOptions", "TrainOptions"]


class _Options(BaseModel):
    """Frozen, unknown fields refused, one-line errors (a ``ValueError``, as pydantic's own is)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, **fields: Any) -> None:
        try:
            super().__init__(**fields)
        except ValidationError as err:
            raise ValueError(_one_line(err, type(self).__name__)) from None

    @classmethod
    def of(cls, options: Self | None = None, fields: Mapping[str, Any] | None = None) -> Self:
        """``options`` with ``fields`` changed (both optional): how a function taking ``options=None,
        **fields`` builds its one record.

        Raises:
            ValueError: an unknown field or a value it cannot take, in one line naming the field.
        """
        base = options if options is not None else cls()
        if not fields:
            return base
        return base.with_(**fields)

    def with_(self, **fields: Any) -> Self:
        """A validated copy with ``fields`` changed (``model_copy`` would skip the validation)."""
        return type(self)(**{**self.model_dump(), **fields})


def _one_line(err: ValidationError, record: str) -> str:
    """``heatmaps: Input should be 'all', 'anomalous' or 'none' (got 'every')``: the first problem, one line."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or record
    return f"{where}: {first['msg']} (got {first.get('input')!r})"


class ScoreOptions(_Options):
    """How to score a folder or files (:func:`~anomaly_ae.pipelines.score.score_folder`, ``anomaly-ae score``).

    Attributes:
        batch_size: images per model call (``None``: the model's ``scoring.batch_size``).
        heatmaps: which inputs get a ``heatmaps/<rel>.jpg`` overlay: ``"all"``, ``"anomalous"`` (those the
            post-processor finds anomalous) or ``"none"``; ``True``/``False`` read as all/none.
        masks: write ``masks/<rel>.png`` (1-bit PNG, 0/255 when read: the pixels above the pixel threshold).
        raw_maps: write ``maps/<rel>.npy``, the float32 anomaly maps.
        legend: a legend strip under each heatmap (colour bar, pixel threshold, score, verdict).
        resume: keep the rows of an earlier run into the output folder and score the rest.
        overwrite: start over, removing only the scores and maps an earlier run wrote.
        max_megapixels: refuse larger images from their header (``None``: 100).
        engine: ``"local"`` (this process) or ``"ray"`` (Ray Data actors; a folder only).
        address: the Ray cluster (``None``: a local Ray, started and stopped by the run).
        actors, gpus_per_actor: how many Ray scoring actors, and GPUs each.
        scores_format: ``"csv"``, or ``"parquet"`` to also write ``scores.parquet`` (a folder only).
    """

    batch_size: int | None = Field(default=None, ge=1)
    heatmaps: Literal["all", "anomalous", "none"] = "all"
    masks: bool = True
    raw_maps: bool = False
    legend: bool = True
    resume: bool = True
    overwrite: bool = False
    max_megapixels: float | None = Field(default=None, gt=0)
    engine: Literal["local", "ray"] = "local"
    address: str | None = None
    actors: int = Field(default=1, ge=1)
    gpus_per_actor: float = Field(default=0.0, ge=0)
    scores_format: Literal["csv", "parquet"] = "csv"

    @field_validator("heatmaps", mode="before")
    @classmethod
    def _bool_heatmaps(cls, v: Any) -> Any:
        return ("all" if v else "none") if isinstance(v, bool) else v

    @property
    def kinds(self) -> list[str]:
        """The derived outputs asked for, in ``heatmaps``, ``masks``, ``maps`` order."""
        on = {"heatmaps": self.heatmaps != "none", "masks": self.masks, "maps": self.raw_maps}
        return [k for k, wanted in on.items() if wanted]

    @property
    def max_pixels(self) -> int | None:
        """``max_megapixels`` in pixels (``None``: the reader's default)."""
        return None if self.max_megapixels is None else int(self.max_megapixels * 1e6)


class TrainOptions(_Options):
    """How to run a training (``anomaly-ae train``, :meth:`Engine.fit <anomaly_ae.pipelines.engine.Engine.fit>`);
    the model itself is the :class:`~anomaly_ae.config.DetectorConfig`.

    Attributes:
        resume: continue the interrupted training in the model directory (its recorded config and images).
        overwrite: replace a model (or an interrupted training) in the model directory; other files stay.
        registered_name: register the model in the MLflow Model Registry under this name (a new version each time).
        alias: point this registry alias at the new version (needs ``registered_name``).
        workers: more than 1 trains on that many Ray workers (JAX backend), at ``address``.
        address: the Ray cluster (``None``: a local Ray).
    """

    resume: bool = False
    overwrite: bool = False
    registered_name: str | None = None
    alias: str | None = None
    workers: int = Field(default=1, ge=1)
    address: str | None = None


class CalibrateOptions(_Options):
    """How to recalibrate a model (``anomaly-ae calibrate``); ``None`` keeps the model's own setting.

    Attributes:
        good: held-out good images (never the training images).
        anomalous, masks: labelled anomalous images and their masks (``<stem>_mask.png``), for the ``f1`` rules.
        method, quantile, mad_k, pixel_method, pixel_quantile: the threshold rules to change.
        select_scoring: first choose the scoring by the self-check on ``good`` (no labels).
        registered_name, alias: the registered model name (default: the model's own, if any) and an alias.
    """

    good: Path
    anomalous: Path | None = None
    masks: Path | None = None
    method: Literal["quantile", "mad", "max", "f1"] | None = None
    quantile: float | None = Field(default=None, ge=0, le=1)
    mad_k: float | None = None
    pixel_method: Literal["quantile", "f1"] | None = None
    pixel_quantile: float | None = Field(default=None, ge=0, le=1)
    select_scoring: bool = False
    registered_name: str | None = None
    alias: str | None = None

    @property
    def folders(self) -> tuple[Path, Path | None, Path | None]:
        """``(good, anomalous, masks)``."""
        return self.good, self.anomalous, self.masks

    @property
    def threshold_updates(self) -> dict[str, Any]:
        """The threshold settings to change (``None``: keep the model's)."""
        return {"method": self.method, "quantile": self.quantile, "mad_k": self.mad_k,
                "pixel_method": self.pixel_method, "pixel_quantile": self.pixel_quantile}


class EvaluateOptions(_Options):
    """How to evaluate a model on a labelled folder (``anomaly-ae evaluate``).

    Attributes:
        max_fpr: the false-positive rate up to which AUPRO integrates.
        overwrite: replace an earlier evaluation in the output folder (other files stay).
        n_examples: worst false negatives and false positives shown in the report, each.
    """

    max_fpr: float = Field(default=0.3, gt=0, le=1)
    overwrite: bool = False
    n_examples: int = Field(default=6, ge=0)
