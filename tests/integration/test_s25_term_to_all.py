"""S25: TERM to every process at once (systemd's control-group kill) is one graceful stop."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.handlers import starts
from tests.support import poll, statuses
from tests.support_proc import beating, log_lines, wait_exit, with_proc_handlers, workers_by_slot

pytestmark = pytest.mark.timeout(90)

GRACEFUL_S = 1.5  # the scenario's 5 s, scaled down; long tasks 3 s instead of 20, short 1 s
LONG_S, SHORT_S = 3, 1


@pytest.mark.parametrize("everyone", [True, False], ids=["term-all", "term-supervisor"])
def test_s25_term_to_all_is_one_graceful_stop(harness, redis_server, everyone) -> None:
    with_proc_handlers(harness.conf, executor={"graceful_timeout_s": GRACEFUL_S})
    r = redis_server.client()
    sup = harness.start("run", "--procs", "2", "--threads", "2", "--host-id", "h25")
    beating(r, 2, 20)
    client = harness.client()
    long = client.submit_many("count", [{"seconds": LONG_S}] * 3)
    short = client.submit("count", {"seconds": SHORT_S})
    poll(lambda: statuses(r, [*long, short]) == ["running"] * 4, 10, 0.05, "4 running")
    queued = client.submit_many("count", [{"seconds": 0}] * 2)
    pids = [sup.pid, *workers_by_slot(sup.pid).values()] if everyone else [sup.pid]
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    sent = time.monotonic()
    code, _ = wait_exit(sup, GRACEFUL_S + 4)
    assert code == 0 and time.monotonic() - sent < GRACEFUL_S + 4
    assert statuses(r, [short]) == ["done"] and starts(r, short) == 1
    assert statuses(r, queued) == ["queued"] * 2, "nothing new started after the signal"
    assert statuses(r, long) == ["running"] * 3, "left unacknowledged at the deadline"
    assert r.xpending("te.0.common", "rag_flow_svr_task_broker")["pending"] == 3
    assert not log_lines(sup, "quick stop"), "a direct and a forwarded TERM are one stop"

    again = harness.start("run", "--procs", "2", "--threads", "2", "--host-id", "h25")
    poll(lambda: statuses(r, [*long, *queued, short]) == ["done"] * 6, LONG_S + 10, 0.1,
         "every task done after the restart")
    assert [starts(r, t) for t in long] == [2, 2, 2] and starts(r, short) == 1
    again.send(signal.SIGTERM)
    assert wait_exit(again, GRACEFUL_S + 4)[0] == 0
