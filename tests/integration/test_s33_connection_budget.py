"""S33: 16 workers of 4 threads within a budget of 4 connections each, on a server that takes 80.

`redis.max_connections` is per process: the blocking read and the heartbeat get one each, the
loop, the completer and the task threads share the other two, waiting their turn.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from tests.redis_support import HANDLERS, safe, tracebacks
from tests.support import Conf, Harness, RedisServer, heartbeats, poll, statuses

pytestmark = pytest.mark.timeout(150)

PROCS, THREADS, BUDGET, MAXCLIENTS = 16, 4, 4, 80


@pytest.fixture
def setup(tmp_path):
    server = RedisServer(tmp_path / "redis", args=("--maxclients", str(MAXCLIENTS))).start()
    conf = Conf(tmp_path / "conf", server.url, handlers=HANDLERS)
    conf.data["redis"]["max_connections"] = BUDGET
    conf.update()
    h = Harness(tmp_path, conf, server)
    yield server, conf, h
    h.close()
    server.stop()


def _per_worker(r) -> Counter:
    """Connections per worker process, by CLIENT LIST names (`{consumer}` and `{consumer}_...`)."""
    out: Counter = Counter()
    for c in r.client_list():
        name = c.get("name", "")
        if name.startswith("task_executor_"):
            out["_".join(name.split("_")[:5])] += 1
    return out


def test_s33_many_workers_stay_within_their_connection_budget(setup):
    server, conf, h = setup
    sup = h.start("run", "--procs", str(PROCS), "--threads", str(THREADS))
    r = server.client()
    poll(lambda: len(heartbeats(r)) == PROCS, 30, 0.2, f"all {PROCS} workers heartbeat")
    assert len(r.smembers("TASKEXE")) == PROCS
    peak: Counter = Counter()
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            for name, n in (safe(lambda: _per_worker(r), {}) or {}).items():
                peak[name] = max(peak[name], n)
            stop.wait(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        ids = h.client().submit_many("chatty", [{"steps": 20}] * 400)
        poll(lambda: statuses(r, ids).count("done") == 400, 90, 0.5, "all 400 done")
    finally:
        stop.set()
        watcher.join(5)
    assert len(peak) == PROCS and max(peak.values()) <= BUDGET, peak
    err = sup.stderr
    for text in ("max number of clients", "No connection available", "Too many connections"):
        assert text not in err, text
    assert not tracebacks(err), err
    assert "exited with" not in err and "was killed" not in err


def test_s33_a_budget_of_one_connection_is_refused(harness, conf):
    conf.data["redis"]["max_connections"] = 1
    conf.update()
    proc = harness.start("run", "--procs", "2")
    assert proc.wait(20) == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "redis.max_connections" in lines[0], lines
    assert "blocking read" in lines[0]
