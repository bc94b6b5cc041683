"""S40: cancelled queued tasks are skipped without work."""

import json
import time

import pytest

from tests.delivery_support import start_count
from tests.support import heartbeats, poll, statuses

pytestmark = pytest.mark.timeout(120)


def test_s40_tasks_cancelled_by_flag_are_skipped(harness, redis_server):
    harness.start("run", "--procs", "1", "--threads", "2")
    r = redis_server.client()
    poll(lambda: heartbeats(r), 20, message="worker up")
    client = harness.client()
    sleeps = [client.submit("sleep", {"seconds": 3}) for _ in range(2)]
    poll(lambda: statuses(r, sleeps) == ["running"] * 2, 10, message="sleeps running")
    ids = client.submit_many("count", [{}] * 1000)
    pipe = r.pipeline()
    for t in ids:
        pipe.set(f"{t}-cancel", "x", ex=86400)  # as RAGFlow's API server does
    pipe.execute()
    noop = client.submit("noop")
    poll(lambda: statuses(r, sleeps) == ["done"] * 2, 10, message="sleeps done")
    ended = time.monotonic()
    poll(lambda: statuses(r, [noop]) == ["done"], 10, 0.05, "noop done")
    assert time.monotonic() - ended < 10
    poll(lambda: statuses(r, ids) == ["cancelled"] * 1000, 20, 0.2, "1000 cancelled")
    assert sum(start_count(r, t) for t in ids) == 0
    assert not r.exists("te.dead.common")
    rows = json.loads(harness.cli("queues", "--json").stdout)
    row = next(x for x in rows if x["stream"] == "te.0.common")
    assert row["lag"] == 0 and row["pending"] == 0
    assert not [k for k in r.scan_iter("*-cancel")]
