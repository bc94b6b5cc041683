"""S17: fork churn (kills, TTIN/TTOU, HUP) neither deadlocks nor leaks in the supervisor."""

from __future__ import annotations

import random
import re
import signal
import time
from datetime import datetime

import psutil
import pytest

from tests.support import heartbeats, poll
from tests.support_proc import (
    NotifySocket,
    beating,
    log_lines,
    wait_exit,
    with_proc_handlers,
    workers_by_slot,
)

pytestmark = pytest.mark.timeout(90)

CHURN_S = 7  # the scenario's 60 s, scaled down; HUP every 3 s instead of 10


def _at(line: str) -> float:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _resources(pid: int) -> tuple[int, int]:
    p = psutil.Process(pid)
    return p.num_fds(), p.num_threads()


def test_s17_churn_leaves_the_supervisor_as_it_was(harness, redis_server, tmp_path) -> None:
    with_proc_handlers(harness.conf, memory={"trace_on_start": True})
    notify = NotifySocket(tmp_path / "notify.sock")
    env = notify.env(PYTHONWARNINGS="always::DeprecationWarning")
    sup = harness.start("run", "--procs", "4", "--log-level", "DEBUG", "--host-id", "h17",
                        env=env)
    r = redis_server.client()
    beating(r, 4, 20)
    notify.wait_for("READY=1", 10)
    before = _resources(sup.pid)
    rng = random.Random(17)
    start = time.monotonic()
    next_sig, next_hup, sig = start, start + 3, signal.SIGTTIN
    killed: set[str] = set()  # pids the test killed: each had heartbeated
    while time.monotonic() - start < CHURN_S:
        booted = {hb["pid"] for hb in heartbeats(r).values()} & set(
            workers_by_slot(sup.pid).values())
        if booted:
            victim = rng.choice(sorted(booted))
            try:
                psutil.Process(victim).kill()
                killed.add(str(victim))
            except psutil.Error:
                pass
        now = time.monotonic()
        if now >= next_sig:
            sup.send(sig)
            sig, next_sig = (signal.SIGTTOU if sig == signal.SIGTTIN else signal.SIGTTIN), now + 0.5
        if now >= next_hup:
            sup.send(signal.SIGHUP)
            next_hup = now + 3
        notify.read()
        time.sleep(0.2)  # poll interval: the scenario's kill period
    if sig == signal.SIGTTOU:
        sup.send(signal.SIGTTOU)  # end on TTOU: back to 4 workers
    poll(lambda: len(workers_by_slot(sup.pid)) == 4 and sorted(workers_by_slot(sup.pid)) ==
         [0, 1, 2, 3], 5, 0.1, "four workers again 5 s after the churn")
    time.sleep(1)  # ok: let the last replaced workers' pipes and channels be released
    after = poll(lambda: (lambda a: a if a[0] - before[0] <= 2 else None)(_resources(sup.pid)),
                 5, 0.2, "open files back to their count")
    assert abs(after[0] - before[0]) <= 2 and abs(after[1] - before[1]) <= 2, (before, after)
    sup.send(signal.SIGTERM)
    assert wait_exit(sup, 20)[0] == 0
    err = sup.stderr
    assert "multi-threaded" not in err and "use of fork() may lead to deadlocks" not in err
    spawned = {m.group(1): _at(line) for line in log_lines(sup, "Spawned worker")
               if (m := re.search(r"\(pid (\d+),", line))}
    booted_at = {m.group(1): _at(line) for line in log_lines(sup, ") consumes ")
                 if (m := re.search(r"\(pid (\d+)\) consumes", line))}
    assert len(spawned) > 20, "the churn forked many workers"
    late = {pid: booted_at.get(pid, float("inf")) - at for pid, at in spawned.items()
            if pid not in killed and booted_at.get(pid, float("inf")) - at > 5}
    assert not late, f"workers without a first heartbeat within 5 s of their spawn: {late}"
