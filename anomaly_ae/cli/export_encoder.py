"""``anomaly-ae export-encoder RUN_DIR --out DIR``: the trained encoder as a multi-scale feature extractor."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from anomaly_ae.cli.choices import ExportFormat
from anomaly_ae.cli.common import MODEL_REF_HELP, fail_usage, model_dir, results
from anomaly_ae.io.names import ENCODER_KERAS

EXAMPLES = """Examples:

  anomaly-ae export-encoder runs/a --out encoders/a

  anomaly-ae export-encoder runs/a --out encoders/a --format onnx --format savedmodel
"""


def export_encoder(
    run_dir: Annotated[str, typer.Argument(help=MODEL_REF_HELP, metavar="RUN_DIR")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for encoder.keras, .weights.h5, .json.")],
    fmt: Annotated[
        list[ExportFormat] | None,
        typer.Option("--format", "-f", help="Extra format (repeatable; keras and weights are always written).",
                     show_default="none"),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier encoder export in --out.")] = False,
) -> None:
    """Export the encoder (one output per resolution block + latent) for segmentation transfer learning."""
    run_dir = model_dir(run_dir)
    from anomaly_ae import ModelDirError, OutputConflict
    from anomaly_ae.deploy.encoder import ExportError
    from anomaly_ae.deploy.encoder import export_encoder as run_export

    try:
        info = run_export(run_dir, out, formats=[f.value for f in fmt or ()], overwrite=overwrite)
    except (ModelDirError, ExportError, OutputConflict) as err:
        fail_usage(str(err))
    for o in info["outputs"]:
        results.print(f"  {o['name']:<24} {o['shape']}  (1/{o['downsampling']})")
    results.print(f"encoder        {out / ENCODER_KERAS}  (+ encoder.json: {', '.join(info['files'][1:])})")
