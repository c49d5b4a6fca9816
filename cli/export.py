"""``anomaly-ae export RUN_DIR --out DIR --format onnx|savedmodel``: the whole detector as one graph."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import console, fail_usage


def export(
    run_dir: Annotated[Path, typer.Argument(help="Model directory written by 'anomaly-ae train'.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the graph and deploy.json.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="onnx | savedmodel.")] = "onnx",
    input_dtype: Annotated[
        str, typer.Option(help="uint8 (0-255 pixels, default) or float32 (0-1) input of the graph.")
    ] = "uint8",
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier export in --out (other files stay).")] = False,
) -> None:
    """Export preprocessing scale -> autoencoder -> anomaly map -> score as one ONNX / SavedModel graph.

    The graph takes images at the model resolution; deploy.json holds the thresholds and the normalisation.
    """
    from anomaly_ae.deploy.graph import FORMATS, INPUT_DTYPES

    if fmt not in FORMATS:
        fail_usage(f"--format {fmt!r} is not supported; choose one of {', '.join(FORMATS)}")
    if input_dtype not in INPUT_DTYPES:
        fail_usage(f"--input-dtype {input_dtype!r} is not supported; choose one of {', '.join(INPUT_DTYPES)}")
    if not run_dir.is_dir():
        fail_usage(f"RUN_DIR {run_dir} is not a folder")
    from anomaly_ae import ModelDirError, OutputConflict
    from anomaly_ae.deploy.encoder import ExportError
    from anomaly_ae.deploy.graph import export_detector

    try:
        info = export_detector(run_dir, out, fmt, input_dtype, overwrite=overwrite)
    except (ModelDirError, ExportError, OutputConflict) as err:
        fail_usage(str(err))
    inp = info["input"]
    console.print(f"input          {inp['name']} {inp['shape']} {inp['dtype']} {inp['channel_order']}")
    console.print("outputs        anomaly_map [N, h, w] float32, score [N] float32")
    console.print(f"threshold      {info['threshold']:.6g}   pixel threshold {info['pixel_threshold']:.6g}")
    console.print(f"exported       {out / info['file']}  (+ {out / 'deploy.json'})")
