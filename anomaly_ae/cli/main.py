"""Entry point of the ``anomaly-ae`` console script: one sub-module per command."""

from __future__ import annotations

import os

# Before any TensorFlow import: keep TF's C++ start-up chatter out of the user's terminal, and keep
# albumentations from checking the network for a newer version on import.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # MLflow's INFO lines (database set-up, validation)

import typer  # noqa: E402

from anomaly_ae.cli import calibrate as calibrate_cmd  # noqa: E402
from anomaly_ae.cli import evaluate as evaluate_cmd  # noqa: E402
from anomaly_ae.cli import export as export_cmd  # noqa: E402
from anomaly_ae.cli import export_encoder as export_encoder_cmd  # noqa: E402
from anomaly_ae.cli import presets as presets_cmd  # noqa: E402
from anomaly_ae.cli import sample as sample_cmd  # noqa: E402
from anomaly_ae.cli import score as score_cmd  # noqa: E402
from anomaly_ae.cli import train as train_cmd  # noqa: E402
from anomaly_ae.cli.common import friendly_errors, silence_native_stderr  # noqa: E402
from anomaly_ae.cli.segment import segment_app  # noqa: E402

app = typer.Typer(
    name="anomaly-ae",
    help="Learn what good parts look like; find and localise defects by reconstruction error.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
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


app.command("train", epilog=train_cmd.EXAMPLES)(friendly_errors(train_cmd.train))
app.command("score", epilog=score_cmd.EXAMPLES)(friendly_errors(score_cmd.score))
app.command("evaluate", epilog=evaluate_cmd.EXAMPLES)(friendly_errors(evaluate_cmd.evaluate))
app.command("calibrate", epilog=calibrate_cmd.EXAMPLES)(friendly_errors(calibrate_cmd.calibrate))
app.command("sample", epilog=sample_cmd.EXAMPLES)(friendly_errors(sample_cmd.sample))
app.command("export", epilog=export_cmd.EXAMPLES)(friendly_errors(export_cmd.export))
app.command("export-encoder", epilog=export_encoder_cmd.EXAMPLES)(friendly_errors(export_encoder_cmd.export_encoder))
app.add_typer(segment_app, name="segment")
app.command("presets", epilog=presets_cmd.EXAMPLES)(friendly_errors(presets_cmd.presets))


def main() -> None:
    """Console-script entry point: quiet native TensorFlow logging, then run the typer app."""
    silence_native_stderr()
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
