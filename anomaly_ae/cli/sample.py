"""``anomaly-ae sample RUN_DIR --n 16 --out grid.png``: new images from a VAE's prior."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from anomaly_ae.cli.common import MODEL_REF_HELP, fail_usage, model_dir, results

EXAMPLES = """Examples:

  anomaly-ae sample runs/vae --out samples.png --n 25 --seed 3
"""


def sample(
    run_dir: Annotated[str, typer.Argument(help=MODEL_REF_HELP, metavar="RUN_DIR")],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file for the grid of samples.")],
    n: Annotated[int, typer.Option("--n", min=1, max=1024, help="Number of samples.")] = 16,
    seed: Annotated[int, typer.Option(help="Seed of the prior draws.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace the file --out if it exists.")] = False,
) -> None:
    """Decode N draws from the prior N(0, I) of a variational autoencoder into a PNG grid."""
    run_dir = model_dir(run_dir)
    if out.is_dir():
        fail_usage(f"--out {out} is a folder; give a file name such as {out / 'samples.png'}")
    if os.path.lexists(out) and not overwrite:
        fail_usage(f"--out {out} already exists: add --overwrite to replace it, or choose another name")

    from anomaly_ae import Detector, ModelDirError
    from anomaly_ae.io.files import write_png_atomic
    from anomaly_ae.outputs.overlays import image_grid

    try:
        images = Detector.load(run_dir).sample(n, seed=seed)
    except ModelDirError as err:
        fail_usage(str(err))
    except ValueError as err:  # not a VAE
        fail_usage(f"{run_dir} {err}")
    write_png_atomic(out, image_grid(images))
    results.print(f"wrote {n} samples to {out}")
