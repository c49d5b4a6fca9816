"""Small helpers shared by the commands (no heavy imports here)."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console

from anomaly_ae.io.files import display_name  # light: the standard library only


class _PlainConsole(Console):
    """Messages are plain text: a path or file name holding ``[...]`` is never read as rich markup, and
    bytes of a name that are not UTF-8 are shown as ``\\xNN`` (never an encoding error). Colour comes
    only from :func:`note`."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(display_name(o) if isinstance(o, str) else o for o in objects), **kwargs)


console = _PlainConsole(stderr=True, soft_wrap=True, markup=False)
#: results (summaries, verdict lines, ``--json``) go to stdout; progress, warnings and errors to stderr
results = _PlainConsole(soft_wrap=True, markup=False, highlight=False)
P = ParamSpec("P")
R = TypeVar("R")

EXIT_OK = 0
EXIT_FAILED = 1  # the work itself failed (e.g. training diverged); the message says why
EXIT_USAGE = 2
EXIT_PARTIAL = 3


#: ``--quiet`` / ``-q`` and ``--json``, the same on every command that runs long
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or stage lines (warnings, errors and "
                                     "results still show).")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of the result lines "
                                    "(keys: README, 'Machine-readable output').")]


#: MLflow options shared by train and calibrate
NoTrack = Annotated[bool, typer.Option("--no-track", help="Do not record an MLflow run.")]
_REGISTER_HELP = "Register the model in the MLflow Model Registry under this name (a new version each time)."
Register = Annotated[str | None, typer.Option(help=_REGISTER_HELP, show_default="not registered")]
#: calibrate's ``--register``: a registered model stays registered under its name
RegisterAgain = Annotated[str | None, typer.Option(help=_REGISTER_HELP,
                                                   show_default="the model's registered name, if any")]
def _check_alias(alias: str | None) -> str | None:
    """Refuse, before any work, an alias the MLflow Model Registry would refuse after the training: 'latest' and
    version names like 'v1' are reserved, and only letters, digits, '_' and '-' are allowed."""
    import re

    if alias is None:
        return None
    if alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        raise typer.BadParameter(f"{alias!r} is reserved by the MLflow Model Registry (it names a version); "
                                 "choose another alias, e.g. champion")
    if not re.fullmatch(r"[\w\-]{1,255}", alias):
        raise typer.BadParameter(f"{alias!r}: an alias may hold only letters, digits, '_' and '-' (1-255 of them)")
    return alias


Alias = Annotated[str | None, typer.Option(
    help="Point this registry alias (e.g. champion) at the new version; needs --register.", show_default="none",
    callback=_check_alias)]


#: ``--address`` of a Ray cluster (train and score with ``--engine ray``)
RayAddress = Annotated[str | None, typer.Option(
    help="Ray cluster address (with --engine ray).", show_default="start a local Ray and stop it after")]


def reporter(quiet: bool) -> Any:
    """The library's :class:`anomaly_ae.progress.Progress` on stderr, silent but for warnings with ``--quiet``."""
    from anomaly_ae.progress import Progress

    return Progress(verbose=0 if quiet else 1, console=console)


def loading(quiet: bool, what: str = "") -> None:
    """A first line within a second of start, before the seconds of importing Keras and TensorFlow."""
    if quiet:
        return
    from rich.text import Text

    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    console.print(Text("· ", style="dim") + Text(f"loading Keras ({backend} backend){what}"))


def print_json(obj: Any) -> None:
    """One JSON object on stdout (paths as strings, NaN as null)."""
    import json
    import math

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        if isinstance(v, int | float | str | bool) or v is None:
            return v
        return str(v)

    sys.stdout.write(json.dumps(clean(obj), indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def print_summary(rows: list[tuple[str, str]], title: str = "") -> None:
    """Result rows on stdout: a table on a terminal, ``label  value`` lines elsewhere (logs, pipes, grep)."""
    if results.is_terminal:
        from rich import box
        from rich.table import Table

        table = Table(box=box.SIMPLE_HEAD, title=title or None, show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        for label, value in rows:
            table.add_row(label, display_name(value))
        results.print(table)
        return
    for label, value in rows:
        results.print(f"{label:<14} {value}")


#: what RUN_DIR arguments accept, for their help text
MODEL_REF_HELP = ("Model directory written by 'anomaly-ae train', or an MLflow model: models:/NAME/VERSION, "
                  "models:/NAME@ALIAS, runs:/RUN_ID/model (downloaded once to ~/.cache/anomaly-ae).")


def model_dir(ref: str, quiet: bool = False) -> Path:
    """RUN_DIR as a local model directory: a folder as is, an MLflow model URI downloaded once (exit 2 if neither)."""
    if not ref.startswith(("models:/", "runs:/")):
        if not Path(ref).is_dir():
            fail_usage(f"RUN_DIR {ref} is not a folder")
        return Path(ref)
    if not quiet:
        console.print(f"· fetching {ref} from {tracking_uri()}")
    from anomaly_ae.deploy.mlflow_model import resolve_model

    try:
        return resolve_model(ref, tracking_uri(), on_refresh=None if quiet else warn)
    except ValueError as err:
        fail_usage(str(err))


def invoked_command(drop: tuple[str, ...] = ("--overwrite",)) -> str:
    """The command line as typed (``anomaly-ae ...``), less the options in ``drop``, quoted for a shell."""
    import shlex

    return shlex.join(["anomaly-ae", *(a for a in sys.argv[1:] if a not in drop)])


#: the library's messages name its parameters (``out_dir``, ``overwrite=True``); a command shows the flags that
#: set them. Applied to every error and warning line the commands print.
FLAG_WORDS = (
    ("overwrite=True", "--overwrite"),
    ("resume=True", "--resume"),
    ("tracking=False", "--no-track"),
    ("another out_dir", "another --out"),
    ("out_dir ", "--out "),
    ("leave address unset", "leave --address out"),
    ("address=", "--address "),
    ("fmt='savedmodel'", "--format savedmodel"),
    ("give registered_name", "add --register NAME"),
)


def in_flags(message: str) -> str:
    """A library message in the command line's words (:data:`FLAG_WORDS`)."""
    for words, flag in FLAG_WORDS:
        message = message.replace(words, flag)
    return message


def note(label: str, style: str, message: str = "") -> None:
    """One line: ``label`` in colour (``"red"``, ``"yellow"``), then ``message`` as plain text, its parameter
    names as flags (:func:`in_flags`)."""
    from rich.text import Text

    message = in_flags(message)

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


#: what was kept after Ctrl-C, per command, and how to go on ({command}: the command line as typed,
#: less --overwrite); default: the output folder was left as it was
_AFTER_INTERRUPT = {
    "score": "the rows already written are kept; continue with: {command}",
    "train": "nothing was written yet; start again with: {command}",
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
            after = _AFTER_INTERRUPT.get(
                command.__name__, "nothing was written to --out (outputs are moved into place only when complete)")
            note("interrupted:", "yellow", after.format(command=invoked_command()))
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
    from anomaly_ae.tracking import default_tracking_uri

    return default_tracking_uri()


def announce_run(tracker: Any, show_store: bool = True) -> None:
    """The run id (stderr), and how to view a local store, once a tracked run ended well."""
    if tracker is None or tracker.disabled:
        return
    if not show_store:
        console.print(f"MLflow run     {tracker.run_id}")
        return
    console.print(f"MLflow run     {tracker.run_id} in {tracker.uri}")
    if not os.environ.get("MLFLOW_TRACKING_URI") or tracker.fell_back:
        console.print(f"               view it with: mlflow ui --backend-store-uri {tracker.uri}")


@contextlib.contextmanager
def open_tracker(experiment: str, run_name: str, no_track: bool, show_store: bool = True) -> Iterator[Any]:
    """The run's tracker: ``NullTracker`` with ``--no-track``, else :func:`anomaly_ae.tracking.open_run` in
    :func:`tracking_uri`, its warnings on stderr and :func:`announce_run` when it ends well."""
    from anomaly_ae.tracking import NullTracker, open_run

    if no_track:
        yield NullTracker()
        return
    with open_run(experiment, run_name, on_warning=warn) as tracker:
        yield tracker
    announce_run(tracker, show_store)
