"""S18: a wedged worker is replaced; a broken stream does not make workers spin."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from tests.handlers import starts
from tests.support import poll, statuses
from tests.support_proc import (
    beating,
    log_lines,
    wait_exit,
    wait_log,
    with_proc_handlers,
    workers_by_slot,
)

pytestmark = pytest.mark.timeout(90)

WORKER_TIMEOUT_S = 3  # the scenario's 5 s, scaled down; the bound is timeout + 2 s
BROKEN_S = 4  # the scenario's 30 s of a broken stream, scaled down


def test_s18a_stopped_worker_is_killed_and_its_tasks_rerun(harness, redis_server) -> None:
    with_proc_handlers(harness.conf, supervisor={"worker_timeout_s": WORKER_TIMEOUT_S},
                       heartbeat={"timeout_s": 60})
    sup = harness.start("run", "--procs", "2", "--threads", "2")
    r = redis_server.client()
    beating(r, 2, 20)
    client = harness.client()
    ids = client.submit_many("count", [{"seconds": 2}] * 2)
    poll(lambda: sum(len(hb["current"]) for hb in beating(r, 2, 5).values()) == 2, 10, 0.05,
         "both tasks running")
    # Idle workers share new messages, so the victim is the worker holding the most of them.
    victim = max(beating(r, 2, 5).values(), key=lambda hb: len(set(hb["current"]) & set(ids)))
    held = set(victim["current"]) & set(ids)
    stopped_at = time.monotonic()
    os.kill(victim["pid"], signal.SIGSTOP)
    wait_log(sup, f"Worker {victim['slot']} (pid {victim['pid']}) has not responded",
             WORKER_TIMEOUT_S + 2)
    poll(lambda: workers_by_slot(sup.pid).get(victim["slot"], victim["pid"]) != victim["pid"],
         WORKER_TIMEOUT_S + 2 - (time.monotonic() - stopped_at), 0.05, "the slot respawned")
    assert time.monotonic() - stopped_at < WORKER_TIMEOUT_S + 2
    assert log_lines(sup, f"Worker {victim['slot']} (pid {victim['pid']}) was killed by signal 9")
    poll(lambda: statuses(r, ids) == ["done", "done"], 15, 0.1, "both tasks done")
    assert [starts(r, t) for t in ids] == [2 if t in held else 1 for t in ids]
    sup.send(signal.SIGTERM)
    assert wait_exit(sup, 15)[0] == 0


def test_s18b_broken_stream_neither_spins_nor_floods_the_log(harness, redis_server) -> None:
    sup = harness.start("run", "--procs", "2", "--threads", "2")
    r = redis_server.client()
    beating(r, 2, 20)
    pids = list(workers_by_slot(sup.pid).values())
    procs = [psutil.Process(p) for p in pids]
    r.delete("te.0.common")
    r.set("te.0.common", "not a stream")
    for p in procs:
        p.cpu_percent()
    time.sleep(BROKEN_S)  # ok: the outage lasts this long; nothing to wait for
    cpu = [p.cpu_percent() for p in procs]
    errors = [ln for ln in log_lines(sup, "te.0.common") if "ERROR" in ln]
    r.delete("te.0.common")
    repaired = time.monotonic()
    ids = harness.client().submit_many("noop", [{}] * 5)
    poll(lambda: statuses(r, ids) == ["done"] * 5, 10, 0.1, "5 noop done after the repair")
    assert time.monotonic() - repaired < 10
    assert all(c < 10 for c in cpu), cpu
    assert sorted(workers_by_slot(sup.pid).values()) == sorted(pids), "no worker exited"
    assert 1 <= len(errors) <= 4 * len(pids), errors  # once per backoff step of each worker
    sup.send(signal.SIGTERM)
    assert wait_exit(sup, 15)[0] == 0
