"""S13: a worker that dies mid-task is replaced and its tasks run again at once."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.delivery_support import runs
from tests.handlers import starts
from tests.support import heartbeats, poll, statuses
from tests.support_proc import beating, log_lines, wait_exit, with_proc_handlers

pytestmark = pytest.mark.timeout(90)

TASK_S = 3  # the scenario's 10 s, scaled down: long enough to be mid-task at each kill


def _kill_and_check(r, sup, victim: dict, sig: int, others: list[str]) -> dict:
    """Kill one worker mid-task; check its replacement, the log and the re-runs."""
    held = sorted(victim["current"])
    killed_at = time.time()
    os.kill(victim["pid"], sig)
    new = poll(lambda: next((hb for hb in heartbeats(r).values() if hb["slot"] == victim["slot"]
                             and hb["pid"] != victim["pid"]), None), 2, 0.02,
               f"slot {victim['slot']} heartbeats again")
    assert time.time() - killed_at < 2.0
    death = f"killed by signal {sig}"
    line = poll(lambda: next((ln for ln in log_lines(sup, death)
                              if f"Worker {victim['slot']} (pid {victim['pid']})" in ln), ""),
                3, message="the death logged")
    assert all(t in line for t in held), line
    for task_id in held:
        again = poll(lambda t=task_id: [x for x in runs(r, t) if x[0] == "start"][1:], 5, 0.05,
                     f"{task_id} started again")
        assert again[0][2] == new["pid"] and again[0][1] - killed_at < 5.0
    assert all(starts(r, t) == 1 for t in others), "the other slot's tasks were not disturbed"
    return new


def test_s13_dead_workers_are_replaced_and_their_tasks_rerun(harness, redis_server) -> None:
    with_proc_handlers(harness.conf, heartbeat={"timeout_s": 60})
    sup = harness.start("run", "--procs", "2", "--threads", "2", "--host-id", "h13")
    r = redis_server.client()
    beating(r, 2, 20)
    client = harness.client()
    ids = [client.submit("count", {"seconds": TASK_S}) for _ in range(4)]
    by_slot = poll(lambda: (lambda hbs: hbs if all(len(hb["current"]) == 2 for hb in
                                                   hbs.values()) else None)(beating(r, 2, 5)),
                   10, 0.05, "two tasks running on each worker")
    first, second = by_slot[0], by_slot[1]
    _kill_and_check(r, sup, first, signal.SIGKILL, sorted(second["current"]))
    _kill_and_check(r, sup, second, signal.SIGSEGV, [])
    poll(lambda: statuses(r, ids) == ["done"] * 4, 20, 0.1, "the four tasks done")
    assert [starts(r, t) for t in ids] == [2, 2, 2, 2]  # each killed once mid-run, no more
    # Only now: the worker this task crashes would take whatever else it runs along.
    crash = client.submit("crash_once")
    poll(lambda: statuses(r, [crash]) == ["done"], 20, 0.1, "the crashing task done")
    assert starts(r, crash) == 2
    assert "exited with status 1" in "".join(log_lines(sup, "Worker "))
    dead = {first["name"], second["name"]}
    poll(lambda: not dead & {n.decode() for n in r.smembers("TASKEXE")}, 5, 0.1,
         "the dead consumers left TASKEXE")
    sup.send(signal.SIGTERM)
    assert wait_exit(sup, 15)[0] == 0
