"""S3: long tasks never starve short ones, and priority 1 is read first."""

import threading
import time

import pytest

from tests.delivery_support import field, start_host
from tests.support import heartbeats, poll, statuses

pytestmark = pytest.mark.timeout(90)


def test_s3_short_tasks_flow_past_long_ones_and_priority_1_first(harness, redis_server):
    r = redis_server.client()
    start_host(harness, "h1", 1, 4)
    poll(lambda: heartbeats(r), 20, message="worker up")
    client = harness.client()
    long_ids = [client.submit("sleep", {"seconds": 8}) for _ in range(3)]
    most_running = [0]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            most_running[0] = max(most_running[0], statuses(r, all_ids()).count("running"))
            stop.wait(0.05)

    submitted: list[str] = []

    def all_ids():
        return long_ids + submitted

    watcher = threading.Thread(target=watch)
    watcher.start()
    sent = time.monotonic()
    noops = client.submit_many("noop", [{}] * 10)
    submitted += noops
    poll(lambda: statuses(r, noops) == ["done"] * 10, 5, 0.05, "10 noop done within 5 s")
    assert time.monotonic() - sent < 5
    low = client.submit_many("sleep", [{"seconds": 0.5}] * 30)
    submitted += low
    high = client.submit("noop", priority=1)
    submitted.append(high)
    poll(lambda: statuses(r, [high]) == ["done"], 10, 0.05, "priority-1 task done")
    high_begin = float(field(r, high, "begin_at"))
    before = [t for t in low if field(r, t, "begin_at") and float(field(r, t, "begin_at")) <
              high_begin]
    assert len(before) <= 1, before
    poll(lambda: statuses(r, long_ids) == ["done"] * 3, 30, 0.2, "long tasks done")
    stop.set()
    watcher.join()
    assert most_running[0] <= 4
    assert [int(field(r, t, "retry_count")) for t in long_ids] == [1, 1, 1]
