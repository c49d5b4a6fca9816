"""``anomaly-ae export RUN_DIR --out DIR --format onnx|savedmodel``: the whole detector as one graph."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from anomaly_ae.cli.choices import ExportFormat, InputDtype
from anomaly_ae.cli.common import MODEL_REF_HELP, fail_usage, model_dir, results
from anomaly_ae.io.names import DEPLOY_JSON

EXAMPLES = """Examples:

  anomaly-ae export runs/a --out deploy/a

  anomaly-ae export runs/a --out deploy/a-tf --format savedmodel --input-dtype float32
"""


def export(
    run_dir: Annotated[str, typer.Argument(help=MODEL_REF_HELP, metavar="RUN_DIR")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the graph and deploy.json.")],
    fmt: Annotated[ExportFormat, typer.Option("--format", "-f", help="Graph format.")] = ExportFormat.onnx,
    input_dtype: Annotated[
        InputDtype, typer.Option(help="Input of the graph: uint8 pixels 0-255, or float32 0-1.")
    ] = InputDtype.uint8,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier export in --out (other files stay).")] = False,
) -> None:
    """Export preprocessing scale -> autoencoder -> anomaly map -> score as one ONNX / SavedModel graph.

    The graph takes images at the model resolution; deploy.json holds the thresholds and the normalization.
    """
    run_dir = model_dir(run_dir)
    from anomaly_ae import Engine, ModelDirError, OutputConflict
    from anomaly_ae.deploy.encoder import ExportError

    try:
        info = Engine(out).export(run_dir, fmt.value, input_dtype.value, overwrite=overwrite)
    except (ModelDirError, ExportError, OutputConflict) as err:
        fail_usage(str(err))
    inp = info["input"]
    results.print(f"input          {inp['name']} {inp['shape']} {inp['dtype']} {inp['channel_order']}")
    results.print("outputs        anomaly_map [N, h, w] float32, score [N] float32")
    results.print(f"threshold      {info['threshold']:.6g}   pixel threshold {info['pixel_threshold']:.6g}")
    results.print(f"exported       {out / info['file']}  (+ {out / DEPLOY_JSON})")
