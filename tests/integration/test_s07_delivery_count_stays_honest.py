"""S7: healthy tasks are never dead-lettered by their delivery count.

Scaled: heartbeat.timeout_s 2 (interval 0.5), tasks of 2.5 s, each longer than the timeout.
"""

import os
import signal
import threading

import pytest

from tests.delivery_support import pending_by_consumer, start_count, start_host
from tests.support import heartbeats, poll, statuses

pytestmark = pytest.mark.timeout(120)


def test_s7_renewals_never_count_as_deliveries(harness, redis_server):
    harness.conf.update(heartbeat={"interval_s": 0.5, "timeout_s": 2}, cleanup={"interval_s": 1})
    r = redis_server.client()
    start_host(harness, "h1", 1, 4)
    poll(lambda: heartbeats(r), 20, message="worker up")
    client = harness.client()
    ids = client.submit_many("count", [{"seconds": 2.5}] * 8)
    seen: dict[str, int] = {}
    idle: list[int] = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            for rows in pending_by_consumer(r).values():
                for row in rows:
                    mid = row["message_id"].decode()
                    seen[mid] = max(seen.get(mid, 0), row["times_delivered"])
                    if len(rows) == 4:  # every held lease is renewed, not only the first
                        idle.append(row["time_since_delivered"])
            stop.wait(0.1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    first = ids[:4]
    poll(lambda: statuses(r, first) == ["done"] * 4, 20, 0.1, "first four done")
    before_kill = dict(seen)
    assert idle and max(idle) < 3 * 500, max(idle)
    assert before_kill and set(before_kill.values()) == {1}
    second = ids[4:]
    poll(lambda: statuses(r, second) == ["running"] * 4, 10, message="second four running")
    victim = next(iter(heartbeats(r).values()))["pid"]
    os.kill(victim, signal.SIGKILL)
    poll(lambda: statuses(r, ids) == ["done"] * 8, 30, 0.1, "all done")
    stop.set()
    watcher.join()
    assert sorted(seen.values()) == [1, 1, 1, 1, 2, 2, 2, 2]
    assert [start_count(r, t) for t in first] == [1] * 4
    assert [start_count(r, t) for t in second] == [2] * 4
    assert not r.exists("te.dead.common") or r.xlen("te.dead.common") == 0
