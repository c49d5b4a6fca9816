"""Small helpers shared by the commands (no heavy imports here)."""

from __future__ import annotations

import os
import sys

from rich.console import Console

console = Console(stderr=True, soft_wrap=True)

EXIT_OK = 0
EXIT_FAILED = 1  # the work itself failed (e.g. training diverged); the message says why
EXIT_USAGE = 2
EXIT_PARTIAL = 3


def fail_usage(message: str) -> None:
    """Print a one-line usage error and exit with code 2."""
    import typer

    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(EXIT_USAGE)


def warn(message: str) -> None:
    """Print a one-line warning (the work goes on)."""
    console.print(f"[yellow]warning:[/yellow] {message}")


def silence_native_stderr() -> None:
    """Send native (C++) writes to file descriptor 2 to /dev/null; Python's ``sys.stderr`` keeps working.

    TensorFlow >= 2.17 prints INFO lines (oneDNN, CUDA probing) through absl before it reads
    ``TF_CPP_MIN_LOG_LEVEL`` (tensorflow/tensorflow#100442), so the variable alone cannot silence it.
    Applied only when ``TF_CPP_MIN_LOG_LEVEL`` is 2 or more (the CLI's default is 3): set it to 0 to
    see every native log line again.
    """
    try:
        level = int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        level = 0
    if level < 2:
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        sys.stderr = os.fdopen(saved, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    except OSError:  # no usable stderr: leave everything as it is
        pass


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the local store ``sqlite:///<cwd>/mlflow.db``."""
    from pathlib import Path

    from anomaly_ae.tracking import local_store_uri

    return os.environ.get("MLFLOW_TRACKING_URI") or local_store_uri(Path.cwd())


def fallback_uri(uri: str) -> str | None:
    """Where a run goes when ``uri`` fails: the local store ``./mlflow.db`` (``None`` if that is ``uri``)."""
    from pathlib import Path

    from anomaly_ae.tracking import local_store_uri

    local = local_store_uri(Path.cwd())
    return None if uri == local else local
