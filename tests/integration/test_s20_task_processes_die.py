"""S20: processes a task started die with its worker, on a graceful stop and on a kill."""

from __future__ import annotations

import os
import signal
import uuid

import pytest

from tests.support import poll, statuses
from tests.support_proc import alive, marked, wait_exit, with_proc_handlers, workers_by_slot

pytestmark = pytest.mark.timeout(60)

GRACEFUL_S = 2  # the scenario's 3 s, scaled down


def _start_marked(harness, r, marker: str) -> str:
    task = harness.client().submit("spawn_marked", {"marker": marker})
    poll(lambda: statuses(r, [task]) == ["running"] and len(marked(marker)) >= 2, 20, 0.05,
         "the task and its two processes running")
    return task


def test_s20_graceful_stop_takes_the_task_processes_along(harness, redis_server) -> None:
    with_proc_handlers(harness.conf, executor={"graceful_timeout_s": GRACEFUL_S})
    sup = harness.start("run", "--procs", "1", "--threads", "2")
    r = redis_server.client()
    marker = f"s20-{uuid.uuid4().hex[:8]}"
    _start_marked(harness, r, marker)
    worker = workers_by_slot(sup.pid)[0]
    sup.send(signal.SIGTERM)
    code, _ = wait_exit(sup, GRACEFUL_S + 5)
    assert code == 0 and not alive(worker)
    poll(lambda: not marked(marker), 5, 0.1, "no process with the marker left")


def test_s20_killed_worker_takes_the_task_processes_along(harness, redis_server) -> None:
    with_proc_handlers(harness.conf, executor={"graceful_timeout_s": GRACEFUL_S})
    sup = harness.start("run", "--procs", "2", "--threads", "1")
    r = redis_server.client()
    poll(lambda: len(workers_by_slot(sup.pid)) == 2, 20, 0.05, "two workers")
    marker = f"s20-{uuid.uuid4().hex[:8]}"
    _start_marked(harness, r, marker)
    before = workers_by_slot(sup.pid)
    task_worker = next(pid for pid in before.values()
                       if any(os.getpgid(p) == pid for p in marked(marker)))
    old = set(marked(marker))
    os.kill(task_worker, signal.SIGKILL)
    # The respawned worker runs the task again, which starts processes of its own.
    poll(lambda: not old & set(marked(marker)), 5, 0.1, "no process of the dead worker left")
    after = poll(lambda: (lambda w: w if len(w) == 2 and task_worker not in w.values() else None)(
        workers_by_slot(sup.pid)), 5, 0.05, "the slot respawned")
    untouched = [pid for pid in before.values() if pid != task_worker]
    assert untouched[0] in after.values(), "the other worker is untouched"
    assert sup.proc.poll() is None
    sup.send(signal.SIGQUIT)
    assert wait_exit(sup, 10)[0] == 0
    poll(lambda: not marked(marker), 5, 0.1, "a quick stop takes them along too")
