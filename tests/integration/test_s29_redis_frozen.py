"""S29: Redis stops answering (SIGSTOP) without closing connections, then comes back.

The scenario's 60 s freeze is 12 s here: still longer than `redis.socket_timeout_s` (10), so
every worker must notice it, and longer than `heartbeat.timeout_s` (5), so every consumer looks
dead by its heartbeat when the server resumes.
"""

from __future__ import annotations

import time
from datetime import datetime

import psutil
import pytest

from tests.delivery_support import start_count
from tests.redis_support import (
    HANDLERS,
    freeze,
    log_lines,
    pending,
    thaw,
    tracebacks,
    worker_pids,
)
from tests.support import heartbeats, poll, statuses

pytestmark = pytest.mark.timeout(120)

FREEZE_S = 12


def _usage(pids: list[int]) -> dict[int, tuple[int, int]]:
    out = {}
    for pid in pids:
        p = psutil.Process(pid)
        out[pid] = (p.memory_info().rss, p.num_threads())
    return out


def _warnings(text: str, pids: list[int], since: float) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {pid: [] for pid in pids}
    for m in log_lines(text, "WARNING"):
        at = datetime.strptime(m.string[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if int(m["pid"]) in out and at >= since:
            out[int(m["pid"])].append(at - since)
    return out


def test_s29_frozen_redis_is_noticed_once_and_survived(harness, conf, redis_server):
    conf.update(handlers=HANDLERS, redis={"socket_timeout_s": 10})
    sup = harness.start("run", "--procs", "2", "--threads", "2")
    r = redis_server.client()
    poll(lambda: len(heartbeats(r)) == 2, 30, 0.1, "two workers heartbeat")
    workers = worker_pids(sup.pid)
    procs = [sup.pid, *workers]
    long = harness.client().submit_many("count", [{"seconds": 18}] * 2)
    poll(lambda: statuses(r, long) == ["running"] * 2, 10, 0.05, "both long tasks running")
    before = _usage(procs)
    frozen_at = time.time()
    freeze(redis_server)
    peak: dict[int, tuple[int, int]] = dict(before)
    try:
        deadline = time.monotonic() + FREEZE_S
        while time.monotonic() < deadline:  # sample while frozen, until the deadline
            for pid, (rss, threads) in _usage(procs).items():
                peak[pid] = (max(peak[pid][0], rss), max(peak[pid][1], threads))
            time.sleep(0.5)  # poll interval of the samples
    finally:
        thaw(redis_server)
    thawed_at = time.time()
    for pid in procs:
        assert peak[pid][0] <= before[pid][0] * 1.10, ("RSS grew", pid, before[pid], peak[pid])
        assert peak[pid][1] <= before[pid][1] + 2, ("threads grew", pid, before[pid], peak[pid])

    noops = harness.client().submit_many("noop", [{}] * 5)
    poll(lambda: statuses(r, noops) == ["done"] * 5, 10, 0.1, "5 noop done within 10 s")
    poll(lambda: statuses(r, long) == ["done"] * 2, 30, 0.2, "the long tasks finish")
    poll(lambda: pending(r) == 0, 10, 0.1, "XPENDING 0")
    assert [start_count(r, t) for t in long] == [1, 1], "no second run of a long task"
    assert worker_pids(sup.pid) == workers and sup.proc.poll() is None, "no process exited"

    err = sup.stderr
    seen = _warnings(err, workers, frozen_at)
    for pid, times in seen.items():
        during = [t for t in times if t <= thawed_at - frozen_at + 1]
        assert len(during) == 1, (pid, times, err)
        assert during[0] <= 15, ("noticed within 15 s", pid, times)
    assert not tracebacks(err), err
