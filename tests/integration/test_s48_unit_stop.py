"""S48: the shipped unit stops the service cleanly (its stop emulated: TERM to the main process,
TimeoutStopSec, SIGKILL to anything left, then a restart)."""

from __future__ import annotations

import signal
import time

import pytest

from supervisor import unitfile
from tests.handlers import starts
from tests.support import ROOT, poll, statuses
from tests.support_proc import alive, beating, wait_exit, with_proc_handlers, workers_by_slot
from workers.config import load_settings

pytestmark = pytest.mark.timeout(90)

UNIT = ROOT / "systemd" / "taskexec.service"
GRACEFUL_S = 1.5  # the test configuration's drain, scaled down; tasks 3 s instead of 20


def _finishes(r, task_id: str) -> int:
    return sum(1 for e in r.lrange(f"test:runs:{task_id}", 0, -1) if e.startswith(b"finish"))


def test_s48_unit_settings() -> None:
    unit = unitfile.parse(UNIT)
    svc = unit.sections["Service"]
    shipped = load_settings(None, environ={})
    assert unit.get("Service", "Type") == "notify"
    assert unit.get("Service", "KillMode") == "mixed"
    assert "all" not in svc.get("NotifyAccess", [])
    stop = unitfile.timespan(unit.get("Service", "TimeoutStopSec"))
    assert stop >= shipped.executor.graceful_timeout_s + 15
    assert unit.get("Service", "OOMPolicy") == "continue"
    assert unit.get("Service", "Restart") == "on-failure"
    assert "2" in unit.all("Service", "RestartPreventExitStatus")


def test_s48_emulated_stop_needs_no_sigkill_and_loses_nothing(harness, redis_server) -> None:
    timeout_stop = unitfile.timespan(unitfile.parse(UNIT).get("Service", "TimeoutStopSec"))
    with_proc_handlers(harness.conf, executor={"graceful_timeout_s": GRACEFUL_S})
    r = redis_server.client()
    sup = harness.start("run", "--procs", "2", "--threads", "2", "--host-id", "h48")
    beating(r, 2, 20)
    ids = harness.client().submit_many("count", [{"seconds": 3}] * 4)
    poll(lambda: statuses(r, ids) == ["running"] * 4, 10, 0.05, "4 tasks running")
    tree = [sup.pid, *workers_by_slot(sup.pid).values()]
    sent = time.monotonic()
    sup.send(signal.SIGTERM)  # KillMode=mixed: the main process only
    code, _ = wait_exit(sup, timeout_stop)
    assert code == 0 and time.monotonic() - sent < timeout_stop
    assert not [pid for pid in tree if alive(pid)], "nothing left for systemd's SIGKILL"

    again = harness.start("run", "--procs", "2", "--threads", "2", "--host-id", "h48")
    poll(lambda: statuses(r, ids) == ["done"] * 4, 15, 0.1, "every task done after the restart")
    assert [_finishes(r, t) for t in ids] == [1, 1, 1, 1], "each done exactly once overall"
    assert all(starts(r, t) <= 2 for t in ids)
    again.send(signal.SIGTERM)
    assert wait_exit(again, GRACEFUL_S + 4)[0] == 0
