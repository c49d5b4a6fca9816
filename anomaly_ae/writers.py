"""Output files written off the critical path, with their record kept in input order.

``anomaly-ae score`` hands each scored image's outputs (heatmap, mask, raw map) to worker threads
(OpenCV's colour mapping and PNG encoding release the GIL) while the model scores the next batch.
The record of an item (its ``scores.csv`` row) is written only after all of that item's files are
on disk, and in input order, so a row always means "this input is completely done".
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class OrderedOutputs:
    """Run ``work`` callables in threads; call each item's ``record`` in submission order once its work is done.

    At most ``max_pending`` items are in flight (memory stays flat however long the run); a failed
    ``work`` raises its exception from :meth:`submit` or :meth:`close` in the caller's thread.
    """

    def __init__(self, workers: int = 2, max_pending: int = 64) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="outputs")
        self._pending: deque[tuple[Future[Any], Callable[[], None]]] = deque()
        self._max_pending = max_pending

    def submit(self, work: Callable[[], None] | None, record: Callable[[], None]) -> None:
        """Queue ``work`` (``None``: nothing to write) and the ``record`` that follows it."""
        fut: Future[Any] = Future()
        if work is None:
            fut.set_result(None)
        else:
            fut = self._pool.submit(work)
        self._pending.append((fut, record))
        self._drain(block=len(self._pending) > self._max_pending)

    def _drain(self, block: bool) -> None:
        while self._pending and (block or self._pending[0][0].done()):
            fut, record = self._pending.popleft()
            fut.result()  # re-raises the worker's exception here
            record()
            block = block and len(self._pending) > self._max_pending

    def close(self) -> None:
        """Wait for every item and write the remaining records."""
        try:
            while self._pending:
                fut, record = self._pending.popleft()
                fut.result()
                record()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> OrderedOutputs:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:  # an error is on its way: finish what runs, record the items completed in order, stop
            self._pool.shutdown(wait=True, cancel_futures=True)
            while self._pending:
                fut, record = self._pending.popleft()
                if fut.cancelled() or fut.exception() is not None:
                    break
                record()
