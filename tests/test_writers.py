import threading
import time

import pytest

from anomaly_ae.outputs.writers import OrderedOutputs


def test_records_follow_submission_order_after_their_work():
    done, records = set(), []

    def work(i):
        def run():
            time.sleep(0.02 * ((7 * i) % 5))  # finish out of order
            done.add(i)
        return run

    def record(i):
        def run():
            assert i in done  # a record is never written before its files
            records.append(i)
        return run

    with OrderedOutputs(workers=3, max_pending=4) as w:
        for i in range(20):
            if i % 3 == 0:  # an item without files (e.g. an unreadable input)
                done.add(i)
            w.submit(work(i) if i % 3 else None, record(i))
            assert len(w._pending) <= 4 + 1
    assert records == list(range(20))


def test_a_failing_write_surfaces_and_completed_items_are_recorded():
    records = []
    gate = threading.Event()

    def fail():
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        with OrderedOutputs(workers=1, max_pending=100) as w:
            w.submit(lambda: None, lambda: records.append(0))
            w.submit(fail, lambda: records.append(1))
            w.submit(gate.wait, lambda: records.append(2))
            gate.set()
    assert records == [0]


def test_an_item_over_the_cost_budget_on_its_own_is_done_before_submit_returns():
    """A 100-megapixel image's outputs: the caller must not go on to hold the next huge image beside them."""
    recorded = []
    with OrderedOutputs(max_pending_cost=100.0) as out:
        out.submit(lambda: time.sleep(0.05), lambda: recorded.append("small"), cost=10.0)
        assert recorded == [] or recorded == ["small"]  # within budget: may still be pending
        out.submit(lambda: time.sleep(0.2), lambda: recorded.append("huge"), cost=500.0)
        assert recorded == ["small", "huge"]  # over budget alone: written (and recorded) already
