"""S6: a task that outlives the takeover threshold is never taken over.

Scaled: heartbeat.timeout_s 2 (interval 0.5) instead of 5, so the task of four thresholds and the
tasks of the threshold plus or minus 50 ms keep their meaning in a shorter run.
"""

import threading

import pytest

from tests.delivery_support import field, pending_by_consumer, start_count, start_host
from tests.support import heartbeats, poll, statuses

pytestmark = pytest.mark.timeout(120)


def test_s6_renewed_leases_keep_long_tasks_with_their_consumer(harness, redis_server):
    harness.conf.update(heartbeat={"interval_s": 0.5, "timeout_s": 2}, cleanup={"interval_s": 1})
    r = redis_server.client()
    hosts = [start_host(harness, h, 1, 1) for h in ("h1", "h2")]
    poll(lambda: len(heartbeats(r)) == 2, 20, message="two hosts up")
    client = harness.client()
    owners: dict[str, set] = {}
    counts: dict[str, set] = {}
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            for consumer, rows in pending_by_consumer(r).items():
                for row in rows:
                    mid = row["message_id"].decode()
                    owners.setdefault(mid, set()).add(consumer)
                    counts.setdefault(mid, set()).add(row["times_delivered"])
            stop.wait(0.1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    long_task = client.submit("count", {"seconds": 8})
    short = [client.submit("count", {"seconds": 1.95 if i % 2 else 2.05}) for i in range(8)]
    every = [long_task, *short]
    poll(lambda: statuses(r, every) == ["done"] * 9, 60, 0.2, "all done")
    stop.set()
    watcher.join()
    assert [start_count(r, t) for t in every] == [1] * 9
    assert owners and all(len(o) == 1 for o in owners.values()), owners
    assert all(c == {1} for c in counts.values()), counts
    for t in every:
        assert field(r, t, "retry_count") == "1"
    for h in hosts:
        assert "Took over" not in h.stderr and "looks dead" not in h.stderr
