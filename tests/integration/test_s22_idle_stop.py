"""S22: an idle service stops promptly; TERM to one worker is a clean replacement; INT to a
worker is ignored; an endless blocking read is refused at start."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.support import poll
from tests.support_proc import alive, beating, log_lines, wait_exit, workers_by_slot

pytestmark = pytest.mark.timeout(90)

BLOCK_S = 2  # the scenario's queue.block_s 5, scaled down; the bound is block_s + 2 s


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_s22_idle_supervisor_stops_within_one_blocking_read(harness, redis_server, sig) -> None:
    harness.conf.update(queue={"block_s": BLOCK_S})
    sup = harness.start("run", "--procs", "2", "--threads", "4")
    beating(redis_server.client(), 2, 20)
    workers = list(workers_by_slot(sup.pid).values())
    sup.send(sig)
    code, took = wait_exit(sup, BLOCK_S + 2)
    assert code == 0 and took < BLOCK_S + 2
    assert not [pid for pid in workers if alive(pid)], "no worker is left"


def test_s22_signals_to_one_worker(harness, redis_server) -> None:
    harness.conf.update(queue={"block_s": BLOCK_S})
    sup = harness.start("run", "--procs", "2", "--threads", "4")
    beating(redis_server.client(), 2, 20)
    before = workers_by_slot(sup.pid)
    os.kill(before[1], signal.SIGINT)
    os.kill(before[0], signal.SIGTERM)
    sent = time.monotonic()
    poll(lambda: not alive(before[0]), BLOCK_S + 2, 0.05, "worker 0 gone after TERM")
    assert time.monotonic() - sent < BLOCK_S + 2
    line = poll(lambda: next(iter(log_lines(sup, f"Worker 0 (pid {before[0]}) exited")), ""), 2)
    assert "exited cleanly" in line, line
    poll(lambda: workers_by_slot(sup.pid).get(0) not in (None, before[0]), 5, 0.05,
         "slot 0 respawned")
    assert workers_by_slot(sup.pid)[1] == before[1], "INT to a worker is ignored"
    assert not log_lines(sup, "before it booted") and not log_lines(sup, "respawning in")
    sup.send(signal.SIGTERM)
    assert wait_exit(sup, BLOCK_S + 2)[0] == 0


def test_s22_endless_blocking_read_is_refused(harness) -> None:
    harness.conf.update(queue={"block_s": 0})
    res = harness.cli("run", "--procs", "1", timeout=20)
    assert res.returncode == 2
    assert "queue.block_s" in res.stderr.decode()
