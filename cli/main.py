"""Entry point of the ``anomaly-ae`` console script: one sub-module per command."""

from __future__ import annotations

import os

# Before any TensorFlow import: keep TF's C++ start-up chatter out of the user's terminal, and keep
# albumentations from checking the network for a newer version on import.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import typer  # noqa: E402

from cli.calibrate import calibrate  # noqa: E402
from cli.common import friendly_errors, silence_native_stderr  # noqa: E402
from cli.evaluate import evaluate  # noqa: E402
from cli.export import export  # noqa: E402
from cli.export_encoder import export_encoder  # noqa: E402
from cli.sample import sample  # noqa: E402
from cli.score import score  # noqa: E402
from cli.segment import segment_app  # noqa: E402
from cli.train import train  # noqa: E402

app = typer.Typer(
    name="anomaly-ae",
    help="Learn what good parts look like; find and localise defects by reconstruction error.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from anomaly_ae import __version__

        typer.echo(f"anomaly-ae {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print the version and exit."),
) -> None:
    """anomaly-ae: autoencoder-based visual inspection (train on good images, score new ones)."""


app.command("train")(friendly_errors(train))
app.command("score")(friendly_errors(score))
app.command("evaluate")(friendly_errors(evaluate))
app.command("calibrate")(friendly_errors(calibrate))
app.command("sample")(friendly_errors(sample))
app.command("export")(friendly_errors(export))
app.command("export-encoder")(friendly_errors(export_encoder))
app.add_typer(segment_app, name="segment")


def main() -> None:
    """Console-script entry point: quiet native TensorFlow logging, then run the typer app."""
    silence_native_stderr()
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
