"""S47: watchdog pings come from the supervisor's loop, also while every worker thread is busy."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.support import poll, statuses
from tests.support_proc import NotifySocket, wait_exit, with_proc_handlers

pytestmark = pytest.mark.timeout(60)

BUSY_S = 3  # the scenario's 30 s of CPU-bound tasks, scaled down
STOPPED_S = 1.5  # the scenario's 5 s with the supervisor stopped, scaled down


def _gaps(stamps: list[float]) -> list[float]:
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]


def test_s47_watchdog_pings_from_the_loop(harness, redis_server, tmp_path) -> None:
    with_proc_handlers(harness.conf)
    notify = NotifySocket(tmp_path / "notify.sock")
    sup = harness.start("run", "--procs", "2", "--threads", "2",
                        env=notify.env(WATCHDOG_USEC="3000000"))
    notify.wait_for("READY=1", 20)
    r = redis_server.client()
    ids = harness.client().submit_many("cpu", [{"seconds": BUSY_S}] * 4)
    poll(lambda: statuses(r, ids) == ["running"] * 4, 10, 0.05, "4 CPU-bound tasks running")
    busy_from = time.monotonic()
    while statuses(r, ids) != ["done"] * 4:
        notify.read()
        time.sleep(0.05)  # poll interval of the socket
    pings = [m for m in notify.messages if m.text == "WATCHDOG=1" and m.at >= busy_from]
    assert {m.pid for m in notify.messages} == {sup.pid}, "never from a worker"
    assert pings and max(_gaps([busy_from] + [m.at for m in pings])) < 1.0

    notify.read()
    os.kill(sup.pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    time.sleep(STOPPED_S)  # ok: the supervisor is stopped this long, as in the scenario
    notify.read()
    assert not [m for m in notify.messages if m.text == "WATCHDOG=1" and
                m.at > stopped_at + 0.1], "no ping while the supervisor is stopped"
    os.kill(sup.pid, signal.SIGCONT)
    resumed = time.monotonic()
    poll(lambda: any(m.text == "WATCHDOG=1" and m.at > resumed for m in notify.read()), 1, 0.02,
         "pings resume within 1 s of SIGCONT")
    sup.send(signal.SIGTERM)
    assert wait_exit(sup, 15)[0] == 0


def test_s47_no_watchdog_no_pings(harness, redis_server, tmp_path) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    sup = harness.start("run", "--procs", "1", env=notify.env())
    notify.wait_for("READY=1", 20)
    time.sleep(1)  # ok: long enough for pings to show if any were sent
    sup.send(signal.SIGTERM)
    assert wait_exit(sup, 15)[0] == 0
    assert "WATCHDOG=1" not in notify.texts()
