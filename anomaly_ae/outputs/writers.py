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

    At most ``max_pending`` items, holding at most ``max_pending_cost`` (e.g. bytes of image data)
    together, are in flight: memory stays flat however long the run and however large the images. An item
    that costs more than ``max_pending_cost`` on its own is done before :meth:`submit` returns (the caller
    does not go on to hold the next huge image beside it). A failed ``work`` raises its exception from
    :meth:`submit` or :meth:`close` in the caller's thread.
    """

    def __init__(self, workers: int = 2, max_pending: int = 64, max_pending_cost: float = float("inf")) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="outputs")
        self._pending: deque[tuple[Future[Any], Callable[[], None], float]] = deque()
        self._max_pending = max_pending
        self._max_cost = max_pending_cost
        self._cost = 0.0

    def submit(self, work: Callable[[], None] | None, record: Callable[[], None], cost: float = 0.0) -> None:
        """Queue ``work`` (``None``: nothing to write) and the ``record`` that follows it.

        ``cost``: what the work holds in memory until done (counted against ``max_pending_cost``).
        """
        fut: Future[Any] = Future()
        if work is None:
            fut.set_result(None)
        else:
            fut = self._pool.submit(work)
        self._pending.append((fut, record, cost))
        self._cost += cost
        self._drain()

    def _over(self) -> bool:
        return len(self._pending) > self._max_pending or self._cost > self._max_cost

    def _drain(self) -> None:
        while self._pending and (self._over() or self._pending[0][0].done()):
            fut, record, cost = self._pending.popleft()
            self._cost -= cost
            fut.result()  # re-raises the worker's exception here
            record()

    def close(self) -> None:
        """Wait for every item and write the remaining records."""
        try:
            while self._pending:
                fut, record, _ = self._pending.popleft()
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
                fut, record, _ = self._pending.popleft()
                if fut.cancelled() or fut.exception() is not None:
                    break
                record()
