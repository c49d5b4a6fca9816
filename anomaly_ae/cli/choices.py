"""The fixed choices of the options, as Enums so that ``--help`` lists them and typer refuses others.

They repeat names the config defines (``anomaly_ae.config``) because importing the config here would
slow ``--help``; ``tests/test_cli_help.py`` checks that both lists agree.
"""

from __future__ import annotations

from enum import Enum, StrEnum


class ModelName(StrEnum):
    """``--model``: the autoencoder architecture (``model.name``); ``feature``: of pretrained backbone features."""

    conv = "conv"
    dense = "dense"
    linear = "linear"
    sparse = "sparse"
    contractive = "contractive"
    denoising = "denoising"
    vae = "vae"
    feature = "feature"


class ThresholdMethod(StrEnum):
    """``calibrate --method``: how the image threshold is fitted (``threshold.method``)."""

    quantile = "quantile"
    mad = "mad"
    max = "max"
    f1 = "f1"


class PixelMethod(StrEnum):
    """``calibrate --pixel-method`` (``threshold.pixel_method``)."""

    quantile = "quantile"
    f1 = "f1"


class ExportFormat(StrEnum):
    """``export --format``."""

    onnx = "onnx"
    savedmodel = "savedmodel"


def value(choice: Enum | None) -> str | None:
    """The string of a choice (``None`` stays ``None``)."""
    return None if choice is None else str(choice.value)


class InputDtype(StrEnum):
    """``export --input-dtype``: uint8 pixels 0-255 or float32 0-1."""

    uint8 = "uint8"
    float32 = "float32"


class Heatmaps(StrEnum):
    """``score --heatmaps``: which inputs get a heatmap (``anomaly_ae.ScoreOptions.heatmaps``)."""

    all = "all"
    anomalous = "anomalous"
    none = "none"


class ScoresFormat(StrEnum):
    """``score --format``: scores.csv only, or scores.parquet as well."""

    csv = "csv"
    parquet = "parquet"


class EngineChoice(StrEnum):
    """``score --engine``: this process, or Ray Data actors on a Ray cluster."""

    local = "local"
    ray = "ray"
