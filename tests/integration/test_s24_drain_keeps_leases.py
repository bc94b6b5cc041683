"""S24: draining keeps the leases alive: no other host takes a task over during a drain."""

from __future__ import annotations

import signal
import time

import pytest

from tests.handlers import starts
from tests.support import poll, statuses
from tests.support_proc import beating, wait_exit, with_proc_handlers

pytestmark = pytest.mark.timeout(60)

TASK_S = 7  # the scenario's 20 s, scaled down: still well past heartbeat.timeout_s (5) + cleanup


def test_s24_drain_renews_leases_until_the_task_is_done(harness, redis_server) -> None:
    with_proc_handlers(harness.conf, executor={"graceful_timeout_s": 30})
    r = redis_server.client()
    h1 = harness.start("run", "--host-id", "h1", "--procs", "1", "--threads", "1")
    beating(r, 1, 20, host="h1")
    task = harness.client().submit("count", {"seconds": TASK_S})
    owner = poll(lambda: next((hb["name"] for hb in beating(r, 1, 5, host="h1").values()
                               if task in hb["current"]), None), 10, 0.05, "running on h1")
    h2 = harness.start("run", "--host-id", "h2", "--procs", "1", "--threads", "1")
    beating(r, 1, 20, host="h2")
    sent = time.monotonic()
    h1.send(signal.SIGTERM)
    last_beat = 0.0
    while statuses(r, [task]) != ["done"]:
        assert time.monotonic() - sent < TASK_S + 5, "the drain ends with the task"
        rows = r.xpending_range("te.0.common", "rag_flow_svr_task_broker", "-", "+", 10)
        assert [row["consumer"].decode() for row in rows] in ([owner], []), rows
        assert owner.encode() in r.smembers("TASKEXE")
        beat = r.zrange(owner, -1, -1, withscores=True)
        assert beat and beat[0][1] >= last_beat
        if beat[0][1] > last_beat:
            last_beat = beat[0][1]
        time.sleep(0.2)  # poll interval of the checks above
    t = r.time()
    assert t[0] + t[1] / 1e6 - last_beat < 2.5, "heartbeats kept coming to the end"
    assert wait_exit(h1, 10)[0] == 0
    assert starts(r, task) == 1
    assert owner.encode() not in r.smembers("TASKEXE"), "it left the registry once done"
    assert r.xpending("te.0.common", "rag_flow_svr_task_broker")["pending"] == 0
    h2.send(signal.SIGTERM)
    assert wait_exit(h2, 15)[0] == 0
