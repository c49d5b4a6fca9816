"""Small helpers shared by the commands (no heavy imports here)."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, ParamSpec, TypeVar

from rich.console import Console


class _PlainConsole(Console):
    """Messages are plain text: a path or file name holding ``[...]`` is never read as rich markup, and
    bytes of a name that are not UTF-8 are shown as ``\\xNN`` (never an encoding error). Colour comes
    only from :func:`note`."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        from anomaly_ae.fileio import display_name

        super().print(*(display_name(o) if isinstance(o, str) else o for o in objects), **kwargs)


console = _PlainConsole(stderr=True, soft_wrap=True, markup=False)
P = ParamSpec("P")
R = TypeVar("R")

EXIT_OK = 0
EXIT_FAILED = 1  # the work itself failed (e.g. training diverged); the message says why
EXIT_USAGE = 2
EXIT_PARTIAL = 3


def note(label: str, style: str, message: str = "") -> None:
    """One line: ``label`` in colour (``"red"``, ``"yellow"``), then ``message`` as plain text."""
    from rich.text import Text

    if message:
        console.print(Text(label, style=style), message)
    else:
        console.print(Text(label, style=style))


def fail_usage(message: str) -> NoReturn:
    """Print a one-line usage error and exit with code 2."""
    import typer

    note("error:", "red", message)
    raise typer.Exit(EXIT_USAGE)


def warn(message: str) -> None:
    """Print a one-line warning (the work goes on)."""
    note("warning:", "yellow", message)


#: errno -> exit code: the path or its permissions need fixing (2), or the work failed and a rerun
#: continues once the cause is gone (1: disk full, I/O error)
_USAGE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
                 errno.ENAMETOOLONG, errno.ENOENT, errno.ELOOP}


#: what to do after the disk filled up, per command (default: rerun it)
_AFTER_FULL_DISK = {"train": "free some space, then continue with 'anomaly-ae train --resume RUN_DIR' (the epochs "
                             "already checkpointed are kept)"}


#: what to do after Ctrl-C, per command (default: the output folder was left as it was)
_AFTER_INTERRUPT = {
    "score": "rerun the same command to resume: the rows already written are kept",
    "train": "continue with 'anomaly-ae train --resume RUN_DIR' (from the last finished epoch)",
    "calibrate": "the model directory keeps its earlier thresholds unless 'updated' was printed",
}


def os_error_message(err: OSError, command: str = "") -> str:
    """One line for an operating-system error: what happened, to which path, what to do."""
    what = err.strerror or str(err)
    where = f": {err.filename}" if err.filename is not None else ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        todo = _AFTER_FULL_DISK.get(command, "free some space and rerun the same command: finished work is kept")
        return f"{what}{where}; {todo}"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{what}{where}; choose a folder you can write to (or fix its permissions)"
    return f"{what}{where}"


def friendly_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Wrap a command so that an ``OSError`` or Ctrl-C ends it with one line and an exit code, never a traceback."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        import typer

        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            note("interrupted:", "yellow", _AFTER_INTERRUPT.get(
                command.__name__, "nothing was written to --out (outputs are moved into place only when complete)"))
            raise typer.Exit(130) from None
        except OSError as err:
            note("error:", "red", os_error_message(err, command.__name__))
            raise typer.Exit(EXIT_USAGE if err.errno in _USAGE_ERRNOS else EXIT_FAILED) from None

    return run


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


def new_bar(label: str) -> Any:
    """A transient rich ``Progress``: ``label`` (a ``TextColumn`` template), bar, done/total, elapsed time."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                    transient=True)


@contextlib.contextmanager
def progress_bar(label: str) -> Iterator[Callable[[int, int], None]]:
    """A transient bar; yields ``advance(done, total)`` for a library function's ``progress`` argument."""
    with new_bar(label) as bar:
        task = bar.add_task(label, total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield advance


@contextlib.contextmanager
def open_tracker(experiment: str, run_name: str, no_track: bool, run_id: str | None = None,
                 resumed_run: bool = False, show_store: bool = True) -> Iterator[Any]:
    """The run's tracker: ``NullTracker`` with ``--no-track``, else an MLflow run in :func:`tracking_uri`.

    A server that fails falls back to the local store; a store that cannot be written turns tracking
    off with one warning. The run id and how to view a local store are printed when the run ends well.
    """
    from anomaly_ae.tracking import MlflowTracker, NullTracker

    if no_track:
        yield NullTracker()
        return
    uri = tracking_uri()
    with MlflowTracker(uri, experiment, run_name=run_name, run_id=run_id, end_resumed_run=resumed_run,
                       fallback_uri=fallback_uri(uri), on_fallback=warn, off_on_failure=True) as tracker:
        yield tracker
        if tracker.disabled:
            return
        if not show_store:
            console.print(f"MLflow run     {tracker.run_id}")
            return
        console.print(f"MLflow run     {tracker.run_id} in {tracker.uri}")
        if not os.environ.get("MLFLOW_TRACKING_URI") or tracker.fell_back:
            console.print(f"               view it with: mlflow ui --backend-store-uri {tracker.uri}")
