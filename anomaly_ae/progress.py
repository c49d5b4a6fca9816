"""What a long run tells a person while it works: stage lines, progress bars and warnings, on stderr.

One reporter serves the command line and the Python API (``Detector(verbose=1)``,
``score_folder(..., verbose=1)``, ``evaluate(..., verbose=1)``), so both show the same thing::

    progress = Progress(verbose=1)
    progress.stage("reading 240 images from good/")        # one line, as the stage begins
    with progress.bar("scoring", total=240) as bar:          # count, images/s, ETA (and a loss when given)
        for batch in batches:
            bar.advance(len(batch), loss=0.0123)
    progress.warning("bad.png: truncated PNG")               # always shown, even with verbose=0

``verbose=0`` shows warnings only. Results are not progress: the command line prints them on
stdout (:mod:`cli`); this module writes only to stderr, so that ``anomaly-ae score ... > out.txt``
or ``--json`` leaves a clean stdout. Bars draw only on a terminal; in a log file the stage and
epoch lines are what remain.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.text import Text

from anomaly_ae.io.files import display_name


def stderr_console() -> Console:
    """A rich console on stderr that never reads ``[...]`` in a file name as markup."""
    return Console(stderr=True, soft_wrap=True, markup=False, highlight=False)


class _RateColumn(ProgressColumn):
    """``123 img/s`` (rich's own speed column counts bytes)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "img")
        return Text(f"{speed:,.0f} {unit}/s" if speed else f"- {unit}/s", style="cyan")


class _LossColumn(ProgressColumn):
    """The running loss of the epoch so far (blank for bars without a loss)."""

    def render(self, task: Task) -> Text:
        loss = task.fields.get("loss")
        return Text("" if loss is None else f"loss {loss:.5g}", style="magenta")


class Bar:
    """One progress bar: ``advance(n, loss=...)``; ``rate()`` is the items per second so far."""

    def __init__(self, rich: RichProgress | None, task: Any, total: int | None) -> None:
        self._rich, self._task, self.total = rich, task, total
        self.done = 0
        self.start = time.perf_counter()

    def advance(self, n: int = 1, loss: float | None = None) -> None:
        """``n`` more items done; ``loss``: the running loss to show beside the bar."""
        self.done += n
        if self._rich is not None:
            fields = {} if loss is None else {"loss": float(loss)}
            self._rich.update(self._task, completed=self.done, **fields)

    def rate(self) -> float:
        """Items per second since the bar started."""
        return self.done / max(time.perf_counter() - self.start, 1e-9)


class Progress:
    """Stage lines, bars and warnings on stderr (see the module docstring).

    Args:
        verbose: 0 shows warnings only; 1 (or more) adds stage lines and bars.
        console: where to write (default: a new console on stderr).
    """

    def __init__(self, verbose: int = 1, console: Console | None = None) -> None:
        self.verbose = int(verbose)
        self.console = console or stderr_console()

    def stage(self, message: str) -> None:
        """One line as a stage begins (what is loading or running), e.g. ``reading 240 images ...``."""
        if self.verbose:
            self.console.print(Text("· ", style="dim") + Text(display_name(message)))

    def line(self, message: str) -> None:
        """One plain line of progress (e.g. an epoch's losses once it ends)."""
        if self.verbose:
            self.console.print(Text(display_name(message)))

    def warning(self, message: str, label: str = "warning:") -> None:
        """A one-line warning (the work goes on); shown at every verbosity."""
        self.console.print(Text(label, style="yellow"), Text(display_name(message)))

    @contextlib.contextmanager
    def bar(self, label: str, total: int | None, unit: str = "img", loss: bool = False) -> Iterator[Bar]:
        """A transient bar: label, bar, done/total, ``unit``/s, ETA and (with ``loss``) the running loss."""
        if not self.verbose or not self.console.is_terminal:  # a log file gets the stage and epoch lines only
            yield Bar(None, None, total)
            return
        columns: list[ProgressColumn] = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                         _RateColumn(), TextColumn("ETA"), TimeRemainingColumn()]
        if loss:
            columns.append(_LossColumn())
        rich = RichProgress(*columns, console=self.console, transient=True)
        with rich:
            task = rich.add_task(display_name(label), total=total, unit=unit, loss=None)
            yield Bar(rich, task, total)


def as_progress(verbose: int | Progress) -> Progress:
    """``verbose`` as a :class:`Progress` (an int builds one on stderr; a ``Progress`` is used as is)."""
    return verbose if isinstance(verbose, Progress) else Progress(verbose)


__all__ = ["Bar", "Progress", "as_progress", "stderr_console"]
