"""S36: heartbeats keep coming while every thread is busy or one holds the GIL (scaled down:
a regular expression holding the GIL for about 6 s and a CPU loop of 12 s)."""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson
import pytest

from tests import memhandlers
from tests.support import Conf, Harness, child_pids, heartbeats, poll, statuses

pytestmark = pytest.mark.timeout(90)

GROUP = "rag_flow_svr_task_broker"


class Watch(threading.Thread):
    """Samples h1's consumer every 0.1 s: heartbeat age (server clock), writer, owners."""

    def __init__(self, r, consumer: str) -> None:
        super().__init__(daemon=True)
        self.r = r
        self.consumer = consumer
        self.max_age = 0.0
        self.writers: set[str] = set()
        self.owners: set[str] = set()
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.1):
            sec, usec = self.r.time()
            last = self.r.zrange(self.consumer, -1, -1, withscores=True)
            if last:
                self.max_age = max(self.max_age, sec + usec / 1e6 - last[0][1])
                self.writers.add(orjson.loads(last[0][0]).get("written_by", "worker"))
            else:
                self.max_age = float("inf")
            for row in self.r.xpending_range("te.0.common", GROUP, "-", "+", 10):
                self.owners.add(row["consumer"].decode())

    def last_score(self) -> float:
        last = self.r.zrange(self.consumer, -1, -1, withscores=True)
        return last[0][1] if last else 0.0


def _server_now(r) -> float:
    sec, usec = r.time()
    return sec + usec / 1e6


def _heartbeat_connection(r, consumer: str) -> dict[str, Any] | None:
    return next((c for c in r.client_list() if c["name"] == f"{consumer}_heartbeat"), None)


def test_s36_heartbeats_and_leases_survive_a_gil_holder_and_a_killed_connection(
        conf: Conf, harness: Harness, redis_server) -> None:
    conf.update(handlers=memhandlers.HANDLERS, heartbeat={"timeout_s": 10})
    interval = conf.data["heartbeat"]["interval_s"]
    h1 = harness.start("run", "--procs", "1", "--threads", "2", "--host-id", "h1")
    r = redis_server.client()
    ((consumer, beat),) = poll(lambda: list(heartbeats(r).items()), 20, message="h1 heartbeat")
    client = harness.client()
    gil = client.submit("regex", {"seconds": 6})
    cpu = client.submit("spin", {"seconds": 12})
    poll(lambda: statuses(r, [gil, cpu]) == ["running"] * 2, 10, message="both tasks running")
    h2 = harness.start("run", "--procs", "1", "--host-id", "h2")
    poll(lambda: len(heartbeats(r)) == 2, 20, message="idle h2 registered")
    watch = Watch(r, consumer)
    watch.start()
    try:
        # While the expression holds the GIL, the supervisor beats for the worker; a consumer
        # removed from TASKEXE by hand is back within 2 intervals.
        poll(lambda: "supervisor" in " ".join(watch.writers), 4 * interval + 2,
             message="a heartbeat written by h1's supervisor")
        r.srem("TASKEXE", consumer)
        removed = time.monotonic()
        poll(lambda: r.sismember("TASKEXE", consumer), 2 * interval + 0.5,
             interval=0.02, message="h1 back in TASKEXE")
        assert time.monotonic() - removed <= 2 * interval + 0.5
        poll(lambda: statuses(r, [gil]) == ["done"], 20, message="the regex task done")

        # A killed heartbeat connection: at most one warning, and the next beat on time.
        conn = poll(lambda: _heartbeat_connection(r, consumer), 5, message="heartbeat conn")
        killed_at = _server_now(r)
        r.execute_command("CLIENT", "KILL", "ID", conn["id"])
        poll(lambda: watch.last_score() > killed_at, interval + 0.5, interval=0.02,
             message="a beat after the kill, on time")
        poll(lambda: statuses(r, [cpu]) == ["done"], 20, message="the CPU task done")
    finally:
        watch.halt.set()
        watch.join(5)

    result = orjson.loads(r.hget(f"te:task:{gil}", "result"))
    assert result["held_s"] >= 3 * interval, result  # it did hold the GIL for several beats
    assert watch.max_age < conf.data["heartbeat"]["timeout_s"]
    assert watch.max_age < 2 * interval + 1.0, watch.max_age  # never close to the timeout
    assert watch.owners == {consumer}  # h2 took nothing over
    assert [int(r.hget(f"te:task:{t}", "retry_count")) for t in (gil, cpu)] == [1, 1]
    assert child_pids(h1.pid) == [beat["pid"]]  # the busy worker was not killed
    warnings = [line for line in h1.stderr.splitlines()
                if " WARNING " in line and "taskexec.heartbeat" in line]
    assert len(warnings) <= 1, warnings
    assert "sends no heartbeats though its process lives" in h1.stderr
    assert "Took over" not in h2.stderr
