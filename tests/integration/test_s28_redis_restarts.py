"""S28: Redis restarts (AOF on) twice within 3 s while four counting tasks run."""

from __future__ import annotations

import time

import pytest

from tests.delivery_support import runs, start_count
from tests.redis_support import (
    HANDLERS,
    aof_server,
    pending,
    restart,
    safe,
    tracebacks,
    warnings_per_second,
    worker_pids,
)
from tests.support import Conf, Harness, heartbeats, poll, statuses

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def setup(tmp_path):
    server = aof_server(tmp_path / "redis").start()
    conf = Conf(tmp_path / "conf", server.url, handlers=HANDLERS)
    h = Harness(tmp_path, conf, server)
    yield server, h
    h.close()
    server.stop()


def _running(r, ids):
    return [t for t, s in zip(ids, statuses(r, ids), strict=True) if s == "running"]


def test_s28_restarts_under_load_lose_nothing(setup):
    server, h = setup
    sup = h.start("run", "--procs", "2", "--threads", "2")
    r = server.client()
    poll(lambda: len(heartbeats(r)) == 2, 30, 0.1, "two workers heartbeat")
    pids = worker_pids(sup.pid)
    first = h.client().submit_many("count", [{"seconds": 5}] * 10)
    at_restart = poll(lambda: (lambda run: run if len(run) == 4 else None)(_running(r, first)),
                      15, 0.05, "four tasks running")
    began = time.monotonic()
    r = restart(server, down_s=1.0)
    r = restart(server, down_s=1.0)
    assert time.monotonic() - began < 3, "two restarts within 3 s"
    back = time.monotonic()
    # Heartbeats and TASKEXE membership return within 2 intervals (1 s each), plus slack.
    poll(lambda: safe(lambda: len(heartbeats(r))) == 2, 2 + 1, 0.05, "heartbeats back")
    assert time.monotonic() - back < 3

    submitted = time.time()
    second = h.client().submit_many("count", [{"seconds": 1}] * 10, priority=1)
    poll(lambda: any(runs(r, t) for t in second), 5, 0.05, "a new task starts within 5 s")
    assert min(a for t in second for e, a, _ in runs(r, t) if e == "start") - submitted < 5
    victim = poll(lambda: _running(r, first), 10, 0.05, "a running task to cancel")[0]
    cancelled = time.monotonic()
    assert h.cli("cancel", victim).returncode == 0
    poll(lambda: statuses(r, [victim]) == ["cancelled"], 5, 0.05, "the cancel stops its task")
    assert time.monotonic() - cancelled < 5

    others = [t for t in first + second if t != victim]
    poll(lambda: statuses(r, others) == ["done"] * 19, 40, 0.2, "the other 19 done")
    poll(lambda: pending(r) == 0, 10, 0.1, "acknowledgements made good (XPENDING 0)")
    assert all(start_count(r, t) == 1 for t in others), "each task ran once"
    assert set(at_restart) <= set(first)
    assert worker_pids(sup.pid) == pids, "no worker died"
    err = sup.stderr
    assert warnings_per_second(err, pids) <= 1, err
    assert not tracebacks(err), err
    assert "NoScriptError" not in err
