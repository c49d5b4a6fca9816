"""Entry point of the ``anomaly-ae`` console script: one sub-module per command."""

from __future__ import annotations

import os

# Before any TensorFlow import: keep TF's C++ start-up chatter out of the user's terminal, and keep
# albumentations from checking the network for a newer version on import.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # MLflow's INFO lines (database set-up, validation)

import typer  # noqa: E402
from typer.core import TyperGroup  # noqa: E402

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

#: names other tools use for a command of ours (anomalib: predict, test; scikit-learn: fit) -> ours
SYNONYMS = {"predict": "score", "infer": "score", "inference": "score", "test": "evaluate", "eval": "evaluate",
            "fit": "train", "threshold": "calibrate"}


class _Commands(TyperGroup):
    """Typer's group, with a hint when a command is called by another tool's name for it, and option errors
    without the "Value error, " that typer copies from pydantic ("Invalid value for '--model': Value error,
    'x' is not one of ...")."""

    def invoke(self, ctx: typer.Context):  # noqa: ANN201 (click's own type)
        try:
            return super().invoke(ctx)
        except Exception as err:  # typer's vendored click.BadParameter, raised while a command parses
            message = getattr(err, "message", None)
            if isinstance(message, str) and message.startswith("Value error, "):
                err.message = message.removeprefix("Value error, ")
            raise

    def resolve_command(self, ctx: typer.Context, args: list[str]):  # noqa: ANN201 (click's own type)
        try:
            return super().resolve_command(ctx, args)
        except Exception as err:  # the UsageError of the click that typer vendors: add the hint to its message
            name = args[0] if args else ""
            if name in SYNONYMS and hasattr(err, "message"):
                err.message = f"No such command '{name}'. anomaly-ae calls it '{SYNONYMS[name]}': " \
                              f"anomaly-ae {SYNONYMS[name]} --help"
            raise


app = typer.Typer(
    name="anomaly-ae",
    cls=_Commands,
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
